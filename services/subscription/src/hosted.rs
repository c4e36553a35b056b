//! The subscription service as a `tutela` process hosts it: its settings section, migrations,
//! routes (gRPC and the RFC 8058 one-click unsubscribe endpoint), its part in data-subject rights
//! and the sweep of delivery events. A process hosting it hosts the consent ledger too.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tutela_host::{BuildError, Context, HostedService, Progress, Served, SweepReport, Sweeper};
use tutela_proto::subscription::subscription_service_server::SubscriptionServiceServer;

use crate::subscriptions::http;
use crate::{
    Parts, SERVICE, SubscriptionMigrator, SubscriptionRights, SubscriptionService, Subscriptions,
};

/// The `[subscription]` settings section (documented in the cli's `config.default.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Where people reach `POST /unsubscribe/{token}`, e.g. `https://news.example.org`.
    public_base_url: String,
}

impl Settings {
    fn of(section: Option<&serde_json::Value>) -> Result<Self, String> {
        let section = section.cloned().unwrap_or_default();
        let settings: Self =
            serde_json::from_value(section).map_err(|e| format!("{SERVICE}: {e}"))?;
        let base = &settings.public_base_url;
        if !(base.starts_with("https://") || base.starts_with("http://"))
            || base.trim_end_matches('/').len() <= "https://".len()
        {
            return Err(format!(
                "subscription.public_base_url must be an http(s) URL such as https://news.example.org, not {base:?}"
            ));
        }
        Ok(settings)
    }
}

/// The subscription service's [`HostedService`].
pub(crate) struct Subscription;

impl HostedService for Subscription {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn migrations(&self) -> Vec<Box<dyn tutela_store::Migrations>> {
        // The ledger's first: the subscription history names its migrations from before the
        // move, which the ledger adopts only while it runs first (see `tutela_ledger::migration`).
        vec![
            tutela_ledger::migration::migrations(),
            tutela_store::migrations_of::<SubscriptionMigrator>(SERVICE),
        ]
    }

    fn hosts_ledger(&self) -> bool {
        true
    }

    fn check_settings(&self, section: Option<&serde_json::Value>) -> Result<(), String> {
        Settings::of(section).map(|_| ())
    }

    fn http_route_templates(&self) -> Vec<String> {
        vec![http::route()]
    }

    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError> {
        let subs = subscriptions(ctx)?;
        served.subject_data(Arc::new(SubscriptionRights::new(subs.clone())));
        served.grpc(
            SubscriptionServiceServer::new(SubscriptionService::new(subs.clone()))
                .max_decoding_message_size(ctx.max_message_bytes)
                .max_encoding_message_size(ctx.max_message_bytes),
        );
        // RFC 8058 one-click unsubscribe: plain HTTP/1.1 POSTs from mail clients, beside gRPC.
        served.http(http::router(subs));
        Ok(())
    }

    fn sweepers(&self, ctx: &Context) -> Result<Vec<Arc<dyn Sweeper>>, BuildError> {
        Ok(vec![Arc::new(DeliveryEvents {
            db: ctx.db.clone(),
            register: ctx.register.clone(),
        })])
    }
}

fn subscriptions(ctx: &Context) -> Result<Subscriptions, BuildError> {
    let settings = Settings::of(Some(&ctx.settings))?;
    let ledger = ctx
        .ledger
        .clone()
        .ok_or("the subscription service needs the consent ledger in its process")?;
    Ok(Subscriptions::new(Parts {
        db: ctx.db.clone(),
        keyring: ctx.keyring.clone(),
        audit: ctx.audit.clone(),
        clock: ctx.clock.clone(),
        ledger,
        register: ctx.register.clone(),
        public_base_url: settings.public_base_url,
    }))
}

/// Delivery events past the register's event retention.
struct DeliveryEvents {
    db: sea_orm::DatabaseConnection,
    register: Arc<tutela_policy::Register>,
}

/// How many delivery events a sweep removed.
struct Swept(u64);

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} delivery event(s)", self.0)
    }
}

#[async_trait::async_trait]
impl Sweeper for DeliveryEvents {
    fn name(&self) -> &'static str {
        "delivery events"
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        _progress: Progress<'_>,
    ) -> tutela_policy::Result<SweepReport> {
        let swept = crate::sweep_events(&self.db, &self.register, now, dry_run).await?;
        Ok(Box::new(Swept(swept)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_base_url_must_be_an_http_url() {
        let section = |url: &str| serde_json::json!({ "public_base_url": url });
        assert!(Settings::of(Some(&section("https://news.example.org"))).is_ok());
        for bad in ["news.example.org", "https://", "ftp://news.example.org"] {
            let err = Settings::of(Some(&section(bad))).unwrap_err();
            assert!(err.contains("subscription.public_base_url"), "{err}");
        }
        let err = Settings::of(Some(&serde_json::json!({ "public_base": "x" }))).unwrap_err();
        assert!(err.contains("public_base"), "{err}");
    }
}
