//! What one audit record says, as it is chained and stored: ids, pseudonyms and category
//! names, never a personal value.

use chrono::{DateTime, Utc};

/// What kind of event a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The guard's decision on a call.
    Decision,
    /// A handler read or changed a subject's data.
    Access,
}

impl EventKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Access => "access",
        }
    }

    /// As read back: anything but `access` reads as a decision (and then fails verification
    /// if it was stored otherwise).
    pub(super) fn parse(stored: &str) -> Self {
        if stored == "access" {
            Self::Access
        } else {
            Self::Decision
        }
    }
}

/// Whether the call was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Refused.
    Deny,
}

impl Outcome {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    /// As read back: anything but `allow` reads as a refusal.
    pub(super) fn parse(stored: &str) -> Self {
        if stored == "allow" {
            Self::Allow
        } else {
            Self::Deny
        }
    }
}

/// One audit record, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Decision or access.
    pub kind: EventKind,
    /// The tenant.
    pub tenant: String,
    /// The principal: a staff, service or partner id, or the pseudonym of a learner or guardian.
    pub principal: String,
    /// The principal's kind.
    pub principal_kind: String,
    /// The principal's roles, comma-separated.
    pub roles: String,
    /// The RPC.
    pub rpc: String,
    /// The purpose.
    pub purpose: String,
    /// The subject's pseudonym, for accesses.
    pub subject: Option<String>,
    /// Data categories concerned, comma-separated short names.
    pub categories: String,
    /// Allowed or refused.
    pub decision: Outcome,
    /// The deciding policy ids, or the refusal's reason.
    pub reason: String,
    /// The W3C trace id, when tracing.
    pub trace_id: String,
}
