//! The residual-risk check: what in a scrubbed text still looks like an identifier the
//! recognisers missed. It reports reasons, never the text that raised them.

use aho_corasick::AhoCorasick;
use regex::Regex;

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

/// The street words of [`Risk::StreetAddress`], as its pattern has them (case matters).
const STREET_WORDS: &[&str] = &[
    "Street",
    "St",
    "Road",
    "Rd",
    "Avenue",
    "Ave",
    "Lane",
    "Ln",
    "Drive",
    "Close",
    "Way",
    "Court",
    "Ct",
    "Place",
    "Pl",
    "Crescent",
    "Cres",
    "Gardens",
    "Terrace",
    "Grove",
    "Square",
    "Sq",
    "Boulevard",
    "Blvd",
    "Parade",
    "Row",
    "Mews",
    "Walk",
    "Hill",
];

/// The risk patterns, each with a cheap test of what it needs (words of its own, a digit): a
/// text lacking it is not searched. One [`regex::RegexSet`] pass over every scrubbed text cost a
/// fifth of scrubbing; an `is_match` stops at the first match, and most texts need none.
#[derive(Debug, Clone)]
pub(crate) struct RiskCheck {
    regexes: Vec<Regex>,
    street_words: AhoCorasick,
}

impl RiskCheck {
    pub(crate) fn new() -> Result<Self, RecogniseError> {
        Ok(Self {
            regexes: PATTERNS
                .iter()
                .map(|(_, p)| Regex::new(p))
                .collect::<Result<_, _>>()?,
            street_words: AhoCorasick::new(STREET_WORDS)
                // A few fixed words cannot fail to build; were they to, the error names none.
                .map_err(|e| RecogniseError::Names(e.to_string()))?,
        })
    }

    /// The risks of the scrubbed `text`, each once, in [`Risk`] order.
    pub(crate) fn check(&self, text: &str) -> Vec<Risk> {
        let mut risks = Vec::new();
        let b = text.as_bytes();
        let digits = Digits::of(b);
        if digits.run {
            risks.push(Risk::DigitRun);
        }
        if text.contains('@') {
            risks.push(Risk::AtSign);
        }
        let words = Words::of(b);
        for ((risk, _), regex) in PATTERNS.iter().zip(&self.regexes) {
            let may_match = match risk {
                Risk::SelfIntroduction => words.introduction,
                Risk::StreetAddress => digits.house_number && self.street_words.is_match(text),
                Risk::DateOfBirth => digits.any && words.birth,
                Risk::DigitRun | Risk::AtSign => false,
            };
            if may_match && regex.is_match(text) {
                risks.push(*risk);
            }
        }
        risks.sort_unstable();
        risks
    }
}

/// Whether the words the case-insensitive patterns start with occur, in any case: `(?i)` folds
/// none of their letters to anything but its ASCII pair (unlike `k` and `s`), so an ASCII
/// comparison finds every text they can match.
struct Words {
    /// "name" (of "my name is", "my name's"), "i am", "i'm", "i’m" or "call me": each has an `m`.
    introduction: bool,
    /// "birth" (of "date of birth", "birthday is"), "born on" or `d\.?o\.?b`: each has a `b`.
    birth: bool,
}

/// `m`, `b`, in either case.
const M_AND_B: super::ByteClass = {
    let mut table = [false; 256];
    table[b'm' as usize] = true;
    table[b'M' as usize] = true;
    table[b'b' as usize] = true;
    table[b'B' as usize] = true;
    table
};

