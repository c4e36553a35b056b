//! Tables of the audit log.

pub mod record {
    use sea_orm::entity::prelude::*;

    /// One audit record. Holds ids, pseudonyms and category names only, never personal values.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tutela_audit_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub at: DateTimeUtc,
        pub kind: String,
        pub tenant: String,
        pub principal: String,
        pub principal_kind: String,
        pub roles: String,
        pub rpc: String,
        pub purpose: String,
        pub subject: Option<String>,
        pub categories: String,
        pub decision: String,
        pub reason: String,
        pub trace_id: String,
        pub prev_hash: String,
        pub hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod head {
    use sea_orm::entity::prelude::*;

    /// The last record's sequence number and hash: a truncated tail shows as a mismatch here.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tutela_audit_head")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub seq: i64,
        pub hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod subject {
    use sea_orm::entity::prelude::*;

    /// Pseudonym → subject id, so that the dpo can resolve a breach answer to learners. Erasure
    /// deletes the row, after which the pseudonym in the log resolves to no one.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tutela_audit_subjects")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub pseudonym: String,
        pub tenant: String,
        pub subject_id: String,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AuditSubject")
                .field("pseudonym", &self.pseudonym)
                .field("tenant", &self.tenant)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    /// An access record staged by a write in the write's own transaction, not yet chained: the
    /// guard chains it after the call, or recovery does when the process died first.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tutela_audit_outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub at: DateTimeUtc,
        pub kind: String,
        pub tenant: String,
        pub principal: String,
        pub principal_kind: String,
        pub roles: String,
        pub rpc: String,
        pub purpose: String,
        pub subject: String,
        pub subject_id: String,
        pub categories: String,
        pub decision: String,
        pub reason: String,
        pub trace_id: String,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AuditOutbox")
                .field("id", &self.id)
                .field("rpc", &self.rpc)
                .field("subject", &self.subject)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
