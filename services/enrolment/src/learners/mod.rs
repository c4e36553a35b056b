//! Learners: `tutela.enrolment.v1.LearnerService` and the storage behind it.
//!
//! A profile is stored as one sealed part per data category (the profile message with only that
//! category's fields, encoded, sealed under the learner's data key with the category in the
//! associated data). So a read opens only the categories the caller may read, a write touches
//! only the categories it changes, and erasure (shredding the key) leaves nothing readable. The
//! `learners` row holds no personal value: the id and keyed blind indexes of the email and family
//! name for exact look-ups.

pub mod entity;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Set,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tutela_policy::audit::AuditKeys;
use tutela_policy::consent::ConsentNeed;
use tutela_policy::consent::check_evidence;
use tutela_policy::idempotency::{self as keys, Idempotency};
use tutela_policy::scope::{Tenant, found};
use tutela_policy::validate::{Checks, page_token, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Register, Result, SubjectAccess, fields};
use tutela_proto::common::{DataCategory, PageResponse};
use tutela_proto::consent::ConsentActor;
use tutela_proto::enrolment::learner_service_server::LearnerService as LearnerApi;
use tutela_proto::enrolment::{
    ConsentCheck, CreateLearnerRequest, CreateLearnerResponse, GetLearnerRequest,
    GetLearnerResponse, Learner, LearnerChange, LearnerChangeKind, LearnerProfile,
    ListLearnerChangesRequest, ListLearnerChangesResponse, ListLearnersRequest,
    ListLearnersResponse, RecordKind, StreamLearnersRequest, UpdateLearnerRequest,
    UpdateLearnerResponse,
};
use tutela_store::vault::KEYS_TABLE;
use tutela_store::{KeyVault, Keyring, SharedClock, StoredKey, SubjectKey};

use crate::SERVICE;
use entity::{change, idempotency, learner, part};

/// The profile message, whose annotations drive sealing, minimisation and scans.
const PROFILE: &str = "tutela.enrolment.v1.LearnerProfile";
const CREATE: &str = "CreateLearner";
const UPDATE: &str = "UpdateLearner";

/// The sealed field name of a category's part: bound into the ciphertext, so a part cannot be
/// moved to another category (or learner: the vault binds the subject too) unnoticed.
/// The row of a learner's part not stored before: one data category, sealed.
fn new_part(
    tenant: &str,
    learner_id: &str,
    category: DataCategory,
    sealed: Vec<u8>,
    now: chrono::DateTime<chrono::Utc>,
) -> part::ActiveModel {
    part::ActiveModel {
        tenant: Set(tenant.to_owned()),
        learner_id: Set(learner_id.to_owned()),
        category: Set(category.short_name().to_owned()),
        sealed: Set(sealed),
        updated_at: Set(now),
        ..Default::default()
    }
}

fn part_field(category: DataCategory) -> String {
    format!("learner_data/{}", category.short_name())
}

fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn normalise_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Learner storage, shared by the gRPC service and the rights provider.
#[derive(Clone)]
pub struct Learners {
    db: DatabaseConnection,
    vault: KeyVault,
    keys: AuditKeys,
    clock: SharedClock,
}

