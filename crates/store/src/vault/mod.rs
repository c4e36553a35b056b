//! The per-subject key vault. Each data subject gets a random AES-256-GCM data key per scope (one
//! scope per service, so that services hosted together behave exactly as services deployed apart),
//! stored only wrapped by a key-encryption key (KEK) from configuration. Ciphertexts are bound to
//! scope, tenant, subject and field through associated data, so a value copied to another learner
//! or another column fails to decrypt instead of reading as someone else's data.
//!
//! Erasure destroys the wrapped key and leaves a tombstone: from then on every ciphertext of that
//! subject, in any table or backup, is unreadable, and the vault answers [`StoreError::Erased`]
//! rather than garbage or "not found".

mod entity;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, QueryFilter, TryInsertResult,
};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::clock::SharedClock;
use crate::error::{StoreError, StoreResult};

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// Key-encryption keys: the current one wraps new data keys; older ones still unwrap keys they
/// wrapped until [`KeyVault::rewrap_all`] has moved them to the current one.
pub struct Keyring {
    current: String,
    // Ciphers keyed once at load rather than per use: a bulk read unwraps a data key per
    // subject, and re-running the AES key schedule for each cost as much as the unwrap itself.
    // With aes-gcm's `zeroize` feature the expanded keys are wiped on drop.
    keys: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &ids)
            .field("keys", &"[redacted]")
            .finish()
    }
}

impl Keyring {
    /// A keyring from `(id, base64 of 32 bytes)` pairs; the first is the current key.
    pub fn from_base64<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a SecretString)>,
    ) -> StoreResult<Self> {
        let mut current = None;
        let mut map = HashMap::new();
        for (id, encoded) in keys {
            if id.is_empty() || id.len() > 64 {
                return Err(StoreError::Config(
                    "kek id must be 1 to 64 characters".into(),
                ));
            }
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.expose_secret().trim())
                    .map_err(|_| StoreError::Config(format!("kek {id:?} is not valid base64")))?,
            );
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| {
                StoreError::Config(format!("kek {id:?} must decode to exactly 32 bytes"))
            })?;
            if map.insert(id.to_owned(), cipher).is_some() {
                return Err(StoreError::Config(format!("kek {id:?} is listed twice")));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        let current =
            current.ok_or_else(|| StoreError::Config("at least one kek is required".into()))?;
        Ok(Self { current, keys: map })
    }

    /// A fresh random 32-byte key, base64-encoded, for `tutela` to put in a new configuration.
    pub fn generate_base64() -> StoreResult<SecretString> {
        let key = Key::<Aes256Gcm>::try_generate().map_err(|_| StoreError::Random)?;
        Ok(SecretString::from(
            base64::engine::general_purpose::STANDARD.encode(key.as_slice()),
        ))
    }

    fn cipher(&self, id: &str) -> StoreResult<&Aes256Gcm> {
        self.keys
            .get(id)
            .ok_or_else(|| StoreError::UnknownKek(id.to_owned()))
    }
}

/// 32 fresh random bytes from the operating system's generator (the one data keys come from),
/// for a secret the vault then seals, such as a partner's pseudonym key. Wiped on drop.
pub fn random_secret() -> StoreResult<Zeroizing<[u8; 32]>> {
    let raw = Key::<Aes256Gcm>::try_generate().map_err(|_| StoreError::Random)?;
    Ok(Zeroizing::new(<[u8; 32]>::from(raw)))
}

/// A decrypted text field; bytes that are not UTF-8 count as a failed decryption.
fn text(bytes: Zeroizing<Vec<u8>>) -> StoreResult<String> {
    std::str::from_utf8(&bytes)
        .map(str::to_owned)
        .map_err(|_| StoreError::Decrypt)
}

/// The associated data of `field` of a subject's data.
fn field_aad(scope: &str, tenant: &str, subject: &str, field: &str) -> Vec<u8> {
    binding(b"tutela/field/v1", &[scope, tenant, subject, field])
}

