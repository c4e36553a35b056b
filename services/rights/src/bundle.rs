//! The archive a learner receives when they ask for a copy of their data
//! (UK GDPR / GDPR Art. 15 right of access, Art. 20 right to data portability).
//!
//! The archive holds three kinds of file:
//! - `services/<service>.json`: each service's export, wrapped in one envelope
//!   shared by every service, so a machine (or another organisation, for
//!   portability) can read all parts with one schema;
//! - `manifest.json`: what is in the archive, with SHA-256 hashes, so the learner
//!   (or we, later) can show the files were not changed after they were sent;
//! - `index.html`: a standalone page in plain English that answers the questions
//!   of Art. 15(1)(a)–(h) and shows every service's data in a readable form.
//!
//! Everything is deterministic: the same input gives byte-identical archives,
//! which keeps hashes stable and makes re-sending a bundle verifiable.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Write};

/// Schema name carried by every `services/<service>.json` envelope.
const SERVICE_SCHEMA: &str = "tutela.rights.bundle/v1";
/// Schema name carried by `manifest.json`.
const MANIFEST_SCHEMA: &str = "tutela.rights.bundle.manifest/v1";
/// Beyond this nesting depth the HTML shows a pointer to the JSON file instead
/// of recursing further: it keeps the page readable and bounds the recursion,
/// so no input can exhaust the stack while rendering.
const MAX_RENDER_DEPTH: usize = 32;
/// What the page shows for a missing value (JSON `null`, empty string).
const NONE_HTML: &str = "<span class=\"none\">—</span>";

/// One service's part of the bundle: its export document (JSON) and the data categories in it.
pub struct ServiceDocument {
    /// Service name, e.g. "enrolment", "sharing", "survey", "subscription".
    pub service: String,
    /// The service's export, any JSON shape; copied into the bundle unchanged.
    pub document: serde_json::Value,
    /// Short category names, e.g. "identity", "assessment".
    pub categories: Vec<String>,
}

/// One purpose of processing, from the organisation's register.
pub struct PurposeInfo {
    /// Short name, e.g. "course_administration".
    pub name: String,
    /// Plain words.
    pub description: String,
    /// "contract", "consent", "legal_obligation", "legitimate_interests", "public_task", "vital_interests".
    pub legal_bases: Vec<String>,
    /// The categories this purpose uses (short names).
    pub categories: Vec<String>,
    /// Plain words, e.g. "1 year from the end of the programme".
    pub retention: String,
    /// Plain descriptions of kinds of recipients.
    pub recipient_kinds: Vec<String>,
}

/// An organisation that actually received some of the learner's data (from the sharing service).
pub struct RecipientInfo {
    pub name: String,
    pub purpose: String,
    pub country: String,
    pub fields: Vec<String>,
    /// Set when the recipient is outside the UK/EEA: the transfer safeguard relied on.
    pub safeguard: Option<String>,
}

/// Everything needed to build one learner's bundle.
pub struct BundleInput {
    pub request_id: String,
    /// "access" or "portability".
    pub kind: String,
    /// The controller's name.
    pub organisation: String,
    /// E.g. an email address of the DPO.
    pub privacy_contact: String,
    pub received_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub services: Vec<ServiceDocument>,
    pub purposes: Vec<PurposeInfo>,
    pub recipients: Vec<RecipientInfo>,
    /// Ids (course ids, topic ids, ...) -> human names.
    pub names: BTreeMap<String, String>,
    /// (service, plain reason) for services whose part is missing.
    pub incomplete: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("could not write the archive: {0}")]
    Zip(String),
    #[error("could not encode a document: {0}")]
    Json(String),
}

impl From<zip::result::ZipError> for BundleError {
    fn from(e: zip::result::ZipError) -> Self {
        BundleError::Zip(e.to_string())
    }
}

impl From<std::io::Error> for BundleError {
    fn from(e: std::io::Error) -> Self {
        BundleError::Zip(e.to_string())
    }
}

/// The archive: `index.html`, `manifest.json`, and `services/<service>.json` per service,
/// in that order, all with `completed_at` as modification time, so that the same
/// input always gives the same bytes.
pub fn archive(input: &BundleInput) -> Result<Vec<u8>, BundleError> {
    let files = service_files(input)?;
    let index = index_html(input);
    let manifest = manifest_from(input, &files, index.as_bytes());
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Json(e.to_string()))?;

    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip_time(input.completed_at))
        .unix_permissions(0o644);
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("index.html", options)?;
    writer.write_all(index.as_bytes())?;
    writer.start_file("manifest.json", options)?;
    writer.write_all(&manifest_bytes)?;
    for file in &files {
        writer.start_file(file.path.as_str(), options)?;
        writer.write_all(&file.bytes)?;
    }
    Ok(writer.finish()?.into_inner())
}

/// The manifest: one schema across services, with the SHA-256 of every file's bytes.
pub fn manifest(input: &BundleInput) -> serde_json::Value {
    let index = index_html(input);
    match service_files(input) {
        Ok(files) => manifest_from(input, &files, index.as_bytes()),
        // Encoding a `serde_json::Value` cannot fail in practice (all keys are
        // strings); should it ever, say so rather than panic or invent hashes.
        Err(e) => {
            let mut m = manifest_from(input, &[], index.as_bytes());
            m["error"] = Value::String(e.to_string());
            m
        }
    }
}

/// One `services/<service>.json` file, encoded.
struct ServiceFile {
    service: String,
    path: String,
    categories: Vec<String>,
    bytes: Vec<u8>,
}

