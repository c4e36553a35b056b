//! Personal data never reaches logs or spans. Every event and span of this test binary is
//! captured (debug level, span fields included) and scanned for the fixtures' declared personal
//! values as each test's database goes (`tutela_store::testing::logs`); this test runs a flow that
//! handles such values on purpose — writes and reads, refusals, bad input — and scans the whole
//! capture itself.

use tutela_proto::common::Purpose;
use tutela_proto::consent::{ConsentActor, GetConsentStateRequest};
use tutela_store::testing::logs;
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

#[tokio::test]
async fn no_fixture_personal_value_appears_in_logs_or_spans() {
    let capture = logs::capture();
    assert!(logs::capture_is_active());
    let suite = TestSuite::start().await.unwrap();
    let cm = "consent_management";
    let registrar = Credentials::new(&suite.token("acme", "staff-1", &["registrar"]), cm);
    let mut ledger = suite.consent_ledger(registrar);
    let mut request = grant(SUBJECT, Purpose::Marketing, "Initech Employer Ltd");
    request.evidence = Some(evidence(ConsentActor::Guardian));
    ledger.record_consent(request).await.unwrap();
    ledger
        .get_consent_state(GetConsentStateRequest {
            subject: subject(SUBJECT),
            purpose: 0,
        })
        .await
        .unwrap();
    // Refusals and bad input log too.
    let mut bad = grant(
        "not-a-uuid",
        Purpose::CourseAdministration,
        "Initech Employer Ltd",
    );
    bad.evidence.as_mut().unwrap().wording_sha256 = "zz".into();
    assert!(ledger.record_consent(bad).await.is_err());
    let learner = Credentials::new(&suite.token("acme", OTHER_SUBJECT, &["learner"]), cm);
    assert!(
        suite
            .consent_ledger(learner)
            .record_consent(grant(SUBJECT, Purpose::Marketing, ""))
            .await
            .is_err()
    );
    suite.stop().await.unwrap();

    let text = capture.text();
    assert!(
        text.contains("consent ledger entry appended"),
        "the capture works: {} bytes",
        text.len()
    );
    for value in [
        SUBJECT,
        OTHER_SUBJECT,
        EVIDENCE_REF,
        GUARDIAN_NAME,
        "Initech Employer Ltd",
    ] {
        assert!(!text.contains(value), "a log or span carries {value:?}");
    }
}
