//! One row per ledger entry. Rows are only ever inserted: triggers refuse UPDATE and DELETE.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_entries")]
pub struct Model {
    /// Position in the ledger; also the paging cursor.
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub entry_id: String,
    pub tenant: String,
    pub subject_id: String,
    /// The purpose's short name.
    pub purpose: String,
    /// Empty for the purpose as a whole.
    pub recipient: String,
    pub granted: bool,
    pub occurred_at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
    pub method: String,
    pub wording_version: String,
    pub wording_sha256: String,
    pub actor: String,
    /// The evidence reference and guardian, sealed under the subject's data key.
    pub sealed: Vec<u8>,
    pub recorded_by: String,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
}

tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);

/// Restrictions of processing (GDPR Art. 18) asked for and lifted, append-only like the ledger.
pub mod restriction {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "restrictions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub subject_id: String,
        pub restricted: bool,
        pub reason: String,
        pub recorded_by: String,
        pub recorded_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}

/// Objections to processing (GDPR Art. 21) per purpose, recorded and lifted, append-only: the
/// latest row of a subject and purpose says whether the objection stands.
pub mod objection {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "objections")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub subject_id: String,
        /// The purpose's short name.
        pub purpose: String,
        pub objected: bool,
        pub reason: String,
        pub recorded_by: String,
        pub recorded_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}

/// Staff members' checks of rights requesters' identities, append-only.
pub mod verification {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_verifications")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub subject_id: String,
        pub method: String,
        /// The evidence reference, sealed under the subject's data key.
        pub sealed: Vec<u8>,
        pub verified_by: String,
        pub verified_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}
