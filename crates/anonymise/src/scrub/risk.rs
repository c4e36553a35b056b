//! The residual-risk check: what in a scrubbed text still looks like an identifier the
//! recognisers missed. It reports reasons, never the text that raised them.

use regex::RegexSet;

use crate::RecogniseError;

/// Why a scrubbed text should be reviewed by a person before it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Risk {
    /// Six or more digits in a row, or three or more groups of three or more digits separated
    /// by single spaces or dashes: an account, reference or phone number no recogniser took.
    DigitRun,
    /// An `@` outside a placeholder: an address or handle in a shape no recogniser took.
    AtSign,
    /// A capitalised word right after "my name is", "my name's", "I am", "I'm" or "call me".
    SelfIntroduction,
    /// A house number, capitalised words and a street word: "12 High Street", "4a Mill Lane".
    StreetAddress,
    /// "date of birth", "DOB", "born on" or "birthday is" followed by a number.
    DateOfBirth,
}

impl Risk {
    /// A stable name (for metrics and review queues).
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::DigitRun => "digit_run",
            Risk::AtSign => "at_sign",
            Risk::SelfIntroduction => "self_introduction",
            Risk::StreetAddress => "street_address",
            Risk::DateOfBirth => "date_of_birth",
        }
    }
}

/// The patterns of the risks a regular expression finds, in this order.
const PATTERNS: &[(Risk, &str)] = &[
    (
        Risk::SelfIntroduction,
        r"(?:(?i:my name is|my name's|my name\x{2019}s|i am|i'm|i\x{2019}m|call me)[ ]+)\p{Lu}\p{Ll}",
    ),
    (
        Risk::StreetAddress,
        r"(?-u:\b)[0-9]{1,4}[A-Za-z]?,?[ ]+(?:\p{Lu}\p{Ll}+[ ]+){1,3}(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Close|Way|Court|Ct|Place|Pl|Crescent|Cres|Gardens|Terrace|Grove|Square|Sq|Boulevard|Blvd|Parade|Row|Mews|Walk|Hill)(?-u:\b)",
    ),
    (
        Risk::DateOfBirth,
        r"(?i:date of birth|d\.?o\.?b\.?|born on|birthday is)[ :\-]*[0-9]",
    ),
];

#[derive(Debug, Clone)]
pub(crate) struct RiskCheck {
    set: RegexSet,
}

impl RiskCheck {
    pub(crate) fn new() -> Result<Self, RecogniseError> {
        Ok(Self {
            set: RegexSet::new(PATTERNS.iter().map(|(_, p)| p))?,
        })
    }

    /// The risks of the scrubbed `text`, each once, in [`Risk`] order.
    pub(crate) fn check(&self, text: &str) -> Vec<Risk> {
        let mut risks = Vec::new();
        if digit_run(text.as_bytes()) {
            risks.push(Risk::DigitRun);
        }
        if text.contains('@') {
            risks.push(Risk::AtSign);
        }
        for i in self.set.matches(text).iter() {
            risks.push(PATTERNS[i].0);
        }
        risks.sort_unstable();
        risks
    }
}

/// Six digits in a row, or three groups of three or more digits joined by single spaces or
/// dashes. Dates (`2026-11-24`), times, prices and scores never are.
fn digit_run(b: &[u8]) -> bool {
    // `groups`: long groups (three digits or more) so far, each joined to the next by one
    // separator.
    let (mut run, mut groups) = (0usize, 0usize);
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= 6 {
                return true;
            }
            continue;
        }
        if run >= 3 {
            groups += 1;
            if groups >= 3 {
                return true;
            }
        } else {
            groups = 0;
        }
        let joins = matches!(c, b' ' | b'-') && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !joins {
            groups = 0;
        }
        run = 0;
    }
    run >= 3 && groups >= 2
}