/// Associated data binding a ciphertext to where it belongs. Length prefixes keep
/// ("ab","c") and ("a","bc") apart.
fn binding(label: &[u8], parts: &[&str]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(label);
    for part in parts {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> StoreResult<Vec<u8>> {
    let nonce = Nonce::try_generate().map_err(|_| StoreError::Random)?;
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| StoreError::Decrypt)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(nonce.as_slice());
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], ciphertext: &[u8]) -> StoreResult<Zeroizing<Vec<u8>>> {
    if ciphertext.len() < 1 + NONCE_LEN || ciphertext[0] != FORMAT_V1 {
        return Err(StoreError::Decrypt);
    }
    let nonce = Nonce::try_from(&ciphertext[1..1 + NONCE_LEN]).map_err(|_| StoreError::Decrypt)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &ciphertext[1 + NONCE_LEN..],
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| StoreError::Decrypt)
}

/// The table of wrapped data keys, with columns `scope`, `tenant`, `subject_id`, `kek_id` and
/// `wrapped_key` (NULL once shredded), for joins in bulk reads.
pub const KEYS_TABLE: &str = "tutela_subject_keys";

/// The vault of one scope (service) over one database.
#[derive(Clone)]
pub struct KeyVault {
    db: DatabaseConnection,
    keyring: Arc<Keyring>,
    scope: &'static str,
    clock: SharedClock,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVault")
            .field("scope", &self.scope)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl KeyVault {
    /// A vault for `scope` (the owning service's name).
    pub fn new(
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        scope: &'static str,
        clock: SharedClock,
    ) -> Self {
        Self {
            db,
            keyring,
            scope,
            clock,
        }
    }

    fn wrap_aad(&self, tenant: &str, subject: &str) -> Vec<u8> {
        binding(b"tutela/dek/v1", &[self.scope, tenant, subject])
    }

    /// The data key wrapped under `kek_id` for `subject`, as a cipher.
    fn unwrap_cipher(
        &self,
        tenant: &str,
        subject: &str,
        kek_id: &str,
        wrapped: &[u8],
    ) -> StoreResult<Aes256Gcm> {
        let kek = self.keyring.cipher(kek_id)?;
        let raw = open_with(kek, &self.wrap_aad(tenant, subject), wrapped)?;
        Aes256Gcm::new_from_slice(&raw).map_err(|_| StoreError::Decrypt)
    }

    fn unwrap(&self, row: entity::Model) -> StoreResult<SubjectKey> {
        let wrapped = row.wrapped_key.ok_or(StoreError::Erased)?;
        Ok(SubjectKey {
            cipher: self.unwrap_cipher(&row.tenant, &row.subject_id, &row.kek_id, &wrapped)?,
            handle: row.seq,
            scope: self.scope,
            tenant: row.tenant,
            subject: row.subject_id,
        })
    }

    async fn row<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
        subject: &str,
    ) -> StoreResult<Option<entity::Model>> {
        Ok(entity::Entity::find_by_id((
            self.scope.to_owned(),
            tenant.to_owned(),
            subject.to_owned(),
        ))
        .one(conn)
        .await?)
    }

    /// A new random data key for `subject`, wrapped under the current KEK, as the row to insert
    /// and the cipher it holds.
    fn new_key(
        &self,
        tenant: &str,
        subject: &str,
    ) -> StoreResult<(entity::ActiveModel, Aes256Gcm)> {
        let raw = Key::<Aes256Gcm>::try_generate().map_err(|_| StoreError::Random)?;
        let raw = Zeroizing::new(<[u8; 32]>::from(raw));
        let kek_id = self.keyring.current.clone();
        let wrapped = seal_with(
            self.keyring.cipher(&kek_id)?,
            &self.wrap_aad(tenant, subject),
            raw.as_slice(),
        )?;
        let cipher = Aes256Gcm::new_from_slice(raw.as_slice()).map_err(|_| StoreError::Decrypt)?;
        let row = entity::ActiveModel {
            scope: Set(self.scope.to_owned()),
            tenant: Set(tenant.to_owned()),
            subject_id: Set(subject.to_owned()),
            seq: NotSet,
            kek_id: Set(kek_id),
            wrapped_key: Set(Some(wrapped)),
            created_at: Set(self.clock.now()),
            shredded_at: Set(None),
        };
        Ok((row, cipher))
    }

