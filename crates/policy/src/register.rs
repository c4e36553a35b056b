//! The processing register: per purpose, its legal bases, the data categories it may touch,
//! whether consent is needed, how long data is kept and to whom it may go. The operator owns the
//! file; the guard enforces it, and `tutela register` prints it, so the record of processing and
//! what the software does cannot drift apart (X4). A register that names an unknown purpose,
//! category, basis or recipient refuses to load, naming the line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use tutela_anonymise::recognise::{Pack, RecogniseError, Recogniser};
use tutela_proto::common::{DataCategory, LegalBasis, Purpose};
use tutela_proto::{LEGAL_BASIS_NAMES, PURPOSE_NAMES};

use crate::categories::CategorySet;

/// The register shipped with tutela, built from the seed privacy policies.
pub const DEFAULT_REGISTER: &str = include_str!("../register.default.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegister {
    organisation: Organisation,
    #[serde(default)]
    recipients: BTreeMap<Spanned<String>, Recipient>,
    purposes: BTreeMap<Spanned<String>, RawPurpose>,
    #[serde(default)]
    prohibited_identifiers: BTreeMap<Spanned<String>, RawProhibited>,
    #[serde(default)]
    minors: Option<RawMinors>,
    #[serde(default)]
    communications: Option<RawCommunications>,
    #[serde(default)]
    transfers: Option<RawTransfers>,
    #[serde(default)]
    releases: Option<RawReleases>,
    #[serde(default)]
    rights: Option<RawRights>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRights {
    dpo_approval: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReleases {
    min_cohort: Spanned<u32>,
    min_cell: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfers {
    eea: Vec<Spanned<String>>,
    uk: Vec<Spanned<String>>,
    adequacy: Vec<Spanned<String>>,
    adequacy_as_of: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommunications {
    event_retention_days: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMinors {
    age_of_consent: Spanned<u8>,
    #[serde(default)]
    by_country: BTreeMap<Spanned<String>, Spanned<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProhibited {
    description: String,
    pattern: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    description: String,
    legal_bases: Vec<Spanned<String>>,
    #[serde(default)]
    art9_condition: Option<String>,
    categories: Vec<Spanned<String>>,
    consent_required: bool,
    retention: Spanned<String>,
    retention_from: Spanned<String>,
    #[serde(default)]
    recipients: Vec<Spanned<String>>,
}

/// Who the controller is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// The organisation's name.
    pub name: String,
    /// Where rights requests go.
    pub privacy_contact: String,
}

/// Someone data may be disclosed to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// Who they are.
    pub description: String,
    /// Where they are (ISO country code or region).
    pub country: String,
    /// The safeguard for a transfer there (S7): domestic, adequacy, scc, bcr.
    pub transfer_safeguard: String,
}

/// The event a retention period counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionFrom {
    /// When the data was collected.
    Collection,
    /// When the learner's programme ended.
    ProgrammeEnd,
    /// The learner's last activity.
    LastActivity,
    /// When consent was withdrawn.
    Withdrawal,
}

/// How long data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Calendar months (years count twelve).
    pub months: u32,
    /// Days on top.
    pub days: u32,
    /// What the period counts from.
    pub from: RetentionFrom,
}

impl Retention {
    /// When data whose clock started at `start` is due for removal.
    pub fn due(&self, start: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        let after_months = start
            .checked_add_months(chrono::Months::new(self.months))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        after_months
            .checked_add_days(chrono::Days::new(u64::from(self.days)))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    /// The period in words, e.g. "6 year(s) after the end of the programme".
    pub fn describe(&self) -> String {
        let period = match (self.months, self.days) {
            (m, 0) if m % 12 == 0 => format!("{} year(s)", m / 12),
            (m, 0) => format!("{m} month(s)"),
            (0, d) => format!("{d} day(s)"),
            (m, d) => format!("{m} month(s) and {d} day(s)"),
        };
        let from = match self.from {
            RetentionFrom::Collection => "collection",
            RetentionFrom::ProgrammeEnd => "the end of the programme",
            RetentionFrom::LastActivity => "the last activity",
            RetentionFrom::Withdrawal => "withdrawal of consent",
        };
        format!("{period} after {from}")
    }
}

/// What the register says about one purpose.
#[derive(Debug, Clone, Serialize)]
pub struct PurposeRule {
    /// The purpose.
    #[serde(serialize_with = "ser_purpose")]
    pub purpose: Purpose,
    /// What the processing is.
    pub description: String,
    /// Its Art. 6 bases.
    #[serde(serialize_with = "ser_bases")]
    pub legal_bases: Vec<LegalBasis>,
    /// Its Art. 9 condition, when special-category data is touched.
    pub art9_condition: Option<String>,
    /// The categories it may touch.
    #[serde(serialize_with = "ser_categories")]
    pub categories: CategorySet,
    /// Whether the learner's consent is checked.
    pub consent_required: bool,
    /// How long data is kept.
    pub retention: Retention,
    /// Recipient ids.
    pub recipients: Vec<String>,
}

fn ser_purpose<S: serde::Serializer>(p: &Purpose, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.short_name())
}

fn ser_bases<S: serde::Serializer>(b: &[LegalBasis], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(b.iter().map(|b| b.short_name()))
}

fn ser_categories<S: serde::Serializer>(c: &CategorySet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.names())
}

/// A loaded, validated register.
#[derive(Debug, Clone, Serialize)]
pub struct Register {
    /// The controller.
    pub organisation: Organisation,
    /// Recipients by id.
    pub recipients: BTreeMap<String, Recipient>,
    /// Rules by purpose, in the vocabulary's order.
    pub purposes: Vec<std::sync::Arc<PurposeRule>>,
    /// Identifiers never collected (E3): the built-in ones, then the register's own.
    pub prohibited_identifiers: ProhibitedIdentifiers,
    /// Who counts as a minor, whose data is collected only with a guardian's consent (E4, C5).
    pub minors: Minors,
    /// How communications data is kept (C4).
    pub communications: Communications,
    /// Where data may go without a transfer safeguard (S7).
    pub transfers: Transfers,
    /// The least any release of survey results withholds (V1).
    pub releases: Releases,
    /// How rights requests are handled (E8).
    pub rights: Rights,
}

/// How rights requests are handled: which kinds a dpo must approve once the requester's identity
/// is verified (the others go ahead on the verification alone).
#[derive(Debug, Clone, Serialize)]
pub struct Rights {
    /// Short names of `tutela.rights.v1.RightsRequestKind` (`tutela_proto::RIGHTS_REQUEST_KIND_NAMES`).
    pub dpo_approval: std::collections::BTreeSet<String>,
}

impl Default for Rights {
    /// What cannot be undone, or stops the organisation's work, waits for a dpo.
    fn default() -> Self {
        Self {
            dpo_approval: ["erasure", "restriction", "rectification", "objection"]
                .map(str::to_owned)
                .into(),
        }
    }
}

impl Rights {
    /// Whether a request of `kind` (a short name) waits for a dpo's approval.
    pub fn needs_approval(&self, kind: &str) -> bool {
        self.dpo_approval.contains(kind)
    }
}

/// The floors of survey releases (V1): a release may ask for larger thresholds, never smaller.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Releases {
    /// A cohort with fewer responses is withheld from an aggregate release entirely.
    pub min_cohort: u32,
    /// Counts from 1 to this minus 1 are suppressed; also the least k of a microdata release.
    pub min_cell: u32,
}

