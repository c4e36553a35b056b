//! Names: the course's known people, and unknown people after a title.
//!
//! Known names are split into parts (on spaces; a hyphenated part is also matched whole and by
//! each piece), and every part goes into one Aho-Corasick automaton, folded: ASCII case and Latin
//! diacritics ignored ("José Álvarez" is found as "jose alvarez", "JOSE ALVAREZ", "Jose
//! Alvarez"). A match counts only on word boundaries (no letter, digit or `_` touching it in the
//! text), and adjacent name hits become one `[NAME]`.
//!
//! The common-word rule: a part that is also a common English word ("May", "Hope", "Will",
//! "Grace", "Brown", listed in [`COMMON_WORDS`]) or has at most two letters ("Li", "Al") is a
//! weak part. A weak part is a name only
//! - when written in title case ("May", not "may" nor "MAY"), not at the start of a sentence
//!   (start of text, or after `.`, `!`, `?`, `:`, a newline or an opening quote or bracket), not
//!   after an article or demonstrative ("the", "a", "this"…), and not followed by a capitalised
//!   word that is no name part ("the Young Professionals", "Grace Period Policy"), or
//! - when next to another part that is a name by itself (a strong part, or a weak one passing the
//!   rule above), separated by spaces or a hyphen only: "Will Smith", "will smith",
//!   "WILL SMITH".
//!
//! So "I hope you will", "May I say" and "A GREAT COURSE, WILL COME BACK" keep their words, while
//! "thanks to Hope", "Will Smith" and "MAY PATEL" lose the name. Name particles ("de", "van",
//! "von"…) are never matched alone.
//!
//! Unknown names: a title (`Mr`, `Mrs`, `Ms`, `Mx`, `Miss`, `Dr`, `Prof`, `Professor`, `Sir`,
//! `Dame`, in title case or capitals, with or without a dot) followed by a capitalised word, and a
//! second one if it follows; the title itself stays ("Dr [NAME]").
//!
//! Diacritic folding happens only when the text has non-ASCII bytes: ASCII text is searched as it
//! is, with the automaton's ASCII case-insensitivity.

use std::collections::HashMap;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, MatchKind, StartKind};
use regex::Regex;

use super::{EntityKind, Hit};
use crate::RecogniseError;

