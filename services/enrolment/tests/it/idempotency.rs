//! Every keyed write of the enrolment service behaves alike: a retry (same key, same request)
//! answers with what the first call made and stores nothing more; the same key with another
//! request is ALREADY_EXISTS; keys are the tenant's own.

use tonic::Code;
use tutela_proto::common::IdempotencyKey;
use tutela_proto::enrolment::{
    AwardKind, Course, CreateCourseRequest, CreateLearnerRequest, EnrolLearnerRequest,
    EnrolmentStatus, Feedback, FeedbackKind, IssueCertificateRequest, LearnerProfile,
    RecordFeedbackRequest, UpdateLearnerRequest,
};
use tutela_testkit::{Credentials, TestSuite};

use crate::records::{move_to, new_course, new_learner};
use crate::*;

/// Personal data of the fixtures (declared so the log scan looks for them).
const REMARK: &str = "The workshop ran late every week";
const EMPLOYER: &str = "Globex Training Ltd";

fn key(text: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey { key: text.into() })
}

fn course(code: &str, title: &str) -> CreateCourseRequest {
    CreateCourseRequest {
        course: Some(Course {
            code: code.into(),
            title: title.into(),
            start_date: "2026-09-01".into(),
            end_date: "2027-06-30".into(),
            ..Default::default()
        }),
        idempotency_key: key("course-key-0001"),
    }
}

#[tokio::test]
async fn a_retried_course_is_the_same_course_and_a_reused_key_is_refused_within_the_tenant_only() {
    let suite = TestSuite::start().await.unwrap();
    let mut acme = suite.courses(staff(&suite, "registrar", "course_administration"));
    let first = acme.create_course(course("ENG-1", "Engineering")).await;
    let again = acme.create_course(course("ENG-1", "Engineering")).await;
    let first = first.unwrap().into_inner().course.unwrap();
    assert_eq!(again.unwrap().into_inner().course.unwrap(), first);

    let err = acme
        .create_course(course("ENG-2", "Electronics"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // Another tenant's key of the same spelling is theirs: a course of their own.
    let mut globex = suite.courses(Credentials::new(
        &suite.token("globex", "registrar-9", &["registrar"]),
        "course_administration",
    ));
    let theirs = globex
        .create_course(course("ENG-2", "Electronics"))
        .await
        .unwrap()
        .into_inner()
        .course
        .unwrap();
    assert_ne!(theirs.course_id, first.course_id);
}

#[tokio::test]
async fn enrolments_results_certificates_and_feedback_replay_their_first_answer() {
    let suite = TestSuite::start().await.unwrap();
    let course_id = new_course(&suite, "ENG-L3-2027").await;
    let learner = new_learner(&suite).await;

    let mut enrolments = suite.enrolments(staff(&suite, "registrar", "course_administration"));
    let enrol_keyed = |course_id: &str| EnrolLearnerRequest {
        learner: subject(&learner),
        course_id: course_id.into(),
        status: 0,
        idempotency_key: key("enrol-key-0001"),
    };
    let first = enrolments.enrol_learner(enrol_keyed(&course_id)).await;
    let again = enrolments.enrol_learner(enrol_keyed(&course_id)).await;
    let enrolment = first.unwrap().into_inner().enrolment.unwrap();
    assert_eq!(again.unwrap().into_inner().enrolment.unwrap(), enrolment);
    let other_course = new_course(&suite, "ENG-L2-2027").await;
    let err = enrolments
        .enrol_learner(enrol_keyed(&other_course))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let enrolment = enrolment.enrolment_id;
    for status in [EnrolmentStatus::Enrolled, EnrolmentStatus::Started] {
        move_to(&suite, &enrolment, status).await.unwrap();
    }
    let mut results = suite.enrolments(staff(&suite, "tutor", "course_administration"));
    let keyed_result = |score: f64| {
        let mut r = tutela_testkit::sample_result(&enrolment, score);
        r.idempotency_key = key("result-key-0001");
        r
    };
    let first = results.record_result(keyed_result(71.0)).await.unwrap();
    let again = results.record_result(keyed_result(71.0)).await.unwrap();
    assert_eq!(
        first.into_inner().result.unwrap().result_id,
        again.into_inner().result.unwrap().result_id
    );
    let err = results.record_result(keyed_result(72.0)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    move_to(&suite, &enrolment, EnrolmentStatus::Completed)
        .await
        .unwrap();
    let mut certificates = suite.certificates(staff(&suite, "registrar", "certification"));
    let issue = |kind: AwardKind| IssueCertificateRequest {
        enrolment_id: enrolment.clone(),
        kind: kind as i32,
        title: String::new(),
        idempotency_key: key("certificate-key-0001"),
    };
    let first = certificates
        .issue_certificate(issue(AwardKind::Badge))
        .await;
    let again = certificates
        .issue_certificate(issue(AwardKind::Badge))
        .await;
    assert_eq!(
        first.unwrap().into_inner().certificate.unwrap(),
        again.unwrap().into_inner().certificate.unwrap()
    );
    let err = certificates
        .issue_certificate(issue(AwardKind::Certificate))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let own = Credentials::new(
        &suite.token("acme", &learner, &["learner"]),
        "course_administration",
    );
    crate::personal(&[REMARK]);
    let mut feedback = suite.feedback(own);
    let say = |kind: FeedbackKind| RecordFeedbackRequest {
        feedback: Some(Feedback {
            learner: subject(&learner),
            kind: kind as i32,
            text: REMARK.into(),
            ..Default::default()
        }),
        idempotency_key: key("feedback-key-0001"),
    };
    let first = feedback.record_feedback(say(FeedbackKind::Comment)).await;
    let again = feedback.record_feedback(say(FeedbackKind::Comment)).await;
    assert_eq!(
        first.unwrap().into_inner().feedback.unwrap().feedback_id,
        again.unwrap().into_inner().feedback.unwrap().feedback_id
    );
    let err = feedback
        .record_feedback(say(FeedbackKind::Complaint))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn a_create_learner_key_cannot_stand_for_an_update_and_an_update_retry_replays() {
    let suite = TestSuite::start().await.unwrap();
    crate::personal(&[EMPLOYER]);
    let mut learners = suite.learners(staff(&suite, "registrar", "course_administration"));
    let created = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(profile()),
            idempotency_key: key("learner-key-0001"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap();
    let rectify = |key_text: &str| UpdateLearnerRequest {
        learner: subject(&created.learner_id),
        profile: Some(LearnerProfile {
            organisation: EMPLOYER.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["organisation".into()],
        }),
        idempotency_key: key(key_text),
    };
    // The create's key cannot stand for an update.
    let err = learners
        .update_learner(rectify("learner-key-0001"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let first = learners.update_learner(rectify("update-key-0001")).await;
    let again = learners.update_learner(rectify("update-key-0001")).await;
    let first = first.unwrap().into_inner().learner.unwrap();
    assert_eq!(first.profile.as_ref().unwrap().organisation, EMPLOYER);
    assert_eq!(again.unwrap().into_inner().learner.unwrap(), first);
}
