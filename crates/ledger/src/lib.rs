//! The consent ledger: append-only entries of consent given and withdrawn, the
//! `tutela.consent.v1.ConsentLedger` service over them, and the [`ConsentSource`] the guard of
//! this process reads. Evidence references and guardian details are sealed under the subject's
//! data key, so erasing the subject (shredding the key) leaves only the bare facts of the entry.
//!
//! Every guard reads it, so it is a crate of its own that services use only through [`Ledger`]:
//! the consent gate over it, appends, a tenant's marketing exclusions in one batch, and its part
//! in a subject's export and erasure. Only the ledger invalidates its gate's cache: after each
//! append, and when a subject is erased. Which process hosts it is a deployment choice (the host
//! builds it where a hosted service asks for it; other processes read it over gRPC).

pub mod entity;
pub mod migration;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Set, Statement, Value,
};
use serde::{Deserialize, Serialize};

use tonic::{Request, Response, Status};
use tutela_policy::audit::StageAudit;
use tutela_policy::consent::{
    ConsentFact, ConsentGate, ConsentSnapshot, ConsentSource, GuardianGrant, IdentityVerification,
    Objection, Restriction, parse_evidence,
};
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::validate::{Checks, page_token, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Register, Result, Tenant};
use tutela_proto::common::{DataCategory, Purpose};
use tutela_proto::consent::consent_ledger_server::ConsentLedger;
use tutela_proto::consent::{
    ConsentAction, ConsentActor, ConsentEntry, ConsentEvidence, ConsentMethod, ConsentState,
    GetConsentStateRequest, GetConsentStateResponse, Guardian, ListConsentHistoryRequest,
    ListConsentHistoryResponse, RecordConsentRequest, RecordConsentResponse,
    RecordIdentityVerificationRequest, RecordIdentityVerificationResponse, RecordObjectionRequest,
    RecordObjectionResponse, RecordRestrictionRequest, RecordRestrictionResponse,
    WithdrawConsentRequest, WithdrawConsentResponse,
};
use tutela_store::{KeyVault, Keyring, SharedClock, StoreError, SubjectKey, placeholders};

/// The ledger's name: its migration set and its part of the host.
pub const LEDGER: &str = "ledger";

/// The key vault scope of the subjects' data keys the ledger seals under. It is the subscription
/// service's scope, where the ledger began: keys made then stay readable, and one key per contact
/// means that erasing them from either shreds both.
pub const VAULT_SCOPE: &str = "subscription";

/// How far in the future an `occurred_at` may be (clock skew between the caller and us).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// The consent ledger of a process: its storage and the guard's consent gate over it.
#[derive(Debug, Clone)]
pub struct Ledger {
    store: Arc<Store>,
    gate: Arc<ConsentGate>,
}

impl Ledger {
    /// The ledger over `db` (migrated with [`migration::migrations`]), with a consent gate that
    /// reads it and caches for at most [`tutela_policy::consent::MAX_TTL`].
    pub fn new(db: DatabaseConnection, keyring: Arc<Keyring>, clock: SharedClock) -> Self {
        let store = Arc::new(Store::new(db, keyring, clock));
        let gate = Arc::new(ConsentGate::new(
            store.clone(),
            tutela_policy::consent::MAX_TTL,
        ));
        Self { store, gate }
    }

    /// As [`Ledger::new`], with the gate reading consent from `source` instead (another process's
    /// ledger, as a process that does not host it sees it); appends still invalidate it.
    pub fn reading(
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        clock: SharedClock,
        source: Arc<dyn ConsentSource>,
    ) -> Self {
        let store = Arc::new(Store::new(db, keyring, clock));
        let gate = Arc::new(ConsentGate::new(source, tutela_policy::consent::MAX_TTL));
        Self { store, gate }
    }

    /// The guard's consent gate over this ledger.
    pub fn gate(&self) -> Arc<ConsentGate> {
        self.gate.clone()
    }

    /// The ledger as a [`ConsentSource`], read without the gate's cache.
    pub fn source(&self) -> Arc<dyn ConsentSource> {
        self.store.clone()
    }

    /// Whether the ledger holds any entry for the subject (one row read, not the history).
    pub async fn has_entries(&self, tenant: &Tenant, subject: &str) -> Result<bool> {
        self.store.has_entries(tenant, subject).await
    }

    /// The subject's entries in ledger order, as the API shows them (without evidence reference
    /// and guardian once the subject was erased): the ledger's part of an export.
    pub async fn history(&self, tenant: &Tenant, subject: &str) -> Result<Vec<ConsentEntry>> {
        let rows = self.store.rows(tenant, subject).await?;
        let key = self.store.key(tenant.as_str(), subject).await?;
        rows.into_iter()
            .map(|row| entry(row, key.as_ref()))
            .collect()
    }

    /// The tenant's subjects whose latest `marketing` entry for the purpose as a whole is a
    /// withdrawal, or whose processing is restricted: whom no audience may include. One batch
    /// for the whole tenant, not one snapshot per recipient.
    pub async fn marketing_exclusions(&self, tenant: &Tenant) -> Result<HashSet<String>> {
        self.store.left_out_of_marketing(tenant).await
    }

    /// Appends `append` for `tenant` (or finds the entry an earlier call with the same
    /// idempotency key appended), staging its audit record through `audit` in the append's
    /// transaction; the next consent check in this process sees it.
    pub async fn append(
        &self,
        tenant: &Tenant,
        append: &Append,
        recorded_by: &str,
        audit: &dyn StageAudit,
    ) -> Result<ConsentEntry> {
        let (row, key, appended) = self
            .store
            .append(tenant, append, recorded_by, audit, append.touched())
            .await?;
        if appended {
            // After the commit: the next call in this process sees the new state.
            self.gate.invalidate(tenant, &append.subject);
        }
        entry(row, key.as_ref())
    }

