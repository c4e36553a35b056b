//! A labelled corpus of generated end-of-course survey comments, for the scrubber's tests and
//! bench (not part of the API: hidden, and it may change with them).
//!
//! Deterministic: the same seed gives the same comments on every machine. Identifiers are
//! embedded in realistic sentences and labelled with their kind and byte span; many comments hold
//! none, and many hold things that are not identifiers but look like numbers or names: dates,
//! times, prices, course codes, room numbers, scores, years, order numbers, versions, and common
//! words that are also known people's names ("I hope", "May I", "we will").

use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;

use crate::scrub::structured::{iban_valid, luhn, nhs_check};
use crate::{EntityKind, Scrubber};

/// A fixed-seed xorshift64*: the same text on every run, without a random-number crate. The
/// crate's benches draw their data from it too.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0.0..1.0`, uniform (53 random bits).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// `n` random decimal digits.
    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }

    fn digit_vec(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(10) as u32).collect()
    }
}

/// A labelled identifier in a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// What it is.
    pub kind: EntityKind,
    /// Where it is, in bytes.
    pub span: Range<usize>,
}

/// A generated comment and its identifiers.
#[derive(Clone, PartialEq, Eq)]
pub struct Comment {
    /// The comment.
    pub text: String,
    /// Its identifiers, in order.
    pub entities: Vec<Entity>,
}

impl fmt::Debug for Comment {
    // Generated, but shaped like personal data: kept out of logs like the real thing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Comment")
            .field("text", &format_args!("[redacted]"))
            .field("entities", &self.entities)
            .finish()
    }
}

/// The known people's names of the generated course, and its comments.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Full names of learners and staff ("José Álvarez").
    pub known_names: Vec<String>,
    /// The comments.
    pub comments: Vec<Comment>,
}

impl Corpus {
    /// The comments' total size in bytes.
    pub fn bytes(&self) -> usize {
        self.comments.iter().map(|c| c.text.len()).sum()
    }

    /// The comments as JSON lines, `{"text": …, "entities": [[kind, start, end], …]}` with byte
    /// offsets and [`EntityKind::as_str`] kinds: the baselines' input.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::with_capacity(self.bytes() * 2);
        for c in &self.comments {
            out.push_str("{\"text\": \"");
            for ch in c.text.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if u32::from(c) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", u32::from(c));
                    }
                    c => out.push(c),
                }
            }
            out.push_str("\", \"entities\": [");
            for (i, e) in c.entities.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(
                    out,
                    "{sep}[\"{}\", {}, {}]",
                    e.kind.as_str(),
                    e.span.start,
                    e.span.end
                );
            }
            out.push_str("]}\n");
        }
        out
    }
}

const GIVEN: &[&str] = &[
    "Oliver",
    "Amelia",
    "Harry",
    "Isla",
    "George",
    "Ava",
    "Noah",
    "Mia",
    "Jack",
    "Ivy",
    "Leo",
    "Freya",
    "Oscar",
    "Florence",
    "Arthur",
    "Evie",
    "Muhammad",
    "Aisha",
    "Kwame",
    "Ngozi",
    "Priya",
    "Arjun",
    "Wei",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Olumide",
    "Chidi",
    "Fatima",
    "Omar",
    "Siobhán",
    "Seán",
    "Niamh",
    "Aoife",
    "Eoin",
    "José",
    "María",
    "Álvaro",
    "Inés",
    "Lucía",
    "Zoë",
    "Chloé",
    "Renée",
    "François",
    "Hélène",
    "Jürgen",
    "Björn",
    "Søren",
    "Åsa",
    "Łucja",
    "Dvořák",
    "Małgorzata",
    "Grace",
    "Will",
    "May",
    "Hope",
    "Mark",
    "Rose",
    "Joy",
    "Daniel",
    "Sarah",
    "Thomas",
    "Emily",
    "James",
    "Hannah",
    "Samuel",
    "Rebecca",
    "Benjamin",
    "Charlotte",
    "Ethan",
    "Olivia",
    "Lucas",
    "Sophie",
    "Kofi",
    "Adwoa",
    "Tendai",
    "Rutendo",
    "Anil",
    "Deepa",
    "Nikolai",
    "Katya",
    "Bogdan",
    "Ioana",
    "Mateusz",
    "Agnieszka",
    "Tomás",
    "Beatriz",
    "Yusuf",
    "Leyla",
    "Emre",
    "Elif",
    "Dmitri",
    "Anastasia",
    "Rhys",
    "Cerys",
    "Gareth",
    "Bethan",
    "Callum",
    "Eilidh",
    "Hamish",
    "Morag",
];