impl Words {
    fn of(b: &[u8]) -> Self {
        let is = |from: usize, to: usize, word: &[u8]| {
            b.get(from..to)
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        };
        let mut words = Self {
            introduction: false,
            birth: false,
        };
        // One look at each `m` and `b` (`| 0x20` lower-cases them, and makes no other byte one).
        for i in super::positions(b, &M_AND_B) {
            match b[i] | 0x20 {
                b'm' => {
                    words.introduction |= is(i.wrapping_sub(2), i + 2, b"name")
                        || is(i.wrapping_sub(3), i + 1, b"i am")
                        || is(i.wrapping_sub(2), i + 1, b"i'm")
                        || is(i.wrapping_sub(4), i + 1, "i\u{2019}m".as_bytes())
                        || is(i.wrapping_sub(5), i + 2, b"call me");
                }
                b'b' => {
                    let dob = || {
                        let mut j = i;
                        for want in [b'o', b'd'] {
                            if j > 0 && b[j - 1] == b'.' {
                                j -= 1;
                            }
                            if j == 0 || b[j - 1] | 0x20 != want {
                                return false;
                            }
                            j -= 1;
                        }
                        true
                    };
                    words.birth |= is(i, i + 5, b"birth") || is(i, i + 7, b"born on") || dob();
                }
                _ => {}
            }
        }
        words
    }
}

/// What the digits of a scrubbed text show, found run by run (a run: digits in a row), from
/// one to the next without looking at every byte between them: three of the five risks need
/// digits, and a byte-by-byte pass for each cost more than the rest of the check.
struct Digits {
    /// Any digit.
    any: bool,
    /// [`Risk::DigitRun`]: six digits in a row, or three groups of three or more digits joined
    /// by single spaces or dashes. Dates (`2026-11-24`), times, prices and scores never are.
    run: bool,
    /// What [`Risk::StreetAddress`] needs: a digit followed by perhaps a letter, perhaps a
    /// comma, a space, perhaps more spaces, and a capital (ASCII, or any non-ASCII byte's first):
    /// "12 High", "4a, Mill".
    house_number: bool,
}

impl Digits {
    fn of(b: &[u8]) -> Self {
        let digit = u8::is_ascii_digit;
        let mut digits = Self {
            any: false,
            run: false,
            house_number: false,
        };
        let Some(mut start) = b.iter().position(digit) else {
            return digits;
        };
        digits.any = true;
        // Long groups (three digits or more) so far, each joined to the next by one separator.
        let mut groups = 0;
        loop {
            let end = b[start..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .map_or(b.len(), |n| start + n);
            let len = end - start;
            // Only a run's last digit has a non-digit after it.
            digits.house_number |= house_number_at(b, end);
            if !digits.run {
                if len >= 6 {
                    digits.run = true;
                } else if end == b.len() {
                    digits.run = len >= 3 && groups >= 2;
                } else {
                    if len >= 3 {
                        groups += 1;
                        digits.run = groups >= 3;
                    } else {
                        groups = 0;
                    }
                    let joins = matches!(b[end], b' ' | b'-') && b.get(end + 1).is_some_and(digit);
                    if !joins {
                        groups = 0;
                    }
                }
            }
            if digits.run && digits.house_number {
                return digits;
            }
            match b[end..].iter().position(digit) {
                Some(n) => start = end + n,
                None => return digits,
            }
        }
    }
}

/// Whether what follows a digit ending at `end` makes it a house number (see
/// [`Digits::house_number`]).
fn house_number_at(b: &[u8], mut j: usize) -> bool {
    if b.get(j).is_some_and(u8::is_ascii_alphabetic) {
        j += 1;
    }
    if b.get(j) == Some(&b',') {
        j += 1;
    }
    if b.get(j) != Some(&b' ') {
        return false;
    }
    while b.get(j) == Some(&b' ') {
        j += 1;
    }
    b.get(j)
        .is_some_and(|&c| c.is_ascii_uppercase() || c >= 0x80)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The byte-by-byte definitions [`Digits`] must agree with.
    fn house_number(b: &[u8]) -> bool {
        (0..b.len()).any(|i| b[i].is_ascii_digit() && house_number_at(b, i + 1))
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

    proptest! {
        #[test]
        fn digits_agree_with_the_byte_by_byte_definitions(text in "[0-9 \\-,aAZ.é]{0,40}") {
            let b = text.as_bytes();
            let digits = Digits::of(b);
            prop_assert_eq!(digits.any, b.iter().any(u8::is_ascii_digit));
            prop_assert_eq!(digits.run, digit_run(b));
            prop_assert_eq!(digits.house_number, house_number(b));
        }
    }
}
