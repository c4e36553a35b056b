//! The guard as a tower layer around the whole tonic router, so that no RPC can be reached around
//! it. For every call it authenticates the bearer token, reads the purpose, checks the processing
//! register and the Cedar rules, hands the handler an [`Authorized`] value, and redacts the
//! response to the categories the caller may read. Health and reflection are the only services on
//! the allow-list; an RPC the contract does not define is denied.
//!
//! What a caller without a verified principal can make the process write is bounded: a path that
//! is no RPC of the contract is recorded as [`UNKNOWN_RPC`], never as sent, and at most
//! [`ANONYMOUS_BUDGET`] such refusals per [`ANONYMOUS_WINDOW`] get an audit record and a log line
//! each; the rest are counted, and one summary record (and one log line) per window says how
//! many there were.

use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Layer, Service};
use tutela_proto::common::Purpose;

use crate::access::{AccessRules, DecisionKey};
use crate::audit::{AuditEvent, AuditLog, Caller, Outcome as AuditOutcome};
use crate::authorized::Authorized;
use crate::categories::CategorySet;
use crate::consent::ConsentGate;
use crate::error::{Denial, DenyCause, Error, PURPOSE_HEADER, Result};
use crate::methods::{Authorisation, MethodInfo, MethodTable, TOKEN_HTTP_PREFIXES, is_exempt};
use crate::principal::Principal;
use crate::principal::{TokenVerifier, bearer};
use crate::redact::RedactBody;
use crate::register::Register;
use crate::token_call::TokenCall;

/// The RPC recorded for a path that is no RPC of the contract: the path itself may be anything
/// (kilobytes, an email, an identifier), so it is neither audited nor logged.
pub const UNKNOWN_RPC: &str = "unknown";
/// Refusals of callers without a verified principal audited and logged one by one per window.
pub const ANONYMOUS_BUDGET: u32 = 100;
/// The window of [`ANONYMOUS_BUDGET`]; refusals beyond it are summarised once per window.
pub const ANONYMOUS_WINDOW: Duration = Duration::from_secs(5);
/// The start of the reason of a summary record, followed by the count.
pub const OVER_BUDGET: &str = "UNAUTHENTICATED_OVER_BUDGET: ";

/// A fixed-window counter of refusals of callers without a verified principal.
#[derive(Debug, Default)]
struct AnonymousRefusals(Mutex<Window>);

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    recorded: u32,
    counted: u64,
}

/// What to do with one anonymous refusal.
enum Admission {
    /// Audit and log it.
    Record,
    /// Count it; the first one counted in a window names when to write the window's summary.
    Count(Option<Instant>),
}

impl AnonymousRefusals {
    fn admit(&self, now: Instant) -> Admission {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A window with nothing counted just ends; one with a count ends when its summary is
        // taken, so that every counted refusal is in exactly one summary.
        if w.counted == 0 && w.started.is_some_and(|s| now >= s + ANONYMOUS_WINDOW) {
            *w = Window::default();
        }
        let started = *w.started.get_or_insert(now);
        if w.recorded < ANONYMOUS_BUDGET {
            w.recorded += 1;
            return Admission::Record;
        }
        w.counted += 1;
        Admission::Count((w.counted == 1).then_some(started + ANONYMOUS_WINDOW))
    }

    /// The refusals counted in the window, which ends.
    fn take(&self) -> u64 {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *w).counted
    }
}