const FAMILY: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Williams",
    "Davies",
    "Evans",
    "Thomas",
    "Roberts",
    "Johnson",
    "Wilson",
    "Patel",
    "Khan",
    "Singh",
    "Okafor",
    "Adeyemi",
    "Mensah",
    "Nguyen",
    "Chen",
    "Wang",
    "Tanaka",
    "Sato",
    "Kowalski",
    "Nowak",
    "Łukasiewicz",
    "Wójcik",
    "Dvořák",
    "Novák",
    "Müller",
    "Schröder",
    "Weiß",
    "Álvarez",
    "Muñoz",
    "Núñez",
    "García",
    "Pérez",
    "Gonçalves",
    "Conceição",
    "Lefèvre",
    "Giraud",
    "Ødegaard",
    "Sørensen",
    "Ångström",
    "Ó Briain",
    "O'Connor",
    "MacDonald",
    "McLeod",
    "Fitzgerald",
    "Ní Bhriain",
    "Yılmaz",
    "Öztürk",
    "Şahin",
    "Popescu",
    "Ionescu",
    "Ivanova",
    "Petrov",
    "Kuznetsova",
    "Hughes",
    "Edwards",
    "Lloyd",
    "Morgan",
    "Price",
    "Bell",
    "Hope",
    "May",
    "Young",
    "Brown",
    "Okonkwo-Hart",
    "Ferreira",
    "Costa",
    "Rossi",
    "Bianchi",
    "Fischer",
    "Becker",
    "Hoffmann",
    "Jansen",
    "de Vries",
    "van Dijk",
    "Bakker",
    "Andersson",
    "Johansson",
    "Lindqvist",
    "Virtanen",
    "Korhonen",
    "Horváth",
    "Nagy",
    "Kovács",
    "Papadopoulos",
    "Dimitriou",
    "Cohen",
    "Levi",
    "Haddad",
    "Nasser",
    "Rahman",
    "Hossain",
    "Chowdhury",
    "Iyer",
    "Reddy",
    "Menon",
];

/// Syllables of made-up English-looking family names, so the known-name list has as many
/// distinct parts as a real cohort history would.
const FAMILY_HEADS: &[&str] = &[
    "Ash", "Brad", "Carr", "Dun", "Ell", "Fair", "Gold", "Hal", "Kings", "Lang", "Mor", "Nor",
    "Pem", "Rad", "Stan", "Thorn", "Wal", "Wes", "Whit", "Win", "Har", "Pen", "Ral", "Tre",
];
const FAMILY_TAILS: &[&str] = &[
    "ley", "ton", "field", "ford", "worth", "wood", "by", "more", "ham", "ridge", "stead", "croft",
    "bury", "ington", "cott", "leigh",
];

/// Family names of people not on the course: found only after a title.
const UNKNOWN_FAMILY: &[&str] = &[
    "Abernathy",
    "Blackwood",
    "Castellanos",
    "Drummond",
    "Eriksen",
    "Featherstone",
    "Galloway",
    "Hargreaves",
    "Ibáñez",
    "Jaworski",
    "Kilbride",
    "Lockhart",
    "Montgomery",
    "Nakamura",
    "Ogilvy",
    "Pemberton",
    "Quigley",
    "Ravensworth",
    "Sutherland",
    "Treadwell",
    "Underwood",
    "Vasquez",
    "Whitcombe",
    "Zielińska",
];
const TITLES: &[&str] = &[
    "Mr",
    "Mrs",
    "Ms",
    "Miss",
    "Dr",
    "Dr.",
    "Prof",
    "Prof.",
    "Professor",
    "Sir",
    "Dame",
    "Mr.",
    "Mrs.",
];

