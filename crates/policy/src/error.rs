//! The one mapping from what can go wrong in a tutela call to a gRPC status. Every service
//! converts its errors into [`Error`]; `From<Error> for Status` is the only place codes, messages
//! and google.rpc details are chosen, so a client can switch on the same `ErrorInfo` reasons
//! everywhere. Messages never carry personal data: fields are named, values are not repeated.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every tutela error.
pub const ERROR_DOMAIN: &str = "tutela";

/// The metadata header that names the purpose of a call.
pub const PURPOSE_HEADER: &str = "x-tutela-purpose";

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization: Bearer` header.
    Missing,
    /// The token is malformed, forged, or for another issuer or audience.
    Invalid,
    /// The token has expired (or is not valid yet).
    Expired,
    /// The token is genuine but its claims contradict each other (e.g. a staff token carrying
    /// the role `learner`): the principal model's rule it breaks, in words naming no value.
    Inconsistent(&'static str),
}

/// One invalid field of a request: its path (e.g. `learner.email`) and what is wrong, in words
/// that never repeat the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request, as in the proto.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Declares [`Precondition`] from one list, so that its `ALL` and its reasons cannot miss a
/// variant.
macro_rules! preconditions {
    ($($(#[doc = $doc:literal])+ $variant:ident => $reason:literal,)+) => {
        /// Every `ErrorInfo.reason` a client may see with FAILED_PRECONDITION: the request is
        /// well-formed, but the state of the data (or of the subject's consent, or of the
        /// register) forbids it now. `proto/tutela/common/v1/errors.proto` documents each one
        /// (`FailedPreconditionReason`); a test keeps the two lists equal.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Precondition {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Precondition {
            /// Every reason, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The `ErrorInfo.reason` clients switch on; never changes once released.
            pub const fn reason(self) -> &'static str {
                match self {
                    $(Self::$variant => $reason,)+
                }
            }
        }
    };
}

preconditions! {
    /// The purpose is known but the processing register does not list it.
    PurposeNotRegistered => "PURPOSE_NOT_REGISTERED",
    /// The purpose needs the subject's consent and the ledger holds none (or a withdrawal).
    ConsentRequired => "CONSENT_REQUIRED",
    /// Processing of the subject's data is restricted (GDPR Art. 18).
    ProcessingRestricted => "PROCESSING_RESTRICTED",
    /// The subject is under the age of consent and no guardian's consent is recorded.
    GuardianConsentRequired => "GUARDIAN_CONSENT_REQUIRED",
    /// A legal hold protects the data.
    LegalHold => "LEGAL_HOLD",
    /// The subject's data was erased (their key shredded): nothing of theirs can be opened.
    SubjectErased => "SUBJECT_ERASED",
    /// The enrolment lifecycle does not allow the requested status change.
    InvalidTransition => "INVALID_TRANSITION",
    /// The resource changed between the read and the write; read it again.
    ConcurrentChange => "CONCURRENT_CHANGE",
    /// Results are recorded only for enrolments that have started.
    EnrolmentNotStarted => "ENROLMENT_NOT_STARTED",
    /// Certificates are issued only for completed enrolments.
    EnrolmentNotCompleted => "ENROLMENT_NOT_COMPLETED",
    /// The legal hold was released already.
    HoldReleased => "HOLD_RELEASED",
    /// The subscription no longer waits for confirmation (unsubscribed or suppressed).
    SubscriptionNotPending => "SUBSCRIPTION_NOT_PENDING",
    /// The address is on the suppression list and cannot be subscribed.
    AddressSuppressed => "ADDRESS_SUPPRESSED",
    /// An access request needs a recent, recorded verification of the requester's identity.
    IdentityNotVerified => "IDENTITY_NOT_VERIFIED",
    /// A transfer to the partner's country needs a safeguard and none is named (S7).
    TransferSafeguardRequired => "TRANSFER_SAFEGUARD_REQUIRED",
    /// No active data-sharing agreement covers the disclosure's purpose.
    AgreementRequired => "AGREEMENT_REQUIRED",
    /// An agreement's validity overlaps an active version of the same partner's agreement.
    AgreementOverlap => "AGREEMENT_OVERLAP",
    /// The partner's access to a delivery has ended (its agreement's access period, or the
    /// agreement itself).
    AccessPeriodEnded => "ACCESS_PERIOD_ENDED",
    /// The partner acknowledged the notice, so it cannot be recorded as not possible.
    NoticeAcknowledged => "NOTICE_ACKNOWLEDGED",
    /// The survey is closed: no more invitations, responses or declines.
    SurveyClosed => "SURVEY_CLOSED",
    /// The learner responded to the survey or declined it already.
    SurveyAlreadyAnswered => "SURVEY_ALREADY_ANSWERED",
    /// The learner was not invited to the survey.
    NotInvited => "NOT_INVITED",
    /// A differentially private release would spend more than the survey's privacy budget
    /// has left.
    PrivacyBudgetExhausted => "PRIVACY_BUDGET_EXHAUSTED",
    /// Too few responses for the release asked for.
    TooFewResponses => "TOO_FEW_RESPONSES",
    /// No generalisation reaches the anonymity asked for within the suppression allowed.
    AnonymityNotReached => "ANONYMITY_NOT_REACHED",
    /// The rights request is not in a state the call applies to.
    RightsRequestNotPending => "RIGHTS_REQUEST_NOT_PENDING",
    /// The rights request's deadline was extended already.
    RightsRequestAlreadyExtended => "RIGHTS_REQUEST_ALREADY_EXTENDED",
    /// The subject objected to processing for the call's purpose (GDPR Art. 21).
    ProcessingObjected => "PROCESSING_OBJECTED",
}

impl std::fmt::Display for Precondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Why the access rules refused a call (sent in the `ErrorInfo` metadata `why`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyCause {
    /// No rule grants the caller's roles this RPC, for any purpose the register lists.
    NoRule,
    /// Rules grant the RPC to the caller, but only for these other purposes.
    PurposeNotAllowed(Vec<&'static str>),
    /// A `forbid` rule matched: the `@id`s of the rules.
    Forbidden(Vec<String>),
}

impl DenyCause {
    /// The `why` of the `ErrorInfo` metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoRule => "no_rule",
            Self::PurposeNotAllowed(_) => "purpose_not_allowed",
            Self::Forbidden(_) => "forbidden",
        }
    }
}

/// A refusal of the access rules: the RPC (the Cedar action), the purpose and the cause. Holds
/// no personal data: names of the contract and the policies only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `package.Service/Method`.
    pub rpc: String,
    /// The purpose's short name.
    pub purpose: &'static str,
    /// Why.
    pub cause: DenyCause,
}

/// A refusal of one category of data within an allowed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryDenial {
    /// The category's short name.
    pub category: &'static str,
    /// `package.Service/Method`.
    pub rpc: String,
    /// The purpose's short name.
    pub purpose: &'static str,
    /// True when the register does not let the purpose touch the category at all (a write's
    /// data minimisation); false when the caller may not read it.
    pub not_for_purpose: bool,
}

/// Everything a tutela call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable credential.
    #[error("authentication failed: {0:?}")]
    Unauthenticated(AuthFailure),
    /// No `x-tutela-purpose` metadata on a call that needs one.
    #[error("the call names no purpose")]
    PurposeMissing,
    /// The purpose is not in the closed vocabulary.
    #[error("unknown purpose")]
    PurposeUnknown,
    /// The purpose is known but the operator's register does not list it, so nothing may be
    /// processed for it.
    #[error("purpose {0} is not in the processing register")]
    PurposeNotRegistered(&'static str),
    /// The call is no RPC the access rules know (nothing about it may be repeated).
    #[error("access denied")]
    Denied,
    /// The access rules do not permit this RPC to this caller for this purpose: which call, and
    /// why, so that an integrator need not read the policies.
    #[error("access denied: {} is not permitted for the purpose {}", .0.rpc, .0.purpose)]
    NotPermitted(Box<Denial>),
    /// The caller may make the call but not touch this category of data.
    #[error("access to {} data is not permitted", .0.category)]
    CategoryDenied(Box<CategoryDenial>),
    /// The purpose needs the subject's consent and there is none (or it was withdrawn).
    #[error("consent for {purpose} is required")]
    ConsentRequired {
        /// The purpose's short name.
        purpose: &'static str,
        /// The recipient the consent must name, if any.
        recipient: Option<String>,
    },
    /// Processing of the subject's data is restricted (GDPR Art. 18).
    #[error("processing of this subject's data is restricted")]
    Restricted,
    /// The subject objected to processing of their data for the purpose (GDPR Art. 21).
    #[error("the subject objected to processing for {purpose}")]
    Objected {
        /// The purpose's short name.
        purpose: &'static str,
    },
    /// The subject is under the age of consent and the ledger holds no parent's or guardian's
    /// consent to processing for the purpose (GDPR Art. 8; E4, C5).
    #[error("a guardian's consent for {purpose} is required")]
    GuardianConsentRequired {
        /// The purpose's short name.
        purpose: &'static str,
        /// The age of consent that applied.
        age_of_consent: u8,
    },
    /// A legal hold protects the data.
    #[error("a legal hold protects this data")]
    LegalHold,
    /// Data would go to a country outside the EEA and the UK that the register's adequacy list
    /// does not name, and no transfer safeguard is named (GDPR Art. 44–49; S7).
    #[error(
        "a transfer to {country} needs a safeguard (SCCs, UK IDTA, BCRs or an Art. 49 derogation)"
    )]
    TransferSafeguardRequired {
        /// The partner's country (ISO 3166-1 alpha-2): an organisation's seat, not personal data.
        country: String,
    },
    /// The request is well-formed but the resource's state forbids it (e.g. an enrolment
    /// transition). `reason` gives the ErrorInfo reason, `message` a sentence without personal
    /// data. The preconditions with details of their own (consent, restriction, hold, register)
    /// have their own variants above.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason.
        reason: Precondition,
        /// Human-readable explanation.
        message: String,
    },
    /// Bad input: one entry per offending field.
    #[error("invalid request")]
    InvalidArgument(Vec<Violation>),
    /// The request body is not one valid encoding of the RPC's request message (random bytes, a
    /// truncated message, a wrong wire type, text that is not UTF-8). The description names what
    /// is wrong, never the bytes.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// The request message is compressed; tutela accepts uncompressed requests only, so that no
    /// request escapes validation.
    #[error("compressed request messages are not accepted; send them uncompressed")]
    CompressionUnsupported,
    /// The request message is larger than the server's limit (in bytes).
    #[error("the request message is larger than {0} bytes")]
    MessageTooLarge(usize),
    /// A field holds an identifier tutela never collects (E3), e.g. a US social security number.
    #[error("prohibited identifier")]
    ProhibitedIdentifier(Vec<Violation>),
    /// A write carries data categories that the call's purpose may not touch (E5).
    #[error("data not needed for the purpose")]
    NotForPurpose(Vec<Violation>),
    /// No such resource in the caller's tenant (also what another tenant's resource looks like).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The resource exists already, or an idempotency key was reused for another request.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The audit record could not be written, so the call must not succeed.
    #[error("the audit log is unavailable")]
    AuditUnavailable,
    /// A dependency (database, another service) is unavailable; retrying may help.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// The request asks for something this version does not do yet (a constant sentence).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// A bug or an unexpected failure; the cause is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a tutela operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Bad input in one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }

    /// An internal failure; `cause` is logged by the mapping, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// Whether this is a refusal of one subject that a listing for the purpose answers by leaving
    /// the subject out rather than failing: no consent to the purpose, or an objection to it.
    pub fn leaves_subject_out(&self) -> bool {
        matches!(self, Self::ConsentRequired { .. } | Self::Objected { .. })
    }

    /// The machine-readable reason a client can switch on.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(AuthFailure::Missing) => "TOKEN_MISSING",
            Self::Unauthenticated(AuthFailure::Invalid) => "TOKEN_INVALID",
            Self::Unauthenticated(AuthFailure::Expired) => "TOKEN_EXPIRED",
            Self::Unauthenticated(AuthFailure::Inconsistent(_)) => "TOKEN_INCONSISTENT",
            Self::PurposeMissing => "PURPOSE_MISSING",
            Self::PurposeUnknown => "PURPOSE_UNKNOWN",
            Self::PurposeNotRegistered(_) => Precondition::PurposeNotRegistered.reason(),
            Self::ConsentRequired { .. } => Precondition::ConsentRequired.reason(),
            Self::Restricted => Precondition::ProcessingRestricted.reason(),
            Self::Objected { .. } => Precondition::ProcessingObjected.reason(),
            Self::GuardianConsentRequired { .. } => Precondition::GuardianConsentRequired.reason(),
            Self::LegalHold => Precondition::LegalHold.reason(),
            Self::TransferSafeguardRequired { .. } => {
                Precondition::TransferSafeguardRequired.reason()
            }
            Self::FailedPrecondition { reason, .. } => reason.reason(),
            Self::Denied | Self::NotPermitted(_) => "ACCESS_DENIED",
            Self::CategoryDenied(_) => "CATEGORY_DENIED",
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::MalformedRequest(_) => "MALFORMED_REQUEST",
            Self::CompressionUnsupported => "COMPRESSION_UNSUPPORTED",
            Self::MessageTooLarge(_) => "MESSAGE_TOO_LARGE",
            Self::ProhibitedIdentifier(_) => "PROHIBITED_IDENTIFIER",
            Self::NotForPurpose(_) => "CATEGORY_NOT_FOR_PURPOSE",
            Self::NotFound(_) => "NOT_FOUND",
            Self::AlreadyExists(_) => "ALREADY_EXISTS",
            Self::AuditUnavailable => "AUDIT_UNAVAILABLE",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::NotImplemented(_) => "NOT_IMPLEMENTED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The precondition that failed, for the errors that answer FAILED_PRECONDITION.
    pub fn precondition(&self) -> Option<Precondition> {
        match self {
            Self::PurposeNotRegistered(_) => Some(Precondition::PurposeNotRegistered),
            Self::ConsentRequired { .. } => Some(Precondition::ConsentRequired),
            Self::Restricted => Some(Precondition::ProcessingRestricted),
            Self::Objected { .. } => Some(Precondition::ProcessingObjected),
            Self::GuardianConsentRequired { .. } => Some(Precondition::GuardianConsentRequired),
            Self::LegalHold => Some(Precondition::LegalHold),
            Self::TransferSafeguardRequired { .. } => Some(Precondition::TransferSafeguardRequired),
            Self::FailedPrecondition { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The gRPC code, as the gRPC status-code guide assigns them.
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PurposeMissing
            | Self::PurposeUnknown
            | Self::InvalidArgument(_)
            | Self::MalformedRequest(_)
            | Self::ProhibitedIdentifier(_)
            | Self::NotForPurpose(_) => Code::InvalidArgument,
            Self::Denied | Self::NotPermitted(_) | Self::CategoryDenied(_) => {
                Code::PermissionDenied
            }
            Self::PurposeNotRegistered(_)
            | Self::ConsentRequired { .. }
            | Self::Restricted
            | Self::Objected { .. }
            | Self::GuardianConsentRequired { .. }
            | Self::LegalHold
            | Self::TransferSafeguardRequired { .. }
            | Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::CompressionUnsupported | Self::NotImplemented(_) => Code::Unimplemented,
            Self::MessageTooLarge(_) => Code::ResourceExhausted,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::AuditUnavailable | Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(err: sea_orm::DbErr) -> Self {
        match err {
            // The pool could not hand out a connection: the database is down or overloaded.
            sea_orm::DbErr::Conn(_) | sea_orm::DbErr::ConnectionAcquire(_) => {
                Self::Unavailable(format!("database: {err}"))
            }
            other => Self::Internal(format!("database: {other}")),
        }
    }
}

impl From<tutela_store::StoreError> for Error {
    fn from(err: tutela_store::StoreError) -> Self {
        use tutela_store::StoreError;
        match err {
            StoreError::Database(db) => db.into(),
            StoreError::Erased => Self::FailedPrecondition {
                reason: Precondition::SubjectErased,
                message: "the subject's data was erased".into(),
            },
            StoreError::KeyNotFound => Self::NotFound("subject"),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        let reason = err.reason();
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        let message = match &err {
            Error::Unauthenticated(AuthFailure::Inconsistent(rule)) => {
                format!("the token's claims contradict each other: {rule}")
            }
            Error::PurposeMissing => {
                details.add_bad_request_violation(
                    PURPOSE_HEADER,
                    "every data call must name its purpose of processing in this metadata",
                );
                format!("missing {PURPOSE_HEADER} metadata")
            }
            Error::PurposeUnknown => {
                details.add_bad_request_violation(
                    PURPOSE_HEADER,
                    "not a purpose of the closed vocabulary (see tutela.common.v1.Purpose)",
                );
                format!("unknown purpose in {PURPOSE_HEADER}")
            }
            Error::InvalidArgument(violations)
            | Error::ProhibitedIdentifier(violations)
            | Error::NotForPurpose(violations) => {
                let fields: Vec<FieldViolation> = violations
                    .iter()
                    .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                    .collect();
                details.set_bad_request(fields);
                let names: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                format!("invalid request: {}", names.join(", "))
            }
            Error::PurposeNotRegistered(purpose) => {
                metadata.insert("purpose".into(), (*purpose).to_owned());
                details.add_precondition_failure_violation(
                    "REGISTER",
                    *purpose,
                    "the processing register does not list this purpose",
                );
                err.to_string()
            }
            Error::ConsentRequired { purpose, recipient } => {
                metadata.insert("purpose".into(), (*purpose).to_owned());
                let subject = match recipient {
                    Some(r) => {
                        metadata.insert("recipient".into(), r.clone());
                        format!("{purpose}/{r}")
                    }
                    None => (*purpose).to_owned(),
                };
                details.add_precondition_failure_violation(
                    "CONSENT",
                    subject,
                    "the subject has not given (or has withdrawn) consent for this purpose",
                );
                err.to_string()
            }
            Error::Objected { purpose } => {
                metadata.insert("purpose".into(), (*purpose).to_owned());
                details.add_precondition_failure_violation(
                    "OBJECTION",
                    *purpose,
                    "the subject objected to processing of their data for this purpose \
                     (GDPR Art. 21) and the objection stands",
                );
                err.to_string()
            }
            Error::TransferSafeguardRequired { country } => {
                metadata.insert("country".into(), country.clone());
                details.add_precondition_failure_violation(
                    "TRANSFER",
                    country.clone(),
                    "the country is outside the EEA and the UK and not on the register's \
                     adequacy list: name a transfer safeguard and its document reference",
                );
                err.to_string()
            }
            Error::GuardianConsentRequired {
                purpose,
                age_of_consent,
            } => {
                metadata.insert("purpose".into(), (*purpose).to_owned());
                metadata.insert("age_of_consent".into(), age_of_consent.to_string());
                details.add_precondition_failure_violation(
                    "GUARDIAN_CONSENT",
                    *purpose,
                    format!(
                        "the subject is under the age of consent ({age_of_consent}); record a \
                         parent's or guardian's consent for this purpose first"
                    ),
                );
                err.to_string()
            }
            Error::NotPermitted(denial) => {
                metadata.insert("action".into(), denial.rpc.clone());
                metadata.insert("purpose".into(), denial.purpose.to_owned());
                metadata.insert("why".into(), denial.cause.as_str().to_owned());
                match &denial.cause {
                    DenyCause::PurposeNotAllowed(allowed) => {
                        metadata.insert("allowed_purposes".into(), allowed.join(","));
                    }
                    DenyCause::Forbidden(policies) => {
                        metadata.insert("policies".into(), policies.join(","));
                    }
                    DenyCause::NoRule => {}
                }
                err.to_string()
            }
            Error::CategoryDenied(denial) => {
                metadata.insert("category".into(), denial.category.to_owned());
                metadata.insert("action".into(), denial.rpc.clone());
                metadata.insert("purpose".into(), denial.purpose.to_owned());
                let why = if denial.not_for_purpose {
                    "category_not_for_purpose"
                } else {
                    "category_not_readable"
                };
                metadata.insert("why".into(), why.to_owned());
                err.to_string()
            }
            Error::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                "internal error".to_owned()
            }
            Error::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                "temporarily unavailable; retry later".to_owned()
            }
            _ => err.to_string(),
        };
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_code_and_reason() {
        let table: Vec<(Error, Code, &str)> = vec![
            (
                Error::Unauthenticated(AuthFailure::Missing),
                Code::Unauthenticated,
                "TOKEN_MISSING",
            ),
            (
                Error::Unauthenticated(AuthFailure::Invalid),
                Code::Unauthenticated,
                "TOKEN_INVALID",
            ),
            (
                Error::Unauthenticated(AuthFailure::Expired),
                Code::Unauthenticated,
                "TOKEN_EXPIRED",
            ),
            (
                Error::Unauthenticated(AuthFailure::Inconsistent("a token carries a role")),
                Code::Unauthenticated,
                "TOKEN_INCONSISTENT",
            ),
            (
                Error::PurposeMissing,
                Code::InvalidArgument,
                "PURPOSE_MISSING",
            ),
            (
                Error::ProhibitedIdentifier(vec![Violation::new("profile.email", "x")]),
                Code::InvalidArgument,
                "PROHIBITED_IDENTIFIER",
            ),
            (
                Error::NotForPurpose(vec![Violation::new("profile.ethnicity", "x")]),
                Code::InvalidArgument,
                "CATEGORY_NOT_FOR_PURPOSE",
            ),
            (
                Error::PurposeUnknown,
                Code::InvalidArgument,
                "PURPOSE_UNKNOWN",
            ),
            (
                Error::PurposeNotRegistered("marketing"),
                Code::FailedPrecondition,
                "PURPOSE_NOT_REGISTERED",
            ),
            (Error::Denied, Code::PermissionDenied, "ACCESS_DENIED"),
            (
                Error::NotPermitted(Box::new(Denial {
                    rpc: "tutela.enrolment.v1.LearnerService/GetLearner".into(),
                    purpose: "marketing",
                    cause: DenyCause::NoRule,
                })),
                Code::PermissionDenied,
                "ACCESS_DENIED",
            ),
            (
                Error::CategoryDenied(Box::new(CategoryDenial {
                    category: "special_category",
                    rpc: "tutela.enrolment.v1.LearnerService/GetLearner".into(),
                    purpose: "course_administration",
                    not_for_purpose: false,
                })),
                Code::PermissionDenied,
                "CATEGORY_DENIED",
            ),
            (
                Error::ConsentRequired {
                    purpose: "marketing",
                    recipient: None,
                },
                Code::FailedPrecondition,
                "CONSENT_REQUIRED",
            ),
            (
                Error::Restricted,
                Code::FailedPrecondition,
                "PROCESSING_RESTRICTED",
            ),
            (
                Error::Objected {
                    purpose: "quality_assurance",
                },
                Code::FailedPrecondition,
                "PROCESSING_OBJECTED",
            ),
            (
                Error::GuardianConsentRequired {
                    purpose: "course_administration",
                    age_of_consent: 16,
                },
                Code::FailedPrecondition,
                "GUARDIAN_CONSENT_REQUIRED",
            ),
            (Error::LegalHold, Code::FailedPrecondition, "LEGAL_HOLD"),
            (
                Error::TransferSafeguardRequired {
                    country: "US".into(),
                },
                Code::FailedPrecondition,
                "TRANSFER_SAFEGUARD_REQUIRED",
            ),
            (
                Error::FailedPrecondition {
                    reason: Precondition::InvalidTransition,
                    message: "no".into(),
                },
                Code::FailedPrecondition,
                "INVALID_TRANSITION",
            ),
            (
                Error::invalid("learner.email", "not an email address"),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                Error::MalformedRequest("truncated"),
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
            ),
            (
                Error::CompressionUnsupported,
                Code::Unimplemented,
                "COMPRESSION_UNSUPPORTED",
            ),
            (
                Error::MessageTooLarge(1024),
                Code::ResourceExhausted,
                "MESSAGE_TOO_LARGE",
            ),
            (Error::NotFound("learner"), Code::NotFound, "NOT_FOUND"),
            (
                Error::AlreadyExists("learner"),
                Code::AlreadyExists,
                "ALREADY_EXISTS",
            ),
            (
                Error::AuditUnavailable,
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
            ),
            (
                Error::Unavailable("db".into()),
                Code::Unavailable,
                "UNAVAILABLE",
            ),
            (
                Error::NotImplemented("record fields"),
                Code::Unimplemented,
                "NOT_IMPLEMENTED",
            ),
            (Error::internal("boom"), Code::Internal, "INTERNAL"),
        ];
        for (err, code, reason) in table {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{status:?}");
            let info = status
                .get_details_error_info()
                .expect("every status has ErrorInfo");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn every_failed_precondition_names_its_precondition_as_its_reason() {
        let failing = Precondition::ALL
            .iter()
            .map(|p| Error::FailedPrecondition {
                reason: *p,
                message: "no".into(),
            })
            .chain([
                Error::PurposeNotRegistered("marketing"),
                Error::ConsentRequired {
                    purpose: "marketing",
                    recipient: None,
                },
                Error::Restricted,
                Error::Objected {
                    purpose: "marketing",
                },
                Error::GuardianConsentRequired {
                    purpose: "marketing",
                    age_of_consent: 13,
                },
                Error::LegalHold,
                Error::TransferSafeguardRequired {
                    country: "US".into(),
                },
            ]);
        for err in failing {
            assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
            let precondition = err.precondition().expect("a precondition");
            assert_eq!(precondition.reason(), err.reason());
        }
        assert_eq!(Error::Denied.precondition(), None);
    }

    /// The leading comment of each value of `tutela.common.v1.FailedPreconditionReason`, by
    /// value name, read from the source info the descriptor set keeps.
    fn documented_reasons() -> HashMap<String, String> {
        use prost_reflect::prost_types::FileDescriptorProto;
        const ENUM_TYPE: i32 = 5; // FileDescriptorProto.enum_type
        const ENUM_VALUE: i32 = 2; // EnumDescriptorProto.value
        let pool = tutela_proto::descriptor_pool().expect("the contract's descriptors");
        let file: &FileDescriptorProto = pool
            .file_descriptor_protos()
            .find(|f| f.name() == "tutela/common/v1/errors.proto")
            .expect("errors.proto is compiled");
        let (e, reasons) = file
            .enum_type
            .iter()
            .enumerate()
            .find(|(_, e)| e.name() == "FailedPreconditionReason")
            .expect("the FailedPreconditionReason enum");
        let comments = file.source_code_info.as_ref().expect("source info");
        reasons
            .value
            .iter()
            .enumerate()
            .map(|(v, value)| {
                let path = [ENUM_TYPE, e as i32, ENUM_VALUE, v as i32];
                let comment = comments
                    .location
                    .iter()
                    .find(|l| l.path == path)
                    .map(|l| l.leading_comments().trim().to_owned())
                    .unwrap_or_default();
                (value.name().to_owned(), comment)
            })
            .collect()
    }

    #[test]
    fn every_precondition_reason_is_documented_in_the_contract_and_no_other() {
        let documented = documented_reasons();
        for p in Precondition::ALL {
            let name = format!("FAILED_PRECONDITION_REASON_{}", p.reason());
            let comment = documented
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is missing from errors.proto"));
            assert!(!comment.is_empty(), "{name} has no comment in errors.proto");
        }
        let sent: Vec<String> = Precondition::ALL
            .iter()
            .map(|p| format!("FAILED_PRECONDITION_REASON_{}", p.reason()))
            .collect();
        for name in documented.keys() {
            assert!(
                name == "FAILED_PRECONDITION_REASON_UNSPECIFIED" || sent.contains(name),
                "errors.proto documents {name}, which no Precondition sends"
            );
        }
    }

    #[test]
    fn a_missing_purpose_names_the_metadata_key_as_the_bad_field() {
        let status = Status::from(Error::PurposeMissing);
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, PURPOSE_HEADER);
    }

    #[test]
    fn field_violations_are_returned_one_per_field() {
        let status = Status::from(Error::InvalidArgument(vec![
            Violation::new("learner.email", "not an email address"),
            Violation::new("learner.notes", "contains a prohibited identifier"),
        ]));
        let fields: Vec<_> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["learner.email", "learner.notes"]);
    }

    #[test]
    fn consent_required_names_the_purpose_and_recipient() {
        let status = Status::from(Error::ConsentRequired {
            purpose: "funder_reporting",
            recipient: Some("jobcentre".into()),
        });
        let pf = status.get_details_precondition_failure().unwrap();
        assert_eq!(pf.violations[0].r#type, "CONSENT");
        assert_eq!(pf.violations[0].subject, "funder_reporting/jobcentre");
    }

    #[test]
    fn an_access_refusal_names_the_action_the_purpose_and_why() {
        let status = Status::from(Error::NotPermitted(Box::new(Denial {
            rpc: "tutela.enrolment.v1.LearnerService/GetLearner".into(),
            purpose: "marketing",
            cause: DenyCause::PurposeNotAllowed(vec!["course_administration", "exam_booking"]),
        })));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "ACCESS_DENIED");
        assert_eq!(
            info.metadata["action"],
            "tutela.enrolment.v1.LearnerService/GetLearner"
        );
        assert_eq!(info.metadata["purpose"], "marketing");
        assert_eq!(info.metadata["why"], "purpose_not_allowed");
        assert_eq!(
            info.metadata["allowed_purposes"],
            "course_administration,exam_booking"
        );
        assert!(
            status.message().contains("GetLearner"),
            "{}",
            status.message()
        );

        let status = Status::from(Error::CategoryDenied(Box::new(CategoryDenial {
            category: "special_category",
            rpc: "tutela.enrolment.v1.LearnerService/UpdateLearner".into(),
            purpose: "exam_booking",
            not_for_purpose: true,
        })));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["category"], "special_category");
        assert_eq!(info.metadata["purpose"], "exam_booking");
        assert_eq!(info.metadata["why"], "category_not_for_purpose");
    }

    #[test]
    fn internal_causes_are_not_sent_to_the_client() {
        let status = Status::from(Error::internal(
            "connection to 10.0.0.3 refused: secret detail",
        ));
        assert_eq!(status.message(), "internal error");
    }
}
