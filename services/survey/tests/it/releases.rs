//! Releases through the real binary's gRPC: aggregates that withhold small cohorts and suppress
//! small cells, k-anonymous and l-diverse microdata over attributes read through enrolment,
//! differentially private figures that spend the survey's budget and stop at it (also when
//! releases race), immutable records with hashes, and erasure marking what was built from a
//! learner's responses.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Code;
use tutela_proto::common::{IdempotencyKey, SubjectRef};
use tutela_proto::privacy::EraseSubjectRequest;
use tutela_proto::survey::release::Results;
use tutela_proto::survey::{
    AggregateParameters, AggregateResults, CommentDecision, CreateReleaseRequest,
    DifferentiallyPrivateParameters, GetReleaseRequest, GetSurveyRequest, ListHeldCommentsRequest,
    ListReleasesRequest, MicrodataParameters, NoiseMechanism, PrivacyBudget, Release, ReleaseForm,
    RespondentAttribute, ReviewHeldCommentRequest,
};
use tutela_testkit::{Credentials, TestSuite, sample_profile};

use crate::{fields, invite, learner, new_survey, reason, response, tutor, uuid};

/// Creates a survey (rating `overall` 1–5, multiple choice, number, comment) declaring
/// `attributes`, with `budget` (ε, δ) when given; its id.
async fn survey_with(
    suite: &TestSuite,
    attributes: &[RespondentAttribute],
    budget: Option<(f64, f64)>,
) -> String {
    let mut request = new_survey(&uuid());
    let s = request.survey.as_mut().unwrap();
    s.attributes = attributes.iter().map(|a| *a as i32).collect();
    s.privacy_budget = budget.map(|(epsilon, delta)| PrivacyBudget { epsilon, delta });
    suite
        .surveys(tutor(suite))
        .create_survey(request)
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap()
        .survey_id
}

/// Invites `who` in `cohort` and submits each one's rating (with a harmless comment).
async fn answered(suite: &TestSuite, survey_id: &str, cohort: &str, who: &[(String, u32)]) {
    let ids: Vec<&str> = who.iter().map(|(id, _)| id.as_str()).collect();
    invite(suite, survey_id, &ids, cohort).await;
    for (id, rating) in who {
        suite
            .responses(learner(suite, id))
            .submit_response(response(survey_id, id, *rating, "Good course"))
            .await
            .unwrap();
    }
}

fn aggregate(survey_id: &str) -> CreateReleaseRequest {
    CreateReleaseRequest {
        survey_id: survey_id.into(),
        recipient: "course_board".into(),
        ..Default::default()
    }
}