const NAME_T: &[&str] = &[
    "Thanks to {} for a great week.",
    "{} was an excellent tutor.",
    "I sat next to {} and we worked well together.",
    "Please pass my thanks to {}.",
    "The session with {} on day two was the highlight.",
    "Special mention for {}, who made it fun.",
    "I would like to thank {} for the support.",
    "Could {} share the slides again?",
    "Our group ({} and two others) finished early.",
    "Shout out to {}!",
    "{} helped me with the spreadsheet exercise.",
    "The best part was the role play with {}.",
];
const EMAIL_T: &[&str] = &[
    "You can reach me at {} if you need more feedback.",
    "Please send the certificate to {}.",
    "My email is {}",
    "Contact: {}.",
    "email me ({}) about the next course",
];
const PHONE_T: &[&str] = &[
    "Call me on {} to discuss.",
    "My number is {}.",
    "Text {} if the date changes.",
    "Phone: {}",
    "ring {} after 5pm",
];
const POSTCODE_T: &[&str] = &[
    "I travelled from {} every day.",
    "Please post the certificate to my home postcode {}.",
    "The venue near {} was easy to reach.",
    "I live in {} so parking was hard.",
];
const NINO_T: &[&str] = &[
    "My NI number is {} for the funding form.",
    "NINO: {}",
    "The form asked for my National Insurance number ({}) twice, why?",
];
const NHS_SPACED_T: &[&str] = &[
    "My NHS number is {} in case you need it for the health form.",
    "the first-aid form asked for {} which felt like too much",
    "Health form reference {} was lost.",
];
const NHS_RUN_T: &[&str] = &["My NHS number is {}.", "NHS no. {} on the form", "{} (NHS)"];
const SSN_T: &[&str] = &[
    "My SSN is {}.",
    "For the US visa form: {}",
    "social security number {}",
];
const SSN_RUN_T: &[&str] = &["SSN: {}", "my ssn {} was on the form"];
const CARD_T: &[&str] = &[
    "I paid with card {} but was charged twice.",
    "Refund to {} please.",
    "card number {} expired in the middle of the booking",
];
const IBAN_T: &[&str] = &[
    "Please refund to {}.",
    "My IBAN is {}",
    "bank details: {}, thanks",
];
const URL_T: &[&str] = &[
    "The slides are at {}.",
    "I found this helpful: {}",
    "See {} for my portfolio.",
    "(more at {})",
];
const IP_T: &[&str] = &[
    "The lab machine at {} kept crashing.",
    "The VPN gave me {} and blocked the portal.",
    "server {} was down on Tuesday",
];
const HANDLE_T: &[&str] = &[
    "Follow me on Twitter {}.",
    "my insta is {}",
    "Find me on Mastodon {} if you want to chat.",
    "tagged you all: {}",
];

const PLAIN: &[&str] = &[
    "The course was really useful and the tutor explained everything clearly.",
    "I hope the next cohort will enjoy it as much as we did.",
    "May I suggest more breaks in the afternoon?",
    "Will there be a follow-up course next year?",
    "The mark scheme was clear and fair.",
    "It was a real joy to learn something new.",
    "Grace periods for the assignments would help people with jobs.",
    "We may need longer lunch breaks.",
    "The brown folder with the handouts was missing on Monday.",
    "Young learners might find the pace a bit slow.",
    "The price was fair for what we got.",
    "Too much content for one day, but well organised.",
    "The room was cold and the projector kept failing.",
    "I would recommend it to my colleagues at work.",
    "More examples please, especially for the last module.",
    "Parking was a nightmare, I will take the train next time.",
    "The online portal was slow and I lost my answers once.",
    "Great atmosphere, friendly group, good coffee.",
    "I will definitely come back for the advanced level.",
    "The Young Professionals network event after the course was a nice touch.",
    "Handouts arrived late but were worth the wait.",
    "I AM VERY HAPPY WITH THE COURSE, WILL COME BACK.",
    "Hope to see more practical sessions.",
    "The case studies were the best part.",
    "Mark my words, this course will get popular.",
    "I was not sure at first, but by Friday it all made sense.",
];

