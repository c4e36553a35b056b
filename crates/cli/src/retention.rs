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

/// The exit status of `tutela retention sweep` while another replica sweeps (EX_TEMPFAIL: try
/// again later).
pub const SWEEP_BUSY_EXIT: u8 = 75;

/// Another replica holds a sweep's lease: this sweep did not run, and removed nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "another replica ({}) is sweeping: it holds the lease {:?} until {}; nothing was swept, try again once it is done",
    .0.holder,
    .0.lease,
    .0.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
)]
pub struct SweepBusy(pub tutela_store::lease::Holding);

/// The name of the lease a service's sweeper runs under (`enrolment retention sweep`), in
/// `serve` and in `tutela retention sweep` alike: different sweeps run side by side, and no
/// sweep on two replicas at once.
pub fn lease_name(service: &str, sweeper: &str) -> String {
    format!("{service} {sweeper} sweep")
}

/// The lease of `service`'s `sweeper`, held as this process.
pub fn lease(
    db: &sea_orm::DatabaseConnection,
    service: &str,
    sweeper: &str,
    clock: tutela_store::SharedClock,
) -> tutela_store::Lease {
    tutela_store::Lease::new(db.clone(), lease_name(service, sweeper), clock)
}

/// Sweeps once at the current time; `dry_run` only counts. A real sweep takes the leases of every
/// hosted service's sweepers, as `serve` does, or fails with [`SweepBusy`] and removes nothing.
pub async fn sweep(config: &Config, dry_run: bool) -> anyhow::Result<Report> {
    let hosted = crate::services::hosted(&config.server.services)?;
    let mut report = Report {
        dry_run,
        swept: Vec::new(),
    };
    if hosted.is_empty() {
        return Ok(report);
    }
    let mut sweepers = Vec::new();
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
        db: db.clone(),
        keyring,
        audit: tutela_policy::audit::AuditLog::detached(audit_keys),
        clock: clock.clone(),
        register,
    }
    .context(config, &hosted, false, None)?;
    for service in hosted {
        let ctx = crate::server::for_service(&ctx, config, service);
        let built = service
            .sweepers(&ctx)
            .map_err(|e| anyhow::anyhow!("{}: {e}", service.name()))?;
        sweepers.extend(built.into_iter().map(|sweeper| (service.name(), sweeper)));
    }
    // A dry run only counts, and needs no lease.
    let leases: Vec<tutela_store::Lease> = sweepers
        .iter()
        .filter(|_| !dry_run)
        .map(|(service, sweeper)| lease(&db, service, sweeper.name(), clock.clone()))
        .collect();
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
    let swept = tutela_store::lease::run_all(&leases, async {
        for (service, sweeper) in &sweepers {
            report.swept.push(Swept {
                service,
                sweeper: sweeper.name(),
                report: sweeper.sweep(now, dry_run, &progress).await?,
            });
        }
        Ok::<(), tutela_policy::Error>(())
    })
    .await?;
    bar.finish_and_clear();
    match swept {
        tutela_store::Leased::Done(done) => done.map(|()| report).map_err(Into::into),
        tutela_store::Leased::Busy(Some(holding)) => Err(SweepBusy(holding).into()),
        // Released between the attempt and the look-up: the operator may simply run it again.
        tutela_store::Leased::Busy(None) => {
            anyhow::bail!("another replica was sweeping just now; nothing was swept, try again")
        }
        tutela_store::Leased::Lost => anyhow::bail!(
            "the sweep stopped part-way: its lease passed to another replica, which carries on"
        ),
    }
}
