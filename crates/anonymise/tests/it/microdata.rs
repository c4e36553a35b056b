//! k-anonymous microdata releases: hierarchies are validated; over random small datasets and
//! random hierarchies, every release meets k, ℓ and t (measured by the standalone check), keeps
//! suppression within its limit, and is the optimum of an exhaustive search of the lattice (or,
//! when no node qualifies, the search says so); and pycanon, an independent implementation,
//! measures the same k, ℓ and t on releases of a few thousand rows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;
use tutela_anonymise::microdata::{
    Hierarchy, HierarchyError, MicrodataError, QuasiIdentifier, Release, Sensitive, SensitiveKind,
    Spec, anonymise, check, release_at,
};

/// A fixed-seed xorshift, so a case is its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn hierarchies_are_validated() {
    let ok = Hierarchy::from_table(
        "country/v1",
        &[
            ["FR", "Western Europe", "Europe", "*"],
            ["DE", "Western Europe", "Europe", "*"],
            ["US", "NA", "Americas", "*"],
        ],
    )
    .unwrap();
    assert_eq!(ok.label(), "country/v1");
    assert_eq!(ok.height(), 3);
    assert_eq!(ok.generalise("US", 1), Some("NA"));
    assert_eq!(ok.generalise("DE", 2), Some("Europe"));
    assert_eq!(ok.generalise("XX", 1), None);
    assert_eq!(ok.generalise("FR", 4), None);
    assert!(!format!("{ok:?}").contains("FR"));

    // Two values in one region, in two continents: not a coarsening.
    let err = Hierarchy::from_table(
        "bad",
        &[["FR", "West", "Europe"], ["US", "West", "Americas"]],
    )
    .unwrap_err();
    assert_eq!(err, HierarchyError::NotCoarsening { level: 2, row: 1 });
    let err = Hierarchy::from_table("bad", &[["FR", "*"], ["FR", "*"]]).unwrap_err();
    assert_eq!(err, HierarchyError::Duplicate { row: 1 });
    let err = Hierarchy::from_table("bad", &[vec!["FR", "*"], vec!["DE"]]).unwrap_err();
    assert!(matches!(err, HierarchyError::Ragged { row: 1, .. }));
    let empty: &[[&str; 2]] = &[];
    assert_eq!(
        Hierarchy::from_table("bad", empty).unwrap_err(),
        HierarchyError::Empty
    );

    let age = Hierarchy::intervals("age/v1", 16..=80, &[5, 10, 20]).unwrap();
    assert_eq!(age.height(), 4);
    assert_eq!(age.generalise("16", 1), Some("15-19"));
    assert_eq!(age.generalise("16", 2), Some("10-19"));
    assert_eq!(age.generalise("64", 3), Some("60-79"));
    assert_eq!(age.generalise("80", 4), Some("*"));
    assert_eq!(
        Hierarchy::intervals("bad", 0..10, &[5, 7]).unwrap_err(),
        HierarchyError::Widths
    );
    let gender = Hierarchy::suppression("gender/v1", &["F", "M", "X"]).unwrap();
    assert_eq!(gender.height(), 1);
    assert_eq!(gender.generalise("X", 1), Some("*"));
}

/// A random hierarchy over `d` values: each level groups the previous level's values at random
/// (so it is a coarsening by construction); the top is sometimes `*`, sometimes not.
fn random_hierarchy(rng: &mut Rng, q: usize, d: usize) -> Hierarchy {
    let height = 1 + rng.below(3);
    let mut rows: Vec<Vec<String>> = (0..d).map(|v| vec![format!("q{q}v{v}")]).collect();
    let mut codes: Vec<usize> = (0..d).collect();
    let mut groups = d;
    for level in 1..=height {
        let top = level == height && rng.below(3) > 0;
        groups = if top { 1 } else { 1 + rng.below(groups) };
        let map: Vec<usize> = (0..d).map(|_| rng.below(groups)).collect();
        for (row, code) in rows.iter_mut().zip(&mut codes) {
            *code = map[*code];
            row.push(if top {
                "*".to_owned()
            } else {
                format!("l{level}g{code}")
            });
        }
    }
    Hierarchy::from_table(format!("q{q}/random"), &rows).unwrap()
}

