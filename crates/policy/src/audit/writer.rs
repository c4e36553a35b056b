//! The handle callers append through and the one task per process that chains their records
//! in batches (group commit) under the head's lock.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QuerySelect, Statement,
};
use tokio::sync::{mpsc, oneshot};
use tutela_store::SharedClock;

use super::event::{AuditEvent, Subject};
use super::keys::AuditKeys;
use super::outbox::{RECOVERY_AGE, RECOVERY_INTERVAL, StagedRecord, recover, stage};
use super::record::AuditRecord;
use super::{GENESIS, entity};
use crate::error::{Error, Result};

/// Most records in one batch.
const MAX_BATCH: usize = 2048;
/// Queue length before callers wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 16_384;

struct Pending {
    record: AuditRecord,
    /// The subject the record's pseudonym stands for, whose mapping the batch writes.
    subject: Option<Subject>,
    /// Outbox rows this record stands for: the writer deletes them in the batch that chains it.
    staged: Vec<String>,
    /// Whether the record stands only for its staged rows: then it is dropped when none of them
    /// is left (recovery chained them already, or the write that staged them rolled back).
    only_staged: bool,
    done: oneshot::Sender<bool>,
}

/// The handle through which events are audited. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    keys: Arc<AuditKeys>,
    clock: SharedClock,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer task over `db` (whose audit tables are migrated).
    /// At once, and then every [`RECOVERY_INTERVAL`], it chains the outbox rows that calls
    /// interrupted before their audit (see [`recover`]).
    pub fn start(db: DatabaseConnection, keys: AuditKeys, clock: SharedClock) -> Self {
        let keys = Arc::new(keys);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db, keys.clone(), clock.clone(), rx));
        Self { tx, keys, clock }
    }

    /// A log whose writer is gone: every append fails (fail closed). For tests of start-up
    /// validation that never append.
    pub fn detached(keys: AuditKeys) -> Self {
        let (tx, _rx) = mpsc::channel(1);
        Self {
            tx,
            keys: Arc::new(keys),
            clock: Arc::new(tutela_store::SystemClock),
        }
    }

    /// The keys (for pseudonyms).
    pub fn keys(&self) -> &AuditKeys {
        &self.keys
    }

    /// The clock records are stamped with.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// `subject_id` of `tenant` as events name them (see [`AuditKeys::subject`]).
    pub fn subject(&self, tenant: &str, subject_id: &str) -> Subject {
        self.keys.subject(tenant, subject_id)
    }

    /// Appends a record of what `call` did beyond its decision, e.g. how many recipients an
    /// audience resolution streamed (the guard wrote the decision before the first message left;
    /// a stream's size is known only at its end). `note` must not contain personal data.
    pub async fn summarise(
        &self,
        call: &crate::Authorized,
        categories: crate::CategorySet,
        note: String,
    ) -> Result<()> {
        self.append(call.summary(categories, note)).await
    }

    /// [`AuditLog::summarise`] for a write of many subjects' data at once (e.g. delivery events
    /// in bulk): stages the summary within `txn`, the write's transaction, so that it is durable
    /// exactly when the write is. [`StagedRecord::append`] after the commit chains it; if the
    /// process dies first, recovery does.
    pub async fn summarise_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        call: &crate::Authorized,
        categories: crate::CategorySet,
        note: String,
    ) -> Result<StagedRecord> {
        let (record, subject) = call.summary(categories, note).into_record(self.now());
        let id = stage(txn, &record, subject.as_ref()).await?;
        Ok(StagedRecord {
            log: self.clone(),
            record,
            id,
        })
    }

    /// Stages the record of `change`, made by `call`, within `txn` (the transaction that makes
    /// the change), beside the call's decision: durable exactly when the change is.
    /// [`StagedRecord::append`] after the commit chains it; if the process dies first, recovery
    /// does.
    pub async fn change_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        call: &crate::Authorized,
        change: super::Change,
    ) -> Result<StagedRecord> {
        let (record, subject) = call.changed(change).into_record(self.now());
        let id = stage(txn, &record, subject.as_ref()).await?;
        Ok(StagedRecord {
            log: self.clone(),
            record,
            id,
        })
    }

    /// Appends `event`, stamped now, and waits until its record is durable.
    pub async fn append(&self, event: AuditEvent) -> Result<()> {
        self.append_staged(event, Vec::new(), false).await
    }

    /// Appends `event` in place of the outbox rows `staged` (see [`stage`]), deleting them in
    /// the same transaction. When `only_staged` and none of the rows is left, nothing is
    /// appended: another process recovered them, or the write that staged them rolled back.
    pub(crate) async fn append_staged(
        &self,
        event: AuditEvent,
        staged: Vec<String>,
        only_staged: bool,
    ) -> Result<()> {
        let (record, subject) = event.into_record(self.now());
        self.send(record, subject, staged, only_staged).await
    }

    /// Stages `event`, stamped now, in the outbox within `txn` (the transaction of the write it
    /// accounts for): committed with the write, or not at all. Returns the staged row's id, for
    /// [`AuditLog::append_staged`] to chain the record in its place.
    pub(crate) async fn stage(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        event: AuditEvent,
    ) -> Result<String> {
        let (record, subject) = event.into_record(self.now());
        stage(txn, &record, subject.as_ref()).await
    }

    /// Queues `record` for the writer and waits until the batch holding it has committed.
    pub(super) async fn send(
        &self,
        record: AuditRecord,
        subject: Option<Subject>,
        staged: Vec<String>,
        only_staged: bool,
    ) -> Result<()> {
        let (done, durable) = oneshot::channel();
        self.tx
            .send(Pending {
                record,
                subject,
                staged,
                only_staged,
                done,
            })
            .await
            .map_err(|_| Error::AuditUnavailable)?;
        match durable.await {
            Ok(true) => Ok(()),
            _ => Err(Error::AuditUnavailable),
        }
    }
}

