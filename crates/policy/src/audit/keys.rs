//! The keys derived from the configured audit secret, and what they make: the chain's links,
//! pseudonyms, blind indexes and capability-token tags. Everything keyed lives here, so that
//! no other module handles key bytes.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::record::AuditRecord;

type HmacSha256 = Hmac<Sha256>;

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

    pub(super) fn link(&self, prev_hash: &str, seq: i64, record: &AuditRecord) -> String {
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
