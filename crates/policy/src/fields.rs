//! Generic operations on messages, driven by the contract's data-category annotations, so that
//! services do not list their fields by category by hand: which categories a write carries (data
//! minimisation, E5), and the split of a message into one part per category, so that each part is
//! sealed, read and erased on its own. (Prohibited identifiers are refused earlier, for every
//! request, by `crate::request`.)

use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, MessageDescriptor, ReflectMessage, Value};
use tutela_proto::common::DataCategory;

use crate::categories::CategorySet;
use crate::error::{Error, Result, Violation};

/// The descriptor of the contract's message `full_name`.
pub fn descriptor(full_name: &str) -> Result<MessageDescriptor> {
    tutela_proto::descriptor_pool()
        .map_err(Error::internal)?
        .get_message_by_name(full_name)
        .ok_or_else(|| Error::internal(format!("no message {full_name} in the contract")))
}

/// `message` as a dynamic message of type `full_name`.
pub fn to_dynamic<M: prost::Message>(message: &M, full_name: &str) -> Result<DynamicMessage> {
    DynamicMessage::decode(descriptor(full_name)?, message.encode_to_vec().as_slice())
        .map_err(Error::internal)
}

/// A dynamic message back as its generated type.
pub fn from_dynamic<M: prost::Message + Default>(message: &DynamicMessage) -> Result<M> {
    M::decode(message.encode_to_vec().as_slice()).map_err(Error::internal)
}

fn category(field: &FieldDescriptor) -> DataCategory {
    // The contract test guarantees every field is annotated; a missing one counts as the most
    // sensitive, never as "no personal data".
    tutela_proto::field_category(field).unwrap_or(DataCategory::SpecialCategory)
}

/// The fields of `message` that are set, with their categories, as `prefix.field`.
pub fn carried(message: &DynamicMessage, prefix: &str) -> Vec<(String, DataCategory)> {
    message
        .descriptor()
        .fields()
        .filter(|f| message.has_field(f))
        .map(|f| (format!("{prefix}.{}", f.name()), category(&f)))
        .collect()
}

/// The fields of `descriptor` that `paths` (a FieldMask's) name, with their categories; an
/// unknown path is a violation of `mask_field`.
pub fn masked(
    descriptor: &MessageDescriptor,
    paths: &[String],
    prefix: &str,
    mask_field: &str,
) -> Result<Vec<(FieldDescriptor, String, DataCategory)>> {
    let mut fields = Vec::new();
    let mut violations = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        match descriptor.get_field_by_name(path.trim()) {
            Some(f) if !fields.iter().any(|(g, _, _)| g == &f) => {
                let c = category(&f);
                fields.push((f.clone(), format!("{prefix}.{}", f.name()), c));
            }
            Some(_) => {}
            None => violations.push(Violation::new(
                format!("{mask_field}.paths[{i}]"),
                format!("not a field of {}", descriptor.name()),
            )),
        }
    }
    if paths.is_empty() {
        violations.push(Violation::new(
            mask_field,
            "required: name the fields to write",
        ));
    }
    if violations.is_empty() {
        Ok(fields)
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// Refuses fields whose category the purpose may not touch: one violation per field.
pub fn minimise<'a>(
    fields: impl IntoIterator<Item = (&'a str, DataCategory)>,
    allowed: CategorySet,
    purpose: &str,
) -> Result<()> {
    let violations: Vec<Violation> = fields
        .into_iter()
        .filter(|(_, c)| *c != DataCategory::None && !allowed.contains(*c))
        .map(|(path, c)| {
            Violation::new(
                path,
                format!(
                    "{} data is not needed for the purpose {purpose} (processing register)",
                    c.short_name()
                ),
            )
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::NotForPurpose(violations))
    }
}

/// `message` split into one encoded part per category of its set fields: each part is the
/// message with only that category's fields. Parts merge back with `Message::merge`.
pub fn split(message: &DynamicMessage) -> Vec<(DataCategory, Vec<u8>)> {
    let mut parts: Vec<(DataCategory, DynamicMessage)> = Vec::new();
    for (field, value) in message.fields() {
        let c = category(&field);
        let index = match parts.iter().position(|(pc, _)| *pc == c) {
            Some(i) => i,
            None => {
                parts.push((c, DynamicMessage::new(message.descriptor())));
                parts.len() - 1
            }
        };
        parts[index].1.set_field(&field, value.clone());
    }
    parts
        .into_iter()
        .map(|(c, part)| (c, part.encode_to_vec()))
        .collect()
}

/// The categories of the fields of `descriptor` (what a message of it can hold).
pub fn categories_of(descriptor: &MessageDescriptor) -> CategorySet {
    descriptor
        .fields()
        .map(|f| category(&f))
        .filter(|c| *c != DataCategory::None)
        .collect()
}

/// Sets (or, when `from` does not hold it, clears) `field` of `to` to `from`'s value.
pub fn copy_field(from: &DynamicMessage, to: &mut DynamicMessage, field: &FieldDescriptor) {
    if from.has_field(field) {
        to.set_field(field, from.get_field(field).into_owned());
    } else {
        to.clear_field(field);
    }
}

/// `message` as JSON for exports: fields by their proto names (only those set), enums by name,
/// timestamps in RFC 3339, bytes in hex.
pub fn to_json(message: &DynamicMessage) -> serde_json::Value {
    if message.descriptor().full_name() == "google.protobuf.Timestamp" {
        let seconds = message
            .get_field_by_name("seconds")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let nanos = message
            .get_field_by_name("nanos")
            .and_then(|v| v.as_i32())
            .unwrap_or(0);
        return chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0))
            .map(|t| serde_json::Value::String(t.to_rfc3339()))
            .unwrap_or(serde_json::Value::Null);
    }
    let mut object = serde_json::Map::new();
    for (field, value) in message.fields() {
        object.insert(field.name().to_owned(), value_to_json(&field, value));
    }
    serde_json::Value::Object(object)
}

