//! The survey service's free-text scrubber: every identifier a pack of recognisers finds is
//! replaced with a typed placeholder (`[NAME]`, `[EMAIL]`…), and what is left is checked once
//! more for residual risk, so that a response still looking risky is held back for review.
//!
//! One [`Scrubber`] is built per course (its known people's names go into an Aho-Corasick
//! automaton) and scrubs any number of texts, from any number of threads.
//!
//! What is found (see each module for exactly which texts):
//! - structured identifiers ([`structured`]): e-mail addresses, phone numbers (UK, US,
//!   international `+CC …`), UK postcodes, National Insurance numbers, NHS numbers (mod-11 check;
//!   an unseparated run only beside the word "NHS"), US social security numbers (the guard's own
//!   recogniser, [`crate::Recogniser::us_ssn`]), payment cards (Luhn), IBANs (mod-97), URLs, IPv4
//!   and IPv6 addresses, social handles;
//! - names ([`names`]): the course's known people, by full name and by each part, case- and
//!   diacritic-insensitively on word boundaries (parts that are common English words only when
//!   written as a name), and unknown names after a title (`Dr Jones`).
//!
//! Where hits overlap, the longest wins, then the earliest, then the kind listed first in
//! [`EntityKind`]'s priority (an e-mail address holds a handle-like `@x`, a URL an
//! e-mail-like part). The raw text is never kept: [`Scrubbed`] holds the scrubbed text only, and
//! prints `[redacted]` in its `Debug`.

pub mod names;
pub mod risk;
pub mod structured;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

pub use risk::Risk;

use crate::RecogniseError;

/// A kind of identifier the scrubber replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    /// A person's name: a known person's, or an unknown one after a title.
    Name,
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A UK postcode.
    Postcode,
    /// A UK National Insurance number.
    Nino,
    /// An NHS number.
    NhsNumber,
    /// A US social security number.
    Ssn,
    /// A payment card number.
    Card,
    /// An international bank account number.
    Iban,
    /// A URL.
    Url,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A social media handle (`@someone`).
    Handle,
}

impl EntityKind {
    /// Every kind, in declaration order.
    pub const ALL: [EntityKind; 12] = [
        EntityKind::Name,
        EntityKind::Email,
        EntityKind::Phone,
        EntityKind::Postcode,
        EntityKind::Nino,
        EntityKind::NhsNumber,
        EntityKind::Ssn,
        EntityKind::Card,
        EntityKind::Iban,
        EntityKind::Url,
        EntityKind::Ip,
        EntityKind::Handle,
    ];

    /// What replaces it in scrubbed text.
    pub fn placeholder(self) -> &'static str {
        match self {
            EntityKind::Name => "[NAME]",
            EntityKind::Email => "[EMAIL]",
            EntityKind::Phone => "[PHONE]",
            EntityKind::Postcode => "[POSTCODE]",
            EntityKind::Nino => "[NINO]",
            EntityKind::NhsNumber => "[NHS_NUMBER]",
            EntityKind::Ssn => "[SSN]",
            EntityKind::Card => "[CARD]",
            EntityKind::Iban => "[IBAN]",
            EntityKind::Url => "[URL]",
            EntityKind::Ip => "[IP]",
            EntityKind::Handle => "[HANDLE]",
        }
    }

    /// A stable name (for metrics and logs): `name`, `email`, `phone`, `postcode`, `nino`,
    /// `nhs_number`, `ssn`, `card`, `iban`, `url`, `ip`, `handle`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Name => "name",
            EntityKind::Email => "email",
            EntityKind::Phone => "phone",
            EntityKind::Postcode => "postcode",
            EntityKind::Nino => "nino",
            EntityKind::NhsNumber => "nhs_number",
            EntityKind::Ssn => "ssn",
            EntityKind::Card => "card",
            EntityKind::Iban => "iban",
            EntityKind::Url => "url",
            EntityKind::Ip => "ip",
            EntityKind::Handle => "handle",
        }
    }

    /// Which kind wins when two hits cover exactly the same span (lower wins). Containers first
    /// (a URL holds e-mail-like parts, an e-mail a handle-like part); check-digit kinds before
    /// shape-only ones (a spaced 3-3-4 NHS number is also a US phone shape, and the mod-11 check
    /// passing is the stronger evidence).
    fn priority(self) -> u8 {
        match self {
            EntityKind::Url => 0,
            EntityKind::Email => 1,
            EntityKind::Iban => 2,
            EntityKind::Card => 3,
            EntityKind::NhsNumber => 4,
            EntityKind::Ssn => 5,
            EntityKind::Nino => 6,
            EntityKind::Phone => 7,
            EntityKind::Ip => 8,
            EntityKind::Postcode => 9,
            EntityKind::Handle => 10,
            EntityKind::Name => 11,
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identifier found and replaced: its kind and its byte span in the input (on `char`
/// boundaries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// What it is.
    pub kind: EntityKind,
    /// Where it was in the input, in bytes.
    pub span: Range<usize>,
}

/// A scrubbed text: identifiers replaced by placeholders, what was replaced where, and why the
/// result should still be reviewed by a person before it is released (if it should).
#[derive(Clone, PartialEq, Eq)]
pub struct Scrubbed {
    /// The text with every hit replaced by its kind's placeholder.
    pub text: String,
    /// The hits, by start in the input; they do not overlap.
    pub hits: Vec<Hit>,
    /// What still looks risky in `text` (each reason once, in [`Risk`] order).
    pub risks: Vec<Risk>,
}

impl Scrubbed {
    /// Whether the scrubbed text must be held back for a person to review.
    pub fn needs_review(&self) -> bool {
        !self.risks.is_empty()
    }
}

impl fmt::Debug for Scrubbed {
    // The text is personal data until a person has reviewed it: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubbed")
            .field("text", &format_args!("[redacted]"))
            .field("hits", &self.hits)
            .field("risks", &self.risks)
            .finish()
    }
}

/// The scrubber of one course: structured recognisers, its known people's names, the residual
/// risk check. Build once, share freely (`Send + Sync`).
#[derive(Clone)]
pub struct Scrubber {
    structured: structured::Structured,
    names: names::Names,
    risk: risk::RiskCheck,
}

impl fmt::Debug for Scrubber {
    // The known names are personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("known_name_parts", &self.names.len())
            .field("names", &format_args!("[redacted]"))
            .finish()
    }
}

