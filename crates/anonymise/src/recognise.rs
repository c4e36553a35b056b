//! Recognisers of identifiers in free text, and packs of them run together.
//!
//! A [`Finding`] names the recogniser that made it and the byte span of what it found (always on
//! `char` boundaries), so a caller can refuse the text, or replace exactly that span.
//!
//! Guarantees of the built-in US social security number recogniser ([`Recogniser::us_ssn`]):
//! - only numbers SSA can assign are found: area 001–899 except 666, group 01–99, serial
//!   0001–9999;
//! - written 3-2-4 with a dash or a space (or a no-break space, or a Unicode hyphen or dash)
//!   between the groups, it is found anywhere, unless a letter, digit or `_` touches it on
//!   either side (`Given123-45-6789`, `1123-45-6789` are parts of something longer);
//! - written as nine digits in a row, it is found only with a context word ("SSN",
//!   "social security", "soc sec", "SS#", "SS no"…, any case) at most [`CONTEXT_WINDOW`] bytes
//!   before or after it, and, again, only when no letter, digit or `_` touches it (a context word
//!   right before it may: `SSN123456789`). So `Company no. 123456789`, phone numbers and longer
//!   digit runs are not found.
//!
//! A [`Pack`] runs its recognisers over a text in one pass when nothing is there (one combined
//! automaton of every recogniser's shape); only the recognisers whose shape occurs search again
//! for spans.

use std::ops::Range;

use regex::{Regex, RegexSet};

/// The name of the built-in US social security number recogniser.
pub const US_SSN: &str = "us_ssn";

/// How far (in bytes) a context word may be from an unseparated nine-digit number: room for
/// "number: ", "(SSN) is " and the like, not for a sentence about something else.
pub const CONTEXT_WINDOW: usize = 24;

/// The shapes an SSN is written in: digits grouped 3-2-4, or nine in a row. Which of them are
/// SSNs is decided afterwards (number ranges, what touches them, context words): the regex crate
/// has no look-around.
pub(crate) const SSN_SHAPE: &str = r"[0-9]{3}[-\x20\x{00A0}\x{2010}-\x{2013}][0-9]{2}[-\x20\x{00A0}\x{2010}-\x{2013}][0-9]{4}|[0-9]{9}";

/// Words that make nine digits in a row an SSN.
const SSN_CONTEXT: &str = r"(?i)\b(?:ssns?\b|s\.s\.n\b\.?|social[\s_-]*sec(?:urity\b|\.)|soc\.?[\s_-]*sec\b\.?|ss[\s_-]*(?:#|no\b\.?|nos?\.|num(?:ber)?\b))";

/// Why a recogniser or a pack could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RecogniseError {
    /// The pattern is not a valid regular expression (the message says where).
    #[error("{0}")]
    Pattern(#[from] regex::Error),
    /// The pattern matches empty text, so it would be found in every text.
    #[error("the pattern matches empty text, so it would be found in every text")]
    MatchesEmpty,
    /// The known names could not be compiled into one automaton (the message says why; it
    /// names no name).
    #[error("known names: {0}")]
    Names(String),
}

/// Something a recogniser found: which recogniser (its index in the pack, or 0 for a lone
/// recogniser) and where, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The index of the recogniser in its pack.
    pub recogniser: usize,
    /// The byte range of what was found.
    pub span: Range<usize>,
}

/// One kind of identifier and how to find it.
#[derive(Debug, Clone)]
pub struct Recogniser {
    name: String,
    rule: Rule,
}

#[derive(Debug, Clone)]
enum Rule {
    /// `shape` finds candidates; `context` the words that admit unseparated ones.
    UsSsn { shape: Regex, context: Regex },
    /// Every match of the expression is a finding.
    Pattern(Regex),
}

impl Recogniser {
    /// US social security numbers as SSA assigns them (see the module documentation).
    pub fn us_ssn() -> Result<Self, RecogniseError> {
        Ok(Self {
            name: US_SSN.to_owned(),
            rule: Rule::UsSsn {
                shape: Regex::new(SSN_SHAPE)?,
                context: Regex::new(SSN_CONTEXT)?,
            },
        })
    }

