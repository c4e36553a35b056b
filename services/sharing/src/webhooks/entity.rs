//! The webhook tables (see [`super::migration`]). Both are tenant-scoped.

/// A partner's webhook endpoint. Hand-written Debug: the sealed secret is a key however
/// wrapped, and the URL's query may carry the partner's own token.
pub mod endpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_webhook_endpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub partner_id: String,
        pub tenant: String,
        pub url: String,
        /// The signing secret's bytes sealed under the partner's vault data key (see
        /// `crate::keys::PartnerKeys::seal_webhook_secret`).
        pub sealed_secret: Vec<u8>,
        pub enabled: bool,
        /// Why it was disabled (`gone`: the endpoint answered 410); `None` while enabled.
        pub disabled_reason: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("WebhookEndpoint")
                .field("partner_id", &self.partner_id)
                .field("enabled", &self.enabled)
                .field("url", &"[redacted]")
                .field("sealed_secret", &"[redacted]")
                .finish_non_exhaustive()
        }
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// One message of the outbox: what is sent, and how its delivery stands.
pub mod message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sharing_webhook_messages")]
    pub struct Model {
        /// A UUIDv7, the `webhook-id` header: in creation order, so pages follow it.
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub tenant: String,
        pub partner_id: String,
        /// `delivery.ready`, ...
        pub event_type: String,
        /// The exact JSON sent and signed: the event type and ids, nothing else.
        pub body: String,
        /// Attempts made so far.
        pub attempts: i32,
        /// When the next attempt is due (while `pending`).
        pub next_attempt_at: DateTimeUtc,
        /// `pending`, `delivered`, `failed` or `endpoint_disabled`.
        pub state: String,
        /// The HTTP status of the last attempt, if it got one.
        pub last_status: Option<i32>,
        /// Why the last attempt failed, without the URL or any body.
        pub last_error: Option<String>,
        pub created_at: DateTimeUtc,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}
