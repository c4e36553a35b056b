//! The tutela contract as Rust: generated messages, clients and servers, plus the encoded file
//! descriptor set (for reflection), the data-category annotation of every field, which the
//! guard's redaction, the exporters and the audit record read, and the text rule of every string
//! field, which the guard's request validation reads.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MethodDescriptor, Value};

/// Generated code, one module per proto package (prost's relative paths need this nesting).
pub mod tutela {
    pub mod audit {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.audit.v1.rs"));
        }
    }
    pub mod common {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.common.v1.rs"));
        }
    }
    pub mod consent {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.consent.v1.rs"));
        }
    }
    pub mod enrolment {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.enrolment.v1.rs"));
        }
    }
    pub mod privacy {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.privacy.v1.rs"));
            /// Defined in `tutela.common.v1` (the ledger and the rights contract both name it),
            /// used with the rights contract.
            pub use super::super::common::v1::VerificationMethod;
        }
    }
    pub mod rights {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.rights.v1.rs"));
        }
    }
    pub mod sharing {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.sharing.v1.rs"));
        }
    }
    pub mod survey {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.survey.v1.rs"));
        }
    }
    pub mod subscription {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tutela.subscription.v1.rs"));
        }
    }
}

pub use tutela::audit::v1 as audit;
pub use tutela::common::v1 as common;
pub use tutela::consent::v1 as consent;
pub use tutela::enrolment::v1 as enrolment;
pub use tutela::privacy::v1 as privacy;
pub use tutela::rights::v1 as rights;
pub use tutela::sharing::v1 as sharing;
pub use tutela::subscription::v1 as subscription;
pub use tutela::survey::v1 as survey;

use common::{Authorisation, DataCategory, LegalBasis, Purpose, TextKind, TextRule};

/// The encoded `FileDescriptorSet` of every tutela proto and its imports, custom options included.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tutela_descriptor.bin"));

/// The encoded `FileDescriptorSet` of `google/rpc/error_details.proto` (ErrorInfo, BadRequest,
/// PreconditionFailure, ...) and its imports: the details of every tutela error, for reflection.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/error_details_descriptor.bin"));

/// Full name of the field option that carries a field's data category.
pub const CATEGORY_OPTION: &str = "tutela.common.v1.category";

/// Full name of the field option that carries a string field's text rule.
pub const TEXT_OPTION: &str = "tutela.common.v1.text";

/// Full name of the method option that declares how an RPC is authorised.
pub const AUTHORISATION_OPTION: &str = "tutela.common.v1.authorisation";

static POOL: LazyLock<Result<DescriptorPool, prost_reflect::DescriptorError>> =
    LazyLock::new(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET));

/// The descriptor pool of the contract. It is built once from bytes compiled into this crate, so
/// it only fails if the build produced a broken set, which the crate's tests rule out.
pub fn descriptor_pool() -> Result<&'static DescriptorPool, &'static prost_reflect::DescriptorError>
{
    POOL.as_ref()
}

/// The data category a field is annotated with, or `None` when the annotation is missing (or
/// holds a value this build does not know).
pub fn field_category(field: &FieldDescriptor) -> Option<DataCategory> {
    // The contract's own fields are looked up in a table made once: reading a field's options
    // decodes them, and the guard's redaction asks for every field of every response message.
    if let Ok(pool) = descriptor_pool()
        && field.parent_pool() == pool
        && let Some(category) = CATEGORIES.get(field.full_name())
    {
        return *category;
    }
    annotated_category(field)
}

/// The category of every field of every message of the contract, by the field's full name.
static CATEGORIES: LazyLock<std::collections::HashMap<String, Option<DataCategory>>> =
    LazyLock::new(|| {
        descriptor_pool()
            .map(|pool| {
                pool.all_messages()
                    .flat_map(|m| m.fields().collect::<Vec<_>>())
                    .map(|f| (f.full_name().to_owned(), annotated_category(&f)))
                    .collect()
            })
            .unwrap_or_default()
    });

/// [`field_category`] read from the field's options.
fn annotated_category(field: &FieldDescriptor) -> Option<DataCategory> {
    let options = field.options();
    let pool = field.parent_pool();
    let ext = pool.get_extension_by_name(CATEGORY_OPTION)?;
    if !options.has_extension(&ext) {
        return None;
    }
    match options.get_extension(&ext).as_ref() {
        Value::EnumNumber(n) => DataCategory::try_from(*n)
            .ok()
            .filter(|c| *c != DataCategory::Unspecified),
        _ => None,
    }
}

