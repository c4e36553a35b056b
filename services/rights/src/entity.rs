//! The rights service's tables: the requests, and one task per request and service. Both are
//! tenant- and subject-scoped, so that the rights path reaches a person's own requests and a
//! caller's queries cannot leave its tenant.

/// A rights request and where it stands.
pub mod request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_requests")]
    pub struct Model {
        /// Row number: the order requests were recorded in (pages run newest first).
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub request_id: String,
        pub tenant: String,
        pub subject_id: String,
        /// A short name of `tutela.rights.v1.RightsRequestKind` (`access`, `erasure`, ...).
        pub kind: String,
        /// `subject`, `guardian` or `authorised_agent`.
        pub requester: String,
        /// The organisation's reference; empty for none.
        pub reference: String,
        /// `received`, `identity_verified`, `in_progress`, `completed`, `partially_completed` or
        /// `refused`.
        pub state: String,
        pub received_at: DateTimeUtc,
        pub deadline: DateTimeUtc,
        pub extension_reason: Option<String>,
        pub identity_verified_at: Option<DateTimeUtc>,
        pub approved_by: Option<String>,
        pub refusal_reason: Option<String>,
        pub finished_at: Option<DateTimeUtc>,
        /// The principal who recorded it.
        pub recorded_by: String,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
        /// RECTIFICATION: the names of the fields to correct, comma-separated; empty otherwise.
        pub corrected_fields: String,
        /// RECTIFICATION: the correction (a `tutela.rights.v1.Correction`, protobuf-encoded),
        /// sealed under the subject's key in the rights service's vault scope; dropped once the
        /// request is finished.
        pub correction: Option<Vec<u8>>,
        /// OBJECTION: the short names of the purposes objected to, comma-separated; empty
        /// otherwise.
        pub purposes: String,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RightsRequest")
                .field("request_id", &self.request_id)
                .field("kind", &self.kind)
                .field("state", &self.state)
                .field(
                    "correction",
                    &self.correction.as_ref().map(|_| "[redacted]"),
                )
                .finish_non_exhaustive()
        }
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}

/// One service's part of a request. Hand-written Debug: `export` is the subject's data, however
/// sealed.
pub mod task {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_tasks")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub subject_id: String,
        pub request_id: String,
        pub service: String,
        /// `pending`, `done` or `failed`.
        pub state: String,
        /// Attempts since the task was (re)started.
        pub attempts: i32,
        pub last_error: Option<String>,
        pub next_attempt_at: DateTimeUtc,
        pub done_at: Option<DateTimeUtc>,
        /// What the service reported: a `tutela.rights.v1.TaskOutcome`, protobuf-encoded.
        pub outcome: Option<Vec<u8>>,
        /// ACCESS and PORTABILITY: the service's export document, sealed under the subject's key
        /// in the rights service's vault scope (so that an erasure shreds it with the rest).
        pub export: Option<Vec<u8>>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RightsTask")
                .field("request_id", &self.request_id)
                .field("service", &self.service)
                .field("state", &self.state)
                .field("attempts", &self.attempts)
                .field("export", &self.export.as_ref().map(|_| "[redacted]"))
                .finish_non_exhaustive()
        }
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}
