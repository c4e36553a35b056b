//! Structured identifiers: shapes found by regular expressions, then checked in code (check
//! digits, number ranges, what touches them), since the regex crate has no look-around and a
//! check digit is no regular language.
//!
//! One cheap pass over the bytes ([`Traces`]) tells which kinds' shapes may occur at all (an
//! `@`, a run of enough digits, `://`…); only those search for spans. Most comments hold dates,
//! times or prices and no identifier: they are done after that pass.
//!
//! Rules, kind by kind (no letter or digit may touch a hit on either side unless said):
//! - e-mail: `local@domain.tld`;
//! - URL: `http://`, `https://` or `www.` up to the next space or quote, without trailing
//!   punctuation;
//! - IPv4: four dot-separated numbers 0–255; IPv6: what [`std::net::Ipv6Addr`] parses, with at
//!   least four hex digits (so times like `10:30:00` never are);
//! - phone: `+CC` then 8–15 digits in groups (`+44 (0)20 …`, `+1 (212) …`); a UK national
//!   number, 10–11 digits starting with 0, grouped or not; a US number 3-3-4 with separators
//!   (`(212) 555-1234`, `212.555.1234`). Unseparated runs not starting with 0 are not phones
//!   (order numbers are): the residual risk check catches long ones;
//! - UK postcode: outward and inward code as Royal Mail allocates them (no Q, V, X first, no I,
//!   J, Z second, no C, I, K, M, O, V in the inward letters), upper case, or lower case with
//!   the space;
//! - NINO: two prefix letters HMRC allocates (not D, F, I, Q, U, V; O not second; not BG, GB, KN,
//!   NK, NT, TN, ZZ), six digits, suffix A–D, spaces allowed between pairs;
//! - NHS number: ten digits with a valid mod-11 check digit, written 3-3-4 with spaces or dashes;
//!   unseparated only with "NHS" (any case) at most [`NHS_CONTEXT`] bytes before or after, since
//!   one in eleven random ten-digit numbers passes the check;
//! - SSN: [`crate::Recogniser::us_ssn`], unchanged;
//! - card: 13–19 digits, first 2–6 (the card networks), with a valid Luhn check, optionally
//!   grouped by spaces or dashes; a run too long is cut back to its longest valid leading groups;
//! - IBAN: country code, two check digits and the BBAN, upper case, compact or in groups of
//!   four, its length the country's when known, with a valid mod-97 check;
//! - handle: `@` then a letter or `_`, then up to 29 letters, digits, `_` or `.`; not glued to a
//!   word before it (an e-mail address is no handle).

use std::net::Ipv6Addr;
use std::ops::Range;

use regex::{Regex, RegexBuilder};

use super::{EntityKind, Hit};
use crate::recognise::SSN_SHAPE;
use crate::{RecogniseError, Recogniser};

/// How far (in bytes) "NHS" may be from an unseparated ten-digit number: "NHS number: ",
/// "NHS no. is ".
pub const NHS_CONTEXT: usize = 32;

/// The lazy DFA's cache per regex and thread: room for every state the patterns reach on survey
/// text, so that it is built once and not cleared and rebuilt over and over (10x slower).
pub(crate) const DFA_CACHE: usize = 16 << 20;

#[derive(Debug, Clone, Copy)]
enum Rule {
    Email,
    Url,
    Ipv4,
    Ipv6,
    Phone,
    Postcode,
    Nino,
    Nhs,
    Ssn,
    Card,
    Iban,
    Handle,
}

