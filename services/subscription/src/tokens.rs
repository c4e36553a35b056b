//! The signed tokens a person uses without any other credential: the confirmation token of a
//! double opt-in and the unsubscribe token of every subscription. A token is the subscription id
//! (and, for confirmation, an expiry) with a truncated HMAC-SHA256 tag under a key derived from
//! the deployment's audit secret, so every pod of every service checks it the same way and no
//! token needs storing. base64url without padding: safe in a URL path and a mail header.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use tutela_policy::audit::{AuditKeys, TokenSigner};
use uuid::Uuid;

/// Bytes of the tag kept in a token: 128 bits, ample against forgery.
const TAG: usize = 16;
const UNSUBSCRIBE_V1: u8 = 1;
const CONFIRM_V1: u8 = 2;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, or the tag does not match.
    Invalid,
    /// Genuine but past its expiry.
    Expired,
}

/// Signs and checks both kinds of token.
#[derive(Clone, Debug)]
pub struct Tokens {
    unsubscribe: TokenSigner,
    confirm: TokenSigner,
    codes: TokenSigner,
}

impl Tokens {
    /// Tokens keyed from the deployment's audit keys.
    pub fn new(keys: &AuditKeys) -> Self {
        Self {
            unsubscribe: keys.token_signer("subscription/unsubscribe/v1"),
            confirm: keys.token_signer("subscription/confirm/v1"),
            codes: keys.token_signer("subscription/code/v1"),
        }
    }

    /// The unsubscribe token of a subscription. It does not expire: a List-Unsubscribe link in an
    /// old message must keep working.
    pub fn unsubscribe(&self, subscription: Uuid) -> String {
        let mut payload = [0u8; 17];
        payload[0] = UNSUBSCRIBE_V1;
        payload[1..].copy_from_slice(subscription.as_bytes());
        seal(&self.unsubscribe, &payload)
    }

    /// The subscription an unsubscribe token stands for.
    pub fn check_unsubscribe(&self, token: &str) -> Result<Uuid, TokenError> {
        let bytes = open(&self.unsubscribe, token, 17)?;
        if bytes[0] != UNSUBSCRIBE_V1 {
            return Err(TokenError::Invalid);
        }
        Uuid::from_slice(&bytes[1..17]).map_err(|_| TokenError::Invalid)
    }

    /// A confirmation token for `subscription`, valid until `expires`.
    pub fn confirmation(&self, subscription: Uuid, expires: DateTime<Utc>) -> String {
        let mut payload = [0u8; 25];
        payload[0] = CONFIRM_V1;
        payload[1..17].copy_from_slice(subscription.as_bytes());
        payload[17..].copy_from_slice(&expires.timestamp().to_be_bytes());
        seal(&self.confirm, &payload)
    }

    /// The subscription a confirmation token stands for, if it has not expired at `now`.
    pub fn check_confirmation(&self, token: &str, now: DateTime<Utc>) -> Result<Uuid, TokenError> {
        let bytes = open(&self.confirm, token, 25)?;
        if bytes[0] != CONFIRM_V1 {
            return Err(TokenError::Invalid);
        }
        let id = Uuid::from_slice(&bytes[1..17]).map_err(|_| TokenError::Invalid)?;
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&bytes[17..25]);
        if now.timestamp() > i64::from_be_bytes(expires) {
            return Err(TokenError::Expired);
        }
        Ok(id)
    }

    /// The keyed hash a confirmation code is stored as, bound to its subscription so a code
    /// hash cannot be moved to another row.
    pub fn code_hash(&self, subscription: Uuid, code: &str) -> String {
        let mut payload = Vec::with_capacity(16 + code.len());
        payload.extend_from_slice(subscription.as_bytes());
        payload.extend_from_slice(code.as_bytes());
        hex::encode(self.codes.tag(&payload))
    }
}

fn seal(signer: &TokenSigner, payload: &[u8]) -> String {
    let tag = signer.tag(payload);
    let mut token = Vec::with_capacity(payload.len() + TAG);
    token.extend_from_slice(payload);
    token.extend_from_slice(&tag[..TAG]);
    URL_SAFE_NO_PAD.encode(token)
}

fn open(signer: &TokenSigner, token: &str, len: usize) -> Result<Vec<u8>, TokenError> {
    // Bounded before decoding: the token arrives from anyone.
    if token.len() > 128 {
        return Err(TokenError::Invalid);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| TokenError::Invalid)?;
    if bytes.len() != len + TAG || !signer.verify(&bytes[..len], &bytes[len..]) {
        return Err(TokenError::Invalid);
    }
    Ok(bytes[..len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&AuditKeys::from_secret(&[7u8; 32]))
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering_and_the_other_kind() {
        let t = tokens();
        let id = Uuid::new_v4();
        let unsubscribe = t.unsubscribe(id);
        assert_eq!(t.check_unsubscribe(&unsubscribe), Ok(id));
        let now = Utc::now();
        let confirm = t.confirmation(id, now + chrono::Duration::days(7));
        assert_eq!(t.check_confirmation(&confirm, now), Ok(id));
        // One kind never passes for the other.
        assert_eq!(
            t.check_confirmation(&unsubscribe, now),
            Err(TokenError::Invalid)
        );
        assert_eq!(t.check_unsubscribe(&confirm), Err(TokenError::Invalid));
        // Any changed character fails.
        let mut forged = unsubscribe.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(t.check_unsubscribe(&forged), Err(TokenError::Invalid));
        // Another deployment's key fails.
        let other = Tokens::new(&AuditKeys::from_secret(&[8u8; 32]));
        assert_eq!(
            other.check_unsubscribe(&unsubscribe),
            Err(TokenError::Invalid)
        );
        assert_eq!(t.check_unsubscribe(""), Err(TokenError::Invalid));
        assert_eq!(
            t.check_unsubscribe(&"x".repeat(4000)),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_confirmation_token_expires() {
        let t = tokens();
        let now = Utc::now();
        let token = t.confirmation(Uuid::new_v4(), now);
        assert!(t.check_confirmation(&token, now).is_ok());
        assert_eq!(
            t.check_confirmation(&token, now + chrono::Duration::seconds(2)),
            Err(TokenError::Expired)
        );
    }
}