impl Default for Releases {
    fn default() -> Self {
        Self {
            min_cohort: 10,
            min_cell: 5,
        }
    }
}

/// Where personal data may be transferred without a safeguard (GDPR Art. 44–49, S7): the EEA
/// and the UK, and the countries an adequacy decision covers. Everywhere else a data-sharing
/// agreement must name its safeguard. Without a `[transfers]` section in the register no country
/// is known to need none, so every transfer needs a safeguard (fail closed).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Transfers {
    /// EEA member states (ISO 3166-1 alpha-2).
    pub eea: std::collections::BTreeSet<String>,
    /// The United Kingdom's code(s).
    pub uk: std::collections::BTreeSet<String>,
    /// Countries an adequacy decision covers as a whole.
    pub adequacy: std::collections::BTreeSet<String>,
    /// The day the adequacy list was last checked against the Commission's (and the UK's) list.
    pub adequacy_as_of: Option<chrono::NaiveDate>,
}

impl Transfers {
    /// Whether data going to `country` needs a safeguard: it is outside the EEA and the UK and
    /// not on the adequacy list.
    pub fn needs_safeguard(&self, country: &str) -> bool {
        !(self.eea.contains(country)
            || self.uk.contains(country)
            || self.adequacy.contains(country))
    }
}

/// What the register says about communications data beyond the purposes' rules.
#[derive(Debug, Clone, Serialize)]
pub struct Communications {
    /// Days an event of a sent message (delivered, opened, clicked, bounced...) is kept.
    pub event_retention_days: u32,
}

impl Default for Communications {
    fn default() -> Self {
        Self {
            event_retention_days: DEFAULT_EVENT_RETENTION_DAYS,
        }
    }
}

/// C4: email events are kept only for a bounded time; 90 days unless the register says.
const DEFAULT_EVENT_RETENTION_DAYS: u32 = 90;

/// The age of consent (GDPR Art. 8): under it, a person's data is collected only with a parent's
/// or guardian's consent. One age for the organisation, with overrides by the country the person
/// lives in.
#[derive(Debug, Clone, Serialize)]
pub struct Minors {
    /// The age of consent where no country override applies (16 unless the register says).
    pub age_of_consent: u8,
    /// Overrides by ISO 3166-1 alpha-2 country code.
    pub by_country: BTreeMap<String, u8>,
}

impl Default for Minors {
    fn default() -> Self {
        Self {
            age_of_consent: DEFAULT_AGE_OF_CONSENT,
            by_country: BTreeMap::new(),
        }
    }
}

/// GDPR Art. 8's default, and what the seed policies ask for.
const DEFAULT_AGE_OF_CONSENT: u8 = 16;

impl Minors {
    /// The age of consent for someone living in `country` (empty if unknown).
    pub fn age_of_consent_in(&self, country: &str) -> u8 {
        self.by_country
            .get(country)
            .copied()
            .unwrap_or(self.age_of_consent)
    }