/// Every rule's shape. ASCII classes only where the identifier is ASCII: Unicode `\d`, `\s` or
/// `\b` would make the lazy DFA slower or give up on non-ASCII text.
const RULES: &[(Rule, &str)] = &[
    (
        Rule::Email,
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}",
    ),
    (
        Rule::Url,
        // Printable ASCII but quotes, `<`, `>` and backtick: URLs in running text are ASCII, and a
        // Unicode class would multiply the lazy DFA's states.
        r"(?:[Hh][Tt][Tt][Pp][Ss]?://|[Ww][Ww][Ww]\.)[\x21\x23-\x26\x28-\x3B\x3D\x3F-\x5F\x61-\x7E]+",
    ),
    (
        Rule::Ipv4,
        r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
    ),
    (Rule::Ipv6, r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"),
    (
        Rule::Phone,
        concat!(
            // international
            r"\+[0-9]{1,3}(?:[ .\-]?(?:\(0\)[ ]?)?\(?[0-9]{1,5}\)?){1,6}",
            // UK national
            r"|\(?0[0-9]{2,4}\)?[ \-]?[0-9]{3,4}[ \-]?[0-9]{3,4}",
            // US
            r"|\(?[2-9][0-9]{2}\)?[ .\-]?[0-9]{3}[ .\-][0-9]{4}",
        ),
    ),
    (
        Rule::Postcode,
        r"[A-Za-z]{1,2}[0-9][A-Za-z0-9]?[ ]?[0-9][A-Za-z]{2}",
    ),
    (
        Rule::Nino,
        r"[A-Za-z]{2}[ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[A-Da-d]",
    ),
    (Rule::Nhs, r"[0-9]{3}[ \-]?[0-9]{3}[ \-]?[0-9]{4}"),
    (Rule::Ssn, SSN_SHAPE),
    (Rule::Card, r"[0-9](?:[ \-]?[0-9]){12,18}"),
    (Rule::Iban, r"[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{1,4}){3,8}"),
    (
        Rule::Handle,
        r"@[A-Za-z_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?",
    ),
];

/// The structured recognisers, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Structured {
    regexes: Vec<Regex>,
    ssn: Recogniser,
}

impl Structured {
    pub(crate) fn new() -> Result<Self, RecogniseError> {
        Ok(Self {
            regexes: RULES
                .iter()
                .map(|(_, p)| RegexBuilder::new(p).dfa_size_limit(DFA_CACHE).build())
                .collect::<Result<_, _>>()?,
            ssn: Recogniser::us_ssn()?,
        })
    }

    /// Pushes every structured identifier in `text` onto `out` (overlaps are resolved later).
    pub(crate) fn find(&self, text: &str, out: &mut Vec<Hit>) {
        let traces = Traces::of(text.as_bytes());
        for ((rule, _), regex) in RULES.iter().zip(&self.regexes) {
            let Some(mut from) = traces.from(*rule) else {
                continue;
            };
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            let each =
                |kind, out: &mut Vec<Hit>, accept| each(regex, text, from, kind, out, accept);
            match *rule {
                // The guard's recogniser, whole: it looks for context words around the number.
                Rule::Ssn => out.extend(self.ssn.find_iter(text).map(|span| Hit {
                    kind: EntityKind::Ssn,
                    span,
                })),
                Rule::Email => each(EntityKind::Email, out, &mut Some),
                Rule::Url => each(EntityKind::Url, out, &mut |s| url(text, s)),
                Rule::Ipv4 => each(EntityKind::Ip, out, &mut |s| ipv4(text, s)),
                Rule::Ipv6 => each(EntityKind::Ip, out, &mut |s| ipv6(text, s)),
                Rule::Phone => each(EntityKind::Phone, out, &mut |s| phone(text, s)),
                Rule::Postcode => each(EntityKind::Postcode, out, &mut |s| postcode(text, s)),
                Rule::Nino => each(EntityKind::Nino, out, &mut |s| nino(text, s)),
                Rule::Nhs => each(EntityKind::NhsNumber, out, &mut |s| nhs(text, s)),
                Rule::Card => each(EntityKind::Card, out, &mut |s| card(text, s)),
                Rule::Iban => each(EntityKind::Iban, out, &mut |s| iban(text, s)),
                Rule::Handle => each(EntityKind::Handle, out, &mut |s| handle(text, s)),
            }
        }
    }
}

