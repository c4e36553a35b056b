//! k-anonymous microdata releases: rows in memory in, a release out, every class of equal
//! quasi-identifier values holding at least k rows, at least ℓ distinct sensitive values, and
//! (when asked) a sensitive distribution within t of the release's.
//!
//! # Model
//!
//! - **Full-domain generalisation**: each quasi-identifier is recoded to one level of its
//!   [`Hierarchy`] for every row (consistent recoding: a value always becomes the same
//!   generalised value), chosen from the lattice of level vectors.
//! - **Suppression**: at a node, the rows of classes smaller than k, or with fewer than ℓ
//!   distinct sensitive values, are removed; a node qualifies when at most
//!   `⌊max_suppression × rows⌋` rows are, and some are left. t is then measured on what is
//!   released, against the release's own sensitive distribution (as an auditor of the release,
//!   such as pycanon, measures it); classes are not suppressed for t.
//! - **Metric**: precision loss (Sweeney's Prec), the mean over quasi-identifiers of
//!   `level / height`; ties go to the node suppressing fewest rows, then to the first level
//!   vector in lexicographic order. Prec depends on the node alone and grows with every step of
//!   generalisation, so the optimum is a minimal qualifying node, which is what makes pruning
//!   exact.
//! - **Search**: Flash (Kohlmayer et al. 2012, ARX's default): paths upwards through unchecked
//!   nodes, a binary search on each, predictive tagging (a node meeting k and ℓ means every
//!   generalisation of it does, since rows suppressed at a generalisation were suppressed
//!   below it; a node failing means every specialisation fails). t-closeness is not monotone
//!   (with suppression, or even without), so every k/ℓ candidate is checked for t, in order of
//!   loss, until a loss level has one that meets it.
//!
//! Rows are encoded once to small integer codes and pre-aggregated into distinct
//! (quasi-identifier tuple, sensitive value) units with counts; a node is evaluated on units,
//! rolled up from a recently evaluated node below it through per-level lookup tables.
//!
//! The release holds the quasi-identifiers and the sensitive attribute only (no other column
//! of the input), listed class by class, so the order of the input (by learner, by date) does
//! not carry into it.

mod check;
mod hierarchy;
mod lattice;

use std::fmt;
use std::io::{self, Write};

pub use check::{Measures, check};
pub use hierarchy::{ANY, Hierarchy, HierarchyError};

use lattice::{Engine, Lattice, Outcome, Unit};

/// Why no release could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MicrodataError {
    /// No quasi-identifier was named.
    #[error("no quasi-identifiers")]
    NoQuasiIdentifiers,
    /// A parameter is out of range (the message says which).
    #[error("invalid parameter: {0}")]
    Parameter(&'static str),
    /// There are no rows.
    #[error("no rows")]
    NoRows,
    /// More rows than counts hold (u32).
    #[error("too many rows")]
    TooManyRows,
    /// A row lacks a column named.
    #[error("row {row} lacks a column named")]
    ShortRow {
        /// The row (0-based).
        row: usize,
    },
    /// A quasi-identifier's value is not in its hierarchy (the value is not quoted: it is data).
    #[error("row {row}: the value in column {column} is not in its hierarchy")]
    UnknownValue {
        /// The row (0-based).
        row: usize,
        /// The column.
        column: usize,
    },
    /// An ordinal sensitive value is not in the order given.
    #[error("row {row}: the sensitive value is not in the order given")]
    UnknownSensitive {
        /// The row (0-based).
        row: usize,
    },
    /// The quasi-identifiers' values do not pack into a 64-bit key.
    #[error("the quasi-identifiers have too many values to pack into 64 bits")]
    KeyTooWide,
    /// The lattice of level vectors is too large to search.
    #[error("the lattice of generalisation levels has more than {max} nodes")]
    LatticeTooLarge {
        /// The largest size searched.
        max: usize,
    },
    /// `levels` do not fit the quasi-identifiers' hierarchies.
    #[error("the levels do not fit the hierarchies")]
    Levels,
    /// No node of the lattice (or not the node asked for) meets the requirements.
    #[error(
        "no generalisation meets k = {k}, distinct l = {l}{} with at most {limit} rows suppressed",
        t.map(|t| format!(", t = {t}")).unwrap_or_default()
    )]
    Unsatisfiable {
        /// k asked for.
        k: usize,
        /// ℓ asked for.
        l: usize,
        /// t asked for.
        t: Option<f64>,
        /// Rows that could have been suppressed.
        limit: u64,
    },
}

