//! The guard as a tower layer around the whole tonic router, so that no RPC can be reached around
//! it. For every call it authenticates the bearer token, reads the purpose, checks the processing
//! register and the Cedar rules, hands the handler an [`Authorized`] value, and redacts the
//! response to the categories the caller may read. Health and reflection are the only services on
//! the allow-list; an RPC the contract does not define is denied.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Layer, Service};
use tutela_proto::common::Purpose;

use crate::access::{AccessRules, DecisionKey};
use crate::authorized::Authorized;
use crate::error::{Error, PURPOSE_HEADER, Result};
use crate::methods::{Authorisation, MethodInfo, MethodTable, is_exempt};
use crate::principal::{TokenVerifier, bearer};
use crate::redact::RedactBody;
use crate::register::Register;

/// What the guard decided about one call.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Health or reflection: passes untouched.
    Exempt,
    /// Authorised by a signed token in the message, which the handler verifies.
    MessageToken,
    /// Authorised; the handler gets the value, the response is redacted to its categories.
    Authorized(Authorized, &'a MethodInfo),
}

/// The guard's configuration, validated as a whole at start-up.
#[derive(Debug)]
pub struct Guard {
    verifier: TokenVerifier,
    register: Arc<Register>,
    rules: Arc<AccessRules>,
    methods: MethodTable,
}

/// Why the guard cannot start.
#[derive(Debug, thiserror::Error)]
#[error("guard: {0}")]
pub struct GuardError(String);

impl Guard {
    /// A guard over every RPC of `methods`. Refuses to start when an RPC has no Cedar action, so
    /// that a new RPC cannot ship without rules.
    pub fn new(
        verifier: TokenVerifier,
        register: Arc<Register>,
        rules: Arc<AccessRules>,
        methods: MethodTable,
    ) -> std::result::Result<Self, GuardError> {
        let mut missing: Vec<&str> = methods
            .iter()
            .filter(|m| m.authorisation == Authorisation::Guarded && !rules.has_action(&m.rpc))
            .map(|m| m.rpc.as_str())
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            return Err(GuardError(format!(
                "RPCs without an action in the Cedar schema: {}",
                missing.join(", ")
            )));
        }
        Ok(Self {
            verifier,
            register,
            rules,
            methods,
        })
    }

    /// The register the guard enforces.
    pub fn register(&self) -> &Register {
        &self.register
    }

    /// Decides a call from its path and headers. Synchronous and allocation-light: this runs on
    /// every call.
    pub fn check<'a>(&'a self, path: &str, headers: &http::HeaderMap) -> Result<Outcome<'a>> {
        if is_exempt(path) {
            return Ok(Outcome::Exempt);
        }
        let method = self.methods.get(path);
        if method.is_some_and(|m| m.authorisation == Authorisation::MessageToken) {
            return Ok(Outcome::MessageToken);
        }
        let principal = self.verifier.verify(bearer(headers)?)?;
        let Some(method) = method else {
            return Err(Error::Denied);
        };
        let purpose = purpose(headers)?;
        let rule = self
            .register
            .rule(purpose)
            .ok_or(Error::PurposeNotRegistered(purpose.short_name()))?;
        let decision = self.rules.decide(&DecisionKey::new(
            &principal,
            &method.rpc,
            &method.area,
            purpose,
        ));
        if !decision.allowed {
            return Err(Error::Denied);
        }
        let readable = decision.readable.intersect(rule.categories);
        Ok(Outcome::Authorized(
            Authorized::new(
                principal,
                purpose,
                rule.clone(),
                readable,
                method.rpc.clone(),
                decision.policies.clone(),
            ),
            method,
        ))
    }
}

/// The purpose named in the call's metadata.
pub fn purpose(headers: &http::HeaderMap) -> Result<Purpose> {
    let value = headers.get(PURPOSE_HEADER).ok_or(Error::PurposeMissing)?;
    let name = value.to_str().map_err(|_| Error::PurposeUnknown)?.trim();
    if name.is_empty() {
        return Err(Error::PurposeMissing);
    }
    Purpose::from_short_name(name).ok_or(Error::PurposeUnknown)
}

/// The tower layer that puts a [`Guard`] in front of a service.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    guard: Arc<Guard>,
}

impl GuardLayer {
    /// A layer for `guard`.
    pub fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The guarded service.
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> Service<http::Request<Body>> for GuardService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let outcome = self.guard.check(request.uri().path(), request.headers());
        let redaction = match outcome {
            Err(err) => {
                tracing::info!(
                    rpc = request.uri().path(),
                    reason = err.reason(),
                    "call refused"
                );
                return Box::pin(async move { Ok(tonic::Status::from(err).into_http()) });
            }
            Ok(Outcome::Exempt | Outcome::MessageToken) => None,
            Ok(Outcome::Authorized(authorized, method)) => {
                let readable = authorized.readable();
                request.extensions_mut().insert(authorized);
                (!readable.contains_all(method.output_categories))
                    .then(|| (method.output.clone(), readable))
            }
        };
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(match redaction {
                None => response,
                Some((descriptor, readable)) => {
                    response.map(|body| Body::new(RedactBody::new(body, descriptor, readable)))
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_contract_has_an_action_in_the_cedar_schema() {
        let pool = tutela_proto::descriptor_pool().unwrap();
        let methods = MethodTable::from_pool(pool);
        let rules = AccessRules::default_rules().unwrap();
        let guarded: Vec<&str> = methods
            .iter()
            .filter(|m| m.authorisation == Authorisation::Guarded)
            .map(|m| m.rpc.as_str())
            .collect();
        assert!(!guarded.is_empty());
        let missing: Vec<&&str> = guarded
            .iter()
            .filter(|rpc| !rules.has_action(rpc))
            .collect();
        assert!(
            missing.is_empty(),
            "RPCs without a Cedar action: {missing:?}"
        );
    }

    #[test]
    fn a_guard_refuses_to_start_when_an_rpc_has_no_action() {
        let pool = tutela_proto::descriptor_pool().unwrap();
        let schema = crate::access::DEFAULT_SCHEMA
            .replace("\"tutela.privacy.v1.SubjectData/EraseSubject\", ", "");
        let policies = crate::access::DEFAULT_POLICIES;
        let rules = AccessRules::new(&schema, policies).unwrap();
        let verifier = TokenVerifier::new(&crate::principal::AuthSettings {
            issuer: "t".into(),
            audience: "t".into(),
            hs256_secret: Some("0123456789abcdef0123456789abcdef".into()),
            jwks: None,
            leeway_secs: 0,
        })
        .unwrap();
        let err = Guard::new(
            verifier,
            Arc::new(Register::default_register().unwrap()),
            Arc::new(rules),
            MethodTable::from_pool(pool),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("SubjectData/EraseSubject"),
            "{err}"
        );
    }
}