struct Case {
    rows: Vec<Vec<String>>,
    spec: Spec,
}

fn case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let n_qi = 1 + rng.below(3);
    let domains: Vec<usize> = (0..n_qi).map(|_| 1 + rng.below(5)).collect();
    let quasi: Vec<QuasiIdentifier> = domains
        .iter()
        .enumerate()
        .map(|(q, &d)| QuasiIdentifier {
            column: q,
            hierarchy: random_hierarchy(&mut rng, q, d),
        })
        .collect();
    let n_s = 1 + rng.below(4);
    let ordinal = rng.below(2) == 0;
    let n = 1 + rng.below(40);
    let rows = (0..n)
        .map(|_| {
            let mut row: Vec<String> = domains
                .iter()
                .enumerate()
                .map(|(q, &d)| format!("q{q}v{}", rng.below(d)))
                .collect();
            row.push((1 + rng.below(n_s)).to_string());
            row
        })
        .collect();
    let kind = if ordinal {
        SensitiveKind::Ordinal((1..=4).map(|s: i32| s.to_string()).collect())
    } else {
        SensitiveKind::Categorical
    };
    let mut spec = Spec::new(quasi, 1 + rng.below(4))
        .sensitive(Sensitive { column: n_qi, kind })
        .l(1 + rng.below(3))
        .max_suppression([0.0, 0.1, 0.3][rng.below(3)]);
    // Thresholds no distance of a class of ≤ 40 rows is exactly equal to, so rounding cannot
    // decide them.
    if rng.below(2) == 0 {
        spec = spec.t([0.2137, 0.3519, 0.4783][rng.below(3)]);
    }
    Case { rows, spec }
}

/// What an exhaustive search finds at one node: the rows it releases and its measures.
struct Node {
    levels: Vec<usize>,
    released: Vec<Vec<String>>,
    suppressed: usize,
    t: Option<f64>,
}

/// Generalises and suppresses by hand (strings, the hierarchies' `generalise`), independently of
/// the engine.
fn at_node(c: &Case, levels: &[usize]) -> Node {
    let sens = c.spec.sensitive.as_ref().unwrap();
    let mut classes: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    for row in &c.rows {
        let key: Vec<String> = c
            .spec
            .quasi
            .iter()
            .zip(levels)
            .map(|(q, &l)| {
                q.hierarchy
                    .generalise(&row[q.column], l)
                    .unwrap()
                    .to_owned()
            })
            .collect();
        classes
            .entry(key)
            .or_default()
            .push(row[sens.column].clone());
    }
    let mut released = Vec::new();
    let mut suppressed = 0;
    for (key, values) in classes {
        let mut distinct = values.clone();
        distinct.sort();
        distinct.dedup();
        if values.len() < c.spec.k || distinct.len() < c.spec.l {
            suppressed += values.len();
            continue;
        }
        for v in values {
            let mut row = key.clone();
            row.push(v);
            released.push(row);
        }
    }
    let t = if released.is_empty() {
        None
    } else {
        let n_qi = c.spec.quasi.len();
        let s = Sensitive {
            column: n_qi,
            kind: sens.kind.clone(),
        };
        Some(
            check(&released, &(0..n_qi).collect::<Vec<_>>(), &s)
                .unwrap()
                .t,
        )
    };
    Node {
        levels: levels.to_vec(),
        released,
        suppressed,
        t,
    }
}

fn all_nodes(heights: &[usize]) -> Vec<Vec<usize>> {
    let mut nodes = vec![vec![]];
    for &h in heights {
        nodes = nodes
            .into_iter()
            .flat_map(|n| {
                (0..=h).map(move |l| {
                    let mut m = n.clone();
                    m.push(l);
                    m
                })
            })
            .collect();
    }
    nodes
}