const DATES: &[&str] = &[
    "12/03/2026",
    "2026-11-24",
    "3 March 2026",
    "03.04.2026",
    "1st of June",
    "Tuesday 14th",
];
const TIMES: &[&str] = &["09:30", "14:45", "10:30:00", "10am", "2.30pm", "16.00"];
const PRICES: &[&str] = &[
    "£1,250.00",
    "$49.99",
    "€300",
    "£75",
    "£2,499",
    "USD 1,200.50",
];
const CODES: &[&str] = &[
    "CS101",
    "BIO-204",
    "MKT3001",
    "HSC 2.1",
    "ITIL4",
    "PRINCE2",
    "ISO 27001",
    "L3-ACC",
];
const ROOMS: &[&str] = &["B12", "4.06", "G.03", "2.14A", "101", "LT3"];
const SCORES: &[&str] = &["8/10", "9 out of 10", "4.5/5", "95%", "10/10", "7.5"];

/// A filler sentence with no identifier, often with numbers that are not identifiers.
fn plain(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => format!(
            "The course ran from {} to {}.",
            rng.pick(DATES),
            rng.pick(DATES)
        ),
        1 => format!(
            "Sessions started at {} and finished at {}.",
            rng.pick(TIMES),
            rng.pick(TIMES)
        ),
        2 => format!("It cost {}, which felt fair.", rng.pick(PRICES)),
        3 => format!("Module {} was the hardest.", rng.pick(CODES)),
        4 => format!("We were in Room {} all week.", rng.pick(ROOMS)),
        5 => format!("I'd give it {}.", rng.pick(SCORES)),
        6 => format!(
            "I have worked here since {} and this was my first course in {} years.",
            2000 + rng.below(26),
            1 + rng.below(9)
        ),
        7 => format!(
            "Version {}.{}.{} of the app crashed during week {}.",
            rng.below(5),
            rng.below(20),
            rng.below(10),
            1 + rng.below(12)
        ),
        8 => format!(
            "Invoice INV-{}-{} was paid on time, order {} too.",
            2020 + rng.below(7),
            rng.digits(4),
            rng.digits(5)
        ),
        9 => format!(
            "We did {} exercises in {} groups of {}, pages {}-{}.",
            3 + rng.below(20),
            2 + rng.below(6),
            2 + rng.below(5),
            10 + rng.below(90),
            100 + rng.below(200)
        ),
        _ => rng.pick(PLAIN).to_owned(),
    }
}

/// How a known name is written in a comment.
fn render(rng: &mut Rng, name: &str) -> String {
    match rng.below(10) {
        0 => name.to_uppercase(),
        1 => crate::scrub::names::fold_str(name),
        2 => {
            // ASCII title case, as on a keyboard without accents.
            let folded = crate::scrub::names::fold_str(name);
            folded
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect::<String>())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
        _ => name.to_owned(),
    }
}

/// The email-safe ASCII of a name part.
fn ascii(part: &str) -> String {
    crate::scrub::names::fold_str(part)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

fn grouped(digits: &str, groups: &[usize], sep: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (i, &g) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&digits[at..(at + g).min(digits.len())]);
        at += g;
    }
    out
}

fn phone(rng: &mut Rng) -> String {
    match rng.below(11) {
        0 => format!("07{} {}", rng.digits(3), rng.digits(6)),
        1 => format!("07{}{}", rng.digits(3), rng.digits(6)),
        2 => format!("+44 7{} {}", rng.digits(3), rng.digits(6)),
        3 => format!("020 {} {}", rng.digits(4), rng.digits(4)),
        4 => format!("(0161) {} {}", rng.digits(3), rng.digits(4)),
        5 => format!("+44 (0)20 {} {}", rng.digits(4), rng.digits(4)),
        6 => format!(
            "({}{}) {}-{}",
            2 + rng.below(8),
            rng.digits(2),
            rng.digits(3),
            rng.digits(4)
        ),
        7 => format!(
            "{}{}-{}-{}",
            2 + rng.below(8),
            rng.digits(2),
            rng.digits(3),
            rng.digits(4)
        ),
        8 => format!(
            "+1 {}{} {} {}",
            2 + rng.below(8),
            rng.digits(2),
            rng.digits(3),
            rng.digits(4)
        ),
        9 => format!(
            "+33 6 {} {} {} {}",
            rng.digits(2),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2)
        ),
        _ => format!("+49 30 {}", rng.digits(7)),
    }
}