async fn writer(
    db: DatabaseConnection,
    keys: Arc<AuditKeys>,
    clock: SharedClock,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Pseudonyms whose mapping row this process has written: most accesses are to subjects
    // seen before, and skipping them spares a statement per batch.
    let mut mapped = std::collections::HashSet::new();
    // The first tick is immediate: what the last run of any process left is chained at start.
    let mut recovery = tokio::time::interval(RECOVERY_INTERVAL);
    recovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_recovery = true;
    loop {
        let first = tokio::select! {
            next = rx.recv() => match next {
                Some(next) => next,
                None => break,
            },
            _ = recovery.tick() => {
                // At start every row is an orphan or a live call's, and chaining a live call's
                // row is safe (its guard then finds it gone); later only old rows, to leave live
                // calls their own record.
                let cutoff = if std::mem::take(&mut first_recovery) {
                    None
                } else {
                    Some(clock.now() - RECOVERY_AGE)
                };
                match recover(&db, &keys, cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(records = n, "audit records of interrupted calls recovered"),
                    Err(err) => tracing::error!(error = %err, "audit outbox could not be recovered"),
                }
                continue;
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if mapped.len() > 100_000 {
            mapped.clear();
        }
        let ok = match write_batch(&db, &keys, &batch, &mut mapped).await {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, records = batch.len(), "audit batch could not be written");
                false
            }
        };
        for pending in batch.drain(..) {
            let _ = pending.done.send(ok);
        }
    }
}