/// Precision loss as an exact fraction over the product of the heights.
fn loss(levels: &[usize], heights: &[usize]) -> u64 {
    let product: u64 = heights
        .iter()
        .filter(|&&h| h > 0)
        .map(|&h| h as u64)
        .product();
    levels
        .iter()
        .zip(heights)
        .filter(|&(_, &h)| h > 0)
        .map(|(&l, &h)| l as u64 * (product / h as u64))
        .sum()
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

fn release_rows(r: &Release) -> Vec<Vec<String>> {
    r.rows()
        .map(|row| row.into_iter().map(str::to_owned).collect())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn releases_meet_the_spec_and_are_optimal(seed in any::<u64>()) {
        let c = case(seed);
        let n = c.rows.len();
        let limit = ((c.spec.max_suppression * n as f64) + 1e-9).floor() as usize;
        let heights: Vec<usize> = c.spec.quasi.iter().map(|q| q.hierarchy.height()).collect();
        // The exhaustive optimum: least loss, then fewest suppressed, then first levels.
        let best = all_nodes(&heights)
            .into_iter()
            .map(|levels| at_node(&c, &levels))
            .filter(|node| {
                !node.released.is_empty()
                    && node.suppressed <= limit
                    && c.spec.t.is_none_or(|t| node.t.unwrap() <= t)
            })
            .min_by_key(|node| (loss(&node.levels, &heights), node.suppressed, node.levels.clone()));
        let got = anonymise(&c.rows, &c.spec);
        let Some(best) = best else {
            prop_assert!(
                matches!(got, Err(MicrodataError::Unsatisfiable { .. })),
                "no node qualifies, yet: {got:?}"
            );
            return Ok(());
        };
        let release = got.unwrap();
        let r = release.record();
        prop_assert_eq!(&r.levels, &best.levels);
        prop_assert_eq!(r.suppressed, best.suppressed);
        prop_assert!(r.suppressed <= limit);
        prop_assert_eq!(r.suppression_limit, limit);
        prop_assert_eq!(r.rows_in, n);
        prop_assert_eq!(r.rows_released + r.suppressed, n);
        let rows = release_rows(&release);
        prop_assert_eq!(rows.len(), r.rows_released);
        prop_assert_eq!(sorted(rows.clone()), sorted(best.released.clone()));

        // Measured by the standalone check: every class meets k, ℓ and t.
        let n_qi = c.spec.quasi.len();
        let sens = Sensitive { column: n_qi, kind: c.spec.sensitive.as_ref().unwrap().kind.clone() };
        let m = check(&rows, &(0..n_qi).collect::<Vec<_>>(), &sens).unwrap();
        prop_assert!(m.k >= c.spec.k);
        prop_assert!(m.l >= c.spec.l);
        prop_assert_eq!(m.k, r.k);
        prop_assert_eq!(m.l, r.l);
        prop_assert!((m.t - r.t.unwrap()).abs() < 1e-9);
        if let Some(t) = c.spec.t {
            prop_assert!(m.t <= t);
        }

        // The recorded levels, repeated, give the same release.
        let again = release_at(&c.rows, &c.spec, &r.levels).unwrap();
        prop_assert_eq!(release_rows(&again), rows);
    }
}

#[test]
fn no_qualifying_node_is_an_error() {
    let rows = [["a", "1"], ["b", "1"], ["a", "2"]];
    let quasi = vec![QuasiIdentifier {
        column: 0,
        hierarchy: Hierarchy::suppression("x/v1", &["a", "b"]).unwrap(),
    }];
    let spec = Spec::new(quasi, 4);
    let err = anonymise(&rows, &spec).unwrap_err();
    assert_eq!(
        err,
        MicrodataError::Unsatisfiable {
            k: 4,
            l: 1,
            t: None,
            limit: 0
        }
    );
    assert!(err.to_string().contains("k = 4"));
    // A value outside its hierarchy is refused, without quoting it.
    let spec = Spec::new(
        vec![QuasiIdentifier {
            column: 0,
            hierarchy: Hierarchy::suppression("x/v1", &["a"]).unwrap(),
        }],
        1,
    );
    let err = anonymise(&rows, &spec).unwrap_err();
    assert_eq!(err, MicrodataError::UnknownValue { row: 1, column: 0 });
    assert!(!err.to_string().contains("\"b\""));
}

#[test]
fn debug_of_a_release_is_redacted() {
    let rows = [["secret-a", "1"], ["secret-a", "2"]];
    let quasi = vec![QuasiIdentifier {
        column: 0,
        hierarchy: Hierarchy::suppression("x/v1", &["secret-a"]).unwrap(),
    }];
    let release = anonymise(&rows, &Spec::new(quasi, 2)).unwrap();
    let debug = format!("{release:?}");
    assert!(debug.contains("[redacted]"));
    assert!(!debug.contains("secret"));
    assert_eq!(release.levels(), &[0]);
}

// pycanon, the independent oracle.

/// `<repo>/.venv-oracles/bin/python` with pycanon importable, installed on first use (once per
/// test binary: tests run in parallel threads, and two pip runs into one venv would race). A venv
/// of its own: pycanon's pins conflict with checkov's in the tools venv `.venv`.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = root.join(".venv-oracles");
        let python = venv.join("bin/python");
        let importable = |python: &Path| {
            Command::new(python)
                .args(["-c", "import pycanon"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !importable(&python) {
            if !python.exists() {
                let status = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 -m venv (is python3 installed?)");
                assert!(
                    status.success(),
                    "python3 -m venv {} failed",
                    venv.display()
                );
            }
            let status = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "pycanon==1.3.6"])
                .status()
                .expect("run pip");
            assert!(
                status.success(),
                "pip install pycanon==1.3.6 failed (needs PyPI)"
            );
            assert!(importable(&python), "pycanon installed but not importable");
        }
        python
    })
}