/// What every shape needs, found in one pass over the bytes: a rule whose needs are not met
/// cannot match, and its regex is not run; one whose needs are met first at some byte is searched
/// from a little before it, since no match can start earlier. Each regex search is a pass over
/// the text (and a [`regex::RegexSet`] telling which rules match was the slowest part of
/// scrubbing), while most comments hold only dates, times or prices, and an identifier of one
/// kind at most.
///
/// Each field is where a match of some rules may start at the earliest (`None`: nowhere), from
/// a necessary condition of their shapes: a looser one only costs a longer search.
#[derive(Debug, Default)]
struct Traces {
    /// A `+` right before a digit, or a chain of nine digits or more with at most three bytes of
    /// ` -.()` or non-ASCII between each and the next (`(020) 7946 0958`), less one for a `(`.
    phone: Option<usize>,
    /// Chains of nine, ten and thirteen digits or more with at most one ` ` or `-`, or up to
    /// three non-ASCII bytes (a no-break space, a Unicode dash), between each and the next: an
    /// SSN, an NHS number, a card.
    ssn: Option<usize>,
    nhs: Option<usize>,
    card: Option<usize>,
    /// A chain of six digits or more with at most one space between each and the next, right
    /// after a letter or a letter and a space, less three for the letters (a NINO).
    nino: Option<usize>,
    /// A postcode's outward code's end and inward code (letter, digit, perhaps a letter or
    /// digit, perhaps a space, digit, two letters), less five for the outward code.
    postcode: Option<usize>,
    /// Two upper-case ASCII letters right before two digits (an IBAN's start).
    iban: Option<usize>,
    /// A run of digits and dots holding three dots after digits (an IPv4 address).
    dotted: bool,
    /// Two colons with at most four hex digits between them, less four (an IPv6 address).
    colons: Option<usize>,
    /// An `@`.
    at: bool,
    /// `://`, or `www.` in any case (a URL).
    url: bool,
}

/// The bytes [`Traces`] looks at: digits, dots, colons, `@`.
const MARKED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'0'..=b'9' | b'.' | b':' | b'@');
        b += 1;
    }
    table
};

/// Where the [`MARKED`] bytes of `b` are, in order: most bytes are letters and spaces, and
/// what lies between two digits is looked at from the second.
fn marked(b: &[u8]) -> impl Iterator<Item = usize> + '_ {
    super::positions(b, &MARKED)
}

/// Makes `slot` `at` if it is none or later.
fn earliest(slot: &mut Option<usize>, at: usize) {
    if slot.is_none_or(|s| at < s) {
        *slot = Some(at);
    }
}

impl Traces {
    fn of(b: &[u8]) -> Self {
        let mut t = Self::default();
        // Per chain: digits so far, and where its first digit is.
        let (mut loose, mut tight, mut lettered) = ((0, 0), (0, 0), (0, 0));
        let mut after_letter = false;
        let mut last_digit: Option<usize> = None;
        // Dots after digits in the current run of digits and dots, and the last of them.
        let (mut dots, mut last_dot) = (0, None);
        for i in marked(b) {
            let c = b[i];
            match c {
                b'0'..=b'9' => {
                    let gap = last_digit.map(|d| &b[d + 1..i]);
                    last_digit = Some(i);
                    let chain = |(n, start): (usize, usize), joined: bool| {
                        if joined { (n + 1, start) } else { (1, i) }
                    };
                    let loose_sep =
                        |x: &u8| matches!(x, b' ' | b'-' | b'.' | b'(' | b')') || *x >= 0x80;
                    loose = chain(
                        loose,
                        gap.is_some_and(|g| g.len() <= 3 && g.iter().all(loose_sep)),
                    );
                    tight = chain(
                        tight,
                        gap.is_some_and(|g| {
                            matches!(g, [b' ' | b'-'])
                                || (g.len() <= 3 && g.iter().all(|x| *x >= 0x80))
                        }),
                    );
                    let spaced = gap.is_some_and(|g| matches!(g, [] | [b' ']));
                    lettered = chain(lettered, spaced);
                    if !spaced {
                        let letter = |j: usize| b[j].is_ascii_alphabetic();
                        after_letter = (i >= 1 && letter(i - 1))
                            || (i >= 2 && b[i - 1] == b' ' && letter(i - 2));
                    }
                    if loose.0 >= 9 {
                        earliest(&mut t.phone, loose.1.saturating_sub(1));
                    }
                    for (n, slot) in [(9, &mut t.ssn), (10, &mut t.nhs), (13, &mut t.card)] {
                        if tight.0 >= n {
                            earliest(slot, tight.1);
                        }
                    }
                    if after_letter && lettered.0 >= 6 {
                        earliest(&mut t.nino, lettered.1.saturating_sub(3));
                    }
                    if i > 0 && b[i - 1] == b'+' {
                        earliest(&mut t.phone, i - 1);
                    }
                    if b.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
                        && b.get(i + 2).is_some_and(u8::is_ascii_alphabetic)
                        && outward_before(b, i)
                    {
                        earliest(&mut t.postcode, i.saturating_sub(5));
                    }
                    if i >= 2
                        && b[i - 1].is_ascii_uppercase()
                        && b[i - 2].is_ascii_uppercase()
                        && b.get(i + 1).is_some_and(u8::is_ascii_digit)
                    {
                        earliest(&mut t.iban, i - 2);
                    }
                }
                b'.' => {
                    t.url |= i >= 3 && b[i - 3..i].eq_ignore_ascii_case(b"www");
                    // Only a dot after a digit can be one of an address's: an ellipsis is not.
                    let run = b[..i]
                        .iter()
                        .rev()
                        .take_while(|x| x.is_ascii_digit())
                        .count();
                    if run == 0 {
                        last_dot = None;
                        continue;
                    }
                    let continues = i > run && last_dot == Some(i - run - 1);
                    dots = if continues { dots + 1 } else { 1 };
                    last_dot = Some(i);
                    t.dotted |= dots >= 3;
                }
                b':' => {
                    t.url |= b.get(i + 1..i + 3) == Some(b"//");
                    let hex = b[..i]
                        .iter()
                        .rev()
                        .take(5)
                        .take_while(|x| x.is_ascii_hexdigit())
                        .count();
                    if hex <= 4 && i > hex && b[i - hex - 1] == b':' {
                        earliest(&mut t.colons, (i - hex - 1).saturating_sub(4));
                    }
                }
                _ => t.at = true,
            }
        }
        t
    }

