//! What can be audited, as typed events: a guard's decision, an access to one subject's data, a
//! call a signed token authorised, and a summary of what a call did to many subjects. Each event
//! becomes one record; the string fields a record stores are filled here and nowhere else.
//!
//! A subject appears in an event only as a [`Subject`], which holds its pseudonym together with
//! the (tenant, subject id) the pseudonym stands for: the two are made together by
//! [`AuditKeys::subject`], so a record cannot carry a pseudonym whose mapping is missing or
//! belongs to someone else.

use std::fmt;

use chrono::{DateTime, Utc};
use tutela_proto::common::Purpose;

use super::keys::AuditKeys;
use super::record::{AuditRecord, EventKind, Outcome};
use crate::categories::CategorySet;
use crate::principal::{Principal, PrincipalKind};

/// How a call authorised by a token in its message names its caller: no principal, only the
/// holder of a token.
pub const TOKEN_HOLDER: &str = "token-holder";

/// A data subject as the audit log knows them: their pseudonym, and the (tenant, subject id)
/// behind it, which is kept apart from the log for the dpo to resolve. Debug shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct Subject {
    pseudonym: String,
    tenant: String,
    id: String,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subject([redacted])")
    }
}

impl Subject {
    /// A subject as read back from the outbox, where pseudonym and id were stored together.
    pub(super) fn stored(pseudonym: String, tenant: String, id: String) -> Self {
        Self {
            pseudonym,
            tenant,
            id,
        }
    }

    /// The pseudonym, as records show the subject.
    pub fn pseudonym(&self) -> &str {
        &self.pseudonym
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The subject id the pseudonym stands for.
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

impl AuditKeys {
    /// `subject_id` of `tenant` as audit events name them: the pseudonym and its mapping, made
    /// together.
    pub fn subject(&self, tenant: &str, subject_id: &str) -> Subject {
        Subject {
            pseudonym: self.pseudonym(tenant, subject_id),
            tenant: tenant.to_owned(),
            id: subject_id.to_owned(),
        }
    }
}

/// Who made a call and which call it was, as every record of it states: staff, service and
/// partner ids as they are, learners and guardians only by pseudonym.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    tenant: String,
    principal: String,
    principal_kind: String,
    roles: String,
    rpc: String,
    purpose: String,
    trace_id: String,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("principal_kind", &self.principal_kind)
            .field("rpc", &self.rpc)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// `principal`'s call of `rpc` for `purpose` (a short name, or empty when the call named
    /// none); `None` for a caller who could not be authenticated. Takes the current trace id.
    pub fn new(keys: &AuditKeys, principal: Option<&Principal>, rpc: &str, purpose: &str) -> Self {
        let (tenant, id, kind, roles) = match principal {
            Some(p) => (
                p.tenant.clone(),
                principal_ref(keys, p),
                p.kind.as_str().to_owned(),
                p.roles.join(","),
            ),
            None => (String::new(), "-".to_owned(), "-".to_owned(), String::new()),
        };
        Self {
            tenant,
            principal: id,
            principal_kind: kind,
            roles,
            rpc: rpc.to_owned(),
            purpose: purpose.to_owned(),
            trace_id: tutela_telemetry::current_trace_id().unwrap_or_default(),
        }
    }

    /// The holder of a token in the message of `rpc` in `tenant` (empty when the token named
    /// none that exists).
    fn token_holder(tenant: &str, rpc: &str, purpose: Option<Purpose>) -> Self {
        Self {
            tenant: tenant.to_owned(),
            principal: "-".to_owned(),
            principal_kind: TOKEN_HOLDER.to_owned(),
            roles: String::new(),
            rpc: rpc.to_owned(),
            purpose: purpose
                .map(|p| p.short_name().to_owned())
                .unwrap_or_default(),
            trace_id: tutela_telemetry::current_trace_id().unwrap_or_default(),
        }
    }
}

/// How a principal appears in the audit log: staff, service and partner ids as they are;
/// learners and guardians only by pseudonym.
pub fn principal_ref(keys: &AuditKeys, p: &Principal) -> String {
    match p.kind {
        PrincipalKind::Learner | PrincipalKind::Guardian => keys.pseudonym(&p.tenant, &p.id),
        _ => p.id.clone(),
    }
}

/// A call that a signed token in its message authorised (an unsubscribe link, a confirmation
/// code): there is no principal, and the subject is the one the token names, if it names one
/// that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCall {
    /// The RPC (`package.Service/Method`).
    pub rpc: String,
    /// The purpose the processing serves (`None` when the call never got as far as knowing it,
    /// e.g. a token that does not verify).
    pub purpose: Option<Purpose>,
    /// The subject the token names, when it names one that exists.
    pub subject: Option<Subject>,
    /// The categories of the subject's data the call concerns.
    pub categories: CategorySet,
}