#[derive(Debug)]
struct Oracle {
    k: usize,
    l: usize,
    t: f64,
}

fn pycanon(csv: &Path, qi: &[&str], sa: &str, kind: &SensitiveKind) -> Oracle {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/pycanon_check.py");
    let kind = match kind {
        SensitiveKind::Categorical => "categorical",
        SensitiveKind::Ordinal(_) => "ordinal",
    };
    let out = Command::new(python())
        .arg(script)
        .arg(csv)
        .args(["--qi", &qi.join(","), "--sa", sa, "--kind", kind])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pycanon_check.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // {"k": 5, "l": 2, "t": 0.1, "seconds": 0.2}: flat, numbers only.
    let json = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| -> f64 {
        let start = json.find(&format!("\"{name}\": ")).unwrap() + name.len() + 4;
        let rest = &json[start..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].trim().parse().unwrap()
    };
    Oracle {
        k: field("k") as usize,
        l: field("l") as usize,
        t: field("t"),
    }
}

const COUNTRIES: &[[&str; 4]] = &[
    ["FR", "Western Europe", "Europe", "*"],
    ["DE", "Western Europe", "Europe", "*"],
    ["ES", "Southern Europe", "Europe", "*"],
    ["IT", "Southern Europe", "Europe", "*"],
    ["US", "NA", "Americas", "*"],
    ["CA", "NA", "Americas", "*"],
    ["BR", "Latin America", "Americas", "*"],
    ["SN", "Western Africa", "Africa", "*"],
    ["KE", "Eastern Africa", "Africa", "*"],
    ["JP", "Eastern Asia", "Asia", "*"],
];
const OUTCOMES: &[&str] = &["distinction", "pass", "fail", "withdrawn, late"];

