//! Time to make a k-anonymous release (k = 5, distinct 2-diversity on a 1–5 rating, at most 5 %
//! of rows suppressed) of 100,000 and 1,000,000 survey rows with five quasi-identifiers (age,
//! country, organisation, gender, cohort), against the targets of issue 16 (0.5 s and 5 s on one
//! core); then the time of the standalone check on the 1M-row release beside pycanon's on the
//! same release, when `<repo>/.venv-oracles/bin/python` has pycanon (the integration tests install it).
//!
//! `cargo bench -p tutela-anonymise --bench microdata` (pycanon takes minutes on 1M rows:
//! `TUTELA_BENCH_PYCANON=0` skips it)
//!
//! The data are generated with a fixed seed, skewed as enrolments are: most learners young, a
//! few countries and organisations with most of them, ratings mostly 4.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

// A fixed seed: the same rows on every run.
use tutela_anonymise::corpus::Rng;
use tutela_anonymise::microdata::{
    Hierarchy, QuasiIdentifier, Release, Sensitive, SensitiveKind, Spec, anonymise, check,
};

/// Skewed towards 0: the square of a uniform.
fn skewed(rng: &mut Rng, n: usize) -> usize {
    let u = rng.unit();
    ((u * u * n as f64) as usize).min(n - 1)
}

/// Country, region, continent.
const COUNTRIES: &[[&str; 3]] = &[
    ["FR", "Western Europe", "Europe"],
    ["DE", "Western Europe", "Europe"],
    ["BE", "Western Europe", "Europe"],
    ["NL", "Western Europe", "Europe"],
    ["CH", "Western Europe", "Europe"],
    ["GB", "Northern Europe", "Europe"],
    ["IE", "Northern Europe", "Europe"],
    ["SE", "Northern Europe", "Europe"],
    ["NO", "Northern Europe", "Europe"],
    ["ES", "Southern Europe", "Europe"],
    ["IT", "Southern Europe", "Europe"],
    ["PT", "Southern Europe", "Europe"],
    ["PL", "Eastern Europe", "Europe"],
    ["RO", "Eastern Europe", "Europe"],
    ["US", "Northern America", "Americas"],
    ["CA", "Northern America", "Americas"],
    ["MX", "Latin America", "Americas"],
    ["BR", "Latin America", "Americas"],
    ["AR", "Latin America", "Americas"],
    ["MA", "Northern Africa", "Africa"],
    ["TN", "Northern Africa", "Africa"],
    ["SN", "Western Africa", "Africa"],
    ["NG", "Western Africa", "Africa"],
    ["KE", "Eastern Africa", "Africa"],
    ["IN", "Southern Asia", "Asia"],
    ["CN", "Eastern Asia", "Asia"],
    ["JP", "Eastern Asia", "Asia"],
    ["VN", "South-eastern Asia", "Asia"],
    ["AU", "Oceania", "Oceania"],
    ["NZ", "Oceania", "Oceania"],
];
const GENDERS: &[&str] = &["F", "M", "X"];
const COHORTS: &[&str] = &[
    "2024-spring",
    "2024-autumn",
    "2025-spring",
    "2025-autumn",
    "2026-spring",
];
const RATINGS: &[&str] = &["1", "2", "3", "4", "5"];
const HEADER: &[&str] = &[
    "age",
    "country",
    "organisation",
    "gender",
    "cohort",
    "rating",
];

struct Data {
    ages: Vec<String>,
    orgs: Vec<String>,
    spec: Spec,
}

fn data() -> Data {
    let ages: Vec<String> = (16..=80).map(|a: i64| a.to_string()).collect();
    let orgs: Vec<String> = (0..200).map(|i| format!("org-{i:03}")).collect();
    let org_table: Vec<[String; 3]> = orgs
        .iter()
        .enumerate()
        .map(|(i, o)| [o.clone(), format!("sector-{:02}", i % 12), "*".to_owned()])
        .collect();
    let country_table: Vec<[&str; 4]> = COUNTRIES
        .iter()
        .map(|[c, r, k]| [*c, *r, *k, "*"])
        .collect();
    let quasi = |column, hierarchy| QuasiIdentifier { column, hierarchy };
    let hierarchies = (
        Hierarchy::intervals("age/v1", 16..=80, &[5, 10, 20]),
        Hierarchy::from_table("country/v1", &country_table),
        Hierarchy::from_table("organisation/v1", &org_table),
        Hierarchy::suppression("gender/v1", GENDERS),
        Hierarchy::suppression("cohort/v1", COHORTS),
    );
    let (Ok(age), Ok(country), Ok(org), Ok(gender), Ok(cohort)) = hierarchies else {
        unreachable!("the bench's hierarchies are valid")
    };
    let spec = Spec::new(
        vec![
            quasi(0, age),
            quasi(1, country),
            quasi(2, org),
            quasi(3, gender),
            quasi(4, cohort),
        ],
        5,
    )
    .sensitive(Sensitive {
        column: 5,
        kind: SensitiveKind::Ordinal(RATINGS.iter().map(|r| (*r).to_owned()).collect()),
    })
    .l(2)
    .max_suppression(0.05);
    Data { ages, orgs, spec }
}

