//! Throughput of the recogniser pack the guard runs on every free-text field: the built-in US SSN
//! recogniser and one register pattern, over a few MB of survey-like free text (names, e-mail
//! addresses, phone numbers, dates, company and order numbers, now and then an SSN).
//!
//! `cargo bench -p tutela-anonymise` prints MB/s for the text as short fields (as the guard sees
//! it) and as one long text (as a bulk scrubber might).

use std::hint::black_box;
use std::time::{Duration, Instant};

// A fixed seed: the same text on every run.
use tutela_anonymise::corpus::Rng;
use tutela_anonymise::{Pack, Recogniser};

const NAMES: &[&str] = &[
    "Ada", "Grace", "Jörg", "Amélie", "Kwame", "Siobhán", "Li", "Noor",
];
const WORDS: &[&str] = &[
    "the",
    "course",
    "was",
    "really",
    "useful",
    "but",
    "room",
    "too",
    "cold",
    "tutor",
    "explained",
    "everything",
    "clearly",
    "and",
    "I",
    "would",
    "recommend",
    "it",
    "to",
    "my",
    "colleagues",
    "at",
    "work",
    "next",
    "module",
    "please",
    "more",
    "examples",
    "thanks",
];

fn sentence(rng: &mut Rng) -> String {
    let mut s: Vec<String> = (0..4 + rng.below(12))
        .map(|_| rng.pick(WORDS).to_owned())
        .collect();
    let extra = match rng.below(12) {
        0 => format!(
            "call me on 0{} {} {}",
            rng.digits(2),
            rng.digits(4),
            rng.digits(4)
        ),
        1 => format!("{}.{}@example.org", rng.pick(NAMES), rng.digits(3)),
        2 => format!("order {}", rng.digits(9)),
        3 => {
            let n = 8 + rng.below(2);
            format!("Company no. {}", rng.digits(n))
        }
        4 => format!("on 2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        5 => format!("(+1 {} {} {})", rng.digits(3), rng.digits(3), rng.digits(4)),
        6 if rng.below(20) == 0 => format!(
            "my SSN is {}-{}-{}",
            rng.digits(3),
            rng.digits(2),
            rng.digits(4)
        ),
        7 => format!("ref QQ{}C", rng.digits(6)),
        _ => rng.pick(NAMES).to_owned(),
    };
    let at = rng.below(s.len());
    s.insert(at, extra);
    let mut s = s.join(" ");
    s.push_str(". ");
    s
}

/// Runs `f` repeatedly for about a second; the best pass's throughput over `bytes`, in MB/s.
fn throughput(bytes: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = Duration::MAX;
    let mut found = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let start = Instant::now();
        found = black_box(f());
        best = best.min(start.elapsed());
    }
    (bytes as f64 / 1e6 / best.as_secs_f64(), found)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pack = Pack::new(vec![
        Recogniser::us_ssn()?,
        Recogniser::pattern("nino", "[A-Z]{2}[0-9]{6}[A-D]")?,
    ])?;
    let mut rng = Rng::new(0x5eed_1234_abcd_9876);
    // Fields of a few sentences each, like survey answers and profile notes.
    let fields: Vec<String> = (0..20_000)
        .map(|_| (0..1 + rng.below(4)).map(|_| sentence(&mut rng)).collect())
        .collect();
    let bytes: usize = fields.iter().map(String::len).sum();
    let whole = fields.concat();

    let (per_field, found) = throughput(bytes, || fields.iter().map(|f| pack.find(f).len()).sum());
    println!(
        "recognise: {:.1} MB of text in {} fields: {per_field:.0} MB/s ({found} findings)",
        bytes as f64 / 1e6,
        fields.len()
    );
    let (whole_text, found) = throughput(bytes, || pack.find(&whole).len());
    println!("recognise: the same as one text: {whole_text:.0} MB/s ({found} findings)");
    let (first, _) = throughput(bytes, || {
        fields.iter().filter(|f| pack.first(f).is_some()).count()
    });
    println!("recognise: refusal check (first finding per field): {first:.0} MB/s");
    Ok(())
}