fn map_key(key: &prost_reflect::MapKey) -> String {
    use prost_reflect::MapKey as K;
    match key {
        K::Bool(b) => b.to_string(),
        K::I32(n) => n.to_string(),
        K::I64(n) => n.to_string(),
        K::U32(n) => n.to_string(),
        K::U64(n) => n.to_string(),
        K::String(s) => s.clone(),
    }
}

fn value_to_json(field: &FieldDescriptor, value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Bool(b) => J::Bool(*b),
        Value::I32(n) => J::from(*n),
        Value::I64(n) => J::from(*n),
        Value::U32(n) => J::from(*n),
        Value::U64(n) => J::from(*n),
        Value::F32(n) => J::from(f64::from(*n)),
        Value::F64(n) => J::from(*n),
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(hex::encode(b)),
        Value::EnumNumber(n) => match field.kind() {
            prost_reflect::Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| J::from(*n), |v| J::String(v.name().to_owned())),
            _ => J::from(*n),
        },
        Value::Message(m) => to_json(m),
        Value::List(items) => J::Array(items.iter().map(|v| value_to_json(field, v)).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (map_key(k), value_to_json(field, v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consent_evidence(reference: &str) -> DynamicMessage {
        let evidence = tutela_proto::consent::ConsentEvidence {
            method: 1,
            wording_version: "v1".into(),
            wording_sha256: "a".repeat(64),
            evidence_reference: reference.into(),
            actor: 2,
            guardian: Some(tutela_proto::consent::Guardian {
                guardian_id: String::new(),
                name: "Ada 123-45-6789".into(),
                relationship: "parent".into(),
            }),
        };
        to_dynamic(&evidence, "tutela.consent.v1.ConsentEvidence").unwrap()
    }

    #[test]
    fn a_message_splits_into_parts_per_category_that_merge_back() {
        let whole = consent_evidence("form-1");
        let parts = split(&whole);
        let categories: CategorySet = parts.iter().map(|(c, _)| *c).collect();
        assert!(categories.contains(DataCategory::None));
        let mut merged = tutela_proto::consent::ConsentEvidence::default();
        for (_, bytes) in &parts {
            prost::Message::merge(&mut merged, bytes.as_slice()).unwrap();
        }
        assert_eq!(
            merged,
            from_dynamic::<tutela_proto::consent::ConsentEvidence>(&whole).unwrap()
        );
    }

    #[test]
    fn minimisation_names_each_field_outside_the_purpose() {
        let allowed = CategorySet::of(&[DataCategory::Identity]);
        let err = minimise(
            [
                ("p.given_name", DataCategory::Identity),
                ("p.email", DataCategory::Contact),
                ("p.ethnicity", DataCategory::SpecialCategory),
            ],
            allowed,
            "certification",
        )
        .unwrap_err();
        let Error::NotForPurpose(v) = err else {
            panic!()
        };
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].field, "p.email");
    }
}
