//! What one audit record says, as it is chained and stored: ids, pseudonyms and category
//! names, never a personal value.

use chrono::{DateTime, Utc};

/// What kind of event a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The guard's decision on a call.
    Decision,
    /// A handler read a subject's data (or, in records written before writes had a kind of
    /// their own, read or changed it).
    Access,
    /// A handler changed a subject's data, in the change's own transaction.
    Write,
}

impl EventKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Access => "access",
            Self::Write => "write",
        }
    }

    /// As read back: anything but `access` and `write` reads as a decision (and then fails
    /// verification if it was stored otherwise).
    pub(super) fn parse(stored: &str) -> Self {
        match stored {
            "access" => Self::Access,
            "write" => Self::Write,
            _ => Self::Decision,
        }
    }

    /// Whether the record is of a subject's data being read or changed.
    pub fn touches_data(self) -> bool {
        matches!(self, Self::Access | Self::Write)
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
pub(crate) struct AuditRecord {
    /// When.
    pub(crate) at: DateTime<Utc>,
    /// Decision or access.
    pub(crate) kind: EventKind,
    /// The tenant.
    pub(crate) tenant: String,
    /// The principal: a staff, service or partner id, or the pseudonym of a learner or guardian.
    pub(crate) principal: String,
    /// The principal's kind.
    pub(crate) principal_kind: String,
    /// The principal's roles, comma-separated.
    pub(crate) roles: String,
    /// The RPC.
    pub(crate) rpc: String,
    /// The purpose.
    pub(crate) purpose: String,
    /// The subject's pseudonym, for accesses.
    pub(crate) subject: Option<String>,
    /// Data categories concerned, comma-separated short names.
    pub(crate) categories: String,
    /// Allowed or refused.
    pub(crate) decision: Outcome,
    /// The deciding policy ids, or the refusal's reason.
    pub(crate) reason: String,
    /// The W3C trace id, when tracing.
    pub(crate) trace_id: String,
}
