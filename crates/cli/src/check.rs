//! `tutela serve --check`: everything `serve` loads before it serves (configuration, hosted
//! services, key files, register, access policies, token verification keys, the guard's RPC
//! coverage and the consent ledger settings), loaded by the same functions, with every problem
//! listed at once instead of the first one ending the start-up.
//!
//! It changes nothing: no key is generated, no database is connected to or migrated and no port
//! is bound. Kubernetes runs it as an init step with the container's own arguments and
//! environment, and CI runs it on every rendered manifest, so a typo in a mounted path or a
//! setting fails before a rollout rather than in a crash loop. The database itself is left to the
//! next init step, `tutela migrate`, which connects with the same settings and names the error.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tutela_store::Backend;

use crate::config::Config;
use crate::keys::sqlite_dir;
use crate::{auth, guard, keys, services};

/// How a line of the report weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Loaded as `serve` would load it.
    Ok,
    /// Not loaded because `serve` would create it (development secrets with SQLite).
    Note,
    /// `serve` would start, but something will not work as a deployment usually wants.
    Warning,
    /// `serve` would refuse to start, or a configured part cannot work.
    Problem,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Note => "note",
            Self::Warning => "warning",
            Self::Problem => "problem",
        }
    }
}

/// What the check found, in the order `serve` loads things.
#[derive(Debug, Default)]
pub struct Report {
    lines: Vec<(Level, String)>,
}

impl Report {
    fn push(&mut self, level: Level, line: impl Into<String>) {
        self.lines.push((level, line.into()));
    }