fn dp(survey_id: &str, epsilon: f64) -> CreateReleaseRequest {
    CreateReleaseRequest {
        survey_id: survey_id.into(),
        form: ReleaseForm::DifferentiallyPrivate as i32,
        recipient: "public".into(),
        differentially_private: Some(DifferentiallyPrivateParameters {
            epsilon,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(
    suite: &TestSuite,
    request: CreateReleaseRequest,
) -> Result<Release, tonic::Status> {
    suite
        .releases(tutor(suite))
        .create_release(request)
        .await
        .map(|r| r.into_inner().release.unwrap())
}

async fn get(suite: &TestSuite, release_id: &str) -> Release {
    suite
        .releases(tutor(suite))
        .get_release(GetReleaseRequest {
            release_id: release_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .release
        .unwrap()
}

fn ratings(n: usize, f: impl Fn(usize) -> u32) -> Vec<(String, u32)> {
    (0..n).map(|i| (uuid(), f(i))).collect()
}

fn results_of(release: &Release) -> &AggregateResults {
    match release.results.as_ref().unwrap() {
        Results::Aggregate(a) => a,
        other => panic!("not an aggregate release: {other:?}"),
    }
}

#[tokio::test]
async fn an_aggregate_release_withholds_small_cohorts_suppresses_small_cells_and_is_recorded() {
    let suite = TestSuite::start().await.unwrap();
    let survey_id = survey_with(&suite, &[], None).await;
    // Cohort `spring`: twelve respondents, one of whom gave a 1 (a cell of one: a person).
    // Cohort `summer`: three, under the register's minimum cohort of 10.
    answered(
        &suite,
        &survey_id,
        "spring",
        &ratings(12, |i| match i {
            0 => 1,
            1..=6 => 4,
            _ => 5,
        }),
    )
    .await;
    answered(&suite, &survey_id, "summer", &ratings(3, |_| 2)).await;

    let release = create(&suite, aggregate(&survey_id)).await.unwrap();
    assert_eq!(release.form, ReleaseForm::Aggregate as i32);
    assert_eq!(release.recipient, "course_board");
    assert_eq!(release.purpose, "quality_assurance");
    assert_eq!(release.requester, "tutor-1");
    let applied = release.aggregate_parameters.unwrap();
    assert_eq!((applied.min_cohort, applied.min_cell), (10, 5));
    let results = results_of(&release);
    assert_eq!(results.cohorts, ["spring"]);
    assert_eq!(results.withheld_cohorts, ["summer"]);
    let ids: Vec<&str> = results
        .questions
        .iter()
        .map(|q| q.question_id.as_str())
        .collect();
    assert_eq!(ids, ["overall", "useful", "hours", "comment"]);
    // The released cohort's comments, scrubbed; the withheld cohort's are nowhere.
    let comment = &results.questions[3];
    assert_eq!(comment.comments.len(), 12, "{comment:?}");
    assert!(comment.comments.iter().all(|c| c == "Good course"));
    assert!(comment.cohorts.is_empty() && comment.overall.is_none());
    let overall = &results.questions[0];
    assert_eq!(overall.columns, ["1", "2", "3", "4", "5"]);
    let spring = &overall.cohorts[0];
    // The 1 is suppressed, and so is a complement: a row total minus the rest would give it.
    assert!(spring.counts[0].suppressed, "{spring:?}");
    assert!(
        spring.counts.iter().filter(|c| c.suppressed).count() >= 2,
        "{spring:?}"
    );
    for c in spring
        .counts
        .iter()
        .chain(&overall.overall.as_ref().unwrap().counts)
    {
        assert!(
            c.suppressed || c.value == 0 || c.value >= 5,
            "a small count published: {c:?}"
        );
    }
    // The overall row counts the released cohort only: the withheld one is nowhere.
    let total = overall.overall.as_ref().unwrap().respondents.unwrap();
    assert!(total.suppressed || total.value == 12, "{total:?}");
    // A mean that would give away a suppressed count is withheld.
    assert_eq!(spring.mean, None);

    // The record: hashes of input and output, the output hash over the stored results.
    assert_eq!(release.input_sha256.len(), 64);
    let encoded = results.encode_to_vec();
    assert_eq!(release.output_sha256, hex::encode(Sha256::digest(&encoded)));
    let again = get(&suite, &release.release_id).await;
    assert_eq!(again, release, "a release reads back as it was made");
    // The same input hashes the same: a second release of the same responses.
    let second = create(&suite, aggregate(&survey_id)).await.unwrap();
    assert_eq!(second.input_sha256, release.input_sha256);
    assert_eq!(second.output_sha256, release.output_sha256);
    let listed = suite
        .releases(tutor(&suite))
        .list_releases(ListReleasesRequest {
            survey_id: survey_id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].release_id, release.release_id);
    assert!(listed.iter().all(|r| r.results.is_none()));
    assert_eq!(listed[0].output_sha256, release.output_sha256);

    // Never below the register's floors; a survey with too few responses releases nothing.
    let mut below = aggregate(&survey_id);
    below.aggregate = Some(AggregateParameters {
        min_cohort: 10,
        min_cell: 2,
    });
    let err = create(&suite, below).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["aggregate.min_cell"]);
    let small = survey_with(&suite, &[], None).await;
    answered(&suite, &small, "", &ratings(4, |_| 3)).await;
    let err = create(&suite, aggregate(&small)).await.unwrap_err();
    assert_eq!(reason(&err), "TOO_FEW_RESPONSES");
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn a_microdata_release_is_k_anonymous_and_l_diverse_over_generalised_attributes() {
    let suite = TestSuite::start().await.unwrap();
    // Thirty learners in enrolment, of five ages and five countries.
    let births = [
        "2005-05-05",
        "1999-01-01",
        "1988-03-03",
        "1979-07-07",
        "1960-02-02",
    ];
    let countries = ["GB", "FR", "DE", "JP", "US"];
    let profiles = (1..=30u64).map(|n| {
        let mut p = sample_profile(n);
        p.date_of_birth = births[(n % 5) as usize].into();
        p.country = countries[((n / 5) % 5) as usize].into();
        p
    });
    let ids = suite.create_learners("acme", profiles, 4).await.unwrap();
    let survey_id = survey_with(
        &suite,
        &[RespondentAttribute::AgeBand, RespondentAttribute::Country],
        None,
    )
    .await;
    let who: Vec<(String, u32)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), 1 + (i as u32 * 7) % 5))
        .collect();
    answered(&suite, &survey_id, "", &who).await;

    let request = |params: MicrodataParameters| CreateReleaseRequest {
        survey_id: survey_id.clone(),
        form: ReleaseForm::Microdata as i32,
        recipient: "research_partner".into(),
        microdata: Some(params),
        ..Default::default()
    };
    let release = create(
        &suite,
        request(MicrodataParameters {
            question_id: "overall".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let applied = release.microdata_parameters.clone().unwrap();
    assert_eq!((applied.k, applied.l), (5, 2));
    assert_eq!(applied.max_suppression, Some(0.05));
    assert_eq!(
        applied.attributes.len(),
        2,
        "all declared attributes by default"
    );
    assert_eq!(release.hierarchies, ["age_band/v1", "country-region/v1"]);
    assert_eq!(release.levels.len(), 2);
    let Some(Results::Microdata(m)) = &release.results else {
        panic!("not microdata: {release:?}");
    };
    assert_eq!(m.columns, ["age_band", "country", "overall"]);
    assert_eq!(m.rows.len() + m.suppressed as usize, 30);
    assert!(m.suppressed <= 1, "at most 5% of 30 rows: {}", m.suppressed);
    let mut classes: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for row in &m.rows {
        classes
            .entry((row.values[0].clone(), row.values[1].clone()))
            .or_default()
            .push(row.values[2].clone());
    }
    for (class, answers) in &classes {
        let distinct: BTreeSet<&String> = answers.iter().collect();
        assert!(
            answers.len() >= 5,
            "class {class:?} has {} rows",
            answers.len()
        );
        assert!(distinct.len() >= 2, "class {class:?} has one answer");
    }
    assert!(m.k_reached >= 5 && m.l_reached >= 2, "{m:?}");
    // Every value is one of its hierarchy's: a band, a region or a code, or withheld.
    let ages = [
        "under_16", "16-24", "25-34", "35-44", "45-54", "55-64", "65+", "under_25", "25-44",
        "45-64", "*",
    ];
    let places = [
        "GB", "FR", "DE", "JP", "US", "Europe", "Asia", "Americas", "*",
    ];
    for row in &m.rows {
        assert!(ages.contains(&row.values[0].as_str()), "{row:?}");
        assert!(places.contains(&row.values[1].as_str()), "{row:?}");
    }

    // What cannot be met is refused, and says why.
    let err = create(
        &suite,
        request(MicrodataParameters {
            // Six distinct answers to a five-point rating: no generalisation can give them.
            question_id: "overall".into(),
            k: 6,
            l: 6,
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "ANONYMITY_NOT_REACHED", "{err:?}");
    let err = create(
        &suite,
        request(MicrodataParameters {
            question_id: "overall".into(),
            k: 100,
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "TOO_FEW_RESPONSES");
    let err = create(
        &suite,
        request(MicrodataParameters {
            question_id: "comment".into(),
            attributes: vec![RespondentAttribute::Gender as i32],
            k: 3,
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["microdata.k"]);
    let err = create(
        &suite,
        request(MicrodataParameters {
            question_id: "comment".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["microdata.question_id"]);
    let err = create(
        &suite,
        request(MicrodataParameters {
            question_id: "overall".into(),
            attributes: vec![RespondentAttribute::Gender as i32],
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["microdata.attributes[0]"]);
    suite.stop().await.unwrap();
}

async fn spent(suite: &TestSuite, survey_id: &str) -> f64 {
    spent_budget(suite, survey_id).await.epsilon
}

async fn spent_budget(suite: &TestSuite, survey_id: &str) -> PrivacyBudget {
    suite
        .surveys(tutor(suite))
        .get_survey(GetSurveyRequest {
            survey_id: survey_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap()
        .privacy_spent
        .unwrap()
}

fn gaussian(survey_id: &str, epsilon: f64, delta: f64) -> CreateReleaseRequest {
    let mut request = dp(survey_id, epsilon);
    let params = request.differentially_private.as_mut().unwrap();
    params.mechanism = NoiseMechanism::Gaussian as i32;
    params.delta = delta;
    request
}

#[tokio::test]
async fn a_gaussian_release_spends_epsilon_and_delta_and_delta_needs_a_budget() {
    let suite = TestSuite::start().await.unwrap();
    let survey_id = survey_with(&suite, &[], Some((2.0, 1e-6))).await;
    answered(&suite, &survey_id, "", &ratings(6, |i| 1 + (i as u32 % 5))).await;

    let release = create(&suite, gaussian(&survey_id, 0.9, 6e-7))
        .await
        .unwrap();
    let applied = release.differentially_private_parameters.clone().unwrap();
    assert_eq!(applied.mechanism, NoiseMechanism::Gaussian as i32);
    let spent = release.spent.unwrap();
    assert!(
        (spent.epsilon - 0.9).abs() < 1e-9 && (spent.delta - 6e-7).abs() < 1e-15,
        "{spent:?}"
    );
    let now = spent_budget(&suite, &survey_id).await;
    assert!((now.delta - 6e-7).abs() < 1e-15, "{now:?}");
    let Some(Results::DifferentiallyPrivate(r)) = &release.results else {
        panic!("not DP: {release:?}");
    };
    assert!(r.questions.iter().all(|q| q.count_noise_sd > 0.0));

    // ε is left, δ is not: refused, nothing spent.
    let err = create(&suite, gaussian(&survey_id, 0.3, 6e-7))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PRIVACY_BUDGET_EXHAUSTED", "{err:?}");
    assert!((spent_budget(&suite, &survey_id).await.delta - 6e-7).abs() < 1e-15);
    // δ belongs to the Gaussian alone, and the Gaussian needs one.
    let mut laplace = dp(&survey_id, 0.1);
    laplace.differentially_private.as_mut().unwrap().delta = 1e-7;
    let err = create(&suite, laplace).await.unwrap_err();
    assert_eq!(fields(&err), ["differentially_private.delta"]);
    let err = create(&suite, gaussian(&survey_id, 0.1, 0.0))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["differentially_private.delta"]);
    // A survey whose budget has no δ takes no Gaussian release.
    let pure = survey_with(&suite, &[], None).await;
    let err = create(&suite, gaussian(&pure, 0.1, 1e-7))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PRIVACY_BUDGET_EXHAUSTED", "{err:?}");
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn differentially_private_releases_spend_the_budget_and_stop_at_it_even_when_racing() {
    let suite = TestSuite::start().await.unwrap();
    let survey_id = survey_with(&suite, &[], Some((1.0, 0.0))).await;
    answered(
        &suite,
        &survey_id,
        "spring",
        &ratings(8, |i| 1 + (i as u32 % 5)),
    )
    .await;
    answered(&suite, &survey_id, "summer", &ratings(3, |_| 4)).await;

    let mut first = dp(&survey_id, 0.6);
    first.idempotency_key = Some(IdempotencyKey { key: uuid() });
    let release = create(&suite, first.clone()).await.unwrap();
    let Some(Results::DifferentiallyPrivate(r)) = &release.results else {
        panic!("not DP: {release:?}");
    };
    // Every invited cohort is released, however small: noise, not suppression, protects it.
    assert_eq!(r.cohorts, ["spring", "summer"]);
    assert_eq!(r.questions.len(), 3);
    let overall = &r.questions[0];
    assert!(overall.count_noise_sd > 0.0);
    let mean = overall.overall.as_ref().unwrap().mean;
    assert!(mean.is_none_or(|m| (1.0..=5.0).contains(&m)), "{mean:?}");
    assert!((release.spent.unwrap().epsilon - 0.6).abs() < 1e-9);
    assert!((spent(&suite, &survey_id).await - 0.6).abs() < 1e-9);

    // A retry spends nothing more and answers with the same release.
    let retried = create(&suite, first).await.unwrap();
    assert_eq!(retried.release_id, release.release_id);
    assert!((spent(&suite, &survey_id).await - 0.6).abs() < 1e-9);
    // Past the budget: refused, nothing spent, nothing recorded.
    let err = create(&suite, dp(&survey_id, 0.6)).await.unwrap_err();
    assert_eq!(reason(&err), "PRIVACY_BUDGET_EXHAUSTED", "{err:?}");
    assert!((spent(&suite, &survey_id).await - 0.6).abs() < 1e-9);
    // 0.4 over three questions is 0.133333 each, in whole millionths: 0.399999 is spent.
    let last = create(&suite, dp(&survey_id, 0.4)).await.unwrap();
    assert!((last.spent.unwrap().epsilon - 0.399_999).abs() < 1e-9);
    assert!((spent(&suite, &survey_id).await - 0.999_999).abs() < 1e-9);

    // Six releases of 0.3 at once against a budget of 1: exactly three get through.
    let racing = survey_with(&suite, &[], Some((1.0, 0.0))).await;
    answered(&suite, &racing, "", &ratings(5, |_| 3)).await;
    let outcomes =
        futures::future::join_all((0..6).map(|_| create(&suite, dp(&racing, 0.3)))).await;
    let made = outcomes.iter().filter(|o| o.is_ok()).count();
    for err in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(reason(err), "PRIVACY_BUDGET_EXHAUSTED", "{err:?}");
    }
    assert_eq!(made, 3);
    assert!((spent(&suite, &racing).await - 0.9).abs() < 1e-9);
    let listed = suite
        .releases(tutor(&suite))
        .list_releases(ListReleasesRequest {
            survey_id: racing.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert_eq!(listed.len(), 3, "a refused release leaves no record");

    // ε that is no number, or more than a budget may hold, names the field.
    for epsilon in [0.0, -1.0, f64::NAN, 1000.0] {
        let err = create(&suite, dp(&survey_id, epsilon)).await.unwrap_err();
        assert_eq!(
            fields(&err),
            ["differentially_private.epsilon"],
            "{epsilon}"
        );
    }
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn erasing_a_respondent_marks_the_releases_made_from_their_response_and_only_those() {
    let suite = TestSuite::start().await.unwrap();
    let survey_id = survey_with(&suite, &[], None).await;
    // Eleven: after one is erased, ten still make a cohort.
    let who = ratings(11, |i| 1 + (i as u32 % 5));
    answered(&suite, &survey_id, "", &who).await;
    let other = survey_with(&suite, &[], None).await;
    answered(&suite, &other, "", &ratings(10, |_| 4)).await;
    let built = create(&suite, aggregate(&survey_id)).await.unwrap();
    let unrelated = create(&suite, aggregate(&other)).await.unwrap();
    assert!(!built.built_from_erased_responses);

    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    suite
        .subject_data(dpo)
        .erase_subject(EraseSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: who[0].0.clone(),
            }),
            reason: "learner's erasure request".into(),
            services: vec!["survey".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let marked = get(&suite, &built.release_id).await;
    assert!(marked.built_from_erased_responses);
    // The release itself stays as it was made.
    assert_eq!(marked.output_sha256, built.output_sha256);
    assert_eq!(marked.results, built.results);
    assert!(
        !get(&suite, &unrelated.release_id)
            .await
            .built_from_erased_responses
    );
    // A new release no longer reads the erased response.
    let after = create(&suite, aggregate(&survey_id)).await.unwrap();
    assert_ne!(after.input_sha256, built.input_sha256);
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn only_staff_running_surveys_make_and_read_releases() {
    let suite = TestSuite::start().await.unwrap();
    let survey_id = survey_with(&suite, &[], None).await;
    let me = uuid();
    answered(&suite, &survey_id, "", &[(me.clone(), 4)]).await;
    let service = Credentials::new(
        &suite.token("acme", "platform-1", &["service"]),
        "quality_assurance",
    );
    for who in [learner(&suite, &me), service] {
        let err = suite
            .releases(who)
            .create_release(aggregate(&survey_id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    let marketing = Credentials::new(&suite.token("acme", "tutor-1", &["tutor"]), "marketing");
    let err = suite
        .releases(marketing)
        .create_release(aggregate(&survey_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn a_comment_held_for_review_is_released_only_once_the_dpo_publishes_it() {
    let suite = TestSuite::start().await.unwrap();
    let survey_id = survey_with(&suite, &[], None).await;
    let who = ratings(10, |i| 1 + (i as u32 % 5));
    let ids: Vec<&str> = who.iter().map(|(id, _)| id.as_str()).collect();
    invite(&suite, &survey_id, &ids, "").await;
    // Two comments still look identifying after scrubbing (a street address); the rest do not.
    for (i, (id, rating)) in who.iter().enumerate() {
        let comment = match i {
            0 => "Come and see me at 12 Mill Lane",
            1 => "I live at 4 High Street",
            _ => "Fine",
        };
        let answered = suite
            .responses(learner(&suite, id))
            .submit_response(response(&survey_id, id, *rating, comment))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answered.held_for_review, i < 2, "{comment}");
    }
    let comments = |release: &Release| results_of(release).questions[3].comments.clone();
    let before = create(&suite, aggregate(&survey_id)).await.unwrap();
    assert_eq!(comments(&before), vec!["Fine"; 8]);

    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "quality_assurance");
    let held = suite
        .releases(dpo.clone())
        .list_held_comments(ListHeldCommentsRequest {
            survey_id: survey_id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .comments;
    assert_eq!(held.len(), 2);
    let mut texts: Vec<&str> = held.iter().map(|c| c.text.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(
        texts,
        ["Come and see me at 12 Mill Lane", "I live at 4 High Street"]
    );
    // Nobody else reads them, not even the tutor running the survey.
    let err = suite
        .releases(tutor(&suite))
        .list_held_comments(ListHeldCommentsRequest {
            survey_id: survey_id.clone(),
            page: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let decide = |response_id: &str, decision: CommentDecision| ReviewHeldCommentRequest {
        survey_id: survey_id.clone(),
        response_id: response_id.into(),
        decision: decision as i32,
    };
    let street = held
        .iter()
        .find(|c| c.text.contains("High Street"))
        .unwrap();
    let lane = held.iter().find(|c| c.text.contains("Mill Lane")).unwrap();
    let reviews = suite.releases(dpo.clone());
    reviews
        .clone()
        .review_held_comment(decide(&street.response_id, CommentDecision::Publish))
        .await
        .unwrap();
    reviews
        .clone()
        .review_held_comment(decide(&lane.response_id, CommentDecision::Withhold))
        .await
        .unwrap();
    // Decided once: a second decision finds nothing held.
    let err = reviews
        .clone()
        .review_held_comment(decide(&lane.response_id, CommentDecision::Publish))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = reviews
        .clone()
        .review_held_comment(decide(&lane.response_id, CommentDecision::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["decision"]);

    let after = create(&suite, aggregate(&survey_id)).await.unwrap();
    let mut expected = vec!["Fine"; 8];
    // Alphabetical: "Fine" sorts before "I live...".
    expected.push("I live at 4 High Street");
    assert_eq!(comments(&after), expected);
    assert_ne!(
        after.input_sha256, before.input_sha256,
        "the review changed the input"
    );
    let left = suite
        .releases(dpo)
        .list_held_comments(ListHeldCommentsRequest {
            survey_id: survey_id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .comments;
    assert!(left.is_empty());
    suite.stop().await.unwrap();
}