    /// Every match of the regular expression `pattern` (regex crate syntax), named `name`. A
    /// pattern that matches empty text is refused: it would be found in every text.
    pub fn pattern(name: &str, pattern: &str) -> Result<Self, RecogniseError> {
        let regex = Regex::new(pattern)?;
        if regex.is_match("") {
            return Err(RecogniseError::MatchesEmpty);
        }
        Ok(Self {
            name: name.to_owned(),
            rule: Rule::Pattern(regex),
        })
    }

    /// Its name (`us_ssn`, or the register's name for a pattern).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The regular expression of a pattern recogniser; `None` for a built-in one.
    pub fn pattern_source(&self) -> Option<&str> {
        match &self.rule {
            Rule::UsSsn { .. } => None,
            Rule::Pattern(regex) => Some(regex.as_str()),
        }
    }

    /// The byte spans of what it finds in `text`, in order.
    pub fn find_iter<'r, 't>(&'r self, text: &'t str) -> Spans<'r, 't> {
        Spans {
            rule: &self.rule,
            text,
            candidates: self.shape().find_iter(text),
            context: None,
        }
    }

    /// Whether it finds anything in `text`.
    pub fn found_in(&self, text: &str) -> bool {
        self.find_iter(text).next().is_some()
    }

    /// The expression whose every match is a candidate.
    fn shape(&self) -> &Regex {
        match &self.rule {
            Rule::UsSsn { shape, .. } => shape,
            Rule::Pattern(regex) => regex,
        }
    }
}

/// The spans one recogniser finds in one text (see [`Recogniser::find_iter`]).
#[derive(Debug)]
pub struct Spans<'r, 't> {
    rule: &'r Rule,
    text: &'t str,
    candidates: regex::Matches<'r, 't>,
    context: Option<ContextWords<'r>>,
}

impl Iterator for Spans<'_, '_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        for candidate in self.candidates.by_ref() {
            let span = candidate.range();
            let accepted = match self.rule {
                Rule::Pattern(_) => true,
                Rule::UsSsn { context, .. } => {
                    let words = self.context.get_or_insert(ContextWords {
                        regex: context,
                        found: None,
                    });
                    ssn_accepted(self.text, &span, words)
                }
            };
            if accepted {
                return Some(span);
            }
        }
        None
    }
}

/// Where a text's SSN context words are: looked for once, and only if a candidate needs them.
#[derive(Debug)]
struct ContextWords<'r> {
    regex: &'r Regex,
    found: Option<Vec<Range<usize>>>,
}

impl ContextWords<'_> {
    /// The words' spans, sorted and not overlapping.
    fn in_text(&mut self, text: &str) -> &[Range<usize>] {
        let regex = self.regex;
        self.found
            .get_or_insert_with(|| regex.find_iter(text).map(|m| m.range()).collect())
    }
}

impl ContextWords<'_> {
    /// Whether a context word ends right at `at`. The text after `at` is left out of the search:
    /// there the number starts, and `SSN` glued to digits has no word boundary.
    fn ends_at(&self, text: &str, at: usize) -> bool {
        let before = &text[..at];
        let Some(mut from) =
            (at.saturating_sub(LONGEST_CONTEXT_WORD)..=at).find(|&i| before.is_char_boundary(i))
        else {
            return false;
        };
        // `find_at` still sees the text before `from`, so a word cut by the window is no word.
        while let Some(word) = self.regex.find_at(before, from) {
            if word.end() == at {
                return true;
            }
            from = word.end().max(from + 1);
            if from > at {
                break;
            }
            while !before.is_char_boundary(from) {
                from += 1;
            }
        }
        false
    }
}

/// More than any context word can span, so a search that far back finds the word touching a
/// number.
const LONGEST_CONTEXT_WORD: usize = 48;

