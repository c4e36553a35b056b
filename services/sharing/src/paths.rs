//! Field paths of the enrolment contract, as agreements name what a partner may receive (S3):
//! looked up in the contract's descriptors, so that an agreement can only name a field that
//! exists, and its data categories come from the same annotations the guard redacts by.
//!
//! A path is rooted at the learner (`tutela.enrolment.v1.Learner`: `learner_id`,
//! `profile.given_name`), or at one of the learner's records, named by its first segment:
//! `enrolment.` (`Enrolment`), `result.` (`AssessmentResult`), `certificate.` (`Certificate`).
//! It must end at one field, never at a whole message (which would carry fields of every
//! category under one name); a timestamp counts as one field. The categories of a path are those
//! of every segment along it, so a field inside a container the contract marks sensitive is as
//! sensitive as its container.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use tutela_policy::CategorySet;
use tutela_policy::fields::descriptor;
use tutela_proto::common::DataCategory;

/// The learner, root of paths without a record prefix.
const LEARNER: &str = "tutela.enrolment.v1.Learner";

/// A learner's records a path may start from, by the prefix that names them.
const RECORDS: [(&str, &str); 3] = [
    ("enrolment", "tutela.enrolment.v1.Enrolment"),
    ("result", "tutela.enrolment.v1.AssessmentResult"),
    ("certificate", "tutela.enrolment.v1.Certificate"),
];

/// Messages that are one value, not a container of fields.
const SCALAR_MESSAGES: [&str; 1] = ["google.protobuf.Timestamp"];

/// Why a path names no field a partner can receive, in words that fit a field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// A segment is not a field where it stands.
    Unknown,
    /// The path ends at a message, not a field.
    NotAField,
    /// The contract could not be read (a broken build).
    Contract,
}

impl PathError {
    /// What a field violation says.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Unknown => {
                "not a field of the enrolment contract (e.g. profile.given_name, result.score)"
            }
            Self::NotAField => {
                "names a whole message: name each field the partner may receive (e.g. profile.given_name)"
            }
            Self::Contract => "the enrolment contract could not be read",
        }
    }
}

/// The data categories `path` carries (every personal category along it; empty for a field of
/// no personal data), or why it names no field.
pub fn categories(path: &str) -> Result<CategorySet, PathError> {
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(PathError::Unknown);
    }
    let (root, rest) = match RECORDS.iter().find(|(prefix, _)| *prefix == segments[0]) {
        Some((_, message)) if segments.len() > 1 => (*message, &segments[1..]),
        Some(_) => return Err(PathError::NotAField),
        None => (LEARNER, &segments[..]),
    };
    let mut message: MessageDescriptor = descriptor(root).map_err(|_| PathError::Contract)?;
    let mut categories = CategorySet::EMPTY;
    let mut last: Option<FieldDescriptor> = None;
    for segment in rest {
        if let Some(field) = &last {
            // Only a message field has fields under it; a repeated one would need an index.
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => message = m,
                _ => return Err(PathError::Unknown),
            }
        }
        let field = message
            .get_field_by_name(segment)
            .ok_or(PathError::Unknown)?;
        // A field without its annotation (which the contract's test rules out) counts as the
        // most sensitive, never as "no personal data".
        let category =
            tutela_proto::field_category(&field).unwrap_or(DataCategory::SpecialCategory);
        if category != DataCategory::None {
            categories.insert(category);
        }
        last = Some(field);
    }
    match last {
        Some(field) => match field.kind() {
            Kind::Message(m) if !SCALAR_MESSAGES.contains(&m.full_name()) => {
                Err(PathError::NotAField)
            }
            _ => Ok(categories),
        },
        None => Err(PathError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &str) -> Vec<&'static str> {
        categories(path).unwrap().names()
    }

    #[test]
    fn paths_resolve_to_the_categories_the_contract_annotates() {
        assert_eq!(names("profile.given_name"), ["identity"]);
        assert_eq!(names("profile.email"), ["contact"]);
        assert_eq!(names("profile.photo_id_reference"), ["identity_document"]);
        assert_eq!(names("profile.disabilities"), ["special_category"]);
        assert_eq!(names("learner_id"), ["identity"]);
        assert_eq!(names("result.score"), ["assessment"]);
        assert_eq!(names("result.assessed_at"), ["assessment"]);
        assert_eq!(names("certificate.title"), ["education"]);
        // The container's category counts too.
        assert_eq!(names("result.learner.subject_id"), ["identity"]);
        assert!(names("created_at").is_empty());
    }

    #[test]
    fn unknown_paths_and_whole_messages_are_refused() {
        for unknown in [
            "profile.shoe_size",
            "profile.given_name.first",
            "profil.given_name",
            "",
            "profile.",
            ".profile",
            "result.nothing",
            "profile.previous_qualifications.x",
        ] {
            assert_eq!(categories(unknown), Err(PathError::Unknown), "{unknown}");
        }
        for message in ["profile", "result", "enrolment", "result.learner"] {
            assert_eq!(categories(message), Err(PathError::NotAField), "{message}");
        }
    }
}