fn postcode(rng: &mut Rng) -> String {
    const AREAS: &[&str] = &[
        "SW", "EC", "M", "B", "CR", "DN", "LS", "G", "EH", "BS", "CF", "OX", "CB", "NE", "L", "N",
        "E", "W", "SE", "NW",
    ];
    const INWARD: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
    let area = rng.pick(AREAS);
    let district = 1 + rng.below(20);
    let sub = if area.len() == 2 && district < 10 && rng.percent(20) {
        "A"
    } else {
        ""
    };
    let inward = format!(
        "{}{}{}",
        rng.below(10),
        char::from(rng.pick(INWARD)),
        char::from(rng.pick(INWARD))
    );
    if rng.percent(85) {
        format!("{area}{district}{sub} {inward}")
    } else {
        format!("{area}{district}{sub}{inward}")
    }
}

fn nino(rng: &mut Rng) -> String {
    const FIRST: &[u8] = b"ABCEGHJKLMNOPRSTWXYZ";
    const SECOND: &[u8] = b"ABCEGHJKLMNPRSTWXYZ";
    let prefix = loop {
        let p = [rng.pick(FIRST), rng.pick(SECOND)];
        if ![b"BG", b"GB", b"KN", b"NK", b"NT", b"TN", b"ZZ"].contains(&&p) {
            break String::from_utf8_lossy(&p).into_owned();
        }
    };
    let d = rng.digits(6);
    let suffix = char::from(b'A' + rng.below(4) as u8);
    if rng.percent(50) {
        format!("{prefix} {} {} {} {suffix}", &d[..2], &d[2..4], &d[4..])
    } else {
        format!("{prefix}{d}{suffix}")
    }
}

fn nhs_digits(rng: &mut Rng) -> String {
    loop {
        let mut d = rng.digit_vec(9);
        let sum: u32 = d.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            c => c,
        };
        if check == 10 {
            continue;
        }
        d.push(check);
        if nhs_check(&d) {
            return d.iter().map(|d| char::from(b'0' + *d as u8)).collect();
        }
    }
}

fn ssn(rng: &mut Rng) -> String {
    let area = loop {
        let a = 1 + rng.below(899);
        if a != 666 {
            break a;
        }
    };
    format!(
        "{area:03}{:02}{:04}",
        1 + rng.below(99),
        1 + rng.below(9999)
    )
}

fn card(rng: &mut Rng) -> String {
    let (prefix, len, groups): (&str, usize, &[usize]) = match rng.below(4) {
        0 => ("4", 16, &[4, 4, 4, 4]),
        1 => ("5", 16, &[4, 4, 4, 4]),
        2 => ("37", 15, &[4, 6, 5]),
        _ => ("6011", 16, &[4, 4, 4, 4]),
    };
    let mut d: Vec<u32> = prefix.bytes().map(|b| u32::from(b - b'0')).collect();
    if prefix == "5" {
        d.push(1 + rng.below(5) as u32);
    }
    while d.len() < len - 1 {
        d.push(rng.below(10) as u32);
    }
    d.push(0);
    // The check digit that makes the Luhn sum a multiple of 10.
    for c in 0..10 {
        d[len - 1] = c;
        if luhn(&d) {
            break;
        }
    }
    let s: String = d.iter().map(|d| char::from(b'0' + *d as u8)).collect();
    match rng.below(3) {
        0 => grouped(&s, groups, " "),
        1 => grouped(&s, groups, "-"),
        _ => s,
    }
}

