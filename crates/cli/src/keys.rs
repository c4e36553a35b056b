//! Key material from configuration: mounted files in production, or for the embedded SQLite
//! default, development secrets that `tutela serve` generates once beside the database they
//! protect. Only `serve` generates ([`generate_development_keys`]); every other command that needs
//! a key and finds none fails with [`MissingKey`], naming the files it looked for and how to point
//! at the right ones, and the binary exits with [`MISSING_KEY_EXIT`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use tutela_policy::audit::AuditKeys;
use tutela_store::{Backend, Keyring};

use crate::config::Config;

/// The exit status of a command that needs a key and finds none (documented in the README).
pub const MISSING_KEY_EXIT: u8 = 3;

/// File names of the development secrets in their directory.
pub const KEK: &str = "kek";
/// See [`KEK`].
pub const AUDIT_KEY: &str = "audit-key";
/// See [`KEK`].
pub const DEV_SECRET: &str = "dev-secret";

/// A key a command needs and did not find; nothing was generated.
#[derive(Debug, thiserror::Error)]
pub struct MissingKey {
    /// What is missing: "audit key".
    pub what: &'static str,
    /// The setting that names the key (file), and its environment variable.
    pub setting: (&'static str, &'static str),
    /// The generated files looked for, in order; empty on PostgreSQL, where none is generated.
    pub looked_for: Vec<PathBuf>,
    /// Why the key cannot be done without.
    pub why: &'static str,
}

impl std::fmt::Display for MissingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (setting, env) = self.setting;
        if self.looked_for.is_empty() {
            return write!(
                f,
                "no {}: {setting} is required with PostgreSQL (or {env}): {}",
                self.what, self.why
            );
        }
        let files: Vec<String> = self
            .looked_for
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        write!(
            f,
            "no {}: looked for {}; point at the directory holding it with --data-dir \
             (TUTELA_DATA_DIR), at its SQLite database with --database-url (keys are looked for \
             beside the database file), or set {setting} ({env}); only `tutela serve` generates \
             development keys",
            self.what,
            files.join(" and "),
        )
    }
}

/// Where development secrets live, in the order they are looked for: beside a configured SQLite
/// database file, then the data dir. Empty on PostgreSQL, where a generated secret would die
/// with the pod.
pub fn dev_key_dirs(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    let url = config.database_url();
    if Backend::of_url(&url)? != Backend::Sqlite {
        return Ok(Vec::new());
    }
    let mut dirs = Vec::new();
    if !config.database.url.is_empty()
        && let Some(dir) = sqlite_dir(&url)
    {
        dirs.push(dir);
    }
    if !dirs.contains(&config.data_dir) {
        dirs.push(config.data_dir.clone());
    }
    Ok(dirs)
}

/// The database file of a `sqlite:` URL; `None` for an in-memory database.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// The directory of the database file in a `sqlite:` URL; `None` for an in-memory database.
pub fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let file = sqlite_file(url)?;
    let parent = file.parent()?;
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_path_buf()
    })
}

/// The development secret `name` where it exists, looked for as [`dev_key_dirs`] says.
pub fn find_dev_secret(config: &Config, name: &str) -> anyhow::Result<Option<PathBuf>> {
    Ok(dev_key_dirs(config)?
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.exists()))
}

/// Where `serve` would generate the development secret `name` (beside the database); `None` on
/// PostgreSQL.
pub fn dev_secret_target(config: &Config, name: &str) -> anyhow::Result<Option<PathBuf>> {
    Ok(dev_key_dirs(config)?.first().map(|dir| dir.join(name)))
}

/// The development secret `name`, or a [`MissingKey`] naming where it was looked for.
fn existing_dev_secret(
    config: &Config,
    name: &str,
    what: &'static str,
    setting: (&'static str, &'static str),
    why: &'static str,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = find_dev_secret(config, name)? {
        return Ok(path);
    }
    let looked_for = dev_key_dirs(config)?
        .into_iter()
        .map(|d| d.join(name))
        .collect();
    Err(MissingKey {
        what,
        setting,
        looked_for,
        why,
    }
    .into())
}

/// What [`generate_development_keys`] created.
#[derive(Debug, Default)]
pub struct Generated {
    /// The development token secret was created just now.
    pub dev_secret: bool,
}

/// Generates the development secrets that `serve` needs and finds neither configured nor
/// generated before: only on the embedded SQLite database, only from `serve`.
pub fn generate_development_keys(config: &Config) -> anyhow::Result<Generated> {
    let mut generated = Generated::default();
    if config.keys.kek_file.as_os_str().is_empty() {
        generate_secret_file(config, KEK, |k| format!("dev-1:{k}"))?;
    }
    if config.keys.audit_key_file.as_os_str().is_empty() {
        generate_secret_file(config, AUDIT_KEY, str::to_owned)?;
    }
    if config.auth.dev_secret.expose_secret().is_empty()
        && config.auth.jwks_file.as_os_str().is_empty()
    {
        generated.dev_secret = generate_secret_file(config, DEV_SECRET, str::to_owned)?;
    }
    Ok(generated)
}

/// Creates the development secret `name` (mode 0600) beside the database unless it exists
/// somewhere it is looked for; `line` formats its content from fresh random base64. Whether it
/// was created.
fn generate_secret_file(
    config: &Config,
    name: &str,
    line: impl FnOnce(&str) -> String,
) -> anyhow::Result<bool> {
    if find_dev_secret(config, name)?.is_some() {
        return Ok(false);
    }
    let Some(path) = dev_secret_target(config, name)? else {
        return Ok(false);
    };
    let random = Keyring::generate_base64()?;
    write_private(
        &path,
        &format!(
            "# generated by tutela for development; keep it with the database\n{}\n",
            line(random.expose_secret())
        ),
        false,
    )?;
    tracing::warn!(path = %path.display(), "generated a development secret");
    Ok(true)
}

