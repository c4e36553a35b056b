//! Survey releases shared with partners: read from the survey service over its gRPC contract,
//! kept as shared, pulled by the partner they were shared with and by no other; survey answers
//! never leave any other way.

use tonic::Code;
use tutela_proto::common::IdempotencyKey;
use tutela_proto::sharing::{PullSharedReleasesRequest, ShareReleaseRequest};
use tutela_proto::survey::{
    Answer, CreateReleaseRequest, CreateSurveyRequest, InviteRespondentsRequest, Invitee, Question,
    QuestionKind, Release, SubmitResponseRequest, Survey, answer,
};
use tutela_testkit::{Credentials, TestSuite};

use crate::disclosures::as_partner;
use crate::{fields, partner, staff};

/// A tutor of `acme` for `quality_assurance`, who runs surveys and makes releases.
fn tutor(suite: &TestSuite) -> Credentials {
    staff(suite, "acme", "tutor", "quality_assurance")
}

/// A survey with one rating question answered by twelve learners, and its aggregate release.
async fn release(suite: &TestSuite) -> Release {
    let survey = suite
        .surveys(tutor(suite))
        .create_survey(CreateSurveyRequest {
            survey: Some(Survey {
                course_id: uuid::Uuid::new_v4().to_string(),
                title: "End of course".into(),
                questions: vec![Question {
                    question_id: "overall".into(),
                    text: "Overall?".into(),
                    kind: QuestionKind::Rating as i32,
                    scale_points: 5,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    let learners: Vec<String> = (0..12).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    suite
        .responses(tutor(suite))
        .invite_respondents(InviteRespondentsRequest {
            survey_id: survey.survey_id.clone(),
            invitees: learners
                .iter()
                .map(|l| Invitee {
                    learner_id: l.clone(),
                    cohort: "spring".into(),
                })
                .collect(),
        })
        .await
        .unwrap();
    for (i, learner) in learners.iter().enumerate() {
        let me = Credentials::new(
            &suite.token("acme", learner, &["learner"]),
            "quality_assurance",
        );
        suite
            .responses(me)
            .submit_response(SubmitResponseRequest {
                survey_id: survey.survey_id.clone(),
                learner_id: learner.clone(),
                answers: vec![Answer {
                    question_id: "overall".into(),
                    value: Some(answer::Value::Rating(if i < 6 { 4 } else { 5 })),
                }],
            })
            .await
            .unwrap();
    }
    suite
        .releases(tutor(suite))
        .create_release(CreateReleaseRequest {
            survey_id: survey.survey_id,
            recipient: "survey_partners".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .release
        .unwrap()
}

#[tokio::test]
async fn a_release_is_shared_as_made_and_only_its_partner_pulls_it() {
    let suite = TestSuite::start().await.unwrap();
    let made = release(&suite).await;
    let partner_id = partner(&suite, "GB").await;
    let other = partner(&suite, "GB").await;

    let share = ShareReleaseRequest {
        partner_id: partner_id.clone(),
        release_id: made.release_id.clone(),
        idempotency_key: Some(IdempotencyKey {
            key: uuid::Uuid::new_v4().to_string(),
        }),
    };
    let shared = suite
        .disclosures(tutor(&suite))
        .share_release(share.clone())
        .await
        .unwrap()
        .into_inner()
        .shared
        .unwrap();
    assert_eq!(shared.partner_id, partner_id);
    assert_eq!(shared.shared_by, "staff-1");
    assert_eq!(
        shared.release.as_ref(),
        Some(&made),
        "shared exactly as made"
    );
    // A retry is the same share.
    let again = suite
        .disclosures(tutor(&suite))
        .share_release(share)
        .await
        .unwrap()
        .into_inner()
        .shared
        .unwrap();
    assert_eq!(again.share_id, shared.share_id);

    let pulled = suite
        .disclosures(as_partner(&suite, &partner_id, "quality_assurance"))
        .pull_shared_releases(PullSharedReleasesRequest { page: None })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert_eq!(pulled, std::slice::from_ref(&shared));
    let none = suite
        .disclosures(as_partner(&suite, &other, "quality_assurance"))
        .pull_shared_releases(PullSharedReleasesRequest { page: None })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert!(none.is_empty(), "another partner sees nothing");

    // No such release or partner; bad ids name the field; a learner may not share.
    let err = suite
        .disclosures(tutor(&suite))
        .share_release(ShareReleaseRequest {
            partner_id: partner_id.clone(),
            release_id: uuid::Uuid::new_v4().to_string(),
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = suite
        .disclosures(tutor(&suite))
        .share_release(ShareReleaseRequest {
            partner_id: uuid::Uuid::new_v4().to_string(),
            release_id: made.release_id.clone(),
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = suite
        .disclosures(tutor(&suite))
        .share_release(ShareReleaseRequest {
            partner_id: "p".into(),
            release_id: made.release_id.clone(),
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["partner_id"]);
    let learner = Credentials::new(
        &suite.token("acme", &uuid::Uuid::new_v4().to_string(), &["learner"]),
        "quality_assurance",
    );
    let err = suite
        .disclosures(learner)
        .share_release(ShareReleaseRequest {
            partner_id,
            release_id: made.release_id,
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn without_the_survey_service_nothing_is_shared_and_the_call_is_unavailable() {
    let suite = TestSuite::start_with(|c| {
        // Nothing listens on port 1.
        let section = c
            .sections
            .entry("sharing".into())
            .or_insert_with(|| serde_json::json!({}));
        section["survey_endpoint"] = serde_json::json!("http://127.0.0.1:1");
    })
    .await
    .unwrap();
    let made = release(&suite).await;
    let partner_id = partner(&suite, "GB").await;
    let err = suite
        .disclosures(tutor(&suite))
        .share_release(ShareReleaseRequest {
            partner_id: partner_id.clone(),
            release_id: made.release_id,
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let pulled = suite
        .disclosures(as_partner(&suite, &partner_id, "quality_assurance"))
        .pull_shared_releases(PullSharedReleasesRequest { page: None })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert!(pulled.is_empty());
    suite.stop().await.unwrap();
}
