//! Calls that a signed token inside their message (or path) authorises: no principal, no purpose
//! metadata, no access rule. The guard makes a [`TokenCall`] for each one, hands it to the handler
//! in the request's extensions, and writes the call's audit record itself once the handler is
//! done, so that such a call cannot go unaudited whatever its handler does (forgets to audit,
//! panics into an error, never looks at the token).
//!
//! The handler adds what only it can know: which subject the token resolved to (the record then
//! carries the subject's pseudonym and categories, and the call's writes stage their records in
//! their own transactions through the returned [`TokenCallAudit`]), the note of a success, and
//! the reason of its own refusal. The outcome itself comes from the response: a refusal is a
//! deny whether or not the handler reported it.

use std::fmt;
use std::sync::{Arc, Mutex};

use tonic::Code;
use tonic_types::StatusExt;
use tutela_proto::common::Purpose;

use crate::audit::{self, AuditEvent, AuditLog, Outcome, TokenCallAudit};
use crate::categories::CategorySet;
use crate::error::{Error, Result};

pub use crate::audit::TOKEN_HOLDER;

/// One call a token authorised, shared by the guard and the handler. Cheap to clone.
#[derive(Clone)]
pub struct TokenCall(Arc<Inner>);

struct Inner {
    log: AuditLog,
    rpc: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    purpose: Option<Purpose>,
    /// Set once the handler resolved the token to a subject.
    subject: Option<Arc<TokenCallAudit>>,
    note: &'static str,
    refusal: Option<&'static str>,
}

impl fmt::Debug for TokenCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCall")
            .field("rpc", &self.0.rpc)
            .finish_non_exhaustive()
    }
}

impl TokenCall {
    /// A call of `rpc` whose record `log` takes.
    pub(crate) fn new(log: AuditLog, rpc: &str) -> Self {
        Self(Arc::new(Inner {
            log,
            rpc: rpc.to_owned(),
            state: Mutex::default(),
        }))
    }

    /// The guard's token call of a gRPC `request`, or a failure if the request did not pass the
    /// guard as a token call.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self> {
        Self::from_extensions(request.extensions())
    }

    /// The guard's token call in `extensions` (of a plain HTTP request).
    pub fn from_extensions(extensions: &http::Extensions) -> Result<Self> {
        extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Error::internal("token call reached without the guard"))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The purpose the call serves (recorded even when the token resolves to no subject).
    pub fn for_purpose(&self, purpose: Purpose) -> &Self {
        self.state().purpose = Some(purpose);
        self
    }

    /// The token resolved to `subject_id` of `tenant`; the call touches its `categories` and, if
    /// it succeeds, is recorded with `note`. Returns what the call's writes stage their audit
    /// records with; the guard chains the call's record in place of them.
    pub fn resolved(
        &self,
        tenant: &str,
        subject_id: &str,
        categories: CategorySet,
        note: &'static str,
    ) -> Arc<TokenCallAudit> {
        let mut state = self.state();
        let call = audit::TokenCall {
            subject: Some(self.0.log.keys().subject(tenant, subject_id)),
            categories,
            ..self.event(&state)
        };
        let audit = Arc::new(TokenCallAudit::new(&self.0.log, call, note));
        state.subject = Some(audit.clone());
        state.note = note;
        audit
    }

    /// The note the record of a successful call carries (replacing the one given on resolution).
    pub fn noted(&self, note: &'static str) {
        self.state().note = note;
    }

    /// The handler refused the call for `err`: its reason is recorded (a refusal the handler does
    /// not report is recorded with the reason the response carries).
    pub fn refused(&self, err: &Error) {
        self.state().refusal = Some(err.reason());
    }

    /// The call as its record names it, before (or without) a subject.
    fn event(&self, state: &State) -> audit::TokenCall {
        audit::TokenCall {
            rpc: self.0.rpc.clone(),
            purpose: state.purpose,
            subject: None,
            categories: CategorySet::EMPTY,
        }
    }

    /// Writes the call's record: allowed, or refused when the handler reported a refusal or the
    /// response was one (`failure`, from [`failure`]). Fails (so must the call) when the record
    /// cannot be written.
    pub(crate) async fn finish(self, failure: Option<Refusal>) -> Result<()> {
        let (subject, call, note, refusal) = {
            let mut state = self.state();
            let refusal = state.refusal.map(Refusal::Reported).or(failure);
            (
                state.subject.take(),
                self.event(&state),
                state.note,
                refusal,
            )
        };
        // Without a subject, or when the handler kept its handle past its end (a spawned task:
        // its staged writes are chained by recovery), this record says how the call ended.
        let unresolved = |refusal: Option<Refusal>| AuditEvent::TokenCall {
            call,
            outcome: if refusal.is_some() {
                Outcome::Deny
            } else {
                Outcome::Allow
            },
            reason: refusal.map_or_else(|| note.to_owned(), |r| r.reason().to_owned()),
        };
        let Some(audit) = subject else {
            return self.0.log.append(unresolved(refusal)).await;
        };
        match Arc::try_unwrap(audit) {
            Ok(audit) => match refusal {
                None => audit.finish(Ok(note)).await,
                Some(refusal) => audit.finish_with(Err(refusal.reason())).await,
            },
            Err(_) => {
                tracing::warn!(rpc = %self.0.rpc, "token call audit still held after the call");
                self.0.log.append(unresolved(refusal)).await
            }
        }
    }
}

/// Why a token call was refused.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// The handler said so: the reason of its error.
    Reported(&'static str),
    /// A gRPC error response: its `ErrorInfo` reason (or its code).
    Status(String),
    /// A plain HTTP response with an error status.
    Http,
}

impl Refusal {
    fn reason(&self) -> &str {
        match self {
            Self::Reported(reason) => reason,
            Self::Status(reason) => reason,
            Self::Http => "HTTP_ERROR",
        }
    }
}

/// How `response` refuses the call, if it does: a trailers-only gRPC error (how a unary
/// handler's error leaves), or an HTTP error status (a plain HTTP route).
pub(crate) fn failure(response: &http::Response<tonic::body::Body>) -> Option<Refusal> {
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        if status.code() == Code::Ok {
            return None;
        }
        let reason = status
            .get_details_error_info()
            .map_or_else(|| code_name(status.code()).to_owned(), |info| info.reason);
        return Some(Refusal::Status(reason));
    }
    (!response.status().is_success()).then_some(Refusal::Http)
}

/// The canonical name of a gRPC code, as the gRPC status-code guide spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