    /// Where a match of `rule` may start at the earliest; `None` when it cannot match at all.
    fn from(&self, rule: Rule) -> Option<usize> {
        let anywhere = |found: bool| found.then_some(0);
        match rule {
            Rule::Email | Rule::Handle => anywhere(self.at),
            Rule::Url => anywhere(self.url),
            Rule::Ipv4 => anywhere(self.dotted),
            Rule::Ipv6 => self.colons,
            Rule::Phone => self.phone,
            Rule::Postcode => self.postcode,
            Rule::Nino => self.nino,
            Rule::Nhs => self.nhs,
            Rule::Ssn => self.ssn,
            Rule::Card => self.card,
            Rule::Iban => self.iban,
        }
    }
}

/// Whether the digit at `i` may start a postcode's inward code: before it (and a space, if
/// any), a digit after a letter, or a letter or digit after those.
fn outward_before(b: &[u8], i: usize) -> bool {
    let j = if i > 0 && b[i - 1] == b' ' { i - 1 } else { i };
    let is = |k: usize, f: fn(&u8) -> bool| j >= k && f(&b[j - k]);
    (is(1, u8::is_ascii_digit) && is(2, u8::is_ascii_alphabetic))
        || (is(1, u8::is_ascii_alphanumeric)
            && is(2, u8::is_ascii_digit)
            && is(3, u8::is_ascii_alphabetic))
}

/// Every candidate of `regex` that `accept` turns into a span. A rejected candidate is searched
/// again from its next character, so a bad candidate cannot hide a good one starting inside it
/// (candidates are short: this stays linear in practice).
fn each(
    regex: &Regex,
    text: &str,
    from: usize,
    kind: EntityKind,
    out: &mut Vec<Hit>,
    accept: &mut dyn FnMut(Range<usize>) -> Option<Range<usize>>,
) {
    let mut at = from;
    while let Some(m) = regex.find_at(text, at) {
        match accept(m.range()) {
            Some(span) if !span.is_empty() => {
                at = span.end;
                out.push(Hit { kind, span });
            }
            _ => at = next_boundary(text, m.start()),
        }
        if at >= text.len() {
            break;
        }
    }
}

/// The char boundary after the char starting at `i`.
fn next_boundary(text: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    j
}

fn before(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

fn after(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

/// Whether a letter, digit or `_` touches `span` on either side.
fn glued(text: &str, span: &Range<usize>) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    word(before(text, span.start)) || word(after(text, span.end))
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
}

/// `span`, or the longest leading part of it ending before a separator (space, dash, dot) that
/// `valid` accepts: a number followed by another number (`4111 1111 1111 1111 2026`) is cut back.
fn longest_valid_prefix(
    text: &str,
    span: Range<usize>,
    valid: impl Fn(&str) -> bool,
) -> Option<Range<usize>> {
    let s = &text[span.clone()];
    if valid(s) {
        return Some(span);
    }
    let bytes = s.as_bytes();
    (1..bytes.len())
        .rev()
        .filter(|&i| matches!(bytes[i], b' ' | b'-' | b'.'))
        .find(|&i| valid(&s[..i]))
        .map(|i| span.start..span.start + i)
}

fn url(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if before(text, span.start).is_some_and(char::is_alphanumeric) {
        return None;
    }
    let s = &text[span.clone()];
    let trimmed = s.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '}', '\'', '"']);
    let body = trimmed
        .split_once("://")
        .map_or(trimmed.get(4..).unwrap_or(""), |(_, b)| b);
    (body.len() > 1).then(|| span.start..span.start + trimmed.len())
}

