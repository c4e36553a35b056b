//! Personal data never reaches logs or spans: every event and span of this test binary is
//! captured (debug level, span fields included), a flow that handles the fixtures' personal
//! values runs — successful writes and reads, refusals, bad input — and the capture is scanned
//! for those values.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tutela_proto::common::Purpose;
use tutela_proto::consent::{ConsentActor, GetConsentStateRequest};
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The one global subscriber of this test binary: everything from every test lands here.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        capture
    })
}

#[tokio::test]
async fn no_fixture_personal_value_appears_in_logs_or_spans() {
    let capture = capture();
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

    let text = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
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