/// Common English words that are also given or family names: matched only by the common-word
/// rule (module documentation). Lower case, ASCII.
pub const COMMON_WORDS: &[&str] = &[
    // given names
    "may",
    "hope",
    "will",
    "grace",
    "joy",
    "faith",
    "mark",
    "bill",
    "rose",
    "dawn",
    "summer",
    "april",
    "june",
    "august",
    "frank",
    "victor",
    "art",
    "ray",
    "pat",
    "sue",
    "jack",
    "rob",
    "drew",
    "sandy",
    "holly",
    "ivy",
    "iris",
    "lily",
    "daisy",
    "amber",
    "ruby",
    "pearl",
    "crystal",
    "destiny",
    "harmony",
    "heather",
    "autumn",
    "faye",
    "gene",
    "guy",
    "max",
    "miles",
    "rich",
    "norm",
    "nick",
    "penny",
    "rusty",
    "sky",
    "star",
    "storm",
    "river",
    "chase",
    "hunter",
    "carol",
    "eve",
    "honor",
    "justice",
    "melody",
    "page",
    "paige",
    "patience",
    "violet",
    "cliff",
    "dean",
    "earl",
    "glen",
    "grant",
    "herb",
    "lance",
    "neil",
    "reed",
    "rod",
    "wade",
    // family names
    "brown",
    "white",
    "green",
    "black",
    "gray",
    "grey",
    "young",
    "king",
    "hill",
    "wood",
    "baker",
    "cook",
    "walker",
    "long",
    "bell",
    "park",
    "hall",
    "lane",
    "field",
    "rice",
    "day",
    "price",
    "fox",
    "bird",
    "lord",
    "case",
    "ward",
    "bond",
    "stone",
    "marsh",
    "wells",
    "banks",
    "mills",
    "cross",
    "rivers",
    "moss",
    "hunt",
    "ford",
    "street",
    "church",
    "little",
    "gold",
    "sharp",
    "west",
    "north",
    "south",
    "east",
    "best",
    "good",
    "love",
    "hart",
    "sweet",
    "short",
    "small",
    "strong",
    "swift",
    "wise",
    "fair",
    "noble",
    "bishop",
    "knight",
    "page",
    "mason",
    "carter",
    "parker",
    "turner",
    "fisher",
    "porter",
    "miller",
    "potter",
    "singer",
    "taylor",
    "cooper",
    "shepherd",
    "butler",
    "chamberlain",
    "steward",
    "head",
    "hand",
    "foot",
    "moody",
    "law",
    "bush",
    "berry",
    "cash",
    "gates",
    "jobs",
    "booth",
    "brook",
    "brooks",
    "dale",
    "flower",
    "frost",
    "hay",
    "heath",
    "holt",
    "lake",
    "lamb",
    "link",
    "march",
    "nash",
    "oak",
    "pond",
    "pool",
    "reader",
    "rock",
    "root",
    "salt",
    "seal",
    "shaw",
    "snow",
    "spring",
    "stock",
    "till",
    "tower",
    "wall",
    "waters",
    "well",
    "wolf",
    "worth",
    "york",
    "english",
    "french",
    "scott",
    "welsh",
    "irish",
    "power",
    "major",
    "dear",
    "friend",
    "child",
    "gain",
    "rich",
    // everyday words that are someone's name somewhere
    "the",
    "and",
    "for",
    "but",
    "not",
    "you",
    "all",
    "any",
    "can",
    "her",
    "his",
    "one",
    "our",
    "out",
    "she",
    "too",
    "was",
    "who",
    "why",
    "how",
    "new",
    "now",
    "old",
    "see",
    "two",
    "way",
    "more",
    "most",
    "much",
    "very",
    "just",
    "only",
    "also",
    "back",
    "well",
    "even",
    "here",
    "there",
    "then",
    "than",
    "when",
    "what",
    "with",
    "from",
    "this",
    "that",
    "they",
    "them",
    "have",
    "been",
    "were",
    "will",
    "would",
    "could",
    "should",
    "about",
    "after",
    "again",
    "tutor",
    "course",
    "module",
    "class",
    "room",
    "week",
    "thanks",
    "thank",
    "great",
    "really",
    "happy",
    "early",
    "late",
    "soon",
    "said",
    "told",
    "help",
    "kind",
    "clear",
    "nice",
    "fine",
];

/// Name particles: never a name alone.
const PARTICLES: &[&str] = &[
    "de", "del", "della", "der", "den", "di", "da", "dos", "das", "du", "la", "le", "van", "von",
    "bin", "ibn", "al", "el", "y", "e", "mac", "st",
];

/// A title, then one or two capitalised words (the first may be in capitals).
const TITLED: &str = r"(?:Mrs|Mr|Ms|Mx|Miss|Dr|Professor|Prof|Sir|Dame|MRS|MR|MS|MX|MISS|DR|PROFESSOR|PROF|SIR|DAME)\.?[ ]+(\p{Lu}[\p{L}'\x{2019}\-]*)(?:[ ]+\p{Lu}\p{Ll}[\p{L}'\x{2019}\-]*)?";

/// Known names' parts and the title rule, compiled.
#[derive(Clone)]
pub(crate) struct Names {
    /// `None` when no known name has a usable part.
    automaton: Option<AhoCorasick>,
    /// Per automaton pattern: whether it is a weak part.
    weak: Vec<bool>,
    /// The first bytes of every part: word starts no part can start at skip the automaton.
    starts: Starts,
    titled: Regex,
}