/// What the guard decided about one call.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Health or reflection: passes untouched.
    Exempt,
    /// Authorised by a signed token in the message (or path), which the handler verifies; the
    /// RPC the guard audits it as.
    MessageToken(&'a str),
    /// Authorised; the handler gets the value, the response is redacted to its categories.
    Authorized(Authorized, &'a MethodInfo),
}

/// The guard's configuration, validated as a whole at start-up.
#[derive(Debug)]
pub struct Guard {
    audit: AuditLog,
    verifier: TokenVerifier,
    register: Arc<Register>,
    /// Swapped whole by a reload; a call decides under the rules it read at its start.
    rules: RwLock<Arc<AccessRules>>,
    methods: MethodTable,
    consent: Arc<ConsentGate>,
    /// The largest request message buffered for validation (the server's decoding limit).
    max_message_bytes: usize,
    anonymous: AnonymousRefusals,
}

/// Why the guard cannot start.
#[derive(Debug, thiserror::Error)]
#[error("guard: {0}")]
pub struct GuardError(String);

impl Guard {
    /// A guard over every RPC of `methods`, checking consent through `consent`. Refuses to start
    /// when an RPC has no Cedar action, so that a new RPC cannot ship without rules.
    pub fn new(
        audit: AuditLog,
        verifier: TokenVerifier,
        register: Arc<Register>,
        rules: Arc<AccessRules>,
        methods: MethodTable,
        consent: Arc<ConsentGate>,
    ) -> std::result::Result<Self, GuardError> {
        covers_every_rpc(&methods, &rules)?;
        Ok(Self {
            audit,
            verifier,
            register,
            rules: RwLock::new(rules),
            methods,
            consent,
            max_message_bytes: crate::request::DEFAULT_MAX_MESSAGE_BYTES,
            anonymous: AnonymousRefusals::default(),
        })
    }

    /// The largest request message the guard reads to validate it; set it to the server's own
    /// decoding limit, so that the guard refuses no message the server would accept.
    #[must_use]
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// `request` with its message checked against the contract (see [`crate::request`]), or why
    /// it is refused. RPCs without a plan (and plain HTTP paths) pass as they are.
    async fn validated(
        &self,
        plan: Option<&crate::request::RequestPlan>,
        request: http::Request<Body>,
    ) -> Result<http::Request<Body>> {
        let Some(plan) = plan else {
            return Ok(request);
        };
        crate::request::checked(
            request,
            plan,
            &self.register.prohibited_identifiers,
            self.max_message_bytes,
        )
        .await
        .inspect_err(|err| tracing::info!(rpc = %plan.input().full_name(), reason = err.reason(), "request refused"))
    }

    /// Replaces the access rules (a policy reload). The new rules come with an empty decision
    /// cache, so no decision of the old ones survives; rules that leave an RPC without an action
    /// are refused and the old ones stay.
    pub fn replace_rules(&self, rules: Arc<AccessRules>) -> std::result::Result<(), GuardError> {
        covers_every_rpc(&self.methods, &rules)?;
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
        Ok(())
    }

    fn rules(&self) -> Arc<AccessRules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
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
        // The HTTP prefixes are compared only for paths that are no RPC, so guarded calls never
        // pay for them.
        let token_authorised = match method {
            Some(m) => (m.authorisation == Authorisation::MessageToken).then_some(m.rpc.as_str()),
            None => TOKEN_HTTP_PREFIXES
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix))
                .map(|(_, rpc)| *rpc),
        };
        if let Some(rpc) = token_authorised {
            return Ok(Outcome::MessageToken(rpc));
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
        let rules = self.rules();
        let decision = rules.decide(&DecisionKey::new(
            &principal,
            &method.rpc,
            &method.area,
            purpose,
        ));
        if !decision.allowed {
            return Err(self.denial(&rules, &principal, method, purpose, &decision.policies));
        }
        let readable = decision.readable.intersect(rule.categories);
        Ok(Outcome::Authorized(
            Authorized::new(
                principal,
                purpose,
                rule.clone(),
                readable,
                method.output_categories,
                method.rpc.clone(),
                decision.policies.clone(),
                self.consent.clone(),
                self.audit.clone(),
            ),
            method,
        ))
    }
}