/// Writes `content` to a new file at `path` readable by its owner only (creating its directory).
/// With `replace`, an existing file is replaced whole (written beside it, then renamed), so a
/// reader never sees half a secret.
pub fn write_private(path: &Path, content: &str, replace: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let target = if replace {
        path.with_extension("new")
    } else {
        path.to_path_buf()
    };
    if replace {
        // A leftover from an interrupted replacement would make `create_new` fail.
        let _ = std::fs::remove_file(&target);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", target.display()))?;
    if replace {
        std::fs::rename(&target, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
    }
    Ok(())
}

/// The non-comment content of a secret file.
pub fn read_secret_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = SecretString::from(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let content: Vec<&str> = text
        .expose_secret()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    Ok(SecretString::from(content.join("\n")))
}

/// Reads a keyring file: one `id:base64` line per key, current key first; blank lines and `#`
/// comments are skipped.
pub fn read_keyring(path: &Path) -> anyhow::Result<Keyring> {
    let text = read_secret_file(path)?;
    let mut entries = Vec::new();
    for (n, line) in text.expose_secret().lines().enumerate() {
        let Some((id, key)) = line.split_once(':') else {
            bail!(
                "kek file {}: key {} is not `id:base64`",
                path.display(),
                n + 1
            );
        };
        entries.push((
            id.trim().to_owned(),
            SecretString::from(key.trim().to_owned()),
        ));
    }
    Keyring::from_base64(entries.iter().map(|(id, k)| (id.as_str(), k)))
        .with_context(|| format!("kek file {}", path.display()))
}

/// The keyring `config` names; see `keys.kek_file` in `config.default.toml`. Never generates.
pub fn load_keyring(config: &Config) -> anyhow::Result<Keyring> {
    if !config.keys.kek_file.as_os_str().is_empty() {
        return read_keyring(&config.keys.kek_file);
    }
    read_keyring(&existing_dev_secret(
        config,
        KEK,
        "key-encryption key",
        ("keys.kek_file", "TUTELA_KEYS__KEK_FILE"),
        "a generated key would not outlive this process, and the data it protects would \
         become unreadable",
    )?)
}

/// The audit keys `config` names; see `keys.audit_key_file` in `config.default.toml`. Never
/// generates: a verifier with a fresh key would call an untouched log tampered with.
pub fn load_audit_keys(config: &Config) -> anyhow::Result<AuditKeys> {
    let path = if config.keys.audit_key_file.as_os_str().is_empty() {
        existing_dev_secret(
            config,
            AUDIT_KEY,
            "audit key",
            ("keys.audit_key_file", "TUTELA_KEYS__AUDIT_KEY_FILE"),
            "the audit chain cannot be verified without the key it was written with",
        )?
    } else {
        config.keys.audit_key_file.clone()
    };
    let secret = read_secret_file(&path)?;
    if secret.expose_secret().len() < 32 {
        bail!(
            "audit key file {}: the key must be at least 32 characters",
            path.display()
        );
    }
    Ok(AuditKeys::from_secret(secret.expose_secret().as_bytes()))
}

/// The development token secret: configured, or generated by `serve` beside the database.
/// `Ok(None)` when there is none; never generates.
pub fn dev_secret(config: &Config) -> anyhow::Result<Option<SecretString>> {
    if !config.auth.dev_secret.expose_secret().is_empty() {
        return Ok(Some(config.auth.dev_secret.clone()));
    }
    find_dev_secret(config, DEV_SECRET)?
        .map(|p| read_secret_file(&p))
        .transpose()
}

/// The [`MissingKey`] of a command that needs the development token secret and finds none.
pub fn missing_dev_secret(config: &Config) -> anyhow::Result<MissingKey> {
    Ok(MissingKey {
        what: "token verification key",
        setting: (
            "auth.jwks_file (production) or auth.dev_secret (development)",
            "TUTELA_AUTH__JWKS_FILE or TUTELA_AUTH_DEV_SECRET",
        ),
        looked_for: dev_key_dirs(config)?
            .into_iter()
            .map(|d| d.join(DEV_SECRET))
            .collect(),
        why: "tokens cannot be verified or signed without a key",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_of_a_sqlite_url() {
        assert_eq!(
            sqlite_dir("sqlite:///var/lib/tutela/tutela.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/tutela"))
        );
        assert_eq!(
            sqlite_dir("sqlite://tutela.db?mode=rwc"),
            Some(PathBuf::from("."))
        );
        assert_eq!(sqlite_dir("sqlite::memory:"), None);
    }

    #[test]
    fn a_keyring_file_lists_keys_current_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let k = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        std::fs::write(&path, format!("# comment\nnew:{k}\n\nold:{k}\n")).unwrap();
        let ring = read_keyring(&path).unwrap();
        let printed = format!("{ring:?}");
        assert!(printed.contains("current: \"new\""), "{printed}");
        assert!(!printed.contains(k));
    }

    #[test]
    fn a_malformed_line_is_named_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        std::fs::write(&path, "secretwithoutcolon\n").unwrap();
        let err = format!("{:#}", read_keyring(&path).unwrap_err());
        assert!(err.contains("key 1"), "{err}");
        assert!(!err.contains("secretwithoutcolon"));
    }
}
