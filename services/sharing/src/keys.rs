//! Partners' pseudonym keys. Each partner has its own 32 random bytes, versioned; identifiers given
//! to the partner are HMAC-SHA256 pseudonyms under its current key, so two partners cannot join
//! their data on a learner id, and a rotation stops new deliveries from linking to old ones.
//!
//! At rest a key is sealed (AES-256-GCM) under a data key of the vault, scope
//! [`VAULT_SCOPE`], one per partner, which the key-encryption key wraps: the same protection as
//! every other secret of the suite, and a partner's keys become unreadable together if its data
//! key is ever shredded. The sealed value is bound to the partner and the version, so a key
//! copied to another partner or version does not open. No type here prints a key: their `Debug`
//! says `[redacted]`.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sea_orm::ConnectionTrait;
use sha2::Sha256;
use tutela_store::{KeyVault, Keyring, SharedClock};
use zeroize::Zeroizing;

/// The vault scope of the partners' data keys: apart from any scope holding learners' keys.
pub const VAULT_SCOPE: &str = "sharing-partners";

/// One version of a partner's pseudonym key, in memory for as long as a call needs it.
pub struct PseudonymKey {
    version: u32,
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PseudonymKey")
            .field("version", &self.version)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl PseudonymKey {
    /// The key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The partner's pseudonym of `subject_id`: lower-case hex HMAC-SHA256, stable for one key.
    pub fn pseudonym(&self, subject_id: &str) -> String {
        // HMAC takes a key of any length; 32 bytes never fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key.as_slice()) else {
            return String::new();
        };
        mac.update(subject_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Seals and opens partners' pseudonym keys through the vault.
#[derive(Clone)]
pub struct PartnerKeys {
    vault: KeyVault,
}

impl fmt::Debug for PartnerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartnerKeys").finish_non_exhaustive()
    }
}

/// The field a partner's webhook signing secret is sealed for.
const WEBHOOK_SECRET_FIELD: &str = "webhook_secret";

/// The field a key of `version` is sealed for: binds the ciphertext to its version.
fn field(version: u32) -> String {
    format!("partner_key.v{version}")
}

impl PartnerKeys {
    /// Keys over the vault of `db`.
    pub fn new(db: sea_orm::DatabaseConnection, keyring: Arc<Keyring>, clock: SharedClock) -> Self {
        Self {
            vault: KeyVault::new(db, keyring, VAULT_SCOPE, clock),
        }
    }

    /// A fresh random key of `version` for `partner_id`, sealed within `conn` (the transaction
    /// that stores it, which also makes the partner's data key on first use): the sealed bytes
    /// to store. The key itself never leaves this function.
    pub async fn new_sealed<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
        partner_id: &str,
        version: u32,
    ) -> tutela_policy::Result<Vec<u8>> {
        let raw = tutela_store::random_secret()?;
        let data_key = self
            .vault
            .get_or_create_in(conn, tenant, partner_id)
            .await?;
        Ok(data_key.seal(&field(version), raw.as_slice())?)
    }

    /// The partner's data key in the vault, which also seals what is delivered to it: a
    /// delivery's records are as unreadable as its pseudonym keys once that key is shredded.
    pub async fn data_key(
        &self,
        tenant: &str,
        partner_id: &str,
    ) -> tutela_policy::Result<tutela_store::SubjectKey> {
        Ok(self.vault.get(tenant, partner_id).await?)
    }

    /// Seals a partner's webhook signing secret within `conn` (the transaction that stores it),
    /// under the same data key as its pseudonym keys: one secret per partner, shredded with
    /// them. The field binds the ciphertext to its use, so it never opens as a pseudonym key.
    pub async fn seal_webhook_secret<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
        partner_id: &str,
        secret: &crate::webhooks::Secret,
    ) -> tutela_policy::Result<Vec<u8>> {
        let data_key = self
            .vault
            .get_or_create_in(conn, tenant, partner_id)
            .await?;
        Ok(data_key.seal(WEBHOOK_SECRET_FIELD, secret.bytes())?)
    }

    /// Opens a partner's webhook signing secret sealed as `sealed`.
    pub async fn open_webhook_secret(
        &self,
        tenant: &str,
        partner_id: &str,
        sealed: &[u8],
    ) -> tutela_policy::Result<crate::webhooks::Secret> {
        let data_key = self.vault.get(tenant, partner_id).await?;
        let raw = data_key.open(WEBHOOK_SECRET_FIELD, sealed)?;
        crate::webhooks::Secret::from_bytes(&raw)
            .map_err(|_| tutela_policy::Error::internal("a webhook secret of the wrong length"))
    }

    /// Opens the key of `version` sealed as `sealed`.
    pub async fn open(
        &self,
        tenant: &str,
        partner_id: &str,
        version: u32,
        sealed: &[u8],
    ) -> tutela_policy::Result<PseudonymKey> {
        let data_key = self.vault.get(tenant, partner_id).await?;
        let raw = data_key.open(&field(version), sealed)?;
        let key: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| tutela_policy::Error::internal("a partner key of the wrong length"))?;
        Ok(PseudonymKey {
            version,
            key: Zeroizing::new(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_prints_as_redacted_and_pseudonyms_depend_on_it() {
        let a = PseudonymKey {
            version: 1,
            key: Zeroizing::new([7u8; 32]),
        };
        let b = PseudonymKey {
            version: 2,
            key: Zeroizing::new([8u8; 32]),
        };
        let printed = format!("{a:?}");
        assert!(printed.contains("[redacted]"), "{printed}");
        assert!(!printed.contains('7'), "{printed}");
        let subject = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";
        assert_eq!(a.pseudonym(subject), a.pseudonym(subject));
        assert_ne!(a.pseudonym(subject), b.pseudonym(subject));
        assert_eq!(a.pseudonym(subject).len(), 64);
        assert!(!a.pseudonym(subject).contains(subject));
    }
}
