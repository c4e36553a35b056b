//! Generalisation hierarchies: for one quasi-identifier, levels of mapping from each value to a
//! coarser one (age → 5-year band → 10-year band → `*`), validated so each level is a coarsening
//! of the one below it. A hierarchy carries a label (name and version), which a release records,
//! so the same recoding can be told apart from, or repeated with, a later version.

use std::collections::HashMap;
use std::fmt;

/// The value of the top level of the built-in hierarchies: the value withheld.
pub const ANY: &str = "*";

/// Why a hierarchy could not be built.
///
/// Values are not quoted in messages (a table may be built from data): rows and levels are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HierarchyError {
    /// The table has no rows.
    #[error("the hierarchy has no values")]
    Empty,
    /// A row's length differs from the first row's: every value needs a value at every level.
    #[error("row {row} of the hierarchy has {found} levels, the first row has {expected}")]
    Ragged {
        /// The row (0-based).
        row: usize,
        /// Its number of values.
        found: usize,
        /// The first row's.
        expected: usize,
    },
    /// A value appears twice at level 0.
    #[error("row {row} repeats a value of an earlier row")]
    Duplicate {
        /// The row (0-based).
        row: usize,
    },
    /// Two values that share a generalisation at `level - 1` differ at `level`: the level is
    /// not a coarsening of the one below it, so generalising further could separate values.
    #[error("level {level} is not a coarsening of level {}: row {row} disagrees with an earlier row", level - 1)]
    NotCoarsening {
        /// The level (≥ 1).
        level: usize,
        /// The row (0-based).
        row: usize,
    },
    /// Interval widths must be positive, each a multiple of the one before it (so every band
    /// lies inside one band of the next level).
    #[error("interval widths must be positive and each a multiple of the previous one")]
    Widths,
}

/// One level: the name of each generalised value and, for each value of level 0, its code here.
#[derive(Clone)]
pub(crate) struct Level {
    pub(crate) names: Vec<String>,
    pub(crate) of_value: Vec<u32>,
}

/// A generalisation hierarchy for one quasi-identifier (see the module documentation).
///
/// Level 0 is the values themselves; level [`Hierarchy::height`] the coarsest. Debug shows the
/// label and the shape, not the values (built from data, they might be personal).
#[derive(Clone)]
pub struct Hierarchy {
    label: String,
    pub(crate) levels: Vec<Level>,
    index: HashMap<String, u32>,
}

impl fmt::Debug for Hierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hierarchy")
            .field("label", &self.label)
            .field(
                "values_per_level",
                &self
                    .levels
                    .iter()
                    .map(|l| l.names.len())
                    .collect::<Vec<_>>(),
            )
            .field("values", &"[redacted]")
            .finish()
    }
}

impl Hierarchy {
    /// A hierarchy from a table, one row per value: `[value, level 1, level 2, …]`, as ARX
    /// writes hierarchies. Every row has the same length; level-0 values are unique; at each
    /// level, values that were equal one level below stay equal.
    pub fn from_table<R, S>(label: impl Into<String>, rows: &[R]) -> Result<Self, HierarchyError>
    where
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        let Some(first) = rows.first() else {
            return Err(HierarchyError::Empty);
        };
        let width = first.as_ref().len();
        if width == 0 {
            return Err(HierarchyError::Ragged {
                row: 0,
                found: 0,
                expected: 1,
            });
        }
        for (row, r) in rows.iter().enumerate() {
            if r.as_ref().len() != width {
                return Err(HierarchyError::Ragged {
                    row,
                    found: r.as_ref().len(),
                    expected: width,
                });
            }
        }
        let mut levels: Vec<Level> = Vec::with_capacity(width);
        // Codes by first appearance, level by level; `below` maps the code one level down to
        // the code here, which must be a function for the level to be a coarsening.
        let mut prev_codes: Vec<u32> = Vec::new();
        for level in 0..width {
            let mut names: Vec<String> = Vec::new();
            let mut codes: HashMap<&str, u32> = HashMap::new();
            let mut of_value = Vec::with_capacity(rows.len());
            let mut below: HashMap<u32, u32> = HashMap::new();
            for (row, r) in rows.iter().enumerate() {
                let v = r.as_ref()[level].as_ref();
                let code = match codes.get(v) {
                    Some(&c) => {
                        if level == 0 {
                            return Err(HierarchyError::Duplicate { row });
                        }
                        c
                    }
                    None => {
                        let c = names.len() as u32;
                        names.push(v.to_owned());
                        codes.insert(v, c);
                        c
                    }
                };
                if level > 0 {
                    let from = prev_codes[row];
                    if *below.entry(from).or_insert(code) != code {
                        return Err(HierarchyError::NotCoarsening { level, row });
                    }
                }
                of_value.push(code);
            }
            prev_codes.clone_from(&of_value);
            levels.push(Level { names, of_value });
        }
        let index = levels[0]
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Ok(Self {
            label: label.into(),
            levels,
            index,
        })
    }

    /// Two levels: each value, or [`ANY`]. For attributes with no useful grouping (gender).
    pub fn suppression<S: AsRef<str>>(
        label: impl Into<String>,
        values: &[S],
    ) -> Result<Self, HierarchyError> {
        let rows: Vec<[&str; 2]> = values.iter().map(|v| [v.as_ref(), ANY]).collect();
        Self::from_table(label, &rows)
    }

    /// Numeric bands: level `i` (1-based) maps `v` to the band of `widths[i-1]` holding it,
    /// aligned on multiples of the width and written `lo-hi` (`15-19`); a last level is
    /// [`ANY`]. Each width must be a multiple of the one before, so bands nest.
    pub fn intervals(
        label: impl Into<String>,
        values: impl IntoIterator<Item = i64>,
        widths: &[i64],
    ) -> Result<Self, HierarchyError> {
        let mut prev = 1;
        for &w in widths {
            if w <= 0 || w % prev != 0 {
                return Err(HierarchyError::Widths);
            }
            prev = w;
        }
        let rows: Vec<Vec<String>> = values
            .into_iter()
            .map(|v| {
                let mut row = Vec::with_capacity(widths.len() + 2);
                row.push(v.to_string());
                for &w in widths {
                    let lo = v.div_euclid(w) * w;
                    row.push(format!("{lo}-{}", lo + (w - 1)));
                }
                row.push(ANY.to_owned());
                row
            })
            .collect();
        Self::from_table(label, &rows)
    }

    /// The label (name and version) a release records.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The number of generalisation steps above the values (level 0).
    pub fn height(&self) -> usize {
        self.levels.len() - 1
    }

    /// The values (level 0), in table order.
    pub fn values(&self) -> &[String] {
        &self.levels[0].names
    }

    /// `value` generalised to `level`, or `None` when the value or the level is not in the
    /// hierarchy.
    pub fn generalise(&self, value: &str, level: usize) -> Option<&str> {
        let code = *self.index.get(value)?;
        let l = self.levels.get(level)?;
        Some(&l.names[l.of_value[code as usize] as usize])
    }

    /// The level-0 code of a value.
    pub(crate) fn code(&self, value: &str) -> Option<u32> {
        self.index.get(value).copied()
    }

    /// For codes of level `from`, their codes at level `to` (`from ≤ to`).
    pub(crate) fn up(&self, from: usize, to: usize) -> Vec<u32> {
        let (a, b) = (&self.levels[from], &self.levels[to]);
        let mut map = vec![0; a.names.len()];
        for (v, &ca) in a.of_value.iter().enumerate() {
            map[ca as usize] = b.of_value[v];
        }
        map
    }
}