/// The first two, three or four bytes (fewer for shorter parts) of every known-name part, ASCII
/// lower-cased, hashed into a bit table. Most word starts of a comment ("the", "course", "was")
/// start no part: one look-up there instead of a call into the automaton, which is where most of
/// the time went. A false positive only costs that call; a part is never missed, since the bytes
/// its match starts with are the ones it was entered with (the automaton ignores ASCII case,
/// and so does the table).
#[derive(Clone)]
struct Starts {
    bits: Box<[u64]>,
    /// Bit `k` set: some part's key is `k` bytes long (1 to 4).
    lengths: u8,
}

impl Starts {
    /// Bits in the table: a few thousand keys leave it about 97% empty, and it stays in L1.
    const BITS: u32 = 17;

    fn new<'p>(patterns: impl IntoIterator<Item = &'p str>) -> Self {
        let mut starts = Self {
            bits: vec![0; 1 << (Self::BITS - 6)].into_boxed_slice(),
            lengths: 0,
        };
        for p in patterns.into_iter().map(str::as_bytes) {
            let k = p.len().min(4);
            starts.lengths |= 1 << k;
            starts.set(Self::hash(Self::lower(p), k));
        }
        starts
    }

    /// The first `k` bytes of `lower` (bytes ASCII lower-cased, first in the lowest byte) and `k`,
    /// hashed to a bit of the table.
    fn hash(lower: u64, k: usize) -> usize {
        let key = (lower & ((1 << (8 * k)) - 1)) << 8 | k as u64;
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - Self::BITS)) as usize
    }

    /// Up to four bytes of `bytes`, ASCII lower-cased, the first in the lowest byte.
    fn lower(bytes: &[u8]) -> u64 {
        bytes.iter().take(4).enumerate().fold(0, |v, (i, b)| {
            v | u64::from(b.to_ascii_lowercase()) << (8 * i)
        })
    }

    fn set(&mut self, h: usize) {
        self.bits[h >> 6] |= 1 << (h & 63);
    }

    fn get(&self, h: usize) -> bool {
        self.bits[h >> 6] & (1 << (h & 63)) != 0
    }

    /// Whether some part may start at the start of `rest`.
    fn may_start(&self, rest: &[u8]) -> bool {
        let lower = Self::lower(rest);
        (1..=rest.len().min(4))
            .any(|k| self.lengths & (1 << k) != 0 && self.get(Self::hash(lower, k)))
    }
}

/// A known-name part found in the text, before the common-word rule.
struct Part {
    span: Range<usize>,
    weak: bool,
    /// Title case and not at a sentence start: a name by itself even when weak.
    capitalised_mid_sentence: bool,
}