/// A quasi-identifier: a column and the hierarchy generalising it.
#[derive(Debug, Clone)]
pub struct QuasiIdentifier {
    /// The column of the input rows.
    pub column: usize,
    /// Its hierarchy; every value of the column must be in it.
    pub hierarchy: Hierarchy,
}

/// How distances between sensitive values are measured for t-closeness.
#[derive(Debug, Clone, PartialEq)]
pub enum SensitiveKind {
    /// Unordered (a free category): equal distance between any two values.
    Categorical,
    /// Ordered (a rating), lowest first: every value of the column must be listed. Distances
    /// are ordered, between the values present in the release.
    Ordinal(Vec<String>),
}

/// The sensitive attribute (the survey answer).
#[derive(Debug, Clone)]
pub struct Sensitive {
    /// The column of the input rows.
    pub column: usize,
    /// Categorical or ordinal.
    pub kind: SensitiveKind,
}

/// What a release must meet.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The quasi-identifiers, in the order of the released columns.
    pub quasi: Vec<QuasiIdentifier>,
    /// The sensitive attribute, released after them; required for ℓ > 1 and for t.
    pub sensitive: Option<Sensitive>,
    /// Every released class holds at least `k` rows (≥ 1).
    pub k: usize,
    /// … and at least `l` distinct sensitive values (≥ 1).
    pub l: usize,
    /// … and, when set, a sensitive distribution within `t` of the release's (0..=1).
    pub t: Option<f64>,
    /// The fraction of rows that may be suppressed (0..=1).
    pub max_suppression: f64,
}

impl Spec {
    /// k-anonymity over `quasi`, no sensitive attribute, no suppression.
    pub fn new(quasi: Vec<QuasiIdentifier>, k: usize) -> Self {
        Self {
            quasi,
            sensitive: None,
            k,
            l: 1,
            t: None,
            max_suppression: 0.0,
        }
    }

    /// With a sensitive attribute.
    pub fn sensitive(mut self, sensitive: Sensitive) -> Self {
        self.sensitive = Some(sensitive);
        self
    }

    /// With distinct ℓ-diversity.
    pub fn l(mut self, l: usize) -> Self {
        self.l = l;
        self
    }

    /// With t-closeness.
    pub fn t(mut self, t: f64) -> Self {
        self.t = Some(t);
        self
    }

    /// With up to this fraction of rows suppressed.
    pub fn max_suppression(mut self, fraction: f64) -> Self {
        self.max_suppression = fraction;
        self
    }

