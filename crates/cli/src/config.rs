//! Configuration: documented defaults (`config.default.toml`, embedded), then an optional file,
//! then `TUTELA_` environment variables, then command-line flags. Unknown keys are errors, so a
//! typo cannot silently fall back to a default. The loader takes the environment as a parameter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::Deserialize;

/// The documented defaults, compiled in.
pub const DEFAULTS: &str = include_str!("../config.default.toml");

/// The prefix of environment variables that configure tutela.
pub const ENV_PREFIX: &str = "TUTELA_";

/// Environment variables with the prefix that are not settings: the loader's own.
pub const NOT_SETTINGS: &[&str] = &["TUTELA_CONFIG"];

/// The prefix of environment variables that stand in for a command's flags (`TUTELA_CLI_TOKEN`
/// for `--token`). The settings loader never reads them, so a command's variable can never be
/// taken for a setting, whatever flags are added later; a list of clap's variables in the loader
/// would have to be kept in step with every command by hand.
pub const CLI_ENV_PREFIX: &str = "TUTELA_CLI_";

/// Environment variables whose names do not follow the `__` nesting, and the setting each sets.
const ALIASES: &[(&str, &str)] = &[("TUTELA_AUTH_DEV_SECRET", "TUTELA_AUTH__DEV_SECRET")];

/// All settings. Unknown keys are refused as [`Config::load`] reads them: the host's sections are
/// these fields, and the rest must be the section of a service built into this binary.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Where the embedded database and generated development keys live.
    pub data_dir: PathBuf,
    /// The gRPC endpoint.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Key material.
    pub keys: KeysConfig,
    /// Bearer-token verification.
    pub auth: AuthConfig,
    /// The processing register.
    pub register: RegisterConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Where the consent ledger is, for a process that does not host it.
    pub consent: ConsentConfig,
    /// The Cedar access policies.
    pub access: AccessConfig,
    /// The retention sweeper.
    pub retention: RetentionConfig,
    /// Each built-in service's own section (`[subscription]`), by the service's name: the
    /// service declares and checks its settings (`HostedService::check_settings`), not this file.
    #[serde(skip)]
    pub sections: BTreeMap<String, serde_json::Value>,
}

/// The top-level keys that are not the host's (read apart from [`Config`], whose own reading
/// keeps figment's naming of a bad value's key and source).
#[derive(Deserialize)]
struct Rest {
    #[serde(flatten)]
    _host: Config,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// When `serve` sweeps what retention makes due (see `config.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub sweep_interval_secs: u64,
}

/// Where the access policies come from (see `config.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    pub policies_file: PathBuf,
}

/// The remote consent ledger (see `config.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    pub ledger_endpoint: String,
    pub ledger_ca_file: PathBuf,
    pub token_dir: PathBuf,
}

/// Bearer-token settings (see `config.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub dev_secret: secrecy::SecretString,
    pub jwks_file: PathBuf,
    pub leeway_secs: u64,
}

/// Where the processing register comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    pub file: PathBuf,
}

/// Settings of the gRPC endpoint (see `config.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub services: Vec<String>,
    pub reflection: bool,
    pub max_message_bytes: usize,
    pub concurrency_limit: usize,
    pub max_concurrent_streams: u32,
    pub request_timeout_secs: u64,
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    pub handshake_timeout_secs: u64,
    pub max_pending_handshakes: usize,
    pub max_header_bytes: u32,
    pub drain_delay_secs: u64,
    pub shutdown_grace_secs: u64,
    /// TLS on the port.
    pub tls: crate::tls::TlsConfig,
}

/// Settings of the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

/// Where key material comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub kek_file: PathBuf,
    pub audit_key_file: PathBuf,
}

/// Settings of logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub format: LogFormatSetting,
    pub filter: String,
}

/// `text` or `json`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatSetting {
    Text,
    Json,
}

impl From<LogFormatSetting> for tutela_telemetry::LogFormat {
    fn from(f: LogFormatSetting) -> Self {
        match f {
            LogFormatSetting::Text => Self::Text,
            LogFormatSetting::Json => Self::Json,
        }
    }
}

/// Settings given on the command line; they win over everything else.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// A configuration that could not be loaded; the message names the setting and its source.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// `TUTELA_SERVER__LISTEN=x` becomes `server.listen = x`; values parse as TOML-ish scalars or
/// arrays (`[enrolment, survey]`), like figment's own environment provider.
fn env_dict(env: impl IntoIterator<Item = (String, String)>) -> Dict {
    let mut root = Dict::new();
    for (key, raw) in env {
        if NOT_SETTINGS.contains(&key.as_str()) || key.starts_with(CLI_ENV_PREFIX) {
            continue;
        }
        let key = ALIASES
            .iter()
            .find(|(alias, _)| *alias == key)
            .map_or(key.as_str(), |(_, setting)| setting);
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        // Secrets stay strings: a secret that happens to parse as a number must not change.
        let value: Value = if path.last().is_some_and(|p| p.contains("secret")) {
            Value::from(raw.clone())
        } else {
            raw.parse().unwrap_or_else(|_| Value::from(raw.clone()))
        };
        let mut dict = &mut root;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                dict.insert(part.clone(), value.clone());
            } else {
                let entry = dict
                    .entry(part.clone())
                    .or_insert_with(|| Value::from(Dict::new()));
                if entry.as_dict().is_none() {
                    *entry = Value::from(Dict::new());
                }
                let Value::Dict(_, inner) = entry else { break };
                dict = inner;
            }
        }
    }
    root
}

