//! Puts an access request's bundle together from what its tasks kept: each service's export,
//! opened from under the subject's key, the register's purposes in plain words, and the actual
//! recipients the sharing service's export names. The archive itself is [`crate::bundle`]'s.

use std::collections::BTreeMap;

use tutela_policy::{CategorySet, Error, Result};
use tutela_proto::common::DataCategory;

use crate::Rights;
use crate::bundle::{BundleInput, PurposeInfo, RecipientInfo, ServiceDocument};
use crate::entity::{request, task};

/// The field a service's export is sealed under: bound to the request and the service, so that
/// an export cannot be passed off as another's.
pub(crate) fn export_field(request_id: &str, service: &str) -> String {
    format!("export/{request_id}/{service}")
}

/// The register's purposes, as the bundle explains them.
fn purposes(rights: &Rights) -> Vec<PurposeInfo> {
    let register = &rights.register;
    register
        .purposes
        .iter()
        .map(|p| PurposeInfo {
            name: p.purpose.short_name().to_owned(),
            description: p.description.clone(),
            legal_bases: p
                .legal_bases
                .iter()
                .map(|b| b.short_name().to_owned())
                .collect(),
            categories: p
                .categories
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            retention: p.retention.describe(),
            recipient_kinds: p
                .recipients
                .iter()
                .map(|id| {
                    register
                        .recipients
                        .get(id)
                        .map_or_else(|| id.clone(), |r| r.description.clone())
                })
                .collect(),
        })
        .collect()
}

/// Calls `f` with every JSON object in `value`, outermost first.
fn objects(
    value: &serde_json::Value,
    f: &mut impl FnMut(&serde_json::Map<String, serde_json::Value>),
) {
    match value {
        serde_json::Value::Object(map) => {
            f(map);
            for v in map.values() {
                objects(v, f);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                objects(v, f);
            }
        }
        _ => {}
    }
}

