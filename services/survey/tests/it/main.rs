//! The survey service end to end over real gRPC, through the whole suite as `tutela serve` runs
//! it, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod people;
mod releases;
mod responses;
mod rights;
mod surveys;

use tutela_proto::survey::{
    Answer, CreateSurveyRequest, InviteRespondentsRequest, Invitee, Question, QuestionKind,
    RespondentAttribute, SubmitResponseRequest, Survey, answer,
};
use tutela_testkit::{Credentials, TestSuite};
pub use tutela_testkit::{fields, reason};

/// A tutor of `acme`, for `quality_assurance` (the purpose surveys run for).
pub fn tutor(suite: &TestSuite) -> Credentials {
    Credentials::new(
        &suite.token("acme", "tutor-1", &["tutor"]),
        "quality_assurance",
    )
}

/// The learner `learner_id` of `acme` acting for themselves, for `quality_assurance`.
pub fn learner(suite: &TestSuite, learner_id: &str) -> Credentials {
    Credentials::new(
        &suite.token("acme", learner_id, &["learner"]),
        "quality_assurance",
    )
}

/// A survey of a course with a rating, a multiple choice, a number and a comment.
pub fn new_survey(course_id: &str) -> CreateSurveyRequest {
    let question = |id: &str, kind: QuestionKind| Question {
        question_id: id.into(),
        text: format!("Question {id}"),
        kind: kind as i32,
        ..Default::default()
    };
    CreateSurveyRequest {
        survey: Some(Survey {
            course_id: course_id.into(),
            title: "End of course survey".into(),
            questions: vec![
                Question {
                    scale_points: 5,
                    ..question("overall", QuestionKind::Rating)
                },
                Question {
                    options: vec!["Lectures".into(), "Labs".into(), "Reading".into()],
                    ..question("useful", QuestionKind::MultipleChoice)
                },
                Question {
                    min: 0.0,
                    max: 60.0,
                    ..question("hours", QuestionKind::Number)
                },
                question("comment", QuestionKind::FreeText),
            ],
            attributes: vec![
                RespondentAttribute::AgeBand as i32,
                RespondentAttribute::Country as i32,
            ],
            ..Default::default()
        }),
        idempotency_key: None,
    }
}

/// Creates [`new_survey`] as the tutor; the survey.
pub async fn survey(suite: &TestSuite) -> Survey {
    suite
        .surveys(tutor(suite))
        .create_survey(new_survey(&uuid()))
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap()
}

/// A fresh learner id (surveys do not look learners up: the guard and the ledger do).
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Invites `learners` (no cohort) as the tutor.
pub async fn invite(suite: &TestSuite, survey_id: &str, learners: &[&str], cohort: &str) {
    suite
        .responses(tutor(suite))
        .invite_respondents(InviteRespondentsRequest {
            survey_id: survey_id.into(),
            invitees: learners
                .iter()
                .map(|l| Invitee {
                    learner_id: (*l).into(),
                    cohort: cohort.into(),
                })
                .collect(),
        })
        .await
        .unwrap();
}

/// A response of `learner_id` rating `overall` and commenting `comment`.
pub fn response(
    survey_id: &str,
    learner_id: &str,
    overall: u32,
    comment: &str,
) -> SubmitResponseRequest {
    SubmitResponseRequest {
        survey_id: survey_id.into(),
        learner_id: learner_id.into(),
        answers: vec![
            Answer {
                question_id: "overall".into(),
                value: Some(answer::Value::Rating(overall)),
            },
            Answer {
                question_id: "comment".into(),
                value: Some(answer::Value::Text(comment.into())),
            },
        ],
    }
}