fn ipv4(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let s = &text[span.clone()];
    let octets_ok = s
        .split('.')
        .all(|o| o.parse::<u16>().is_ok_and(|n| n <= 255));
    let b = text.as_bytes();
    let dot_before = before(text, span.start) == Some('.');
    let dot_digit_after =
        b.get(span.end) == Some(&b'.') && b.get(span.end + 1).is_some_and(u8::is_ascii_digit);
    (octets_ok && !glued(text, &span) && !dot_before && !dot_digit_after).then_some(span)
}

fn ipv6(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let s = &text[span.clone()];
    let hex = s.bytes().filter(u8::is_ascii_hexdigit).count();
    let touches = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == ':' || c == '_');
    (hex >= 4
        && s.parse::<Ipv6Addr>().is_ok()
        && !touches(before(text, span.start))
        && !touches(after(text, span.end)))
    .then_some(span)
}

fn phone(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if before(text, span.start).is_some_and(|c| c.is_alphanumeric() || c == '+' || c == '_') {
        return None;
    }
    let valid = |s: &str| {
        let n = digits(s).count();
        if let Some(rest) = s.strip_prefix('+') {
            // "(0)" is the trunk prefix written inside an international number: not dialled.
            let n = n - usize::from(rest.contains("(0)"));
            (8..=15).contains(&n)
        } else if s.trim_start_matches('(').starts_with('0') {
            (10..=11).contains(&n)
        } else {
            n == 10
        }
    };
    let span = longest_valid_prefix(text, span, valid)?;
    (!after(text, span.end).is_some_and(|c| c.is_alphanumeric() || c == '_')).then_some(span)
}

fn postcode(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if glued(text, &span) {
        return None;
    }
    let s = &text[span.clone()];
    let spaced = s.contains(' ');
    let upper = !s.bytes().any(|b| b.is_ascii_lowercase());
    let lower = !s.bytes().any(|b| b.is_ascii_uppercase());
    if !(upper || (lower && spaced)) {
        return None;
    }
    let compact: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let (outward, inward) = compact.split_at(compact.len() - 3);
    let inward_ok = !inward[1..].iter().any(|b| b"CIKMOV".contains(b));
    let first_ok = !b"QVX".contains(&outward[0]);
    let second_ok = !(outward[1].is_ascii_alphabetic() && b"IJZ".contains(&outward[1]));
    (inward_ok && first_ok && second_ok).then_some(span)
}

fn nino(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if glued(text, &span) {
        return None;
    }
    let s = &text[span.clone()];
    let upper = !s.bytes().any(|b| b.is_ascii_lowercase());
    let lower = !s.bytes().any(|b| b.is_ascii_uppercase());
    let b = s.as_bytes();
    let (first, second) = (b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase());
    let prefix = [first, second];
    let ok = (upper || lower)
        && !b"DFIQUV".contains(&first)
        && !b"DFIOQUV".contains(&second)
        && ![b"BG", b"GB", b"KN", b"NK", b"NT", b"TN", b"ZZ"].contains(&&prefix);
    ok.then_some(span)
}

fn nhs(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if glued(text, &span) {
        return None;
    }
    let s = &text[span.clone()];
    let shaped = match s.len() {
        // A US phone number is written 3-3-4 too: after "call", "phone"… without "NHS", it is one.
        12 => s.as_bytes()[3] == s.as_bytes()[7] && !phone_context(text, &span),
        10 => nhs_context(text, &span),
        _ => false,
    };
    let d: Vec<u32> = digits(s).collect();
    (shaped && nhs_check(&d)).then_some(span)
}

