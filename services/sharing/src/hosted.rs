//! The sharing service as a `tutela` process hosts it: its settings section, migrations, its
//! three gRPC services and the webhook delivery job. It holds no learner's data yet, so it has
//! no part in data-subject rights.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde::Deserialize;
use tutela_host::{
    BoxFuture, BuildError, Context, HostedService, Progress, RecipientEntry, Served, SweepReport,
    Sweeper,
};
use tutela_policy::Register;
use tutela_proto::sharing::agreement_service_server::AgreementServiceServer;
use tutela_proto::sharing::partner_service_server::PartnerServiceServer;
use tutela_proto::sharing::webhook_service_server::WebhookServiceServer;

use crate::webhooks::{TargetRules, WebhookService, Webhooks};
use crate::{AgreementService, PartnerService, SERVICE, Sharing, SharingMigrator};

/// The `[sharing]` settings section (documented in the cli's `config.default.toml`). Both
/// default to false, which is what production wants.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Accept plain `http://` webhook endpoints (development only).
    #[serde(default)]
    allow_http_webhook_targets: bool,
    /// Accept webhook endpoints on loopback, private and other non-public addresses (tests
    /// only: it reopens the SSRF the checks close).
    #[serde(default)]
    allow_private_webhook_targets: bool,
}

impl Settings {
    fn of(section: Option<&serde_json::Value>) -> Result<Self, String> {
        match section {
            None | Some(serde_json::Value::Null) => Ok(Self::default()),
            Some(section) => {
                serde_json::from_value(section.clone()).map_err(|e| format!("{SERVICE}: {e}"))
            }
        }
    }

    fn rules(&self) -> TargetRules {
        TargetRules {
            allow_http: self.allow_http_webhook_targets,
            allow_private: self.allow_private_webhook_targets,
        }
    }
}

/// The sharing service's [`HostedService`].
pub(crate) struct Hosted;

fn sharing(ctx: &Context) -> Sharing {
    Sharing::new(
        ctx.db.clone(),
        ctx.keyring.clone(),
        ctx.audit.clone(),
        ctx.clock.clone(),
        ctx.register.clone(),
    )
}

impl HostedService for Hosted {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn migrations(&self) -> Vec<Box<dyn tutela_store::Migrations>> {
        vec![tutela_store::migrations_of::<SharingMigrator>(SERVICE)]
    }

    fn check_settings(&self, section: Option<&serde_json::Value>) -> Result<(), String> {
        Settings::of(section).map(|_| ())
    }

    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError> {
        let rules = Settings::of(Some(&ctx.settings))?.rules();
        let sharing = sharing(ctx);
        let max = ctx.max_message_bytes;
        served
            .grpc(
                PartnerServiceServer::new(PartnerService::new(sharing.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                AgreementServiceServer::new(AgreementService::new(sharing.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                WebhookServiceServer::new(WebhookService::new(sharing, rules))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            );
        Ok(())
    }

    // Webhook deliveries run as a sweeper, so `serve` schedules them under a lease like the
    // retention sweeps, on `retention.sweep_interval_secs`. That interval (an hour by default)
    // is coarser than the retry schedule's first steps (immediately, 5 s, 5 min): acceptable
    // while nothing enqueues yet; the disclosure path that does will want its own, shorter
    // schedule (or a wake-up on enqueue).
    fn sweepers(&self, ctx: &Context) -> Result<Vec<Arc<dyn Sweeper>>, BuildError> {
        let rules = Settings::of(Some(&ctx.settings))?.rules();
        let sharing = sharing(ctx);
        let webhooks = Webhooks::new(ctx.db.clone(), sharing.keys.clone(), rules)?;
        Ok(vec![Arc::new(WebhookDeliveries(webhooks))])
    }

    fn recipients<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        register: &'a Register,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<RecipientEntry>, BuildError>> {
        Box::pin(async move { Ok(crate::recipients::in_force(db, register, now).await?) })
    }
}

/// The outbox's due messages, sent.
struct WebhookDeliveries(Webhooks);

/// What a dry run would send.
struct Due(u64);

impl std::fmt::Display for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} webhook(s) due", self.0)
    }
}

#[async_trait::async_trait]
impl Sweeper for WebhookDeliveries {
    fn name(&self) -> &'static str {
        "webhook deliveries"
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        _progress: Progress<'_>,
    ) -> tutela_policy::Result<SweepReport> {
        if dry_run {
            return Ok(Box::new(Due(self.0.count_due(now).await?)));
        }
        Ok(Box::new(self.0.deliver_due(now).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_default_to_public_https_and_refuse_unknown_keys() {
        assert_eq!(Settings::of(None).unwrap().rules(), TargetRules::default());
        let dev = serde_json::json!({
            "allow_http_webhook_targets": true,
            "allow_private_webhook_targets": true,
        });
        let rules = Settings::of(Some(&dev)).unwrap().rules();
        assert!(rules.allow_http && rules.allow_private);
        let err = Settings::of(Some(&serde_json::json!({ "allow_everything": true }))).unwrap_err();
        assert!(err.contains("allow_everything"), "{err}");
    }
}