fn rows(d: &Data, n: usize, seed: u64) -> Vec<[&str; 6]> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let age = skewed(&mut rng, d.ages.len());
            let gender = match rng.below(100) {
                0..48 => 0,
                48..96 => 1,
                _ => 2,
            };
            let rating = match rng.below(100) {
                0..5 => 0,
                5..15 => 1,
                15..35 => 2,
                35..75 => 3,
                _ => 4,
            };
            [
                d.ages[age].as_str(),
                COUNTRIES[skewed(&mut rng, COUNTRIES.len())][0],
                d.orgs[skewed(&mut rng, d.orgs.len())].as_str(),
                GENDERS[gender],
                rng.pick(COHORTS),
                RATINGS[rating],
            ]
        })
        .collect()
}

/// The best of `runs` anonymisations, and the release.
fn time_anonymise(rows: &[[&str; 6]], spec: &Spec, runs: usize) -> (Duration, Release) {
    let mut best = Duration::MAX;
    let mut release = None;
    for _ in 0..runs {
        let start = Instant::now();
        let r = anonymise(black_box(rows), spec);
        best = best.min(start.elapsed());
        release = Some(r);
    }
    match release {
        Some(Ok(r)) => (best, r),
        Some(Err(e)) => unreachable!("the bench's release fails: {e}"),
        None => unreachable!("at least one run"),
    }
}

fn report(n: usize, took: Duration, target: Duration, release: &Release) {
    let r = release.record();
    println!(
        "{n:>9} rows: {:>8.3} s (target {:.1} s: {}); levels {:?}, {} classes, k = {}, l = {}, t = {:.4}, suppressed {} (limit {}), loss {:.3}, {} node evaluations",
        took.as_secs_f64(),
        target.as_secs_f64(),
        if took <= target { "met" } else { "MISSED" },
        r.levels,
        r.classes,
        r.k,
        r.l,
        r.t.unwrap_or(f64::NAN),
        r.suppressed,
        r.suppression_limit,
        r.loss,
        r.nodes_evaluated,
    );
}

fn python() -> Option<PathBuf> {
    if std::env::var("TUTELA_BENCH_PYCANON").is_ok_and(|v| v == "0") {
        return None;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv-oracles/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import pycanon"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

fn main() {
    let d = data();
    for (n, target, runs) in [
        (100_000, Duration::from_millis(500), 5),
        (1_000_000, Duration::from_secs(5), 3),
    ] {
        let rows = rows(&d, n, 0x5eed_0016 + n as u64);
        let (took, release) = time_anonymise(&rows, &d.spec, runs);
        report(n, took, target, &release);
        if n != 1_000_000 {
            continue;
        }
        let released: Vec<Vec<&str>> = release.rows().collect();
        let sensitive = Sensitive {
            column: 5,
            kind: SensitiveKind::Ordinal(RATINGS.iter().map(|r| (*r).to_owned()).collect()),
        };
        let start = Instant::now();
        let measures = check(&released, &[0, 1, 2, 3, 4], &sensitive);
        let ours = start.elapsed();
        let Ok(measures) = measures else {
            unreachable!("the release is not empty")
        };
        println!(
            "check of the {} released rows: {:.3} s (k = {}, l = {}, t = {:.6})",
            released.len(),
            ours.as_secs_f64(),
            measures.k,
            measures.l,
            measures.t
        );
        let Some(python) = python() else {
            println!(
                "pycanon: skipped, or not installed in .venv-oracles (cargo test -p tutela-anonymise installs it)"
            );
            continue;
        };
        let dir =
            std::env::temp_dir().join(format!("tutela-microdata-bench-{}", std::process::id()));
        let csv = dir.join("release.csv");
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            release.write_csv(
                HEADER,
                std::io::BufWriter::new(std::fs::File::create(&csv)?),
            )
        });
        if let Err(e) = written {
            println!("pycanon: could not write the release: {e}");
            continue;
        }
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/pycanon_check.py");
        let out = Command::new(python)
            .arg(script)
            .arg(&csv)
            .args([
                "--qi",
                "age,country,organisation,gender,cohort",
                "--sa",
                "rating",
                "--kind",
                "ordinal",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        match out {
            Ok(o) if o.status.success() => {
                let json = String::from_utf8_lossy(&o.stdout);
                let seconds = json
                    .split("\"seconds\": ")
                    .nth(1)
                    .and_then(|s| s.trim().trim_end_matches('}').parse::<f64>().ok());
                println!("pycanon on the same release: {}", json.trim());
                if let Some(s) = seconds {
                    println!(
                        "pycanon {:.3} s vs tutela check {:.3} s: tutela {:.0}x faster",
                        s,
                        ours.as_secs_f64(),
                        s / ours.as_secs_f64()
                    );
                }
            }
            Ok(o) => println!("pycanon failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => println!("pycanon could not run: {e}"),
        }
    }
}