    /// The ledger's part of erasing a subject: their data key is shredded (the key in
    /// [`VAULT_SCOPE`], which the subscription service's sealed data shares), so evidence
    /// references and guardian details become unreadable for good while the bare consent facts
    /// stay as proof; the gate forgets what it cached. Returns whether a key was shredded.
    pub async fn erase(&self, tenant: &Tenant, subject: &str) -> Result<bool> {
        let shredded = self.store.vault.shred(tenant.as_str(), subject).await?;
        self.gate.invalidate(tenant, subject);
        Ok(shredded)
    }
}

/// The ledger's storage.
#[derive(Clone)]
pub(crate) struct Store {
    db: DatabaseConnection,
    vault: KeyVault,
    clock: SharedClock,
    /// [`SNAPSHOT`] with the backend's placeholders, made once: every guarded call that misses
    /// the consent cache runs it.
    snapshot_sql: String,
}

/// A subject's consent state in one statement: their entries in ledger order (only what
/// [`fold`] reads), each beside the latest restriction and identity verification, then their
/// objection rows in order (`kind` 1; [`fold_objections`] reads them). The one-row derived table
/// makes a subject without entries still answer one row (with NULL entry columns), so
/// restriction and verification are read either way. One statement instead of four because
/// every guarded call that misses the consent cache waits for it.
const SNAPSHOT: &str = "SELECT CAST(0 AS BIGINT) AS kind, c.seq AS seq, c.purpose AS purpose, \
     c.recipient AS recipient, c.granted AS granted, c.actor AS actor, \
     (SELECT r.restricted FROM restrictions r WHERE r.tenant = $1 AND r.subject_id = $2 \
      ORDER BY r.seq DESC LIMIT 1) AS restricted, \
     (SELECT v.verified_at FROM identity_verifications v WHERE v.tenant = $3 \
      AND v.subject_id = $4 ORDER BY v.seq DESC LIMIT 1) AS verified_at \
     FROM (SELECT 1 AS one) o LEFT JOIN consent_entries c ON c.tenant = $5 AND c.subject_id = $6 \
     UNION ALL \
     SELECT CAST(1 AS BIGINT), x.seq, x.purpose, NULL, x.objected, NULL, NULL, NULL \
     FROM objections x WHERE x.tenant = $7 AND x.subject_id = $8 \
     ORDER BY kind, seq";

/// One row of [`SNAPSHOT`].
#[derive(FromQueryResult)]
struct SnapshotRow {
    kind: i64,
    seq: Option<i64>,
    purpose: Option<String>,
    recipient: Option<String>,
    granted: Option<bool>,
    actor: Option<String>,
    restricted: Option<bool>,
    verified_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

/// The encrypted part of an entry.
#[derive(Serialize, Deserialize, Default)]
struct Sealed {
    evidence_reference: String,
    guardian: Option<SealedGuardian>,
}

#[derive(Serialize, Deserialize)]
struct SealedGuardian {
    id: String,
    name: String,
    relationship: String,
}

fn sealed_field(entry_id: &str) -> String {
    // Bound to the entry, so a sealed value cannot be moved to another row unnoticed.
    format!("consent_entries.sealed/{entry_id}")
}

impl Store {
    fn new(db: DatabaseConnection, keyring: Arc<Keyring>, clock: SharedClock) -> Self {
        let vault = KeyVault::new(db.clone(), keyring, VAULT_SCOPE, clock.clone());
        let snapshot_sql = placeholders(db.get_database_backend(), SNAPSHOT);
        Self {
            db,
            vault,
            clock,
            snapshot_sql,
        }
    }

    /// The subject's current consents, restriction and last identity verification ([`SNAPSHOT`]).
    async fn current(&self, tenant: &Tenant, subject: &str) -> Result<ConsentSnapshot> {
        let (t, s) = (Value::from(tenant.as_str()), Value::from(subject));
        let rows = SnapshotRow::find_by_statement(Statement::from_sql_and_values(
            self.db.get_database_backend(),
            self.snapshot_sql.as_str(),
            [
                t.clone(),
                s.clone(),
                t.clone(),
                s.clone(),
                t.clone(),
                s.clone(),
                t,
                s,
            ],
        ))
        .all(&self.db)
        .await?;
        let (entries, objections) = rows.split_at(rows.partition_point(|r| r.kind == 0));
        let mut snapshot = fold(entries.iter().filter_map(|r| {
            Some(Entry {
                seq: r.seq?,
                purpose: r.purpose.as_deref()?,
                recipient: r.recipient.as_deref()?,
                granted: r.granted?,
                actor: r.actor.as_deref()?,
            })
        }));
        if let Some(first) = entries.first() {
            snapshot.restricted = first.restricted.unwrap_or(false);
            snapshot.identity_verified_at = first.verified_at;
        }
        fold_objections(
            &mut snapshot,
            objections
                .iter()
                .filter_map(|r| Some((r.purpose.as_deref()?, r.granted?))),
        );
        Ok(snapshot)
    }

