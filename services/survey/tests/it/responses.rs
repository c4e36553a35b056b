//! Invitations, reminders, declines and responses: voluntary (a decline is final and never
//! reminded), answered once, checked against the questions, scrubbed before storage and sealed.

use sea_orm::EntityTrait;
use tonic::Code;
use tutela_proto::survey::{
    Answer, DeclineSurveyRequest, GetSurveyRequest, InviteRespondentsRequest, Invitee,
    RemindRespondentsRequest, answer,
};
use tutela_store::testing::logs::personal;
use tutela_survey::entity::response;
use tutela_testkit::{Credentials, TestSuite};

use crate::{fields, invite, learner, reason, response, survey, tutor, uuid};

async fn remind(suite: &TestSuite, survey_id: &str) -> Result<Vec<String>, tonic::Status> {
    Ok(suite
        .responses(tutor(suite))
        .remind_respondents(RemindRespondentsRequest {
            survey_id: survey_id.into(),
            page: None,
        })
        .await?
        .into_inner()
        .learner_ids)
}

#[tokio::test]
async fn taking_part_is_voluntary_a_decline_is_final_and_only_the_silent_are_reminded() {
    let suite = TestSuite::start().await.unwrap();
    let s = survey(&suite).await;
    let (a, b, c) = (uuid(), uuid(), uuid());
    invite(&suite, &s.survey_id, &[&a, &b, &c], "2027-spring").await;
    // Inviting again changes nothing.
    let again = suite
        .responses(tutor(&suite))
        .invite_respondents(InviteRespondentsRequest {
            survey_id: s.survey_id.clone(),
            invitees: vec![Invitee {
                learner_id: a.clone(),
                cohort: "other".into(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.invited, again.already_invited), (0, 1));
    let mut everyone = vec![a.clone(), b.clone(), c.clone()];
    everyone.sort();
    let mut reminded = remind(&suite, &s.survey_id).await.unwrap();
    reminded.sort();
    assert_eq!(reminded, everyone);

    suite
        .responses(learner(&suite, &a))
        .decline_survey(DeclineSurveyRequest {
            survey_id: s.survey_id.clone(),
            learner_id: a.clone(),
        })
        .await
        .unwrap();
    let answered = suite
        .responses(learner(&suite, &b))
        .submit_response(response(&s.survey_id, &b, 4, "Good labs."))
        .await
        .unwrap()
        .into_inner();
    assert!(!answered.held_for_review);
    assert_eq!(remind(&suite, &s.survey_id).await.unwrap(), [c.as_str()]);

    // Declined and answered are final.
    for (who, request) in [
        (&a, response(&s.survey_id, &a, 3, "Changed my mind")),
        (&b, response(&s.survey_id, &b, 1, "Second go")),
    ] {
        let err = suite
            .responses(learner(&suite, who))
            .submit_response(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(reason(&err), "SURVEY_ALREADY_ANSWERED");
    }
    let err = suite
        .responses(learner(&suite, &a))
        .decline_survey(DeclineSurveyRequest {
            survey_id: s.survey_id.clone(),
            learner_id: a.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SURVEY_ALREADY_ANSWERED");
    let stranger = uuid();
    let err = suite
        .responses(learner(&suite, &stranger))
        .submit_response(response(&s.survey_id, &stranger, 5, "Hi"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "NOT_INVITED");

    let counted = suite
        .surveys(tutor(&suite))
        .get_survey(GetSurveyRequest {
            survey_id: s.survey_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!((counted.invited, counted.responded), (3, 1));

    suite
        .surveys(tutor(&suite))
        .close_survey(tutela_proto::survey::CloseSurveyRequest {
            survey_id: s.survey_id.clone(),
        })
        .await
        .unwrap();
    let err = suite
        .responses(learner(&suite, &c))
        .submit_response(response(&s.survey_id, &c, 5, "Late"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SURVEY_CLOSED");
    assert_eq!(
        reason(&remind(&suite, &s.survey_id).await.unwrap_err()),
        "SURVEY_CLOSED"
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn free_text_is_scrubbed_before_storage_and_answers_are_sealed() {
    let suite = TestSuite::start().await.unwrap();
    let s = survey(&suite).await;
    let me = uuid();
    invite(&suite, &s.survey_id, &[&me], "").await;
    let email = "b.smith.survey@example.org";
    let phone = "07700 900123";
    personal(&[email, phone]);
    let comment = format!("Great course. Email me at {email} or ring {phone} about the labs.");
    let answered = suite
        .responses(learner(&suite, &me))
        .submit_response(response(&s.survey_id, &me, 5, &comment))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.identifiers_replaced, 2);

    // Nothing of the comment is readable in the database: the answers are sealed, and what was
    // sealed is the scrubbed text.
    let db = suite.database().connect().await.unwrap();
    let rows = response::Entity::find().all(&db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let sealed = &rows[0].sealed;
    for needle in [email.as_bytes(), b"Great course", b"labs"] {
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle),
            "sealed answers hold plain text"
        );
    }
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn answers_are_checked_against_the_questions_and_a_bad_one_stores_nothing() {
    let suite = TestSuite::start().await.unwrap();
    let s = survey(&suite).await;
    let me = uuid();
    invite(&suite, &s.survey_id, &[&me], "").await;
    let mut client = suite.responses(learner(&suite, &me));
    let mut bad = response(&s.survey_id, &me, 6, "ok");
    bad.answers.push(Answer {
        question_id: "hours".into(),
        value: Some(answer::Value::Number(61.0)),
    });
    bad.answers.push(Answer {
        question_id: "useful".into(),
        value: Some(answer::Value::Choice(1)),
    });
    let err = client.submit_response(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "answers[0].rating",
            "answers[2].number",
            "answers[3].choices"
        ]
    );
    // The invitation still waits: the learner can answer properly.
    client
        .submit_response(response(&s.survey_id, &me, 5, "ok"))
        .await
        .unwrap();
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn only_the_learner_or_the_platform_answers_and_staff_never_do() {
    let suite = TestSuite::start().await.unwrap();
    let s = survey(&suite).await;
    let (me, other) = (uuid(), uuid());
    invite(&suite, &s.survey_id, &[&me, &other], "").await;
    // Another learner is out of reach: as if there were no such learner.
    let err = suite
        .responses(learner(&suite, &me))
        .submit_response(response(&s.survey_id, &other, 1, "not mine"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Staff neither answer nor decline for a learner.
    let err = suite
        .responses(tutor(&suite))
        .submit_response(response(&s.survey_id, &me, 1, "by the tutor"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A learner does not invite or ask whom to remind.
    let err = suite
        .responses(learner(&suite, &me))
        .remind_respondents(RemindRespondentsRequest {
            survey_id: s.survey_id.clone(),
            page: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The training platform answers for the learner it names.
    let platform = Credentials::new(
        &suite.token("acme", "platform-1", &["service"]),
        "quality_assurance",
    );
    suite
        .responses(platform)
        .submit_response(response(&s.survey_id, &other, 4, "via the platform"))
        .await
        .unwrap();
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn two_answers_at_once_store_one() {
    let suite = TestSuite::start().await.unwrap();
    let s = survey(&suite).await;
    let me = uuid();
    invite(&suite, &s.survey_id, &[&me], "").await;
    let client = suite.responses(learner(&suite, &me));
    let calls = (0..4).map(|i| {
        let mut client = client.clone();
        let request = response(&s.survey_id, &me, 1 + i, "race");
        async move { client.submit_response(request).await }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(err), "SURVEY_ALREADY_ANSWERED");
    }
    suite.stop().await.unwrap();
}
