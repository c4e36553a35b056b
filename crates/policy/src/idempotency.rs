//! Idempotent writes, one behaviour for every service: a write that carries an idempotency key
//! remembers the key with a fingerprint of its request (the SHA-256 of the request's encoding
//! without the key, and the RPC). A later call in the same tenant with the same key and the same
//! request is a retry: it gets the stored result and changes nothing. The same key with another
//! request is refused with ALREADY_EXISTS, so that a client's bug never silently returns the
//! answer to a different question.
//!
//! It lives here, beside [`Authorized`] and the one error mapping, because the look-up is
//! tenant-scoped by the call (no key of one tenant can answer another's) and its refusal is an
//! [`Error`]; the storage stays each service's own: either columns on the rows a write makes
//! (`idempotency_key`, `request_hash`) or a side table naming the RPC too. Both store the same
//! fingerprint, so rows written before this module existed replay unchanged. A write that loses
//! a race on a key's unique index ([`key_taken`]) answers as a retry by calling [`replay`] again.

use sea_orm::{ColumnTrait, ConnectionTrait, QueryFilter};
use sha2::{Digest, Sha256};

use crate::authorized::Authorized;
use crate::error::{Error, Result};
use crate::scope::TenantScoped;

/// What an idempotency key is reused for another request with: the key is spent.
const REUSED: Error = Error::AlreadyExists("idempotency key");

/// The idempotency of one write: the client's key, the RPC and the request's fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct Idempotency {
    key: String,
    rpc: &'static str,
    fingerprint: String,
}

// The fingerprint is of a request that may hold personal data: only the RPC is printed.
impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("rpc", &self.rpc)
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// With a (validated) `key`: the idempotency of the `canonical` request, which must not hold
    /// the key itself and should hold each value in one spelling (trimmed, normalised), so that
    /// a retry written differently is still a retry. `None` without a key.
    pub fn new<M: prost::Message>(
        key: Option<String>,
        rpc: &'static str,
        canonical: &M,
    ) -> Option<Self> {
        key.map(|key| Self {
            key,
            rpc,
            fingerprint: fingerprint(canonical),
        })
    }

    /// [`Idempotency::new`] of `request` as the client sent it, with the key cleared from a copy
    /// by `clear_key`.
    pub fn of_request<M: prost::Message + Clone>(
        key: Option<String>,
        rpc: &'static str,
        request: &M,
        clear_key: impl FnOnce(&mut M),
    ) -> Option<Self> {
        let key = key?;
        let mut canonical = request.clone();
        clear_key(&mut canonical);
        Self::new(Some(key), rpc, &canonical)
    }

    /// The client's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The RPC the key came with.
    pub fn rpc(&self) -> &'static str {
        self.rpc
    }

    /// The request's fingerprint, as stored beside the key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether a stored key's `rpc` (when its table records one) and `fingerprint` are this
    /// request's.
    pub fn matches(&self, rpc: Option<&str>, fingerprint: Option<&str>) -> bool {
        rpc.is_none_or(|r| r == self.rpc) && fingerprint == Some(self.fingerprint.as_str())
    }

    /// The key and fingerprint to store on the row a keyed write makes (both `None` without a
    /// key).
    pub fn columns(this: Option<&Self>) -> (Option<String>, Option<String>) {
        match this {
            Some(i) => (Some(i.key.clone()), Some(i.fingerprint.clone())),
            None => (None, None),
        }
    }
}

/// The fingerprint of an encoded request: lower-case hex SHA-256, the format every table stores.
fn fingerprint<M: prost::Message>(canonical: &M) -> String {
    hex::encode(Sha256::digest(canonical.encode_to_vec()))
}

/// A tenant-scoped table that remembers idempotency keys: either the rows a write makes, or a
/// side table of keys.
pub trait KeyTable: TenantScoped {
    /// The column holding the key.
    const KEY: Self::Column;
    /// The RPC (when the table records it) and the fingerprint stored with a row's key.
    fn stored(row: &Self::Model) -> (Option<&str>, Option<&str>);
}

/// Implements [`KeyTable`] for entity modules whose rows carry `idempotency_key` and
/// `request_hash` columns (tables written by one RPC each, so no RPC is stored).
#[macro_export]
macro_rules! idempotent_rows {
    ($($module:ident),+ $(,)?) => {
        $(impl $crate::idempotency::KeyTable for $module::Entity {
            const KEY: $module::Column = $module::Column::IdempotencyKey;
            fn stored(row: &$module::Model) -> (Option<&str>, Option<&str>) {
                (None, row.request_hash.as_deref())
            }
        })+
    };
}

