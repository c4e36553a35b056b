//! The guard over real gRPC: every refusal has the documented code and reason, and an authorised
//! call reaches its handler.

use tonic::Code;
use tonic_types::StatusExt;
use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::{DescribeSubjectRequest, EraseSubjectRequest, ExportSubjectRequest};
use tutela_testkit::{Credentials, TestSuite};

const SUBJECT: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";

fn describe(subject: &str) -> DescribeSubjectRequest {
    tutela_store::testing::logs::personal(&[subject]);
    DescribeSubjectRequest {
        subject: Some(SubjectRef {
            subject_id: subject.to_owned(),
        }),
        services: Vec::new(),
    }
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_call_without_a_token_is_unauthenticated() {
    let suite = TestSuite::start().await.unwrap();
    let err = suite
        .subject_data(Credentials::none())
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "TOKEN_MISSING");
}

#[tokio::test]
async fn a_forged_token_is_unauthenticated() {
    let suite = TestSuite::start().await.unwrap();
    let good = suite.token("acme", "dpo-1", &["dpo"]);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged = parts.join(".");
    let err = suite
        .subject_data(Credentials::new(&forged, "subject_rights"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "TOKEN_INVALID");
}

#[tokio::test]
async fn a_missing_or_unknown_purpose_is_an_invalid_argument_naming_the_metadata_key() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let err = suite
        .subject_data(Credentials::new(&token, "x").without_purpose())
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "PURPOSE_MISSING");
    let bad = err.get_details_bad_request().unwrap();
    assert_eq!(bad.field_violations[0].field, "x-tutela-purpose");

    let err = suite
        .subject_data(Credentials::new(&token, "curiosity"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "PURPOSE_UNKNOWN");
}

#[tokio::test]
async fn a_role_without_a_grant_is_denied() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "tutor-1", &["tutor"]);
    let err = suite
        .subject_data(Credentials::new(&token, "subject_rights"))
        .export_subject(ExportSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            services: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "ACCESS_DENIED");
}

#[tokio::test]
async fn the_dpo_reaches_the_rights_endpoint_for_subject_rights() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let reply = suite
        .subject_data(Credentials::new(&token, "subject_rights"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap()
        .into_inner();
    // Every hosted service answers for itself: none holds anything for an unknown subject.
    let services: Vec<&str> = reply.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, ["enrolment", "subscription"]);
    assert!(reply.services.iter().all(|s| s.categories.is_empty()));

    // The same dpo, for marketing, is denied.
    let err = suite
        .subject_data(Credentials::new(&token, "marketing"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_learner_reaches_only_their_own_data() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", SUBJECT, &["learner"]);
    let client = suite.subject_data(Credentials::new(&token, "subject_rights"));
    client
        .clone()
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap();
    let other = "5d0c1f8e-2b3a-4c4d-8e9f-a0b1c2d3e4f5";
    let err = client
        .clone()
        .describe_subject(describe(other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // And may not erase, even themselves: erasure goes through the dpo.
    let err = client
        .clone()
        .erase_subject(EraseSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            reason: "art17".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let client = suite.subject_data(Credentials::new(&token, "subject_rights"));
    let err = client
        .clone()
        .describe_subject(describe("not-a-uuid"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "subject.subject_id"
    );

    let err = client
        .clone()
        .describe_subject(DescribeSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            services: vec!["nope".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "services[0]"
    );

    let err = client
        .clone()
        .erase_subject(EraseSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "reason"
    );
}