/// Locks the head for the rest of `txn` and reads it: every writer of every process chains
/// under this lock, which keeps the chain linear. The migration makes the head row exist, so the
/// lock always has a row to hold, even before the first record.
pub(super) async fn lock_head(
    txn: &sea_orm::DatabaseTransaction,
) -> std::result::Result<(i64, String), sea_orm::DbErr> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Sqlite {
        // Take the write lock before reading the head, so that two writers on one file wait for
        // each other instead of both reading the same head.
        txn.execute_raw(Statement::from_string(
            backend,
            "UPDATE tutela_audit_head SET seq = seq WHERE id = 1",
        ))
        .await?;
    }
    let mut query = entity::head::Entity::find_by_id(1);
    if backend == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    let head = query.one(txn).await?;
    Ok(head.map_or((0, GENESIS.to_owned()), |h| (h.seq, h.hash)))
}

/// Deletes the outbox rows `ids`, returning those this transaction deleted (a row another
/// writer deleted first is not returned, so it is chained once).
pub(super) async fn take_staged(
    txn: &sea_orm::DatabaseTransaction,
    ids: Vec<String>,
) -> std::result::Result<Vec<entity::outbox::Model>, sea_orm::DbErr> {
    let mut taken = Vec::new();
    for chunk in ids.chunks(500) {
        taken.extend(
            entity::outbox::Entity::delete_many()
                .filter(entity::outbox::Column::Id.is_in(chunk.iter().cloned()))
                .exec_with_returning(txn)
                .await?,
        );
    }
    Ok(taken)
}

async fn write_batch(
    db: &DatabaseConnection,
    keys: &AuditKeys,
    batch: &[Pending],
    mapped: &mut std::collections::HashSet<String>,
) -> std::result::Result<(), sea_orm::DbErr> {
    let txn = tutela_store::begin(db).await?;
    let head = lock_head(&txn).await?;
    let staged: Vec<String> = batch
        .iter()
        .flat_map(|p| p.staged.iter().cloned())
        .collect();
    let taken: std::collections::HashSet<String> = if staged.is_empty() {
        Default::default()
    } else {
        take_staged(&txn, staged)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect()
    };
    let records = batch
        .iter()
        .filter(|p| !p.only_staged || p.staged.iter().any(|id| taken.contains(id)));
    let records = records.map(|p| (&p.record, p.subject.as_ref()));
    let written = chain(&txn, keys, head, records, mapped).await?;
    txn.commit().await?;
    mapped.extend(written);
    Ok(())
}

