//! The sharing service's tables: partners, their sealed pseudonym keys, and agreements with their
//! per-purpose terms. Every table is tenant-scoped (`tutela_policy::scope`), so a query reaches
//! rows only through the caller's tenant.

/// A partner: an organisation data may be disclosed to.
pub mod partner {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_partners")]
    pub struct Model {
        /// A UUIDv7: unique across tenants and in creation order, so pages follow it.
        #[sea_orm(primary_key, auto_increment = false)]
        pub partner_id: String,
        pub tenant: String,
        pub legal_name: String,
        /// Short name of the `PartnerKind` (`exam_body`, ...).
        pub kind: String,
        /// Short name of the `PartnerRole` (`controller`, ...).
        pub role: String,
        pub country: String,
        pub contact_email: String,
        /// The version of the current pseudonym key (its row in `sharing_partner_keys`).
        pub key_version: i32,
        pub created_at: DateTimeUtc,
        /// Touched by every write that must not interleave with another on the same partner
        /// (a key rotation, an agreement's version or activation): the row lock serialises them.
        pub updated_at: DateTimeUtc,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// One version of a partner's pseudonym key, sealed. Hand-written Debug: the sealed bytes are
/// a key, however wrapped.
pub mod partner_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_partner_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub partner_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        pub tenant: String,
        /// The 32-byte key sealed under the partner's data key in the vault (see `crate::keys`).
        pub sealed_key: Vec<u8>,
        pub created_at: DateTimeUtc,
        /// When a newer version replaced it; kept so that pseudonyms a partner sends back under
        /// it can still be mapped.
        pub retired_at: Option<DateTimeUtc>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PartnerKey")
                .field("partner_id", &self.partner_id)
                .field("version", &self.version)
                .field("sealed_key", &"[redacted]")
                .finish_non_exhaustive()
        }
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// One version of a data-sharing agreement. Its terms are written once, at creation; only the
/// state and its times change afterwards.
pub mod agreement {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_agreements")]
    pub struct Model {
        /// A UUIDv7.
        #[sea_orm(primary_key, auto_increment = false)]
        pub agreement_id: String,
        pub tenant: String,
        pub partner_id: String,
        pub version: i32,
        /// `draft`, `active` or `terminated` (expiry is read from `valid_to`).
        pub state: String,
        pub valid_from: DateTimeUtc,
        pub valid_to: Option<DateTimeUtc>,
        /// ISO-8601 duration, as validated and normalised.
        pub partner_retention: String,
        /// ISO-8601 duration, or empty.
        pub access_period: String,
        /// Short name of the `TransferSafeguard` (`none`, `sccs`, ...).
        pub transfer_safeguard: String,
        pub safeguard_reference: String,
        pub created_at: DateTimeUtc,
        pub activated_at: Option<DateTimeUtc>,
        pub terminated_at: Option<DateTimeUtc>,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// What one agreement lets its partner receive for one purpose.
pub mod agreement_purpose {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_agreement_purposes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agreement_id: String,
        /// The register purpose's short name (`exam_booking`, ...).
        #[sea_orm(primary_key, auto_increment = false)]
        pub purpose: String,
        pub tenant: String,
        /// Short name of the legal basis (`contract`, ...).
        pub legal_basis: String,
        /// The field paths, as a JSON array of strings, in the request's order.
        pub fields: String,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// One delivery: the records made available to a partner by one disclosure, under one agreement
/// version and purpose.
pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_deliveries")]
    pub struct Model {
        /// A UUIDv7, so a partner's deliveries page in creation order.
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        pub tenant: String,
        pub partner_id: String,
        pub agreement_id: String,
        pub agreement_version: i32,
        /// The register purpose's short name.
        pub purpose: String,
        /// Short name of the legal basis.
        pub legal_basis: String,
        /// The field paths disclosed, as a JSON array.
        pub fields: String,
        /// `pull` or `file`.
        pub channel: String,
        /// For a file: `candidates_csv` or `funder_return_xml`; empty for a pull.
        pub layout: String,
        /// For a file: the lower-case hex SHA-256 of its bytes; empty for a pull.
        pub file_sha256: String,
        /// The partner's pseudonym key version the records are under.
        pub key_version: i32,
        pub record_count: i32,
        /// The principal id of who disclosed.
        pub actor: String,
        pub created_at: DateTimeUtc,
        /// The end of the agreement's access period from `created_at`, if it sets one.
        pub available_until: Option<DateTimeUtc>,
        /// When the partner was asked to delete it (its retention period under the agreement
        /// ended); `None` until then.
        pub deletion_requested_at: Option<DateTimeUtc>,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// One learner's record in a delivery, sealed under the partner's data key: it is personal data
/// at rest until the partner pulls it and the access period ends. Hand-written Debug.
pub mod delivery_record {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_delivery_records")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub position: i32,
        pub tenant: String,
        pub pseudonym: String,
        /// The encoded `tutela.enrolment.v1.Learner` as delivered, sealed.
        pub sealed_record: Vec<u8>,
        pub payload_sha256: String,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("DeliveryRecord")
                .field("delivery_id", &self.delivery_id)
                .field("position", &self.position)
                .field("sealed_record", &"[redacted]")
                .finish_non_exhaustive()
        }
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// The disclosure log: one entry per learner per delivery, chained per partner. Never updated;
/// holds no disclosed value.
pub mod disclosure {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_disclosure_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub partner_id: String,
        /// 1, 2, ... along the partner's chain.
        #[sea_orm(primary_key, auto_increment = false)]
        pub position: i64,
        pub tenant: String,
        /// The learner: the log answers access requests and finds who must hear of a
        /// rectification, so it names the learner (at rest, never in logs or spans).
        pub subject_id: String,
        pub delivery_id: String,
        pub agreement_id: String,
        pub agreement_version: i32,
        pub purpose: String,
        pub legal_basis: String,
        /// The field paths, as a JSON array.
        pub fields: String,
        pub channel: String,
        pub disclosed_at: DateTimeUtc,
        pub actor: String,
        pub payload_sha256: String,
        /// An exceptional disclosure's order or request reference; empty otherwise.
        pub reference: String,
        /// An exceptional disclosure's requester; empty otherwise.
        pub requester: String,
        /// Until when the learner must not be told of an exceptional disclosure.
        pub do_not_tell_until: Option<DateTimeUtc>,
        /// The previous entry's `entry_hash` (64 zeros for the first).
        pub prev_hash: String,
        pub entry_hash: String,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}

/// A notice to a partner that fields it received were rectified, or the learner erased (Art. 19).
pub mod notice {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_notices")]
    pub struct Model {
        /// A UUIDv7, so notices page in creation order.
        #[sea_orm(primary_key, auto_increment = false)]
        pub notice_id: String,
        pub tenant: String,
        pub partner_id: String,
        pub subject_id: String,
        /// The partner's pseudonym of the learner (of the last delivery's key version).
        pub pseudonym: String,
        /// `rectified`, `erased` or `deletion_requested`.
        pub kind: String,
        /// The field paths, as a JSON array.
        pub fields: String,
        /// What makes the change one: `erased`, or a hash of the rectification.
        pub change_key: String,
        /// `pending`, `sent`, `acknowledged`, `failed` or `not_possible`.
        pub state: String,
        pub changed_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub sent_at: Option<DateTimeUtc>,
        pub acknowledged_at: Option<DateTimeUtc>,
        /// The delivery a deletion request is about; empty otherwise.
        pub delivery_id: String,
        /// Why it failed or is not possible; empty in other states.
        pub reason: String,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}

/// Where the follower of a tenant's learner change feed has read to.
pub mod change_cursor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_change_cursors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant: String,
        pub cursor: String,
        pub updated_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// An exam booking a partner confirmed for a learner (InboundService/SubmitBookingConfirmations),
/// one per partner and booking reference: the partner's rebooking replaces it.
pub mod booking {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_bookings")]
    pub struct Model {
        /// A UUIDv7, so bookings page in the order they were first confirmed.
        #[sea_orm(primary_key, auto_increment = false)]
        pub booking_id: String,
        pub tenant: String,
        pub partner_id: String,
        /// The learner the partner's pseudonym mapped back to (at rest, never in logs or spans).
        pub subject_id: String,
        /// The partner's own reference, unique per partner.
        pub booking_reference: String,
        pub course_id: String,
        pub starts_at: DateTimeUtc,
        pub venue: String,
        pub confirmed_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}

/// A partner's submission made with an idempotency key: the key, the request's fingerprint and
/// the response given, so that a retry gets the same answer and acts on nothing again. The
/// response holds outcomes by index only, no learner.
pub mod inbound_submission {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_inbound_submissions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant: String,
        /// The partner's key, prefixed by its partner id: two partners' keys never collide.
        #[sea_orm(primary_key, auto_increment = false)]
        pub idempotency_key: String,
        pub partner_id: String,
        /// The RPC the key came with (one table for both submissions).
        pub rpc: String,
        pub request_hash: String,
        /// The encoded response.
        pub response: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);

    // One table for the keys of two RPCs, so the RPC is stored and compared too.
    impl tutela_policy::idempotency::KeyTable for Entity {
        const KEY: Column = Column::IdempotencyKey;
        fn stored(row: &Model) -> (Option<&str>, Option<&str>) {
            (Some(&row.rpc), Some(&row.request_hash))
        }
    }
}

/// A survey release shared with a partner: the release as the survey service returned it (its
/// results checked against its output hash), kept as shared. Anonymous: no learner in it.
pub mod release_share {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_release_shares")]
    pub struct Model {
        /// A UUIDv7, so a partner's shares page in creation order.
        #[sea_orm(primary_key, auto_increment = false)]
        pub share_id: String,
        pub tenant: String,
        pub partner_id: String,
        pub release_id: String,
        pub survey_id: String,
        /// The release's recorded output hash, checked against its results when shared.
        pub output_sha256: String,
        /// The `tutela.survey.v1.Release` as shared, protobuf-encoded.
        pub release: Vec<u8>,
        pub shared_at: DateTimeUtc,
        /// The principal id of who shared it.
        pub shared_by: String,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}