/// Whether the SSN-shaped `span` of `text` is an SSN.
fn ssn_accepted(text: &str, span: &Range<usize>, context: &mut ContextWords<'_>) -> bool {
    let digits: Vec<u16> = text.as_bytes()[span.clone()]
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u16::from(b - b'0'))
        .collect();
    let number = |range: Range<usize>| digits[range].iter().fold(0, |n, d| n * 10 + d);
    let (area, group, serial) = (number(0..3), number(3..5), number(5..9));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    let touches = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    if touches(text[span.end..].chars().next()) {
        return false;
    }
    // A context word may touch the number (`SSN123456789`), and then is its context; any other
    // letter or digit makes it part of a longer word or number.
    if touches(text[..span.start].chars().next_back()) {
        return context.ends_at(text, span.start);
    }
    let separated = span.len() > 9;
    if separated {
        return true;
    }
    // The nearest word after the number is the first that starts at or after its end; the
    // nearest before it, the one just before that.
    let words = context.in_text(text);
    let next = words.partition_point(|w| w.start < span.end);
    let after = words
        .get(next)
        .is_some_and(|w| w.start - span.end <= CONTEXT_WINDOW);
    let before = next
        .checked_sub(1)
        .and_then(|i| words.get(i))
        .is_some_and(|w| w.end <= span.start && span.start - w.end <= CONTEXT_WINDOW);
    after || before
}

/// Recognisers run together: one pass over a text tells which of them can find anything in it.
#[derive(Debug, Clone)]
pub struct Pack {
    recognisers: Vec<Recogniser>,
    shapes: RegexSet,
}

impl Pack {
    /// A pack of `recognisers`, in this order (findings name them by index).
    pub fn new(recognisers: Vec<Recogniser>) -> Result<Self, RecogniseError> {
        let shapes = RegexSet::new(recognisers.iter().map(|r| r.shape().as_str()))?;
        Ok(Self {
            recognisers,
            shapes,
        })
    }

    /// The recognisers, in the pack's order.
    pub fn recognisers(&self) -> &[Recogniser] {
        &self.recognisers
    }

