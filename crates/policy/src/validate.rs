//! Checks of request fields that every service needs, collecting one violation per bad field so
//! that a client learns everything wrong with a request at once. Descriptions never repeat the
//! value.

use tutela_proto::common::{IdempotencyKey, PageRequest, SubjectRef};

use crate::error::{Error, Result, Violation};

/// Whether `value` looks like an email address: one `@`, a local part, a dotted domain, no
/// whitespace. Delivery is the real test; this only keeps typing mistakes out.
pub fn is_email(value: &str) -> bool {
    value.matches('@').count() == 1
        && !value.chars().any(char::is_whitespace)
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

/// Whether `value` has the shape of an ISO 3166-1 alpha-2 code: two capital letters.
pub fn is_country_code(value: &str) -> bool {
    value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())
}

/// The ISO 3166-1 alpha-2 codes assigned to countries and territories (249, as the ISO 3166
/// Maintenance Agency lists them), in order: what a field that decides a legal consequence (a
/// transfer's safeguard) is checked against, where [`is_country_code`]'s shape check would let
/// `XX` or `UK` (not GB) through.
pub const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Whether `value` is an assigned ISO 3166-1 alpha-2 code, in capitals.
pub fn is_assigned_country_code(value: &str) -> bool {
    ISO_3166_ALPHA2.binary_search(&value).is_ok()
}