    fn validate(&self) -> Result<(), MicrodataError> {
        if self.quasi.is_empty() {
            return Err(MicrodataError::NoQuasiIdentifiers);
        }
        if self.k == 0 {
            return Err(MicrodataError::Parameter("k must be at least 1"));
        }
        if self.l == 0 {
            return Err(MicrodataError::Parameter("l must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.max_suppression) {
            return Err(MicrodataError::Parameter(
                "max_suppression must be within 0..=1",
            ));
        }
        if let Some(t) = self.t
            && !(0.0..=1.0).contains(&t)
        {
            return Err(MicrodataError::Parameter("t must be within 0..=1"));
        }
        if self.sensitive.is_none() && (self.l > 1 || self.t.is_some()) {
            return Err(MicrodataError::Parameter(
                "l > 1 and t need a sensitive attribute",
            ));
        }
        let mut columns: Vec<usize> = self.quasi.iter().map(|q| q.column).collect();
        columns.extend(self.sensitive.as_ref().map(|s| s.column));
        columns.sort_unstable();
        if columns.windows(2).any(|w| w[0] == w[1]) {
            return Err(MicrodataError::Parameter("a column is named twice"));
        }
        Ok(())
    }
}

/// What a release record keeps: the parameters asked for, the recoding used (hierarchy labels
/// and levels), and what was achieved. It holds no data.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseRecord {
    /// The label of each quasi-identifier's hierarchy.
    pub hierarchies: Vec<String>,
    /// The level each quasi-identifier was generalised to.
    pub levels: Vec<usize>,
    /// The height of each hierarchy.
    pub heights: Vec<usize>,
    /// k asked for.
    pub k_required: usize,
    /// ℓ asked for.
    pub l_required: usize,
    /// t asked for.
    pub t_required: Option<f64>,
    /// The fraction of rows that could be suppressed.
    pub max_suppression: f64,
    /// The rows that could be suppressed (`⌊max_suppression × rows_in⌋`).
    pub suppression_limit: usize,
    /// Rows in the input.
    pub rows_in: usize,
    /// Rows released.
    pub rows_released: usize,
    /// Rows suppressed.
    pub suppressed: usize,
    /// Classes released.
    pub classes: usize,
    /// The smallest class released.
    pub k: usize,
    /// The fewest distinct sensitive values in a released class (1 without one).
    pub l: usize,
    /// The largest distance of a released class from the release (with a sensitive attribute).
    pub t: Option<f64>,
    /// Precision loss of the levels, 0 (none generalised) to 1 (all at the top).
    pub loss: f64,
    /// Lattice nodes evaluated by the search.
    pub nodes_evaluated: usize,
}

/// A release: the generalised rows (suppressed rows removed) and its record. Debug prints the
/// record, not the rows.
#[derive(Clone)]
pub struct Release {
    record: ReleaseRecord,
    /// Per quasi-identifier, the names of its level's values.
    names: Vec<Vec<String>>,
    sensitive: Option<Vec<String>>,
    /// Per unit, the quasi-identifiers' codes and the sensitive code.
    codes: Vec<u32>,
    counts: Vec<u32>,
}

impl fmt::Debug for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Release")
            .field("record", &self.record)
            .field("rows", &"[redacted]")
            .finish()
    }
}

impl Release {
    /// The record of the release.
    pub fn record(&self) -> &ReleaseRecord {
        &self.record
    }

    /// The level of each quasi-identifier.
    pub fn levels(&self) -> &[usize] {
        &self.record.levels
    }

    /// The rows released.
    pub fn len(&self) -> usize {
        self.record.rows_released
    }

    /// Whether no row is released (never, for a release made).
    pub fn is_empty(&self) -> bool {
        self.record.rows_released == 0
    }

    /// The released rows: the quasi-identifiers generalised, in the order of the spec, then the
    /// sensitive value (if any), class by class.
    pub fn rows(&self) -> impl Iterator<Item = Vec<&str>> + '_ {
        let width = self.names.len() + 1;
        self.codes
            .chunks_exact(width)
            .zip(&self.counts)
            .flat_map(move |(codes, &count)| {
                let mut row: Vec<&str> = self
                    .names
                    .iter()
                    .zip(codes)
                    .map(|(names, &c)| names[c as usize].as_str())
                    .collect();
                if let Some(values) = &self.sensitive {
                    row.push(values[codes[width - 1] as usize].as_str());
                }
                std::iter::repeat_n(row, count as usize)
            })
    }

    /// The release as CSV (RFC 4180), under a header row.
    pub fn write_csv<W: Write>(&self, header: &[&str], mut out: W) -> io::Result<()> {
        fn field<W: Write>(out: &mut W, v: &str) -> io::Result<()> {
            if v.contains([',', '"', '\n', '\r']) {
                write!(out, "\"{}\"", v.replace('"', "\"\""))
            } else {
                out.write_all(v.as_bytes())
            }
        }
        fn line<W: Write>(out: &mut W, values: &[&str]) -> io::Result<()> {
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                field(out, v)?;
            }
            out.write_all(b"\n")
        }
        line(&mut out, header)?;
        for row in self.rows() {
            line(&mut out, &row)?;
        }
        out.flush()
    }
}

