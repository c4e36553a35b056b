//! Leases: a row in `tutela_leases` that lets one replica at a time run a job that every replica
//! schedules (the retention sweeps, hourly on each). Taking a lease is one atomic statement on
//! both engines (an upsert that only overwrites an expired row or one this holder already has),
//! so two replicas asking at the same moment cannot both win. A holder renews its lease while its
//! job runs and deletes the row when the job ends; a replica that dies holding one is replaced
//! once the lease expires.
//!
//! Expiry is read from the injected clock of whoever asks, so replicas' clocks must agree to well
//! within the lease's length (minutes, against the milliseconds NTP keeps them within).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};

use crate::clock::SharedClock;
use crate::db::placeholders;
use crate::error::StoreResult;

/// How long a lease lasts unless renewed: long enough that a stalled renewal (a slow database)
/// does not hand the job to another replica, short enough that a crashed holder's job is taken
/// over within one sweep interval.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Who holds a lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The lease's name.
    pub lease: String,
    /// The holder's replica id (see [`replica_id`]).
    pub holder: String,
    /// When the lease lapses unless its holder renews it.
    pub expires_at: DateTime<Utc>,
}

/// What became of a job run under a lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Leased<T> {
    /// The lease was taken, the job ran to its end and the lease was released.
    Done(T),
    /// Another replica holds the lease: the job did not run. `None` when the holder released it
    /// between the attempt and the look-up.
    Busy(Option<Holding>),
    /// The lease was lost while the job ran (another replica took it over after it lapsed): the
    /// job was stopped at its next await, so that two replicas never run it at once.
    Lost,
}

/// This process's id as a lease holder: host name (the pod's, under Kubernetes), process id and a
/// random suffix, so that a restarted process on the same host is a new holder.
pub fn replica_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().chars().take(64).collect::<String>())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "tutela".to_owned());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}/{}/{}", std::process::id(), &suffix[..8])
    })
}

/// One named lease as seen by one holder.
#[derive(Clone)]
pub struct Lease {
    db: DatabaseConnection,
    name: String,
    holder: String,
    ttl: Duration,
    renew_every: Duration,
    clock: SharedClock,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

const ACQUIRE: &str = "INSERT INTO tutela_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE tutela_leases.expires_at <= $4 OR tutela_leases.holder = excluded.holder \
     RETURNING holder";
const RENEW: &str = "UPDATE tutela_leases SET expires_at = $1 WHERE name = $2 AND holder = $3";
const RELEASE: &str = "DELETE FROM tutela_leases WHERE name = $1 AND holder = $2";
const CURRENT: &str = "SELECT holder, expires_at FROM tutela_leases WHERE name = $1";

impl Lease {
    /// The lease `name` in `db`, held as this process ([`replica_id`]) for [`DEFAULT_TTL`] and
    /// renewed every third of it while a job runs.
    pub fn new(db: DatabaseConnection, name: impl Into<String>, clock: SharedClock) -> Self {
        Self {
            db,
            name: name.into(),
            holder: replica_id().to_owned(),
            ttl: DEFAULT_TTL,
            renew_every: DEFAULT_TTL / 3,
            clock,
        }
    }

    /// The same lease, asked for as `holder` (tests play several replicas in one process).
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }

    /// The same lease, lasting `ttl` and renewed every third of it.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.with_renewal(ttl / 3)
    }

    /// The same lease, renewed every `every` while a job runs (at least every millisecond).
    pub fn with_renewal(mut self, every: Duration) -> Self {
        self.renew_every = every.max(Duration::from_millis(1));
        self
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whom this lease is asked for.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn expiry(&self) -> i64 {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        self.clock
            .now()
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .timestamp_millis()
    }

    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        let backend = self.db.get_database_backend();
        Statement::from_sql_and_values(backend, placeholders(backend, sql), values)
    }

    /// Takes the lease if it is free, lapsed, or already this holder's (which extends it); one
    /// statement, so of replicas asking at once exactly one gets it. Returns whether it is held.
    pub async fn acquire(&self) -> StoreResult<bool> {
        let statement = self.statement(
            ACQUIRE,
            vec![
                self.name.clone().into(),
                self.holder.clone().into(),
                self.expiry().into(),
                self.clock.now().timestamp_millis().into(),
            ],
        );
        Ok(self.db.query_one_raw(statement).await?.is_some())
    }

    /// Extends the lease by its length from now; false if it is no longer this holder's.
    pub async fn renew(&self) -> StoreResult<bool> {
        let statement = self.statement(
            RENEW,
            vec![
                self.expiry().into(),
                self.name.clone().into(),
                self.holder.clone().into(),
            ],
        );
        Ok(self.db.execute_raw(statement).await?.rows_affected() == 1)
    }

    /// Frees the lease if this holder has it (someone else's is left alone).
    pub async fn release(&self) -> StoreResult<()> {
        let statement = self.statement(
            RELEASE,
            vec![self.name.clone().into(), self.holder.clone().into()],
        );
        self.db.execute_raw(statement).await?;
        Ok(())
    }

    /// Who holds the lease now, if anyone does (a lapsed row is reported as it stands).
    pub async fn current(&self) -> StoreResult<Option<Holding>> {
        let statement = self.statement(CURRENT, vec![self.name.clone().into()]);
        let Some(row) = self.db.query_one_raw(statement).await? else {
            return Ok(None);
        };
        let holder: String = row.try_get("", "holder")?;
        let expires_at: i64 = row.try_get("", "expires_at")?;
        Ok(Some(Holding {
            lease: self.name.clone(),
            holder,
            expires_at: DateTime::from_timestamp_millis(expires_at)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }))
    }

    /// Runs `job` if the lease can be taken, renewing it while the job runs and releasing it at
    /// the end. A job whose lease is lost is dropped at its next await point: whatever it had
    /// committed stays, and the new holder carries on from there.
    pub async fn run<F: Future>(&self, job: F) -> StoreResult<Leased<F::Output>> {
        run_all(std::slice::from_ref(self), job).await
    }
}

/// Frees every lease in `leases` that this holder has; errors are only logged, since a lease not
/// released lapses on its own.
async fn release_all(leases: &[Lease]) {
    for lease in leases {
        if let Err(err) = lease.release().await {
            tracing::warn!(lease = %lease.name, error = %err, "lease not released; it lapses on its own");
        }
    }
}

/// [`Lease::run`] under several leases at once (a command that runs several replicas' jobs):
/// all are taken, in order, or none is and the job does not run.
pub async fn run_all<F: Future>(leases: &[Lease], job: F) -> StoreResult<Leased<F::Output>> {
    for (taken, lease) in leases.iter().enumerate() {
        let held = match lease.acquire().await {
            Ok(true) => continue,
            Ok(false) => lease.current().await,
            Err(err) => Err(err),
        };
        release_all(&leases[..taken]).await;
        return held.map(Leased::Busy);
    }
    let Some(every) = leases.iter().map(|l| l.renew_every).min() else {
        return Ok(Leased::Done(job.await));
    };
    let mut job = std::pin::pin!(job);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let output = loop {
        tokio::select! {
            output = &mut job => break output,
            _ = ticks.tick() => {
                for lease in leases {
                    match lease.renew().await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(lease = %lease.name, "lease lost to another replica: job stopped");
                            release_all(leases).await;
                            return Ok(Leased::Lost);
                        }
                        // The lease still runs until it lapses: try again at the next tick.
                        Err(err) => {
                            tracing::warn!(lease = %lease.name, error = %err, "lease not renewed")
                        }
                    }
                }
            }
        }
    };
    release_all(leases).await;
    Ok(Leased::Done(output))
}