impl Guard {
    /// Why the rules refused `principal` the RPC for `purpose` (`forbids` the forbid rules that
    /// matched), for the integrator reading the error: the purposes the register lists for
    /// which the rules would allow it, if any. Runs on refusals only; the decisions it asks for
    /// are cached like any other.
    fn denial(
        &self,
        rules: &AccessRules,
        principal: &Principal,
        method: &MethodInfo,
        purpose: Purpose,
        forbids: &[String],
    ) -> Error {
        let cause = if forbids.is_empty() {
            let allowed: Vec<&'static str> = tutela_proto::PURPOSE_NAMES
                .iter()
                .filter(|(other, _)| *other != purpose && self.register.rule(*other).is_some())
                .filter(|(other, _)| {
                    rules
                        .decide(&DecisionKey::new(
                            principal,
                            &method.rpc,
                            &method.area,
                            *other,
                        ))
                        .allowed
                })
                .map(|(_, name)| *name)
                .collect();
            if allowed.is_empty() {
                DenyCause::NoRule
            } else {
                DenyCause::PurposeNotAllowed(allowed)
            }
        } else {
            DenyCause::Forbidden(forbids.to_vec())
        };
        Error::NotPermitted(Box::new(Denial {
            rpc: method.rpc.clone(),
            purpose: purpose.short_name(),
            cause,
        }))
    }
}

pub(crate) fn covers_every_rpc(
    methods: &MethodTable,
    rules: &AccessRules,
) -> std::result::Result<(), GuardError> {
    let mut missing: Vec<&str> = methods
        .iter()
        .filter(|m| m.authorisation == Authorisation::Guarded && !rules.has_action(&m.rpc))
        .map(|m| m.rpc.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    Err(GuardError(format!(
        "RPCs without an action in the Cedar schema: {}",
        missing.join(", ")
    )))
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

/// Response metadata naming, comma-separated, the data categories of the response that the caller
/// may not read and that were cleared from it. Absent when nothing was withheld.
pub const WITHHELD_HEADER: &str = "x-tutela-withheld-categories";

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
        let guard = self.guard.clone();
        let path = request.uri().path().to_owned();
        let (authorized, redaction, plan) = match guard.check(&path, request.headers()) {
            Err(err) => {
                let rpc = guard.rpc_label(&path);
                let purpose = purpose(request.headers())
                    .map(|p| p.short_name())
                    .unwrap_or("");
                let principal = bearer(request.headers())
                    .ok()
                    .and_then(|t| guard.verifier.verify(t).ok());
                if principal.is_none()
                    && let Admission::Count(summary_at) = guard.anonymous.admit(Instant::now())
                {
                    if let Some(at) = summary_at {
                        tokio::spawn(guard.clone().summarise_anonymous(at));
                    }
                    return Box::pin(async move { Ok(tonic::Status::from(err).into_http()) });
                }
                tracing::info!(rpc, reason = err.reason(), "call refused");
                let refusal = guard.refusal(principal.as_ref(), rpc, purpose, err.reason());
                return Box::pin(async move {
                    // The call fails either way; a refusal that cannot be audited is logged.
                    if guard.audit.append(refusal).await.is_err() {
                        tracing::error!(
                            rpc = guard.rpc_label(&path),
                            "refusal could not be audited"
                        );
                    }
                    Ok(tonic::Status::from(err).into_http())
                });
            }
            Ok(Outcome::Exempt) => {
                return Box::pin(inner.call(request));
            }
            Ok(Outcome::MessageToken(rpc)) => {
                let plan = guard.methods.get(&path).and_then(|m| m.input.clone());
                // The guard, not the handler, writes the call's record: the handler only adds
                // the subject it resolved (see `crate::token_call`).
                let call = TokenCall::new(guard.audit.clone(), rpc);
                request.extensions_mut().insert(call.clone());
                return Box::pin(async move {
                    let response = match guard.validated(plan.as_ref(), request).await {
                        Ok(request) => inner.call(request).await?,
                        Err(err) => {
                            call.refused(&err);
                            tonic::Status::from(err).into_http()
                        }
                    };
                    // Fail closed: a call whose record cannot be written does not succeed.
                    let failure = crate::token_call::failure(&response);
                    if let Err(err) = call.finish(failure).await {
                        return Ok(tonic::Status::from(err).into_http());
                    }
                    Ok(response)
                });
            }
            Ok(Outcome::Authorized(authorized, method)) => {
                let readable = authorized.readable();
                request.extensions_mut().insert(authorized.clone());
                let withheld = method.output_categories.without(readable);
                let redaction =
                    (!withheld.is_empty()).then(|| (method.output.clone(), readable, withheld));
                (authorized, redaction, method.input.clone())
            }
        };
        Box::pin(async move {
            let response = match guard.validated(plan.as_ref(), request).await {
                Ok(request) => inner.call(request).await?,
                Err(err) => {
                    // Refused before its handler ran: the guard's own decision, so a deny with
                    // its reason (MALFORMED_REQUEST, PROHIBITED_IDENTIFIER, ...), not the allow
                    // that a call its handler refuses is recorded as.
                    let refusal = guard.refusal(
                        Some(authorized.principal()),
                        authorized.rpc(),
                        authorized.purpose().short_name(),
                        err.reason(),
                    );
                    if let Err(unaudited) = guard.audit.append(refusal).await {
                        return Ok(tonic::Status::from(unaudited).into_http());
                    }
                    return Ok(tonic::Status::from(err).into_http());
                }
            };
            // The response leaves only once its audit records are durable (fail closed).
            if let Err(err) = guard.audit_call(&authorized).await {
                return Ok(tonic::Status::from(err).into_http());
            }
            // A trailers-only response (an error) carries no message to redact.
            let trailers_only = response.headers().contains_key("grpc-status");
            Ok(match redaction.filter(|_| !trailers_only) {
                None => response,
                Some((descriptor, readable, withheld)) => {
                    let mut response =
                        response.map(|body| Body::new(RedactBody::new(body, descriptor, readable)));
                    // Tells the client that an empty field of these categories may be withheld
                    // rather than empty (the remote consent source relies on it).
                    if let Ok(value) = http::HeaderValue::from_str(&join(withheld)) {
                        response.headers_mut().insert(WITHHELD_HEADER, value);
                    }
                    response
                }
            })
        })
    }
}

