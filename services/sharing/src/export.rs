//! File layouts of file deliveries (channel (b)): the CSV a partner portal takes as a candidate
//! list, and an XML funder return. A file is rendered from the delivery's records, so the same
//! delivery always gives the same bytes (and the hash recorded when it was made).

use tutela_policy::{Error, Result, fields};
use tutela_proto::sharing::{DeliveredRecord, FileLayout};

use crate::entity::delivery;

/// The layouts, by their stored names.
pub const LAYOUTS: [(FileLayout, &str); 2] = [
    (FileLayout::CandidatesCsv, "candidates_csv"),
    (FileLayout::FunderReturnXml, "funder_return_xml"),
];

/// A rendered file, with the byte offset at which each record ends (for progress).
pub struct Rendered {
    /// The file.
    pub bytes: Vec<u8>,
    /// `ends[i]`: the offset just after record `i`.
    pub ends: Vec<usize>,
}

/// Renders `records` of delivery `d` (whose agreement named `paths`) in the delivery's layout.
pub fn render(
    d: &delivery::Model,
    paths: &[String],
    records: &[DeliveredRecord],
) -> Result<Rendered> {
    let columns: Vec<&String> = paths.iter().filter(|p| *p != "learner_id").collect();
    let mut out = Rendered {
        bytes: Vec::with_capacity(records.len() * 128 + 256),
        ends: Vec::with_capacity(records.len()),
    };
    match d.layout.as_str() {
        "candidates_csv" => {
            let mut header = vec!["candidate_ref".to_owned()];
            header.extend(columns.iter().map(|p| (*p).clone()));
            csv_row(&mut out.bytes, &header);
            for r in records {
                let learner = learner_of(r)?;
                let mut row = vec![r.pseudonym.clone()];
                row.extend(columns.iter().map(|p| value_at(&learner, p)));
                csv_row(&mut out.bytes, &row);
                out.ends.push(out.bytes.len());
            }
        }
        "funder_return_xml" => {
            let b = &mut out.bytes;
            b.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
            b.extend_from_slice(
                format!(
                    "<FunderReturn xmlns=\"urn:tutela:funder-return:1\" delivery=\"{}\" purpose=\"{}\" created=\"{}\">\n",
                    xml(&d.delivery_id),
                    xml(&d.purpose),
                    d.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
                .as_bytes(),
            );
            for r in records {
                let learner = learner_of(r)?;
                let b = &mut out.bytes;
                b.extend_from_slice(
                    format!("  <Learner ref=\"{}\">\n", xml(&r.pseudonym)).as_bytes(),
                );
                for p in &columns {
                    b.extend_from_slice(
                        format!(
                            "    <Field path=\"{}\">{}</Field>\n",
                            xml(p),
                            xml(&value_at(&learner, p))
                        )
                        .as_bytes(),
                    );
                }
                b.extend_from_slice(b"  </Learner>\n");
                out.ends.push(out.bytes.len());
            }
            out.bytes.extend_from_slice(b"</FunderReturn>\n");
        }
        _ => return Err(Error::internal("a file delivery of an unknown layout")),
    }
    Ok(out)
}

/// A record as JSON, in the one spelling exports use (`fields::to_json`: enums by name,
/// timestamps in RFC 3339): the learner's fields at the top, and the learner's records as lists
/// under the prefixes their paths start with (`enrolment`, `result`, `certificate`).
fn learner_of(r: &DeliveredRecord) -> Result<serde_json::Value> {
    let learner = r.learner.clone().unwrap_or_default();
    let mut json = fields::to_json(&fields::to_dynamic(
        &learner,
        "tutela.enrolment.v1.Learner",
    )?);
    let lists = [
        (
            "enrolment",
            list(&r.enrolments, "tutela.enrolment.v1.Enrolment")?,
        ),
        (
            "result",
            list(&r.results, "tutela.enrolment.v1.AssessmentResult")?,
        ),
        (
            "certificate",
            list(&r.certificates, "tutela.enrolment.v1.Certificate")?,
        ),
    ];
    if let serde_json::Value::Object(map) = &mut json {
        for (prefix, items) in lists {
            map.insert(prefix.to_owned(), items);
        }
    }
    Ok(json)
}

/// `records` as a JSON list. A number or flag at its default is written out (`false`, `0`):
/// proto3 does not tell it from unset, and in a file an empty cell would read as unknown, where
/// the partner pulling the same record reads the default.
fn list<M: prost::Message>(records: &[M], full_name: &str) -> Result<serde_json::Value> {
    use prost_reflect::{Kind, ReflectMessage};
    records
        .iter()
        .map(|m| {
            let message = fields::to_dynamic(m, full_name)?;
            let mut json = fields::to_json(&message);
            if let serde_json::Value::Object(map) = &mut json {
                for field in message.descriptor().fields() {
                    let default = match field.kind() {
                        _ if field.is_list() || field.is_map() => continue,
                        Kind::Bool => serde_json::Value::Bool(false),
                        Kind::Double | Kind::Float => serde_json::json!(0.0),
                        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 => {
                            serde_json::json!(0)
                        }
                        _ => continue,
                    };
                    map.entry(field.name()).or_insert(default);
                }
            }
            Ok(json)
        })
        .collect::<Result<Vec<_>>>()
        .map(serde_json::Value::Array)
}

/// The value at `path` as text: strings as they are, lists joined with "; " (a path through a
/// list of records gives each record's value: `result.score` is `78; 91`), absent fields empty.
fn value_at(record: &serde_json::Value, path: &str) -> String {
    let segments: Vec<&str> = path.split('.').collect();
    let mut found = Vec::new();
    values_at(record, &segments, &mut found);
    found.iter().map(|v| text(v)).collect::<Vec<_>>().join("; ")
}

fn values_at<'a>(v: &'a serde_json::Value, path: &[&str], out: &mut Vec<&'a serde_json::Value>) {
    match (v, path.split_first()) {
        (serde_json::Value::Array(items), Some(_)) => {
            for item in items {
                values_at(item, path, out);
            }
        }
        (_, Some((first, rest))) => {
            if let Some(inner) = v.get(first) {
                values_at(inner, rest, out);
            }
        }
        (serde_json::Value::Null, None) => {}
        (_, None) => out.push(v),
    }
}

fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("; "),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One CSV row (RFC 4180), cells that a spreadsheet would run as formulas defused.
fn csv_row(out: &mut Vec<u8>, cells: &[String]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let defused = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{cell}")
        } else {
            cell.clone()
        };
        if defused.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(defused.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(defused.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Text escaped for XML content and attributes.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        let mut out = Vec::new();
        csv_row(
            &mut out,
            &[
                "plain".into(),
                "a,b".into(),
                "say \"hi\"".into(),
                "=HYPERLINK(\"x\")".into(),
                "-1".into(),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"'=HYPERLINK(\"\"x\"\")\",'-1\r\n"
        );
    }

    #[test]
    fn a_path_into_records_gives_each_records_value() {
        use tutela_proto::enrolment::{AssessmentResult, Learner, LearnerProfile};
        let result = |score| AssessmentResult {
            score,
            passed: score >= 50.0,
            ..Default::default()
        };
        let record = DeliveredRecord {
            learner: Some(Learner {
                profile: Some(LearnerProfile {
                    family_name: "Okafor".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            results: vec![result(71.0), result(45.5)],
            ..Default::default()
        };
        let json = learner_of(&record).unwrap();
        assert_eq!(value_at(&json, "profile.family_name"), "Okafor");
        assert_eq!(value_at(&json, "result.score"), "71.0; 45.5");
        assert_eq!(value_at(&json, "result.passed"), "true; false");
        assert_eq!(value_at(&json, "certificate.title"), "");
    }

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(xml("<a & 'b'>\u{1}"), "&lt;a &amp; &apos;b&apos;&gt;");
    }
}
