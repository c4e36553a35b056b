//! Standard Webhooks signatures (the spec's `spec/standard-webhooks.md`, "Signature scheme"):
//! the signed content is `{webhook-id}.{webhook-timestamp}.{body}`, signed with HMAC-SHA256 under
//! the endpoint's secret, and sent as `webhook-signature: v1,<base64>`. The secret is shown to
//! the partner once as `whsec_<base64 of 24 to 64 random bytes>`.
//!
//! Verification is here too, for the receivers we test against and for partners who want a
//! reference: it accepts a space-separated list of signatures (the spec's zero-downtime secret
//! rotation), compares in constant time and refuses a timestamp more than five minutes away from
//! now in either direction (replays).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a serialised secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a timestamp may be from now, either way, and still verify.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The fewest and most secret bytes the spec allows.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// An endpoint's signing secret. Never printed: its `Debug` says `[redacted]`.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Why a secret or a signature did not verify. Says nothing of the secret or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The secret is not `whsec_` with base64 of 24 to 64 bytes.
    BadSecret,
    /// A header is missing or not of its format.
    MissingHeader(&'static str),
    /// The timestamp is more than [`TOLERANCE_SECS`] from now.
    OutsideTolerance,
    /// No `v1` signature in the list matches.
    NoMatch,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSecret => f.write_str("not a whsec_ secret of 24 to 64 bytes"),
            Self::MissingHeader(h) => write!(f, "missing or malformed {h} header"),
            Self::OutsideTolerance => f.write_str("timestamp outside the tolerance"),
            Self::NoMatch => f.write_str("no matching signature"),
        }
    }
}

impl std::error::Error for Refused {}

impl Secret {
    /// A fresh secret of 32 random bytes (the middle of the spec's range).
    pub fn generate() -> Result<Self, tutela_store::StoreError> {
        let raw = tutela_store::random_secret()?;
        Ok(Self(Zeroizing::new(raw.to_vec())))
    }

    /// The secret from its raw bytes (as unsealed from storage).
    pub fn from_bytes(raw: &[u8]) -> Result<Self, Refused> {
        if SECRET_BYTES.contains(&raw.len()) {
            Ok(Self(Zeroizing::new(raw.to_vec())))
        } else {
            Err(Refused::BadSecret)
        }
    }

