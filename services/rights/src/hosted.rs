//! The rights service as a `tutela` process hosts it: its settings section (`[rights]`: which
//! services a request is carried out in and where each one's SubjectData endpoint is, how often
//! the coordinator runs and how it retries), migrations, gRPC service, its own part in rights
//! handling, and the coordinator as a scheduled job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tutela_host::peer::PeerSettings;
use tutela_host::{BuildError, Context, HostedService, Served, Sweeper};
use tutela_proto::rights::rights_request_service_server::RightsRequestServiceServer;

use crate::coordinator::{Coordinator, RetryPolicy};
use crate::{OwnRights, Rights, RightsMigrator, RightsRequestService, SERVICE};

/// How long one call to a service's SubjectData may take (an export of a learner with years of
/// records included).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The `[rights]` settings section.
#[derive(Debug)]
struct Settings {
    /// Where each service's SubjectData endpoint is (`<service>_endpoint`, `<service>_ca_file`);
    /// a service without one is reached at this process's own address.
    peers: HashMap<String, PeerSettings>,
    own: Own,
}

/// The section's keys other than the endpoints.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    /// The services a request is carried out in, in order; empty: every service of the suite.
    #[serde(default)]
    services: Vec<String>,
    /// How often `serve` runs the coordinator (seconds).
    #[serde(default = "default_interval")]
    interval_secs: u64,
    /// The wait after a task's first failed attempt (seconds); it doubles with each failure, up
    /// to an hour.
    #[serde(default = "default_retry_base")]
    retry_base_secs: u64,
    /// After this many failed attempts a task fails, and its request is partially completed.
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
}

fn default_interval() -> u64 {
    2
}

fn default_retry_base() -> u64 {
    2
}

/// With the base of 2 s doubling up to an hour, twelve attempts span about three hours: a
/// service's restart or a short outage passes unnoticed, a day-long one shows as a failure.
fn default_max_attempts() -> u32 {
    12
}

impl Settings {
    fn of(section: Option<&serde_json::Value>) -> Result<Self, String> {
        let mut rest = PeerSettings::section(SERVICE, section)?;
        let named: Vec<String> = rest
            .keys()
            .filter_map(|k| {
                k.strip_suffix("_endpoint")
                    .or_else(|| k.strip_suffix("_ca_file"))
            })
            .map(str::to_owned)
            .collect();
        let mut peers = HashMap::new();
        for service in named {
            if let std::collections::hash_map::Entry::Vacant(slot) = peers.entry(service) {
                let peer = PeerSettings::take(SERVICE, slot.key(), &mut rest)?;
                slot.insert(peer);
            }
        }
        let own: Own = serde_json::from_value(serde_json::Value::Object(rest))
            .map_err(|e| format!("rights settings: {e}"))?;
        if own.interval_secs == 0 {
            return Err("rights.interval_secs must be at least 1".into());
        }
        if own.max_attempts == 0 {
            return Err("rights.max_attempts must be at least 1".into());
        }
        Ok(Self { peers, own })
    }

    /// The services a request is carried out in: the configured ones (each one of `suite`), or
    /// every one of `suite`; an endpoint for a service not among them is an error.
    fn services(&self, suite: &[&'static str]) -> Result<Vec<String>, String> {
        let services: Vec<String> = if self.own.services.is_empty() {
            suite.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.own.services.clone()
        };
        for s in &services {
            if !suite.contains(&s.as_str()) {
                return Err(format!(
                    "rights.services names {s:?}; the services are {}",
                    suite.join(", ")
                ));
            }
        }
        for s in self.peers.keys() {
            if !services.contains(s) {
                return Err(format!(
                    "rights.{s}_endpoint names a service requests are not carried out in ({})",
                    services.join(", ")
                ));
            }
        }
        Ok(services)
    }
}

fn rights(ctx: &Context, settings: &Settings) -> Result<Rights, BuildError> {
    Ok(Rights::new(
        ctx.db.clone(),
        ctx.keyring.clone(),
        ctx.clock.clone(),
        ctx.register.clone(),
        settings.services(&ctx.suite)?,
    ))
}

/// The rights service's [`HostedService`].
pub(crate) struct Hosted;

impl HostedService for Hosted {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn migrations(&self) -> Vec<Box<dyn tutela_store::Migrations>> {
        vec![tutela_store::migrations_of::<RightsMigrator>(SERVICE)]
    }

    fn check_settings(&self, section: Option<&serde_json::Value>) -> Result<(), String> {
        Settings::of(section).map(|_| ())
    }

    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError> {
        let settings = Settings::of(Some(&ctx.settings))?;
        let rights = rights(ctx, &settings)?;
        let max = ctx.max_message_bytes;
        served
            .grpc(
                RightsRequestServiceServer::new(RightsRequestService::new(rights.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .subject_data(Arc::new(OwnRights::new(rights)));
        Ok(())
    }

    fn sweepers(&self, ctx: &Context) -> Result<Vec<Arc<dyn Sweeper>>, BuildError> {
        let settings = Settings::of(Some(&ctx.settings))?;
        let rights = rights(ctx, &settings)?;
        let mut targets = HashMap::new();
        for service in rights.services.iter() {
            let peer = settings.peers.get(service).cloned().unwrap_or_default();
            targets.insert(
                service.clone(),
                peer.channel(ctx.local_endpoint.as_ref(), CALL_TIMEOUT)?,
            );
        }
        let own = &settings.own;
        Ok(vec![Arc::new(Coordinator::new(
            rights,
            targets,
            ctx.service_tokens.clone(),
            RetryPolicy {
                base: Duration::from_secs(own.retry_base_secs),
                max_attempts: own.max_attempts,
            },
            Duration::from_secs(own.interval_secs),
        ))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: [&str; 3] = ["enrolment", "survey", "rights"];

    #[test]
    fn endpoints_are_taken_per_service_and_the_rest_checked() {
        let s = Settings::of(Some(&serde_json::json!({
            "enrolment_endpoint": "http://enrolment:50051",
            "interval_secs": 5,
        })))
        .unwrap();
        assert_eq!(s.peers["enrolment"].endpoint, "http://enrolment:50051");
        assert_eq!(s.own.interval_secs, 5);
        assert_eq!(s.services(&SUITE).unwrap(), SUITE);

        let err =
            Settings::of(Some(&serde_json::json!({ "survey_endpoint": "survey:1" }))).unwrap_err();
        assert!(err.contains("rights.survey_endpoint"), "{err}");
        let err = Settings::of(Some(&serde_json::json!({ "intervals": 1 }))).unwrap_err();
        assert!(err.contains("intervals"), "{err}");
        assert!(Settings::of(Some(&serde_json::json!({ "max_attempts": 0 }))).is_err());

        let s = Settings::of(Some(
            &serde_json::json!({ "services": ["enrolment", "nope"] }),
        ))
        .unwrap();
        assert!(s.services(&SUITE).unwrap_err().contains("nope"));
        let s = Settings::of(Some(&serde_json::json!({
            "services": ["enrolment"],
            "survey_endpoint": "http://survey:50051",
        })))
        .unwrap();
        assert!(s.services(&SUITE).unwrap_err().contains("survey_endpoint"));
    }
}