    /// The age of consent that makes someone born on `born`, living in `country`, a minor on
    /// `today`; `None` for an adult.
    pub fn minor(
        &self,
        born: chrono::NaiveDate,
        country: &str,
        today: chrono::NaiveDate,
    ) -> Option<u8> {
        let age = self.age_of_consent_in(country);
        // Born in the future counts as age 0: still a minor, never an adult by accident.
        let years = today.years_since(born).unwrap_or(0);
        (years < u32::from(age)).then_some(age)
    }
}

/// A kind of identifier tutela refuses to store anywhere, free text included. What counts as one
/// is decided by `tutela_anonymise::recognise`, the recognisers the survey service's scrubbing
/// uses too.
#[derive(Debug, Clone, Serialize)]
pub struct ProhibitedIdentifier {
    /// Its name in the register (e.g. `us_ssn`).
    pub name: String,
    /// What it is, for error messages: "a US social security number".
    pub description: String,
    /// The regular expression a value must not contain a match of; empty for a built-in
    /// recogniser.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    #[serde(skip)]
    recogniser: Recogniser,
}

impl ProhibitedIdentifier {
    fn new(description: &str, recogniser: Recogniser) -> Self {
        Self {
            name: recogniser.name().to_owned(),
            description: description.to_owned(),
            pattern: recogniser.pattern_source().unwrap_or_default().to_owned(),
            recogniser,
        }
    }

    /// Whether `text` contains something that looks like this identifier.
    pub fn found_in(&self, text: &str) -> bool {
        self.recogniser.found_in(text)
    }

    /// The byte spans of what looks like this identifier in `text`, in order.
    pub fn spans_in<'a>(&'a self, text: &'a str) -> impl Iterator<Item = Range<usize>> + 'a {
        self.recogniser.find_iter(text)
    }
}

/// The register's prohibited identifiers, built-in ones first, with one pack of their
/// recognisers so that a text is searched for all of them in one pass. Reads as a slice.
#[derive(Debug, Clone)]
pub struct ProhibitedIdentifiers {
    rules: Vec<ProhibitedIdentifier>,
    pack: Pack,
}

impl ProhibitedIdentifiers {
    fn new(rules: Vec<ProhibitedIdentifier>) -> Result<Self, RecogniseError> {
        let pack = Pack::new(rules.iter().map(|r| r.recogniser.clone()).collect())?;
        Ok(Self { rules, pack })
    }

    /// The first identifier (in the register's order) found in `text`, searching for all of them
    /// in one pass: what a check that refuses the text names.
    pub fn first_in(&self, text: &str) -> Option<&ProhibitedIdentifier> {
        self.pack
            .first(text)
            .and_then(|finding| self.rules.get(finding.recogniser))
    }
}

impl std::ops::Deref for ProhibitedIdentifiers {
    type Target = [ProhibitedIdentifier];

    fn deref(&self) -> &[ProhibitedIdentifier] {
        &self.rules
    }
}

impl<'a> IntoIterator for &'a ProhibitedIdentifiers {
    type Item = &'a ProhibitedIdentifier;
    type IntoIter = std::slice::Iter<'a, ProhibitedIdentifier>;

    fn into_iter(self) -> Self::IntoIter {
        self.rules.iter()
    }
}

impl Serialize for ProhibitedIdentifiers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.rules.serialize(serializer)
    }
}

/// Identifiers refused whatever the register says: US social security numbers as SSA assigns
/// them (see `tutela_anonymise::recognise` for exactly which texts hold one).
fn built_in_prohibited() -> Result<Vec<ProhibitedIdentifier>, RecogniseError> {
    Ok(vec![ProhibitedIdentifier::new(
        "a US social security number",
        Recogniser::us_ssn()?,
    )])
}

/// Why a register did not load: the line and what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("register {source_name}, line {line}: {message}")]
pub struct RegisterError {
    /// The file (or `default`).
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn parse_retention(text: &str) -> Option<(u32, u32)> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u32 = number.parse().ok()?;
    match unit {
        "y" => Some((n.checked_mul(12)?, 0)),
        "m" => Some((n, 0)),
        "d" => Some((0, n)),
        _ => None,
    }
}

/// The register text being parsed, to name the line of what is wrong in it.
struct Source<'a> {
    text: &'a str,
    source_name: &'a str,
}