impl std::fmt::Debug for Learners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learners")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl Learners {
    /// Learners over `db` (migrated with [`crate::EnrolmentMigrator`]); `keys` key the blind
    /// indexes and the audit pseudonym in exports.
    pub fn new(
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        keys: AuditKeys,
        clock: SharedClock,
    ) -> Self {
        let vault = KeyVault::new(db.clone(), keyring, SERVICE, clock.clone());
        Self {
            db,
            vault,
            keys,
            clock,
        }
    }

    /// The time now, by the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The audit pseudonym of a learner, for exports (the dpo pulls the access history by it).
    pub fn pseudonym(&self, access: &SubjectAccess) -> String {
        self.keys.pseudonym(access.tenant(), access.subject_id())
    }

    fn email_index(&self, tenant: &str, email: &str) -> Option<String> {
        let email = normalise_email(email);
        (!email.is_empty()).then(|| self.keys.blind_index(tenant, "learner.email", &email))
    }

    fn family_name_index(&self, tenant: &str, name: &str) -> Option<String> {
        let name = normalise_name(name);
        (!name.is_empty()).then(|| self.keys.blind_index(tenant, "learner.family_name", &name))
    }

    /// The learner's row, or NOT_FOUND.
    pub(crate) async fn row(&self, access: &SubjectAccess) -> Result<learner::Model> {
        found(
            access.find::<learner::Entity>().one(&self.db).await?,
            "learner",
        )
    }

    /// Whether the learner exists in the caller's tenant.
    pub async fn exists(&self, access: &SubjectAccess) -> Result<bool> {
        Ok(access
            .find::<learner::Entity>()
            .one(&self.db)
            .await?
            .is_some())
    }

    /// The categories of the learner's profile that hold data.
    pub async fn held(&self, access: &SubjectAccess) -> Result<CategorySet> {
        let parts = access
            .find::<part::Entity>()
            .select_only()
            .column(part::Column::Category)
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        Ok(parts
            .iter()
            .filter_map(|c| DataCategory::from_short_name(c))
            .collect())
    }

    pub(crate) async fn key(&self, tenant: &str, learner_id: &str) -> Result<SubjectKey> {
        Ok(self.vault.get(tenant, learner_id).await?)
    }

    /// The learner's data key, created on first use (sealing other records of theirs).
    pub(crate) async fn key_for_writing(
        &self,
        tenant: &str,
        learner_id: &str,
    ) -> Result<SubjectKey> {
        Ok(self.vault.get_or_create(tenant, learner_id).await?)
    }

    /// `parts` (category, sealed) of one learner, opened and merged; and which categories held
    /// data.
    fn open_parts<'a>(
        key: &SubjectKey,
        parts: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(LearnerProfile, CategorySet)> {
        let mut profile = LearnerProfile::default();
        let mut held = CategorySet::EMPTY;
        for (category, sealed) in parts {
            let Some(category) = DataCategory::from_short_name(category) else {
                continue;
            };
            let bytes = key.open(&part_field(category), sealed)?;
            profile.merge(bytes.as_slice()).map_err(Error::internal)?;
            held.insert(category);
        }
        Ok((profile, held))
    }

    /// The learner with the profile's `categories` (the ones the caller may read), recording the
    /// access to those that held data. One statement reads the learner's row, those parts and
    /// the learner's key row: on SQLite every statement is a round trip to the driver's thread,
    /// which cost more than the rest of the call, and the key read with the parts cannot be
    /// older than they are (an erasure is seen by the next read).
    pub async fn learner(
        &self,
        access: &SubjectAccess,
        categories: CategorySet,
    ) -> Result<Learner> {
        let keys = Alias::new(KEYS_TABLE);
        let key_column = |name: &str| Expr::col((keys.clone(), Alias::new(name)));
        let mut select = access
            .find::<learner::Entity>()
            .select_only()
            .column(learner::Column::LearnerId)
            .column(learner::Column::CreatedAt)
            .column(learner::Column::UpdatedAt)
            .column(part::Column::Category)
            .column(part::Column::Sealed)
            .expr_as(key_column("seq"), "key_seq")
            .expr_as(key_column("kek_id"), "kek_id")
            .expr_as(key_column("wrapped_key"), "wrapped_key");
        let same_learner = |tenant: Expr, id: Expr| {
            tenant
                .equals((learner::Entity, learner::Column::Tenant))
                .and(id.equals((learner::Entity, learner::Column::LearnerId)))
        };
        QueryTrait::query(&mut select)
            .join(
                JoinType::LeftJoin,
                part::Entity,
                same_learner(
                    Expr::col((part::Entity, part::Column::Tenant)),
                    Expr::col((part::Entity, part::Column::LearnerId)),
                )
                .and(Expr::col((part::Entity, part::Column::Category)).is_in(categories.names())),
            )
            .join(
                JoinType::LeftJoin,
                keys.clone(),
                Expr::col((keys.clone(), Alias::new("scope")))
                    .eq(self.vault.scope())
                    .and(same_learner(key_column("tenant"), key_column("subject_id"))),
            );
        let rows = select.into_model::<LearnerRead>().all(&self.db).await?;
        let first = found(rows.first(), "learner")?;
        let parts = rows
            .iter()
            .filter_map(|r| Some((r.category.as_deref()?, r.sealed.as_deref()?)));
        let (profile, held) = if parts.clone().next().is_none() {
            (LearnerProfile::default(), CategorySet::EMPTY)
        } else {
            let key = match (&first.kek_id, first.key_seq) {
                (Some(kek_id), Some(seq)) => self.vault.stored_key(
                    StoredKey {
                        tenant: access.tenant(),
                        subject: access.subject_id(),
                        kek_id,
                        wrapped_key: first.wrapped_key.as_deref(),
                    },
                    seq,
                )?,
                // As the vault answers a subject without a key row.
                _ => return Err(tutela_store::StoreError::KeyNotFound.into()),
            };
            Self::open_parts(&key, parts)?
        };
        access.record(held);
        Ok(Learner {
            learner_id: first.learner_id.clone(),
            profile: Some(profile),
            created_at: Some(timestamp(first.created_at)),
            updated_at: Some(timestamp(first.updated_at)),
        })
    }

    /// Deletes the learner's rows and destroys their data key; returns how many rows went. The
    /// erasure's audit record commits with the deletion.
    pub async fn erase(&self, access: &SubjectAccess) -> Result<u64> {
        let held = self.held(access).await?;
        self.erase_learner(
            access.call().scope(),
            access.subject_id(),
            Some((access, held)),
        )
        .await
    }

    /// [`Learners::erase`]; the retention sweeper, which acts for the organisation on rows it
    /// found due rather than for a caller, has no call to audit (`None`).
    pub(crate) async fn erase_learner(
        &self,
        tenant: &Tenant,
        learner_id: &str,
        audit: Option<(&SubjectAccess, CategorySet)>,
    ) -> Result<u64> {
        let txn = tutela_store::begin(&self.db).await?;
        if let Some((access, held)) = audit {
            access.record_in(&txn, held).await?;
        }
        let mut erased = 0;
        erased += tenant
            .delete_subject::<part::Entity>(learner_id)
            .exec(&txn)
            .await?
            .rows_affected;
        erased += tenant
            .delete_subject::<idempotency::Entity>(learner_id)
            .exec(&txn)
            .await?
            .rows_affected;
        erased += tenant
            .delete_subject::<learner::Entity>(learner_id)
            .exec(&txn)
            .await?
            .rows_affected;
        if erased > 0 {
            record_change(
                &txn,
                tenant.as_str(),
                learner_id,
                CHANGE_ERASED,
                "",
                self.clock.now(),
            )
            .await?;
        }
        txn.commit().await?;
        // After the rows: a crash in between leaves ciphertext without a key, never a key
        // without its rows' erasure recorded.
        self.vault.shred(tenant.as_str(), learner_id).await?;
        tutela_store::purge_freed_pages(&self.db).await?;
        Ok(erased)
    }

    /// The learner id a replayed write stands for; ALREADY_EXISTS when the key was used for
    /// another request.
    async fn replay(
        &self,
        call: &Authorized,
        idempotency: Option<&Idempotency>,
    ) -> Result<Option<String>> {
        let row = keys::replay::<idempotency::Entity>(call, &self.db, idempotency).await?;
        Ok(row.map(|row| row.learner_id))
    }

    fn idempotency_row(
        tenant: &str,
        idempotency: &Idempotency,
        learner_id: &str,
        now: DateTime<Utc>,
    ) -> idempotency::ActiveModel {
        idempotency::ActiveModel {
            tenant: Set(tenant.to_owned()),
            key: Set(idempotency.key().to_owned()),
            rpc: Set(idempotency.rpc().to_owned()),
            request_hash: Set(idempotency.fingerprint().to_owned()),
            learner_id: Set(learner_id.to_owned()),
            created_at: Set(now),
            ..Default::default()
        }
    }

    /// Stores a new learner with `profile`'s parts (of `categories`), with its audit record.
    /// One transaction of five statements: the audit record, the learner's data key, their row,
    /// their parts in one multi-row insert, and the idempotency key if any. The key commits with
    /// the data it seals, so a failed create leaves no key behind.
    async fn insert(
        &self,
        access: &SubjectAccess,
        profile: &LearnerProfile,
        dynamic: &DynamicMessage,
        categories: CategorySet,
        idempotency: Option<&Idempotency>,
    ) -> Result<Learner> {
        let tenant = access.tenant();
        let id = access.subject_id();
        let now = self.clock.now();
        let txn = tutela_store::begin(&self.db).await?;
        // The first statement a write: on SQLite the transaction then holds the write lock.
        access.record_in(&txn, categories).await?;
        let key = self.vault.get_or_create_in(&txn, tenant, id).await?;
        learner::Entity::insert(learner::ActiveModel {
            tenant: Set(tenant.to_owned()),
            learner_id: Set(id.to_owned()),
            email_index: Set(self.email_index(tenant, &profile.email)),
            family_name_index: Set(self.family_name_index(tenant, &profile.family_name)),
            created_at: Set(now),
            updated_at: Set(now),
            created_by: Set(access.call().principal().id.clone()),
            ..Default::default()
        })
        .exec_without_returning(&txn)
        .await?;
        let parts = fields::split(dynamic)
            .into_iter()
            .map(|(category, bytes)| {
                let sealed = key.seal(&part_field(category), &bytes)?;
                Ok(new_part(tenant, id, category, sealed, now))
            })
            .collect::<Result<Vec<_>>>()?;
        if !parts.is_empty() {
            part::Entity::insert_many(parts)
                .exec_without_returning(&txn)
                .await?;
        }
        if let Some(idempotency) = idempotency {
            Self::idempotency_row(tenant, idempotency, id, now)
                .insert(&txn)
                .await
                .map_err(keys::key_taken)?;
        }
        txn.commit().await?;
        Ok(Learner {
            learner_id: id.to_owned(),
            profile: Some(profile.clone()),
            created_at: Some(timestamp(now)),
            updated_at: Some(timestamp(now)),
        })
    }

    /// Writes the `masked` fields of `written` into the learner's parts, with the audit record.
    async fn update(
        &self,
        access: &SubjectAccess,
        written: &DynamicMessage,
        masked: &[(prost_reflect::FieldDescriptor, String, DataCategory)],
        idempotency: Option<&Idempotency>,
    ) -> Result<()> {
        let tenant = access.tenant();
        let id = access.subject_id();
        let row = self.row(access).await?;
        let now = self.clock.now();
        let key = self.vault.get_or_create(tenant, id).await?;
        let descriptor = fields::descriptor(PROFILE)?;
        let txn = tutela_store::begin(&self.db).await?;
        // The first statement a write: on SQLite the transaction then holds the write lock.
        access
            .record_in(&txn, masked.iter().map(|(_, _, c)| *c).collect())
            .await?;
        let mut categories: Vec<DataCategory> = masked.iter().map(|(_, _, c)| *c).collect();
        categories.sort_by_key(|c| *c as i32);
        categories.dedup();
        for category in categories {
            let existing = access
                .find::<part::Entity>()
                .filter(part::Column::Category.eq(category.short_name()))
                .one(&txn)
                .await?;
            let mut message = match &existing {
                Some(p) => {
                    let bytes = key.open(&part_field(category), &p.sealed)?;
                    DynamicMessage::decode(descriptor.clone(), bytes.as_slice())
                        .map_err(Error::internal)?
                }
                None => DynamicMessage::new(descriptor.clone()),
            };
            for (field, _, _) in masked.iter().filter(|(_, _, c)| *c == category) {
                fields::copy_field(written, &mut message, field);
            }
            let bytes = message.encode_to_vec();
            match (existing, bytes.is_empty()) {
                (Some(p), true) => {
                    part::Entity::delete_by_id(p.seq).exec(&txn).await?;
                }
                (Some(p), false) => {
                    let mut p: part::ActiveModel = p.into();
                    p.sealed = Set(key.seal(&part_field(category), &bytes)?);
                    p.updated_at = Set(now);
                    p.update(&txn).await?;
                }
                (None, true) => {}
                (None, false) => {
                    new_part(
                        tenant,
                        id,
                        category,
                        key.seal(&part_field(category), &bytes)?,
                        now,
                    )
                    .insert(&txn)
                    .await?;
                }
            }
        }
        let mut row: learner::ActiveModel = row.into();
        for (field, _, _) in masked {
            let text = written
                .get_field(field)
                .as_str()
                .map(str::to_owned)
                .unwrap_or_default();
            match field.name() {
                "email" => row.email_index = Set(self.email_index(tenant, &text)),
                "family_name" => row.family_name_index = Set(self.family_name_index(tenant, &text)),
                _ => {}
            }
        }
        row.updated_at = Set(now);
        row.update(&txn).await?;
        if let Some(idempotency) = idempotency {
            Self::idempotency_row(tenant, idempotency, id, now)
                .insert(&txn)
                .await
                .map_err(keys::key_taken)?;
        }
        let mut names: Vec<&str> = masked.iter().map(|(field, _, _)| field.name()).collect();
        names.sort_unstable();
        record_change(&txn, tenant, id, CHANGE_RECTIFIED, &names.join(","), now).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// How long the change feed keeps a change: long enough for a follower that was down for weeks
/// to catch up, short enough that the feed is not a second history of every learner.
pub const CHANGES_KEPT_DAYS: i64 = 90;

impl Learners {
    /// Removes the changes older than [`CHANGES_KEPT_DAYS`] at `now` (with `dry_run`, counts
    /// them); returns how many.
    pub async fn sweep_changes(&self, now: DateTime<Utc>, dry_run: bool) -> Result<u64> {
        let cutoff = now - chrono::Duration::days(CHANGES_KEPT_DAYS);
        let old = change::Column::ChangedAt.lt(cutoff);
        if dry_run {
            use sea_orm::PaginatorTrait;
            return Ok(change::Entity::find().filter(old).count(&self.db).await?);
        }
        Ok(change::Entity::delete_many()
            .filter(old)
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

/// A change's kind in the feed: a rectification.
pub(crate) const CHANGE_RECTIFIED: &str = "rectified";
/// A change's kind in the feed: an erasure.
pub(crate) const CHANGE_ERASED: &str = "erased";

/// Adds a change to the feed within `txn`, the change's own transaction, as its last write, so
/// that followers hear of exactly the changes that committed.
async fn record_change(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &str,
    learner_id: &str,
    kind: &str,
    fields: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    use sea_orm::ConnectionTrait;
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        // Writers of the feed take turns until they commit: PostgreSQL numbers a row when it is
        // inserted, not when it commits, and without the turns a row numbered lower could
        // commit after a follower had read past it. SQLite has one writer at a time anyway.
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7130541)")
            .await?;
    }
    change::ActiveModel {
        tenant: Set(tenant.to_owned()),
        learner_id: Set(learner_id.to_owned()),
        kind: Set(kind.to_owned()),
        fields: Set(fields.to_owned()),
        changed_at: Set(now),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// One row of [`Learners::learner`]'s read: the learner, one of their parts of the categories
/// read (none if they hold none) and their key row (none if they have none). No Debug: it holds
/// ciphertext and a wrapped key.
#[derive(FromQueryResult)]
struct LearnerRead {
    learner_id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    category: Option<String>,
    sealed: Option<Vec<u8>>,
    key_seq: Option<i64>,
    kek_id: Option<String>,
    wrapped_key: Option<Vec<u8>>,
}

fn to_learner(row: &learner::Model, profile: LearnerProfile) -> Learner {
    Learner {
        learner_id: row.learner_id.clone(),
        profile: Some(profile),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn trim_all(profile: &mut LearnerProfile) {
    for text in [
        &mut profile.given_name,
        &mut profile.family_name,
        &mut profile.email,
        &mut profile.phone,
        &mut profile.address,
        &mut profile.postcode,
        &mut profile.date_of_birth,
        &mut profile.gender,
        &mut profile.country,
        &mut profile.organisation,
        &mut profile.photo_id_reference,
        &mut profile.ethnicity,
        &mut profile.support_needed,
    ] {
        let trimmed = text.trim();
        if trimmed.len() != text.len() {
            *text = trimmed.to_owned();
        }
    }
    for list in [
        &mut profile.previous_qualifications,
        &mut profile.disabilities,
    ] {
        list.iter_mut().for_each(|t| *t = t.trim().to_owned());
        list.retain(|t| !t.is_empty());
    }
}

/// Checks the fields `wanted` selects; descriptions never repeat the value.
fn check_profile(
    c: &mut Checks,
    p: &LearnerProfile,
    wanted: &dyn Fn(&str) -> bool,
    today: NaiveDate,
) {
    let texts: [(&str, &str, usize); 11] = [
        ("given_name", &p.given_name, 200),
        ("family_name", &p.family_name, 200),
        ("email", &p.email, 254),
        ("phone", &p.phone, 40),
        ("address", &p.address, 500),
        ("postcode", &p.postcode, 16),
        ("gender", &p.gender, 64),
        ("organisation", &p.organisation, 200),
        ("photo_id_reference", &p.photo_id_reference, 100),
        ("ethnicity", &p.ethnicity, 100),
        ("support_needed", &p.support_needed, 2000),
    ];
    for (name, value, max) in texts {
        if wanted(name) {
            c.optional_text(value, &format!("profile.{name}"), max);
        }
    }
    for (name, list, max_items) in [
        ("previous_qualifications", &p.previous_qualifications, 50),
        ("disabilities", &p.disabilities, 20),
    ] {
        if !wanted(name) {
            continue;
        }
        c.ensure(
            list.len() <= max_items,
            &format!("profile.{name}"),
            &format!("at most {max_items} entries"),
        );
        for (i, item) in list.iter().enumerate() {
            c.optional_text(item, &format!("profile.{name}[{i}]"), 200);
        }
    }
    if wanted("email") {
        c.email(&p.email, "profile.email");
    }
    if wanted("phone") && !p.phone.is_empty() {
        let ok = p
            .phone
            .chars()
            .all(|ch| ch.is_ascii_digit() || " +-().".contains(ch))
            && p.phone.chars().filter(char::is_ascii_digit).count() >= 5;
        c.ensure(
            ok,
            "profile.phone",
            "digits, spaces and + - ( ) . only, at least 5 digits",
        );
    }
    if wanted("date_of_birth") {
        c.date_of_birth(&p.date_of_birth, "profile.date_of_birth", today);
    }
    if wanted("country") {
        c.country(&p.country, "profile.country");
    }
}

/// A checked correction of a learner's profile (see [`LearnerService::parse_rectification`]).
/// Hand-written Debug: the values are personal data.
pub(crate) struct Rectification {
    profile: LearnerProfile,
    written: DynamicMessage,
    masked: Vec<(prost_reflect::FieldDescriptor, String, DataCategory)>,
}

impl std::fmt::Debug for Rectification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rectification")
            .field("fields", &self.names())
            .field("values", &"[redacted]")
            .finish()
    }
}

impl Rectification {
    /// The names of the fields corrected.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.masked.iter().map(|(f, _, _)| f.name()).collect()
    }
}

/// `tutela.enrolment.v1.LearnerService`.
#[derive(Debug, Clone)]
pub struct LearnerService {
    learners: Learners,
    register: Arc<Register>,
}

impl LearnerService {
    /// The service over `learners`, applying the age of consent of `register`.
    pub fn new(learners: Learners, register: Arc<Register>) -> Self {
        Self { learners, register }
    }

    /// The subject access of a learner named in a request.
    async fn access(
        call: &Authorized,
        learner: Option<&tutela_proto::common::SubjectRef>,
    ) -> Result<SubjectAccess> {
        let mut c = Checks::new();
        let id = c.subject(learner, "learner");
        call.subject(&c.parsed(id)?).await
    }

    /// E3 and E5 on what a write carries: no prohibited identifier anywhere, no category the
    /// purpose may not touch.
    /// Whether the learner is a minor on the day of the call: `Some(Some(age of consent))` for
    /// a minor, `Some(None)` for an adult, `None` when the profile gives no date of birth.
    fn minor(&self, profile: &LearnerProfile) -> Option<Option<u8>> {
        let born = NaiveDate::parse_from_str(&profile.date_of_birth, "%Y-%m-%d").ok()?;
        let today = self.learners.clock.now().date_naive();
        Some(self.register.minors.minor(born, &profile.country, today))
    }

    /// Fails with GUARDIAN_CONSENT_REQUIRED when the learner's profile after an update (the
    /// `updated` date of birth and country where `names` masks them, the stored ones otherwise)
    /// makes them a minor and the ledger holds no guardian's consent for the call's purpose.
    async fn require_guardian_if_minor(
        &self,
        call: &Authorized,
        access: &SubjectAccess,
        names: &[&str],
        updated: LearnerProfile,
    ) -> Result<()> {
        let stored = self
            .learners
            .learner(access, CategorySet::of(&[DataCategory::Demographic]))
            .await?
            .profile
            .unwrap_or_default();
        let pick = |name: &str, new: String, old: String| {
            if names.contains(&name) { new } else { old }
        };
        let after = LearnerProfile {
            date_of_birth: pick("date_of_birth", updated.date_of_birth, stored.date_of_birth),
            country: pick("country", updated.country, stored.country),
            ..Default::default()
        };
        match self.minor(&after) {
            Some(Some(age_of_consent)) if !access.guardian_consents().await? => {
                Err(Error::GuardianConsentRequired {
                    purpose: call.purpose().short_name(),
                    age_of_consent,
                })
            }
            _ => Ok(()),
        }
    }

    // Prohibited identifiers never get here: the guard scans every request before its handler.
    /// A correction of the profile as UpdateLearner and the rights path (RectifySubject) ask
    /// for it: the fields of `profile` named by `paths`, trimmed and checked as CreateLearner
    /// checks them (violations named `profile.<field>` and `update_mask`, beside what `c` found
    /// already), and only categories the call's purpose may touch.
    pub(crate) fn parse_rectification(
        &self,
        call: &Authorized,
        profile: Option<&LearnerProfile>,
        paths: &[String],
        mut c: Checks,
    ) -> Result<Rectification> {
        let descriptor = fields::descriptor(PROFILE)?;
        let masked = fields::masked(&descriptor, paths, "profile", "update_mask")?;
        let mut profile = profile.cloned().unwrap_or_default();
        trim_all(&mut profile);
        let names: Vec<&str> = masked.iter().map(|(f, _, _)| f.name()).collect();
        check_profile(
            &mut c,
            &profile,
            &|name| names.contains(&name),
            self.learners.clock.now().date_naive(),
        );
        c.finish()?;
        let whole = fields::to_dynamic(&profile, PROFILE)?;
        let mut written = DynamicMessage::new(descriptor);
        for (field, _, _) in &masked {
            fields::copy_field(&whole, &mut written, field);
        }
        self.admit(call, masked.iter().map(|(_, path, c)| (path.as_str(), *c)))?;
        Ok(Rectification {
            profile,
            written,
            masked,
        })
    }

    /// Writes `r` to the learner `access` names, once per idempotency key: the change feed then
    /// names the fields (never their values) for the sharing service to tell recipients.
    pub(crate) async fn rectify(
        &self,
        call: &Authorized,
        access: &SubjectAccess,
        r: &Rectification,
        idempotency: Option<&Idempotency>,
    ) -> Result<()> {
        match self.learners.replay(call, idempotency).await? {
            Some(id) if id != access.subject_id() => Err(Error::AlreadyExists("idempotency key")),
            Some(_) => Ok(()),
            None => {
                let names = r.names();
                // E4 holds for rectification too: a date of birth (or country) that makes the
                // learner a minor needs a guardian's consent in the ledger.
                if names.contains(&"date_of_birth") || names.contains(&"country") {
                    let born_or_moved = LearnerProfile {
                        date_of_birth: r.profile.date_of_birth.clone(),
                        country: r.profile.country.clone(),
                        ..Default::default()
                    };
                    self.require_guardian_if_minor(call, access, &names, born_or_moved)
                        .await?;
                }
                self.learners
                    .update(access, &r.written, &r.masked, idempotency)
                    .await?;
                tracing::info!(fields = r.masked.len(), "learner rectified");
                Ok(())
            }
        }
    }

    fn admit<'a>(
        &self,
        call: &Authorized,
        carried: impl IntoIterator<Item = (&'a str, DataCategory)>,
    ) -> Result<()> {
        fields::minimise(carried, call.rule().categories, call.purpose().short_name())
    }
}

#[tonic::async_trait]
impl LearnerApi for LearnerService {
    type StreamLearnersStream = stream::LearnerStream;

    async fn list_learner_changes(
        &self,
        request: Request<ListLearnerChangesRequest>,
    ) -> std::result::Result<Response<ListLearnerChangesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let after = c.resume_after(r.cursor.trim(), "cursor");
        c.ensure(r.page_size <= 1000, "page_size", "at most 1000");
        c.finish()?;
        let size = match r.page_size {
            0 => 500,
            n => u64::from(n),
        };
        let rows = call
            .find::<change::Entity>()
            .filter(change::Column::Seq.gt(after))
            .order_by_asc(change::Column::Seq)
            .limit(size)
            .all(&self.learners.db)
            .await
            .map_err(Error::from)?;
        let next_cursor = page_token(rows.last().map_or(after, |row| row.seq));
        let changes = rows
            .into_iter()
            .map(|row| LearnerChange {
                kind: match row.kind.as_str() {
                    CHANGE_RECTIFIED => LearnerChangeKind::Rectified,
                    CHANGE_ERASED => LearnerChangeKind::Erased,
                    _ => LearnerChangeKind::Unspecified,
                } as i32,
                fields: row
                    .fields
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect(),
                changed_at: Some(timestamp(row.changed_at)),
                learner_id: row.learner_id,
            })
            .collect();
        Ok(Response::new(ListLearnerChangesResponse {
            changes,
            next_cursor,
        }))
    }

    async fn stream_learners(
        &self,
        request: Request<StreamLearnersRequest>,
    ) -> std::result::Result<Response<Self::StreamLearnersStream>, Status> {
        /// Most learners one request may name.
        const MAX_IDS: usize = 10_000;
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        c.ensure(
            r.learner_ids.len() <= MAX_IDS,
            "learner_ids",
            "at most 10000 learners",
        );
        let mut ids = Vec::with_capacity(r.learner_ids.len().min(MAX_IDS));
        let mut seen = std::collections::HashSet::with_capacity(ids.capacity());
        for (i, id) in r.learner_ids.iter().enumerate().take(MAX_IDS) {
            if let Ok(id) = c.uuid(id, &format!("learner_ids[{i}]"))
                && seen.insert(id.clone())
            {
                ids.push(id);
            }
        }
        let after = c.resume_after(r.resume_token.trim(), "resume_token");
        c.ensure(
            r.resume_token.trim().is_empty() || r.learner_ids.is_empty(),
            "resume_token",
            "not allowed with learner_ids",
        );
        c.ensure(r.batch_size <= 1000, "batch_size", "at most 1000");
        let recipient = c.optional(r.recipient.trim(), "recipient", 64);
        let paths = r
            .read_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default();
        let mask = if paths.is_empty() {
            None
        } else {
            match fields::masked(&fields::descriptor(PROFILE)?, paths, "profile", "read_mask") {
                Ok(masked) => Some(masked),
                Err(Error::InvalidArgument(violations)) => {
                    for v in violations {
                        c.fail(v.field, v.description);
                    }
                    None
                }
                Err(err) => return Err(err.into()),
            }
        };
        let recipient = recipient.ok().filter(|r| !r.is_empty()).map(str::to_owned);
        let mut records = Vec::with_capacity(r.records.len());
        for (i, kind) in r.records.iter().enumerate() {
            match RecordKind::try_from(*kind) {
                Ok(kind) if kind != RecordKind::Unspecified => {
                    if records.contains(&kind) {
                        c.fail(format!("records[{i}]"), "each kind once");
                    }
                    records.push(kind);
                }
                _ => c.fail(format!("records[{i}]"), "not a record kind"),
            }
        }
        let course_id = match r.course_id.trim() {
            "" => None,
            id => c.uuid(id, "course_id").ok(),
        };
        c.ensure(
            r.course_id.trim().is_empty() || !r.records.is_empty(),
            "course_id",
            "needs records: it chooses which records to return",
        );
        let consent = match ConsentCheck::try_from(r.consent_check) {
            Ok(ConsentCheck::Unspecified) => ConsentNeed::Register,
            Ok(ConsentCheck::Always) => ConsentNeed::Always,
            Ok(ConsentCheck::NamedRecipient) => {
                c.ensure(
                    !r.recipient.trim().is_empty(),
                    "recipient",
                    "required with CONSENT_CHECK_NAMED_RECIPIENT",
                );
                ConsentNeed::OfRecipient
            }
            Err(_) => {
                c.fail("consent_check", "not a consent check");
                ConsentNeed::Register
            }
        };
        c.finish()?;
        let categories = match &mask {
            Some(mask) => mask.iter().map(|(_, _, category)| *category).collect(),
            None => call.readable(),
        }
        .intersect(call.readable());
        let plan = stream::Plan {
            ids: (!r.learner_ids.is_empty()).then_some(ids),
            after,
            batch: match r.batch_size {
                0 => 500,
                n => n as usize,
            },
            recipient,
            mask: mask.map(|m| m.into_iter().map(|(field, _, _)| field).collect()),
            categories,
            records,
            course_id,
            consent,
        };
        Ok(Response::new(stream::start(
            self.learners.clone(),
            call,
            plan,
        )))
    }

    async fn create_learner(
        &self,
        request: Request<CreateLearnerRequest>,
    ) -> std::result::Result<Response<CreateLearnerResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut profile = r.profile.clone().unwrap_or_default();
        trim_all(&mut profile);
        let mut c = Checks::new();
        let key = c.idempotency_key(r.idempotency_key.as_ref(), "idempotency_key");
        check_profile(
            &mut c,
            &profile,
            &|_| true,
            self.learners.clock.now().date_naive(),
        );
        c.ensure(
            !(profile.given_name.is_empty() && profile.family_name.is_empty()),
            "profile.family_name",
            "required: a learner needs a given or a family name",
        );
        let chosen_id = match r.learner_id.trim() {
            "" => None,
            id => match uuid::Uuid::parse_str(id) {
                Ok(id) => Some(id.to_string()),
                Err(_) => {
                    c.fail("learner_id", "must be a UUID, or empty");
                    None
                }
            },
        };
        let minor = self.minor(&profile);
        let guardian_consent = r.guardian_consent.as_ref().and_then(|e| {
            let evidence = check_evidence(&mut c, call.principal(), Some(e), "guardian_consent")?;
            if evidence.actor != ConsentActor::Guardian as i32 {
                c.fail("guardian_consent.actor", "must be CONSENT_ACTOR_GUARDIAN");
                return None;
            }
            if minor == Some(None) {
                c.fail(
                    "guardian_consent",
                    "only for a learner under the age of consent; this learner is not",
                );
                return None;
            }
            Some(evidence)
        });
        c.finish()?;
        let dynamic = fields::to_dynamic(&profile, PROFILE)?;
        let carried = fields::carried(&dynamic, "profile");
        self.admit(&call, carried.iter().map(|(p, c)| (p.as_str(), *c)))?;
        // The request in one spelling (trimmed, the id normalised), so a retry written
        // differently is still a retry.
        let idempotency = Idempotency::new(
            key,
            CREATE,
            &CreateLearnerRequest {
                profile: Some(profile.clone()),
                idempotency_key: None,
                learner_id: chosen_id.clone().unwrap_or_default(),
                guardian_consent: guardian_consent.clone(),
            },
        );
        let readable = call.readable();
        if let Some(id) = self.learners.replay(&call, idempotency.as_ref()).await? {
            let access = call.subject(&id).await?;
            let learner = self.learners.learner(&access, readable).await?;
            return Ok(Response::new(CreateLearnerResponse {
                learner: Some(learner),
            }));
        }
        let chose = chosen_id.is_some();
        let access = match &chosen_id {
            Some(id) => call.subject(id).await?,
            // A fresh id, which no consent or restriction in the ledger can name yet.
            None => call.new_subject()?,
        };
        // Only a caller-chosen id can name an existing learner; checked before a guardian's
        // consent is appended for it. A fresh random id spares the query.
        if chose && self.learners.exists(&access).await? {
            return Err(Error::AlreadyExists("learner").into());
        }
        // E4: the guardian's consent is in the ledger before the minor's data is stored.
        if let Some(evidence) = &guardian_consent {
            let ledger_key = idempotency.as_ref().map(|i| {
                format!(
                    "guardian-{}",
                    &hex::encode(Sha256::digest(i.key().as_bytes()))[..32]
                )
            });
            access
                .record_guardian_consent(evidence, ledger_key.as_deref())
                .await?;
        } else if let Some(Some(age_of_consent)) = minor
            && !access.guardian_consents().await?
        {
            return Err(Error::GuardianConsentRequired {
                purpose: call.purpose().short_name(),
                age_of_consent,
            }
            .into());
        }
        let learner = match self
            .learners
            .insert(
                &access,
                &profile,
                &dynamic,
                carried.iter().map(|(_, c)| *c).collect(),
                idempotency.as_ref(),
            )
            .await
        {
            Ok(learner) => learner,
            // Two concurrent calls with one key: the loser answers as a retry would.
            Err(Error::AlreadyExists(_)) if idempotency.is_some() => {
                let Some(id) = self.learners.replay(&call, idempotency.as_ref()).await? else {
                    return Err(Error::AlreadyExists("learner").into());
                };
                let access = call.subject(&id).await?;
                let learner = self.learners.learner(&access, readable).await?;
                return Ok(Response::new(CreateLearnerResponse {
                    learner: Some(learner),
                }));
            }
            Err(err) => return Err(err.into()),
        };
        tracing::info!(categories = carried.len(), "learner created");
        Ok(Response::new(CreateLearnerResponse {
            learner: Some(learner),
        }))
    }

    async fn get_learner(
        &self,
        request: Request<GetLearnerRequest>,
    ) -> std::result::Result<Response<GetLearnerResponse>, Status> {
        let call = Authorized::of(&request)?;
        let access = Self::access(&call, request.get_ref().learner.as_ref()).await?;
        let learner = self.learners.learner(&access, call.readable()).await?;
        Ok(Response::new(GetLearnerResponse {
            learner: Some(learner),
        }))
    }

    async fn update_learner(
        &self,
        request: Request<UpdateLearnerRequest>,
    ) -> std::result::Result<Response<UpdateLearnerResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let paths = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let mut c = Checks::new();
        let key = c.idempotency_key(r.idempotency_key.as_ref(), "idempotency_key");
        let rectification = self.parse_rectification(&call, r.profile.as_ref(), &paths, c)?;
        let access = Self::access(&call, r.learner.as_ref()).await?;
        let mut canonical = r.clone();
        canonical.idempotency_key = None;
        canonical.profile = Some(rectification.profile.clone());
        let idempotency = Idempotency::new(key, UPDATE, &canonical);
        self.rectify(&call, &access, &rectification, idempotency.as_ref())
            .await?;
        let learner = self.learners.learner(&access, call.readable()).await?;
        Ok(Response::new(UpdateLearnerResponse {
            learner: Some(learner),
        }))
    }

    async fn list_learners(
        &self,
        request: Request<ListLearnersRequest>,
    ) -> std::result::Result<Response<ListLearnersResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        c.optional_text(&r.email, "email", 254);
        c.optional_text(&r.family_name, "family_name", 200);
        c.finish()?;
        let tenant = call.tenant();
        let mut query = call
            .find::<learner::Entity>()
            .filter(learner::Column::Seq.gt(after))
            .order_by_asc(learner::Column::Seq)
            .limit(size + 1);
        if let Some(index) = self.learners.email_index(tenant, &r.email) {
            query = query.filter(learner::Column::EmailIndex.eq(index));
        }
        if let Some(index) = self.learners.family_name_index(tenant, &r.family_name) {
            query = query.filter(learner::Column::FamilyNameIndex.eq(index));
        }
        let mut rows = query.all(&self.learners.db).await.map_err(Error::from)?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next_page_token = if more {
            rows.last().map(|r| page_token(r.seq)).unwrap_or_default()
        } else {
            String::new()
        };

        // One query for every listed learner's readable parts.
        let readable = call.readable();
        let ids: Vec<&str> = rows.iter().map(|r| r.learner_id.as_str()).collect();
        let mut parts: HashMap<String, Vec<part::Model>> = HashMap::new();
        if !ids.is_empty() {
            for p in call
                .find::<part::Entity>()
                .filter(part::Column::LearnerId.is_in(ids))
                .filter(part::Column::Category.is_in(readable.names()))
                .all(&self.learners.db)
                .await
                .map_err(Error::from)?
            {
                parts.entry(p.learner_id.clone()).or_default().push(p);
            }
        }
        let mut learners = Vec::with_capacity(rows.len());
        for row in &rows {
            let access = match call.subject(&row.learner_id).await {
                Ok(access) => access,
                // Listing for a purpose that needs consent shows only learners who gave it.
                Err(err) if err.leaves_subject_out() => continue,
                Err(err) => return Err(err.into()),
            };
            let (profile, held) = match parts.get(&row.learner_id) {
                Some(parts) => {
                    let key = self.learners.key(tenant, &row.learner_id).await;
                    match key {
                        Ok(key) => Learners::open_parts(
                            &key,
                            parts
                                .iter()
                                .map(|p| (p.category.as_str(), p.sealed.as_slice())),
                        )?,
                        Err(Error::FailedPrecondition { .. }) => {
                            (LearnerProfile::default(), CategorySet::EMPTY)
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                None => (LearnerProfile::default(), CategorySet::EMPTY),
            };
            access.record(held);
            learners.push(to_learner(row, profile));
        }
        Ok(Response::new(ListLearnersResponse {
            learners,
            page: Some(PageResponse { next_page_token }),
        }))
    }
}
