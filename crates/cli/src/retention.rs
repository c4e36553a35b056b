//! `tutela retention sweep`: one sweep of every hosted service's retention, with a progress bar
//! on a terminal.

use std::sync::Arc;

use crate::config::Config;

/// What one sweep removed (or, dry, would remove).
#[derive(Debug, Default)]
pub struct Report {
    /// The enrolment service's records.
    pub enrolment: tutela_enrolment::SweepReport,
    /// Delivery events of the subscription service past the register's event retention.
    pub delivery_events: u64,
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

/// Sweeps once at the current time; `dry_run` only counts. A real sweep takes the leases of every
/// hosted service's sweep, as `serve` does, or fails with [`SweepBusy`] and removes nothing.
pub async fn sweep(config: &Config, dry_run: bool) -> anyhow::Result<Report> {
    let hosted = crate::services::resolve(&config.server.services)?;
    let (subscription, enrolment) = (
        hosted.contains(&tutela_subscription::SERVICE),
        hosted.contains(&tutela_enrolment::SERVICE),
    );
    if !subscription && !enrolment {
        return Ok(Report::default());
    }
    // Keys first: a sweep that cannot run must not have created a database on its way.
    let keys = if enrolment {
        Some((
            Arc::new(crate::keys::load_keyring(config)?),
            crate::keys::load_audit_keys(config)?,
        ))
    } else {
        None
    };
    // One connection, register and moment for every hosted service's sweep.
    let db = crate::server::migrate(config).await?;
    let register = Arc::new(crate::guard::load_register(config)?);
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let now = clock.now();
    // A dry run only counts, and needs no lease.
    let mut leases = Vec::new();
    if !dry_run && subscription {
        let name = tutela_subscription::EVENT_SWEEP_LEASE;
        leases.push(tutela_store::Lease::new(db.clone(), name, clock.clone()));
    }
    if !dry_run && enrolment {
        let name = tutela_enrolment::SWEEP_LEASE;
        leases.push(tutela_store::Lease::new(db.clone(), name, clock.clone()));
    }
    let swept = tutela_store::lease::run_all(
        &leases,
        sweep_hosted(db, register, clock, now, keys, subscription, dry_run),
    )
    .await?;
    match swept {
        tutela_store::Leased::Done(report) => report,
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

/// The sweeps themselves, once their leases are held.
async fn sweep_hosted(
    db: sea_orm::DatabaseConnection,
    register: Arc<tutela_policy::Register>,
    clock: tutela_store::SharedClock,
    now: chrono::DateTime<chrono::Utc>,
    keys: Option<(Arc<tutela_store::Keyring>, tutela_policy::audit::AuditKeys)>,
    subscription: bool,
    dry_run: bool,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    if subscription {
        report.delivery_events =
            tutela_subscription::sweep_events(&db, &register, now, dry_run).await?;
    }
    let Some((keyring, audit_keys)) = keys else {
        return Ok(report);
    };
    let learners = tutela_enrolment::Learners::new(db.clone(), keyring, audit_keys, clock);
    let sweeper = tutela_enrolment::Sweeper::new(
        db.clone(),
        learners,
        tutela_enrolment::Holds::new(db),
        register,
    );
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
    report.enrolment = sweeper.sweep(now, dry_run, &progress).await?;
    bar.finish_and_clear();
    Ok(report)
}
