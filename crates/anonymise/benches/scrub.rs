//! Throughput and accuracy of the survey scrubber on the generated labelled corpus
//! (`tutela_anonymise::corpus`, 2,000 known names), and of two Python baselines on the same
//! comments: Presidio (regex recognisers, blank spaCy pipeline) and scrubadub (en_GB).
//!
//! `cargo bench -p tutela-anonymise --bench scrub` prints, single thread:
//! - MB/s of `Scrubber::scrub` comment by comment (as the survey service calls it), best pass of
//!   several, and the same over the corpus as one text;
//! - the precision/recall table per kind;
//! - each baseline's MB/s, tutela's ratio to it, and its precision/recall, on the first
//!   `TUTELA_BASELINE_BYTES` (default 100 kB) of the same comments: the baselines are too slow
//!   for the whole corpus. They need `<repo>/.venv-oracles/bin/python` with
//!   `crates/anonymise/bench-py/requirements.txt`; without it the bench says how to install them
//!   and skips them.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tutela_anonymise::{Scrubber, corpus};

/// Runs `f` repeatedly for about `secs` seconds; the best pass's throughput over `bytes`, in MB/s.
fn throughput(bytes: usize, secs: u64, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = Duration::MAX;
    let mut found = 0;
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until || best == Duration::MAX {
        let start = Instant::now();
        found = black_box(f());
        best = best.min(start.elapsed());
    }
    (bytes as f64 / 1e6 / best.as_secs_f64(), found)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = corpus::generate(0x000b_e7c4, 2_000_000);
    let bytes = corpus.bytes();
    let start = Instant::now();
    let scrubber = Scrubber::new(&corpus.known_names)?;
    println!(
        "scrub: {} known names, scrubber built in {:.1} ms",
        corpus.known_names.len(),
        start.elapsed().as_secs_f64() * 1e3
    );

    let (per_comment, hits) = throughput(bytes, 5, || {
        corpus
            .comments
            .iter()
            .map(|c| scrubber.scrub(&c.text).hits.len())
            .sum()
    });
    println!(
        "scrub: {:.2} MB in {} comments: {per_comment:.1} MB/s ({hits} hits)",
        bytes as f64 / 1e6,
        corpus.comments.len()
    );
    let whole: String = corpus
        .comments
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let (whole_rate, _) = throughput(whole.len(), 3, || scrubber.scrub(&whole).hits.len());
    println!("scrub: the same as one text: {whole_rate:.1} MB/s");

    let eval = corpus::evaluate(&scrubber, &corpus.comments);
    println!("\ntutela, {:.2} MB:\n{eval}\n", bytes as f64 / 1e6);

    baselines(&corpus, per_comment)
}

/// Runs bench-py/baselines.py on the same comments, if its virtual environment is there.
fn baselines(corpus: &corpus::Corpus, tutela: f64) -> Result<(), Box<dyn std::error::Error>> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = crate_dir.join("../..").canonicalize()?;
    let python = repo.join(".venv-oracles/bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import presidio_analyzer, scrubadub"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        println!(
            "baselines skipped: no {} with presidio-analyzer and scrubadub. Install them with\n  \
             cd {} && python3 -m venv .venv-oracles && .venv-oracles/bin/pip install -r crates/anonymise/bench-py/requirements.txt",
            python.display(),
            repo.display()
        );
        return Ok(());
    }
    let max_bytes: usize = std::env::var("TUTELA_BASELINE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tutela-scrub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (comments, names) = (dir.join("corpus.jsonl"), dir.join("names.txt"));
    std::fs::write(&comments, corpus.to_jsonl())?;
    std::fs::write(&names, corpus.known_names.join("\n"))?;
    println!(
        "baselines on the first {} kB of the same comments (they are too slow for all of it):",
        max_bytes / 1000
    );
    let output = Command::new(&python)
        .arg(crate_dir.join("bench-py/baselines.py"))
        .arg(&comments)
        .arg(&names)
        .args(["--max-bytes", &max_bytes.to_string()])
        .output()?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        match line
            .strip_prefix("RESULT ")
            .map(|r| r.split(' ').collect::<Vec<_>>())
        {
            Some(fields) if fields.len() == 3 => {
                let rate: f64 = fields[1].parse().unwrap_or(f64::NAN);
                println!(
                    "{}: {rate:.4} MB/s on {} bytes; tutela is {:.0}x faster",
                    fields[0],
                    fields[2],
                    tutela / rate
                );
            }
            _ => println!("{line}"),
        }
    }
    if !output.status.success() {
        println!(
            "baselines failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