fn iban(rng: &mut Rng) -> String {
    const BANKS: &[&str] = &["NWBK", "BARC", "LOYD", "MIDL", "HBUK", "AIBK", "BOFI"];
    let (country, bban) = match rng.below(5) {
        0 => ("GB", format!("{}{}", rng.pick(BANKS), rng.digits(14))),
        1 => ("DE", rng.digits(18)),
        2 => ("IE", format!("{}{}", rng.pick(BANKS), rng.digits(14))),
        3 => ("NL", format!("{}{}", rng.pick(BANKS), rng.digits(10))),
        _ => ("FR", format!("{}{}", rng.digits(20), rng.digits(3))),
    };
    // Check digits: 98 minus the number (BBAN, country, "00") mod 97.
    let mut rem: u32 = 0;
    for b in format!("{bban}{country}00").bytes() {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            _ => u32::from(b - b'A') + 10,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    let compact = format!("{country}{:02}{bban}", 98 - rem);
    debug_assert!(iban_valid(&compact));
    if rng.percent(60) {
        let chunks: Vec<String> = compact
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        chunks.join(" ")
    } else {
        compact
    }
}

fn url(rng: &mut Rng, given: &str, family: &str) -> String {
    let (g, f) = (ascii(given).to_lowercase(), ascii(family).to_lowercase());
    match rng.below(5) {
        0 => format!("https://www.{g}{f}.dev/portfolio"),
        1 => format!("http://{f}-training.co.uk/notes?id={}", rng.digits(4)),
        2 => format!("www.{g}-{f}.com"),
        3 => format!("https://docs.example.org/slides/week-{}", 1 + rng.below(12)),
        _ => format!("https://github.com/{g}{f}/course-notes"),
    }
}

fn ip(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => format!("192.168.{}.{}", rng.below(256), 1 + rng.below(254)),
        1 => format!(
            "{}.{}.{}.{}",
            1 + rng.below(223),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        ),
        2 => format!(
            "2001:db8:{:x}:{:x}::{:x}",
            rng.below(0xffff),
            rng.below(0xffff),
            1 + rng.below(0xfff)
        ),
        _ => format!(
            "fe80:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
            rng.below(0xffff),
            rng.below(0xffff),
            rng.below(0xffff),
            rng.below(0xffff),
            rng.below(0xffff),
            rng.below(0xffff),
            rng.below(0xffff)
        ),
    }
}

/// A comment being written: text and labels.
struct Writer {
    text: String,
    entities: Vec<Entity>,
}

impl Writer {
    /// `template` with its `{}` replaced by `entity` (labelled `kind`), after `prefix` (not
    /// labelled: a title before a name).
    fn fill(&mut self, template: &str, prefix: &str, kind: EntityKind, entity: &str) {
        let (head, tail) = template.split_once("{}").unwrap_or((template, ""));
        self.text.push_str(head);
        self.text.push_str(prefix);
        let start = self.text.len();
        self.text.push_str(entity);
        self.entities.push(Entity {
            kind,
            span: start..self.text.len(),
        });
        self.text.push_str(tail);
        // Most people end a sentence with a full stop; some don't (the next sentence then
        // starts with no punctuation before it).
        if !self.text.ends_with(['.', '!', '?', ')']) && !self.text.len().is_multiple_of(4) {
            self.text.push('.');
        }
    }
}

