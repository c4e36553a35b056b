//! A standalone measure of a table as released: k, distinct ℓ and t over the classes of equal
//! quasi-identifier values. It shares no code with the search (strings in, its own grouping),
//! so tests can hold a release to it.

use std::collections::HashMap;

use super::{MicrodataError, Sensitive, SensitiveKind};

/// What a table achieves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measures {
    /// The size of the smallest class.
    pub k: usize,
    /// The fewest distinct sensitive values in a class (distinct ℓ-diversity).
    pub l: usize,
    /// The largest distance of a class's sensitive distribution from the table's: the variational
    /// distance (equal ground distance) for a categorical attribute, the ordered earth mover's
    /// distance for an ordinal one, its ground distance `|i - j| / (m - 1)` between the `i`-th
    /// and `j`-th of the `m` values present in the table (0 when `m = 1`).
    pub t: f64,
}

/// Measures `rows` (each holding the columns `quasi` and `sensitive.column`) as released.
/// [`MicrodataError::NoRows`] when there are none.
pub fn check<R, S>(
    rows: &[R],
    quasi: &[usize],
    sensitive: &Sensitive,
) -> Result<Measures, MicrodataError>
where
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    if rows.is_empty() {
        return Err(MicrodataError::NoRows);
    }
    // Sensitive values to ranks: the given order for an ordinal attribute (then only those
    // present are kept, renumbered), first appearance for a categorical one.
    let order: Option<HashMap<&str, usize>> = match &sensitive.kind {
        SensitiveKind::Categorical => None,
        SensitiveKind::Ordinal(order) => Some(
            order
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_str(), i))
                .collect(),
        ),
    };
    let mut s_codes: HashMap<&str, usize> = HashMap::new();
    let mut classes: HashMap<Vec<&str>, usize> = HashMap::new();
    let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let row = row.as_ref();
        let cell = |c: usize| {
            row.get(c)
                .map(AsRef::as_ref)
                .ok_or(MicrodataError::ShortRow { row: i })
        };
        let key = quasi
            .iter()
            .map(|&c| cell(c))
            .collect::<Result<Vec<_>, _>>()?;
        let next = classes.len();
        let class = *classes.entry(key).or_insert(next);
        let v = cell(sensitive.column)?;
        let s = match &order {
            Some(order) => *order
                .get(v)
                .ok_or(MicrodataError::UnknownSensitive { row: i })?,
            None => {
                let next = s_codes.len();
                *s_codes.entry(v).or_insert(next)
            }
        };
        pairs.push((class, s));
    }
    pairs.sort_unstable();
    // Renumber sensitive values to those present, keeping their order.
    let mut present: Vec<usize> = pairs.iter().map(|p| p.1).collect();
    present.sort_unstable();
    present.dedup();
    let rank: HashMap<usize, usize> = present.iter().enumerate().map(|(r, &s)| (s, r)).collect();
    let m = present.len();
    let n = rows.len() as f64;
    let mut p = vec![0.0; m];
    for &(_, s) in &pairs {
        p[rank[&s]] += 1.0;
    }
    for x in &mut p {
        *x /= n;
    }
    let ordinal = order.is_some();
    let (mut k, mut l, mut t) = (usize::MAX, usize::MAX, 0.0f64);
    let mut start = 0;
    while start < pairs.len() {
        let class = pairs[start].0;
        let end = start + pairs[start..].iter().take_while(|p| p.0 == class).count();
        let size = end - start;
        let mut q = vec![0.0; m];
        for &(_, s) in &pairs[start..end] {
            q[rank[&s]] += 1.0;
        }
        let distinct = q.iter().filter(|&&c| c > 0.0).count();
        for x in &mut q {
            *x /= size as f64;
        }
        let d = if ordinal {
            if m < 2 {
                0.0
            } else {
                let mut cum = 0.0;
                let mut sum = 0.0;
                for (qi, pi) in q.iter().zip(&p) {
                    cum += qi - pi;
                    sum += f64::abs(cum);
                }
                sum / (m - 1) as f64
            }
        } else {
            0.5 * q
                .iter()
                .zip(&p)
                .map(|(qi, pi)| (qi - pi).abs())
                .sum::<f64>()
        };
        k = k.min(size);
        l = l.min(distinct);
        t = t.max(d);
        start = end;
    }
    Ok(Measures { k, l, t })
}
