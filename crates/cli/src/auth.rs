//! Token verification settings from configuration, and the development secret: given by
//! `auth.dev_secret` / `TUTELA_AUTH_DEV_SECRET`, or generated once into the data directory when
//! tutela runs on its embedded SQLite database, so a newcomer gets working tokens with no setup.

use crate::config::Config;
use crate::keys::{generated_secret_file, read_secret_file};
use anyhow::bail;
use secrecy::{ExposeSecret, SecretString};
use tutela_policy::principal::{AuthSettings, TokenRequest, issue_hs256};

/// The development secret: configured, or generated once in the data dir (when `generate` is
/// set, no JWKS is configured, and the database is the embedded SQLite).
pub fn dev_secret(config: &Config, generate: bool) -> anyhow::Result<Option<SecretString>> {
    if !config.auth.dev_secret.expose_secret().is_empty() {
        return Ok(Some(config.auth.dev_secret.clone()));
    }
    let path = config.data_dir.join("dev-secret");
    if path.exists() {
        return read_secret_file(&path).map(Some);
    }
    if !generate || !config.auth.jwks_file.as_os_str().is_empty() {
        return Ok(None);
    }
    generated_secret_file(config, "dev-secret", str::to_owned)?
        .map(|p| read_secret_file(&p))
        .transpose()
}

/// The verification settings `serve` uses; `generate` allows creating the development secret.
pub fn settings(config: &Config, generate: bool) -> anyhow::Result<AuthSettings> {
    let jwks = if config.auth.jwks_file.as_os_str().is_empty() {
        None
    } else {
        Some(AuthSettings::read_jwks(&config.auth.jwks_file).map_err(anyhow::Error::msg)?)
    };
    let hs256_secret = dev_secret(config, generate)?;
    if jwks.is_none() && hs256_secret.is_none() {
        bail!(
            "no token verification key: set auth.jwks_file (production) or auth.dev_secret / \
             TUTELA_AUTH_DEV_SECRET (development)"
        );
    }
    Ok(AuthSettings {
        issuer: config.auth.issuer.clone(),
        audience: config.auth.audience.clone(),
        hs256_secret,
        jwks,
        leeway_secs: config.auth.leeway_secs,
    })
}

/// Signs a development token with the configured or generated secret.
pub fn issue(config: &Config, request: &TokenRequest) -> anyhow::Result<String> {
    let Some(secret) = dev_secret(config, false)? else {
        bail!(
            "no development secret: set TUTELA_AUTH_DEV_SECRET, or run `tutela serve` once with \
             the same --data-dir to generate one"
        );
    };
    issue_hs256(
        &secret,
        &config.auth.issuer,
        &config.auth.audience,
        request,
        chrono::Utc::now(),
    )
    .map_err(anyhow::Error::msg)
}