/// Whether "NHS" (any case) is at most [`NHS_CONTEXT`] bytes before or after `span`.
fn nhs_context(text: &str, span: &Range<usize>) -> bool {
    let b = text.as_bytes();
    let from = span.start.saturating_sub(NHS_CONTEXT + 3);
    let to = (span.end + NHS_CONTEXT + 3).min(b.len());
    let is_nhs = |w: &[u8]| w.eq_ignore_ascii_case(b"nhs");
    b[from..span.start].windows(3).any(is_nhs) || b[span.end..to].windows(3).any(is_nhs)
}

/// Whether a phone word ("call", "phone", "tel", "mobile", "ring", "text", "cell", "whatsapp")
/// is at most [`NHS_CONTEXT`] bytes before `span` and "NHS" is not near it.
fn phone_context(text: &str, span: &Range<usize>) -> bool {
    const WORDS: &[&[u8]] = &[
        b"call",
        b"phone",
        b"tel",
        b"mobile",
        b"ring",
        b"text",
        b"cell",
        b"whatsapp",
    ];
    let b = text.as_bytes();
    let window = &b[span.start.saturating_sub(NHS_CONTEXT)..span.start];
    let phone = WORDS
        .iter()
        .any(|w| window.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)));
    phone && !nhs_context(text, span)
}

/// The NHS mod-11 check: weights 10 down to 2 on the first nine digits; 11 minus the sum mod 11
/// is the tenth (11 is written 0; 10 means no valid number).
pub(crate) fn nhs_check(d: &[u32]) -> bool {
    if d.len() != 10 {
        return false;
    }
    let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        c => c,
    };
    check != 10 && check == d[9]
}

fn card(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if before(text, span.start).is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '+') {
        return None;
    }
    let valid = |s: &str| {
        let d: Vec<u32> = digits(s).collect();
        (13..=19).contains(&d.len()) && (2..=6).contains(&d[0]) && luhn(&d)
    };
    let span = longest_valid_prefix(text, span, valid)?;
    (!after(text, span.end).is_some_and(|c| c.is_alphanumeric() || c == '_')).then_some(span)
}

/// The Luhn check: from the right, every second digit doubled (less 9 past 9); the sum is a
/// multiple of 10.
pub(crate) fn luhn(d: &[u32]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| match (i % 2 == 1, x * 2) {
            (false, _) => x,
            (true, y) if y > 9 => y - 9,
            (true, y) => y,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN lengths of the countries a UK training organisation's learners mostly bank in; others
/// are accepted at any length from 15 to 34 when their check passes.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"GB", 22),
    (b"IE", 22),
    (b"DE", 22),
    (b"FR", 27),
    (b"ES", 24),
    (b"IT", 27),
    (b"NL", 18),
    (b"BE", 16),
    (b"PT", 25),
    (b"PL", 28),
    (b"CH", 21),
    (b"AT", 20),
    (b"SE", 24),
    (b"DK", 18),
    (b"NO", 15),
    (b"FI", 18),
    (b"LU", 20),
    (b"GR", 27),
    (b"RO", 24),
];

fn iban(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if before(text, span.start).is_some_and(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let s = &text[span.clone()];
    let country = s.as_bytes().get(..2)?;
    let span = match IBAN_LENGTHS.iter().find(|(c, _)| c.as_slice() == country) {
        // Exactly the country's length: the words after a compact IBAN are no part of it.
        Some(&(_, len)) => {
            let mut seen = 0;
            let end = s.bytes().position(|b| {
                seen += usize::from(b != b' ');
                seen == len
            })?;
            let span = span.start..span.start + end + 1;
            iban_valid(&text[span.clone()]).then_some(span)?
        }
        None => longest_valid_prefix(text, span, |s| {
            let n = s.bytes().filter(|b| *b != b' ').count();
            (15..=34).contains(&n) && iban_valid(s)
        })?,
    };
    (!after(text, span.end).is_some_and(|c| c.is_alphanumeric() || c == '_')).then_some(span)
}

/// The mod-97 check of ISO 13616: the first four characters moved to the end, letters as
/// 10–35, the number mod 97 is 1.
pub(crate) fn iban_valid(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if compact.len() < 15 || !compact.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for &b in tail.iter().chain(head) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            _ => u32::from(b.to_ascii_uppercase() - b'A') + 10,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn handle(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let glued_before =
        before(text, span.start).is_some_and(|c| c.is_alphanumeric() || "_.@+-".contains(c));
    let glued_after = after(text, span.end).is_some_and(|c| c.is_alphanumeric() || c == '@');
    (!glued_before && !glued_after).then_some(span)
}
