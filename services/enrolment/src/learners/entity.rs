//! The learner tables: one row per learner (ids and blind indexes only), one sealed part per data
//! category of their profile, and the idempotency keys of learner writes.

/// A learner: no personal value, only the id and keyed blind indexes.
pub mod learner {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "learners")]
    pub struct Model {
        /// Creation order; also the paging cursor.
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub learner_id: String,
        pub email_index: Option<String>,
        pub family_name_index: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub created_by: String,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);
}

/// One data category of a learner's profile, sealed under the learner's data key.
pub mod part {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "learner_data")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub learner_id: String,
        /// The category's short name.
        pub category: String,
        /// The profile with only this category's fields, encoded and sealed.
        pub sealed: Vec<u8>,
        pub updated_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);
}

/// A write's idempotency key, with a hash of the request it came with.
pub mod idempotency {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrolment_idempotency")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub key: String,
        pub rpc: String,
        pub request_hash: String,
        pub learner_id: String,
        pub created_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);

    // One table for the keys of two RPCs, so the RPC is stored and compared too.
    impl tutela_policy::idempotency::KeyTable for Entity {
        const KEY: Column = Column::Key;
        fn stored(row: &Model) -> (Option<&str>, Option<&str>) {
            (Some(&row.rpc), Some(&row.request_hash))
        }
    }
}

/// A change to a learner that recipients of their data must hear of (GDPR Art. 19): a
/// rectification (with the names of the fields changed, never the values) or an erasure. Written
/// in the transaction of the change itself; read by followers through ListLearnerChanges.
pub mod change {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "learner_changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub learner_id: String,
        /// `rectified` or `erased`.
        pub kind: String,
        /// Comma-separated profile field names (rectifications only).
        pub fields: String,
        pub changed_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);
}