    /// Parses `whsec_<base64>`. The bare base64 is accepted too, as the spec's libraries do.
    pub fn parse(serialised: &str) -> Result<Self, Refused> {
        let b64 = serialised.strip_prefix(SECRET_PREFIX).unwrap_or(serialised);
        let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| Refused::BadSecret)?);
        Self::from_bytes(&raw)
    }

    /// The raw bytes, to seal for storage.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`, the form the partner is given once.
    pub fn serialise(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(self.0.as_slice())
        ))
    }

    /// The value of the `webhook-signature` header for message `id` sent at `timestamp` (unix
    /// seconds) with `body`: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(mac))
    }

    /// The HMAC-SHA256 of the signed content `{id}.{timestamp}.{body}`, not yet finalised.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length: a secret of 24 to 64 bytes never fails. The fallback
        // (a key of zeros) is never reached, and would sign nothing a receiver accepts.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Verifies the three headers' values against `body` at `now` (unix seconds).
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), Refused> {
        let id = id
            .filter(|v| !v.is_empty())
            .ok_or(Refused::MissingHeader("webhook-id"))?;
        let timestamp: i64 = timestamp
            .and_then(|t| t.parse().ok())
            .ok_or(Refused::MissingHeader("webhook-timestamp"))?;
        let signatures = signatures
            .filter(|v| !v.is_empty())
            .ok_or(Refused::MissingHeader("webhook-signature"))?;
        if (now - timestamp).abs() > TOLERANCE_SECS {
            return Err(Refused::OutsideTolerance);
        }
        let mut matched = false;
        for candidate in signatures.split(' ') {
            let Some(("v1", b64)) = candidate.split_once(',') else {
                continue;
            };
            let Ok(given) = STANDARD.decode(b64) else {
                continue;
            };
            // Constant time: `verify_slice` compares without an early exit.
            matched |= self.mac(id, timestamp, body).verify_slice(&given).is_ok();
        }
        if matched {
            Ok(())
        } else {
            Err(Refused::NoMatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors of the spec's own libraries, at standard-webhooks/standard-webhooks
    // b2fa7b8719fb75d326b591077f5d1b385cfcdfae:
    // `libraries/python/tests/test_webhooks.py` (`test_sign_function`, the same vector as
    // `libraries/javascript/src/webhook.test.ts`, "sign function works") and
    // `libraries/rust/src/lib.rs` (`test_sign`).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signing_reproduces_the_spec_libraries_vectors() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        let rust = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            rust.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn verification_follows_the_spec_libraries_cases() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let body = SPEC_BODY.as_bytes();
        let ts = SPEC_TIMESTAMP.to_string();
        let now = SPEC_TIMESTAMP;
        let verify = |id: Option<&str>, t: Option<&str>, sig: Option<&str>, now: i64| {
            secret.verify(id, t, sig, body, now)
        };
        // Valid, alone and within a list with other versions and wrong signatures
        // (go `webhook_test.go`, "valid multi sig is valid").
        assert_eq!(
            verify(Some(SPEC_ID), Some(&ts), Some(SPEC_SIGNATURE), now),
            Ok(())
        );
        let list = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SPEC_SIGNATURE} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
        );
        assert_eq!(verify(Some(SPEC_ID), Some(&ts), Some(&list), now), Ok(()));
        // Missing headers, a malformed timestamp, wrong and partial signatures.
        assert_eq!(
            verify(None, Some(&ts), Some(SPEC_SIGNATURE), now),
            Err(Refused::MissingHeader("webhook-id"))
        );
        assert_eq!(
            verify(Some(SPEC_ID), None, Some(SPEC_SIGNATURE), now),
            Err(Refused::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            verify(Some(SPEC_ID), Some("hello"), Some(SPEC_SIGNATURE), now),
            Err(Refused::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            verify(Some(SPEC_ID), Some(&ts), None, now),
            Err(Refused::MissingHeader("webhook-signature"))
        );
        for wrong in [
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
            "v1,",
            "v1,g0hM9SsE",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            assert_eq!(
                verify(Some(SPEC_ID), Some(&ts), Some(wrong), now),
                Err(Refused::NoMatch),
                "{wrong}"
            );
        }
        // Another body or id does not verify.
        assert_eq!(
            secret.verify(Some(SPEC_ID), Some(&ts), Some(SPEC_SIGNATURE), b"{}", now),
            Err(Refused::NoMatch)
        );
        // Five minutes either way verify; a second more does not.
        for now in [now - TOLERANCE_SECS, now + TOLERANCE_SECS] {
            assert_eq!(
                verify(Some(SPEC_ID), Some(&ts), Some(SPEC_SIGNATURE), now),
                Ok(())
            );
        }
        for now in [now - TOLERANCE_SECS - 1, now + TOLERANCE_SECS + 1] {
            assert_eq!(
                verify(Some(SPEC_ID), Some(&ts), Some(SPEC_SIGNATURE), now),
                Err(Refused::OutsideTolerance)
            );
        }
    }

    #[test]
    fn secrets_are_24_to_64_bytes_round_trip_and_print_as_redacted() {
        assert!(matches!(Secret::parse("whsec_"), Err(Refused::BadSecret)));
        assert!(Secret::parse("whsec_not base64!").is_err());
        assert!(Secret::from_bytes(&[1; 23]).is_err());
        assert!(Secret::from_bytes(&[1; 24]).is_ok());
        assert!(Secret::from_bytes(&[1; 64]).is_ok());
        assert!(Secret::from_bytes(&[1; 65]).is_err());
        let fresh = Secret::generate().unwrap();
        let shown = fresh.serialise();
        assert!(shown.starts_with(SECRET_PREFIX));
        assert_eq!(Secret::parse(&shown).unwrap().bytes(), fresh.bytes());
        let printed = format!("{fresh:?}");
        assert_eq!(printed, "Secret([redacted])");
        assert!(!printed.contains(&shown[SECRET_PREFIX.len()..]));
    }
}