    /// Inserts `row` unless the subject has a key row (or a tombstone) already: whoever inserts
    /// first wins, the others insert nothing.
    fn insert_unless_present(row: entity::ActiveModel) -> sea_orm::TryInsert<entity::ActiveModel> {
        entity::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    entity::Column::Scope,
                    entity::Column::Tenant,
                    entity::Column::SubjectId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .try_insert()
    }

    /// The subject's data key, created on first use. Concurrent first uses agree on one key.
    /// Fails with [`StoreError::Erased`] for a subject whose key was shredded.
    pub async fn get_or_create(&self, tenant: &str, subject: &str) -> StoreResult<SubjectKey> {
        if let Some(row) = self.row(&self.db, tenant, subject).await? {
            return self.unwrap(row);
        }
        let (row, _) = self.new_key(tenant, subject)?;
        // Whoever inserts first wins; everyone then reads the winner's key.
        Self::insert_unless_present(row)
            .exec_without_returning(&self.db)
            .await?;
        self.get(tenant, subject).await
    }

    /// [`KeyVault::get_or_create`] within `conn`, the transaction of the write that first needs
    /// the key, so that the key row commits with the data it seals (or not at all) at no
    /// statement of its own. It tries the insert first, as a write that creates its subject
    /// expects to find no key: one statement then, two when the subject already has a key or a
    /// tombstone ([`StoreError::Erased`], as from `get_or_create`).
    pub async fn get_or_create_in<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
        subject: &str,
    ) -> StoreResult<SubjectKey> {
        let (row, cipher) = self.new_key(tenant, subject)?;
        match Self::insert_unless_present(row)
            .exec_with_returning(conn)
            .await
        {
            Ok(TryInsertResult::Inserted(row)) => Ok(SubjectKey {
                cipher,
                handle: row.seq,
                scope: self.scope,
                tenant: row.tenant,
                subject: row.subject_id,
            }),
            Err(err) if !matches!(err, sea_orm::DbErr::RecordNotFound(_)) => Err(err.into()),
            // Nothing inserted: on SQLite sea-orm reports the empty RETURNING as a record not
            // found rather than as a conflict.
            _ => self.unwrap(
                self.row(conn, tenant, subject)
                    .await?
                    .ok_or(StoreError::KeyNotFound)?,
            ),
        }
    }

    /// New data keys for many subjects at once (a bulk import), inserted in batches: one
    /// statement per batch instead of two queries per subject. Fails, inserting nothing of the
    /// failing batch, if any of them already has a key or a tombstone.
    pub async fn create_many(
        &self,
        tenant: &str,
        subjects: &[String],
    ) -> StoreResult<Vec<SubjectKey>> {
        // Seven columns a row keeps a batch well under SQLite's limit of bound parameters.
        const BATCH: usize = 1000;
        let kek_id = self.keyring.current.clone();
        let kek = self.keyring.cipher(&kek_id)?;
        let now = self.clock.now();
        let mut keys = Vec::with_capacity(subjects.len());
        for chunk in subjects.chunks(BATCH) {
            let mut rows = Vec::with_capacity(chunk.len());
            let mut raws = Vec::with_capacity(chunk.len());
            for subject in chunk {
                let raw = Key::<Aes256Gcm>::try_generate().map_err(|_| StoreError::Random)?;
                let raw = Zeroizing::new(<[u8; 32]>::from(raw));
                let wrapped = seal_with(kek, &self.wrap_aad(tenant, subject), raw.as_slice())?;
                rows.push(entity::ActiveModel {
                    scope: Set(self.scope.to_owned()),
                    tenant: Set(tenant.to_owned()),
                    subject_id: Set(subject.clone()),
                    seq: NotSet,
                    kek_id: Set(kek_id.clone()),
                    wrapped_key: Set(Some(wrapped)),
                    created_at: Set(now),
                    shredded_at: Set(None),
                });
                raws.push(raw);
            }
            // The numbers the database gave the batch come back with the insert.
            let mut handles: HashMap<String, i64> = entity::Entity::insert_many(rows)
                .exec_with_returning(&self.db)
                .await?
                .into_iter()
                .map(|row| (row.subject_id, row.seq))
                .collect();
            for (subject, raw) in chunk.iter().zip(raws) {
                keys.push(SubjectKey {
                    cipher: Aes256Gcm::new_from_slice(raw.as_slice())
                        .map_err(|_| StoreError::Decrypt)?,
                    handle: handles.remove(subject).ok_or(StoreError::KeyNotFound)?,
                    scope: self.scope,
                    tenant: tenant.to_owned(),
                    subject: subject.clone(),
                });
            }
        }
        Ok(keys)
    }

    /// The subject's existing data key: [`StoreError::KeyNotFound`] if none was ever made,
    /// [`StoreError::Erased`] if it was shredded.
    pub async fn get(&self, tenant: &str, subject: &str) -> StoreResult<SubjectKey> {
        let row = self
            .row(&self.db, tenant, subject)
            .await?
            .ok_or(StoreError::KeyNotFound)?;
        self.unwrap(row)
    }

    /// Opens text `field` of a subject with the key row the caller's own query read from
    /// [`KEYS_TABLE`] (joined on its `seq`, or on scope, tenant and subject), so that a bulk
    /// read, such as the audience of a send, needs no query per subject and keeps no key past
    /// the one value. [`StoreError::Erased`] for a tombstone.
    pub fn open_stored_string(
        &self,
        key: StoredKey<'_>,
        field: &str,
        ciphertext: &[u8],
    ) -> StoreResult<String> {
        let wrapped = key.wrapped_key.ok_or(StoreError::Erased)?;
        let cipher = self.unwrap_cipher(key.tenant, key.subject, key.kek_id, wrapped)?;
        text(open_with(
            &cipher,
            &field_aad(self.scope, key.tenant, key.subject, field),
            ciphertext,
        )?)
    }

    /// The subject's data key from the key row the caller's own query read from [`KEYS_TABLE`]
    /// (its `seq` as `handle`), so that a read of one subject's data fetches its rows and its key
    /// in one statement: [`StoreError::Erased`] for a tombstone. The key lives as long as the
    /// caller keeps it, which for a read is the call: nothing caches it, so a shredding is
    /// seen by the next read, in this process or another.
    pub fn stored_key(&self, key: StoredKey<'_>, handle: i64) -> StoreResult<SubjectKey> {
        let wrapped = key.wrapped_key.ok_or(StoreError::Erased)?;
        Ok(SubjectKey {
            cipher: self.unwrap_cipher(key.tenant, key.subject, key.kek_id, wrapped)?,
            handle,
            scope: self.scope,
            tenant: key.tenant.to_owned(),
            subject: key.subject.to_owned(),
        })
    }

    /// The scope (owning service) of this vault: the `scope` column of [`KEYS_TABLE`].
    pub fn scope(&self) -> &'static str {
        self.scope
    }

    /// Destroys the subject's data key (crypto-shredding) and leaves a tombstone, so that the
    /// subject cannot silently get a new key. Returns whether a live key was destroyed.
    pub async fn shred(&self, tenant: &str, subject: &str) -> StoreResult<bool> {
        let now = self.clock.now();
        let destroyed = entity::Entity::update_many()
            .col_expr(
                entity::Column::WrappedKey,
                sea_orm::sea_query::Expr::value(Option::<Vec<u8>>::None),
            )
            .col_expr(
                entity::Column::ShreddedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(entity::Column::Scope.eq(self.scope))
            .filter(entity::Column::Tenant.eq(tenant))
            .filter(entity::Column::SubjectId.eq(subject))
            .filter(entity::Column::WrappedKey.is_not_null())
            .exec(&self.db)
            .await?
            .rows_affected
            > 0;
        if !destroyed {
            let tombstone = entity::ActiveModel {
                scope: Set(self.scope.to_owned()),
                tenant: Set(tenant.to_owned()),
                subject_id: Set(subject.to_owned()),
                seq: NotSet,
                kek_id: Set(self.keyring.current.clone()),
                wrapped_key: Set(None),
                created_at: Set(now),
                shredded_at: Set(Some(now)),
            };
            Self::insert_unless_present(tombstone)
                .exec_without_returning(&self.db)
                .await?;
        }
        Ok(destroyed)
    }

    /// Re-wraps every live data key of this scope under the current KEK (after a KEK rotation), so
    /// that the old KEK can be removed from configuration. Returns how many keys moved.
    pub async fn rewrap_all(&self) -> StoreResult<u64> {
        let current = self.keyring.current.clone();
        let rows = entity::Entity::find()
            .filter(entity::Column::Scope.eq(self.scope))
            .filter(entity::Column::KekId.ne(current.as_str()))
            .filter(entity::Column::WrappedKey.is_not_null())
            .all(&self.db)
            .await?;
        let kek = self.keyring.cipher(&current)?;
        let mut moved = 0;
        for row in rows {
            let Some(wrapped) = row.wrapped_key.as_deref() else {
                continue;
            };
            let aad = self.wrap_aad(&row.tenant, &row.subject_id);
            let raw = open_with(self.keyring.cipher(&row.kek_id)?, &aad, wrapped)?;
            let rewrapped = seal_with(kek, &aad, &raw)?;
            // Only replace what we read: a concurrent shred must win.
            moved += entity::Entity::update_many()
                .col_expr(
                    entity::Column::WrappedKey,
                    sea_orm::sea_query::Expr::value(Some(rewrapped)),
                )
                .col_expr(
                    entity::Column::KekId,
                    sea_orm::sea_query::Expr::value(current.clone()),
                )
                .filter(entity::Column::Scope.eq(self.scope))
                .filter(entity::Column::Tenant.eq(row.tenant.as_str()))
                .filter(entity::Column::SubjectId.eq(row.subject_id.as_str()))
                .filter(entity::Column::KekId.eq(row.kek_id.as_str()))
                .filter(entity::Column::WrappedKey.is_not_null())
                .exec(&self.db)
                .await?
                .rows_affected;
        }
        Ok(moved)
    }
}