impl Guard {
    /// How a refused path is recorded: its RPC, or [`UNKNOWN_RPC`].
    fn rpc_label(&self, path: &str) -> &str {
        self.methods
            .get(path)
            .map_or(UNKNOWN_RPC, |m| m.rpc.as_str())
    }

    /// Writes, at the end of a window, the summary of the anonymous refusals over its budget.
    async fn summarise_anonymous(self: Arc<Self>, at: Instant) {
        tokio::time::sleep_until(at).await;
        let refused = self.anonymous.take();
        tracing::warn!(
            refused,
            window_secs = ANONYMOUS_WINDOW.as_secs(),
            "unauthenticated calls refused over the budget, audited as one summary"
        );
        let summary = self.refusal(None, UNKNOWN_RPC, "", &format!("{OVER_BUDGET}{refused}"));
        if self.audit.append(summary).await.is_err() {
            tracing::error!(refused, "summary of refusals could not be audited");
        }
    }

    /// The guard's refusal of a call of `rpc` for `purpose` by `principal` (`None` when not
    /// authenticated), for `reason`.
    fn refusal(
        &self,
        principal: Option<&Principal>,
        rpc: &str,
        purpose: &str,
        reason: &str,
    ) -> AuditEvent {
        AuditEvent::Decision {
            caller: Caller::new(self.audit.keys(), principal, rpc, purpose),
            outcome: AuditOutcome::Deny,
            reason: reason.to_owned(),
        }
    }

