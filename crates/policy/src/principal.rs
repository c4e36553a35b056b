//! Who is calling: a bearer JWT, verified with a well-kept crate (jsonwebtoken) against keys from
//! configuration — an HS256 secret for development, RS256/ES256 public keys from a JWKS file in
//! production — with issuer, audience and expiry checked.

use std::fmt;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{AuthFailure, Error, Result};

/// What kind of party a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A member of the training organisation's staff.
    Staff,
    /// Another service (a training platform's back end, another tutela service).
    Service,
    /// An exam partner or funder.
    Partner,
    /// A learner acting on their own data.
    Learner,
    /// A parent or guardian acting for a learner under the age of consent.
    Guardian,
}

impl PrincipalKind {
    /// The lower-case name used in tokens, policies and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staff => "staff",
            Self::Service => "service",
            Self::Partner => "partner",
            Self::Learner => "learner",
            Self::Guardian => "guardian",
        }
    }

    /// The kind a role implies when none is given: `learner`, `guardian`, `partner` and
    /// `service` are kinds of their own; every other role is staff.
    pub fn for_role(role: &str) -> Self {
        match role {
            "learner" => Self::Learner,
            "guardian" => Self::Guardian,
            "partner" => Self::Partner,
            "service" => Self::Service,
            _ => Self::Staff,
        }
    }
}

/// The claims of a tutela access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The principal's id (for a learner: their learner id).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// The tenant (training organisation) the principal belongs to.
    pub tenant: String,
    /// The kind of principal.
    pub kind: PrincipalKind,
    /// Roles within the tenant (e.g. `registrar`, `tutor`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// For partners: the partner's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// For guardians: the learners they act for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wards: Vec<String>,
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's id (`sub`).
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The kind.
    pub kind: PrincipalKind,
    /// Roles, sorted.
    pub roles: Vec<String>,
    /// The partner id, for partners.
    pub partner: Option<String>,
    /// Learners a guardian acts for.
    pub wards: Vec<String>,
}

// A learner's principal id is their learner id: keep it out of Debug output (logs, panics).
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("id", &"[redacted]")
            .field("tenant", &self.tenant)
            .field("kind", &self.kind)
            .field("roles", &self.roles)
            .field("partner", &self.partner)
            .finish_non_exhaustive()
    }
}

impl From<Claims> for Principal {
    fn from(c: Claims) -> Self {
        let mut roles = c.roles;
        roles.sort();
        roles.dedup();
        Self {
            id: c.sub,
            tenant: c.tenant,
            kind: c.kind,
            roles,
            partner: c.partner,
            wards: c.wards,
        }
    }
}

/// Where verification keys come from.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// HS256 secret (development).
    pub hs256_secret: Option<SecretString>,
    /// JWKS document with RS256/ES256 public keys (production).
    pub jwks: Option<JwkSet>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
}

impl AuthSettings {
    /// Reads a JWKS file (`{"keys": [...]}`).
    pub fn read_jwks(path: &Path) -> std::result::Result<JwkSet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read jwks file {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("jwks file {} is not a JWK set: {e}", path.display()))
    }
}

struct VerificationKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies bearer tokens.
pub struct TokenVerifier {
    keys: Vec<VerificationKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier for `settings`; fails if no key is configured or a JWK is unusable.
    pub fn new(settings: &AuthSettings) -> std::result::Result<Self, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &settings.hs256_secret {
            if secret.expose_secret().len() < 32 {
                return Err("the HS256 secret must be at least 32 characters".into());
            }
            keys.push(VerificationKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            });
        }
        if let Some(jwks) = &settings.jwks {
            for jwk in &jwks.keys {
                let algorithm = match jwk.common.key_algorithm {
                    Some(jsonwebtoken::jwk::KeyAlgorithm::RS256) => Algorithm::RS256,
                    Some(jsonwebtoken::jwk::KeyAlgorithm::ES256) => Algorithm::ES256,
                    other => {
                        return Err(format!(
                            "jwk {:?}: alg must be RS256 or ES256, found {other:?}",
                            jwk.common.key_id
                        ));
                    }
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("jwk {:?} is unusable: {e}", jwk.common.key_id))?;
                keys.push(VerificationKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                });
            }
        }
        if keys.is_empty() {
            return Err("no token verification key is configured".into());
        }
        Ok(Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway_secs,
        })
    }

    /// The principal a bearer token proves, or why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let invalid = Error::Unauthenticated(AuthFailure::Invalid);
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid)?;
        // Only keys of the token's algorithm, and the named key when the token names one.
        let candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        let mut last = AuthFailure::Invalid;
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = self.leeway;
            validation.validate_nbf = true;
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if claims.tenant.is_empty() || claims.sub.is_empty() {
                        return Err(Error::Unauthenticated(AuthFailure::Invalid));
                    }
                    return Ok(claims.into());
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                            AuthFailure::Expired
                        }
                        _ => AuthFailure::Invalid,
                    };
                }
            }
        }
        Err(Error::Unauthenticated(last))
    }
}