/// A subject's row of [`KEYS_TABLE`] as a caller's bulk query read it, for
/// [`KeyVault::open_stored_string`].
#[derive(Clone, Copy)]
pub struct StoredKey<'a> {
    /// The tenant of the subject.
    pub tenant: &'a str,
    /// The subject's id.
    pub subject: &'a str,
    /// The `kek_id` column: which KEK wrapped the key.
    pub kek_id: &'a str,
    /// The `wrapped_key` column; `None` for a tombstone.
    pub wrapped_key: Option<&'a [u8]>,
}

impl fmt::Debug for StoredKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredKey([redacted])")
    }
}

/// One subject's unwrapped data key, ready to seal and open that subject's fields. It lives only
/// in memory for the duration of a request.
pub struct SubjectKey {
    cipher: Aes256Gcm,
    handle: i64,
    scope: &'static str,
    tenant: String,
    subject: String,
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey([redacted])")
    }
}

impl SubjectKey {
    /// The key row's `seq` in [`KEYS_TABLE`]: assigned in creation order and kept for the life of
    /// the row (rewrapping and shredding included). A table that stores it beside a subject's
    /// data lets a bulk read reach the key by an integer that mostly follows its own order,
    /// instead of a look-up on (scope, tenant, subject) in random order.
    pub fn handle(&self) -> i64 {
        self.handle
    }

    fn field_aad(&self, field: &str) -> Vec<u8> {
        field_aad(self.scope, &self.tenant, &self.subject, field)
    }

    /// Encrypts `plaintext` for `field` (e.g. `learner.email`) of this subject.
    pub fn seal(&self, field: &str, plaintext: &[u8]) -> StoreResult<Vec<u8>> {
        seal_with(&self.cipher, &self.field_aad(field), plaintext)
    }

    /// Decrypts a value sealed for `field` of this subject. Another subject's or another field's
    /// ciphertext fails with [`StoreError::Decrypt`].
    pub fn open(&self, field: &str, ciphertext: &[u8]) -> StoreResult<Zeroizing<Vec<u8>>> {
        open_with(&self.cipher, &self.field_aad(field), ciphertext)
    }

    /// [`Self::open`] for text fields.
    pub fn open_string(&self, field: &str, ciphertext: &[u8]) -> StoreResult<String> {
        text(self.open(field, ciphertext)?)
    }
}
