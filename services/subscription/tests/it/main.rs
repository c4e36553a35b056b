//! The subscription service end to end: the consent ledger over real gRPC, and the guard's
//! consent gate reading it, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod gate;
mod ledger;
mod matrix;
mod pii;
mod property;
mod retention;
mod subscriptions;

use tutela_proto::common::{IdempotencyKey, Purpose, SubjectRef};
use tutela_proto::consent::{
    ConsentActor, ConsentEvidence, ConsentMethod, Guardian, RecordConsentRequest,
    WithdrawConsentRequest,
};
use tutela_store::testing::logs::personal;
pub use tutela_testkit::{fields, reason};

pub const SUBJECT: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";
pub const OTHER_SUBJECT: &str = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// A fixture value that must never show up in logs (see the PII scan).
pub const EVIDENCE_REF: &str = "form-submission-7781";
pub const GUARDIAN_NAME: &str = "Ada Lovelace-Byron";

pub fn subject(id: &str) -> Option<SubjectRef> {
    personal(&[id]);
    Some(SubjectRef {
        subject_id: id.to_owned(),
    })
}

pub fn evidence(actor: ConsentActor) -> ConsentEvidence {
    personal(&[EVIDENCE_REF, GUARDIAN_NAME]);
    ConsentEvidence {
        method: ConsentMethod::WebForm as i32,
        wording_version: "marketing-2026-03".into(),
        wording_sha256: "a".repeat(64),
        evidence_reference: EVIDENCE_REF.into(),
        actor: actor as i32,
        guardian: (actor == ConsentActor::Guardian).then(|| Guardian {
            guardian_id: String::new(),
            name: GUARDIAN_NAME.into(),
            relationship: "parent".into(),
        }),
    }
}

pub fn grant(id: &str, purpose: Purpose, recipient: &str) -> RecordConsentRequest {
    personal(&[recipient]);
    RecordConsentRequest {
        subject: subject(id),
        purpose: purpose as i32,
        recipient: recipient.into(),
        evidence: Some(evidence(ConsentActor::Subject)),
        occurred_at: None,
        idempotency_key: None,
    }
}

pub fn withdraw(id: &str, purpose: Purpose, recipient: &str) -> WithdrawConsentRequest {
    personal(&[recipient]);
    WithdrawConsentRequest {
        subject: subject(id),
        purpose: purpose as i32,
        recipient: recipient.into(),
        evidence: Some(evidence(ConsentActor::Subject)),
        occurred_at: None,
        idempotency_key: None,
    }
}

pub fn keyed(mut r: RecordConsentRequest, key: &str) -> RecordConsentRequest {
    r.idempotency_key = Some(IdempotencyKey { key: key.into() });
    r
}
