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

/// A record's learner as JSON, in the one spelling exports use (`fields::to_json`: enums by
/// name, timestamps in RFC 3339).
fn learner_of(r: &DeliveredRecord) -> Result<serde_json::Value> {
    let learner = r.learner.clone().unwrap_or_default();
    Ok(fields::to_json(&fields::to_dynamic(
        &learner,
        "tutela.enrolment.v1.Learner",
    )?))
}

/// The value at `path` as text: strings as they are, lists joined with "; ", absent fields
/// empty.
fn value_at(learner: &serde_json::Value, path: &str) -> String {
    let value = path
        .split('.')
        .try_fold(learner, |v, segment| v.get(segment));
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(v) => text(v),
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
    fn xml_text_is_escaped() {
        assert_eq!(xml("<a & 'b'>\u{1}"), "&lt;a &amp; &apos;b&apos;&gt;");
    }
}
