//! The sharing service end to end over real gRPC, through the whole suite as `tutela serve` runs
//! it, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access;
mod agreements;
mod disclosures;
mod inbound;
mod notices;
mod partners;
mod releases;
mod webhooks;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tutela_policy::audit::entity::record;
use tutela_proto::common::{IdempotencyKey, LegalBasis};
use tutela_proto::sharing::{
    AgreementPurpose, CreateAgreementRequest, CreatePartnerRequest, Partner, PartnerKind,
    PartnerRole, PurposeTerms, TransferSafeguard,
};
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite};
pub use tutela_testkit::{fields, reason};

/// The contact of a partner may name a person: declared personal, so the log scan looks for it.
pub const CONTACT: &str = "exams.officer@examboard.example.org";

/// The dpo, for `legal_obligation` (the purpose partners and agreements are managed for).
pub fn dpo(suite: &TestSuite) -> Credentials {
    Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "legal_obligation")
}

/// Someone of `tenant` with `role`, for `purpose`.
pub fn staff(suite: &TestSuite, tenant: &str, role: &str, purpose: &str) -> Credentials {
    Credentials::new(&suite.token(tenant, "staff-1", &[role]), purpose)
}

/// A partner established in `country`.
pub fn new_partner(country: &str) -> CreatePartnerRequest {
    personal(&[CONTACT]);
    CreatePartnerRequest {
        partner: Some(Partner {
            legal_name: "Example Exam Board Ltd".into(),
            kind: PartnerKind::ExamBody as i32,
            role: PartnerRole::Controller as i32,
            country: country.into(),
            contact_email: CONTACT.into(),
            ..Default::default()
        }),
        idempotency_key: None,
    }
}

/// Creates a partner in `country` as the dpo of `acme`; its id.
pub async fn partner(suite: &TestSuite, country: &str) -> String {
    suite
        .partners(dpo(suite))
        .create_partner(new_partner(country))
        .await
        .unwrap()
        .into_inner()
        .partner
        .unwrap()
        .partner_id
}

/// Terms for one purpose.
pub fn terms(purpose: AgreementPurpose, basis: LegalBasis, fields: &[&str]) -> PurposeTerms {
    PurposeTerms {
        purpose: purpose as i32,
        legal_basis: basis as i32,
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

/// A moment `days` from now.
pub fn days(days: i64) -> prost_types::Timestamp {
    let t = chrono::Utc::now() + chrono::Duration::days(days);
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// An exam-booking agreement with `partner_id`, valid from yesterday, open-ended.
pub fn new_agreement(partner_id: &str) -> CreateAgreementRequest {
    CreateAgreementRequest {
        partner_id: partner_id.into(),
        valid_from: Some(days(-1)),
        valid_to: None,
        purposes: vec![
            terms(
                AgreementPurpose::ExamBooking,
                LegalBasis::Contract,
                &[
                    "learner_id",
                    "profile.given_name",
                    "profile.family_name",
                    "profile.email",
                    "profile.photo_id_reference",
                ],
            ),
            terms(
                AgreementPurpose::ExamResults,
                LegalBasis::Contract,
                &["result.score", "result.passed", "result.assessed_at"],
            ),
        ],
        partner_retention: "P1Y".into(),
        access_period: "P12M".into(),
        transfer_safeguard: TransferSafeguard::Unspecified as i32,
        safeguard_reference: String::new(),
        idempotency_key: None,
    }
}

/// `request` with an idempotency key.
pub fn keyed(mut request: CreateAgreementRequest, key: &str) -> CreateAgreementRequest {
    request.idempotency_key = Some(IdempotencyKey { key: key.into() });
    request
}

/// The reasons of the audit records of `rpc`, oldest first.
pub async fn audited(suite: &TestSuite, rpc: &str) -> Vec<String> {
    let db = suite.database().connect().await.unwrap();
    record::Entity::find()
        .filter(record::Column::Rpc.eq(rpc))
        .order_by_asc(record::Column::Seq)
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reason)
        .collect()
}
