//! Contacts, their subscriptions, the evidence of every state change, delivery events, the
//! suppression list and the tenant's topics. No column holds a readable personal value: addresses
//! and dates of birth are sealed under the contact's data key, and look-ups go through keyed
//! blind indexes.

/// A person who can receive communications: a learner or someone who only signed up for news.
pub mod contact {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "contacts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        /// The contact's subject id (a learner's id for a learner).
        pub contact_id: String,
        /// Date of birth and country as JSON, sealed under the contact's data key; empty when
        /// the contact gave neither.
        pub sealed_profile: Vec<u8>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: ContactId);
}

/// One address's subscription to one topic by one channel.
pub mod subscription {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        #[sea_orm(unique)]
        pub subscription_id: String,
        pub tenant: String,
        pub contact_id: String,
        pub channel: String,
        pub topic: String,
        /// `pending`, `confirmed`, `unsubscribed` or `suppressed`.
        pub state: String,
        /// The address, sealed under the contact's data key.
        pub sealed_address: Vec<u8>,
        /// Keyed blind index of the normalised address (per channel), for duplicates and the
        /// suppression list.
        pub address_index: String,
        /// Keyed hash of the SMS/phone confirmation code while one is outstanding.
        pub code_hash: Option<String>,
        /// When the outstanding token or code expires.
        pub confirm_expires_at: Option<DateTimeUtc>,
        /// Wrong codes tried since the code was issued.
        pub code_attempts: i32,
        pub created_at: DateTimeUtc,
        pub confirmed_at: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
        /// The `seq` of the contact's key row in the vault (`SubjectKey::handle`), so that an
        /// audience reaches each key by an integer look-up.
        pub key_seq: Option<i64>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: ContactId);
}

/// The evidence of each state change of a subscription, append-only.
pub mod evidence {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscription_evidence")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub contact_id: String,
        pub subscription_id: String,
        /// The state before; empty for a sign-up.
        pub from_state: String,
        pub to_state: String,
        /// How: `sign_up`, `email_token`, `code`, `one_click`, `opt_out`, `hard_bounce`,
        /// `complaint`.
        pub method: String,
        /// Form, page or import id; never personal data.
        pub source: String,
        pub wording_version: String,
        pub wording_sha256: String,
        /// The principal who recorded it, or `token` for a token holder.
        pub recorded_by: String,
        pub occurred_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: ContactId);
}

/// Events of sent messages, kept for the register's event retention.
pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "delivery_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub contact_id: String,
        pub subscription_id: String,
        pub message_id: String,
        pub kind: String,
        pub occurred_at: DateTimeUtc,
        pub recorded_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: ContactId);
}

/// Addresses that must never be written to again: a keyed hash per channel, nothing readable.
pub mod suppression {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "suppressions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub channel: String,
        pub address_index: String,
        /// `hard_bounce`, `complaint` or `erasure`.
        pub reason: String,
        pub created_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// The topics of a tenant.
pub mod topic {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "topics")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub topic_id: String,
        pub description: String,
        pub updated_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}