    fn result<T>(&mut self, what: &str, result: anyhow::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.push(Level::Problem, format!("{what}: {err:#}"));
                None
            }
        }
    }

    /// Every line of `level`.
    pub fn lines(&self, level: Level) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(move |(l, _)| *l == level)
            .map(|(_, line)| line.as_str())
    }

    /// How many problems were found.
    pub fn problems(&self) -> usize {
        self.lines(Level::Problem).count()
    }

    /// `Ok` without problems, else an error counting them (the report lists them).
    pub fn into_result(self) -> anyhow::Result<()> {
        match self.problems() {
            0 => Ok(()),
            n => anyhow::bail!(
                "configuration check failed: {n} problem{}",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (level, line) in &self.lines {
            writeln!(f, "{:<8} {line}", level.label())?;
        }
        let count = |level| self.lines(level).count();
        writeln!(
            f,
            "{} problem(s), {} warning(s)",
            count(Level::Problem),
            count(Level::Warning)
        )
    }
}

/// Checks `config` as `tutela serve` would load it. `env` is the process environment (for
/// `PGPASSFILE` and whether this runs in Kubernetes). Call from inside a Tokio runtime: the
/// remote ledger's client is built as `serve` builds it, without connecting.
pub fn check(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Report {
    let mut report = Report::default();

    let hosted = report.result("services", services::resolve(&config.server.services));
    if let Some(hosted) = &hosted {
        report.push(Level::Ok, format!("services: {}", hosted.join(", ")));
    }
    listen(config, env, &mut report);

    let url = config.database_url();
    let backend = report.result("database.url", Backend::of_url(&url).map_err(Into::into));
    match backend {
        Some(Backend::Sqlite) => sqlite(config, &url, &mut report),
        Some(Backend::Postgres) => postgres(&url, env, &mut report),
        None => {}
    }

    // Key files: read as `serve` reads them, unless `serve` would generate them (SQLite only).
    if would_generate(config, &config.keys.kek_file, keys::KEK) {
        report.push(Level::Note, generated("keys.kek_file", config, keys::KEK));
    } else if report
        .result("key-encryption keys", keys::load_keyring(config))
        .is_some()
    {
        report.push(
            Level::Ok,
            format!("key-encryption keys: {}", shown(&config.keys.kek_file)),
        );
    }
    if would_generate(config, &config.keys.audit_key_file, keys::AUDIT_KEY) {
        report.push(
            Level::Note,
            generated("keys.audit_key_file", config, keys::AUDIT_KEY),
        );
    } else if report
        .result("audit key", keys::load_audit_keys(config))
        .is_some()
    {
        report.push(
            Level::Ok,
            format!("audit key: {}", shown(&config.keys.audit_key_file)),
        );
    }

    let register = report.result("register.file", guard::load_register(config));
    if register.is_some() {
        report.push(
            Level::Ok,
            format!("register: {}", or_builtin(&config.register.file)),
        );
    }
    let rules = report.result("access.policies_file", guard::load_rules(config));
    if rules.is_some() {
        report.push(
            Level::Ok,
            format!(
                "access policies: {}",
                or_builtin(&config.access.policies_file)
            ),
        );
    }

    // Token verification. Where `serve` would generate the development secret, the guard below
    // is built with a placeholder instead, so that its own checks still run.
    let generates_secret = config.auth.jwks_file.as_os_str().is_empty()
        && config.auth.dev_secret.expose_secret().is_empty()
        && would_generate(config, Path::new(""), keys::DEV_SECRET);
    let mut guard_config = config.clone();
    let auth_ok = if generates_secret {
        report.push(
            Level::Note,
            generated("auth.jwks_file", config, keys::DEV_SECRET),
        );
        guard_config.auth.dev_secret = PLACEHOLDER_SECRET.to_owned().into();
        true
    } else {
        let settings = report.result("auth", auth::settings(config));
        if settings.is_some() {
            report.push(
                Level::Ok,
                format!("token verification: {}", verification(config)),
            );
        }
        settings.is_some()
    };

    // The guard as `serve` builds it: this is where an RPC without a Cedar action is refused.
    if let (Some(register), Some(_), true) = (register, &rules, auth_ok) {
        let audit = tutela_policy::audit::AuditLog::detached(
            tutela_policy::audit::AuditKeys::from_secret(PLACEHOLDER_SECRET.as_bytes()),
        );
        let built = guard::build(
            &guard_config,
            audit,
            Arc::new(register),
            Arc::new(tutela_policy::ConsentGate::without_ledger()),
        );
        if report.result("guard", built).is_some() {
            report.push(
                Level::Ok,
                "guard: every RPC of the contract has a Cedar action",
            );
        }
    }

    if let Ok(hosted) = services::hosted(&config.server.services) {
        consent(config, hosted.iter().any(|s| s.hosts_ledger()), &mut report);
    }
    report
}

/// Stands in for secrets `serve` would generate; never used to sign or verify anything.
const PLACEHOLDER_SECRET: &str = "tutela-check-placeholder-never-used-for-serving";

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn or_builtin(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "built-in default".to_owned()
    } else {
        shown(path)
    }
}

fn verification(config: &Config) -> String {
    let mut how = Vec::new();
    if !config.auth.jwks_file.as_os_str().is_empty() {
        how.push(format!("JWKS {}", shown(&config.auth.jwks_file)));
    }
    if !config.auth.dev_secret.expose_secret().is_empty()
        || matches!(keys::find_dev_secret(config, keys::DEV_SECRET), Ok(Some(_)))
    {
        how.push("development secret (HS256)".to_owned());
    }
    how.join(" and ")
}

/// Whether `serve` would generate the secret `name` (see `keys.rs`): not configured, on SQLite,
/// and not generated before.
fn would_generate(config: &Config, configured: &Path, name: &str) -> bool {
    configured.as_os_str().is_empty()
        && matches!(keys::dev_secret_target(config, name), Ok(Some(_)))
        && matches!(keys::find_dev_secret(config, name), Ok(None))
}

fn generated(setting: &str, config: &Config, name: &str) -> String {
    let target = keys::dev_secret_target(config, name)
        .ok()
        .flatten()
        .unwrap_or_else(|| config.data_dir.join(name));
    format!(
        "{setting} is not set: serve generates a development secret in {} (SQLite only; keep it \
         with the database)",
        target.display()
    )
}

fn listen(config: &Config, env: &dyn Fn(&str) -> Option<String>, report: &mut Report) {
    let address = config.server.listen;
    report.push(Level::Ok, format!("listen: {address}"));
    // In a pod, the kubelet's probes and every other pod come in on the pod's address.
    if address.ip().is_loopback() && env("KUBERNETES_SERVICE_HOST").is_some() {
        report.push(
            Level::Warning,
            format!(
                "server.listen {address} is a loopback address: probes and other pods cannot \
                 reach it (use 0.0.0.0:{})",
                address.port()
            ),
        );
    }
}

/// SQLite: `serve` creates the data dir and the database file, so both places must be writable.
fn sqlite(config: &Config, url: &str, report: &mut Report) {
    let mut dirs = vec![config.data_dir.clone()];
    if let Some(file_dir) = sqlite_dir(url)
        && !dirs.contains(&file_dir)
    {
        dirs.push(file_dir);
    }
    for dir in dirs {
        match writable(&dir) {
            Ok(()) => report.push(
                Level::Ok,
                format!("SQLite storage: {} is writable", shown(&dir)),
            ),
            Err(err) => report.push(Level::Problem, format!("SQLite storage: {err}")),
        }
    }
}

/// Whether `dir` (or, if it does not exist yet, its nearest existing ancestor) takes a new file.
/// Tried with a probe file, which is removed again: permission bits do not tell about read-only
/// mounts.
fn writable(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    let probe = existing.join(format!(".tutela-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("cannot create files in {}: {e}", existing.display()))?;
    // The probe is ours; failing to remove it is not a configuration problem.
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// PostgreSQL: not connected to (the `migrate` step does that), but the files the URL and the
/// environment name must be there, and the password file must be one the driver will read.
fn postgres(url: &str, env: &dyn Fn(&str) -> Option<String>, report: &mut Report) {
    report.push(
        Level::Ok,
        "database: PostgreSQL (not connected to by the check)",
    );
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    for pair in query.split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        if matches!(
            key,
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" | "sslcert" | "sslkey"
        ) && !Path::new(value).is_file()
        {
            report.push(
                Level::Problem,
                format!("database.url: {key} {value} is not a file"),
            );
        }
    }
    if let Some(passfile) = env("PGPASSFILE") {
        match std::fs::metadata(&passfile) {
            Err(err) => report.push(Level::Problem, format!("PGPASSFILE {passfile}: {err}")),
            #[cfg(unix)]
            Ok(meta)
                if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 =>
            {
                // The driver skips such a file without an error, and the connection then fails
                // with a bare "password authentication failed".
                report.push(
                    Level::Problem,
                    format!(
                        "PGPASSFILE {passfile} is readable by group or others: the PostgreSQL \
                         driver ignores it; copy it with mode 0600"
                    ),
                );
            }
            Ok(_) => report.push(Level::Ok, format!("database password file: {passfile}")),
        }
    }
}

/// Where consent is read: in-process where a hosted service hosts the ledger (subscription),
/// else the remote ledger.
fn consent(config: &Config, hosts_ledger: bool, report: &mut Report) {
    if hosts_ledger {
        report.push(Level::Ok, "consent ledger: hosted in this process");
        if !config.consent.ledger_endpoint.is_empty() {
            report.push(
                Level::Warning,
                "consent.ledger_endpoint is set but unused: this process hosts the ledger",
            );
        }
        return;
    }
    let Some(settings) = config.remote_ledger() else {
        report.push(
            Level::Warning,
            "consent.ledger_endpoint is not set: every purpose that needs consent fails closed \
             (UNAVAILABLE)",
        );
        return;
    };
    let built = tutela_policy::consent::RemoteLedger::new(&settings).map_err(anyhow::Error::from);
    if report.result("consent.ledger_endpoint", built).is_none() {
        return;
    }
    report.push(
        Level::Ok,
        format!(
            "consent ledger: {} (connected on first use)",
            settings.endpoint
        ),
    );
    let dir = &settings.token_dir;
    // With the development secret, the process signs its own service tokens, as serve does.
    let minted = crate::auth::ServiceTokenFiles::new(config)
        .ok()
        .is_some_and(|tokens| tokens.minted("check").is_some());
    let signed = || {
        format!(
            "consent tokens: none in {}, signed with the development secret",
            dir.display()
        )
    };
    match std::fs::read_dir(dir) {
        Err(_) if minted => report.push(Level::Ok, signed()),
        Err(err) => report.push(
            Level::Problem,
            format!(
                "consent.token_dir {}: {err}; every consent check would fail closed",
                dir.display()
            ),
        ),
        Ok(entries) => {
            // A mounted secret also holds `..data` and timestamped directories: not tenants.
            let tenants = entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count();
            if tenants == 0 && minted {
                report.push(Level::Ok, signed());
            } else if tenants == 0 {
                report.push(
                    Level::Warning,
                    format!(
                        "consent.token_dir {} holds no tenant token: every consent check fails \
                         closed",
                        dir.display()
                    ),
                );
            } else {
                report.push(
                    Level::Ok,
                    format!("consent tokens: {tenants} tenant(s) in {}", dir.display()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_judged_by_its_nearest_existing_parent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(&dir.path().join("a/b")).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(writable(&file.join("below")).is_err());
        // The probe leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