/// Whether `key` is a valid idempotency key: 8 to 128 characters of `[A-Za-z0-9_-]`.
pub fn is_idempotency_key(key: &str) -> bool {
    (8..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The default and the largest page size (see `tutela.common.v1.PageRequest`).
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// The largest page size; bigger requests are capped.
pub const MAX_PAGE_SIZE: u64 = 500;

/// Proof that a violation was recorded: only [`Checks::flag`] makes one, so a field that failed
/// to parse always has its violation in the [`Checks`] that parsed it.
#[derive(Debug)]
pub struct Flagged(());

/// A field of a request, parsed into its type, or flagged as bad.
pub type Field<T> = std::result::Result<T, Flagged>;

/// The fields of one request, parsed or flagged: a [`Field`] or a tuple of them.
pub trait Fields {
    /// The parsed values, in the same shape.
    type Parsed;
    /// Every value, or the first flag.
    fn all(self) -> Field<Self::Parsed>;
}

impl<T> Fields for Field<T> {
    type Parsed = T;
    fn all(self) -> Field<T> {
        self
    }
}

macro_rules! fields_tuple {
    ($($name:ident),+) => {
        impl<$($name),+> Fields for ($(Field<$name>,)+) {
            type Parsed = ($($name,)+);
            #[allow(non_snake_case)]
            fn all(self) -> Field<Self::Parsed> {
                let ($($name,)+) = self;
                Ok(($($name?,)+))
            }
        }
    };
}

fields_tuple!(A, B);
fields_tuple!(A, B, C);
fields_tuple!(A, B, C, D);
fields_tuple!(A, B, C, D, E);
fields_tuple!(A, B, C, D, E, F);
fields_tuple!(A, B, C, D, E, F, G);
fields_tuple!(A, B, C, D, E, F, G, H);

/// Violations found so far in one request.
#[derive(Debug, Default)]
pub struct Checks {
    violations: Vec<Violation>,
}

impl Checks {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn fail(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(Violation::new(field, description));
    }

    /// Records a violation of `field` and returns the proof of it, for a field that did not parse.
    pub fn flag(&mut self, field: impl Into<String>, description: impl Into<String>) -> Flagged {
        self.fail(field, description);
        Flagged(())
    }

    /// `value` parsed, or a violation of `field` when it is `None`.
    pub fn parse<T>(&mut self, value: Option<T>, field: &str, description: &str) -> Field<T> {
        value.ok_or_else(|| self.flag(field, description))
    }

    /// `value()` when no violation was recorded since there were `before` (a [`Checks::len`]),
    /// else the proof that one was: the result of a parser made of several checks.
    pub fn clean_since<T>(&self, before: usize, value: impl FnOnce() -> T) -> Field<T> {
        if self.violations.len() > before {
            Err(Flagged(()))
        } else {
            Ok(value())
        }
    }

    /// Records a violation unless `ok`.
    pub fn ensure(&mut self, ok: bool, field: &str, description: &str) {
        if !ok {
            self.fail(field, description);
        }
    }

    /// A required text of at most `max` characters, trimmed; `None` (with a violation) otherwise.
    pub fn required_text<'a>(
        &mut self,
        value: &'a str,
        field: &str,
        max: usize,
    ) -> Option<&'a str> {
        self.required(value, field, max).ok()
    }

    /// An optional text of at most `max` characters, trimmed (empty is fine).
    pub fn optional_text<'a>(
        &mut self,
        value: &'a str,
        field: &str,
        max: usize,
    ) -> Option<&'a str> {
        self.optional(value, field, max).ok()
    }

    /// [`Checks::required_text`], parsed.
    pub fn required<'a>(&mut self, value: &'a str, field: &str, max: usize) -> Field<&'a str> {
        let value = value.trim();
        if value.is_empty() {
            Err(self.flag(field, "required"))
        } else {
            self.optional(value, field, max)
        }
    }

    /// [`Checks::optional_text`], parsed.
    pub fn optional<'a>(&mut self, value: &'a str, field: &str, max: usize) -> Field<&'a str> {
        let value = value.trim();
        if value.chars().count() > max {
            Err(self.flag(field, format!("at most {max} characters")))
        } else {
            Ok(value)
        }
    }

    /// The subject id of a required `SubjectRef` at `field` (a UUID).
    pub fn subject_id(&mut self, subject: Option<&SubjectRef>, field: &str) -> Option<String> {
        self.subject(subject, field).ok()
    }

    /// [`Checks::subject_id`], parsed.
    pub fn subject(&mut self, subject: Option<&SubjectRef>, field: &str) -> Field<String> {
        let id = subject.map(|s| s.subject_id.as_str()).unwrap_or_default();
        self.uuid(id, &format!("{field}.subject_id"))
    }

    /// A required UUID at `field` (surrounding spaces ignored), in its one hyphenated spelling.
    pub fn uuid(&mut self, value: &str, field: &str) -> Field<String> {
        let id = value.trim();
        if id.is_empty() {
            return Err(self.flag(field, "required"));
        }
        match uuid::Uuid::parse_str(id) {
            // One spelling per subject, so that ledger rows, keys and pseudonyms agree.
            Ok(uuid) => Ok(uuid.hyphenated().to_string()),
            Err(_) => Err(self.flag(field, "must be a UUID")),
        }
    }

    /// An email address at `field`, if not empty.
    pub fn email(&mut self, value: &str, field: &str) {
        self.ensure(
            value.is_empty() || is_email(value),
            field,
            "not an email address",
        );
    }

    /// A date of birth as `YYYY-MM-DD` at `field`, if not empty: a real date after 1900 and not
    /// after `today`.
    pub fn date_of_birth(&mut self, value: &str, field: &str, today: chrono::NaiveDate) {
        if value.is_empty() {
            return;
        }
        match chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
            Ok(d) if d <= today && chrono::Datelike::year(&d) >= 1900 => {}
            Ok(_) => self.fail(field, "must be a past date after 1900-01-01"),
            Err(_) => self.fail(field, "must be a date as YYYY-MM-DD"),
        }
    }

    /// An ISO 3166-1 alpha-2 country code at `field`, if not empty.
    pub fn country(&mut self, value: &str, field: &str) {
        self.ensure(
            value.is_empty() || is_country_code(value),
            field,
            "an ISO 3166-1 alpha-2 code in capitals, e.g. GB",
        );
    }

    /// The SHA-256 of a wording the person was shown, at `field`: 64 lower-case hex digits.
    pub fn wording_sha256(&mut self, value: &str, field: &str) {
        self.ensure(
            value.len() == 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            field,
            "64 lower-case hex digits (SHA-256 of the wording shown)",
        );
    }

    /// An optional idempotency key at `field`: 8 to 128 characters of `[A-Za-z0-9_-]`.
    pub fn idempotency_key(&mut self, key: Option<&IdempotencyKey>, field: &str) -> Option<String> {
        self.key(key, field).ok().flatten()
    }

    /// [`Checks::idempotency_key`], parsed: `Ok(None)` when the request carries no key.
    pub fn key(&mut self, key: Option<&IdempotencyKey>, field: &str) -> Field<Option<String>> {
        let key = key.map(|k| k.key.as_str()).unwrap_or_default();
        if key.is_empty() {
            Ok(None)
        } else if is_idempotency_key(key) {
            Ok(Some(key.to_owned()))
        } else {
            Err(self.flag(
                format!("{field}.key"),
                "8 to 128 characters of letters, digits, '_' and '-'",
            ))
        }
    }

    /// The size and start of a page over a sequence of row numbers: the token is the last row
    /// number of the previous page.
    pub fn page(&mut self, page: Option<&PageRequest>, field: &str) -> (u64, i64) {
        let size = match page.map(|p| u64::from(p.page_size)).unwrap_or_default() {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let token = page.map(|p| p.page_token.as_str()).unwrap_or_default();
        (
            size,
            self.resume_after(token, &format!("{field}.page_token")),
        )
    }

    /// Where a page or stream resumes: after the row a [`page_token`] named; 0 (the start) for
    /// an empty token, or for one this service did not return (a violation of `field`).
    pub fn resume_after(&mut self, token: &str, field: &str) -> i64 {
        if token.is_empty() {
            return 0;
        }
        match token.strip_prefix('r').and_then(|t| t.parse::<i64>().ok()) {
            Some(after) if after >= 0 => after,
            _ => {
                self.fail(field, "not a token this service returned");
                0
            }
        }
    }

    /// How many violations were found so far.
    pub fn len(&self) -> usize {
        self.violations.len()
    }

    /// Whether nothing was found wrong so far.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// The parsed `fields` when nothing was found wrong (a cross-field [`Checks::ensure`]
    /// included), else INVALID_ARGUMENT with every violation. A flagged field always has its
    /// violation here, so there is no third outcome.
    pub fn parsed<F: Fields>(self, fields: F) -> Result<F::Parsed> {
        match fields.all() {
            Ok(parsed) if self.violations.is_empty() => Ok(parsed),
            _ => Err(Error::InvalidArgument(self.violations)),
        }
    }

    /// `Ok` when nothing was found wrong, else INVALID_ARGUMENT with every violation.
    pub fn finish(self) -> Result<()> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.violations))
        }
    }
}