/// How an RPC is authorised, as its `authorisation` method option declares: a signed token in
/// the message only when the option says so explicitly; absent, unset or a value this build does
/// not know is a bearer token, so that nothing but the contract's own word skips the full check.
pub fn method_authorisation(method: &MethodDescriptor) -> Authorisation {
    let options = method.options();
    let declared = method
        .parent_pool()
        .get_extension_by_name(AUTHORISATION_OPTION)
        .filter(|ext| options.has_extension(ext))
        .and_then(|ext| match options.get_extension(&ext).as_ref() {
            Value::EnumNumber(n) => Authorisation::try_from(*n).ok(),
            _ => None,
        });
    match declared {
        Some(Authorisation::MessageToken) => Authorisation::MessageToken,
        _ => Authorisation::BearerToken,
    }
}

/// Names of the fields of `tutela.*` messages that lack a data-category annotation, as
/// `package.Message.field`. The contract requires this to be empty.
pub fn unannotated_fields(pool: &DescriptorPool) -> Vec<String> {
    pool.all_messages()
        .filter(|m| m.package_name().starts_with("tutela."))
        // Map entries are synthesised by protoc; the map field itself carries the annotation.
        .filter(|m| !m.is_map_entry())
        .flat_map(|m| m.fields().collect::<Vec<_>>())
        .filter(|f| field_category(f).is_none())
        .map(|f| f.full_name().to_owned())
        .collect()
}

/// The text rule a string field is annotated with, or `None` when the annotation is missing, has
/// no kind, or has no maximum length.
pub fn field_text_rule(field: &FieldDescriptor) -> Option<TextRule> {
    let options = field.options();
    let ext = field.parent_pool().get_extension_by_name(TEXT_OPTION)?;
    if !options.has_extension(&ext) {
        return None;
    }
    let rule: TextRule = match options.get_extension(&ext).as_ref() {
        Value::Message(m) => m.transcode_to().ok()?,
        _ => return None,
    };
    let known = TextKind::try_from(rule.kind).is_ok_and(|k| k != TextKind::Unspecified);
    (known && rule.max_length > 0).then_some(rule)
}

/// Names of the string fields (repeated ones included) of `tutela.*` messages that lack a usable
/// text rule, as `package.Message.field`. The contract requires this to be empty.
pub fn unruled_string_fields(pool: &DescriptorPool) -> Vec<String> {
    pool.all_messages()
        .filter(|m| m.package_name().starts_with("tutela."))
        .flat_map(|m| m.fields().collect::<Vec<_>>())
        .filter(|f| f.kind() == Kind::String && field_text_rule(f).is_none())
        .map(|f| f.full_name().to_owned())
        .collect()
}

impl survey::release::Results {
    /// The protobuf encoding of the one results message that is set: what a release stores and
    /// what its `output_sha256` is the hash of, so that the survey service that makes a release
    /// and the sharing service that checks it hash the same bytes.
    pub fn encoded(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Self::Aggregate(r) => r.encode_to_vec(),
            Self::Microdata(r) => r.encode_to_vec(),
            Self::DifferentiallyPrivate(r) => r.encode_to_vec(),
        }
    }
}

/// `short_name` / `from_short_name` for a proto enum from its table of short names (the spelling
/// configuration, metadata, the register and audit records use).
macro_rules! short_names {
    ($enum:ty, $table:ident) => {
        impl $enum {
            /// The short, lower-case name; `unspecified` for the zero value.
            pub fn short_name(self) -> &'static str {
                $table
                    .iter()
                    .find(|(v, _)| *v == self)
                    .map_or("unspecified", |(_, n)| n)
            }

            /// The value with this short name.
            pub fn from_short_name(name: &str) -> Option<Self> {
                $table.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
            }
        }
    };
}

/// Short, lower-case names of the categories as configuration, the register and audit records
/// spell them. A test checks this table against the proto enum, so the two cannot drift.
pub const CATEGORY_NAMES: [(DataCategory, &str); 12] = [
    (DataCategory::None, "none"),
    (DataCategory::Identity, "identity"),
    (DataCategory::Contact, "contact"),
    (DataCategory::Demographic, "demographic"),
    (DataCategory::SpecialCategory, "special_category"),
    (DataCategory::Employment, "employment"),
    (DataCategory::IdentityDocument, "identity_document"),
    (DataCategory::Education, "education"),
    (DataCategory::Assessment, "assessment"),
    (DataCategory::SurveyResponse, "survey_response"),
    (DataCategory::Communication, "communication"),
    (DataCategory::Technical, "technical"),
];