/// What a development token says about its bearer.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The tenant.
    pub tenant: String,
    /// The principal id (`sub`).
    pub subject: String,
    /// The kind (default: implied by the first role).
    pub kind: Option<PrincipalKind>,
    /// Roles.
    pub roles: Vec<String>,
    /// Partner id.
    pub partner: Option<String>,
    /// Learners a guardian acts for.
    pub wards: Vec<String>,
    /// Lifetime.
    pub ttl: chrono::Duration,
}

/// Signs an HS256 token with the development secret (`tutela token issue`).
pub fn issue_hs256(
    secret: &SecretString,
    issuer: &str,
    audience: &str,
    request: &TokenRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> std::result::Result<String, String> {
    let kind = request.kind.unwrap_or_else(|| {
        request
            .roles
            .first()
            .map_or(PrincipalKind::Staff, |r| PrincipalKind::for_role(r))
    });
    let claims = Claims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        sub: request.subject.clone(),
        iat: now.timestamp(),
        exp: (now + request.ttl).timestamp(),
        tenant: request.tenant.clone(),
        kind,
        roles: request.roles.clone(),
        partner: request.partner.clone(),
        wards: request.wards.clone(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(|e| format!("cannot sign token: {e}"))
}

/// Reads the bearer token of an `authorization` header value.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(Error::Unauthenticated(AuthFailure::Missing))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated(AuthFailure::Invalid))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Error::Unauthenticated(AuthFailure::Invalid))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthenticated(AuthFailure::Invalid));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-development-secret-of-at-least-32-chars";

    fn settings() -> AuthSettings {
        AuthSettings {
            issuer: "tutela".into(),
            audience: "tutela".into(),
            hs256_secret: Some(SecretString::from(SECRET)),
            jwks: None,
            leeway_secs: 0,
        }
    }

    fn request() -> TokenRequest {
        TokenRequest {
            tenant: "acme".into(),
            subject: "staff-1".into(),
            kind: None,
            roles: vec!["registrar".into()],
            partner: None,
            wards: vec![],
            ttl: chrono::Duration::hours(1),
        }
    }

    fn token(secret: &str, iss: &str, now: chrono::DateTime<chrono::Utc>) -> String {
        issue_hs256(&SecretString::from(secret), iss, "tutela", &request(), now).unwrap()
    }

    #[test]
    fn a_token_signed_with_the_secret_proves_its_claims() {
        let verifier = TokenVerifier::new(&settings()).unwrap();
        let p = verifier
            .verify(&token(SECRET, "tutela", chrono::Utc::now()))
            .unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.kind, PrincipalKind::Staff);
        assert_eq!(p.roles, ["registrar"]);
    }

    #[test]
    fn forged_expired_foreign_and_garbage_tokens_are_refused() {
        let verifier = TokenVerifier::new(&settings()).unwrap();
        let forged = token(
            "another-secret-that-is-also-32-chars-long",
            "tutela",
            chrono::Utc::now(),
        );
        let expired = token(
            SECRET,
            "tutela",
            chrono::Utc::now() - chrono::Duration::hours(2),
        );
        let foreign = token(SECRET, "someone-else", chrono::Utc::now());
        for (t, why) in [
            (forged.as_str(), AuthFailure::Invalid),
            (expired.as_str(), AuthFailure::Expired),
            (foreign.as_str(), AuthFailure::Invalid),
            ("not.a.jwt", AuthFailure::Invalid),
            ("", AuthFailure::Invalid),
        ] {
            match verifier.verify(t) {
                Err(Error::Unauthenticated(got)) => assert_eq!(got, why, "{t}"),
                other => panic!("{t}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        // alg "none": header {"alg":"none"} with the same claims and no signature.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let good = token(SECRET, "tutela", chrono::Utc::now());
        let claims = good.split('.').nth(1).unwrap();
        let unsigned = format!("{}.{claims}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#));
        assert!(
            TokenVerifier::new(&settings())
                .unwrap()
                .verify(&unsigned)
                .is_err()
        );
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        let mut h = http::HeaderMap::new();
        assert!(matches!(
            bearer(&h),
            Err(Error::Unauthenticated(AuthFailure::Missing))
        ));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(matches!(
            bearer(&h),
            Err(Error::Unauthenticated(AuthFailure::Invalid))
        ));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "abc");
    }

    #[test]
    fn a_principal_prints_no_id() {
        let verifier = TokenVerifier::new(&settings()).unwrap();
        let p = verifier
            .verify(&token(SECRET, "tutela", chrono::Utc::now()))
            .unwrap();
        assert!(!format!("{p:?}").contains("staff-1"));
    }
}