/// The known names of a generated course: `count` distinct full names.
pub fn known_names(seed: u64, count: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::with_capacity(count);
    let max = GIVEN.len() * (FAMILY.len() + FAMILY_HEADS.len() * FAMILY_TAILS.len());
    while names.len() < count.min(max) {
        let family = if rng.percent(50) {
            rng.pick(FAMILY).to_owned()
        } else {
            format!("{}{}", rng.pick(FAMILY_HEADS), rng.pick(FAMILY_TAILS))
        };
        let name = format!("{} {family}", rng.pick(GIVEN));
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
}

/// A course of 2,000 known people and at least `min_bytes` of their comments, from `seed`.
pub fn generate(seed: u64, min_bytes: usize) -> Corpus {
    let known_names = known_names(seed, 2000);
    let mut rng = Rng::new(seed ^ 0x5c0b_ba5e);
    let mut comments = Vec::new();
    let mut bytes = 0;
    while bytes < min_bytes {
        let comment = comment(&mut rng, &known_names);
        bytes += comment.text.len();
        comments.push(comment);
    }
    Corpus {
        known_names,
        comments,
    }
}

fn comment(rng: &mut Rng, known: &[String]) -> Comment {
    let mut w = Writer {
        text: String::new(),
        entities: Vec::new(),
    };
    let clean = rng.percent(40);
    let sentences = 1 + rng.below(4);
    for i in 0..sentences {
        if i > 0 {
            w.text.push(' ');
        }
        if clean || rng.percent(45) {
            w.text.push_str(&plain(rng));
            continue;
        }
        let name = &known[rng.below(known.len())];
        let (given, family) = name.split_once(' ').unwrap_or((name, name));
        match rng.below(14) {
            0..=3 => {
                let t = rng.pick(NAME_T);
                match rng.below(10) {
                    0..=4 => w.fill(t, "", EntityKind::Name, &render(rng, name)),
                    5 | 6 => w.fill(t, "", EntityKind::Name, &render(rng, given)),
                    7 => w.fill(t, "", EntityKind::Name, &render(rng, family)),
                    8 => {
                        let title = format!("{} ", rng.pick(TITLES));
                        w.fill(t, &title, EntityKind::Name, family);
                    }
                    _ => {
                        let title = format!("{} ", rng.pick(TITLES));
                        w.fill(t, &title, EntityKind::Name, rng.pick(UNKNOWN_FAMILY));
                    }
                }
            }
            4 => {
                let (g, f) = (ascii(given).to_lowercase(), ascii(family).to_lowercase());
                let email = match rng.below(4) {
                    0 => format!("{g}.{f}{}@gmail.com", rng.below(100)),
                    1 => format!("{}{f}@example.ac.uk", &g[..1.min(g.len())]),
                    2 => format!("{g}_{f}@outlook.com"),
                    _ => format!("{}.{}@Training-Co.org.uk", given_cap(&g), given_cap(&f)),
                };
                w.fill(rng.pick(EMAIL_T), "", EntityKind::Email, &email);
            }
            5 => w.fill(rng.pick(PHONE_T), "", EntityKind::Phone, &phone(rng)),
            6 => w.fill(
                rng.pick(POSTCODE_T),
                "",
                EntityKind::Postcode,
                &postcode(rng),
            ),
            7 => w.fill(rng.pick(NINO_T), "", EntityKind::Nino, &nino(rng)),
            8 => {
                let d = nhs_digits(rng);
                if rng.percent(70) {
                    let sep = if rng.percent(70) { " " } else { "-" };
                    let s = grouped(&d, &[3, 3, 4], sep);
                    w.fill(rng.pick(NHS_SPACED_T), "", EntityKind::NhsNumber, &s);
                } else {
                    w.fill(rng.pick(NHS_RUN_T), "", EntityKind::NhsNumber, &d);
                }
            }
            9 => {
                let d = ssn(rng);
                if rng.percent(75) {
                    let sep = if rng.percent(70) { "-" } else { " " };
                    let s = grouped(&d, &[3, 2, 4], sep);
                    w.fill(rng.pick(SSN_T), "", EntityKind::Ssn, &s);
                } else {
                    w.fill(rng.pick(SSN_RUN_T), "", EntityKind::Ssn, &d);
                }
            }
            10 => {
                if rng.percent(50) {
                    w.fill(rng.pick(CARD_T), "", EntityKind::Card, &card(rng));
                } else {
                    w.fill(rng.pick(IBAN_T), "", EntityKind::Iban, &iban(rng));
                }
            }
            11 => {
                let u = url(rng, given, family);
                w.fill(rng.pick(URL_T), "", EntityKind::Url, &u);
            }
            12 => w.fill(rng.pick(IP_T), "", EntityKind::Ip, &ip(rng)),
            _ => {
                let (g, f) = (ascii(given).to_lowercase(), ascii(family).to_lowercase());
                let handle = match rng.below(3) {
                    0 => format!("@{g}_{f}"),
                    1 => format!("@{g}{}", rng.below(1000)),
                    _ => format!("@{f}.{g}"),
                };
                w.fill(rng.pick(HANDLE_T), "", EntityKind::Handle, &handle);
            }
        }
    }
    Comment {
        text: w.text,
        entities: w.entities,
    }
}

fn given_cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Counts for one kind of identifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Labelled identifiers of the kind.
    pub labels: usize,
    /// Of those, covered by a hit of the same kind.
    pub found: usize,
    /// Of those, covered by a hit of any kind (replaced, if under another placeholder).
    pub replaced: usize,
    /// Hits of the kind.
    pub hits: usize,
    /// Of those, overlapping a label of the same kind.
    pub correct: usize,
}

