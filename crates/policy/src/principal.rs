//! Who is calling: a bearer JWT, verified with a well-kept crate (jsonwebtoken) against keys from
//! configuration — an HS256 secret for development, RS256/ES256 public keys from a JWKS file in
//! production — with issuer, audience (a string, or an array naming ours: RFC 7519 §4.1.3) and
//! expiry checked.
//!
//! # The principal model
//!
//! A principal's **kind** is the one fact its reach follows from, and the one fact the access
//! rules' own-data grants read: a learner reaches only themselves, a guardian only their wards,
//! staff, services and partners any subject of their tenant (what they may *do* there is the
//! access rules' business). A token whose claims could be read two ways is refused at
//! authentication with `TOKEN_INCONSISTENT`, never read generously. A token is consistent when:
//!
//! - it carries at least one role, each a name of 1 to 64 lower-case ASCII letters, digits, `_`
//!   or `-`, and none twice;
//! - the roles `learner`, `guardian`, `partner` and `service` are the *kind roles*: each appears
//!   only on a token of the kind of the same name, and such a token carries it and no other role;
//!   every other role is a staff role (the access rules, which an operator may replace, say what
//!   it grants), so a staff token carries only staff roles;
//! - a learner's `sub` is their learner id (a UUID);
//! - a guardian names at least one ward, each a learner id (UUID) named once and not the guardian
//!   themselves, and only a guardian names wards;
//! - a partner names its partner id, and only a partner does.
//!
//! Learner ids (a learner's `sub`, a guardian's wards) are kept in their one canonical spelling,
//! lower-case hyphenated, the spelling subject ids are compared in.

use std::fmt;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Staff,
        Self::Service,
        Self::Partner,
        Self::Learner,
        Self::Guardian,
    ];

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

    /// The kind a role belongs to: `learner`, `guardian`, `partner` and `service` are the roles
    /// of the kinds of the same name; every other role is a staff role.
    pub fn for_role(role: &str) -> Self {
        match role {
            "learner" => Self::Learner,
            "guardian" => Self::Guardian,
            "partner" => Self::Partner,
            "service" => Self::Service,
            _ => Self::Staff,
        }
    }

    /// The kind's own role, the only role its tokens carry; staff have roles of their choosing.
    pub fn own_role(self) -> Option<&'static str> {
        match self {
            Self::Staff => None,
            other => Some(other.as_str()),
        }
    }
}

/// Which subjects a principal may act on at all, whatever the access rules then allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach<'a> {
    /// Only the subject with this id: a learner, themselves.
    Own(&'a str),
    /// Only these subjects: a guardian's wards.
    Wards(&'a [String]),
    /// Any subject of the principal's tenant.
    Tenant,
}

impl Reach<'_> {
    /// Whether `subject_id` is within reach.
    pub fn includes(self, subject_id: &str) -> bool {
        match self {
            Self::Own(id) => id == subject_id,
            Self::Wards(wards) => wards.iter().any(|w| w == subject_id),
            Self::Tenant => true,
        }
    }
}

/// The `aud` claim: one audience, or several (RFC 7519 §4.1.3, as Keycloak, Auth0 and Entra
/// issue it). The verifier accepts either when it names the configured audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

/// The claims of a tutela access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: Audience,
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

/// An authenticated caller whose claims passed the consistency rules of the principal model (see
/// the module documentation); made only from verified [`Claims`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The principal's id (`sub`; for a learner, their canonical learner id).
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The kind.
    pub kind: PrincipalKind,
    /// Roles, sorted.
    pub roles: Vec<String>,
    /// The partner id, for partners.
    pub partner: Option<String>,
    /// Learners a guardian acts for (canonical learner ids).
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

/// Longest role name accepted.
const MAX_ROLE_LEN: usize = 64;

fn well_formed_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= MAX_ROLE_LEN
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The canonical spelling of a learner id, if `id` is one.
fn learner_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