impl Source<'_> {
    fn err(&self, span: Range<usize>, message: String) -> RegisterError {
        RegisterError {
            source_name: self.source_name.to_owned(),
            line: line_of(self.text, span.start),
            message,
        }
    }

    /// One purpose's entry, checked against the vocabularies, the rules that tie its bases,
    /// categories and consent together, and the register's `recipients`.
    fn purpose_rule(
        &self,
        name: &Spanned<String>,
        rule: RawPurpose,
        recipients: &BTreeMap<String, Recipient>,
    ) -> Result<PurposeRule, RegisterError> {
        let purpose = self.purpose(name)?;
        let legal_bases = self.legal_bases(name, &rule.legal_bases)?;
        let categories = self.categories(&rule.categories)?;
        self.check_conditions(name, &rule, &legal_bases, categories)?;
        let retention = self.retention(&rule.retention, &rule.retention_from)?;
        let recipients = self.recipient_ids(&rule.recipients, recipients)?;
        Ok(PurposeRule {
            purpose,
            description: rule.description,
            legal_bases,
            art9_condition: rule.art9_condition,
            categories,
            consent_required: rule.consent_required,
            retention,
            recipients,
        })
    }

    fn purpose(&self, name: &Spanned<String>) -> Result<Purpose, RegisterError> {
        Purpose::from_short_name(name.get_ref()).ok_or_else(|| {
            let known: Vec<&str> = PURPOSE_NAMES.iter().map(|(_, n)| *n).collect();
            self.err(
                name.span(),
                format!(
                    "unknown purpose {:?}; purposes are {}",
                    name.get_ref(),
                    known.join(", ")
                ),
            )
        })
    }

    /// The purpose's legal bases: each one known, at least one.
    fn legal_bases(
        &self,
        name: &Spanned<String>,
        raw: &[Spanned<String>],
    ) -> Result<Vec<LegalBasis>, RegisterError> {
        let mut legal_bases = Vec::new();
        for b in raw {
            let basis = LegalBasis::from_short_name(b.get_ref()).ok_or_else(|| {
                let known: Vec<&str> = LEGAL_BASIS_NAMES.iter().map(|(_, n)| *n).collect();
                self.err(
                    b.span(),
                    format!(
                        "unknown legal basis {:?}; bases are {}",
                        b.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
            legal_bases.push(basis);
        }
        if legal_bases.is_empty() {
            return Err(self.err(
                name.span(),
                format!("purpose {} has no legal basis", name.get_ref()),
            ));
        }
        Ok(legal_bases)
    }

    /// The categories a purpose may touch; `none` is not a category one can be allowed.
    fn categories(&self, raw: &[Spanned<String>]) -> Result<CategorySet, RegisterError> {
        let mut categories = CategorySet::EMPTY;
        for c in raw {
            match DataCategory::from_short_name(c.get_ref()) {
                Some(DataCategory::None) | None => {
                    return Err(
                        self.err(c.span(), format!("unknown data category {:?}", c.get_ref()))
                    );
                }
                Some(category) => categories.insert(category),
            }
        }
        Ok(categories)
    }

    /// Art. 9 data needs its condition; a consent check needs consent among the bases, and
    /// consent as the only basis needs the consent check.
    fn check_conditions(
        &self,
        name: &Spanned<String>,
        rule: &RawPurpose,
        legal_bases: &[LegalBasis],
        categories: CategorySet,
    ) -> Result<(), RegisterError> {
        if categories.contains(DataCategory::SpecialCategory)
            && rule
                .art9_condition
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
        {
            return Err(self.err(
                name.span(),
                format!(
                    "purpose {} touches special_category data but names no art9_condition",
                    name.get_ref()
                ),
            ));
        }
        let consents = legal_bases.contains(&LegalBasis::Consent);
        if rule.consent_required && !consents {
            return Err(self.err(
                name.span(),
                format!(
                    "purpose {} requires consent, so its legal_bases must include consent",
                    name.get_ref()
                ),
            ));
        }
        if consents && legal_bases.len() == 1 && !rule.consent_required {
            return Err(self.err(
                name.span(),
                format!(
                    "purpose {} rests on consent alone, so consent_required must be true",
                    name.get_ref()
                ),
            ));
        }
        Ok(())
    }

    fn retention(
        &self,
        period: &Spanned<String>,
        from: &Spanned<String>,
    ) -> Result<Retention, RegisterError> {
        let (months, days) = parse_retention(period.get_ref()).ok_or_else(|| {
            self.err(
                period.span(),
                "retention must be <n>d, <n>m or <n>y".to_owned(),
            )
        })?;
        let from = match from.get_ref().as_str() {
            "collection" => RetentionFrom::Collection,
            "programme_end" => RetentionFrom::ProgrammeEnd,
            "last_activity" => RetentionFrom::LastActivity,
            "withdrawal" => RetentionFrom::Withdrawal,
            other => {
                return Err(self.err(
                    from.span(),
                    format!(
                        "retention_from {other:?} must be collection, programme_end, last_activity or withdrawal"
                    ),
                ));
            }
        };
        Ok(Retention { months, days, from })
    }

    /// A purpose's recipients, each declared in the register's `recipients`.
    fn recipient_ids(
        &self,
        raw: &[Spanned<String>],
        declared: &BTreeMap<String, Recipient>,
    ) -> Result<Vec<String>, RegisterError> {
        raw.iter()
            .map(|r| {
                if declared.contains_key(r.get_ref()) {
                    Ok(r.get_ref().clone())
                } else {
                    Err(self.err(r.span(), format!("unknown recipient {:?}", r.get_ref())))
                }
            })
            .collect()
    }

    /// The built-in recognisers, then the register's own patterns.
    fn prohibited_identifiers(
        &self,
        raw: BTreeMap<Spanned<String>, RawProhibited>,
    ) -> Result<ProhibitedIdentifiers, RegisterError> {
        let mut prohibited = built_in_prohibited()
            .map_err(|e| self.err(0..0, format!("built-in recogniser: {e}")))?;
        for (name, raw) in raw {
            let recogniser =
                Recogniser::pattern(name.get_ref(), raw.pattern.get_ref()).map_err(|e| {
                    self.err(
                        raw.pattern.span(),
                        format!("pattern of {}: {e}", name.get_ref()),
                    )
                })?;
            prohibited.push(ProhibitedIdentifier::new(&raw.description, recogniser));
        }
        ProhibitedIdentifiers::new(prohibited)
            .map_err(|e| self.err(0..0, format!("prohibited identifiers: {e}")))
    }

    fn minors(&self, m: &RawMinors) -> Result<Minors, RegisterError> {
        let valid_age = |a: &Spanned<u8>| {
            if (1..=21).contains(a.get_ref()) {
                Ok(*a.get_ref())
            } else {
                Err(self.err(
                    a.span(),
                    "an age of consent must be between 1 and 21".to_owned(),
                ))
            }
        };
        let mut by_country = BTreeMap::new();
        for (country, age) in &m.by_country {
            let code = country.get_ref();
            if !crate::validate::is_country_code(code) {
                return Err(self.err(
                    country.span(),
                    format!("{code:?} is not an ISO 3166-1 alpha-2 country code"),
                ));
            }
            by_country.insert(code.clone(), valid_age(age)?);
        }
        Ok(Minors {
            age_of_consent: valid_age(&m.age_of_consent)?,
            by_country,
        })
    }

    /// The transfer lists: every entry an assigned country code, and the adequacy list dated.
    fn transfers(&self, t: &RawTransfers) -> Result<Transfers, RegisterError> {
        let codes = |list: &[Spanned<String>]| {
            list.iter()
                .map(|c| {
                    if crate::validate::is_assigned_country_code(c.get_ref()) {
                        Ok(c.get_ref().clone())
                    } else {
                        Err(self.err(
                            c.span(),
                            format!(
                                "{:?} is not an assigned ISO 3166-1 alpha-2 country code",
                                c.get_ref()
                            ),
                        ))
                    }
                })
                .collect::<Result<std::collections::BTreeSet<String>, RegisterError>>()
        };
        let as_of = chrono::NaiveDate::parse_from_str(t.adequacy_as_of.get_ref(), "%Y-%m-%d")
            .map_err(|_| {
                self.err(
                    t.adequacy_as_of.span(),
                    "adequacy_as_of must be a date as YYYY-MM-DD".to_owned(),
                )
            })?;
        Ok(Transfers {
            eea: codes(&t.eea)?,
            uk: codes(&t.uk)?,
            adequacy: codes(&t.adequacy)?,
            adequacy_as_of: Some(as_of),
        })
    }

    fn releases(&self, r: &RawReleases) -> Result<Releases, RegisterError> {
        let (cohort, cell) = (*r.min_cohort.get_ref(), *r.min_cell.get_ref());
        // A cell of one is a person: suppression must start at two at least.
        if !(2..=1000).contains(&cell) {
            return Err(self.err(
                r.min_cell.span(),
                "min_cell must be between 2 and 1000".to_owned(),
            ));
        }
        if !(cell..=1000).contains(&cohort) {
            return Err(self.err(
                r.min_cohort.span(),
                "min_cohort must be at least min_cell and at most 1000".to_owned(),
            ));
        }
        Ok(Releases {
            min_cohort: cohort,
            min_cell: cell,
        })
    }

    fn rights(&self, r: &RawRights) -> Result<Rights, RegisterError> {
        let mut dpo_approval = std::collections::BTreeSet::new();
        for kind in &r.dpo_approval {
            if tutela_proto::rights::RightsRequestKind::from_short_name(kind.get_ref()).is_none() {
                let kinds: Vec<&str> = tutela_proto::RIGHTS_REQUEST_KIND_NAMES
                    .iter()
                    .map(|(_, name)| *name)
                    .collect();
                return Err(self.err(
                    kind.span(),
                    format!(
                        "unknown kind of rights request {:?}; the kinds are {}",
                        kind.get_ref(),
                        kinds.join(", ")
                    ),
                ));
            }
            dpo_approval.insert(kind.get_ref().clone());
        }
        Ok(Rights { dpo_approval })
    }

    fn communications(&self, c: &RawCommunications) -> Result<Communications, RegisterError> {
        let days = *c.event_retention_days.get_ref();
        if !(1..=3650).contains(&days) {
            return Err(self.err(
                c.event_retention_days.span(),
                "event_retention_days must be between 1 and 3650".to_owned(),
            ));
        }
        Ok(Communications {
            event_retention_days: days,
        })
    }
}

impl Register {
    /// The default register.
    pub fn default_register() -> Result<Self, RegisterError> {
        Self::parse(DEFAULT_REGISTER, "default")
    }

    /// Parses and validates a register; `source_name` is used in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, RegisterError> {
        let src = Source { text, source_name };
        let raw: RawRegister = toml::from_str(text)
            .map_err(|e| src.err(e.span().unwrap_or(0..0), e.message().to_owned()))?;
        let recipients: BTreeMap<String, Recipient> = raw
            .recipients
            .into_iter()
            .map(|(k, v)| (k.into_inner(), v))
            .collect();
        let mut purposes = raw
            .purposes
            .into_iter()
            .map(|(name, rule)| src.purpose_rule(&name, rule, &recipients).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        purposes.sort_by_key(|p| p.purpose as i32);
        Ok(Self {
            organisation: raw.organisation,
            recipients,
            purposes,
            prohibited_identifiers: src.prohibited_identifiers(raw.prohibited_identifiers)?,
            minors: raw
                .minors
                .map_or(Ok(Minors::default()), |m| src.minors(&m))?,
            communications: raw
                .communications
                .map_or(Ok(Communications::default()), |c| src.communications(&c))?,
            transfers: raw
                .transfers
                .map_or(Ok(Transfers::default()), |t| src.transfers(&t))?,
            releases: raw
                .releases
                .map_or(Ok(Releases::default()), |r| src.releases(&r))?,
            rights: raw
                .rights
                .map_or(Ok(Rights::default()), |r| src.rights(&r))?,
        })
    }

    /// Loads the register at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, RegisterError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegisterError {
            source_name: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Whether a person may object to processing for `purpose` (GDPR Art. 21), and if not, why
    /// not. They may where the register bases it on legitimate interests or a public task (Art.
    /// 21(1)), and always to direct marketing (Art. 21(2)). Processing for rights handling, legal
    /// obligations and the record of consent is never open to objection (and is what a
    /// restriction leaves running too); for any other purpose based on consent, the person
    /// withdraws the consent instead.
    pub fn objection(&self, purpose: Purpose) -> Result<(), &'static str> {
        use tutela_proto::common::LegalBasis;
        let Some(rule) = self.rule(purpose) else {
            return Err("the processing register does not list this purpose");
        };
        if crate::consent::ConsentSnapshot::allows_while_restricted(purpose) {
            return Err(
                "processing for rights handling, legal obligations and the record of \
                        consent is not open to objection",
            );
        }
        let bases = &rule.legal_bases;
        if purpose == Purpose::Marketing
            || bases.contains(&LegalBasis::LegitimateInterests)
            || bases.contains(&LegalBasis::PublicTask)
        {
            Ok(())
        } else if bases.contains(&LegalBasis::Consent) {
            Err(
                "this purpose rests on consent: the person withdraws it instead \
                 (tutela.consent.v1.ConsentLedger/WithdrawConsent)",
            )
        } else {
            Err(
                "this purpose rests on contract or legal obligation, which is not open to \
                 objection (Art. 21 covers legitimate interests, a public task and direct \
                 marketing)",
            )
        }
    }

    /// The rule for `purpose`, if the register lists it.
    pub fn rule(&self, purpose: Purpose) -> Option<&std::sync::Arc<PurposeRule>> {
        self.purposes.iter().find(|r| r.purpose == purpose)
    }

    /// The register as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The register as a Markdown record of processing activities.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Record of processing activities: {}\n",
            self.organisation.name
        );
        let _ = writeln!(
            md,
            "Rights requests: {}\n",
            self.organisation.privacy_contact
        );
        let _ = writeln!(
            md,
            "| purpose | description | legal bases | Art. 9 condition | data categories | consent checked | retention | recipients |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for r in &self.purposes {
            let bases: Vec<&str> = r.legal_bases.iter().map(|b| b.short_name()).collect();
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                r.purpose.short_name(),
                r.description,
                bases.join(", "),
                r.art9_condition.as_deref().unwrap_or("—"),
                r.categories.names().join(", "),
                if r.consent_required { "yes" } else { "no" },
                r.retention.describe(),
                if r.recipients.is_empty() {
                    "—".to_owned()
                } else {
                    r.recipients.join(", ")
                },
            );
        }
        if !self.recipients.is_empty() {
            let _ = writeln!(md, "\n## Recipients\n");
            let _ = writeln!(md, "| id | who | country | transfer safeguard |");
            let _ = writeln!(md, "| --- | --- | --- | --- |");
            for (id, r) in &self.recipients {
                let _ = writeln!(
                    md,
                    "| `{id}` | {} | {} | {} |",
                    r.description, r.country, r.transfer_safeguard
                );
            }
        }
        let _ = writeln!(md, "\n## Minors\n");
        let _ = writeln!(
            md,
            "Under {} (the age of consent), a person's data is collected only with a parent's or guardian's consent recorded in the consent ledger.",
            self.minors.age_of_consent
        );
        for (country, age) in &self.minors.by_country {
            let _ = writeln!(md, "- living in {country}: under {age}");
        }
        let _ = writeln!(md, "\n## Communications\n");
        let _ = writeln!(
            md,
            "Events of sent messages (delivered, opened, clicked, forwarded, bounced, complained) are kept for {} days, then deleted. An address that hard-bounced or complained, or whose owner's data was erased, stays on the suppression list only as a keyed hash, so that no import can add it again.",
            self.communications.event_retention_days
        );
        let _ = writeln!(md, "\n## Survey results\n");
        let _ = writeln!(
            md,
            "Survey results are released only aggregated or anonymised. A group (cohort) with fewer than {} responses is left out of aggregate results entirely, and a count below {} is suppressed, together with any count it could be worked out from; anonymised records are released only in groups of at least {} people.",
            self.releases.min_cohort, self.releases.min_cell, self.releases.min_cell
        );
        let _ = writeln!(md, "\n## Rights requests\n");
        let approval: Vec<&str> = self
            .rights
            .dpo_approval
            .iter()
            .map(String::as_str)
            .collect();
        let _ = writeln!(
            md,
            "A request to exercise a right is carried out once the requester's identity is verified{}. It is answered within one month of receipt; the deadline may be extended once by two months, with the reason recorded and told to the requester.",
            if approval.is_empty() {
                String::new()
            } else {
                format!(
                    ", and, for {}, once the data protection officer has approved it",
                    approval.join(" and ")
                )
            }
        );
        let _ = writeln!(md, "\n## Transfers abroad\n");
        let t = &self.transfers;
        match t.adequacy_as_of {
            None => {
                let _ = writeln!(
                    md,
                    "No `[transfers]` section: every transfer to a partner needs a named safeguard."
                );
            }
            Some(as_of) => {
                let join = |set: &std::collections::BTreeSet<String>| {
                    set.iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    md,
                    "No safeguard is needed within the EEA ({}) and the UK ({}), nor to countries an adequacy decision covers ({}; list as of {as_of}). Every other transfer names its safeguard (standard contractual clauses, the UK IDTA, binding corporate rules or an Art. 49 derogation) in the partner's agreement.",
                    join(&t.eea),
                    join(&t.uk),
                    join(&t.adequacy)
                );
            }
        }
        let _ = writeln!(md, "\n## Identifiers never collected\n");
        for p in &self.prohibited_identifiers {
            let _ = writeln!(md, "- `{}`: {}", p.name, p.description);
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prohibited_identifiers_are_built_in_and_extended_by_the_register() {
        let ssn = &Register::default_register().unwrap().prohibited_identifiers[0];
        // Nine digits in a row are an SSN only beside a word that says so (issue 13, point 11).
        for text in ["123-45-6789", "my ssn is 123 45 6789.", "SSN 123456789"] {
            assert!(ssn.found_in(text), "{text}");
        }
        for text in [
            "1234567890",
            "020 7946 0958",
            "2026-11-24",
            "12-345-6789",
            "123456789",
            "Company no. 123456789",
            "load123456789@example.org",
            "Given123456789",
            "666-12-3456",
        ] {
            assert!(!ssn.found_in(text), "{text}");
        }
        let spans: Vec<_> = ssn.spans_in("id 078-05-1120.").collect();
        assert_eq!(spans, vec![Range { start: 3, end: 14 }]);
        let text = format!(
            "{DEFAULT_REGISTER}\n[prohibited_identifiers.nino]\ndescription = \"a UK National Insurance number\"\npattern = '[A-Z]{{2}}[0-9]{{6}}[A-D]'\n"
        );
        let register = Register::parse(&text, "t").unwrap();
        assert!(register.prohibited_identifiers[1].found_in("QQ123456C"));
        // One pass for all of them names the first found, in the register's order.
        let all = &register.prohibited_identifiers;
        assert_eq!(all.first_in("QQ123456C").unwrap().name, "nino");
        assert_eq!(
            all.first_in("QQ123456C 123-45-6789").unwrap().name,
            "us_ssn"
        );
        assert!(all.first_in("Company no. 123456789").is_none());
        let json = register.to_json();
        assert!(
            json.contains(r#""pattern": "[A-Z]{2}[0-9]{6}[A-D]""#),
            "{json}"
        );
        // A pattern that matches empty text would refuse every text: it names its line.
        let empty = text
            .replace("[A-D]'", "[A-D]?'")
            .replace("'[A-Z]{2}[0-9]{6}", "'[A-Z]*[0-9]*");
        let err = Register::parse(&empty, "t").unwrap_err();
        assert_eq!(err.line, empty.lines().count(), "{err}");
        assert!(err.message.contains("empty"), "{err}");
        let bad = text.replace("[A-D]'", "[A-D'");
        let err = Register::parse(&bad, "t").unwrap_err();
        assert_eq!(err.line, bad.lines().count(), "{err}");
    }

    #[test]
    fn the_age_of_consent_has_country_overrides_and_bad_ones_name_their_line() {
        let default = Register::default_register().unwrap().minors;
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let today = day("2026-11-24");
        assert_eq!(default.minor(day("2010-11-25"), "GB", today), Some(16));
        assert_eq!(default.minor(day("2010-11-24"), "GB", today), None);
        assert_eq!(default.minor(day("2030-01-01"), "", today), Some(16));
        let text = DEFAULT_REGISTER.replace("by_country = {}", "by_country = { FR = 15 }");
        let minors = Register::parse(&text, "t").unwrap().minors;
        assert_eq!(minors.minor(day("2011-01-01"), "FR", today), None);
        assert_eq!(minors.minor(day("2011-01-01"), "DE", today), Some(16));
        let bad = DEFAULT_REGISTER.replace("by_country = {}", "by_country = { france = 15 }");
        let err = Register::parse(&bad, "t").unwrap_err();
        let line = bad.lines().position(|l| l.contains("france")).unwrap() + 1;
        assert_eq!(err.line, line, "{err}");
        let bad = DEFAULT_REGISTER.replace("age_of_consent = 16", "age_of_consent = 40");
        assert!(Register::parse(&bad, "t").is_err());
    }

    #[test]
    fn the_default_register_loads_and_lists_every_purpose() {
        let register = Register::default_register().unwrap();
        for (purpose, name) in PURPOSE_NAMES {
            assert!(
                register.rule(purpose).is_some(),
                "default register lacks {name}"
            );
        }
        let md = register.to_markdown();
        assert!(md.contains("`exam_booking`"));
        let json: serde_json::Value = serde_json::from_str(&register.to_json()).unwrap();
        assert_eq!(
            json["purposes"].as_array().unwrap().len(),
            PURPOSE_NAMES.len()
        );
    }

    #[test]
    fn transfers_need_a_safeguard_outside_the_eea_the_uk_and_the_adequacy_list() {
        let register = Register::default_register().unwrap();
        let t = &register.transfers;
        assert_eq!(
            t.eea.len(),
            30,
            "27 EU member states and Iceland, Liechtenstein, Norway"
        );
        assert!(t.adequacy_as_of.is_some());
        for home in ["GB", "DE", "NO", "JP", "CH"] {
            assert!(!t.needs_safeguard(home), "{home}");
        }
        // Adequacy for the US covers certified organisations only, so not the country.
        for abroad in ["US", "IN", "CN", "ZA"] {
            assert!(t.needs_safeguard(abroad), "{abroad}");
        }
        assert!(register.to_markdown().contains("## Transfers abroad"));

        // Without the section, every country needs a safeguard (fail closed).
        let start = DEFAULT_REGISTER.find("[transfers]").unwrap();
        let end = start + DEFAULT_REGISTER[start..].find("\n\n").unwrap();
        let without = format!("{}{}", &DEFAULT_REGISTER[..start], &DEFAULT_REGISTER[end..]);
        let register = Register::parse(&without, "t").unwrap();
        assert!(register.transfers.needs_safeguard("GB"));

        // A code that is not assigned names its line; so does a date that is not one.
        let bad = DEFAULT_REGISTER.replacen("\"JP\"", "\"XJ\"", 1);
        let err = Register::parse(&bad, "t").unwrap_err();
        assert_eq!(err.line, line_containing(&bad, "\"XJ\""), "{err}");
        let bad = DEFAULT_REGISTER.replacen("adequacy_as_of = \"", "adequacy_as_of = \"x", 1);
        let err = Register::parse(&bad, "t").unwrap_err();
        assert!(err.message.contains("adequacy_as_of"), "{err}");
    }

    #[test]
    fn marketing_needs_consent_and_cannot_touch_special_category_data() {
        let register = Register::default_register().unwrap();
        let marketing = register.rule(Purpose::Marketing).unwrap();
        assert!(marketing.consent_required);
        assert!(!marketing.categories.contains(DataCategory::SpecialCategory));
    }

    fn broken(from: &str, to: &str) -> RegisterError {
        assert!(DEFAULT_REGISTER.contains(from), "{from}");
        Register::parse(&DEFAULT_REGISTER.replacen(from, to, 1), "test").unwrap_err()
    }

    fn line_containing(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn an_unknown_purpose_is_refused_naming_its_line() {
        let e = broken("[purposes.exam_booking]", "[purposes.exam_bookings]");
        assert!(
            e.message.contains("unknown purpose \"exam_bookings\""),
            "{e}"
        );
        assert_eq!(e.line, line_of_default("[purposes.exam_booking]"));
    }

    fn line_of_default(needle: &str) -> usize {
        line_containing(DEFAULT_REGISTER, needle)
    }

    #[test]
    fn an_unknown_category_is_refused_naming_its_line() {
        let e = broken(
            "categories = [\"identity\", \"assessment\"]",
            "categories = [\"identity\", \"asessment\"]",
        );
        assert!(
            e.message.contains("unknown data category \"asessment\""),
            "{e}"
        );
        assert_eq!(
            e.line,
            line_of_default("categories = [\"identity\", \"assessment\"]")
        );
    }

    #[test]
    fn special_category_data_needs_an_art9_condition() {
        let text = DEFAULT_REGISTER.replacen(
            "art9_condition = \"Art. 9(2)(b)/(g): access arrangements for disabilities required by the exam body\"\n",
            "",
            1,
        );
        let e = Register::parse(&text, "test").unwrap_err();
        assert!(e.message.contains("art9_condition"), "{e}");
    }

    #[test]
    fn consent_alone_as_a_basis_requires_the_consent_check() {
        let e = broken(
            "legal_bases = [\"consent\"]\ncategories = [\"identity\", \"contact\", \"communication\"]\nconsent_required = true",
            "legal_bases = [\"consent\"]\ncategories = [\"identity\", \"contact\", \"communication\"]\nconsent_required = false",
        );
        assert!(e.message.contains("consent_required must be true"), "{e}");
    }

    #[test]
    fn retention_parses_calendar_units() {
        assert_eq!(parse_retention("1y"), Some((12, 0)));
        assert_eq!(parse_retention("18m"), Some((18, 0)));
        assert_eq!(parse_retention("90d"), Some((0, 90)));
        assert_eq!(parse_retention("1w"), None);
        assert_eq!(parse_retention(""), None);
        let r = Retention {
            months: 12,
            days: 0,
            from: RetentionFrom::ProgrammeEnd,
        };
        let end = chrono::DateTime::parse_from_rfc3339("2026-02-28T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(r.due(end).to_rfc3339(), "2027-02-28T00:00:00+00:00");
    }
}