    /// [`Store::current`] of each of `subjects`, in their order, in three statements (entries,
    /// restrictions, verifications of them all) rather than one per subject.
    async fn current_many(
        &self,
        tenant: &Tenant,
        subjects: &[String],
    ) -> Result<Vec<ConsentSnapshot>> {
        let entries = tenant
            .find::<entity::Entity>()
            .filter(entity::Column::SubjectId.is_in(subjects))
            .order_by_asc(entity::Column::Seq)
            .all(&self.db)
            .await?;
        let restrictions = tenant
            .find::<entity::restriction::Entity>()
            .filter(entity::restriction::Column::SubjectId.is_in(subjects))
            .order_by_asc(entity::restriction::Column::Seq)
            .all(&self.db)
            .await?;
        let verifications = tenant
            .find::<entity::verification::Entity>()
            .filter(entity::verification::Column::SubjectId.is_in(subjects))
            .order_by_asc(entity::verification::Column::Seq)
            .all(&self.db)
            .await?;
        let objections = tenant
            .find::<entity::objection::Entity>()
            .filter(entity::objection::Column::SubjectId.is_in(subjects))
            .order_by_asc(entity::objection::Column::Seq)
            .all(&self.db)
            .await?;
        let mut objected: HashMap<&str, Vec<(&str, bool)>> = HashMap::new();
        for o in &objections {
            objected
                .entry(&o.subject_id)
                .or_default()
                .push((&o.purpose, o.objected));
        }
        let mut by_subject: HashMap<&str, Vec<&entity::Model>> = HashMap::new();
        for row in &entries {
            by_subject.entry(&row.subject_id).or_default().push(row);
        }
        // In ledger order, so the last one seen is the latest.
        let restricted: HashMap<&str, bool> = restrictions
            .iter()
            .map(|r| (r.subject_id.as_str(), r.restricted))
            .collect();
        let verified: HashMap<&str, DateTime<Utc>> = verifications
            .iter()
            .map(|v| (v.subject_id.as_str(), v.verified_at))
            .collect();
        Ok(subjects
            .iter()
            .map(|subject| {
                let rows = by_subject.get(subject.as_str()).map(Vec::as_slice);
                let mut snapshot =
                    fold(rows.unwrap_or_default().iter().map(|row| Entry::from(*row)));
                snapshot.restricted = restricted.get(subject.as_str()).copied().unwrap_or(false);
                snapshot.identity_verified_at = verified.get(subject.as_str()).copied();
                if let Some(rows) = objected.get(subject.as_str()) {
                    fold_objections(&mut snapshot, rows.iter().copied());
                }
                snapshot
            })
            .collect())
    }

    async fn rows(&self, tenant: &Tenant, subject: &str) -> Result<Vec<entity::Model>> {
        Ok(tenant
            .find::<entity::Entity>()
            .filter(entity::Column::SubjectId.eq(subject))
            .order_by_asc(entity::Column::Seq)
            .all(&self.db)
            .await?)
    }

