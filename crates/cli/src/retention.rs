//! `tutela retention sweep`: one sweep of every hosted service's retention, with a progress bar
//! on a terminal.

use std::fmt;
use std::sync::Arc;

use crate::config::Config;

/// What one sweeper removed (or, dry, would remove).
pub struct Swept {
    /// The service it belongs to.
    pub service: &'static str,
    /// What it sweeps.
    pub sweeper: &'static str,
    /// What it removed, printable.
    pub report: tutela_host::SweepReport,
}

/// What one sweep of every hosted service removed (or, dry, would remove).
pub struct Report {
    /// Whether it only counted.
    pub dry_run: bool,
    /// One entry per sweeper, in the order they ran.
    pub swept: Vec<Swept>,
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for s in &self.swept {
            writeln!(f, "{} {}: {verb} {}", s.service, s.sweeper, s.report)?;
        }
        Ok(())
    }
}

/// Sweeps once at the current time; `dry_run` only counts.
pub async fn sweep(config: &Config, dry_run: bool) -> anyhow::Result<Report> {
    let hosted = crate::services::hosted(&config.server.services)?;
    let mut report = Report {
        dry_run,
        swept: Vec::new(),
    };
    if hosted.is_empty() {
        return Ok(report);
    }
    // Keys first: a sweep that cannot run must not have created a database on its way.
    let keyring = Arc::new(crate::keys::load_keyring(config)?);
    let audit_keys = crate::keys::load_audit_keys(config)?;
    // One connection, register and moment for every hosted service's sweep.
    let db = crate::server::migrate(config).await?;
    let register = Arc::new(crate::guard::load_register(config)?);
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let now = clock.now();
    // A sweep reads no consent and writes no audit record of its own.
    let ctx = crate::server::Shared {
        db,
        keyring,
        audit: tutela_policy::audit::AuditLog::detached(audit_keys),
        clock,
        register,
    }
    .context(config, &hosted, false)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let progress = {
        let bar = bar.clone();
        move |phase: &'static str, done: u64, total: u64| {
            bar.set_message(phase);
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    for service in hosted {
        let ctx = crate::server::for_service(&ctx, config, service);
        let sweepers = service
            .sweepers(&ctx)
            .map_err(|e| anyhow::anyhow!("{}: {e}", service.name()))?;
        for sweeper in sweepers {
            report.swept.push(Swept {
                service: service.name(),
                sweeper: sweeper.name(),
                report: sweeper.sweep(now, dry_run, &progress).await?,
            });
        }
    }
    bar.finish_and_clear();
    Ok(report)
}
