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

/// Sweeps once at the current time; `dry_run` only counts.
pub async fn sweep(config: &Config, dry_run: bool) -> anyhow::Result<Report> {
    let hosted = crate::services::resolve(&config.server.services)?;
    let mut report = Report::default();
    let (subscription, enrolment) = (
        hosted.contains(&tutela_subscription::SERVICE),
        hosted.contains(&tutela_enrolment::SERVICE),
    );
    if !subscription && !enrolment {
        return Ok(report);
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