    /// Everything every recogniser finds in `text`, by start (then by recogniser). Findings of
    /// different recognisers may overlap; a scrubber replaces their union.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut findings: Vec<Finding> = self
            .candidates(text)
            .flat_map(|i| {
                self.recognisers[i]
                    .find_iter(text)
                    .map(move |span| Finding {
                        recogniser: i,
                        span,
                    })
            })
            .collect();
        findings.sort_by_key(|f| (f.span.start, f.recogniser));
        findings
    }

    /// The first finding of the first recogniser (in the pack's order) that finds anything in
    /// `text`: enough to refuse the text and say why.
    pub fn first(&self, text: &str) -> Option<Finding> {
        self.candidates(text).find_map(|i| {
            self.recognisers[i]
                .find_iter(text)
                .next()
                .map(|span| Finding {
                    recogniser: i,
                    span,
                })
        })
    }

    /// The recognisers whose shape occurs in `text`, in order: the one pass over the whole text.
    fn candidates(&self, text: &str) -> impl Iterator<Item = usize> {
        self.shapes.matches(text).into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssn() -> Recogniser {
        Recogniser::us_ssn().unwrap()
    }

    #[test]
    fn ssa_assignable_numbers_are_found_with_their_span() {
        let cases: &[(&str, &str)] = &[
            ("123-45-6789", "123-45-6789"),
            ("my ssn is 123 45 6789.", "123 45 6789"),
            ("SSN 078-05-1120 was shown", "078-05-1120"),
            ("cert no 219 09 9999", "219 09 9999"),
            ("(001-01-0001)", "001-01-0001"),
            ("899-99-9999", "899-99-9999"),
            ("665-12-3456;", "665-12-3456"),
            ("667-12-3456", "667-12-3456"),
            ("a 123\u{2011}45\u{2011}6789 b", "123\u{2011}45\u{2011}6789"),
            ("x 123\u{a0}45\u{a0}6789", "123\u{a0}45\u{a0}6789"),
            ("mail 123-45-6789@example.org", "123-45-6789"),
            ("ssn 123456789", "123456789"),
            ("SSN: 123456789", "123456789"),
            ("My Social Security number is 123456789.", "123456789"),
            ("social-security no. 123456789", "123456789"),
            ("soc sec 123456789", "123456789"),
            ("Soc. Sec. #: 123456789", "123456789"),
            ("SS# 123456789", "123456789"),
            ("SS#123456789", "123456789"),
            ("ss no 123456789", "123456789"),
            ("S.S.N. 123456789", "123456789"),
            ("SSN123456789", "123456789"),
            ("123456789 (SSN)", "123456789"),
            ("123456789 is her social security number", "123456789"),
            ("ssn: Anna, 123456789", "123456789"),
        ];
        for (text, found) in cases {
            let spans: Vec<_> = ssn().find_iter(text).collect();
            assert_eq!(spans.len(), 1, "{text:?}: {spans:?}");
            assert_eq!(&text[spans[0].clone()], *found, "{text:?}");
        }
    }

    #[test]
    fn numbers_ssa_does_not_assign_and_other_digits_are_not_found() {
        for text in [
            "Company no. 123456789",
            "load123456789@example.org",
            "Given123456789",
            "123456789",
            "order 123456789 shipped",
            "1234567890",
            "ssn 1234567890",
            "ssn 12345678",
            "SSN Given123456789",
            "Given123-45-6789",
            "123-45-6789x",
            "1123-45-6789",
            "123-45-67890",
            "123-45-6789_1",
            "020 7946 0958",
            "+44 20 7946 0958",
            "07700 900123",
            "(212) 555-1234",
            "212-555-1234",
            "+1 212 555 1234",
            "01 23 45 67 89",
            "2026-11-24",
            "12-345-6789",
            "123456-789",
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "ssn 000123456",
            "ssn 666123456",
            "ssn 912345678",
            "ssn 123004567",
            "ssn 123450000",
            "123.45.6789",
            "123--45-6789",
            "classno 123456789",
            "lessn 123456789",
            "SSN was mentioned in a long sentence before 123456789",
            "",
        ] {
            let spans: Vec<_> = ssn().find_iter(text).collect();
            assert!(spans.is_empty(), "{text:?}: {spans:?}");
        }
    }

    #[test]
    fn the_context_window_is_counted_in_bytes_between_word_and_number() {
        let gap = |n: usize| format!("SSN{}123456789", " ".repeat(n));
        assert!(ssn().found_in(&gap(CONTEXT_WINDOW)));
        assert!(!ssn().found_in(&gap(CONTEXT_WINDOW + 1)));
        let after = |n: usize| format!("123456789{}SSN", " ".repeat(n));
        assert!(ssn().found_in(&after(CONTEXT_WINDOW)));
        assert!(!ssn().found_in(&after(CONTEXT_WINDOW + 1)));
    }

    #[test]
    fn a_pattern_finds_its_matches_and_an_empty_match_is_refused() {
        let nino = Recogniser::pattern("nino", "[A-Z]{2}[0-9]{6}[A-D]").unwrap();
        assert_eq!(nino.name(), "nino");
        assert_eq!(nino.pattern_source(), Some("[A-Z]{2}[0-9]{6}[A-D]"));
        let spans: Vec<_> = nino.find_iter("a QQ123456C b").collect();
        assert_eq!(spans, vec![std::ops::Range { start: 2, end: 11 }]);
        for empty in ["x*", "^", "(?:)"] {
            assert!(
                matches!(
                    Recogniser::pattern("e", empty),
                    Err(RecogniseError::MatchesEmpty)
                ),
                "{empty}"
            );
        }
        assert!(matches!(
            Recogniser::pattern("bad", "[A-"),
            Err(RecogniseError::Pattern(_))
        ));
    }

    #[test]
    fn a_pack_reports_every_recogniser_by_index_in_text_order() {
        let pack = Pack::new(vec![
            ssn(),
            Recogniser::pattern("nino", "[A-Z]{2}[0-9]{6}[A-D]").unwrap(),
            Recogniser::pattern("digits", "[0-9]{9}").unwrap(),
        ])
        .unwrap();
        let text = "QQ123456C, then 123-45-6789 and company 987654321";
        let found: Vec<(usize, &str)> = pack
            .find(text)
            .into_iter()
            .map(|f| (f.recogniser, &text[f.span]))
            .collect();
        assert_eq!(
            found,
            [(1, "QQ123456C"), (0, "123-45-6789"), (2, "987654321")]
        );
        // A candidate the SSN recogniser turns down does not hide another recogniser's match.
        let first = pack.first("company 987654321").unwrap();
        assert_eq!((first.recogniser, first.span), (2, 8..17));
        assert_eq!(pack.first("ssn 123-45-6789").unwrap().recogniser, 0);
        assert!(pack.first("nothing here 12345").is_none());
        assert_eq!(pack.recognisers()[1].name(), "nino");
    }
}
