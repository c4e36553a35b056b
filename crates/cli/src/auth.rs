//! Token verification settings from configuration, and the development secret: given by
//! `auth.dev_secret` / `TUTELA_AUTH_DEV_SECRET`, or generated once into the data directory when
//! tutela runs on its embedded SQLite database, so a newcomer gets working tokens with no setup.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use tutela_policy::principal::{AuthSettings, TokenRequest, issue_hs256};
use tutela_store::Backend;

use crate::config::Config;

/// File in the data dir holding a generated development secret.
const DEV_SECRET_FILE: &str = "dev-secret";

fn dev_secret_path(config: &Config) -> PathBuf {
    config.data_dir.join(DEV_SECRET_FILE)
}

/// The development secret: configured, or previously generated in the data dir, or (when
/// `generate` is set and the database is the embedded SQLite) generated now.
pub fn dev_secret(config: &Config, generate: bool) -> anyhow::Result<Option<SecretString>> {
    if !config.auth.dev_secret.expose_secret().is_empty() {
        return Ok(Some(config.auth.dev_secret.clone()));
    }
    let path = dev_secret_path(config);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(Some(SecretString::from(text.trim().to_owned())));
    }
    if !generate || !config.auth.jwks_file.as_os_str().is_empty() {
        return Ok(None);
    }
    if Backend::of_url(&config.database_url())? != Backend::Sqlite {
        return Ok(None);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    // 32 random bytes, base64: the KEK generator is the random source we already trust.
    let secret = tutela_store::Keyring::generate_base64()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{}", secret.expose_secret())?;
    tracing::warn!(path = %path.display(), "generated a development token secret");
    Ok(Some(secret))
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