/// The optimal release of `rows` under `spec` (see the module documentation), or
/// [`MicrodataError::Unsatisfiable`] when no generalisation meets it.
pub fn anonymise<R, S>(rows: &[R], spec: &Spec) -> Result<Release, MicrodataError>
where
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    let mut engine = Engine::new(rows, spec)?;
    let (node, _) = engine.search()?;
    finish(&mut engine, spec, &node)
}

/// The release of `rows` at the given levels (a recorded recoding, repeated), suppressing as
/// [`anonymise`] does; [`MicrodataError::Unsatisfiable`] when it does not meet `spec`.
pub fn release_at<R, S>(
    rows: &[R],
    spec: &Spec,
    levels: &[usize],
) -> Result<Release, MicrodataError>
where
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    let mut engine = Engine::new(rows, spec)?;
    if levels.len() != engine.cols.len()
        || levels
            .iter()
            .zip(&engine.cols)
            .any(|(&l, c)| l > c.height || l > usize::from(u8::MAX))
    {
        return Err(MicrodataError::Levels);
    }
    let node: Vec<u8> = levels.iter().map(|&l| l as u8).collect();
    let o = engine.evaluate(&node, spec.t.is_some());
    if !engine.satisfies(&o) {
        return Err(MicrodataError::Unsatisfiable {
            k: spec.k,
            l: spec.l,
            t: spec.t,
            limit: engine.limit,
        });
    }
    finish(&mut engine, spec, &node)
}

fn finish(engine: &mut Engine<'_>, spec: &Spec, node: &[u8]) -> Result<Release, MicrodataError> {
    let nodes_evaluated = engine.checked;
    let with_t = spec.sensitive.is_some();
    let o: Outcome = engine.evaluate(node, with_t);
    let units: Vec<Unit> = engine.released(node);
    let heights = engine.heights();
    let lattice = Lattice::new(&heights)?;
    let smask = if engine.sbits == 0 {
        0
    } else {
        (1u64 << engine.sbits) - 1
    };
    let mut codes = Vec::with_capacity(units.len() * (engine.cols.len() + 1));
    let mut counts = Vec::with_capacity(units.len());
    for u in &units {
        for c in &engine.cols {
            codes.push(((u.key >> c.shift) & c.mask) as u32);
        }
        codes.push((u.key & smask) as u32);
        counts.push(u.count);
    }
    let names = spec
        .quasi
        .iter()
        .zip(node)
        .map(|(q, &l)| q.hierarchy.levels[l as usize].names.clone())
        .collect();
    let record = ReleaseRecord {
        hierarchies: spec
            .quasi
            .iter()
            .map(|q| q.hierarchy.label().to_owned())
            .collect(),
        levels: node.iter().map(|&l| l as usize).collect(),
        heights,
        k_required: spec.k,
        l_required: spec.l,
        t_required: spec.t,
        max_suppression: spec.max_suppression,
        suppression_limit: engine.limit as usize,
        rows_in: engine.rows as usize,
        rows_released: o.kept as usize,
        suppressed: o.suppressed as usize,
        classes: o.classes,
        k: o.k as usize,
        l: if spec.sensitive.is_some() { o.l } else { 1 },
        t: o.t,
        loss: lattice.precision(node),
        nodes_evaluated,
    };
    Ok(Release {
        record,
        names,
        sensitive: spec.sensitive.as_ref().map(|_| engine.s_values.clone()),
        codes,
        counts,
    })
}