    /// Writes the decision record of an allowed call and one record per subject it accessed,
    /// and one refusal per subject a check refused it. A subject whose writes staged their
    /// record in the outbox gets it chained from there.
    async fn audit_call(&self, authorized: &Authorized) -> Result<()> {
        let mut accesses = authorized.take_accesses();
        let decision_staged = authorized.take_decision_staged();
        let refusals = authorized.take_refusals();
        if refusals.is_empty() && accesses.is_empty() {
            return self
                .audit
                .append_staged(authorized.decision(), decision_staged, false)
                .await;
        }
        // The handler was refused subjects (out of reach, no consent): each refusal is a deny,
        // whatever else the call did, and a list call keeps every one of them.
        let mut appends = Vec::with_capacity(refusals.len() + accesses.len());
        for (subject, reason) in refusals {
            let refusal = authorized.refusal(&subject, reason);
            appends.push(self.audit.append_staged(refusal, Vec::new(), false));
        }
        // A subject whose data the call changed (its write staged a record in the change's
        // transaction) gets a write record; one it only read, a read record.
        let writes: Vec<bool> = accesses.iter().map(|a| !a.staged.is_empty()).collect();
        // The access records carry the decision: the first takes its staged rows.
        if let Some(first) = accesses.first_mut() {
            first.staged.extend(decision_staged);
        }
        // An access record carries the decision too (principal, RPC, purpose, deciding
        // policies), so a call that touched subjects needs no separate decision record.
        for (access, write) in accesses.into_iter().zip(writes) {
            let only_staged = !access.unstaged;
            appends.push(self.audit.append_staged(
                authorized.access(&access.subject, access.categories, write),
                access.staged,
                only_staged,
            ));
        }
        // Queued together, so they land in the same batch.
        for result in futures::future::join_all(appends).await {
            result?;
        }
        Ok(())
    }
}

