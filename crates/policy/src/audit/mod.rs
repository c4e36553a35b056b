//! The audit log: every guard decision and every access to a subject's data, appended to an
//! append-only, hash-chained log (X1, X2). Records carry ids, pseudonyms and category names,
//! never personal values, so the log does not become a second copy of the data.
//!
//! Each record's hash is a keyed HMAC over its content and the previous record's hash, so an
//! edited, removed or reordered record breaks the chain, and without the audit key nobody can
//! forge a consistent replacement; a head row with the last hash catches a truncated tail.
//!
//! Records are written by one task per process in batches (group commit): callers queue a record
//! and wait until the batch holding it has committed, so a call never succeeds before its record
//! is durable, and auditing costs one transaction per batch rather than one per call. Across
//! processes (PostgreSQL), the head row is locked for the length of a batch, which keeps the
//! chain linear.

pub mod entity;
pub mod migration;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tutela_store::SharedClock;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Most records in one batch.
const MAX_BATCH: usize = 2048;
/// Queue length before callers wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 16_384;
/// The hash before the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Keys derived from the configured audit secret: one chains records, one makes pseudonyms, one
/// keys the services' blind indexes. Distinct labels make them independent keys; they share the
/// secret because rotating it already re-keys every pseudonym.
#[derive(Clone)]
pub struct AuditKeys {
    chain: [u8; 32],
    pseudonym: [u8; 32],
    index: [u8; 32],
    tokens: [u8; 32],
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKeys([redacted])")
    }
}

/// An HMAC-SHA256 instance keyed with `key`.
fn mac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of every length, so `new_from_slice` cannot fail.
        #[allow(clippy::panic)]
        Err(_) => panic!("HMAC-SHA256 accepts keys of any length"),
    }
}

fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = mac(secret);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

