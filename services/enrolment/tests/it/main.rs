//! The enrolment service end to end over real gRPC, on SQLite and (with `TEST_DATABASE_URL`)
//! PostgreSQL.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bulk;
mod data_path;
mod idempotency;
mod learners;
mod minors;
mod outcomes;
mod records;
mod retention;

use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::LearnerProfile;
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite};
pub use tutela_testkit::{fields, reason};

/// Fixture values that are personal data (declared so the log scan looks for them).
pub const GIVEN: &str = "Ada";
pub const FAMILY: &str = "Quatermain-Lovelace";
pub const EMAIL: &str = "ada.quatermain@example.org";
pub const DOB: &str = "1990-12-10";
pub const PHONE: &str = "+44 20 7946 0123";
pub const POSTCODE: &str = "SW1A 2AA";
pub const ETHNICITY: &str = "Mixed: White and Black Caribbean";
pub const DISABILITY: &str = "dyslexia";
pub const SUPPORT: &str = "25% extra time in written exams";
pub const PHOTO_ID: &str = "passport ending 4471";
pub const ORGANISATION: &str = "Initech Employer Ltd";
pub const QUALIFICATION: &str = "BTEC Level 3 Engineering";

pub fn profile() -> LearnerProfile {
    personal(&[
        GIVEN,
        FAMILY,
        EMAIL,
        DOB,
        PHONE,
        POSTCODE,
        ETHNICITY,
        DISABILITY,
        SUPPORT,
        PHOTO_ID,
        ORGANISATION,
        QUALIFICATION,
    ]);
    LearnerProfile {
        given_name: GIVEN.into(),
        family_name: FAMILY.into(),
        email: EMAIL.into(),
        phone: PHONE.into(),
        address: "10 Example Street, London".into(),
        postcode: POSTCODE.into(),
        date_of_birth: DOB.into(),
        gender: "female".into(),
        country: "GB".into(),
        organisation: ORGANISATION.into(),
        // Course administration does not need the photo ID (the register says so): the exam
        // officer adds it for exam booking.
        photo_id_reference: String::new(),
        previous_qualifications: vec![QUALIFICATION.into()],
        ethnicity: ETHNICITY.into(),
        disabilities: vec![DISABILITY.into()],
        support_needed: SUPPORT.into(),
    }
}

pub fn subject(id: &str) -> Option<SubjectRef> {
    personal(&[id]);
    Some(SubjectRef {
        subject_id: id.to_owned(),
    })
}

pub fn staff(suite: &TestSuite, role: &str, purpose: &str) -> Credentials {
    Credentials::new(&suite.token("acme", &format!("{role}-1"), &[role]), purpose)
}

/// Records, as the dpo, that the learner's identity was checked, so exports are released.
pub async fn verify_identity(suite: &TestSuite, learner: &str) {
    use tutela_proto::privacy::{RecordIdentityVerificationRequest, VerificationMethod};
    suite
        .subject_data(Credentials::new(
            &suite.token("acme", "dpo-1", &["dpo"]),
            "subject_rights",
        ))
        .record_identity_verification(RecordIdentityVerificationRequest {
            subject: subject(learner),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "front desk note 2026-11-24/3".into(),
        })
        .await
        .unwrap();
}