/// A time as a protobuf timestamp.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as a time, if it is one (the inverse of [`timestamp`]).
pub fn time_of(t: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// The page token that continues after row number `last`.
pub fn page_token(last: i64) -> String {
    format!("r{last}")
}

/// The size of a page a request asks for (see `tutela.common.v1.PageRequest`): the default
/// when unset or 0, capped at the largest.
pub fn page_size(page: Option<&PageRequest>) -> u64 {
    match page.map(|p| u64::from(p.page_size)).unwrap_or_default() {
        0 => DEFAULT_PAGE_SIZE,
        n => Ord::min(n, MAX_PAGE_SIZE),
    }
}

/// Keeps the first `size` of `rows` (fetched one over) and returns the token of the next page,
/// made from the last row kept by `token`; empty when there is no next page.
pub fn next_page<T>(rows: &mut Vec<T>, size: u64, token: impl Fn(&T) -> String) -> String {
    let more = rows.len() as u64 > size;
    rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    match rows.last() {
        Some(last) if more => token(last),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_country_codes_are_sorted_distinct_and_exclude_unassigned_ones() {
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_3166_ALPHA2.iter().all(|c| is_country_code(c)));
        for code in ["GB", "US", "JP", "DE", "NO", "AX", "ZW"] {
            assert!(is_assigned_country_code(code), "{code}");
        }
        for code in ["UK", "XX", "EU", "gb", "G", "GBR", ""] {
            assert!(!is_assigned_country_code(code), "{code}");
        }
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut c = Checks::new();
        c.subject_id(None, "subject");
        c.idempotency_key(
            Some(&IdempotencyKey {
                key: "short".into(),
            }),
            "idempotency_key",
        );
        c.required_text("  ", "evidence.wording_version", 64);
        let Err(Error::InvalidArgument(v)) = c.finish() else {
            panic!("expected violations");
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "subject.subject_id",
                "idempotency_key.key",
                "evidence.wording_version"
            ]
        );
    }

    #[test]
    fn parsed_fields_come_out_typed_or_every_violation_is_reported() {
        let mut c = Checks::new();
        let title = c.required(" Data protection ", "title", 300);
        let kind = c.parse(Some(7_u8), "kind", "required");
        assert_eq!(c.parsed((title, kind)).unwrap(), ("Data protection", 7));

        let mut c = Checks::new();
        let title = c.required("  ", "title", 300);
        let kind = c.parse(None::<u8>, "kind", "required: a kind");
        let subject = c.subject(None, "learner");
        let Err(Error::InvalidArgument(v)) = c.parsed((title, kind, subject)) else {
            panic!("expected violations");
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["title", "kind", "learner.subject_id"]);

        // A cross-field check fails the request even when every field parsed.
        let mut c = Checks::new();
        let start = c.parse(Some(2), "start", "required");
        c.ensure(false, "end", "must not be before start");
        assert!(matches!(c.parsed(start), Err(Error::InvalidArgument(v)) if v.len() == 1));
    }

    #[test]
    fn subject_ids_are_normalised_and_pages_capped() {
        let mut c = Checks::new();
        let id = c.subject_id(
            Some(&SubjectRef {
                subject_id: " 0192F1C2-7A3B-7C4D-8E5F-A0B1C2D3E4F5 ".into(),
            }),
            "subject",
        );
        assert_eq!(id.as_deref(), Some("0192f1c2-7a3b-7c4d-8e5f-a0b1c2d3e4f5"));
        let page = PageRequest {
            page_size: 10_000,
            page_token: page_token(42),
        };
        assert_eq!(c.page(Some(&page), "page"), (MAX_PAGE_SIZE, 42));
        c.finish().unwrap();
        let mut c = Checks::new();
        c.page(
            Some(&PageRequest {
                page_size: 0,
                page_token: "forged".into(),
            }),
            "page",
        );
        assert!(c.finish().is_err());
    }
}