short_names!(DataCategory, CATEGORY_NAMES);

/// Short names of the purposes, as the `x-tutela-purpose` metadata, the register and audit
/// records spell them. A test checks this table against the proto enum.
pub const PURPOSE_NAMES: [(Purpose, &str); 15] = [
    (Purpose::CourseAdministration, "course_administration"),
    (Purpose::Certification, "certification"),
    (Purpose::ExamBooking, "exam_booking"),
    (Purpose::ExamResults, "exam_results"),
    (Purpose::FunderReporting, "funder_reporting"),
    (Purpose::QualityAssurance, "quality_assurance"),
    (Purpose::Marketing, "marketing"),
    (Purpose::ResearchStatistics, "research_statistics"),
    (Purpose::LegalObligation, "legal_obligation"),
    (
        Purpose::MalpracticeInvestigation,
        "malpractice_investigation",
    ),
    (Purpose::SecurityInvestigation, "security_investigation"),
    (Purpose::SubjectRights, "subject_rights"),
    (Purpose::ServiceCommunication, "service_communication"),
    (Purpose::ThirdPartyDisclosure, "third_party_disclosure"),
    (Purpose::ConsentManagement, "consent_management"),
];

short_names!(Purpose, PURPOSE_NAMES);

/// Short names of the legal bases (GDPR Art. 6(1)).
pub const LEGAL_BASIS_NAMES: [(LegalBasis, &str); 6] = [
    (LegalBasis::Consent, "consent"),
    (LegalBasis::Contract, "contract"),
    (LegalBasis::LegalObligation, "legal_obligation"),
    (LegalBasis::VitalInterests, "vital_interests"),
    (LegalBasis::PublicTask, "public_task"),
    (LegalBasis::LegitimateInterests, "legitimate_interests"),
];

short_names!(LegalBasis, LEGAL_BASIS_NAMES);

/// Short names of the kinds of rights request, as the rights service stores them and the
/// register's `[rights] dpo_approval` names them.
pub const RIGHTS_REQUEST_KIND_NAMES: [(rights::RightsRequestKind, &str); 6] = [
    (rights::RightsRequestKind::Access, "access"),
    (rights::RightsRequestKind::Portability, "portability"),
    (rights::RightsRequestKind::Erasure, "erasure"),
    (rights::RightsRequestKind::Restriction, "restriction"),
    (rights::RightsRequestKind::Rectification, "rectification"),
    (rights::RightsRequestKind::Objection, "objection"),
];

short_names!(rights::RightsRequestKind, RIGHTS_REQUEST_KIND_NAMES);

/// Short names of the states of a rights request, as the rights service stores them.
pub const RIGHTS_REQUEST_STATE_NAMES: [(rights::RightsRequestState, &str); 6] = [
    (rights::RightsRequestState::Received, "received"),
    (
        rights::RightsRequestState::IdentityVerified,
        "identity_verified",
    ),
    (rights::RightsRequestState::InProgress, "in_progress"),
    (rights::RightsRequestState::Completed, "completed"),
    (
        rights::RightsRequestState::PartiallyCompleted,
        "partially_completed",
    ),
    (rights::RightsRequestState::Refused, "refused"),
];

short_names!(rights::RightsRequestState, RIGHTS_REQUEST_STATE_NAMES);

/// Short names of who asked for a rights request, as the rights service stores them.
pub const REQUESTER_NAMES: [(rights::Requester, &str); 3] = [
    (rights::Requester::Subject, "subject"),
    (rights::Requester::Guardian, "guardian"),
    (rights::Requester::AuthorisedAgent, "authorised_agent"),
];

short_names!(rights::Requester, REQUESTER_NAMES);

/// Short names of the ways a rights requester's identity is checked, as the consent ledger
/// stores them.
pub const VERIFICATION_METHOD_NAMES: [(privacy::VerificationMethod, &str); 4] = [
    (
        privacy::VerificationMethod::PhotoIdInPerson,
        "photo_id_in_person",
    ),
    (privacy::VerificationMethod::PhotoIdVideo, "photo_id_video"),
    (
        privacy::VerificationMethod::KnowledgeCheck,
        "knowledge_check",
    ),
    (
        privacy::VerificationMethod::AuthenticatedAccount,
        "authenticated_account",
    ),
];

short_names!(privacy::VerificationMethod, VERIFICATION_METHOD_NAMES);