    /// Whether the ledger holds any entry for the subject (one row read, not the history).
    async fn has_entries(&self, tenant: &Tenant, subject: &str) -> Result<bool> {
        Ok(tenant
            .find::<entity::Entity>()
            .filter(entity::Column::SubjectId.eq(subject))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// The subject's data key, or `None` once their data was erased (or nothing was sealed).
    async fn key(&self, tenant: &str, subject: &str) -> Result<Option<SubjectKey>> {
        match self.vault.get(tenant, subject).await {
            Ok(key) => Ok(Some(key)),
            Err(StoreError::Erased | StoreError::KeyNotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the subject's data key was shredded (the subject erased).
    async fn erased(&self, tenant: &str, subject: &str) -> Result<bool> {
        match self.vault.get(tenant, subject).await {
            Err(StoreError::Erased) => Ok(true),
            Ok(_) | Err(StoreError::KeyNotFound) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the subject's latest restriction entry restricts processing.
    async fn restricted(&self, tenant: &Tenant, subject: &str) -> Result<Option<bool>> {
        Ok(tenant
            .find::<entity::restriction::Entity>()
            .filter(entity::restriction::Column::SubjectId.eq(subject))
            .order_by_desc(entity::restriction::Column::Seq)
            .one(&self.db)
            .await?
            .map(|row| row.restricted))
    }

    /// The purposes the subject objects to now, and whether any objection row exists at all.
    async fn objections(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        tenant: &Tenant,
        subject: &str,
    ) -> Result<(ConsentSnapshot, bool)> {
        let rows = tenant
            .find::<entity::objection::Entity>()
            .filter(entity::objection::Column::SubjectId.eq(subject))
            .order_by_asc(entity::objection::Column::Seq)
            .all(db)
            .await?;
        let mut snapshot = ConsentSnapshot::default();
        fold_objections(
            &mut snapshot,
            rows.iter().map(|r| (r.purpose.as_str(), r.objected)),
        );
        Ok((snapshot, !rows.is_empty()))
    }

    /// When a requester's identity was last verified for the subject.
    async fn identity_verified_at(
        &self,
        tenant: &Tenant,
        subject: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        Ok(tenant
            .find::<entity::verification::Entity>()
            .filter(entity::verification::Column::SubjectId.eq(subject))
            .order_by_desc(entity::verification::Column::Seq)
            .one(&self.db)
            .await?
            .map(|row| row.verified_at))
    }

    /// Subjects whose latest `marketing` entry for the purpose as a whole is a withdrawal, whose
    /// processing is restricted, or who objected to marketing.
    async fn left_out_of_marketing(&self, tenant: &Tenant) -> Result<HashSet<String>> {
        let tenant = tenant.as_str();
        #[derive(FromQueryResult)]
        struct Latest {
            subject_id: String,
            granted: bool,
            last: i64,
        }
        let backend = self.db.get_database_backend();
        let marketing = Purpose::Marketing.short_name();
        let rows = Latest::find_by_statement(Statement::from_sql_and_values(
            backend,
            placeholders(
                backend,
                "SELECT subject_id, granted, MAX(seq) AS last FROM consent_entries \
                 WHERE tenant = $1 AND purpose = $2 AND recipient = '' AND subject_id IN \
                 (SELECT subject_id FROM consent_entries WHERE tenant = $3 AND purpose = $4 \
                  AND recipient = '' AND granted = $5) \
                 GROUP BY subject_id, granted",
            ),
            [
                Value::from(tenant),
                Value::from(marketing),
                Value::from(tenant),
                Value::from(marketing),
                Value::from(false),
            ],
        ))
        .all(&self.db)
        .await?;
        let mut latest: HashMap<String, (i64, i64)> = HashMap::new();
        for r in rows {
            let entry = latest.entry(r.subject_id).or_default();
            if r.granted {
                entry.0 = r.last;
            } else {
                entry.1 = r.last;
            }
        }
        let mut out: HashSet<String> = latest
            .into_iter()
            .filter(|(_, (grant, withdrawal))| withdrawal > grant)
            .map(|(s, _)| s)
            .collect();

        #[derive(FromQueryResult)]
        struct Restriction {
            subject_id: String,
            restricted: bool,
        }
        let restrictions = Restriction::find_by_statement(Statement::from_sql_and_values(
            backend,
            placeholders(
                backend,
                "SELECT subject_id, restricted FROM restrictions WHERE tenant = $1 ORDER BY seq",
            ),
            [Value::from(tenant)],
        ))
        .all(&self.db)
        .await?;
        let mut restricted: HashMap<String, bool> = HashMap::new();
        for r in restrictions {
            restricted.insert(r.subject_id, r.restricted);
        }
        out.extend(restricted.into_iter().filter(|(_, r)| *r).map(|(s, _)| s));

        // An objection to direct marketing (Art. 21(3)) leaves the subject out whatever they
        // consented to.
        let objections = Restriction::find_by_statement(Statement::from_sql_and_values(
            backend,
            placeholders(
                backend,
                "SELECT subject_id, objected AS restricted FROM objections \
                 WHERE tenant = $1 AND purpose = $2 ORDER BY seq",
            ),
            [Value::from(tenant), Value::from(marketing)],
        ))
        .all(&self.db)
        .await?;
        let mut objected: HashMap<String, bool> = HashMap::new();
        for o in objections {
            objected.insert(o.subject_id, o.restricted);
        }
        out.extend(objected.into_iter().filter(|(_, o)| *o).map(|(s, _)| s));
        Ok(out)
    }

    async fn by_idempotency_key(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<entity::Model>> {
        Ok(tenant
            .find::<entity::Entity>()
            .filter(entity::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?)
    }
}

impl Store {
    /// Appends a validated entry, or finds the one an earlier call with the same idempotency key
    /// appended (ALREADY_EXISTS if that call asked for something else). Returns the row, the
    /// subject's key (`None` once erased) and whether this call appended it. The entry's audit
    /// record (an access to `touched`) is staged through `audit` in the append's transaction.
    async fn append(
        &self,
        tenant: &Tenant,
        a: &Append,
        recorded_by: &str,
        audit: &dyn StageAudit,
        touched: CategorySet,
    ) -> Result<(entity::Model, Option<SubjectKey>, bool)> {
        if let Some(row) = self.replay(tenant, a).await? {
            return Ok(row);
        }
        let key = self
            .vault
            .get_or_create(tenant.as_str(), &a.subject)
            .await?;
        let entry_id = uuid::Uuid::now_v7().to_string();
        let sealed = Sealed {
            evidence_reference: a.evidence.evidence_reference.clone(),
            guardian: a.evidence.guardian.as_ref().map(|g| SealedGuardian {
                id: g.guardian_id.clone(),
                name: g.name.clone(),
                relationship: g.relationship.clone(),
            }),
        };
        let plaintext = to_json(&sealed)?;
        let sealed = key.seal(&sealed_field(&entry_id), &plaintext)?;
        let now = self.clock.now();
        let (idempotency_key, request_hash) = Idempotency::columns(a.idempotency.as_ref());
        let row = entity::ActiveModel {
            entry_id: Set(entry_id.clone()),
            tenant: Set(tenant.as_str().to_owned()),
            subject_id: Set(a.subject.clone()),
            purpose: Set(a.purpose.short_name().to_owned()),
            recipient: Set(a.recipient.clone()),
            granted: Set(a.granted),
            occurred_at: Set(a.occurred_at.unwrap_or(now)),
            recorded_at: Set(now),
            method: Set(method_name(a.evidence.method()).to_owned()),
            wording_version: Set(a.evidence.wording_version.clone()),
            wording_sha256: Set(a.evidence.wording_sha256.clone()),
            actor: Set(actor_name(a.evidence.actor()).to_owned()),
            sealed: Set(sealed),
            recorded_by: Set(recorded_by.to_owned()),
            idempotency_key: Set(idempotency_key),
            request_hash: Set(request_hash),
            ..Default::default()
        };
        let txn = tutela_store::begin(&self.db).await?;
        let inserted = entity::Entity::insert(row).exec_with_returning(&txn).await;
        let row = match inserted {
            Ok(row) => {
                audit.stage_in(&txn, touched).await?;
                txn.commit().await?;
                row
            }
            // A concurrent retry with the same key won the race: answer as a retry.
            Err(err) if tutela_store::is_unique_violation(&err) => {
                drop(txn);
                return self
                    .replay(tenant, a)
                    .await?
                    .ok_or_else(|| idempotency::key_taken(err));
            }
            Err(err) => return Err(err.into()),
        };
        tracing::info!(
            purpose = a.purpose.short_name(),
            granted = a.granted,
            actor = actor_name(a.evidence.actor()),
            "consent ledger entry appended"
        );
        Ok((row, Some(key), true))
    }

    /// The entry an earlier call in `tenant` appended under this append's idempotency key, when
    /// this is its retry (with the subject's key, and `false`: nothing appended); ALREADY_EXISTS
    /// when the key came with another request, a withdrawal's key reused for a grant included.
    async fn replay(
        &self,
        tenant: &Tenant,
        a: &Append,
    ) -> Result<Option<(entity::Model, Option<SubjectKey>, bool)>> {
        let Some(i) = &a.idempotency else {
            return Ok(None);
        };
        let stored = self.by_idempotency_key(tenant, i.key()).await?;
        let Some(row) = idempotency::decide(i, stored, |row| {
            (Some(rpc_of(row.granted)), row.request_hash.as_deref())
        })?
        else {
            return Ok(None);
        };
        let key = self.key(&row.tenant, &row.subject_id).await?;
        Ok(Some((row, key, false)))
    }
}

/// The RPC that appends grants, and the one that appends withdrawals: one table holds both, so a
/// stored entry's RPC is told by its `granted`.
const RECORD: &str = "RecordConsent";
const WITHDRAW: &str = "WithdrawConsent";

fn rpc_of(granted: bool) -> &'static str {
    if granted { RECORD } else { WITHDRAW }
}

/// What [`fold`] reads of a ledger entry.
struct Entry<'a> {
    seq: i64,
    purpose: &'a str,
    recipient: &'a str,
    granted: bool,
    actor: &'a str,
}

impl<'a> From<&'a entity::Model> for Entry<'a> {
    fn from(row: &'a entity::Model) -> Self {
        Self {
            seq: row.seq,
            purpose: &row.purpose,
            recipient: &row.recipient,
            granted: row.granted,
            actor: &row.actor,
        }
    }
}

/// Folds objection rows (purpose short name, objected; in ledger order) into `snapshot`: the
/// latest row of each purpose decides.
fn fold_objections<'a>(
    snapshot: &mut ConsentSnapshot,
    rows: impl IntoIterator<Item = (&'a str, bool)>,
) {
    for (purpose, objected) in rows {
        if let Some(purpose) = Purpose::from_short_name(purpose) {
            snapshot.set_objection(purpose, objected);
        }
    }
}

/// Folds entries (in ledger order) into the current state.
fn fold<'a>(rows: impl IntoIterator<Item = Entry<'a>>) -> ConsentSnapshot {
    let mut snapshot = ConsentSnapshot::default();
    for row in rows {
        // A purpose this build does not know cannot be consented to; skipping it only ever
        // withholds a grant.
        if let Some(purpose) = Purpose::from_short_name(row.purpose) {
            snapshot.apply(
                purpose,
                row.recipient,
                ConsentFact {
                    granted: row.granted,
                    entry: row.seq,
                    by_guardian: actor_of(row.actor) == ConsentActor::Guardian,
                },
            );
        }
    }
    snapshot
}

#[async_trait::async_trait]
impl ConsentSource for Store {
    async fn snapshot(&self, tenant: &Tenant, subject: &str) -> Result<ConsentSnapshot> {
        self.current(tenant, subject).await
    }

    async fn snapshots(
        &self,
        tenant: &Tenant,
        subjects: &[String],
    ) -> Result<Vec<ConsentSnapshot>> {
        let mut all = Vec::with_capacity(subjects.len());
        // Bounded so that the IN lists stay far below either backend's parameter limit.
        for chunk in subjects.chunks(500) {
            all.extend(self.current_many(tenant, chunk).await?);
        }
        Ok(all)
    }

    async fn verify_identity(&self, v: &IdentityVerification<'_>) -> Result<()> {
        // An erased subject may still ask for what a legal hold kept, so their request is
        // verified too. Their key is shredded and a new one would undo the tombstone, so the
        // reference is not kept: method, who and when are the record.
        let sealed = match self.vault.get_or_create(v.tenant.as_str(), v.subject).await {
            // Bound to the subject by the vault; one field name for every verification.
            Ok(key) => key.seal(
                "identity_verifications.sealed",
                v.evidence_reference.as_bytes(),
            )?,
            Err(StoreError::Erased) => Vec::new(),
            Err(err) => return Err(err.into()),
        };
        let now = self.clock.now();
        let txn = tutela_store::begin(&self.db).await?;
        entity::verification::ActiveModel {
            tenant: Set(v.tenant.as_str().to_owned()),
            subject_id: Set(v.subject.to_owned()),
            method: Set(v.method.short_name().to_owned()),
            sealed: Set(sealed),
            verified_by: Set(v.verified_by.to_owned()),
            verified_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        v.audit
            .stage_in(&txn, CategorySet::of(&[DataCategory::IdentityDocument]))
            .await?;
        txn.commit().await?;
        tracing::info!("identity verification recorded");
        Ok(())
    }

    async fn record_guardian_consent(&self, grant: &GuardianGrant<'_>) -> Result<()> {
        let request = RecordConsentRequest {
            subject: Some(tutela_proto::common::SubjectRef {
                subject_id: grant.subject.to_owned(),
            }),
            purpose: grant.purpose as i32,
            evidence: Some(grant.evidence.clone()),
            ..Default::default()
        };
        let append = Append {
            subject: grant.subject.to_owned(),
            purpose: grant.purpose,
            recipient: String::new(),
            granted: true,
            evidence: grant.evidence.clone(),
            occurred_at: None,
            // As RecordConsent fingerprints the same request, so a retry through either path
            // matches.
            idempotency: Idempotency::new(
                grant.idempotency_key.map(str::to_owned),
                RECORD,
                &request,
            ),
        };
        self.append(
            grant.tenant,
            &append,
            grant.recorded_by,
            grant.audit,
            append.touched(),
        )
        .await
        .map(|_| ())
    }

    async fn restrict(&self, change: &Restriction<'_>) -> Result<()> {
        let txn = tutela_store::begin(&self.db).await?;
        entity::restriction::ActiveModel {
            tenant: Set(change.tenant.as_str().to_owned()),
            subject_id: Set(change.subject.to_owned()),
            restricted: Set(change.restricted),
            reason: Set(change.reason.to_owned()),
            recorded_by: Set(change.recorded_by.to_owned()),
            recorded_at: Set(self.clock.now()),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        change.audit.stage_in(&txn, CategorySet::EMPTY).await?;
        txn.commit().await?;
        tracing::info!(restricted = change.restricted, "restriction recorded");
        Ok(())
    }

    async fn object(&self, change: &Objection<'_>) -> Result<()> {
        let txn = tutela_store::begin(&self.db).await?;
        // What already stands is not recorded again, so a retried request adds nothing.
        let (now, _) = self.objections(&txn, change.tenant, change.subject).await?;
        let at = self.clock.now();
        let mut changed = 0;
        for purpose in change.purposes {
            if now.objects_to(*purpose) == change.objected {
                continue;
            }
            entity::objection::ActiveModel {
                tenant: Set(change.tenant.as_str().to_owned()),
                subject_id: Set(change.subject.to_owned()),
                purpose: Set(purpose.short_name().to_owned()),
                objected: Set(change.objected),
                reason: Set(change.reason.to_owned()),
                recorded_by: Set(change.recorded_by.to_owned()),
                recorded_at: Set(at),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            changed += 1;
        }
        change.audit.stage_in(&txn, CategorySet::EMPTY).await?;
        txn.commit().await?;
        tracing::info!(objected = change.objected, changed, "objection recorded");
        Ok(())
    }
}

/// Who a record names as its author: the caller, or, when a service records it for the staff
/// member who handled the request (`on_behalf_of`), both of them.
fn on_behalf(call: &Authorized, on_behalf_of: &str) -> String {
    let principal = &call.principal().id;
    if on_behalf_of.is_empty() {
        principal.clone()
    } else {
        format!("{on_behalf_of} via {principal}")
    }
}

/// The gRPC service over the ledger.
#[derive(Debug, Clone)]
pub struct ConsentLedgerService {
    ledger: Arc<Store>,
    gate: Arc<ConsentGate>,
    register: Arc<Register>,
}

impl ConsentLedgerService {
    /// The service over `ledger`, whose gate it invalidates after each append so that the next
    /// call sees the new state.
    pub fn new(ledger: &Ledger, register: Arc<Register>) -> Self {
        Self {
            ledger: ledger.store.clone(),
            gate: ledger.gate.clone(),
            register,
        }
    }
}

impl Append {
    /// The categories an entry of this append holds.
    fn touched(&self) -> CategorySet {
        let mut touched = CategorySet::of(&[DataCategory::Identity, DataCategory::Communication]);
        if !self.recipient.is_empty() {
            touched = touched.union(CategorySet::of(&[DataCategory::Employment]));
        }
        touched
    }
}

/// A validated append.
#[derive(Clone)]
pub struct Append {
    /// The subject the entry is about.
    pub subject: String,
    /// What consent is given or withdrawn for.
    pub purpose: Purpose,
    /// Empty for the purpose as a whole.
    pub recipient: String,
    /// Given (true) or withdrawn.
    pub granted: bool,
    /// How it was given or withdrawn.
    pub evidence: ConsentEvidence,
    /// When, if not now.
    pub occurred_at: Option<DateTime<Utc>>,
    /// A caller's key, with the request it came with, that makes a retry append nothing.
    pub idempotency: Option<Idempotency>,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Append([redacted])")
    }
}

fn method_name(m: ConsentMethod) -> &'static str {
    match m {
        ConsentMethod::WebForm => "web_form",
        ConsentMethod::Paper => "paper",
        ConsentMethod::Email => "email",
        ConsentMethod::Verbal => "verbal",
        ConsentMethod::Unspecified => "unspecified",
    }
}

fn method_of(name: &str) -> ConsentMethod {
    match name {
        "web_form" => ConsentMethod::WebForm,
        "paper" => ConsentMethod::Paper,
        "email" => ConsentMethod::Email,
        "verbal" => ConsentMethod::Verbal,
        _ => ConsentMethod::Unspecified,
    }
}

fn actor_name(a: ConsentActor) -> &'static str {
    match a {
        ConsentActor::Subject => "subject",
        ConsentActor::Guardian => "guardian",
        ConsentActor::Unspecified => "unspecified",
    }
}

fn actor_of(name: &str) -> ConsentActor {
    match name {
        "subject" => ConsentActor::Subject,
        "guardian" => ConsentActor::Guardian,
        _ => ConsentActor::Unspecified,
    }
}

/// Parts of a RecordConsent or WithdrawConsent request, which share their shape.
struct AppendRequest<'a> {
    subject: Option<&'a tutela_proto::common::SubjectRef>,
    purpose: i32,
    recipient: &'a str,
    evidence: Option<&'a ConsentEvidence>,
    occurred_at: Option<&'a prost_types::Timestamp>,
    idempotency_key: Option<&'a tutela_proto::common::IdempotencyKey>,
    /// The idempotency of the request under a (validated) key: its fingerprint without the key.
    idempotency: Box<dyn FnOnce(Option<String>) -> Option<Idempotency> + Send + 'a>,
}

impl ConsentLedgerService {
    fn validate(
        &self,
        call: &Authorized,
        r: AppendRequest<'_>,
        granted: bool,
        now: DateTime<Utc>,
    ) -> Result<Append> {
        let mut c = Checks::new();
        let subject = c.subject(r.subject, "subject");
        let by_guardian = r
            .evidence
            .is_some_and(|e| e.actor == ConsentActor::Guardian as i32);
        let purpose = match Purpose::try_from(r.purpose) {
            Ok(Purpose::Unspecified) | Err(_) => Err(c.flag(
                "purpose",
                "required: a purpose of tutela.common.v1.Purpose",
            )),
            Ok(p) => match self.register.rule(p) {
                None => Err(c.flag(
                    "purpose",
                    "the processing register does not list this purpose",
                )),
                // A parent's or guardian's consent is what collecting a minor's data needs,
                // whatever the purpose's legal basis (E4, C5).
                Some(rule) if !rule.consent_required && !by_guardian => Err(c.flag(
                    "purpose",
                    "the processing register does not base this purpose on consent (only a guardian's consent for a minor may name it)",
                )),
                Some(_) => Ok(p),
            },
        };
        let recipient = c.optional(r.recipient, "recipient", 128);
        let evidence = parse_evidence(&mut c, call.principal(), r.evidence, "evidence");
        let occurred_at = match r.occurred_at {
            None => None,
            Some(ts) => match u32::try_from(ts.nanos)
                .ok()
                .and_then(|n| DateTime::from_timestamp(ts.seconds, n))
            {
                Some(at) if at <= now + CLOCK_SKEW => Some(at),
                Some(_) => {
                    c.fail("occurred_at", "must not be in the future");
                    None
                }
                None => {
                    c.fail("occurred_at", "not a valid timestamp");
                    None
                }
            },
        };
        let key = c.key(r.idempotency_key, "idempotency_key");
        let (subject, purpose, recipient, evidence, key) =
            c.parsed((subject, purpose, recipient, evidence, key))?;
        Ok(Append {
            subject,
            purpose,
            recipient: recipient.to_owned(),
            granted,
            evidence,
            occurred_at,
            idempotency: (r.idempotency)(key),
        })
    }

    async fn append(&self, call: &Authorized, a: Append) -> Result<ConsentEntry> {
        let access = call.subject(&a.subject).await?;
        let touched = a.touched();
        // A replay appends nothing but reads the entry back.
        access.record(touched);
        let (row, key, appended) = self
            .ledger
            .append(call.scope(), &a, &call.principal().id, &access, touched)
            .await?;
        if appended {
            // After the commit: the next call in this process sees the new state.
            self.gate.invalidate(call.scope(), &a.subject);
        }
        entry(row, key.as_ref())
    }

    /// Access to the subject a read names, with the purpose it filters by.
    async fn subject_access(
        &self,
        call: &Authorized,
        subject: Option<&tutela_proto::common::SubjectRef>,
        purpose: i32,
    ) -> Result<(tutela_policy::SubjectAccess, Option<Purpose>)> {
        let mut c = Checks::new();
        let id = c.subject(subject, "subject");
        let purpose = match Purpose::try_from(purpose) {
            Ok(Purpose::Unspecified) => None,
            Ok(p) => Some(p),
            Err(_) => {
                c.fail("purpose", "not a purpose of tutela.common.v1.Purpose");
                None
            }
        };
        let id = c.parsed(id)?;
        let access = call.subject(&id).await?;
        access.record_response();
        Ok((access, purpose))
    }
}

/// The entry as the API shows it, with the sealed part opened while the subject's key lives
/// (`key` is `None` once the subject was erased: the evidence reference and guardian are gone for
/// good, the rest of the entry stays as proof).
fn entry(row: entity::Model, key: Option<&SubjectKey>) -> Result<ConsentEntry> {
    let sealed = match key {
        Some(key) => {
            let json = key.open(&sealed_field(&row.entry_id), &row.sealed)?;
            serde_json::from_slice::<Sealed>(&json).map_err(Error::internal)?
        }
        None => Sealed::default(),
    };
    Ok(ConsentEntry {
        entry_id: row.entry_id,
        subject: Some(tutela_proto::common::SubjectRef {
            subject_id: row.subject_id,
        }),
        purpose: Purpose::from_short_name(&row.purpose).map_or(0, |p| p as i32),
        recipient: row.recipient,
        action: if row.granted {
            ConsentAction::Granted
        } else {
            ConsentAction::Withdrawn
        } as i32,
        occurred_at: Some(timestamp(row.occurred_at)),
        recorded_at: Some(timestamp(row.recorded_at)),
        evidence: Some(ConsentEvidence {
            method: method_of(&row.method) as i32,
            wording_version: row.wording_version,
            wording_sha256: row.wording_sha256,
            evidence_reference: sealed.evidence_reference,
            actor: actor_of(&row.actor) as i32,
            guardian: sealed.guardian.map(|g| Guardian {
                guardian_id: g.id,
                name: g.name,
                relationship: g.relationship,
            }),
        }),
        recorded_by: row.recorded_by,
    })
}

fn to_json(value: &Sealed) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::internal)
}

/// Record and withdraw requests have the same fields: one reading of both.
macro_rules! append_request {
    ($r:expr, $rpc:expr) => {
        AppendRequest {
            subject: $r.subject.as_ref(),
            purpose: $r.purpose,
            recipient: &$r.recipient,
            evidence: $r.evidence.as_ref(),
            occurred_at: $r.occurred_at.as_ref(),
            idempotency_key: $r.idempotency_key.as_ref(),
            idempotency: Box::new(move |key| {
                Idempotency::of_request(key, $rpc, $r, |m| m.idempotency_key = None)
            }),
        }
    };
}

impl ConsentLedgerService {
    async fn handle_append(
        &self,
        call: &Authorized,
        request: AppendRequest<'_>,
        granted: bool,
    ) -> Result<ConsentEntry> {
        let append = self.validate(call, request, granted, self.ledger.clock.now())?;
        self.append(call, append).await
    }
}

#[tonic::async_trait]
impl ConsentLedger for ConsentLedgerService {
    async fn record_consent(
        &self,
        request: Request<RecordConsentRequest>,
    ) -> std::result::Result<Response<RecordConsentResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let entry = self
            .handle_append(&call, append_request!(r, RECORD), true)
            .await?;
        Ok(Response::new(RecordConsentResponse { entry: Some(entry) }))
    }

    async fn withdraw_consent(
        &self,
        request: Request<WithdrawConsentRequest>,
    ) -> std::result::Result<Response<WithdrawConsentResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let entry = self
            .handle_append(&call, append_request!(r, WITHDRAW), false)
            .await?;
        Ok(Response::new(WithdrawConsentResponse {
            entry: Some(entry),
        }))
    }