/// A change to a record that is no subject's data but decides whose data goes where, which an
/// investigator must find on its own in the log: when a partner's pseudonyms changed, which
/// agreement was in force from when. Each is written beside the call's decision, in the
/// transaction of the change (see [`super::AuditLog::change_in`]). Ids are record ids (UUIDs),
/// never a subject's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A partner's pseudonym key was replaced: from now on its pseudonyms are under
    /// `key_version`.
    PartnerKeyRotated {
        /// The partner.
        partner_id: String,
        /// The new key's version.
        key_version: u32,
    },
    /// A data-sharing agreement came into force.
    AgreementActivated {
        /// The agreement.
        agreement_id: String,
        /// Its partner.
        partner_id: String,
        /// Its version.
        version: u32,
    },
    /// A partner's webhook endpoint was set (or replaced, and so enabled again) with a fresh
    /// signing secret. Neither the URL (its query may hold the partner's token) nor the secret
    /// is recorded.
    WebhookEndpointSet {
        /// The partner.
        partner_id: String,
    },
}

impl Change {
    /// The record's reason: what changed, as `name key=value ...`, so that a search of the log
    /// finds every change of one kind or of one record.
    fn describe(&self) -> String {
        match self {
            Self::PartnerKeyRotated {
                partner_id,
                key_version,
            } => format!("partner_key_rotated partner={partner_id} key_version={key_version}"),
            Self::AgreementActivated {
                agreement_id,
                partner_id,
                version,
            } => format!(
                "agreement_activated agreement={agreement_id} partner={partner_id} version={version}"
            ),
            Self::WebhookEndpointSet { partner_id } => {
                format!("webhook_endpoint_set partner={partner_id}")
            }
        }
    }
}

/// One auditable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// The guard's decision on a call that touched no subject's data, or that was refused
    /// before its handler ran.
    Decision {
        /// Who called what.
        caller: Caller,
        /// Allowed or refused.
        outcome: Outcome,
        /// The deciding policy ids, or the refusal's reason code.
        reason: String,
    },
    /// A call read or changed `categories` of one subject's data (allowed), or was refused the
    /// subject (out of reach, no consent). Carries the decision too.
    SubjectAccess {
        /// Who called what.
        caller: Caller,
        /// Whose data.
        subject: Subject,
        /// Which categories of it.
        categories: CategorySet,
        /// Allowed or refused.
        outcome: Outcome,
        /// The deciding policy ids, or the refusal's reason code.
        reason: String,
        /// Whether the call changed the data (staged in the change's transaction) rather than
        /// read it.
        write: bool,
    },
    /// A call a signed token in its message authorised.
    TokenCall {
        /// The call.
        call: TokenCall,
        /// Allowed or refused.
        outcome: Outcome,
        /// What the call did, or the refusal's reason code.
        reason: String,
    },
    /// What a call did to many subjects' data at once, beyond its decision: how many recipients
    /// a stream carried, how many events a bulk write recorded.
    Summary {
        /// Who called what.
        caller: Caller,
        /// The categories of the many subjects' data.
        categories: CategorySet,
        /// What was done, in counts; never personal data.
        note: String,
    },
    /// A call changed a record that decides whose data goes where (see [`Change`]).
    Changed {
        /// Who called what.
        caller: Caller,
        /// What changed.
        change: Change,
    },
}