/// Rows of age, country, gender, course and a sensitive value (a rating 1–5, or an outcome).
fn fixture(seed: u64, n: usize, ordinal: bool) -> Vec<Vec<String>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let age = 16 + rng.below(65).min(rng.below(65));
            let sensitive = if ordinal {
                (1 + rng.below(5).max(rng.below(5))).to_string()
            } else {
                OUTCOMES[rng.below(OUTCOMES.len())].to_owned()
            };
            vec![
                age.to_string(),
                COUNTRIES[rng.below(COUNTRIES.len()).min(rng.below(COUNTRIES.len()))][0].to_owned(),
                ["F", "M", "X"][rng.below(3)].to_owned(),
                format!("course-{}", rng.below(6)),
                sensitive,
            ]
        })
        .collect()
}

fn oracle_spec(ordinal: bool) -> Spec {
    let courses: Vec<[String; 3]> = (0..6)
        .map(|i| {
            [
                format!("course-{i}"),
                format!("track-{}", i % 2),
                "*".to_owned(),
            ]
        })
        .collect();
    let kind = if ordinal {
        SensitiveKind::Ordinal((1..=5).map(|r: i32| r.to_string()).collect())
    } else {
        SensitiveKind::Categorical
    };
    Spec::new(
        vec![
            QuasiIdentifier {
                column: 0,
                hierarchy: Hierarchy::intervals("age/v1", 16..=80, &[5, 10, 20]).unwrap(),
            },
            QuasiIdentifier {
                column: 1,
                hierarchy: Hierarchy::from_table("country/v1", COUNTRIES).unwrap(),
            },
            QuasiIdentifier {
                column: 2,
                hierarchy: Hierarchy::suppression("gender/v1", &["F", "M", "X"]).unwrap(),
            },
            QuasiIdentifier {
                column: 3,
                hierarchy: Hierarchy::from_table("course/v1", &courses).unwrap(),
            },
        ],
        1,
    )
    .sensitive(Sensitive { column: 4, kind })
}

#[test]
fn pycanon_agrees_on_releases() {
    let dir = tempfile::tempdir().unwrap();
    let qi = ["age", "country", "gender", "course"];
    let header = ["age", "country", "gender", "course", "answer"];
    // Seed, rows, ordinal, k, ℓ, t, suppression.
    type Fixture = (u64, usize, bool, usize, usize, Option<f64>, f64);
    let cases: [Fixture; 5] = [
        (1, 500, true, 3, 1, None, 0.0),
        (2, 2000, true, 5, 2, None, 0.05),
        (3, 3000, false, 10, 3, None, 0.05),
        (4, 2500, false, 5, 2, Some(0.15), 0.05),
        (5, 2000, true, 4, 2, Some(0.1), 0.02),
    ];
    for (seed, n, ordinal, k, l, t, suppression) in cases {
        let rows = fixture(seed, n, ordinal);
        let mut spec = oracle_spec(ordinal).l(l).max_suppression(suppression);
        spec.k = k;
        spec.t = t;
        let release = anonymise(&rows, &spec).unwrap();
        let r = release.record();
        let csv = dir.path().join(format!("release-{seed}.csv"));
        release
            .write_csv(&header, std::fs::File::create(&csv).unwrap())
            .unwrap();
        let oracle = pycanon(&csv, &qi, "answer", &spec.sensitive.as_ref().unwrap().kind);
        assert_eq!(oracle.k, r.k, "k, case {seed}: {r:?}");
        assert_eq!(oracle.l, r.l, "l, case {seed}: {r:?}");
        let ours = r.t.unwrap();
        assert!(
            (oracle.t - ours).abs() < 1e-9,
            "t, case {seed}: pycanon {} vs {ours}",
            oracle.t
        );
        assert!(r.k >= k && r.l >= l && t.is_none_or(|t| ours <= t));
        assert!(r.suppressed <= r.suppression_limit);
    }
}