fn join(categories: CategorySet) -> String {
    categories.names().join(",")
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

    /// A guard over a fresh audit log, and the connection to read the log back.
    async fn guard_with_a_log() -> (
        tutela_store::testing::TestDatabase,
        sea_orm::DatabaseConnection,
        Arc<Guard>,
        AuditLog,
    ) {
        let db = tutela_store::testing::TestDatabase::create().await.unwrap();
        let conn = db.connect().await.unwrap();
        tutela_store::migrate(
            &conn,
            &[tutela_store::migrations_of::<
                crate::audit::migration::AuditMigrator,
            >("audit")],
        )
        .await
        .unwrap();
        let keys = crate::audit::AuditKeys::from_secret(b"an audit secret of 32 bytes or more");
        let log = AuditLog::start(conn.clone(), keys, Arc::new(tutela_store::SystemClock));
        let verifier = verifier_for_tests();
        let guard = Guard::new(
            log.clone(),
            verifier,
            Arc::new(Register::default_register().unwrap()),
            Arc::new(AccessRules::default_rules().unwrap()),
            MethodTable::from_pool(tutela_proto::descriptor_pool().unwrap()),
            Arc::new(ConsentGate::without_ledger()),
        )
        .unwrap();
        (db, conn, Arc::new(guard), log)
    }

    fn principal(kind: crate::principal::PrincipalKind, sub: &str, role: &str) -> Principal {
        Principal::from_claims(crate::principal::Claims {
            iss: "t".into(),
            aud: crate::principal::Audience::One("t".into()),
            sub: sub.into(),
            exp: 0,
            iat: 0,
            tenant: "acme".into(),
            kind,
            roles: vec![role.into()],
            partner: None,
            wards: Vec::new(),
        })
        .unwrap()
    }

    /// (subject, categories, decision, reason) of every record, in order.
    async fn records(
        conn: &sea_orm::DatabaseConnection,
    ) -> Vec<(Option<String>, String, String, String)> {
        use sea_orm::{ConnectionTrait, Statement};
        conn.query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT subject, categories, decision, reason FROM tutela_audit_log ORDER BY seq",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get("", "subject").unwrap(),
                r.try_get("", "categories").unwrap(),
                r.try_get("", "decision").unwrap(),
                r.try_get("", "reason").unwrap(),
            )
        })
        .collect()
    }

    fn call(
        p: Principal,
        readable: CategorySet,
        response: CategorySet,
        log: AuditLog,
    ) -> Authorized {
        let register = Register::default_register().unwrap();
        Authorized::new(
            p,
            Purpose::SubjectRights,
            register.rule(Purpose::SubjectRights).unwrap().clone(),
            readable,
            response,
            "tutela.enrolment.v1.EnrolmentService/ListResults".into(),
            vec!["a-policy".into()],
            Arc::new(ConsentGate::without_ledger()),
            log,
        )
    }

    #[tokio::test]
    async fn every_subject_a_call_is_refused_gets_its_own_deny_record() {
        let (_db, conn, guard, log) = guard_with_a_log().await;
        let learner = principal(
            crate::principal::PrincipalKind::Learner,
            "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77",
            "learner",
        );
        let call = call(learner, CategorySet::EMPTY, CategorySet::EMPTY, log);
        // A list call that meets two subjects outside the caller's reach.
        for other in ["other-learner-1", "other-learner-2"] {
            assert!(call.subject(other).await.is_err());
        }

        guard.audit_call(&call).await.unwrap();

        let rows = records(&conn).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(
            rows.iter()
                .all(|(_, _, decision, reason)| decision == "deny" && reason == "NOT_FOUND"),
            "{rows:?}"
        );
        assert_ne!(rows[0].0, rows[1].0, "one record per refused subject");
    }

    #[tokio::test]
    async fn a_read_records_the_response_categories_the_caller_may_read() {
        use tutela_proto::common::DataCategory as C;
        let (_db, conn, guard, log) = guard_with_a_log().await;
        let dpo = principal(crate::principal::PrincipalKind::Staff, "dpo-1", "dpo");
        let response = CategorySet::of(&[C::Identity, C::Education, C::Assessment]);
        let readable = CategorySet::of(&[C::Education, C::Assessment, C::Contact]);
        let call = call(dpo, readable, response, log);

        call.subject("learner-1").await.unwrap().record_response();
        guard.audit_call(&call).await.unwrap();

        let rows = records(&conn).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        // Identity is in the response but not readable (redacted); contact is readable but
        // not in the response: neither is recorded.
        assert_eq!(rows[0].1, "education,assessment");
        assert_eq!(rows[0].2, "allow");
    }

    fn verifier_for_tests() -> TokenVerifier {
        TokenVerifier::new(&crate::principal::AuthSettings {
            issuer: "t".into(),
            audience: "t".into(),
            hs256_secret: Some("0123456789abcdef0123456789abcdef".into()),
            jwks: None,
            leeway_secs: 0,
        })
        .unwrap()
    }

    fn audit_log_for_tests() -> AuditLog {
        AuditLog::detached(crate::audit::AuditKeys::from_secret(b"test"))
    }

    #[test]
    fn a_guard_refuses_to_start_when_an_rpc_has_no_action() {
        let pool = tutela_proto::descriptor_pool().unwrap();
        let schema = crate::access::DEFAULT_SCHEMA
            .replace("\"tutela.privacy.v1.SubjectData/EraseSubject\", ", "");
        let policies = crate::access::DEFAULT_POLICIES;
        let rules = AccessRules::new(&schema, policies).unwrap();
        let verifier = verifier_for_tests();
        let err = Guard::new(
            audit_log_for_tests(),
            verifier,
            Arc::new(Register::default_register().unwrap()),
            Arc::new(rules),
            MethodTable::from_pool(pool),
            Arc::new(ConsentGate::without_ledger()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("SubjectData/EraseSubject"),
            "{err}"
        );
    }
}