impl AuditEvent {
    /// The record of this event at `at`, with the subject its pseudonym stands for.
    pub(super) fn into_record(self, at: DateTime<Utc>) -> (AuditRecord, Option<Subject>) {
        let (kind, caller, subject, categories, decision, reason) = match self {
            Self::Decision {
                caller,
                outcome,
                reason,
            } => (
                EventKind::Decision,
                caller,
                None,
                CategorySet::EMPTY,
                outcome,
                reason,
            ),
            Self::SubjectAccess {
                caller,
                subject,
                categories,
                outcome,
                reason,
                write,
            } => (
                if write {
                    EventKind::Write
                } else {
                    EventKind::Access
                },
                caller,
                Some(subject),
                categories,
                outcome,
                reason,
            ),
            Self::TokenCall {
                call,
                outcome,
                reason,
            } => {
                let tenant = call.subject.as_ref().map_or("", |s| s.tenant.as_str());
                let caller = Caller::token_holder(tenant, &call.rpc, call.purpose);
                let kind = if call.subject.is_some() {
                    EventKind::Access
                } else {
                    EventKind::Decision
                };
                (kind, caller, call.subject, call.categories, outcome, reason)
            }
            Self::Summary {
                caller,
                categories,
                note,
            } => (
                EventKind::Access,
                caller,
                None,
                categories,
                Outcome::Allow,
                note,
            ),
            // A decision record of its own: no subject's data, the change in its reason.
            Self::Changed { caller, change } => (
                EventKind::Decision,
                caller,
                None,
                CategorySet::EMPTY,
                Outcome::Allow,
                change.describe(),
            ),
        };
        let record = AuditRecord {
            at,
            kind,
            tenant: caller.tenant,
            principal: caller.principal,
            principal_kind: caller.principal_kind,
            roles: caller.roles,
            rpc: caller.rpc,
            purpose: caller.purpose,
            subject: subject.as_ref().map(|s| s.pseudonym.clone()),
            categories: categories.names().join(","),
            decision,
            reason,
            trace_id: caller.trace_id,
        };
        (record, subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_a_decision_record_that_says_what_changed_and_names_no_subject() {
        let keys = AuditKeys::from_secret(b"an audit secret of 32 bytes or more");
        let caller = Caller::new(
            &keys,
            None,
            "tutela.sharing.v1.PartnerService/RotatePartnerKey",
            "legal_obligation",
        );
        let at = chrono::DateTime::<Utc>::UNIX_EPOCH;
        let (record, subject) = AuditEvent::Changed {
            caller: caller.clone(),
            change: Change::PartnerKeyRotated {
                partner_id: "p-1".into(),
                key_version: 3,
            },
        }
        .into_record(at);
        assert_eq!(record.kind, EventKind::Decision);
        assert_eq!(record.decision, Outcome::Allow);
        assert_eq!(
            record.reason,
            "partner_key_rotated partner=p-1 key_version=3"
        );
        assert!(record.categories.is_empty());
        assert!(record.subject.is_none() && subject.is_none());
        let (record, _) = AuditEvent::Changed {
            caller,
            change: Change::AgreementActivated {
                agreement_id: "a-1".into(),
                partner_id: "p-1".into(),
                version: 2,
            },
        }
        .into_record(at);
        assert_eq!(
            record.reason,
            "agreement_activated agreement=a-1 partner=p-1 version=2"
        );
        let (record, _) = AuditEvent::Changed {
            caller: Caller::new(
                &keys,
                None,
                "tutela.sharing.v1.WebhookService/SetWebhookEndpoint",
                "legal_obligation",
            ),
            change: Change::WebhookEndpointSet {
                partner_id: "p-1".into(),
            },
        }
        .into_record(at);
        assert_eq!(record.reason, "webhook_endpoint_set partner=p-1");
    }
}