impl Config {
    /// Loads defaults, then `file` (if any), then the `TUTELA_` variables of `env`, then
    /// `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Serialized::defaults(env_dict(env)));
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        if let Some(url) = &overrides.database_url {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        if !overrides.services.is_empty() {
            figment = figment.merge(Serialized::default("server.services", &overrides.services));
        }
        let mut config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        let Rest { rest, .. } = figment
            .extract::<Rest>()
            .map_err(|e| ConfigError(e.to_string()))?;
        let services = crate::services::all();
        for (key, section) in rest {
            if !services.iter().any(|s| s.name() == key) {
                return Err(ConfigError(format!("unknown field `{key}`")));
            }
            config.sections.insert(key, section);
        }
        for service in services {
            service
                .check_settings(config.section(service.name()))
                .map_err(ConfigError)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.max_message_bytes < 1024 {
            return Err(ConfigError(
                "server.max_message_bytes must be at least 1024".into(),
            ));
        }
        if s.concurrency_limit == 0 || s.max_concurrent_streams == 0 {
            return Err(ConfigError(
                "server.concurrency_limit and server.max_concurrent_streams must be positive"
                    .into(),
            ));
        }
        if s.request_timeout_secs == 0 {
            return Err(ConfigError(
                "server.request_timeout_secs must be positive".into(),
            ));
        }
        if let Some(problem) = s.tls.problem() {
            return Err(ConfigError(format!("server.{problem}")));
        }
        if s.handshake_timeout_secs == 0 || s.max_pending_handshakes == 0 {
            return Err(ConfigError(
                "server.handshake_timeout_secs and server.max_pending_handshakes must be positive"
                    .into(),
            ));
        }
        // Below a few KiB, ordinary gRPC metadata (a JWT, a traceparent) would not fit.
        if s.max_header_bytes < 4096 {
            return Err(ConfigError(
                "server.max_header_bytes must be at least 4096".into(),
            ));
        }
        let ledger = &self.consent.ledger_endpoint;
        let scheme_ok = ledger.starts_with("http://") || ledger.starts_with("https://");
        if !ledger.is_empty() && !scheme_ok {
            return Err(ConfigError(format!(
                "consent.ledger_endpoint must start with http:// or https://, not {ledger:?}"
            )));
        }
        if ledger.starts_with("https://") && self.consent.ledger_ca_file.as_os_str().is_empty() {
            return Err(ConfigError(
                "consent.ledger_endpoint is https:// but consent.ledger_ca_file is not set".into(),
            ));
        }
        if !self.database.url.is_empty() {
            tutela_store::Backend::of_url(&self.database.url)
                .map_err(|e| ConfigError(format!("database.url: {e}")))?;
        }
        Ok(())
    }

    /// The settings section of the service `name`, if the configuration has one.
    pub fn section(&self, name: &str) -> Option<&serde_json::Value> {
        self.sections.get(name)
    }

    /// The remote consent ledger's settings, when one is configured.
    pub fn remote_ledger(&self) -> Option<tutela_policy::consent::RemoteLedgerSettings> {
        let c = &self.consent;
        (!c.ledger_endpoint.is_empty()).then(|| tutela_policy::consent::RemoteLedgerSettings {
            endpoint: c.ledger_endpoint.clone(),
            ca_file: (!c.ledger_ca_file.as_os_str().is_empty()).then(|| c.ledger_ca_file.clone()),
            token_dir: if c.token_dir.as_os_str().is_empty() {
                self.data_dir.join("consent-tokens")
            } else {
                c.token_dir.clone()
            },
        })
    }

    /// The database URL for a command that only reads: like [`Self::database_url`], but an
    /// SQLite database file that does not exist is an error naming it, not a new empty database.
    pub fn existing_database_url(&self) -> anyhow::Result<String> {
        let url = self.database_url();
        if let Some(file) = crate::keys::sqlite_file(&url)
            && !file.exists()
        {
            anyhow::bail!(
                "no database at {}: point at it with --data-dir or --database-url",
                file.display()
            );
        }
        Ok(url)
    }

    /// The database URL: as configured, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("tutela.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_documented_defaults_load_on_their_own() {
        let c = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:50051");
        assert!(c.server.reflection);
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tutela.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"0.0.0.0:1\"\nreflection = false\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("TUTELA_SERVER__LISTEN", "0.0.0.0:2"),
                ("TUTELA_SERVER__SERVICES", "[enrolment, survey]"),
                ("TUTELA_DATABASE__MAX_CONNECTIONS", "3"),
                ("OTHER", "ignored"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:2");
        assert!(!c.server.reflection);
        assert_eq!(c.server.services, ["enrolment", "survey"]);
        assert_eq!(c.database.max_connections, 3);

        let flags = Overrides {
            listen: Some("127.0.0.1:3".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load(
            Some(&file),
            env(&[("TUTELA_SERVER__LISTEN", "0.0.0.0:2")]),
            &flags,
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:3");
    }

    #[test]
    fn a_remote_ledger_needs_an_http_endpoint_and_a_ca_for_https() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
        assert!(load(&[]).unwrap().remote_ledger().is_none());
        let err = load(&[("TUTELA_CONSENT__LEDGER_ENDPOINT", "ledger:50051")]).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        let err = load(&[("TUTELA_CONSENT__LEDGER_ENDPOINT", "https://ledger:50051")]).unwrap_err();
        assert!(err.to_string().contains("ledger_ca_file"), "{err}");
        let c = load(&[
            ("TUTELA_CONSENT__LEDGER_ENDPOINT", "http://ledger:50051"),
            ("TUTELA_DATA_DIR", "/var/lib/tutela"),
        ])
        .unwrap();
        let settings = c.remote_ledger().unwrap();
        assert_eq!(settings.endpoint, "http://ledger:50051");
        assert_eq!(
            settings.token_dir,
            std::path::Path::new("/var/lib/tutela/consent-tokens")
        );
    }

    #[test]
    fn the_dev_secret_variable_sets_the_auth_secret() {
        use secrecy::ExposeSecret;
        let c = Config::load(
            None,
            env(&[("TUTELA_AUTH_DEV_SECRET", "0123456789")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.auth.dev_secret.expose_secret(), "0123456789");
    }

    #[test]
    fn an_unknown_setting_is_an_error_naming_it() {
        let err = Config::load(
            None,
            env(&[("TUTELA_SERVER__LISTN", "x")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn a_services_section_is_checked_by_the_service_and_keeps_its_keys() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
        let c = load(&[(
            "TUTELA_SUBSCRIPTION__PUBLIC_BASE_URL",
            "https://news.example.org",
        )])
        .unwrap();
        assert_eq!(
            c.section("subscription").unwrap()["public_base_url"],
            "https://news.example.org"
        );
        let err = load(&[("TUTELA_SUBSCRIPTION__PUBLIC_BASE_URL", "news.example.org")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("subscription.public_base_url"), "{err}");
        let err = load(&[("TUTELA_SUBSCRIPTION__PUBLIC_BASE", "https://x.example")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("public_base"), "{err}");
        // A key the service does not know is refused by the service, naming its section.
        let err = load(&[("TUTELA_SURVEY__X", "1")]).unwrap_err().to_string();
        assert!(err.contains("survey"), "{err}");
    }

    #[test]
    fn the_survey_reads_enrolment_where_sharing_does_and_checks_it_the_same_way() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
        let c = load(&[]).unwrap();
        assert_eq!(c.section("survey").unwrap()["enrolment_endpoint"], "");
        let c = load(&[(
            "TUTELA_SURVEY__ENROLMENT_ENDPOINT",
            "http://tutela-enrolment:50051",
        )])
        .unwrap();
        assert_eq!(
            c.section("survey").unwrap()["enrolment_endpoint"],
            "http://tutela-enrolment:50051"
        );
        let err = load(&[(
            "TUTELA_SURVEY__ENROLMENT_ENDPOINT",
            "tutela-enrolment:50051",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("survey.enrolment_endpoint"), "{err}");
        let err = load(&[(
            "TUTELA_SURVEY__ENROLMENT_ENDPOINT",
            "https://tutela-enrolment:50051",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("survey.enrolment_ca_file"), "{err}");
        let err = load(&[(
            "TUTELA_SHARING__ENROLMENT_ENDPOINT",
            "https://tutela-enrolment:50051",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("sharing.enrolment_ca_file"), "{err}");
    }

    #[test]
    fn the_sharing_webhook_settings_default_off_and_read_booleans_from_the_environment() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
        let c = load(&[]).unwrap();
        assert_eq!(
            c.section("sharing").unwrap()["allow_private_webhook_targets"],
            false
        );
        let c = load(&[("TUTELA_SHARING__ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")]).unwrap();
        assert_eq!(
            c.section("sharing").unwrap()["allow_private_webhook_targets"],
            true
        );
        let err = load(&[("TUTELA_SHARING__ALLOW_ANY_WEBHOOK", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_any_webhook"), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_naming_its_key() {
        let err = Config::load(
            None,
            env(&[("TUTELA_SERVER__MAX_MESSAGE_BYTES", "abc")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.max_message_bytes"), "{err}");
    }

    #[test]
    fn a_bad_database_url_is_refused() {
        let err = Config::load(
            None,
            env(&[("TUTELA_DATABASE__URL", "mysql://x")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("database.url"), "{err}");
    }
}