impl Tally {
    /// Found labels over labels (1 when there are none).
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.labels)
    }

    /// Correct hits over hits (1 when there are none).
    pub fn precision(&self) -> f64 {
        ratio(self.correct, self.hits)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// How a scrubber did on a corpus.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Per kind, in [`EntityKind::ALL`] order.
    pub kinds: Vec<(EntityKind, Tally)>,
    /// Comments with identifiers: (held for review, all).
    pub review_with_identifiers: (usize, usize),
    /// Comments without identifiers: (held for review, all).
    pub review_clean: (usize, usize),
}

impl Evaluation {
    /// The tally of `kind`.
    pub fn tally(&self, kind: EntityKind) -> Tally {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
            .unwrap_or_default()
    }
}

/// Whether hits (of `kind`, or any when `None`) cover `span`.
fn covered(hits: &[crate::Hit], span: &Range<usize>, kind: Option<EntityKind>) -> bool {
    let over = hits.iter().filter(|h| {
        kind.is_none_or(|k| h.kind == k) && h.span.start < span.end && span.start < h.span.end
    });
    let (mut start, mut end) = (usize::MAX, 0);
    for h in over {
        start = start.min(h.span.start);
        end = end.max(h.span.end);
    }
    start <= span.start && end >= span.end
}

/// Scrubs every comment and tallies hits against labels.
pub fn evaluate(scrubber: &Scrubber, comments: &[Comment]) -> Evaluation {
    let mut tallies = [Tally::default(); 12];
    let index = |k: EntityKind| EntityKind::ALL.iter().position(|x| *x == k).unwrap_or(0);
    let mut eval = Evaluation::default();
    for c in comments {
        let scrubbed = scrubber.scrub(&c.text);
        for e in &c.entities {
            let t = &mut tallies[index(e.kind)];
            t.labels += 1;
            t.found += usize::from(covered(&scrubbed.hits, &e.span, Some(e.kind)));
            t.replaced += usize::from(covered(&scrubbed.hits, &e.span, None));
        }
        for h in &scrubbed.hits {
            let t = &mut tallies[index(h.kind)];
            t.hits += 1;
            t.correct += usize::from(c.entities.iter().any(|e| {
                e.kind == h.kind && e.span.start < h.span.end && h.span.start < e.span.end
            }));
        }
        let review = if c.entities.is_empty() {
            &mut eval.review_clean
        } else {
            &mut eval.review_with_identifiers
        };
        review.0 += usize::from(scrubbed.needs_review());
        review.1 += 1;
    }
    eval.kinds = EntityKind::ALL.iter().copied().zip(tallies).collect();
    eval
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<11} {:>6} {:>6} {:>9} {:>7} {:>9}",
            "kind", "labels", "hits", "precision", "recall", "replaced"
        )?;
        for (kind, t) in &self.kinds {
            writeln!(
                f,
                "{:<11} {:>6} {:>6} {:>9.4} {:>7.4} {:>9.4}",
                kind.as_str(),
                t.labels,
                t.hits,
                t.precision(),
                t.recall(),
                ratio(t.replaced, t.labels)
            )?;
        }
        let (r, n) = self.review_with_identifiers;
        let (rc, nc) = self.review_clean;
        write!(
            f,
            "held for review: {r}/{n} comments with identifiers, {rc}/{nc} without"
        )
    }
}
