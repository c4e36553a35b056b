//! Rights requests end to end over real gRPC, through the whole suite as `tutela serve` runs it
//! (the coordinator calling every service's SubjectData endpoint over the socket), on SQLite
//! and (with `TEST_DATABASE_URL`) PostgreSQL.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod away;
mod requests;

use std::io::Read;
use std::time::Duration;

use futures::StreamExt;
use sha2::Digest;

use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::EnrolmentStatus;
use tutela_proto::privacy::VerificationMethod;
use tutela_proto::rights::{
    DownloadAccessBundleRequest, GetRightsRequestRequest, Requester, RightsRequest,
    RightsRequestKind, RightsRequestState, SubmitRightsRequestRequest,
    VerifyRequesterIdentityRequest,
};
use tutela_testkit::{Credentials, TestSuite};
pub use tutela_testkit::{fields, reason};

/// The suite with the coordinator running every second and retrying after a second.
pub async fn suite_with(extra: serde_json::Value) -> TestSuite {
    TestSuite::start_with(|c| {
        let mut section = serde_json::json!({ "interval_secs": 1, "retry_base_secs": 1 });
        if let (Some(s), Some(extra)) = (section.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        c.sections.insert("rights".into(), section);
    })
    .await
    .unwrap()
}

/// The dpo of `acme`, for `subject_rights`.
pub fn dpo(suite: &TestSuite) -> Credentials {
    Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights")
}

/// A registrar of `acme`, for `subject_rights`.
pub fn registrar(suite: &TestSuite) -> Credentials {
    Credentials::new(
        &suite.token("acme", "registrar-1", &["registrar"]),
        "subject_rights",
    )
}

/// A learner of `acme` enrolled on a course they completed; their id and the course's.
pub async fn learner(suite: &TestSuite, n: u64) -> (String, String) {
    let ids = suite
        .create_learners("acme", [tutela_testkit::sample_profile(n)], 1)
        .await
        .unwrap();
    let course = suite
        .create_course("acme", &format!("RIGHTS-{n}-{}", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    suite
        .enrol("acme", &ids[0], &course, EnrolmentStatus::Completed)
        .await
        .unwrap();
    (ids[0].clone(), course)
}

/// Submits a request of `kind` about `subject` as the dpo.
pub async fn submit(suite: &TestSuite, subject: &str, kind: RightsRequestKind) -> RightsRequest {
    suite
        .rights(dpo(suite))
        .submit_rights_request(SubmitRightsRequestRequest {
            subject: Some(SubjectRef {
                subject_id: subject.into(),
            }),
            kind: kind as i32,
            requester: Requester::Subject as i32,
            reference: "ticket 2026-118".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

/// Records the requester's identity check on `request_id` as `who`.
pub async fn verify(
    suite: &TestSuite,
    who: Credentials,
    request_id: &str,
) -> Result<RightsRequest, tonic::Status> {
    Ok(suite
        .rights(who)
        .verify_requester_identity(VerifyRequesterIdentityRequest {
            request_id: request_id.into(),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "front desk note 7".into(),
        })
        .await?
        .into_inner()
        .request
        .unwrap())
}

/// The request as it is now.
pub async fn get(suite: &TestSuite, request_id: &str) -> RightsRequest {
    suite
        .rights(dpo(suite))
        .get_rights_request(GetRightsRequestRequest {
            request_id: request_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

/// Waits (up to 60 s) until `done` holds of the request; the request then.
pub async fn wait_until(
    suite: &TestSuite,
    request_id: &str,
    what: &str,
    done: impl Fn(&RightsRequest) -> bool,
) -> RightsRequest {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let request = get(suite, request_id).await;
        if done(&request) {
            return request;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {what} within 60 s: {request:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the request is finished (completed, partially completed or refused).
pub async fn finished(suite: &TestSuite, request_id: &str) -> RightsRequest {
    wait_until(suite, request_id, "finished", |r| {
        [
            RightsRequestState::Completed as i32,
            RightsRequestState::PartiallyCompleted as i32,
            RightsRequestState::Refused as i32,
        ]
        .contains(&r.state)
    })
    .await
}

/// The bundle of `request_id`, downloaded as the dpo and checked against the hash sent with it.
pub async fn download(suite: &TestSuite, request_id: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = suite
        .rights(dpo(suite))
        .download_access_bundle(DownloadAccessBundleRequest {
            request_id: request_id.into(),
        })
        .await?
        .into_inner();
    let mut archive = Vec::new();
    let mut sha = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if sha.is_empty() {
            sha = chunk.archive_sha256;
        }
        archive.extend_from_slice(&chunk.data);
    }
    assert_eq!(sha, hex::encode(sha2::Sha256::digest(&archive)));
    Ok(archive)
}

/// The text of `name` in `archive`.
pub fn file(archive: &[u8], name: &str) -> String {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let mut text = String::new();
    zip.by_name(name)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}