impl AuditKeys {
    /// Keys derived from `secret` (at least 32 bytes of randomness).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            chain: derive(secret, b"tutela/audit/chain/v1"),
            pseudonym: derive(secret, b"tutela/audit/pseudonym/v1"),
            index: derive(secret, b"tutela/index/v1"),
            tokens: derive(secret, b"tutela/tokens/v1"),
        }
    }

    /// A signer of capability tokens for `label` (e.g. `subscription/unsubscribe`): tokens that
    /// authorise one action on their own, like a one-click unsubscribe link. Every label is an
    /// independent key, so a token of one kind never passes for another.
    pub fn token_signer(&self, label: &str) -> TokenSigner {
        let mut mac = mac(&self.tokens);
        mac.update(&(label.len() as u32).to_be_bytes());
        mac.update(label.as_bytes());
        TokenSigner { mac }
    }

    /// The pseudonym of a subject in a tenant: stable, keyed, and meaningless without the key.
    pub fn pseudonym(&self, tenant: &str, subject_id: &str) -> String {
        let mut mac = mac(&self.pseudonym);
        mac.update(&(tenant.len() as u32).to_be_bytes());
        mac.update(tenant.as_bytes());
        mac.update(subject_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("p_{}", hex::encode(&digest[..16]))
    }

    /// A blind index of `value` (already normalised by the caller) for exact-match look-ups of
    /// `field` in a tenant, so that no plaintext index exists. Keyed, so the index cannot be
    /// reversed by hashing guesses without the key.
    pub fn blind_index(&self, tenant: &str, field: &str, value: &str) -> String {
        let mut mac = mac(&self.index);
        for part in [tenant, field] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn link(&self, prev_hash: &str, seq: i64, record: &AuditRecord) -> String {
        let mut mac = mac(&self.chain);
        let at = record
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let subject = record.subject.as_deref().unwrap_or("");
        for part in [
            prev_hash,
            &seq.to_string(),
            &at,
            record.kind.as_str(),
            &record.tenant,
            &record.principal,
            &record.principal_kind,
            &record.roles,
            &record.rpc,
            &record.purpose,
            subject,
            &record.categories,
            record.decision.as_str(),
            &record.reason,
            &record.trace_id,
        ] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Signs and checks capability tokens of one kind (see [`AuditKeys::token_signer`]). Keyed once:
/// each tag costs only the payload's hashing, which matters when an audience of a million
/// recipients each needs its unsubscribe token.
#[derive(Clone)]
pub struct TokenSigner {
    mac: HmacSha256,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner([redacted])")
    }
}

impl TokenSigner {
    /// The tag of `payload`.
    pub fn tag(&self, payload: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` (the tag's first bytes, at least 16) is `payload`'s, in constant time.
    pub fn verify(&self, payload: &[u8], tag: &[u8]) -> bool {
        if tag.len() < 16 {
            return false;
        }
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.verify_truncated_left(tag).is_ok()
    }
}

/// How a principal appears in the audit log: staff, service and partner ids as they are;
/// learners and guardians only by pseudonym.
pub fn principal_ref(keys: &AuditKeys, p: &crate::principal::Principal) -> String {
    use crate::principal::PrincipalKind;
    match p.kind {
        PrincipalKind::Learner | PrincipalKind::Guardian => keys.pseudonym(&p.tenant, &p.id),
        _ => p.id.clone(),
    }
}

/// What kind of event a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The guard's decision on a call.
    Decision,
    /// A handler read or changed a subject's data.
    Access,
}

impl EventKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Access => "access",
        }
    }

    /// As read back: anything but `access` reads as a decision (and then fails verification
    /// if it was stored otherwise).
    fn parse(stored: &str) -> Self {
        if stored == "access" {
            Self::Access
        } else {
            Self::Decision
        }
    }
}

/// Whether the call was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Refused.
    Deny,
}

impl Outcome {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    /// As read back: anything but `allow` reads as a refusal.
    fn parse(stored: &str) -> Self {
        if stored == "allow" {
            Self::Allow
        } else {
            Self::Deny
        }
    }
}

/// One audit record, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Decision or access.
    pub kind: EventKind,
    /// The tenant.
    pub tenant: String,
    /// The principal: a staff, service or partner id, or the pseudonym of a learner or guardian.
    pub principal: String,
    /// The principal's kind.
    pub principal_kind: String,
    /// The principal's roles, comma-separated.
    pub roles: String,
    /// The RPC.
    pub rpc: String,
    /// The purpose.
    pub purpose: String,
    /// The subject's pseudonym, for accesses.
    pub subject: Option<String>,
    /// Data categories concerned, comma-separated short names.
    pub categories: String,
    /// Allowed or refused.
    pub decision: Outcome,
    /// The deciding policy ids, or the refusal's reason.
    pub reason: String,
    /// The W3C trace id, when tracing.
    pub trace_id: String,
}

struct Pending {
    record: AuditRecord,
    subject: Option<(String, String)>,
    /// Outbox rows this record stands for: the writer deletes them in the batch that chains it.
    staged: Vec<String>,
    /// Whether the record stands only for its staged rows: then it is dropped when none of them
    /// is left (recovery chained them already, or the write that staged them rolled back).
    only_staged: bool,
    done: oneshot::Sender<bool>,
}

/// The handle through which records are appended. Cheap to clone.
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

    /// Appends a record of what `call` did beyond its decision, e.g. how many recipients an
    /// audience resolution streamed (the guard wrote the decision before the first message left;
    /// a stream's size is known only at its end). `note` must not contain personal data.
    pub async fn summarise(
        &self,
        call: &crate::Authorized,
        categories: crate::CategorySet,
        note: String,
    ) -> Result<()> {
        self.append(Self::summary(call, categories, note), None)
            .await
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
        let record = Self::summary(call, categories, note);
        let id = stage(txn, &record, "").await?;
        Ok(StagedRecord {
            log: self.clone(),
            record,
            id,
        })
    }

    fn summary(
        call: &crate::Authorized,
        categories: crate::CategorySet,
        note: String,
    ) -> AuditRecord {
        // An access without one subject: the categories of many.
        AuditRecord {
            kind: EventKind::Access,
            reason: note,
            ..call.audit_record(None, categories)
        }
    }

    /// Appends `record` and waits until it is durable. `subject` is the (tenant, subject id) the
    /// record's pseudonym stands for, kept apart from the log for the dpo to resolve.
    pub async fn append(
        &self,
        record: AuditRecord,
        subject: Option<(String, String)>,
    ) -> Result<()> {
        self.append_staged(record, subject, Vec::new(), false).await
    }

    /// Appends `record` in place of the outbox rows `staged` (see [`stage`]), deleting them in
    /// the same transaction. When `only_staged` and none of the rows is left, nothing is
    /// appended: another process recovered them, or the write that staged them rolled back.
    pub(crate) async fn append_staged(
        &self,
        record: AuditRecord,
        subject: Option<(String, String)>,
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
async fn lock_head(
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
async fn take_staged(
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
    let txn = db.begin().await?;
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
async fn chain<'a>(
    txn: &sea_orm::DatabaseTransaction,
    keys: &AuditKeys,
    (mut seq, mut hash): (i64, String),
    records: impl Iterator<Item = (&'a AuditRecord, Option<&'a (String, String)>)>,
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
        if let (Some(pseudonym), Some((tenant, id))) = (&r.subject, subject)
            && !mapped.contains(pseudonym)
        {
            subjects.push(entity::subject::ActiveModel {
                pseudonym: Set(pseudonym.clone()),
                tenant: Set(tenant.clone()),
                subject_id: Set(id.clone()),
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

/// How often the outbox is checked for records of interrupted calls.
pub const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How old an outbox row must be before a periodic recovery takes it from a live call.
const RECOVERY_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);
/// Appended to the reason of a record chained by recovery, so an investigator can tell it.
pub const RECOVERED: &str = " [recovered]";

/// A record staged in the outbox by [`AuditLog::summarise_in`], waiting to be chained.
#[derive(Debug)]
#[must_use = "a staged record is chained by `append` (or, late, by recovery)"]
pub struct StagedRecord {
    log: AuditLog,
    record: AuditRecord,
    id: String,
}

impl StagedRecord {
    /// Chains the record once the transaction that staged it has committed (nothing when the
    /// transaction rolled back, or recovery chained it already).
    pub async fn append(self) -> Result<()> {
        self.log
            .append_staged(self.record, None, vec![self.id], true)
            .await
    }
}

/// What a write takes to stage its audit record in its own transaction, so that the write and
/// its record commit together or not at all: a guarded call's [`crate::SubjectAccess`], or a
/// [`TokenCallAudit`] for a call a signed token authorised.
#[async_trait::async_trait]
pub trait StageAudit: Send + Sync {
    /// Stages the record of a change of `categories` of the subject's data within `txn`.
    async fn stage_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        categories: crate::CategorySet,
    ) -> Result<()>;
}

/// The audit record of a call that a signed token in its message authorised (no principal, no
/// guard decision): its writes stage it with [`StageAudit::stage_in`], and [`finish`] chains it
/// with its outcome once the call is done, in place of what was staged.
///
/// [`finish`]: TokenCallAudit::finish
pub struct TokenCallAudit {
    log: AuditLog,
    record: AuditRecord,
    subject: Option<(String, String)>,
    staged: std::sync::Mutex<Vec<String>>,
}

impl fmt::Debug for TokenCallAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCallAudit")
            .field("rpc", &self.record.rpc)
            .finish_non_exhaustive()
    }
}

impl TokenCallAudit {
    /// The record `record` (written as an allowed access until [`finish`](Self::finish) says
    /// otherwise) of a call about `subject` (tenant, subject id), when it names one.
    pub fn new(log: &AuditLog, record: AuditRecord, subject: Option<(String, String)>) -> Self {
        Self {
            log: log.clone(),
            record,
            subject,
            staged: Default::default(),
        }
    }

    /// Chains the record with its outcome: allowed with `note`, or refused for `err`. What the
    /// call's writes staged is chained once, here or by recovery.
    pub async fn finish(self, outcome: std::result::Result<&str, &Error>) -> Result<()> {
        self.finish_with(outcome.map_err(Error::reason)).await
    }

    /// [`finish`](Self::finish) with the refusal's reason itself (as the guard reads it off a
    /// response), not an [`Error`].
    pub async fn finish_with(self, outcome: std::result::Result<&str, &str>) -> Result<()> {
        let (decision, reason) = match outcome {
            Ok(note) => (Outcome::Allow, note.to_owned()),
            Err(reason) => (Outcome::Deny, reason.to_owned()),
        };
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|p| p.into_inner()));
        let record = AuditRecord {
            decision,
            reason,
            ..self.record
        };
        self.log
            .append_staged(record, self.subject, staged, false)
            .await
    }
}

#[async_trait::async_trait]
impl StageAudit for TokenCallAudit {
    async fn stage_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        categories: crate::CategorySet,
    ) -> Result<()> {
        let Some((_, subject_id)) = &self.subject else {
            return Err(Error::internal(
                "a token call stages a write without its subject",
            ));
        };
        let record = AuditRecord {
            at: self.log.now(),
            categories: categories.names().join(","),
            ..self.record.clone()
        };
        let id = stage(txn, &record, subject_id).await?;
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        Ok(())
    }
}

/// Stages an access record in the outbox within `conn` (the transaction of the write it
/// accounts for): committed with the write, or not at all. Returns the staged row's id.
pub(crate) async fn stage<C: ConnectionTrait>(
    conn: &C,
    record: &AuditRecord,
    subject_id: &str,
) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    entity::outbox::Entity::insert(entity::outbox::ActiveModel {
        id: Set(id.clone()),
        at: Set(record.at),
        kind: Set(record.kind.as_str().to_owned()),
        tenant: Set(record.tenant.clone()),
        principal: Set(record.principal.clone()),
        principal_kind: Set(record.principal_kind.clone()),
        roles: Set(record.roles.clone()),
        rpc: Set(record.rpc.clone()),
        purpose: Set(record.purpose.clone()),
        subject: Set(record.subject.clone().unwrap_or_default()),
        subject_id: Set(subject_id.to_owned()),
        categories: Set(record.categories.clone()),
        decision: Set(record.decision.as_str().to_owned()),
        reason: Set(record.reason.clone()),
        trace_id: Set(record.trace_id.clone()),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(id)
}

/// Chains, in one transaction, the outbox rows staged before `cutoff` (all of them when
/// `None`): the audit records of writes whose call was interrupted (a crash, a kill) after the
/// write committed and before the guard chained its record. Each gets [`RECOVERED`] after its
/// reason. Safe with several processes: a row is chained by whichever transaction deletes it.
/// Returns how many records were recovered.
pub async fn recover(
    db: &DatabaseConnection,
    keys: &AuditKeys,
    cutoff: Option<DateTime<Utc>>,
) -> std::result::Result<usize, sea_orm::DbErr> {
    use entity::outbox::Column as C;
    // A cheap look first: most checks find nothing and need no lock on the head.
    let mut waiting = entity::outbox::Entity::find().select_only().column(C::Id);
    if let Some(cutoff) = cutoff {
        waiting = waiting.filter(C::At.lt(cutoff));
    }
    let ids: Vec<String> = waiting.limit(10_000).into_tuple().all(db).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let txn = db.begin().await?;
    let head = lock_head(&txn).await?;
    let mut rows = take_staged(&txn, ids).await?;
    rows.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let records: Vec<(AuditRecord, Option<(String, String)>)> = rows
        .into_iter()
        .map(|row| {
            let subject = (!row.subject.is_empty()).then_some(row.subject);
            let mapping = subject
                .is_some()
                .then(|| (row.tenant.clone(), row.subject_id));
            let record = AuditRecord {
                at: row.at,
                kind: EventKind::parse(&row.kind),
                tenant: row.tenant,
                principal: row.principal,
                principal_kind: row.principal_kind,
                roles: row.roles,
                rpc: row.rpc,
                purpose: row.purpose,
                subject,
                categories: row.categories,
                decision: Outcome::parse(&row.decision),
                reason: format!("{}{RECOVERED}", row.reason),
                trace_id: row.trace_id,
            };
            (record, mapping)
        })
        .collect();
    let n = records.len();
    chain(
        &txn,
        keys,
        head,
        records.iter().map(|(r, s)| (r, s.as_ref())),
        &Default::default(),
    )
    .await?;
    txn.commit().await?;
    Ok(n)
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

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every record checks out.
    Intact {
        /// How many records were checked.
        records: u64,
    },
    /// The first record where the chain breaks.
    Broken {
        /// Its sequence number (or the expected one, for a removed record).
        seq: i64,
        /// What is wrong.
        problem: String,
    },
}

/// Checks the whole chain from the first record to the head.
pub async fn verify(
    db: &DatabaseConnection,
    keys: &AuditKeys,
) -> std::result::Result<Verification, sea_orm::DbErr> {
    const PAGE: u64 = 10_000;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_owned();
    let mut checked = 0u64;
    loop {
        let page = entity::record::Entity::find()
            .filter(entity::record::Column::Seq.gte(expected_seq))
            .order_by_asc(entity::record::Column::Seq)
            .limit(PAGE)
            .all(db)
            .await?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            if row.seq != expected_seq {
                return Ok(Verification::Broken {
                    seq: expected_seq,
                    problem: format!("record {expected_seq} is missing (next is {})", row.seq),
                });
            }
            if row.prev_hash != prev {
                return Ok(Verification::Broken {
                    seq: row.seq,
                    problem: "does not follow the previous record (removed or reordered)".into(),
                });
            }
            let record = AuditRecord {
                at: row.at,
                kind: EventKind::parse(&row.kind),
                tenant: row.tenant.clone(),
                principal: row.principal.clone(),
                principal_kind: row.principal_kind.clone(),
                roles: row.roles.clone(),
                rpc: row.rpc.clone(),
                purpose: row.purpose.clone(),
                subject: row.subject.clone(),
                categories: row.categories.clone(),
                decision: Outcome::parse(&row.decision),
                reason: row.reason.clone(),
                trace_id: row.trace_id.clone(),
            };
            // Stored kind/decision strings outside the vocabulary fail here too, since the
            // recomputed hash uses the canonical spelling.
            let kind_ok =
                row.kind == record.kind.as_str() && row.decision == record.decision.as_str();
            if !kind_ok || keys.link(&prev, row.seq, &record) != row.hash {
                return Ok(Verification::Broken {
                    seq: row.seq,
                    problem: "content does not match its hash (edited)".into(),
                });
            }
            prev = row.hash.clone();
            expected_seq += 1;
            checked += 1;
        }
    }
    let head = entity::head::Entity::find_by_id(1).one(db).await?;
    let (head_seq, head_hash) = head.map_or((0, GENESIS.to_owned()), |h| (h.seq, h.hash));
    if head_seq != expected_seq - 1 || head_hash != prev {
        return Ok(Verification::Broken {
            seq: expected_seq,
            problem: format!(
                "the log ends at record {} but its head says {head_seq} (records removed from the end)",
                expected_seq - 1
            ),
        });
    }
    Ok(Verification::Intact { records: checked })
}

/// What one principal accessed of one subject in a time window (X2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSummary {
    /// The subject's pseudonym.
    pub subject: String,
    /// Every category accessed.
    pub categories: Vec<String>,
    /// How many accesses.
    pub accesses: u64,
    /// First access in the window.
    pub first: DateTime<Utc>,
    /// Last access in the window.
    pub last: DateTime<Utc>,
}

/// The breach question: whose data, of which categories, `principal` of `tenant` accessed between
/// `from` and `to`. Answers with pseudonyms; [`resolve_pseudonyms`] turns them into ids.
pub async fn accessed_by(
    db: &DatabaseConnection,
    tenant: &str,
    principal: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> std::result::Result<Vec<AccessSummary>, sea_orm::DbErr> {
    use entity::record::Column as C;
    let rows = entity::record::Entity::find()
        .filter(C::Tenant.eq(tenant))
        .filter(C::Principal.eq(principal))
        .filter(C::At.gte(from))
        .filter(C::At.lte(to))
        .filter(C::Kind.eq(EventKind::Access.as_str()))
        .filter(C::Decision.eq(Outcome::Allow.as_str()))
        .filter(C::Subject.is_not_null())
        .order_by_asc(C::Seq)
        .all(db)
        .await?;
    let mut by_subject: std::collections::BTreeMap<String, AccessSummary> = Default::default();
    for row in rows {
        let Some(subject) = row.subject else { continue };
        let entry = by_subject
            .entry(subject.clone())
            .or_insert_with(|| AccessSummary {
                subject,
                categories: Vec::new(),
                accesses: 0,
                first: row.at,
                last: row.at,
            });
        entry.accesses += 1;
        entry.first = entry.first.min(row.at);
        entry.last = entry.last.max(row.at);
        for c in row.categories.split(',').filter(|c| !c.is_empty()) {
            if !entry.categories.iter().any(|e| e == c) {
                entry.categories.push(c.to_owned());
            }
        }
    }
    Ok(by_subject.into_values().collect())
}

/// Subject ids behind pseudonyms of `tenant`; an erased subject's pseudonym resolves to nothing.
/// Only the dpo may call this (the caller checks).
pub async fn resolve_pseudonyms(
    db: &DatabaseConnection,
    tenant: &str,
    pseudonyms: &[String],
) -> std::result::Result<std::collections::HashMap<String, String>, sea_orm::DbErr> {
    use entity::subject::Column as C;
    let mut out = std::collections::HashMap::new();
    for chunk in pseudonyms.chunks(500) {
        let rows = entity::subject::Entity::find()
            .filter(C::Tenant.eq(tenant))
            .filter(C::Pseudonym.is_in(chunk.iter().cloned()))
            .all(db)
            .await?;
        out.extend(rows.into_iter().map(|r| (r.pseudonym, r.subject_id)));
    }
    Ok(out)
}
