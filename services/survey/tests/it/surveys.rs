//! Surveys: created with checked questions, read with participation counts, listed by course,
//! closed once; who may do what.

use tonic::Code;
use tutela_proto::common::{IdempotencyKey, PageRequest};
use tutela_proto::survey::{
    CloseSurveyRequest, GetSurveyRequest, ListSurveysRequest, QuestionKind, SurveyState,
};
use tutela_testkit::{Credentials, TestSuite};

use crate::{fields, learner, new_survey, reason, survey, tutor, uuid};

#[tokio::test]
async fn a_survey_is_created_read_listed_by_course_and_closed_once() {
    let suite = TestSuite::start().await.unwrap();
    let course = uuid();
    let mut client = suite.surveys(tutor(&suite));
    let mut request = new_survey(&course);
    request.idempotency_key = Some(IdempotencyKey {
        key: "survey-create-1".into(),
    });
    let created = client
        .create_survey(request.clone())
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(created.state, SurveyState::Open as i32);
    assert_eq!(created.questions.len(), 4);
    assert_eq!(created.questions[0].scale_points, 5);
    assert_eq!(
        created.questions[1].options,
        ["Lectures", "Labs", "Reading"]
    );
    assert_eq!(created.questions[3].kind, QuestionKind::FreeText as i32);
    assert_eq!((created.invited, created.responded), (0, 0));
    // A retry answers with the same survey.
    let again = client.create_survey(request).await.unwrap().into_inner();
    assert_eq!(again.survey.unwrap().survey_id, created.survey_id);

    let other = survey(&suite).await;
    let listed = client
        .list_surveys(ListSurveysRequest {
            course_id: course.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.surveys.iter().map(|s| s.survey_id.clone()).collect();
    assert_eq!(ids, [created.survey_id.as_str()]);
    let first = client
        .list_surveys(ListSurveysRequest {
            course_id: String::new(),
            page: Some(PageRequest {
                page_size: 1,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.surveys.len(), 1);
    let token = first.page.unwrap().next_page_token;
    let second = client
        .list_surveys(ListSurveysRequest {
            course_id: String::new(),
            page: Some(PageRequest {
                page_size: 1,
                page_token: token,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.surveys[0].survey_id, other.survey_id);

    let closed = client
        .close_survey(CloseSurveyRequest {
            survey_id: created.survey_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(closed.state, SurveyState::Closed as i32);
    assert!(closed.closed_at.is_some());
    let err = client
        .close_survey(CloseSurveyRequest {
            survey_id: created.survey_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SURVEY_CLOSED");
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn bad_questions_are_refused_naming_the_field_and_nothing_is_stored() {
    let suite = TestSuite::start().await.unwrap();
    let mut client = suite.surveys(tutor(&suite));
    let mut request = new_survey(&uuid());
    let s = request.survey.as_mut().unwrap();
    s.questions[0].scale_points = 1;
    s.questions[1].options.push("labs".into());
    s.questions[2].max = -1.0;
    s.questions[3].question_id = "overall".into();
    s.attributes.push(s.attributes[0]);
    s.title = " ".into();
    let err = client.create_survey(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut got = fields(&err);
    got.sort();
    assert_eq!(
        got,
        [
            "survey.attributes[2]",
            "survey.questions[0].scale_points",
            "survey.questions[1].options[3]",
            "survey.questions[2].max",
            "survey.questions[3].question_id",
            "survey.title",
        ]
    );
    let listed = client
        .list_surveys(ListSurveysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.surveys.is_empty());
    let err = client
        .get_survey(GetSurveyRequest {
            survey_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["survey_id"]);
    let err = client
        .get_survey(GetSurveyRequest { survey_id: uuid() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn learners_read_surveys_but_neither_create_nor_close_them_and_other_tenants_see_nothing() {
    let suite = TestSuite::start().await.unwrap();
    let made = survey(&suite).await;
    let me = uuid();
    let mut as_learner = suite.surveys(learner(&suite, &me));
    let read = as_learner
        .get_survey(GetSurveyRequest {
            survey_id: made.survey_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.survey.unwrap().title, made.title);
    let err = as_learner
        .create_survey(new_survey(&uuid()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = as_learner
        .close_survey(CloseSurveyRequest {
            survey_id: made.survey_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Marketing runs no surveys; and a tutor of another tenant finds none.
    let marketing = Credentials::new(
        &suite.token("acme", "mkt-1", &["marketing"]),
        "quality_assurance",
    );
    let err = suite
        .surveys(marketing)
        .get_survey(GetSurveyRequest {
            survey_id: made.survey_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let elsewhere = Credentials::new(
        &suite.token("globex", "tutor-9", &["tutor"]),
        "quality_assurance",
    );
    let err = suite
        .surveys(elsewhere)
        .get_survey(GetSurveyRequest {
            survey_id: made.survey_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    suite.stop().await.unwrap();
}