impl Names {
    pub(crate) fn new(
        known: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, RecogniseError> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut weak = Vec::new();
        let mut add = |part: &str| {
            let folded = fold_str(part);
            let letters = folded.chars().filter(|c| c.is_alphanumeric()).count();
            if letters < 2 || PARTICLES.contains(&folded.as_str()) || index.contains_key(&folded) {
                return;
            }
            index.insert(folded.clone(), patterns.len());
            weak.push(letters <= 2 || COMMON_WORDS.contains(&folded.as_str()));
            patterns.push(folded);
        };
        for name in known {
            for part in name.as_ref().split_whitespace() {
                let part = part.trim_matches(|c: char| !c.is_alphanumeric());
                add(part);
                if part.contains(['-', '\'', '\u{2019}']) {
                    part.split(['-', '\'', '\u{2019}']).for_each(&mut add);
                }
            }
        }
        let starts = Starts::new(patterns.iter().map(String::as_str));
        let automaton = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .ascii_case_insensitive(true)
                    .kind(Some(AhoCorasickKind::DFA))
                    // Searched only from word starts (see `parts`): a name part never starts
                    // inside a word, and an anchored search from a word start is over within a
                    // few bytes when no part starts there.
                    .start_kind(StartKind::Anchored)
                    .build(&patterns)
                    .map_err(|e| RecogniseError::Names(e.to_string()))?,
            )
        };
        Ok(Self {
            automaton,
            weak,
            starts,
            titled: Regex::new(TITLED)?,
        })
    }

    /// How many distinct name parts the automaton holds.
    pub(crate) fn len(&self) -> usize {
        self.weak.len()
    }

    /// Pushes every name in `text` onto `out`.
    pub(crate) fn find(&self, text: &str, out: &mut Vec<Hit>) {
        if let Some(automaton) = &self.automaton {
            let parts = if text.is_ascii() {
                self.parts(automaton, text, text, None)
            } else {
                let (folded, map) = fold_with_map(text);
                self.parts(automaton, text, &folded, Some(&map))
            };
            accept_parts(text, &parts, out);
        }
        // The regex's own prefilter (its titles' literals) passes over texts without a title
        // faster than any test of ours; spans, not captures: what follows the title is found by
        // hand, not by the slower engine that reports groups.
        for all in self.titled.find_iter(text) {
            let before = text[..all.start()].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let after = text[all.end()..].chars().next();
            if after.is_some_and(|c| c.is_alphanumeric()) {
                continue;
            }
            // The title (ASCII letters), perhaps a dot, spaces: then the name.
            let title = &text[all.range()];
            let name = title
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .trim_start_matches('.')
                .trim_start_matches(' ');
            out.push(Hit {
                kind: EntityKind::Name,
                span: all.end() - name.len()..all.end(),
            });
        }
    }

    /// Known-name parts found in `haystack` (the text, or its fold, with `map` from the fold's
    /// byte offsets to the text's) on word boundaries of `text`.
    fn parts(
        &self,
        automaton: &AhoCorasick,
        text: &str,
        haystack: &str,
        map: Option<&[usize]>,
    ) -> Vec<Part> {
        let mut parts = Vec::new();
        let bytes = haystack.as_bytes();
        // Word starts before it are inside a part found already ("Smith-Jones").
        let mut next = 0;
        for i in word_starts(bytes) {
            if i < next || !self.starts.may_start(&bytes[i..]) {
                continue;
            }
            let input = Input::new(haystack).range(i..).anchored(Anchored::Yes);
            let Ok(Some(m)) = automaton.try_find(input) else {
                continue;
            };
            next = m.end().max(i + 1);
            let span = match map {
                None => m.start()..m.end(),
                Some(map) => map[m.start()]..map[m.end()],
            };
            if span.is_empty() || !on_word_boundaries(text, &span) {
                continue;
            }
            let weak = self.weak[m.pattern().as_usize()];
            let capitalised_mid_sentence = weak
                && title_case(&text[span.clone()])
                && !sentence_start(text, span.start)
                && !after_article(text, span.start);
            parts.push(Part {
                span: with_particles(text, span.start)..span.end,
                weak,
                capitalised_mid_sentence,
            });
        }
        parts
    }
}

/// Applies the common-word rule to `parts` (in text order) and pushes the names.
fn accept_parts(text: &str, parts: &[Part], out: &mut Vec<Hit>) {
    // Overlapping parts ("Ní", and "Ní Bhriain" with its particle) are one name too.
    let adjacent = |a: &Part, b: &Part| {
        b.span.start <= a.span.end || joins_names(&text[a.span.end..b.span.start])
    };
    // A weak part followed by a capitalised word that is no name part starts the name of
    // something else: "Young Professionals", "Grace Period Policy".
    let heads_a_phrase = |i: usize| {
        let end = parts[i].span.end;
        let next_word = text[end..].strip_prefix(' ').and_then(|t| t.chars().next());
        next_word.is_some_and(char::is_uppercase)
            && parts.get(i + 1).is_none_or(|n| !adjacent(&parts[i], n))
    };
    let strong =
        |i: usize| !parts[i].weak || (parts[i].capitalised_mid_sentence && !heads_a_phrase(i));
    for (i, part) in parts.iter().enumerate() {
        let accepted = strong(i)
            || (i > 0 && strong(i - 1) && adjacent(&parts[i - 1], part))
            || parts
                .get(i + 1)
                .is_some_and(|next| strong(i + 1) && adjacent(part, next));
        if accepted {
            out.push(Hit {
                kind: EntityKind::Name,
                span: part.span.clone(),
            });
        }
    }
}

