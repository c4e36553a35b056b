//! Certificates and badges with their Open Badges 3.0 export, and feedback and complaints.

use tonic::Code;
use tutela_proto::enrolment::{
    AwardKind, EnrolmentStatus, ExportOpenBadgeRequest, Feedback, FeedbackKind,
    IssueCertificateRequest, ListCertificatesRequest, ListFeedbackRequest, RecordFeedbackRequest,
};
use tutela_proto::privacy::{EraseSubjectRequest, ExportSubjectRequest};
use tutela_testkit::{Credentials, TestSuite};

use crate::learners::stored_in_plaintext;
use crate::records::{enrol, move_to, new_course, new_learner};
use crate::*;

const COMPLAINT: &str = "The assessor was rude to me during the practical on Tuesday";

fn issue(enrolment: &str) -> IssueCertificateRequest {
    IssueCertificateRequest {
        enrolment_id: enrolment.into(),
        kind: AwardKind::Badge as i32,
        title: String::new(),
        idempotency_key: None,
    }
}

#[tokio::test]
async fn a_completed_enrolment_earns_a_certificate_exported_as_an_open_badge() {
    let suite = TestSuite::start().await.unwrap();
    let course_id = new_course(&suite, "ENG-L3-2027").await;
    let learner = new_learner(&suite).await;
    let enrolment = enrol(&suite, &learner, &course_id).await;
    let mut registrar = suite.certificates(staff(&suite, "registrar", "certification"));
    let err = registrar
        .issue_certificate(issue(&enrolment))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "ENROLMENT_NOT_COMPLETED");
    for status in [
        EnrolmentStatus::Enrolled,
        EnrolmentStatus::Started,
        EnrolmentStatus::Completed,
    ] {
        move_to(&suite, &enrolment, status).await.unwrap();
    }
    let certificate = registrar
        .issue_certificate(issue(&enrolment))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(certificate.title, "Engineering Level 3");

    let own = Credentials::new(
        &suite.token("acme", &learner, &["learner"]),
        "subject_rights",
    );
    let mine = suite
        .certificates(own.clone())
        .list_certificates(ListCertificatesRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert_eq!(mine.len(), 1);
    let badge = suite
        .certificates(own)
        .export_open_badge(ExportOpenBadgeRequest {
            certificate_id: certificate.certificate_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(badge.media_type, "application/ld+json");
    let json: serde_json::Value = serde_json::from_slice(&badge.credential).unwrap();
    assert_eq!(json["type"][1], "OpenBadgeCredential");
    assert_eq!(
        json["credentialSubject"]["id"],
        format!("urn:uuid:{learner}").as_str()
    );
    assert_eq!(
        json["credentialSubject"]["achievement"]["achievementType"],
        "Badge"
    );
    let text = String::from_utf8(badge.credential).unwrap();
    for value in [EMAIL, GIVEN, FAMILY] {
        assert!(!text.contains(value), "a badge carries {value:?}");
    }

    // Another tenant cannot fetch it.
    let err = suite
        .certificates(Credentials::new(
            &suite.token("globex", "registrar-9", &["registrar"]),
            "certification",
        ))
        .export_open_badge(ExportOpenBadgeRequest {
            certificate_id: certificate.certificate_id,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn feedback_and_complaints_are_kept_sealed_exported_and_erased() {
    let suite = TestSuite::start().await.unwrap();
    crate::personal(&[COMPLAINT]);
    let learner = new_learner(&suite).await;
    let own = Credentials::new(
        &suite.token("acme", &learner, &["learner"]),
        "course_administration",
    );
    let feedback = |text: &str| RecordFeedbackRequest {
        feedback: Some(Feedback {
            learner: subject(&learner),
            kind: FeedbackKind::Complaint as i32,
            text: text.into(),
            ..Default::default()
        }),
        idempotency_key: None,
    };
    let err = suite
        .feedback(own.clone())
        .record_feedback(feedback("my SSN 078-05-1120 was shown on screen"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PROHIBITED_IDENTIFIER");
    assert_eq!(fields(&err), ["feedback.text"]);
    suite
        .feedback(own)
        .record_feedback(feedback(COMPLAINT))
        .await
        .unwrap();
    assert!(!stored_in_plaintext(&suite, COMPLAINT).await);

    let listed = suite
        .feedback(staff(&suite, "registrar", "quality_assurance"))
        .list_feedback(ListFeedbackRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap()
        .into_inner()
        .feedback;
    assert_eq!(listed[0].text, COMPLAINT);
    assert_eq!(listed[0].kind(), FeedbackKind::Complaint);
    // A tutor does not read complaints.
    let err = suite
        .feedback(staff(&suite, "tutor", "course_administration"))
        .list_feedback(ListFeedbackRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    verify_identity(&suite, &learner).await;
    let export = suite
        .subject_data(dpo.clone())
        .export_subject(ExportSubjectRequest {
            subject: subject(&learner),
            services: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let document: serde_json::Value = serde_json::from_slice(&export.exports[0].document).unwrap();
    assert_eq!(document["feedback"][0]["text"], COMPLAINT);
    assert_eq!(document["feedback"][0]["kind"], "FEEDBACK_KIND_COMPLAINT");
    suite
        .subject_data(dpo)
        .erase_subject(EraseSubjectRequest {
            subject: subject(&learner),
            services: Vec::new(),
            reason: "erasure request".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    let err = suite
        .feedback(staff(&suite, "registrar", "quality_assurance"))
        .list_feedback(ListFeedbackRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
