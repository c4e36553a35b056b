//! Records staged in the outbox within the transaction of the write they account for, so that
//! a write and its record commit together or not at all, even under kill -9; and the recovery
//! that chains what an interrupted call staged.

use std::fmt;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QuerySelect,
};

use super::entity;
use super::event::{AuditEvent, Subject, TokenCall};
use super::keys::AuditKeys;
use super::record::{AuditRecord, EventKind, Outcome};
use super::writer::{AuditLog, chain, lock_head, take_staged};
use crate::error::{Error, Result};

/// How often the outbox is checked for records of interrupted calls.
pub const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How old an outbox row must be before a periodic recovery takes it from a live call.
pub(super) const RECOVERY_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);
/// Appended to the reason of a record chained by recovery, so an investigator can tell it.
pub const RECOVERED: &str = " [recovered]";

/// A record staged in the outbox by [`AuditLog::summarise_in`], waiting to be chained.
#[derive(Debug)]
#[must_use = "a staged record is chained by `append` (or, late, by recovery)"]
pub struct StagedRecord {
    pub(super) log: AuditLog,
    pub(super) record: AuditRecord,
    pub(super) id: String,
}

impl StagedRecord {
    /// Chains the record once the transaction that staged it has committed (nothing when the
    /// transaction rolled back, or recovery chained it already).
    pub async fn append(self) -> Result<()> {
        self.log.send(self.record, None, vec![self.id], true).await
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
    /// When the call began: its final record is stamped then, its staged ones when staged.
    at: DateTime<Utc>,
    call: TokenCall,
    note: String,
    staged: std::sync::Mutex<Vec<String>>,
}

impl fmt::Debug for TokenCallAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCallAudit")
            .field("rpc", &self.call.rpc)
            .finish_non_exhaustive()
    }
}

impl TokenCallAudit {
    /// The record of `call`, written as allowed with `note` until [`finish`](Self::finish) says
    /// otherwise.
    pub fn new(log: &AuditLog, call: TokenCall, note: &str) -> Self {
        Self {
            log: log.clone(),
            at: log.now(),
            call,
            note: note.to_owned(),
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
        let (outcome, reason) = match outcome {
            Ok(note) => (Outcome::Allow, note.to_owned()),
            Err(reason) => (Outcome::Deny, reason.to_owned()),
        };
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|p| p.into_inner()));
        let event = AuditEvent::TokenCall {
            call: self.call,
            outcome,
            reason,
        };
        let (record, subject) = event.into_record(self.at);
        self.log.send(record, subject, staged, false).await
    }
}

#[async_trait::async_trait]
impl StageAudit for TokenCallAudit {
    async fn stage_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        categories: crate::CategorySet,
    ) -> Result<()> {
        if self.call.subject.is_none() {
            return Err(Error::internal(
                "a token call stages a write without its subject",
            ));
        }
        let event = AuditEvent::TokenCall {
            call: TokenCall {
                categories,
                ..self.call.clone()
            },
            outcome: Outcome::Allow,
            reason: self.note.clone(),
        };
        let id = self.log.stage(txn, event).await?;
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        Ok(())
    }
}

/// Stages an access record in the outbox within `conn` (the transaction of the write it
/// accounts for): committed with the write, or not at all. Returns the staged row's id.
pub(super) async fn stage<C: ConnectionTrait>(
    conn: &C,
    record: &AuditRecord,
    subject: Option<&Subject>,
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
        subject_id: Set(subject.map(|s| s.id().to_owned()).unwrap_or_default()),
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
    let txn = tutela_store::begin(db).await?;
    let head = lock_head(&txn).await?;
    let mut rows = take_staged(&txn, ids).await?;
    rows.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let records: Vec<(AuditRecord, Option<Subject>)> = rows
        .into_iter()
        .map(|row| {
            let subject = (!row.subject.is_empty()).then_some(row.subject);
            let mapping = subject
                .clone()
                .map(|pseudonym| Subject::stored(pseudonym, row.tenant.clone(), row.subject_id));
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