/// What is stored under the key decides: nothing (`None`: do the write), this request's row
/// (`Some`: answer with it), or another request's (ALREADY_EXISTS).
pub fn decide<T>(
    idempotency: &Idempotency,
    stored: Option<T>,
    fingerprint_of: impl Fn(&T) -> (Option<&str>, Option<&str>),
) -> Result<Option<T>> {
    match stored {
        None => Ok(None),
        Some(row) => {
            let (rpc, fingerprint) = fingerprint_of(&row);
            if idempotency.matches(rpc, fingerprint) {
                Ok(Some(row))
            } else {
                Err(REUSED)
            }
        }
    }
}

/// The row of `T` an earlier call in the caller's tenant stored under this key, when this call is
/// its retry; ALREADY_EXISTS when the key came with another request; `None` without a key or
/// an earlier call.
pub async fn replay<T: KeyTable>(
    call: &Authorized,
    db: &impl ConnectionTrait,
    idempotency: Option<&Idempotency>,
) -> Result<Option<T::Model>> {
    let Some(idempotency) = idempotency else {
        return Ok(None);
    };
    let stored = call
        .find::<T>()
        .filter(T::KEY.eq(idempotency.key()))
        .one(db)
        .await?;
    decide(idempotency, stored, |row| T::stored(row))
}

/// Maps a failed insert of a keyed write: a unique violation means the key was taken meanwhile
/// (ALREADY_EXISTS), anything else is the database's error.
pub fn key_taken(err: sea_orm::DbErr) -> Error {
    if tutela_store::is_unique_violation(&err) {
        REUSED
    } else {
        err.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutela_proto::common::{IdempotencyKey, PageRequest};

    fn request(size: u32) -> PageRequest {
        PageRequest {
            page_size: size,
            page_token: String::new(),
        }
    }

    #[test]
    fn without_a_key_there_is_nothing_to_remember() {
        assert_eq!(Idempotency::new(None, "Rpc", &request(1)), None);
        assert_eq!(Idempotency::columns(None), (None, None));
    }

    #[test]
    fn the_fingerprint_is_the_stored_format_hex_sha256_of_the_encoding() {
        // What rows written before this module hold: they must keep replaying.
        let empty = Idempotency::new(Some("key-0001".into()), "Rpc", &request(0)).unwrap();
        assert_eq!(
            empty.fingerprint(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let (key, hash) = Idempotency::columns(Some(&empty));
        assert_eq!(key.as_deref(), Some("key-0001"));
        assert_eq!(hash.as_deref(), Some(empty.fingerprint()));
    }

    #[test]
    fn the_key_itself_is_not_part_of_the_fingerprint() {
        let with_key = |key: &str| tutela_proto::enrolment::CreateCourseRequest {
            idempotency_key: Some(IdempotencyKey { key: key.into() }),
            ..Default::default()
        };
        let clear = |m: &mut tutela_proto::enrolment::CreateCourseRequest| {
            m.idempotency_key = None;
        };
        let a =
            Idempotency::of_request(Some("key-aaaa".into()), "Rpc", &with_key("key-aaaa"), clear)
                .unwrap();
        let b =
            Idempotency::of_request(Some("key-bbbb".into()), "Rpc", &with_key("key-bbbb"), clear)
                .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn the_same_request_replays_and_another_is_refused() {
        let this = Idempotency::new(Some("key-0001".into()), "Create", &request(5)).unwrap();
        let other = Idempotency::new(Some("key-0001".into()), "Create", &request(6)).unwrap();
        // A stored row: the RPC its table records (here none) and its fingerprint.
        let row: (Option<&str>, String) = (None, this.fingerprint().to_owned());
        fn stored<'a>(r: &'a (Option<&'static str>, String)) -> (Option<&'a str>, Option<&'a str>) {
            (r.0, Some(r.1.as_str()))
        }
        assert_eq!(decide(&this, None, stored).unwrap(), None);
        assert_eq!(
            decide(&this, Some(row.clone()), stored).unwrap(),
            Some(row.clone())
        );
        assert!(matches!(
            decide(&other, Some(row), stored),
            Err(Error::AlreadyExists("idempotency key"))
        ));
        // A row without a fingerprint was written without a key: never this call's.
        assert!(!this.matches(None, None));
    }

    #[test]
    fn the_same_request_to_another_rpc_is_refused_where_the_rpc_is_stored() {
        let create = Idempotency::new(Some("key-0001".into()), "Create", &request(5)).unwrap();
        let update = Idempotency::new(Some("key-0001".into()), "Update", &request(5)).unwrap();
        assert!(!update.matches(Some(create.rpc()), Some(create.fingerprint())));
        assert!(create.matches(Some(create.rpc()), Some(create.fingerprint())));
    }

    #[test]
    fn debug_prints_neither_key_nor_fingerprint() {
        let i = Idempotency::new(Some("secret-key-1".into()), "Create", &request(5)).unwrap();
        let printed = format!("{i:?}");
        assert!(!printed.contains("secret-key-1"), "{printed}");
        assert!(!printed.contains(i.fingerprint()), "{printed}");
    }
}