/// Encodes each service's envelope. Shared by `archive` and `manifest`, so the
/// hashes in the manifest are always of the exact bytes in the archive.
fn service_files(input: &BundleInput) -> Result<Vec<ServiceFile>, BundleError> {
    let slugs = service_slugs(input);
    input
        .services
        .iter()
        .zip(slugs)
        .map(|(s, slug)| {
            let envelope = json!({
                "schema": SERVICE_SCHEMA,
                "service": s.service,
                "categories": s.categories,
                "data": s.document,
            });
            let bytes = serde_json::to_vec_pretty(&envelope)
                .map_err(|e| BundleError::Json(e.to_string()))?;
            Ok(ServiceFile {
                service: s.service.clone(),
                path: format!("services/{slug}.json"),
                categories: s.categories.clone(),
                bytes,
            })
        })
        .collect()
}

fn manifest_from(input: &BundleInput, files: &[ServiceFile], index: &[u8]) -> Value {
    let services: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "service": f.service,
                "file": f.path,
                "categories": f.categories,
                "sha256": sha256_hex(&f.bytes),
                "bytes": f.bytes.len(),
            })
        })
        .collect();
    let incomplete: Vec<Value> = input
        .incomplete
        .iter()
        .map(|(service, reason)| json!({ "service": service, "reason": reason }))
        .collect();
    json!({
        "schema": MANIFEST_SCHEMA,
        "request_id": input.request_id,
        "kind": input.kind,
        "organisation": input.organisation,
        "privacy_contact": input.privacy_contact,
        "received_at": rfc3339(input.received_at),
        "completed_at": rfc3339(input.completed_at),
        "index": { "file": "index.html", "sha256": sha256_hex(index), "bytes": index.len() },
        "services": services,
        "incomplete": incomplete,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// ZIP stores local "DOS" time (1980–2107, 2-second steps); we store the UTC
/// completion time, falling back to the format's fixed default when out of range.
fn zip_time(t: DateTime<Utc>) -> zip::DateTime {
    let parts = (
        u16::try_from(t.year()),
        u8::try_from(t.month()),
        u8::try_from(t.day()),
        u8::try_from(t.hour()),
        u8::try_from(t.minute()),
        u8::try_from(t.second()),
    );
    match parts {
        (Ok(y), Ok(mo), Ok(d), Ok(h), Ok(mi), Ok(s)) => {
            zip::DateTime::from_date_and_time(y, mo, d, h, mi, s).unwrap_or(zip::DateTime::DEFAULT)
        }
        _ => zip::DateTime::DEFAULT,
    }
}

/// A safe, unique file-name stem per service. Service names are expected to be
/// simple ("enrolment"), but they must never produce a path outside
/// `services/` ("../x") or two entries with the same name (a ZIP error).
fn service_slugs(input: &BundleInput) -> Vec<String> {
    let mut used = BTreeSet::new();
    input
        .services
        .iter()
        .map(|s| {
            let mut base: String = s
                .service
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            if base.is_empty() {
                base = "service".to_string();
            }
            let mut slug = base.clone();
            let mut n = 2;
            while used.contains(&slug) {
                slug = format!("{base}-{n}");
                n += 1;
            }
            used.insert(slug.clone());
            slug
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Plain words
// ---------------------------------------------------------------------------

/// Known categories: (short name, label, plain explanation). Order here is
/// the order the page lists them in.
const CATEGORIES: &[(&str, &str, &str)] = &[
    (
        "identity",
        "Identity",
        "Who you are: your name, date of birth and learner reference numbers",
    ),
    (
        "contact",
        "Contact details",
        "How to reach you: your address, email address and phone number",
    ),
    (
        "demographic",
        "Background",
        "Background details about you, such as your gender, nationality and age group",
    ),
    (
        "special_category",
        "Sensitive information",
        "Sensitive information the law protects more strongly, such as your health, disability or ethnic origin",
    ),
    (
        "employment",
        "Employment",
        "Your job: your employer, your role and your working pattern",
    ),
    (
        "identity_document",
        "Identity documents",
        "Details or copies of identity documents, such as your passport or driving licence",
    ),
    (
        "education",
        "Education and training",
        "Your learning: the courses you are on, your qualifications and your progress",
    ),
    (
        "assessment",
        "Assessment",
        "Your marks, results and exam outcomes",
    ),
    (
        "survey_response",
        "Survey answers",
        "Your answers to surveys and feedback forms",
    ),
    (
        "communication",
        "Communications",
        "Messages between you and us, such as emails and notes of conversations",
    ),
    (
        "technical",
        "Technical records",
        "Technical records, such as when you signed in and from which device",
    ),
];

/// Label and explanation of a category; unknown short names fall back to a
/// humanised form rather than failing, because the register may grow faster
/// than this list.
fn category_words(short: &str) -> (Cow<'static, str>, Cow<'static, str>) {
    match CATEGORIES.iter().find(|(s, _, _)| *s == short) {
        Some((_, label, explanation)) => (Cow::Borrowed(*label), Cow::Borrowed(*explanation)),
        None => {
            let label = humanise(short);
            let explanation = format!("Other information we hold about you ({label})");
            (Cow::Owned(label), Cow::Owned(explanation))
        }
    }
}

fn legal_basis_words(basis: &str) -> Cow<'static, str> {
    Cow::Borrowed(match basis {
        "contract" => {
            "Contract: we need it to provide the training agreed with you (or for you, through your apprenticeship or employer)"
        }
        "consent" => "Consent: you agreed to it, and you can withdraw your consent at any time",
        "legal_obligation" => {
            "Legal obligation: the law requires us to do it, for example reporting to funding or regulatory bodies"
        }
        "legitimate_interests" => {
            "Legitimate interests: it is needed for our reasonable interests, which we have balanced against your rights; you can object to it"
        }
        "public_task" => {
            "Public task: it is needed for a task carried out in the public interest, such as publicly funded education"
        }
        "vital_interests" => "Vital interests: it is needed to protect someone's life",
        other => return Cow::Owned(humanise(other)),
    })
}

fn service_label(service: &str) -> String {
    match service {
        "enrolment" => "Enrolment: your courses and learner record".to_string(),
        "sharing" => "Sharing: what we sent to other organisations".to_string(),
        "survey" => "Surveys: your answers to our surveys".to_string(),
        "subscription" => "Subscriptions: what you signed up to hear about".to_string(),
        other => humanise(other),
    }
}

/// Turns a key like `date_of_birth` into "Date of birth": separators become
/// spaces, the first letter is capitalised, and a few well-known abbreviations
/// are written in capitals.
fn humanise(key: &str) -> String {
    const UPPER: &[&str] = &["id", "uln", "url", "uk", "eea", "ni", "ip", "dpo", "gdpr"];
    let words: Vec<String> = key
        .split(|c: char| c == '_' || c == '-' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if UPPER.contains(&w.to_ascii_lowercase().as_str()) {
                w.to_ascii_uppercase()
            } else {
                w.to_string()
            }
        })
        .collect();
    let joined = words.join(" ");
    let mut chars = joined.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "(no name)".to_string(),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn human_date(t: DateTime<Utc>) -> String {
    t.format("%-d %B %Y at %H:%M UTC").to_string()
}

// ---------------------------------------------------------------------------
// index.html
// ---------------------------------------------------------------------------

/// Minimal inline styles: the page must work offline, opened straight from the archive.
const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;line-height:1.5;max-width:60rem;margin:0 auto;padding:1rem 1.5rem;color:#1b1b1b;background:#fff}\
h1{font-size:1.8rem}h2{margin-top:2.2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}h3{margin-bottom:.3rem}\
table{border-collapse:collapse;margin:.4rem 0;width:100%}th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}\
thead th{background:#f0f0f0}table.fields>tbody>tr>th{width:30%;background:#fafafa;font-weight:600}\
.notice{border:3px solid #b00020;background:#fff0f0;padding:.8rem 1rem;margin:1rem 0}.notice h2{margin-top:0;border:0;color:#b00020}\
.none{color:#777}.id{color:#555}.text{white-space:pre-wrap}.meta{color:#333}\
@media print{.notice{border-width:2px}}";

/// The human-readable index on its own: a standalone UTF-8 HTML5 page with no
/// scripts and no external resources, answering Art. 15(1)(a)–(h) in plain English.
pub fn index_html(input: &BundleInput) -> String {
    let files = service_slugs(input);
    let org = esc(&input.organisation);
    let mut h = String::with_capacity(16 * 1024);

    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // Defence in depth: even if something slipped past escaping, the browser
    // would neither run scripts nor load anything from outside the archive.
    h.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    h.push_str(&format!(
        "<title>Your data held by {org}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
    ));

    h.push_str(&format!("<h1>Your data held by {org}</h1>\n"));
    h.push_str(&format!("<p>{}</p>\n", kind_sentence(&input.kind, &org)));
    h.push_str(&format!(
        "<p class=\"meta\">Request reference: <strong>{}</strong><br>We received your request on {}.<br>We completed it on {}.</p>\n",
        esc(&input.request_id),
        esc(&human_date(input.received_at)),
        esc(&human_date(input.completed_at)),
    ));

    incomplete_notice(&mut h, input);
    contents(&mut h, input, &files);
    purposes_section(&mut h, input);
    categories_section(&mut h, input);
    recipients_section(&mut h, input);
    retention_section(&mut h, input);
    rights_section(&mut h, input);
    sources_section(&mut h, &org);
    automated_section(&mut h, &org);
    services_section(&mut h, input, &files);
    contact_section(&mut h, input);

    h.push_str("</body>\n</html>\n");
    h
}

fn kind_sentence(kind: &str, org: &str) -> String {
    match kind {
        "access" => format!(
            "You asked {org} for a copy of the personal data we hold about you (your right of access). This page explains what we hold, why, who we share it with and how long we keep it. The files in the <code>services</code> folder hold the same data in JSON, a format computers can read."
        ),
        "portability" => format!(
            "You asked {org} for your personal data in a format you can take to another organisation (your right to data portability). The files in the <code>services</code> folder hold your data in JSON, a common format computers can read, all in the same layout. This page explains the data in plain words."
        ),
        other => format!(
            "This is your data held by {org}, prepared for your request ({}).",
            esc(other)
        ),
    }
}

fn incomplete_notice(h: &mut String, input: &BundleInput) {
    if input.incomplete.is_empty() {
        return;
    }
    h.push_str("<div class=\"notice\" role=\"alert\" id=\"incomplete\">\n<h2>Some of your data is missing from this copy</h2>\n");
    h.push_str("<p>We could not include the following parts. We are sorry; please contact us (details at the end of this page) and we will send them as soon as we can.</p>\n<ul>\n");
    for (service, reason) in &input.incomplete {
        h.push_str(&format!(
            "<li><strong>{}</strong>: {}</li>\n",
            esc(&service_label(service)),
            esc(reason)
        ));
    }
    h.push_str("</ul>\n</div>\n");
}

fn contents(h: &mut String, input: &BundleInput, slugs: &[String]) {
    h.push_str("<nav aria-label=\"Contents\">\n<h2>Contents</h2>\n<ol>\n");
    for (id, title) in [
        ("purposes", "Why we use your data"),
        ("categories", "What kinds of data we hold"),
        ("recipients", "Who we share your data with"),
        ("retention", "How long we keep your data"),
        ("rights", "Your rights"),
        ("complaints", "How to complain"),
        ("sources", "Where your data came from"),
        ("automated", "Automated decisions"),
        ("services", "Your data, part by part"),
    ] {
        h.push_str(&format!("<li><a href=\"#{id}\">{title}</a>"));
        if id == "services" && !input.services.is_empty() {
            h.push_str("\n<ul>\n");
            for (s, slug) in input.services.iter().zip(slugs) {
                h.push_str(&format!(
                    "<li><a href=\"#service-{}\">{}</a></li>\n",
                    esc(slug),
                    esc(&service_label(&s.service))
                ));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</li>\n");
    }
    h.push_str("<li><a href=\"#contact\">How to contact us</a></li>\n</ol>\n</nav>\n");
}

/// Art. 15(1)(a): purposes, with their legal bases in plain words.
fn purposes_section(h: &mut String, input: &BundleInput) {
    h.push_str("<section id=\"purposes\">\n<h2>Why we use your data</h2>\n");
    if input.purposes.is_empty() {
        h.push_str("<p>We have no recorded purposes for using your data.</p>\n");
    }
    for p in &input.purposes {
        h.push_str(&format!(
            "<h3>{}</h3>\n<p>{}</p>\n",
            esc(&humanise(&p.name)),
            esc(&p.description)
        ));
        if !p.legal_bases.is_empty() {
            h.push_str("<p>The law allows this because of:</p>\n<ul>\n");
            for b in &p.legal_bases {
                h.push_str(&format!("<li>{}</li>\n", esc(&legal_basis_words(b))));
            }
            h.push_str("</ul>\n");
        }
        if !p.categories.is_empty() {
            let labels: Vec<String> = p
                .categories
                .iter()
                .map(|c| category_words(c).0.into_owned())
                .collect();
            h.push_str(&format!("<p>Data used: {}.</p>\n", esc(&labels.join(", "))));
        }
    }
    h.push_str("</section>\n");
}

/// Art. 15(1)(b): every category that appears anywhere, known ones first in a fixed order.
fn categories_section(h: &mut String, input: &BundleInput) {
    let mut all: BTreeSet<&str> = BTreeSet::new();
    for s in &input.services {
        all.extend(s.categories.iter().map(String::as_str));
    }
    for p in &input.purposes {
        all.extend(p.categories.iter().map(String::as_str));
    }
    let mut ordered: Vec<&str> = all.into_iter().collect();
    ordered.sort_by_key(|c| {
        (
            CATEGORIES
                .iter()
                .position(|(s, _, _)| s == c)
                .unwrap_or(usize::MAX),
            *c,
        )
    });

    h.push_str("<section id=\"categories\">\n<h2>What kinds of data we hold</h2>\n");
    if ordered.is_empty() {
        h.push_str("<p>We hold no data about you in these records.</p>\n");
    } else {
        h.push_str("<table>\n<thead><tr><th scope=\"col\">Kind of data</th><th scope=\"col\">What it means</th></tr></thead>\n<tbody>\n");
        for c in ordered {
            let (label, explanation) = category_words(c);
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(&label),
                esc(&explanation)
            ));
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</section>\n");
}

/// Art. 15(1)(c) and 15(2): actual recipients, kinds of recipients, transfer safeguards.
fn recipients_section(h: &mut String, input: &BundleInput) {
    h.push_str("<section id=\"recipients\">\n<h2>Who we share your data with</h2>\n");
    h.push_str("<h3>Organisations that have received your data</h3>\n");
    if input.recipients.is_empty() {
        h.push_str("<p>We have no record of sending your data to any other organisation.</p>\n");
    } else {
        h.push_str("<table>\n<thead><tr><th scope=\"col\">Organisation</th><th scope=\"col\">Why</th><th scope=\"col\">Country</th><th scope=\"col\">What we shared</th></tr></thead>\n<tbody>\n");
        for r in &input.recipients {
            let fields: Vec<String> = r.fields.iter().map(|f| humanise(f)).collect();
            let mut country = esc(&r.country);
            if let Some(safeguard) = &r.safeguard {
                country.push_str(&format!(
                    "<br><small>Outside the UK and the European Economic Area (EEA). Your data is protected there by: {}.</small>",
                    esc(safeguard)
                ));
            }
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&r.name),
                esc(&humanise(&r.purpose)),
                country,
                if fields.is_empty() {
                    NONE_HTML.to_string()
                } else {
                    esc(&fields.join(", "))
                }
            ));
        }
        h.push_str("</tbody>\n</table>\n");
        if input.recipients.iter().any(|r| r.safeguard.is_some()) {
            h.push_str("<p>Where we send data outside the UK and the EEA, we use the legal safeguard named above so that your data stays protected. You can ask us for a copy of it.</p>\n");
        }
    }
    h.push_str("<h3>The kinds of organisations we may share data with</h3>\n");
    let with_kinds: Vec<&PurposeInfo> = input
        .purposes
        .iter()
        .filter(|p| !p.recipient_kinds.is_empty())
        .collect();
    if with_kinds.is_empty() {
        h.push_str(
            "<p>We do not share data with other organisations for any of our purposes.</p>\n",
        );
    } else {
        h.push_str("<ul>\n");
        for p in with_kinds {
            h.push_str(&format!(
                "<li><strong>{}</strong>: {}</li>\n",
                esc(&humanise(&p.name)),
                esc(&p.recipient_kinds.join("; "))
            ));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");
}

/// Art. 15(1)(d): retention per purpose.
fn retention_section(h: &mut String, input: &BundleInput) {
    h.push_str("<section id=\"retention\">\n<h2>How long we keep your data</h2>\n");
    if input.purposes.is_empty() {
        h.push_str("<p>We have no recorded retention periods.</p>\n");
    } else {
        h.push_str("<table>\n<thead><tr><th scope=\"col\">Purpose</th><th scope=\"col\">How long we keep it</th></tr></thead>\n<tbody>\n");
        for p in &input.purposes {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(&humanise(&p.name)),
                esc(&p.retention)
            ));
        }
        h.push_str("</tbody>\n</table>\n<p>After that, we delete your data or make it anonymous so it can no longer identify you.</p>\n");
    }
    h.push_str("</section>\n");
}

/// Art. 15(1)(e) and (f): the other rights and the right to complain.
fn rights_section(h: &mut String, input: &BundleInput) {
    let contact = esc(&input.privacy_contact);
    h.push_str("<section id=\"rights\">\n<h2>Your rights</h2>\n<p>You can ask us to:</p>\n<ul>\n");
    h.push_str(
        "<li><strong>Correct</strong> data that is wrong or incomplete (rectification).</li>\n",
    );
    h.push_str("<li><strong>Delete</strong> your data (erasure), where we no longer need it or have no other lawful reason to keep it.</li>\n");
    h.push_str("<li><strong>Limit</strong> how we use your data (restriction), for example while we check that it is correct.</li>\n");
    h.push_str("<li><strong>Stop</strong> using your data (objection), where we rely on our legitimate interests or a public task, and always for direct marketing.</li>\n");
    h.push_str(
        "<li><strong>Withdraw your consent</strong> at any time, where we rely on it.</li>\n",
    );
    h.push_str("</ul>\n");
    h.push_str(&format!(
        "<p>To use any of these rights, contact us at {contact}. It is free, and we will normally answer within one month.</p>\n</section>\n"
    ));
    h.push_str("<section id=\"complaints\">\n<h2>How to complain</h2>\n");
    h.push_str("<p>If you are unhappy with how we use your data, please tell us first so we can try to put it right. You also have the right to complain to a data protection supervisory authority. In the UK this is the Information Commissioner's Office (ICO, ico.org.uk). In the European Economic Area, you can complain to the authority in the country where you live, work, or where you think the problem happened.</p>\n</section>\n");
}

/// Art. 15(1)(g): sources, in general words.
fn sources_section(h: &mut String, org: &str) {
    h.push_str(&format!(
        "<section id=\"sources\">\n<h2>Where your data came from</h2>\n<p>Most of your data came from you, for example when you enrolled or answered a survey. Some came from {org}, your training organisation, as it recorded your learning and progress, and from the exam and awarding bodies and colleges it works with, for example your results. Where you are on training through work, some may have come from your employer.</p>\n</section>\n"
    ));
}

/// Art. 15(1)(h): no solely automated decisions with legal or similar effects.
fn automated_section(h: &mut String, org: &str) {
    h.push_str(&format!(
        "<section id=\"automated\">\n<h2>Automated decisions</h2>\n<p>{org} does not make decisions about you by computer alone that have legal effects on you or that affect you in a similarly significant way. People make those decisions.</p>\n</section>\n"
    ));
}

/// One section per service: its categories in plain words, a link to its JSON
/// file, and a generic rendering of its document.
fn services_section(h: &mut String, input: &BundleInput, slugs: &[String]) {
    h.push_str("<section id=\"services\">\n<h2>Your data, part by part</h2>\n");
    if input.services.is_empty() {
        h.push_str("<p>There is no data in this copy.</p>\n");
    }
    for (s, slug) in input.services.iter().zip(slugs) {
        let slug = esc(slug);
        h.push_str(&format!(
            "<section id=\"service-{slug}\">\n<h3>{}</h3>\n",
            esc(&service_label(&s.service))
        ));
        if !s.categories.is_empty() {
            h.push_str("<p>This part holds:</p>\n<ul>\n");
            for c in &s.categories {
                let (label, explanation) = category_words(c);
                h.push_str(&format!(
                    "<li><strong>{}</strong>: {}</li>\n",
                    esc(&label),
                    esc(&explanation)
                ));
            }
            h.push_str("</ul>\n");
        }
        h.push_str(&format!(
            "<p>The same data as a file computers can read: <a href=\"services/{slug}.json\">services/{slug}.json</a></p>\n<div class=\"document\">"
        ));
        render_value(h, &s.document, &input.names, 0);
        h.push_str("</div>\n</section>\n");
    }
    h.push_str("</section>\n");
}

fn contact_section(h: &mut String, input: &BundleInput) {
    let contact = &input.privacy_contact;
    let looks_like_email = contact.contains('@') && !contact.chars().any(char::is_whitespace);
    let shown = if looks_like_email {
        format!("<a href=\"mailto:{0}\">{0}</a>", esc(contact))
    } else {
        esc(contact)
    };
    h.push_str(&format!(
        "<section id=\"contact\">\n<h2>How to contact us</h2>\n<p>{} is responsible for your data (the controller). For any question about this copy or your data, contact our privacy team: {shown}. Please quote your request reference <strong>{}</strong>.</p>\n</section>\n",
        esc(&input.organisation),
        esc(&input.request_id)
    ));
}

// ---------------------------------------------------------------------------
// Generic JSON rendering
// ---------------------------------------------------------------------------

/// Renders any JSON value as readable HTML. Objects become two-column tables,
/// arrays of objects become tables with the union of their keys as columns,
/// other arrays become lists, scalars become text. All text is escaped.
fn render_value(h: &mut String, v: &Value, names: &BTreeMap<String, String>, depth: usize) {
    if depth > MAX_RENDER_DEPTH {
        h.push_str("<em>(nested too deeply to show here; see the JSON file)</em>");
        return;
    }
    match v {
        Value::Null => h.push_str(NONE_HTML),
        Value::Bool(true) => h.push_str("Yes"),
        Value::Bool(false) => h.push_str("No"),
        Value::Number(n) => h.push_str(&esc(&n.to_string())),
        Value::String(s) => render_string(h, s, names),
        Value::Array(items) => render_array(h, items, names, depth),
        Value::Object(map) => render_object(h, map, names, depth),
    }
}

/// Strings that are known ids (courses, topics, ...) show their human name,
/// with the id after it in small text so it can still be quoted to us.
fn render_string(h: &mut String, s: &str, names: &BTreeMap<String, String>) {
    if s.is_empty() {
        h.push_str(NONE_HTML);
    } else if let Some(name) = names.get(s) {
        h.push_str(&format!(
            "{} <small class=\"id\">({})</small>",
            esc(name),
            esc(s)
        ));
    } else {
        h.push_str(&format!("<span class=\"text\">{}</span>", esc(s)));
    }
}

fn render_object(
    h: &mut String,
    map: &serde_json::Map<String, Value>,
    names: &BTreeMap<String, String>,
    depth: usize,
) {
    if map.is_empty() {
        h.push_str(NONE_HTML);
        return;
    }
    h.push_str("<table class=\"fields\"><tbody>\n");
    for (key, value) in map {
        h.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>",
            esc(&humanise(key))
        ));
        render_value(h, value, names, depth + 1);
        h.push_str("</td></tr>\n");
    }
    h.push_str("</tbody></table>\n");
}

fn render_array(h: &mut String, items: &[Value], names: &BTreeMap<String, String>, depth: usize) {
    if items.is_empty() {
        h.push_str("<span class=\"none\">None</span>");
        return;
    }
    let rows: Option<Vec<&serde_json::Map<String, Value>>> =
        items.iter().map(Value::as_object).collect();
    match rows {
        Some(rows) if rows.iter().any(|r| !r.is_empty()) => {
            // Columns in first-seen order, so the table follows the data.
            let mut seen = BTreeSet::new();
            let mut columns: Vec<&str> = Vec::new();
            for row in &rows {
                for key in row.keys() {
                    if seen.insert(key.as_str()) {
                        columns.push(key.as_str());
                    }
                }
            }
            h.push_str("<table><thead><tr>");
            for c in &columns {
                h.push_str(&format!("<th scope=\"col\">{}</th>", esc(&humanise(c))));
            }
            h.push_str("</tr></thead><tbody>\n");
            for row in rows {
                h.push_str("<tr>");
                for c in &columns {
                    h.push_str("<td>");
                    match row.get(*c) {
                        Some(value) => render_value(h, value, names, depth + 1),
                        None => h.push_str(NONE_HTML),
                    }
                    h.push_str("</td>");
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</tbody></table>\n");
        }
        _ => {
            h.push_str("<ul>\n");
            for item in items {
                h.push_str("<li>");
                render_value(h, item, names, depth + 1);
                h.push_str("</li>\n");
            }
            h.push_str("</ul>\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::io::Read;

    fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid time")
    }

    fn sample() -> BundleInput {
        let mut names = BTreeMap::new();
        names.insert(
            "crs_0042".to_string(),
            "Level 3 Business Administration".to_string(),
        );
        names.insert("top_7".to_string(), "Digital skills".to_string());
        BundleInput {
            request_id: "dsar-2026-0001".to_string(),
            kind: "access".to_string(),
            organisation: "Northfield Training Ltd".to_string(),
            privacy_contact: "dpo@northfield.example".to_string(),
            received_at: ts(2026, 11, 20, 9, 15, 0),
            completed_at: ts(2026, 12, 3, 16, 0, 31),
            services: vec![
                ServiceDocument {
                    service: "enrolment".to_string(),
                    document: json!({
                        "learner": {"first_name": "Zoë", "date_of_birth": "2001-04-05", "uln": "1234567890"},
                        "enrolments": [
                            {"course_id": "crs_0042", "status": "active", "funded": true},
                            {"course_id": "crs_9999", "status": "withdrawn", "withdrawn_at": null}
                        ]
                    }),
                    categories: vec!["identity".to_string(), "education".to_string()],
                },
                ServiceDocument {
                    service: "survey".to_string(),
                    document: json!([{"topic": "top_7", "answer": 4}]),
                    categories: vec!["survey_response".to_string()],
                },
                ServiceDocument {
                    service: "sharing".to_string(),
                    document: json!({"disclosures": []}),
                    categories: vec!["communication".to_string()],
                },
            ],
            purposes: vec![PurposeInfo {
                name: "course_administration".to_string(),
                description: "Running your course and recording your progress.".to_string(),
                legal_bases: vec!["contract".to_string(), "legal_obligation".to_string()],
                categories: vec![
                    "identity".to_string(),
                    "education".to_string(),
                    "assessment".to_string(),
                ],
                retention: "1 year from the end of the programme".to_string(),
                recipient_kinds: vec!["Exam bodies, colleges and funding agencies".to_string()],
            }],
            recipients: vec![
                RecipientInfo {
                    name: "Awarding Body UK".to_string(),
                    purpose: "certification".to_string(),
                    country: "United Kingdom".to_string(),
                    fields: vec!["first_name".to_string(), "uln".to_string()],
                    safeguard: None,
                },
                RecipientInfo {
                    name: "Global Proctoring Inc".to_string(),
                    purpose: "exam_invigilation".to_string(),
                    country: "United States".to_string(),
                    fields: vec!["first_name".to_string()],
                    safeguard: Some("the UK International Data Transfer Agreement".to_string()),
                },
            ],
            names,
            incomplete: vec![],
        }
    }

    fn read_all(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("opens");
        (0..zip.len())
            .map(|i| {
                let mut f = zip.by_index(i).expect("entry");
                let name = f.name().expect("name").into_owned();
                let mut data = Vec::new();
                f.read_to_end(&mut data).expect("read");
                (name, data)
            })
            .collect()
    }

    #[test]
    fn archive_holds_index_manifest_and_one_envelope_per_service() {
        let input = sample();
        let bytes = archive(&input).expect("archive");
        let entries = read_all(&bytes);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "index.html",
                "manifest.json",
                "services/enrolment.json",
                "services/survey.json",
                "services/sharing.json"
            ]
        );
        let files: BTreeMap<&str, &[u8]> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();

        assert_eq!(files["index.html"], index_html(&input).as_bytes());
        let manifest_doc: Value = serde_json::from_slice(files["manifest.json"]).expect("json");
        assert_eq!(manifest_doc, manifest(&input));
        assert_eq!(manifest_doc["request_id"], "dsar-2026-0001");
        assert_eq!(manifest_doc["received_at"], "2026-11-20T09:15:00Z");
        assert_eq!(manifest_doc["completed_at"], "2026-12-03T16:00:31Z");
        assert_eq!(manifest_doc["incomplete"], json!([]));
        assert_eq!(
            manifest_doc["index"]["sha256"],
            sha256_hex(files["index.html"])
        );

        let listed = manifest_doc["services"].as_array().expect("services");
        assert_eq!(listed.len(), input.services.len());
        for (s, entry) in input.services.iter().zip(listed) {
            let path = format!("services/{}.json", s.service);
            let data = files[path.as_str()];
            let envelope: Value = serde_json::from_slice(data).expect("service json");
            assert_eq!(envelope["schema"], SERVICE_SCHEMA);
            assert_eq!(envelope["service"], s.service.as_str());
            assert_eq!(envelope["categories"], json!(s.categories));
            assert_eq!(envelope["data"], s.document);
            assert_eq!(
                envelope.as_object().map(|o| o.len()),
                Some(4),
                "same envelope for every service"
            );
            assert_eq!(entry["file"], path.as_str());
            assert_eq!(entry["categories"], json!(s.categories));
            assert_eq!(entry["sha256"], sha256_hex(data));
        }
    }

    #[test]
    fn entries_carry_the_completion_time() {
        let bytes = archive(&sample()).expect("archive");
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("opens");
        for i in 0..zip.len() {
            let f = zip.by_index(i).expect("entry");
            let t = f.last_modified().expect("time");
            assert_eq!(
                (
                    t.year(),
                    t.month(),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                ),
                (2026, 12, 3, 16, 0, 30)
            );
        }
        // Out of the ZIP range: falls back to the fixed default, no panic.
        assert_eq!(zip_time(ts(1970, 1, 1, 0, 0, 0)), zip::DateTime::DEFAULT);
    }

    #[test]
    fn same_input_gives_identical_bytes() {
        let input = sample();
        let a = archive(&input).expect("archive");
        let b = archive(&input).expect("archive");
        assert_eq!(a, b);
    }

    #[test]
    fn html_is_escaped_in_keys_and_values() {
        let mut input = sample();
        input.services[0].document = json!({
            "<script>alert(1)</script>": "<script>alert(1)</script>",
            "rows": [{"<script>alert(1)</script>": "a & b \"quoted\" 'single'"}]
        });
        input.services[0].service = "<script>alert(1)</script>".to_string();
        input.organisation = "<script>alert(1)</script>".to_string();
        input.request_id = "\"><script>alert(1)</script>".to_string();
        let html = index_html(&input);
        assert!(!html.contains("<script"), "unescaped script tag");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a &amp; b &quot;quoted&quot; &#39;single&#39;"));
        // The file name stays inside services/.
        let bytes = archive(&input).expect("archive");
        for (name, _) in read_all(&bytes) {
            assert!(!name.contains(".."), "{name}");
            assert!(!name.contains('<'), "{name}");
        }
    }

    #[test]
    fn esc_covers_the_five_characters() {
        assert_eq!(esc("&<>\"'x"), "&amp;&lt;&gt;&quot;&#39;x");
    }

    #[test]
    fn known_ids_show_their_names() {
        let html = index_html(&sample());
        assert!(
            html.contains("Level 3 Business Administration <small class=\"id\">(crs_0042)</small>")
        );
        assert!(html.contains("Digital skills <small class=\"id\">(top_7)</small>"));
        // An id without a name is shown as it is.
        assert!(html.contains("crs_9999"));
    }

    #[test]
    fn incomplete_notice_only_when_something_is_missing() {
        let mut input = sample();
        let html = index_html(&input);
        assert!(!html.contains("id=\"incomplete\""));
        assert!(!html.contains("missing from this copy"));

        input.incomplete = vec![(
            "subscription".to_string(),
            "The subscription service did not answer in time.".to_string(),
        )];
        let html = index_html(&input);
        assert!(html.contains("id=\"incomplete\""));
        assert!(html.contains("missing from this copy"));
        assert!(html.contains("The subscription service did not answer in time."));
        // It comes before the content.
        let notice = html.find("id=\"incomplete\"").expect("notice");
        let purposes = html.find("id=\"purposes\"").expect("purposes");
        assert!(notice < purposes);
        assert_eq!(
            manifest(&input)["incomplete"],
            json!([{"service": "subscription", "reason": "The subscription service did not answer in time."}])
        );
    }

    #[test]
    fn every_known_category_has_plain_words() {
        let all = [
            "identity",
            "contact",
            "demographic",
            "special_category",
            "employment",
            "identity_document",
            "education",
            "assessment",
            "survey_response",
            "communication",
            "technical",
        ];
        for c in all {
            let (label, explanation) = category_words(c);
            assert!(
                CATEGORIES.iter().any(|(s, _, _)| *s == c),
                "{c} not in table"
            );
            assert_ne!(explanation, c);
            assert_ne!(label, c);
            assert_ne!(explanation, category_fallback_explanation(c));
            assert_ne!(explanation, humanise(c));
        }
        assert_eq!(
            category_words("assessment").1,
            "Your marks, results and exam outcomes"
        );

        let (label, explanation) = category_words("biometric_data");
        assert_eq!(label, "Biometric data");
        assert_eq!(explanation, category_fallback_explanation("biometric_data"));
        let (label, _) = category_words("");
        assert_eq!(label, "(no name)");

        // Unknown categories still render on the page.
        let mut input = sample();
        input.services[0]
            .categories
            .push("biometric_data".to_string());
        assert!(
            index_html(&input).contains("Other information we hold about you (Biometric data)")
        );
    }

    fn category_fallback_explanation(c: &str) -> String {
        format!("Other information we hold about you ({})", humanise(c))
    }

    #[test]
    fn keys_are_humanised() {
        assert_eq!(humanise("date_of_birth"), "Date of birth");
        assert_eq!(humanise("learner_id"), "Learner ID");
        assert_eq!(humanise("uln"), "ULN");
        assert_eq!(humanise("émail-address"), "Émail address");
        assert_eq!(humanise("__"), "(no name)");
    }

    #[test]
    fn nested_and_unicode_documents_render() {
        let mut input = sample();
        let mut deep = json!("bottom");
        for _ in 0..50 {
            deep = json!([{"level": deep}]);
        }
        input.services[0].document = json!({
            "名前": "Zoë Ñúñez 🚀",
            "mixed": [1, "two", null, true, {"k": [1, [2, [3]]]}, [], {}],
            "rows": [{"a": 1}, {"b": {"c": [{"d": false}]}}, {}],
            "empty_rows": [{}, {}],
            "numbers": [1.5, -2, 1e300],
            "deep": deep,
            "": "empty key"
        });
        let html = index_html(&input);
        assert!(html.contains("Zoë Ñúñez 🚀"));
        assert!(html.contains("名前"));
        assert!(html.contains("nested too deeply"));
        assert!(html.contains("<th scope=\"col\">A</th><th scope=\"col\">B</th>"));
        assert!(html.contains("No"));
        let bytes = archive(&input).expect("archive");
        let entries = read_all(&bytes);
        let envelope: Value = serde_json::from_slice(&entries[2].1).expect("json");
        assert_eq!(envelope["data"], input.services[0].document);

        // Bare scalars as whole documents are fine too.
        for doc in [json!(null), json!(true), json!(3), json!(""), json!([])] {
            input.services[0].document = doc;
            let _ = index_html(&input);
            archive(&input).expect("archive");
        }
    }

    #[test]
    fn duplicate_and_odd_service_names_get_distinct_safe_files() {
        let mut input = sample();
        input.services[1].service = "enrolment".to_string();
        input.services[2].service = "../../etc/passwd".to_string();
        let bytes = archive(&input).expect("archive");
        let names: Vec<String> = read_all(&bytes).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                "index.html",
                "manifest.json",
                "services/enrolment.json",
                "services/enrolment-2.json",
                "services/______etc_passwd.json"
            ]
        );
    }

    #[test]
    fn page_answers_article_15_and_is_standalone() {
        let html = index_html(&sample());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        for needle in [
            "Why we use your data",
            "Running your course and recording your progress.",
            "Contract: ",
            "What kinds of data we hold",
            "Awarding Body UK",
            "Exam bodies, colleges and funding agencies",
            "the UK International Data Transfer Agreement",
            "1 year from the end of the programme",
            "rectification",
            "erasure",
            "restriction",
            "objection",
            "supervisory authority",
            "Where your data came from",
            "does not make decisions about you by computer alone",
            "href=\"services/enrolment.json\"",
            "mailto:dpo@northfield.example",
            "dsar-2026-0001",
            "20 November 2026",
            "3 December 2026",
        ] {
            assert!(html.contains(needle), "missing: {needle}");
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script"));
    }
}
