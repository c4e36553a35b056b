//! The sharing service as a `tutela` process hosts it: its settings section (`[sharing]`: where
//! the enrolment service is, which webhook targets are allowed), migrations, gRPC services, its
//! part in data-subject rights, and two scheduled jobs: following enrolment's change feed to
//! notify recipients, and delivering the webhook outbox.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use std::sync::Arc;

use tutela_enrolment_client::{Enrolment, EnrolmentSettings};
use tutela_host::peer::PeerSettings;
use tutela_host::{
    BoxFuture, BuildError, Context, HostedService, Progress, RecipientEntry, Served, SweepReport,
    Sweeper,
};
use tutela_policy::Register;
use tutela_proto::sharing::agreement_service_server::AgreementServiceServer;
use tutela_proto::sharing::disclosure_service_server::DisclosureServiceServer;
use tutela_proto::sharing::inbound_service_server::InboundServiceServer;
use tutela_proto::sharing::notice_service_server::NoticeServiceServer;
use tutela_proto::sharing::partner_service_server::PartnerServiceServer;
use tutela_proto::sharing::webhook_service_server::WebhookServiceServer;

use crate::notices::Follower;
use crate::releases::Surveys;
use crate::webhooks::{TargetRules, WebhookService, Webhooks};
use crate::{
    AgreementService, DisclosureService, InboundService, NoticeService, PartnerService, SERVICE,
    Sharing, SharingMigrator, SharingRights,
};

/// The `[sharing]` settings section.
#[derive(Debug)]
struct Settings {
    /// The enrolment service the learners to disclose are read from (`enrolment_endpoint`,
    /// `enrolment_ca_file`): `http://host:port` or `https://host:port`; empty for this process's
    /// own address (enrolment hosted with it).
    enrolment: EnrolmentSettings,
    /// The survey service the releases to share are read from (`survey_endpoint`,
    /// `survey_ca_file`), likewise.
    survey: PeerSettings,
    own: Own,
}

/// The section's keys other than the enrolment service's.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    /// How often `serve` reads enrolment's change feed to notify recipients (seconds; 0: never).
    #[serde(default = "default_notice_interval")]
    notice_interval_secs: u64,
    /// How often `serve` sends the webhook outbox's due messages (seconds); 0: with the
    /// retention sweeps (`retention.sweep_interval_secs`).
    #[serde(default = "default_webhook_interval")]
    webhook_interval_secs: u64,
    /// Accept plain `http://` webhook endpoints (development only).
    #[serde(default)]
    allow_http_webhook_targets: bool,
    /// Accept webhook endpoints on loopback, private and other non-public addresses (tests
    /// only: it reopens the SSRF the checks close).
    #[serde(default)]
    allow_private_webhook_targets: bool,
}

fn default_notice_interval() -> u64 {
    30
}

/// Often enough for the retry schedule's first steps (immediately, then 5 s).
fn default_webhook_interval() -> u64 {
    5
}

impl Settings {
    fn of(section: Option<&serde_json::Value>) -> Result<Self, String> {
        let (enrolment, rest) = EnrolmentSettings::split(SERVICE, section)?;
        let mut rest = PeerSettings::section(SERVICE, Some(&rest))?;
        let survey = PeerSettings::take(SERVICE, "survey", &mut rest)?;
        let own: Own = serde_json::from_value(serde_json::Value::Object(rest))
            .map_err(|e| format!("sharing settings: {e}"))?;
        Ok(Self {
            enrolment,
            survey,
            own,
        })
    }

    fn rules(&self) -> TargetRules {
        TargetRules {
            allow_http: self.own.allow_http_webhook_targets,
            allow_private: self.own.allow_private_webhook_targets,
        }
    }
}

/// The sharing service's [`HostedService`].
pub(crate) struct Hosted;

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
        let settings = Settings::of(Some(&ctx.settings))?;
        let rules = settings.rules();
        let sharing = sharing(ctx);
        let enrolment = enrolment(ctx, &settings)?;
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
                DisclosureServiceServer::new(DisclosureService::new(
                    sharing.clone(),
                    enrolment.clone(),
                    Surveys::new(
                        &settings.survey,
                        ctx.local_endpoint.as_ref(),
                        ctx.service_tokens.clone(),
                    )?,
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            .grpc(
                InboundServiceServer::new(InboundService::new(sharing.clone(), enrolment))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                NoticeServiceServer::new(NoticeService::new(sharing.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                WebhookServiceServer::new(WebhookService::new(sharing.clone(), rules))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .subject_data(Arc::new(SharingRights::new(sharing)));
        Ok(())
    }

    // Webhook deliveries run as a sweeper, so `serve` schedules them under a lease like the
    // retention sweeps, every `webhook_interval_secs` (the retry schedule's first steps are
    // immediately and 5 s).
    fn sweepers(&self, ctx: &Context) -> Result<Vec<Arc<dyn Sweeper>>, BuildError> {
        let settings = Settings::of(Some(&ctx.settings))?;
        let sharing = sharing(ctx);
        let webhooks = Webhooks::new(ctx.db.clone(), sharing.keys.clone(), settings.rules())?;
        Ok(vec![
            Arc::new(Follower::new(
                sharing,
                enrolment(ctx, &settings)?,
                std::time::Duration::from_secs(settings.own.notice_interval_secs),
            )),
            Arc::new(WebhookDeliveries(
                webhooks,
                (settings.own.webhook_interval_secs > 0)
                    .then(|| std::time::Duration::from_secs(settings.own.webhook_interval_secs)),
            )),
        ])
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

/// The service's parts from the process's.
fn sharing(ctx: &Context) -> Sharing {
    Sharing::new(
        ctx.db.clone(),
        ctx.keyring.clone(),
        ctx.audit.clone(),
        ctx.clock.clone(),
        ctx.register.clone(),
    )
}

/// The enrolment service's client: the configured endpoint, or this process's own address; `None`
/// for a command that does not serve and has none configured.
fn enrolment(ctx: &Context, settings: &Settings) -> Result<Option<Arc<Enrolment>>, BuildError> {
    settings
        .enrolment
        .client(ctx.local_endpoint.as_ref(), ctx.service_tokens.clone())
}

/// The outbox's due messages, sent every so often (`None`: with the retention sweeps).
struct WebhookDeliveries(Webhooks, Option<std::time::Duration>);

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

    fn interval(&self) -> Option<std::time::Duration> {
        self.1
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