    async fn get_consent_state(
        &self,
        request: Request<GetConsentStateRequest>,
    ) -> std::result::Result<Response<GetConsentStateResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let (access, only) = self
            .subject_access(&call, r.subject.as_ref(), r.purpose)
            .await?;
        let rows = self.ledger.rows(call.scope(), access.subject_id()).await?;
        let restricted = self
            .ledger
            .restricted(call.scope(), access.subject_id())
            .await?;
        let verified = self
            .ledger
            .identity_verified_at(call.scope(), access.subject_id())
            .await?;
        let erased = self
            .ledger
            .erased(access.tenant(), access.subject_id())
            .await?;
        let (objections, any_objection) = self
            .ledger
            .objections(&self.ledger.db, call.scope(), access.subject_id())
            .await?;
        if rows.is_empty()
            && restricted.is_none()
            && verified.is_none()
            && !any_objection
            && !erased
        {
            return Err(Error::NotFound("consent entries for the subject").into());
        }
        let snapshot = fold(rows.iter().map(Entry::from));
        let mut states = Vec::new();
        for (purpose, recipient, fact) in snapshot.facts() {
            if only.is_some_and(|p| p != purpose) {
                continue;
            }
            let Some(row) = rows.iter().find(|row| row.seq == fact.entry) else {
                continue;
            };
            states.push(ConsentState {
                purpose: purpose as i32,
                recipient: recipient.to_owned(),
                granted: fact.granted,
                entry_id: row.entry_id.clone(),
                since: Some(timestamp(row.occurred_at)),
                wording_version: row.wording_version.clone(),
                actor: actor_of(&row.actor) as i32,
            });
        }
        Ok(Response::new(GetConsentStateResponse {
            states,
            restricted: restricted.unwrap_or(false),
            identity_verified_at: verified.map(timestamp),
            subject_erased: erased,
            objected_to: objections.objections().map(|p| p as i32).collect(),
        }))
    }