/// Whether `gap`, the text between two name parts, makes them one name: spaces or one hyphen.
pub(crate) fn joins_names(gap: &str) -> bool {
    !gap.is_empty() && gap.len() <= 3 && gap.chars().all(|c| c == ' ' || c == '-')
}

/// Where a name starting at `start` really starts: before the particles right in front of it
/// ("van der Berg", "Ó Briain", "de Vries"), which are no name alone but are part of this one.
fn with_particles(text: &str, mut start: usize) -> usize {
    loop {
        let before = &text[..start];
        let Some(head) = before.strip_suffix(' ') else {
            return start;
        };
        let word_start = head.rfind(|c: char| !c.is_alphabetic()).map_or(0, |i| {
            i + head[i..].chars().next().map_or(1, char::len_utf8)
        });
        let word = fold_str(&head[word_start..]);
        if word.is_empty()
            || !(PARTICLES.contains(&word.as_str()) || IRISH_PARTICLES.contains(&word.as_str()))
        {
            return start;
        }
        start = word_start;
    }
}

/// Letters, digits, `_`, and any byte of a non-ASCII character: what continues a word.
const WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
        b += 1;
    }
    table
};

/// Where the words of `bytes` start (a word byte after none), in order. Worked out 64 bytes at
/// a time into a bit mask, without a branch per byte: a branch at every word's start and end was
/// mispredicted often enough to cost more than the names' automaton.
fn word_starts(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut word_before = false;
    bytes.chunks(64).enumerate().flat_map(move |(n, block)| {
        let words = block.iter().enumerate().fold(0u64, |m, (k, &b)| {
            m | u64::from(WORD_BYTES[usize::from(b)]) << k
        });
        let mut starts = words & !(words << 1 | u64::from(word_before));
        word_before = words >> (block.len() - 1) & 1 == 1;
        std::iter::from_fn(move || {
            (starts != 0).then(|| {
                let k = starts.trailing_zeros() as usize;
                starts &= starts - 1;
                n * 64 + k
            })
        })
    })
}

/// Irish and Scottish patronymic particles, written apart from the name ("Ó Briain",
/// "Ní Bhriain", "Mac an tSaoi").
const IRISH_PARTICLES: &[&str] = &["o", "ni", "nic", "ua", "mhic"];

fn on_word_boundaries(text: &str, span: &Range<usize>) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    !word(text[..span.start].chars().next_back()) && !word(text[span.end..].chars().next())
}

/// "May", "Álvarez", "O'Brien": an upper-case letter, then not all upper case.
fn title_case(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(char::is_uppercase) && chars.any(char::is_lowercase)
}

/// Whether `at` starts a sentence: only spaces between it and the start of the text, or `.`,
/// `!`, `?`, `:`, a newline, or an opening quote or bracket.
fn sentence_start(text: &str, at: usize) -> bool {
    match text[..at].trim_end_matches([' ', '\t']).chars().next_back() {
        None => true,
        Some(c) => matches!(
            c,
            '.' | '!' | '?' | ':' | '\n' | '\r' | '"' | '(' | '[' | '\u{201C}' | '\u{2018}'
        ),
    }
}