/// The organisations a service's export says received the subject's data: every object with a
/// `recipient` name (the sharing service's disclosure log), once per recipient and purpose.
fn recipients(documents: &[ServiceDocument]) -> Vec<RecipientInfo> {
    let mut found: BTreeMap<(String, String), RecipientInfo> = BTreeMap::new();
    for d in documents {
        objects(&d.document, &mut |map| {
            let Some(name) = map.get("recipient").and_then(|v| v.as_str()) else {
                return;
            };
            let text = |key: &str| {
                map.get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let purpose = text("purpose");
            let entry = found
                .entry((name.to_owned(), purpose.clone()))
                .or_insert_with(|| RecipientInfo {
                    name: name.to_owned(),
                    purpose,
                    country: text("recipient_country"),
                    fields: Vec::new(),
                    safeguard: Some(text("transfer_safeguard")).filter(|s| !s.is_empty()),
                });
            for f in map
                .get("fields")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
            {
                if !entry.fields.iter().any(|have| have == f) {
                    entry.fields.push(f.to_owned());
                }
            }
        });
    }
    found.into_values().collect()
}

/// The ids a service's export names beside a human name (`survey_id` with `survey`,
/// `course_id` with `course_title`, `topic` with `topic_title`), so that the index shows names
/// wherever those ids appear.
fn names(documents: &[ServiceDocument]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in documents {
        objects(&d.document, &mut |map| {
            for (key, id) in map {
                let Some(id) = id.as_str() else { continue };
                // `course_id` is named by `course`, `course_name` or `course_title`; a bare
                // `topic` by `topic_name` or `topic_title`.
                let (stem, bare) = match key.strip_suffix("_id") {
                    Some(stem) => (stem, Some(stem.to_owned())),
                    None => (key.as_str(), None),
                };
                let keys = [format!("{stem}_name"), format!("{stem}_title")];
                for name_key in bare.into_iter().chain(keys) {
                    if let Some(name) = map.get(&name_key).and_then(|v| v.as_str()) {
                        out.insert(id.to_owned(), name.to_owned());
                    }
                }
            }
        });
    }
    out
}

/// The archive of `row`'s bundle from its `tasks`, and the categories it discloses.
pub(crate) async fn archive(
    rights: &Rights,
    row: &request::Model,
    tasks: &[task::Model],
) -> Result<(Vec<u8>, CategorySet)> {
    let mut services = Vec::new();
    let mut incomplete = Vec::new();
    let mut disclosed = CategorySet::EMPTY;
    let exported: Vec<&task::Model> = tasks.iter().filter(|t| t.export.is_some()).collect();
    let key = if exported.is_empty() {
        None
    } else {
        Some(
            rights
                .vault
                .get(&row.tenant, &row.subject_id)
                .await
                .map_err(Error::from)?,
        )
    };
    for t in tasks {
        let (Some(sealed), Some(key)) = (&t.export, &key) else {
            incomplete.push((
                t.service.clone(),
                match &t.last_error {
                    Some(e) => format!("this part could not be collected: {e}"),
                    None => "this part could not be collected".to_owned(),
                },
            ));
            continue;
        };
        let opened = key
            .open(&export_field(&row.request_id, &t.service), sealed)
            .map_err(Error::from)?;
        let document: serde_json::Value = serde_json::from_slice(&opened)
            .map_err(|_| Error::internal("a kept export is not JSON"))?;
        let categories = crate::coordinator::outcome_categories(t)?;
        disclosed = disclosed.union(CategorySet::of(&categories));
        services.push(ServiceDocument {
            service: t.service.clone(),
            document,
            categories: categories
                .iter()
                .map(|c| c.short_name().to_owned())
                .collect(),
        });
    }
    let organisation = &rights.register.organisation;
    let input = BundleInput {
        request_id: row.request_id.clone(),
        kind: row.kind.clone(),
        organisation: organisation.name.clone(),
        privacy_contact: organisation.privacy_contact.clone(),
        received_at: row.received_at,
        completed_at: row.finished_at.unwrap_or(row.received_at),
        recipients: recipients(&services),
        names: names(&services),
        purposes: purposes(rights),
        services,
        incomplete,
    };
    let archive = crate::bundle::archive(&input).map_err(Error::internal)?;
    // The subject's id is in every part of it.
    Ok((
        archive,
        disclosed.union(CategorySet::of(&[DataCategory::Identity])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(service: &str, document: serde_json::Value) -> ServiceDocument {
        ServiceDocument {
            service: service.into(),
            document,
            categories: Vec::new(),
        }
    }

    #[test]
    fn recipients_are_read_once_per_organisation_and_purpose_with_every_field() {
        let docs = [doc(
            "sharing",
            serde_json::json!({ "disclosures": [
                { "recipient": "Exam Board", "purpose": "exam_booking", "recipient_country": "GB",
                  "fields": ["profile.given_name"] },
                { "recipient": "Exam Board", "purpose": "exam_booking", "recipient_country": "GB",
                  "fields": ["profile.given_name", "profile.family_name"] },
                { "recipient": "Funder", "purpose": "funder_reporting", "recipient_country": "US",
                  "fields": [], "transfer_safeguard": "sccs" },
            ]}),
        )];
        let found = recipients(&docs);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "Exam Board");
        assert_eq!(
            found[0].fields,
            ["profile.given_name", "profile.family_name"]
        );
        assert_eq!(found[1].safeguard.as_deref(), Some("sccs"));
    }

    #[test]
    fn ids_named_beside_their_names_are_resolved() {
        let docs = [doc(
            "survey",
            serde_json::json!({ "invitations": [
                { "survey_id": "s-1", "survey": "End of course" },
                { "course_id": "c-1", "course_title": "Welding" },
                { "topic_id": "t-1" },
                { "topic": "future_courses", "topic_title": "Courses starting next year" },
            ]}),
        )];
        let names = names(&docs);
        assert_eq!(names.get("s-1").map(String::as_str), Some("End of course"));
        assert_eq!(names.get("c-1").map(String::as_str), Some("Welding"));
        assert_eq!(
            names.get("future_courses").map(String::as_str),
            Some("Courses starting next year")
        );
        assert!(!names.contains_key("t-1"));
    }
}