/// Chains `records` after `head` within `txn` (which holds the head's lock), writes the
/// pseudonym mappings of those not in `mapped` and the new head; the caller commits. Returns the
/// pseudonyms whose mapping it wrote.
pub(super) async fn chain<'a>(
    txn: &sea_orm::DatabaseTransaction,
    keys: &AuditKeys,
    (mut seq, mut hash): (i64, String),
    records: impl Iterator<Item = (&'a AuditRecord, Option<&'a Subject>)>,
    mapped: &std::collections::HashSet<String>,
) -> std::result::Result<Vec<String>, sea_orm::DbErr> {
    let backend = txn.get_database_backend();
    let mut rows = Vec::new();
    let mut subjects = Vec::new();
    for (r, subject) in records {
        seq += 1;
        let next = keys.link(&hash, seq, r);
        rows.push(entity::record::ActiveModel {
            seq: Set(seq),
            at: Set(r.at),
            kind: Set(r.kind.as_str().to_owned()),
            tenant: Set(r.tenant.clone()),
            principal: Set(r.principal.clone()),
            principal_kind: Set(r.principal_kind.clone()),
            roles: Set(r.roles.clone()),
            rpc: Set(r.rpc.clone()),
            purpose: Set(r.purpose.clone()),
            subject: Set(r.subject.clone()),
            categories: Set(r.categories.clone()),
            decision: Set(r.decision.as_str().to_owned()),
            reason: Set(r.reason.clone()),
            trace_id: Set(r.trace_id.clone()),
            prev_hash: Set(std::mem::replace(&mut hash, next.clone())),
            hash: Set(next),
        });
        if let (Some(pseudonym), Some(subject)) = (&r.subject, subject)
            && !mapped.contains(pseudonym)
        {
            subjects.push(entity::subject::ActiveModel {
                pseudonym: Set(pseudonym.clone()),
                tenant: Set(subject.tenant().to_owned()),
                subject_id: Set(subject.id().to_owned()),
            });
        }
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // Both backends bind at most 32766/65535 parameters per statement; 16 columns × 1000 rows
    // stays well within either.
    if backend == DbBackend::Postgres {
        insert_unnest(txn, rows).await?;
    } else {
        for chunk in statement_chunks(rows) {
            entity::record::Entity::insert_many(chunk)
                .exec_without_returning(txn)
                .await?;
        }
    }
    subjects.sort_by(|a, b| a.pseudonym.as_ref().cmp(b.pseudonym.as_ref()));
    subjects.dedup_by(|a, b| a.pseudonym.as_ref() == b.pseudonym.as_ref());
    for chunk in statement_chunks(subjects.clone()) {
        entity::subject::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(entity::subject::Column::Pseudonym)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    let new_head = entity::head::ActiveModel {
        id: Set(1),
        seq: Set(seq),
        hash: Set(hash),
    };
    entity::head::Entity::insert(new_head)
        .on_conflict(
            OnConflict::column(entity::head::Column::Id)
                .update_columns([entity::head::Column::Seq, entity::head::Column::Hash])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(subjects
        .into_iter()
        .filter_map(|s| match s.pseudonym {
            sea_orm::ActiveValue::Set(p) => Some(p),
            _ => None,
        })
        .collect())
}

/// PostgreSQL: one INSERT of the whole batch from column arrays (16 parameters, whatever the batch
/// size). Row-wise multi-VALUES inserts with thousands of parameters cost the driver far more
/// than the database (measured: ~30x slower per row), so this one place branches on the backend.
async fn insert_unnest(
    txn: &sea_orm::DatabaseTransaction,
    rows: Vec<entity::record::ActiveModel>,
) -> std::result::Result<(), sea_orm::DbErr> {
    let n = rows.len();
    let (mut seq, mut at) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut text: [Vec<String>; 14] = Default::default();
    for row in rows {
        let m: entity::record::Model = sea_orm::TryIntoModel::try_into_model(row)?;
        seq.push(m.seq);
        at.push(m.at);
        for (column, value) in text.iter_mut().zip([
            m.kind,
            m.tenant,
            m.principal,
            m.principal_kind,
            m.roles,
            m.rpc,
            m.purpose,
            m.subject.unwrap_or_default(),
            m.categories,
            m.decision,
            m.reason,
            m.trace_id,
            m.prev_hash,
            m.hash,
        ]) {
            column.push(value);
        }
    }
    let mut values: Vec<sea_orm::Value> = vec![seq.into(), at.into()];
    values.extend(text.into_iter().map(Into::into));
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO tutela_audit_log (seq, at, kind, tenant, principal, principal_kind, roles, \
         rpc, purpose, subject, categories, decision, reason, trace_id, prev_hash, hash) \
         SELECT seq, at, kind, tenant, principal, principal_kind, roles, rpc, purpose, \
         NULLIF(subject, ''), categories, decision, reason, trace_id, prev_hash, hash \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::text[], $16::text[]) \
         AS t(seq, at, kind, tenant, principal, principal_kind, roles, rpc, purpose, subject, \
         categories, decision, reason, trace_id, prev_hash, hash)",
        values,
    ))
    .await?;
    Ok(())
}

/// Splits rows into chunks of a few fixed sizes (256, 64, 16, 4, 1), so that a multi-row INSERT
/// has one of five shapes: the database and the driver then reuse prepared statements instead of
/// parsing and planning a new statement of a new size for every batch.
fn statement_chunks<T>(mut rows: Vec<T>) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    for size in [256, 64, 16, 4, 1] {
        while rows.len() >= size {
            let rest = rows.split_off(size);
            chunks.push(std::mem::replace(&mut rows, rest));
        }
    }
    chunks
}