/// Whether the word before `at` is an article or a demonstrative: "the Young Professionals",
/// "a Grace period" name things, not people.
fn after_article(text: &str, at: usize) -> bool {
    let Some(head) = text[..at].strip_suffix(' ') else {
        return false;
    };
    let word = head
        .rsplit(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    ["the", "a", "an", "this", "that", "these", "those"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(word))
}

/// What a character folds to: itself, an ASCII replacement, or nothing (a combining mark).
enum Fold {
    Keep,
    Ascii(&'static str),
    Drop,
}

/// Latin letters with diacritics (Latin-1 Supplement, Latin Extended-A, the Romanian commas) to
/// ASCII, and combining diacritics to nothing, so decomposed text folds like composed text. A
/// table rather than Unicode normalisation: names are Latin-script in the courses this serves,
/// and a table costs nothing to build or run.
fn fold_char(c: char) -> Fold {
    let ascii = match c {
        'À'..='Å' | 'à'..='å' | 'Ā'..='ą' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | 'Ć'..='č' => "c",
        'È'..='Ë' | 'è'..='ë' | 'Ē'..='ě' => "e",
        'Ì'..='Ï' | 'ì'..='ï' | 'Ĩ'..='ı' => "i",
        'Ð' | 'ð' | 'Ď'..='đ' => "d",
        'Ñ' | 'ñ' | 'Ń'..='ŋ' => "n",
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō'..='ő' => "o",
        'Ù'..='Ü' | 'ù'..='ü' | 'Ũ'..='ų' => "u",
        'Ý' | 'ý' | 'ÿ' | 'Ŷ'..='Ÿ' => "y",
        'Þ' | 'þ' => "th",
        'ß' => "ss",
        'Ĝ'..='ģ' => "g",
        'Ĥ'..='ħ' => "h",
        'Ĳ' | 'ĳ' => "ij",
        'Ĵ' | 'ĵ' => "j",
        'Ķ'..='ĸ' => "k",
        'Ĺ'..='ł' => "l",
        'Œ' | 'œ' => "oe",
        'Ŕ'..='ř' => "r",
        'Ś'..='š' | 'ſ' | 'Ș' | 'ș' => "s",
        'Ţ'..='ŧ' | 'Ț' | 'ț' => "t",
        'Ŵ' | 'ŵ' => "w",
        'Ź'..='ž' => "z",
        '\u{0300}'..='\u{036F}' => return Fold::Drop,
        _ => return Fold::Keep,
    };
    Fold::Ascii(ascii)
}

/// `s` folded, for the automaton's patterns: diacritics off, lower case.
pub(crate) fn fold_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match fold_char(c) {
            Fold::Keep => out.extend(c.to_lowercase()),
            Fold::Ascii(a) => out.push_str(a),
            Fold::Drop => {}
        }
    }
    out
}

/// `text` folded like [`fold_str`], and for every byte offset of the fold (and its end) the
/// offset in `text` of the character it came from, so that a match in the fold maps back to a
/// span of `text` on `char` boundaries.
fn fold_with_map(text: &str) -> (String, Vec<usize>) {
    let mut folded = String::with_capacity(text.len() + 8);
    let mut map = Vec::with_capacity(text.len() + 9);
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        // ASCII folds to itself, byte for byte: a whole run at once, not char by char through
        // the table (most of a text with an accent or two is ASCII).
        let run = text.as_bytes()[at..]
            .iter()
            .take_while(|b| b.is_ascii())
            .count();
        if run > 0 {
            folded.push_str(&text[at..at + run]);
            map.extend(at..at + run);
            at += run;
            continue;
        }
        let before = folded.len();
        match fold_char(c) {
            Fold::Keep if c.is_ascii() => folded.push(c),
            Fold::Keep => folded.extend(c.to_lowercase()),
            Fold::Ascii(a) => folded.push_str(a),
            // A dropped mark belongs to the letter before it: a match ending at that letter
            // ends after the mark (the next folded byte maps past it).
            Fold::Drop => {}
        }
        map.resize(folded.len().max(before), at);
        at += c.len_utf8();
    }
    map.push(text.len());
    (folded, map)
}