impl Scrubber {
    /// A scrubber for a course whose known people (learners, staff) are `known_names`, full
    /// names such as "José Álvarez" (each part is also matched on its own, see [`names`]).
    pub fn new(
        known_names: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, RecogniseError> {
        Ok(Self {
            structured: structured::Structured::new()?,
            names: names::Names::new(known_names)?,
            risk: risk::RiskCheck::new()?,
        })
    }

    /// `text` with its identifiers replaced, and the residual-risk verdict on the result.
    pub fn scrub(&self, text: &str) -> Scrubbed {
        let mut found = Vec::new();
        self.structured.find(text, &mut found);
        self.names.find(text, &mut found);
        let hits = resolve(text, found);
        let mut out = String::with_capacity(text.len() + 16);
        let mut at = 0;
        for hit in &hits {
            out.push_str(&text[at..hit.span.start]);
            out.push_str(hit.kind.placeholder());
            at = hit.span.end;
        }
        out.push_str(&text[at..]);
        let risks = self.risk.check(&out);
        Scrubbed {
            text: out,
            hits,
            risks,
        }
    }
}

/// A byte class, as a table: whether each byte value is in it.
pub(crate) type ByteClass = [bool; 256];

/// Where the bytes of `class` are in `bytes`, in order, worked out 64 bytes at a time into a bit
/// mask without a branch per byte: scanning byte by byte with a branch on each was mispredicted
/// at every word or digit, and cost more than the searches it led to.
pub(crate) fn positions<'b>(
    bytes: &'b [u8],
    class: &'static ByteClass,
) -> impl Iterator<Item = usize> + 'b {
    bytes.chunks(64).enumerate().flat_map(move |(n, block)| {
        let mut mask = block
            .iter()
            .enumerate()
            .fold(0u64, |m, (k, &c)| m | u64::from(class[usize::from(c)]) << k);
        std::iter::from_fn(move || {
            (mask != 0).then(|| {
                let k = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                n * 64 + k
            })
        })
    })
}

/// Above this many candidates, [`resolve`] keeps hits in a tree rather than a sorted list.
const MANY_HITS: usize = 64;

/// The hits kept out of overlapping candidates: longest first, then earliest, then by kind
/// priority; then name hits separated only by spaces or a hyphen become one (`[NAME]` for
/// "José Álvarez", not `[NAME] [NAME]`).
fn resolve(text: &str, mut found: Vec<Hit>) -> Vec<Hit> {
    if found.len() > 1 {
        found.sort_by_key(|h| {
            (
                std::cmp::Reverse(h.span.len()),
                h.span.start,
                h.kind.priority(),
            )
        });
        found = if found.len() <= MANY_HITS {
            // Few hits per comment: a sorted list of kept spans and a binary search is plenty.
            let mut kept: Vec<Hit> = Vec::with_capacity(found.len());
            for hit in found {
                let i = kept.partition_point(|k| k.span.start < hit.span.start);
                let clear_before = i == 0 || kept[i - 1].span.end <= hit.span.start;
                let clear_after = kept.get(i).is_none_or(|k| hit.span.end <= k.span.start);
                if clear_before && clear_after {
                    kept.insert(i, hit);
                }
            }
            kept
        } else {
            // A long text's thousands of hits: inserting into the middle of a list is quadratic.
            // The same rule, kept spans by start in a tree (no hit is empty: starts are distinct).
            let mut kept: BTreeMap<usize, Hit> = BTreeMap::new();
            for hit in found {
                let clear_before = kept
                    .range(..hit.span.start)
                    .next_back()
                    .is_none_or(|(_, k)| k.span.end <= hit.span.start);
                let clear_after = kept
                    .range(hit.span.start..)
                    .next()
                    .is_none_or(|(_, k)| hit.span.end <= k.span.start);
                if clear_before && clear_after {
                    kept.insert(hit.span.start, hit);
                }
            }
            kept.into_values().collect()
        };
    }
    let mut merged: Vec<Hit> = Vec::with_capacity(found.len());
    for hit in found {
        if let Some(last) = merged.last_mut()
            && last.kind == EntityKind::Name
            && hit.kind == EntityKind::Name
            && names::joins_names(&text[last.span.end..hit.span.start])
        {
            last.span.end = hit.span.end;
            continue;
        }
        merged.push(hit);
    }
    merged
}
