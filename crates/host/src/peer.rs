//! Another hosted service, as a service reaches it: over its gRPC contract, as a `service`
//! principal of the caller's tenant, so that the guard in front of it authorises and audits every
//! call there. One settings parser and one channel builder for every such client (enrolment for
//! sharing and survey, survey's releases for sharing): the `<peer>_endpoint` and `<peer>_ca_file`
//! keys of the calling service's section, and a lazily connecting channel to the configured
//! address or, when none is configured, to this process's own.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tutela_policy::{Error, Result};

use crate::BuildError;

/// How long to wait to connect to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// This process's own gRPC port, as its services call each other there.
#[derive(Debug, Clone)]
pub struct LocalEndpoint {
    /// `http://127.0.0.1:50051`, or `https://...` when the port speaks TLS.
    pub url: String,
    /// With TLS, the CA that signed the port's certificate (which names `localhost`).
    pub ca_file: Option<PathBuf>,
}

/// Where a peer service is: the `<peer>_endpoint` and `<peer>_ca_file` keys of a service's
/// settings section.
#[derive(Debug, Clone, Default)]
pub struct PeerSettings {
    /// `http://host:port`, or `https://host:port` with `ca_file`; empty for this process's own
    /// address (the peer hosted with the service).
    pub endpoint: String,
    /// PEM file with the CA that signed the peer's certificate (https only); empty for none.
    pub ca_file: PathBuf,
    /// `<section>.<peer>`, to name the settings in errors.
    name: String,
}

impl PeerSettings {
    /// The keys of `peer` (`enrolment`: `enrolment_endpoint`, `enrolment_ca_file`) taken out of
    /// `rest`, the settings section `section` as an object, and checked; an error names the
    /// setting.
    pub fn take(
        section: &str,
        peer: &str,
        rest: &mut serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<Self, String> {
        let endpoint_key = format!("{peer}_endpoint");
        let ca_key = format!("{peer}_ca_file");
        let text = |key: &str, value: Option<serde_json::Value>| match value {
            None => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(_) => Err(format!("{section} settings: {key} must be a string")),
        };
        let endpoint = text(&endpoint_key, rest.remove(&endpoint_key))?;
        let ca_file = PathBuf::from(text(&ca_key, rest.remove(&ca_key))?);
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "{section}.{endpoint_key} must start with http:// or https://, not {endpoint:?}"
            ));
        }
        if endpoint.starts_with("https://") && ca_file.as_os_str().is_empty() {
            return Err(format!(
                "{section}.{endpoint_key} is https:// but {section}.{ca_key} is not set"
            ));
        }
        Ok(Self {
            endpoint,
            ca_file,
            name: format!("{section}.{peer}"),
        })
    }

    /// The section `value` as an object to [`PeerSettings::take`] keys from (`None` or null: an
    /// empty one).
    pub fn section(
        section: &str,
        value: Option<&serde_json::Value>,
    ) -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(serde_json::Map::new()),
            Some(serde_json::Value::Object(map)) => Ok(map.clone()),
            Some(_) => Err(format!("{section} settings: not a table")),
        }
    }

    /// A channel to the configured endpoint, or else to `local_endpoint` (this process's own
    /// port, over TLS when it speaks TLS), connecting on first use so that this process starts whether or not the peer is
    /// up; `None` for a command that does not serve and has none configured. Each call of it
    /// times out after `timeout`.
    pub fn channel(
        &self,
        local_endpoint: Option<&LocalEndpoint>,
        timeout: Duration,
    ) -> std::result::Result<Option<Channel>, BuildError> {
        // The CA to trust, the setting that names it, and the name the certificate must carry.
        let (url, ca, setting, domain) = match (self.endpoint.as_str(), local_endpoint) {
            ("", None) => return Ok(None),
            ("", Some(local)) => (
                local.url.as_str(),
                local.ca_file.clone(),
                "server.tls.ca_file".to_owned(),
                Some("localhost"),
            ),
            (configured, _) => (
                configured,
                Some(self.ca_file.clone()).filter(|f| !f.as_os_str().is_empty()),
                format!("{}_ca_file", self.name),
                None,
            ),
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout);
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).map_err(|e| format!("{setting} {}: {e}", ca.display()))?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(domain) = domain {
                tls = tls.domain_name(domain);
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(Some(endpoint.connect_lazy()))
    }
}

/// Puts a service principal's bearer `token` and the `purpose` (its short name) on `request`.
pub fn authorise<T>(request: &mut tonic::Request<T>, token: &str, purpose: &str) -> Result<()> {
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::Unavailable("the service token is not valid ASCII".into()))?,
    );
    metadata.insert(
        "x-tutela-purpose",
        purpose
            .parse()
            .map_err(|_| Error::internal("a purpose name is not valid ASCII"))?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(
        value: serde_json::Value,
    ) -> std::result::Result<(PeerSettings, serde_json::Value), String> {
        let mut rest = PeerSettings::section("sharing", Some(&value))?;
        let settings = PeerSettings::take("sharing", "survey", &mut rest)?;
        Ok((settings, serde_json::Value::Object(rest)))
    }

    #[test]
    fn a_peer_takes_its_two_keys_checks_the_scheme_and_leaves_the_rest() {
        let (s, rest) = take(serde_json::json!({
            "survey_endpoint": "http://survey:50051",
            "notice_interval_secs": 5,
        }))
        .unwrap();
        assert_eq!(s.endpoint, "http://survey:50051");
        assert_eq!(rest, serde_json::json!({ "notice_interval_secs": 5 }));
        let (s, _) = take(serde_json::json!({})).unwrap();
        assert!(s.endpoint.is_empty());
        let err = take(serde_json::json!({ "survey_endpoint": "survey:50051" })).unwrap_err();
        assert!(err.contains("sharing.survey_endpoint"), "{err}");
        let err =
            take(serde_json::json!({ "survey_endpoint": "https://survey:50051" })).unwrap_err();
        assert!(err.contains("sharing.survey_ca_file"), "{err}");
        let err = take(serde_json::json!({ "survey_endpoint": 1 })).unwrap_err();
        assert!(err.starts_with("sharing settings"), "{err}");
        assert!(PeerSettings::section("sharing", Some(&serde_json::json!(3))).is_err());
    }

    #[tokio::test]
    async fn without_an_endpoint_the_process_own_address_is_used_and_without_either_none() {
        let (s, _) = take(serde_json::json!({})).unwrap();
        assert!(s.channel(None, CONNECT_TIMEOUT).unwrap().is_none());
        let local = LocalEndpoint {
            url: "http://127.0.0.1:1".into(),
            ca_file: None,
        };
        assert!(s.channel(Some(&local), CONNECT_TIMEOUT).unwrap().is_some());
        // A TLS port is trusted through the CA the process was given, named in an error.
        let tls = LocalEndpoint {
            url: "https://127.0.0.1:1".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        let err = s
            .channel(Some(&tls), CONNECT_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tls.ca_file"), "{err}");
        let (s, _) = take(serde_json::json!({
            "survey_endpoint": "https://survey:50051",
            "survey_ca_file": "/nonexistent/ca.pem",
        }))
        .unwrap();
        let err = s.channel(None, CONNECT_TIMEOUT).unwrap_err().to_string();
        assert!(err.contains("sharing.survey_ca_file"), "{err}");
    }
}