impl Principal {
    /// The principal `claims` describe, or the rule of the principal model they break (a
    /// sentence naming no claim value, so it can be sent to the caller).
    pub fn from_claims(c: Claims) -> std::result::Result<Self, &'static str> {
        if c.roles.is_empty() {
            return Err("a token carries at least one role");
        }
        if !c.roles.iter().all(|r| well_formed_role(r)) {
            return Err("a role is 1 to 64 lower-case letters, digits, '_' or '-'");
        }
        let mut roles = c.roles;
        roles.sort();
        if roles.windows(2).any(|w| w[0] == w[1]) {
            return Err("a token names each role once");
        }
        if roles.iter().any(|r| {
            PrincipalKind::for_role(r) != PrincipalKind::Staff
                && PrincipalKind::for_role(r) != c.kind
        }) {
            return Err(
                "the roles learner, guardian, partner and service belong to the kinds of the \
                 same name and appear on no other kind of token",
            );
        }
        if let Some(own) = c.kind.own_role()
            && roles != [own]
        {
            return Err(
                "a learner, guardian, partner or service token carries its kind's role and no other",
            );
        }
        if c.kind != PrincipalKind::Guardian && !c.wards.is_empty() {
            return Err("only a guardian token names wards");
        }
        if c.kind != PrincipalKind::Partner && c.partner.is_some() {
            return Err("only a partner token names a partner");
        }
        let mut id = c.sub;
        let mut wards = Vec::with_capacity(c.wards.len());
        match c.kind {
            PrincipalKind::Learner => {
                id = learner_id(&id).ok_or("a learner token's sub is their learner id, a UUID")?;
            }
            PrincipalKind::Guardian => {
                if c.wards.is_empty() {
                    return Err("a guardian token names at least one ward");
                }
                let own = learner_id(&id);
                for ward in &c.wards {
                    let ward = learner_id(ward).ok_or("a ward is a learner id, a UUID")?;
                    if wards.contains(&ward) {
                        return Err("a guardian token names each ward once");
                    }
                    if own.as_ref() == Some(&ward) {
                        return Err("a guardian is not their own ward");
                    }
                    wards.push(ward);
                }
            }
            PrincipalKind::Partner => {
                if c.partner.as_deref().is_none_or(|p| p.trim().is_empty()) {
                    return Err("a partner token names its partner id");
                }
            }
            PrincipalKind::Staff | PrincipalKind::Service => {}
        }
        Ok(Self {
            id,
            tenant: c.tenant,
            kind: c.kind,
            roles,
            partner: c.partner,
            wards,
        })
    }

    /// Which subjects this principal may act on: follows from the kind alone, as the access
    /// rules' own-data grants do.
    pub fn reach(&self) -> Reach<'_> {
        match self.kind {
            PrincipalKind::Learner => Reach::Own(&self.id),
            PrincipalKind::Guardian => Reach::Wards(&self.wards),
            PrincipalKind::Staff | PrincipalKind::Service | PrincipalKind::Partner => Reach::Tenant,
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
                    return Principal::from_claims(claims)
                        .map_err(|rule| Error::Unauthenticated(AuthFailure::Inconsistent(rule)));
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
    /// The kind (default: the kind whose own role is among the roles, else staff).
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

/// Signs an HS256 token with the development secret (`tutela token issue`). Refuses claims the
/// verifier would refuse as inconsistent, naming the rule they break.
pub fn issue_hs256(
    secret: &SecretString,
    issuer: &str,
    audience: &str,
    request: &TokenRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> std::result::Result<String, String> {
    // A kind role names its kind; a set of staff roles means staff. Roles of two kinds are
    // refused below, whichever kind is picked here.
    let kind = request.kind.unwrap_or_else(|| {
        request
            .roles
            .iter()
            .map(|r| PrincipalKind::for_role(r))
            .find(|k| *k != PrincipalKind::Staff)
            .unwrap_or(PrincipalKind::Staff)
    });
    let claims = Claims {
        iss: issuer.to_owned(),
        aud: Audience::One(audience.to_owned()),
        sub: request.subject.clone(),
        iat: now.timestamp(),
        exp: (now + request.ttl).timestamp(),
        tenant: request.tenant.clone(),
        kind,
        roles: request.roles.clone(),
        partner: request.partner.clone(),
        wards: request.wards.clone(),
    };
    Principal::from_claims(claims.clone()).map_err(|rule| {
        format!(
            "refusing to sign a contradictory {} token: {rule}",
            kind.as_str()
        )
    })?;
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

    pub(super) const SECRET: &str = "a-development-secret-of-at-least-32-chars";

    pub(super) fn settings() -> AuthSettings {
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

/// The principal model under every kind × role-set combination, and `aud` in both its shapes.
#[cfg(test)]
mod model_tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::json;
    use tutela_proto::common::Purpose;

    use super::tests::{SECRET, settings};
    use super::*;
    use crate::authorized::Authorized;
    use crate::categories::CategorySet;
    use crate::consent::ConsentGate;
    use crate::register::Register;

    const LEARNER: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";
    const WARD_A: &str = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    const WARD_B: &str = "00000000-0000-4000-8000-000000000002";
    const STRANGER: &str = "00000000-0000-4000-8000-000000000003";
    /// The staff roles the default policies name.
    const STAFF_ROLES: [&str; 5] = ["registrar", "tutor", "exam_officer", "marketing", "dpo"];
    /// The roles that are kinds of their own.
    const KIND_ROLES: [&str; 4] = ["learner", "guardian", "partner", "service"];
    /// A well-formed role no default policy names (a staff role an operator's rules may grant).
    const UNKNOWN_ROLE: &str = "auditor";
    /// A look-alike of a kind role that is not a well-formed role name.
    const MALFORMED_ROLE: &str = "Learner";

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&settings()).unwrap()
    }

    /// A token signed with the development secret carrying exactly `claims`, as a client or an
    /// identity provider could make it (`issue_hs256` refuses contradictory claims).
    fn signed(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn claims(
        kind: PrincipalKind,
        roles: &[&str],
        sub: &str,
        wards: &[&str],
        partner: Option<&str>,
    ) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        let mut c = json!({
            "iss": "tutela", "aud": "tutela", "sub": sub, "iat": now, "exp": now + 600,
            "tenant": "acme", "kind": kind.as_str(), "roles": roles,
        });
        if !wards.is_empty() {
            c["wards"] = json!(wards);
        }
        if let Some(p) = partner {
            c["partner"] = json!(p);
        }
        c
    }

    /// What the principal model says of a token, written per kind from the rules in the module
    /// documentation: `None` when it must be refused, else the subjects (of `probes`) it reaches.
    fn expected(
        kind: PrincipalKind,
        roles: &[&str],
        sub: &str,
        wards: &[&str],
        partner: Option<&str>,
        probes: &[&str],
    ) -> Option<BTreeSet<String>> {
        let distinct: BTreeSet<&str> = roles.iter().copied().collect();
        if roles.is_empty() || distinct.len() != roles.len() {
            return None;
        }
        let only = |role: &str| roles == [role];
        let everyone = || Some(probes.iter().map(|p| (*p).to_owned()).collect());
        match kind {
            PrincipalKind::Staff => {
                let staff_roles = roles
                    .iter()
                    .all(|r| STAFF_ROLES.contains(r) || *r == UNKNOWN_ROLE);
                (staff_roles && wards.is_empty() && partner.is_none())
                    .then(everyone)
                    .flatten()
            }
            PrincipalKind::Service => (only("service") && wards.is_empty() && partner.is_none())
                .then(everyone)
                .flatten(),
            PrincipalKind::Partner => {
                let named = partner.is_some_and(|p| !p.is_empty());
                (only("partner") && wards.is_empty() && named)
                    .then(everyone)
                    .flatten()
            }
            PrincipalKind::Learner => {
                let own = learner_id(sub)?;
                (only("learner") && wards.is_empty() && partner.is_none())
                    .then(|| BTreeSet::from([own]))
            }
            PrincipalKind::Guardian => {
                let ids: Vec<String> =
                    wards.iter().map(|w| learner_id(w)).collect::<Option<_>>()?;
                let set: BTreeSet<String> = ids.iter().cloned().collect();
                let fine = only("guardian")
                    && partner.is_none()
                    && !ids.is_empty()
                    && set.len() == ids.len()
                    && learner_id(sub).is_none_or(|own| !set.contains(&own));
                fine.then_some(set)
            }
        }
    }

    /// The subjects of `probes` that `Authorized::subject` lets `principal` act on, for a purpose
    /// that needs no consent and is allowed under a restriction (so only the reach decides).
    fn reached(principal: Principal, probes: &[&str]) -> BTreeSet<String> {
        let register = Register::default_register().unwrap();
        let rule = register.rule(Purpose::SubjectRights).unwrap().clone();
        let call = Authorized::new(
            principal,
            Purpose::SubjectRights,
            rule,
            CategorySet::EMPTY,
            CategorySet::EMPTY,
            "tutela.enrolment.v1.LearnerService/GetLearner".into(),
            Vec::new(),
            Arc::new(ConsentGate::without_ledger()),
            // The reach refuses before anything is audited; a detached log suffices.
            crate::audit::AuditLog::detached(crate::audit::AuditKeys::from_secret(b"test")),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        probes
            .iter()
            .filter(|s| match runtime.block_on(call.subject(s)) {
                Ok(_) => true,
                Err(Error::NotFound("subject")) => false,
                Err(other) => panic!("only the reach may refuse here: {other:?}"),
            })
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// A kind with a set of roles: half the time a set that fits the kind (rare among random
    /// sets), else any set of known, kind, unknown and malformed roles; sometimes a role twice.
    fn kinds_and_roles() -> impl Strategy<Value = (PrincipalKind, Vec<&'static str>)> {
        let all: Vec<&'static str> = STAFF_ROLES
            .iter()
            .chain(KIND_ROLES.iter())
            .chain([UNKNOWN_ROLE, MALFORMED_ROLE].iter())
            .copied()
            .collect();
        let staff: Vec<&'static str> = STAFF_ROLES
            .iter()
            .chain([UNKNOWN_ROLE].iter())
            .copied()
            .collect();
        proptest::sample::select(PrincipalKind::ALL.to_vec())
            .prop_flat_map(move |kind| {
                let fitting = match kind.own_role() {
                    Some(own) => Just(vec![own]).boxed(),
                    None => proptest::sample::subsequence(staff.clone(), 1..=3).boxed(),
                };
                let any = proptest::sample::subsequence(all.clone(), 0..=all.len()).boxed();
                (
                    Just(kind),
                    prop_oneof![fitting, any],
                    proptest::bool::weighted(0.1),
                )
            })
            .prop_map(|(kind, mut roles, twice)| {
                if twice && let Some(r) = roles.first().copied() {
                    roles.push(r);
                }
                (kind, roles)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn every_kind_and_role_set_is_refused_or_reaches_what_its_kind_allows(
            (kind, roles) in kinds_and_roles(),
            sub in proptest::sample::select(vec![LEARNER, "0B9E8A4C-7F1D-4E55-9A51-3C2F0D9E1A77", "staff-7"]),
            wards in prop_oneof![
                Just(Vec::new()),
                proptest::collection::vec(
                    proptest::sample::select(vec![WARD_A, WARD_B, LEARNER, "not-a-learner-id"]),
                    1..3,
                ),
            ],
            partner in proptest::option::of(proptest::sample::select(vec!["exam-board-1", ""])),
        ) {
            let probes = [LEARNER, WARD_A, WARD_B, STRANGER];
            let token = signed(&claims(kind, &roles, sub, &wards, partner));
            let want = expected(kind, &roles, sub, &wards, partner, &probes);
            match (verifier().verify(&token), want) {
                (Err(Error::Unauthenticated(AuthFailure::Inconsistent(_))), None) => {}
                (Ok(principal), Some(want)) => {
                    prop_assert_eq!(principal.kind, kind);
                    prop_assert_eq!(reached(principal, &probes), want);
                }
                (got, want) => prop_assert!(false, "{kind:?} {roles:?} sub {sub} wards {wards:?} partner {partner:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_contradictory_shapes_of_the_issue_are_refused_as_inconsistent() {
        for (kind, roles, wards) in [
            (PrincipalKind::Staff, &["tutor", "learner"][..], &[][..]),
            (PrincipalKind::Staff, &["learner"], &[]),
            (PrincipalKind::Staff, &["guardian", "registrar"], &[WARD_A]),
            (PrincipalKind::Service, &["learner"], &[]),
            (PrincipalKind::Service, &["guardian"], &[WARD_A]),
        ] {
            let token = signed(&claims(kind, roles, LEARNER, wards, None));
            match verifier().verify(&token) {
                Err(e @ Error::Unauthenticated(AuthFailure::Inconsistent(_))) => {
                    assert_eq!(e.reason(), "TOKEN_INCONSISTENT");
                }
                other => panic!("{kind:?} {roles:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn issuing_refuses_contradictions_and_derives_the_kind_from_a_kind_role() {
        let request = |roles: &[&str], kind: Option<PrincipalKind>, wards: &[&str]| TokenRequest {
            tenant: "acme".into(),
            subject: LEARNER.into(),
            kind,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            partner: None,
            wards: wards.iter().map(|w| (*w).to_owned()).collect(),
            ttl: chrono::Duration::hours(1),
        };
        let issue = |r: &TokenRequest| {
            issue_hs256(&SECRET.into(), "tutela", "tutela", r, chrono::Utc::now())
        };
        for refused in [
            request(&["tutor", "learner"], None, &[]),
            request(&["learner"], Some(PrincipalKind::Staff), &[]),
            request(&["registrar", "guardian"], None, &[WARD_A]),
        ] {
            let err = issue(&refused).unwrap_err();
            assert!(err.starts_with("refusing to sign a contradictory"), "{err}");
        }
        for (roles, wards, kind) in [
            (&["learner"][..], &[][..], PrincipalKind::Learner),
            (&["guardian"], &[WARD_A], PrincipalKind::Guardian),
            (&["service"], &[], PrincipalKind::Service),
            (&["tutor", "registrar"], &[], PrincipalKind::Staff),
        ] {
            let token = issue(&request(roles, None, wards)).unwrap();
            assert_eq!(verifier().verify(&token).unwrap().kind, kind);
        }
    }

    fn with_aud(aud: serde_json::Value) -> serde_json::Value {
        let mut c = claims(PrincipalKind::Staff, &["dpo"], "staff-1", &[], None);
        c["aud"] = aud;
        c
    }

    #[test]
    fn aud_may_be_a_string_or_an_array_naming_our_audience() {
        let v = verifier();
        for accepted in [
            json!("tutela"),
            json!(["account", "tutela"]),
            json!(["tutela"]),
        ] {
            let p = v.verify(&signed(&with_aud(accepted.clone())));
            assert!(p.is_ok(), "{accepted}: {p:?}");
        }
        for refused in [
            json!("account"),
            json!(["account", "other"]),
            json!([]),
            json!(7),
        ] {
            match v.verify(&signed(&with_aud(refused.clone()))) {
                Err(Error::Unauthenticated(AuthFailure::Invalid)) => {}
                other => panic!("{refused}: {other:?}"),
            }
        }
    }

    /// An ES256 key made for this test with `openssl ecparam -name prime256v1 -genkey`.
    const ES256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOlqZk3ZMKMZEhtx0
MxDudcBqPkvsxSFGGT94dHFMFLmhRANCAASrUD7w6U8CWxPEfKgIa5RXLV/ng9kQ
pZur00fd7zF+v8H4NNut18hEP2jA9LhJ2IUE8MMH+p02Qr4t0gxVxetB
-----END PRIVATE KEY-----
";

    #[test]
    fn an_es256_token_from_a_jwks_may_carry_an_array_aud() {
        let jwks: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "idp-1",
            "x": "q1A-8OlPAlsTxHyoCGuUVy1f54PZEKWbq9NH3e8xfr8",
            "y": "wfg0263XyEQ_aMD0uEnYhQTwwwf6nTZCvi3SDFXF60E",
        }]}))
        .unwrap();
        let v = TokenVerifier::new(&AuthSettings {
            hs256_secret: None,
            jwks: Some(jwks),
            ..settings()
        })
        .unwrap();
        let key = EncodingKey::from_ec_pem(ES256_PRIVATE.as_bytes()).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("idp-1".into());
        let sign =
            |aud: serde_json::Value| jsonwebtoken::encode(&header, &with_aud(aud), &key).unwrap();
        assert_eq!(
            v.verify(&sign(json!(["account", "tutela"]))).unwrap().roles,
            ["dpo"]
        );
        assert!(matches!(
            v.verify(&sign(json!(["account"]))),
            Err(Error::Unauthenticated(AuthFailure::Invalid))
        ));
    }
}