    async fn record_restriction(
        &self,
        request: Request<RecordRestrictionRequest>,
    ) -> std::result::Result<Response<RecordRestrictionResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let id = c.subject(r.subject.as_ref(), "subject");
        let reason = c.required(&r.reason, "reason", 500);
        let requested_by = c.optional(&r.requested_by, "requested_by", 200);
        let (id, reason, requested_by) = c.parsed((id, reason, requested_by))?;
        let access = call.subject(&id).await?;
        access.record(CategorySet::EMPTY);
        let recorded_by = on_behalf(&call, requested_by);
        self.gate
            .restrict(&Restriction {
                tenant: call.scope(),
                subject: access.subject_id(),
                restricted: r.restricted,
                reason,
                recorded_by: &recorded_by,
                audit: &access,
            })
            .await?;
        Ok(Response::new(RecordRestrictionResponse {
            restricted: r.restricted,
            recorded_at: Some(timestamp(self.ledger.clock.now())),
        }))
    }

    async fn record_objection(
        &self,
        request: Request<RecordObjectionRequest>,
    ) -> std::result::Result<Response<RecordObjectionResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let id = c.subject(r.subject.as_ref(), "subject");
        let purposes = tutela_policy::rights::objection_purposes(
            &mut c,
            &self.register,
            &r.purposes,
            "purposes",
        );
        let reason = c.required(&r.reason, "reason", 500);
        let requested_by = c.optional(&r.requested_by, "requested_by", 200);
        let (id, purposes, reason, requested_by) =
            c.parsed((id, purposes, reason, requested_by))?;
        let access = call.subject(&id).await?;
        access.record(CategorySet::EMPTY);
        let recorded_by = on_behalf(&call, requested_by);
        self.gate
            .object(&Objection {
                tenant: call.scope(),
                subject: access.subject_id(),
                purposes: &purposes,
                objected: r.objected,
                reason,
                recorded_by: &recorded_by,
                audit: &access,
            })
            .await?;
        let (now, _) = self
            .ledger
            .objections(&self.ledger.db, call.scope(), access.subject_id())
            .await?;
        Ok(Response::new(RecordObjectionResponse {
            objected_to: now.objections().map(|p| p as i32).collect(),
            recorded_at: Some(timestamp(self.ledger.clock.now())),
        }))
    }

    async fn record_identity_verification(
        &self,
        request: Request<RecordIdentityVerificationRequest>,
    ) -> std::result::Result<Response<RecordIdentityVerificationResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let id = c.subject(r.subject.as_ref(), "subject");
        let method = tutela_policy::rights::parse_verification_method(&mut c, r.method);
        let reference = c.required(&r.evidence_reference, "evidence_reference", 200);
        let verified_by = c.optional(&r.verified_by, "verified_by", 200);
        let (id, method, reference, verified_by) =
            c.parsed((id, method, reference, verified_by))?;
        let access = call.subject(&id).await?;
        access.record(CategorySet::of(&[DataCategory::IdentityDocument]));
        let by = on_behalf(&call, verified_by);
        self.gate
            .verify_identity(&IdentityVerification {
                tenant: call.scope(),
                subject: access.subject_id(),
                method,
                evidence_reference: reference,
                verified_by: &by,
                audit: &access,
            })
            .await?;
        Ok(Response::new(RecordIdentityVerificationResponse {
            verified_at: Some(timestamp(self.ledger.clock.now())),
        }))
    }

    async fn list_consent_history(
        &self,
        request: Request<ListConsentHistoryRequest>,
    ) -> std::result::Result<Response<ListConsentHistoryResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        c.finish()?;
        let (access, only) = self
            .subject_access(&call, r.subject.as_ref(), r.purpose)
            .await?;
        access.record_response();
        let mut query = access
            .find::<entity::Entity>()
            .filter(entity::Column::Seq.gt(after))
            .order_by_asc(entity::Column::Seq)
            .limit(size + 1);
        if let Some(p) = only {
            query = query.filter(entity::Column::Purpose.eq(p.short_name()));
        }
        let mut rows = query.all(&self.ledger.db).await.map_err(Error::from)?;
        // Only an empty page needs to ask whether the subject has entries at all.
        if rows.is_empty() && after == 0 {
            let any = access
                .find::<entity::Entity>()
                .one(&self.ledger.db)
                .await
                .map_err(Error::from)?;
            tutela_policy::scope::found(any, "consent entries for the subject")?;
        }
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next = if more {
            rows.last().map(|r| page_token(r.seq)).unwrap_or_default()
        } else {
            String::new()
        };
        // One key look-up for the page: every row is the same subject's.
        let key = self
            .ledger
            .key(access.tenant(), access.subject_id())
            .await?;
        let entries = rows
            .into_iter()
            .map(|row| entry(row, key.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Response::new(ListConsentHistoryResponse {
            entries,
            page: Some(tutela_proto::common::PageResponse {
                next_page_token: next,
            }),
        }))
    }
}
