//! The engine: rows encoded once into packed keys, pre-aggregated into units (distinct
//! quasi-identifier tuple × sensitive value, with a count), and every node of the lattice of
//! level vectors evaluated on units, rolled up from the smallest cached partition below it
//! rather than from the rows. Flash (Kohlmayer et al. 2012) walks the lattice.
//!
//! Key layout: the sensitive code in the low `sbits` bits, then each quasi-identifier's code at
//! the node's level in a field wide enough for its level-0 codes (a coarser level has fewer
//! values, so its codes fit too). Units are kept sorted by key, so a class (key without the
//! sensitive bits) is a run of units, one per distinct sensitive value, in value order.

use std::collections::HashMap;

use super::{MicrodataError, SensitiveKind, Spec};

/// Largest lattice searched: the state of every node is held, and each is visited by the
/// tagging; beyond this, fewer levels or quasi-identifiers are the answer.
pub(crate) const MAX_NODES: usize = 1 << 22;

/// Partitions kept for roll-up. Flash checks nodes along paths upwards, so the last few checked
/// are usually right below the next one; more would mostly hold memory.
const CACHE: usize = 6;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Unit {
    pub(crate) key: u64,
    pub(crate) count: u32,
}

pub(crate) struct Col {
    pub(crate) shift: u32,
    pub(crate) mask: u64,
    pub(crate) height: usize,
    /// `up[from * (height + 1) + to]`: level-`from` code → level-`to` code.
    up: Vec<Vec<u32>>,
}

/// A node's measures under k and ℓ (and t once asked).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    pub(crate) suppressed: u64,
    pub(crate) kept: u64,
    pub(crate) classes: usize,
    pub(crate) k: u64,
    pub(crate) l: usize,
    pub(crate) t: Option<f64>,
}

pub(crate) struct Engine<'a> {
    spec: &'a Spec,
    pub(crate) cols: Vec<Col>,
    pub(crate) sbits: u32,
    /// Sensitive values by code (codes in the ordinal order, or sorted for a categorical one).
    pub(crate) s_values: Vec<String>,
    ordinal: bool,
    /// The bits of a key in use (the radix sort sorts on these only).
    key_bits: u32,
    pub(crate) rows: u64,
    pub(crate) limit: u64,
    base: Vec<Unit>,
    cache: Vec<(Vec<u8>, Vec<Unit>)>,
    pub(crate) checked: usize,
}

fn bits_for(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - (n - 1).leading_zeros()
    }
}

impl<'a> Engine<'a> {
    pub(crate) fn new<R, S>(rows: &[R], spec: &'a Spec) -> Result<Self, MicrodataError>
    where
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        spec.validate()?;
        if rows.is_empty() {
            return Err(MicrodataError::NoRows);
        }
        if rows.len() > u32::MAX as usize {
            return Err(MicrodataError::TooManyRows);
        }
        // Sensitive codes first: their width is the low field of every key.
        let mut s_values: Vec<String> = Vec::new();
        let mut s_of_row: Vec<u32> = Vec::new();
        let mut ordinal = false;
        if let Some(sens) = &spec.sensitive {
            s_of_row.reserve(rows.len());
            let mut codes: HashMap<&str, u32> = HashMap::new();
            if let SensitiveKind::Ordinal(order) = &sens.kind {
                ordinal = true;
                for v in order {
                    let next = codes.len() as u32;
                    codes.entry(v.as_str()).or_insert(next);
                }
            }
            for (i, row) in rows.iter().enumerate() {
                let v = row
                    .as_ref()
                    .get(sens.column)
                    .ok_or(MicrodataError::ShortRow { row: i })?
                    .as_ref();
                let code = match codes.get(v) {
                    Some(&c) => c,
                    None if ordinal => return Err(MicrodataError::UnknownSensitive { row: i }),
                    None => {
                        let c = codes.len() as u32;
                        codes.insert(v, c);
                        c
                    }
                };
                s_of_row.push(code);
            }
            let mut by_code: Vec<(&str, u32)> = codes.into_iter().collect();
            by_code.sort_unstable_by_key(|&(_, c)| c);
            if !ordinal {
                // Categorical codes in value order: the release then lists a class's values
                // sorted, whatever the order of the input.
                let mut sorted: Vec<usize> = (0..by_code.len()).collect();
                sorted.sort_unstable_by(|&a, &b| by_code[a].0.cmp(by_code[b].0));
                let mut new_code = vec![0u32; by_code.len()];
                for (new, &old) in sorted.iter().enumerate() {
                    new_code[old] = new as u32;
                }
                for s in &mut s_of_row {
                    *s = new_code[*s as usize];
                }
                by_code = sorted
                    .iter()
                    .enumerate()
                    .map(|(new, &old)| (by_code[old].0, new as u32))
                    .collect();
            }
            s_values = by_code.into_iter().map(|(v, _)| v.to_owned()).collect();
        }
        let sbits = bits_for(s_values.len());
        let mut cols = Vec::with_capacity(spec.quasi.len());
        let mut shift = sbits;
        for q in &spec.quasi {
            let h = &q.hierarchy;
            let bits = bits_for(h.values().len());
            if shift + bits > 64 {
                return Err(MicrodataError::KeyTooWide);
            }
            let height = h.height();
            let mut up = Vec::with_capacity((height + 1) * (height + 1));
            for from in 0..=height {
                for to in 0..=height {
                    up.push(if to >= from {
                        h.up(from, to)
                    } else {
                        Vec::new()
                    });
                }
            }
            cols.push(Col {
                shift,
                mask: if bits == 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                },
                height,
                up,
            });
            shift += bits;
        }
        let key_bits = shift;
        let mut keys: Vec<u64> = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            let mut key = s_of_row.get(i).map_or(0, |&s| u64::from(s));
            for (q, col) in spec.quasi.iter().zip(&cols) {
                let v = row
                    .get(q.column)
                    .ok_or(MicrodataError::ShortRow { row: i })?
                    .as_ref();
                let code = q.hierarchy.code(v).ok_or(MicrodataError::UnknownValue {
                    row: i,
                    column: q.column,
                })?;
                key |= u64::from(code) << col.shift;
            }
            keys.push(key);
        }
        drop(s_of_row);
        let mut base: Vec<Unit> = keys.into_iter().map(|key| Unit { key, count: 1 }).collect();
        radix_sort(&mut base, key_bits);
        merge(&mut base);
        let n = rows.len() as u64;
        // ⌊fraction × rows⌋, with a little slack so 0.29 × 100 is 29, not 28.999…
        let limit = ((spec.max_suppression * n as f64) + 1e-9).floor() as u64;
        Ok(Self {
            spec,
            cols,
            sbits,
            s_values,
            ordinal,
            key_bits,
            rows: n,
            limit: limit.min(n),
            base,
            cache: Vec::new(),
            checked: 0,
        })
    }

    pub(crate) fn heights(&self) -> Vec<usize> {
        self.cols.iter().map(|c| c.height).collect()
    }

    /// The units of `node`, rolled up from the smallest cached partition below it (or the
    /// base), and cached; returns the cache index.
    fn units(&mut self, node: &[u8]) -> usize {
        let mut source: Option<usize> = None;
        for (i, (n, units)) in self.cache.iter().enumerate() {
            if n.as_slice() == node {
                return i;
            }
            if n.iter().zip(node).all(|(a, b)| a <= b)
                && source.is_none_or(|s| units.len() < self.cache[s].1.len())
            {
                source = Some(i);
            }
        }
        let zero = vec![0u8; node.len()];
        let (from, units): (&[u8], &[Unit]) = match source {
            Some(i) => (&self.cache[i].0, &self.cache[i].1),
            None => (&zero, &self.base),
        };
        let rolled = self.roll_up(from, units, node);
        if self.cache.len() >= CACHE {
            self.cache.remove(0);
        }
        self.cache.push((node.to_vec(), rolled));
        self.cache.len() - 1
    }

    fn roll_up(&self, from: &[u8], units: &[Unit], to: &[u8]) -> Vec<Unit> {
        let maps: Vec<(u32, u64, &[u32])> = self
            .cols
            .iter()
            .zip(from.iter().zip(to))
            .filter(|(_, (a, b))| a != b)
            .map(|(c, (&a, &b))| {
                let table = &c.up[a as usize * (c.height + 1) + b as usize];
                (c.shift, c.mask, table.as_slice())
            })
            .collect();
        let mut out: Vec<Unit> = units
            .iter()
            .map(|u| {
                let mut key = u.key;
                for &(shift, mask, table) in &maps {
                    let code = (key >> shift) & mask;
                    key = (key & !(mask << shift)) | (u64::from(table[code as usize]) << shift);
                }
                Unit {
                    key,
                    count: u.count,
                }
            })
            .collect();
        radix_sort(&mut out, self.key_bits);
        merge(&mut out);
        out
    }

    /// Measures `node`: classes smaller than k or with fewer than ℓ distinct sensitive values
    /// are suppressed; t (when `with_t`) is then measured on what is left.
    pub(crate) fn evaluate(&mut self, node: &[u8], with_t: bool) -> Outcome {
        self.checked += 1;
        let i = self.units(node);
        let units = &self.cache[i].1;
        measure(
            units,
            self.sbits,
            self.spec,
            with_t,
            self.ordinal,
            self.s_values.len(),
        )
    }

    /// The units of `node` with the suppressed classes left out.
    pub(crate) fn released(&mut self, node: &[u8]) -> Vec<Unit> {
        let i = self.units(node);
        let units = &self.cache[i].1;
        let (k, l) = (self.spec.k as u64, self.spec.l);
        let mut out = Vec::new();
        for class in classes(units, self.sbits) {
            let size: u64 = class.iter().map(|u| u64::from(u.count)).sum();
            if size >= k && class.len() >= l {
                out.extend_from_slice(class);
            }
        }
        out
    }

    pub(crate) fn satisfies(&self, o: &Outcome) -> bool {
        o.kept > 0
            && o.suppressed <= self.limit
            && match (self.spec.t, o.t) {
                (Some(t), Some(got)) => got <= t,
                _ => true,
            }
    }

    /// Flash over the lattice for k and ℓ (monotone: with suppression of failing classes, the
    /// rows suppressed at a node include those at any generalisation of it), then t, which is
    /// not monotone, checked on every candidate in order of loss.
    pub(crate) fn search(&mut self) -> Result<(Vec<u8>, Outcome), MicrodataError> {
        let heights = self.heights();
        let lattice = Lattice::new(&heights)?;
        let n = lattice.size;
        // 0 unknown, 1 satisfies k/ℓ, 2 does not.
        let mut state = vec![0u8; n];
        let mut outcomes: HashMap<usize, Outcome> = HashMap::new();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_cached_key(|&i| {
            let node = lattice.node(i);
            let sum: usize = node.iter().map(|&h| h as usize).sum();
            (sum, lattice.loss(&node), node)
        });
        for &start in &order {
            if state[start] != 0 {
                continue;
            }
            // The path: upwards from `start` through unknown nodes, cheapest successor first.
            let mut path = vec![start];
            let mut cur = lattice.node(start);
            loop {
                let mut best: Option<(u64, Vec<u8>, usize)> = None;
                for c in 0..cur.len() {
                    if (cur[c] as usize) < heights[c] {
                        let mut s = cur.clone();
                        s[c] += 1;
                        let si = lattice.index(&s);
                        if state[si] == 0 {
                            let cand = (lattice.loss(&s), s, si);
                            if best
                                .as_ref()
                                .is_none_or(|b| (cand.0, &cand.1) < (b.0, &b.1))
                            {
                                best = Some(cand);
                            }
                        }
                    }
                }
                match best {
                    Some((_, s, si)) => {
                        path.push(si);
                        cur = s;
                    }
                    None => break,
                }
            }
            // Binary search along the path: a node that satisfies tags every generalisation of
            // it, one that fails every specialisation.
            let (mut lo, mut hi) = (0isize, path.len() as isize - 1);
            while lo <= hi {
                let mid = (lo + hi) / 2;
                let idx = path[mid as usize];
                let node = lattice.node(idx);
                let o = self.evaluate(&node, false);
                outcomes.insert(idx, o);
                if o.kept > 0 && o.suppressed <= self.limit {
                    lattice.tag(&mut state, idx, 1, true);
                    hi = mid - 1;
                } else {
                    lattice.tag(&mut state, idx, 2, false);
                    lo = mid + 1;
                }
            }
        }
        // Candidates by loss; within one loss, the fewest suppressed rows, then the first node
        // in lexicographic order.
        let mut candidates: Vec<(u64, Vec<u8>, usize)> = (0..n)
            .filter(|&i| state[i] == 1)
            .map(|i| {
                let node = lattice.node(i);
                (lattice.loss(&node), node, i)
            })
            .collect();
        candidates.sort();
        let want_t = self.spec.t.is_some();
        let mut start = 0;
        while start < candidates.len() {
            let loss = candidates[start].0;
            let end = start
                + candidates[start..]
                    .iter()
                    .take_while(|c| c.0 == loss)
                    .count();
            let mut best: Option<(Vec<u8>, Outcome)> = None;
            for (_, node, idx) in &candidates[start..end] {
                let o = match outcomes.get(idx) {
                    Some(o) if !want_t => *o,
                    _ => self.evaluate(node, want_t),
                };
                if self.satisfies(&o)
                    && best
                        .as_ref()
                        .is_none_or(|(_, b)| o.suppressed < b.suppressed)
                {
                    best = Some((node.clone(), o));
                }
            }
            if let Some(found) = best {
                return Ok(found);
            }
            start = end;
        }
        Err(MicrodataError::Unsatisfiable {
            k: self.spec.k,
            l: self.spec.l,
            t: self.spec.t,
            limit: self.limit,
        })
    }
}

/// Sorts units by key, on the low `bits` bits: least significant digit first, a digit of at
/// most 11 bits (a count table in L1). Sorting is most of the work of a roll-up, and keys are
/// short (28 bits for the bench's five quasi-identifiers and rating), so three linear passes beat
/// a comparison sort by several times.
fn radix_sort(units: &mut Vec<Unit>, bits: u32) {
    if units.len() < 256 {
        units.sort_unstable_by_key(|u| u.key);
        return;
    }
    let passes = bits.div_ceil(11).max(1);
    let width = bits.div_ceil(passes);
    let mut buf = vec![Unit { key: 0, count: 0 }; units.len()];
    let mut shift = 0;
    while shift < bits {
        let mask = (1u64 << width) - 1;
        let mut starts = vec![0usize; 1 << width];
        for u in units.iter() {
            starts[((u.key >> shift) & mask) as usize] += 1;
        }
        let mut sum = 0;
        for s in &mut starts {
            let c = *s;
            *s = sum;
            sum += c;
        }
        for u in units.iter() {
            let d = ((u.key >> shift) & mask) as usize;
            buf[starts[d]] = *u;
            starts[d] += 1;
        }
        std::mem::swap(units, &mut buf);
        shift += width;
    }
}

/// Merges adjacent units of equal key (sorted units), adding their counts.
fn merge(units: &mut Vec<Unit>) {
    units.dedup_by(|b, a| {
        if a.key == b.key {
            a.count += b.count;
            true
        } else {
            false
        }
    });
}

/// The runs of units of one class each.
pub(crate) fn classes(units: &[Unit], sbits: u32) -> impl Iterator<Item = &[Unit]> {
    units.chunk_by(move |a, b| a.key >> sbits == b.key >> sbits)
}

fn measure(
    units: &[Unit],
    sbits: u32,
    spec: &Spec,
    with_t: bool,
    ordinal: bool,
    n_s: usize,
) -> Outcome {
    let (k, l) = (spec.k as u64, spec.l);
    let mut o = Outcome {
        suppressed: 0,
        kept: 0,
        classes: 0,
        k: u64::MAX,
        l: usize::MAX,
        t: None,
    };
    let smask = if sbits == 0 { 0 } else { (1u64 << sbits) - 1 };
    let mut p = vec![0u64; if with_t { n_s.max(1) } else { 0 }];
    for class in classes(units, sbits) {
        let size: u64 = class.iter().map(|u| u64::from(u.count)).sum();
        if size < k || class.len() < l {
            o.suppressed += size;
            continue;
        }
        o.kept += size;
        o.classes += 1;
        o.k = o.k.min(size);
        o.l = o.l.min(class.len());
        if with_t {
            for u in class {
                p[(u.key & smask) as usize] += u64::from(u.count);
            }
        }
    }
    if with_t && o.kept > 0 {
        o.t = Some(closeness(units, sbits, &p, o.kept, ordinal, k, l));
    }
    o
}

/// The largest distance of a kept class's sensitive distribution from the release's `p`
/// (counts by code): see [`super::Measures::t`].
fn closeness(
    units: &[Unit],
    sbits: u32,
    p: &[u64],
    kept: u64,
    ordinal: bool,
    k: u64,
    l: usize,
) -> f64 {
    let smask = if sbits == 0 { 0 } else { (1u64 << sbits) - 1 };
    // Ranks among the values present in the release.
    let mut rank = vec![usize::MAX; p.len()];
    let mut m = 0;
    for (c, &count) in p.iter().enumerate() {
        if count > 0 {
            rank[c] = m;
            m += 1;
        }
    }
    let pf: Vec<f64> = p
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 / kept as f64)
        .collect();
    let mut t = 0.0f64;
    let mut q = vec![0.0f64; m];
    for class in classes(units, sbits) {
        let size: u64 = class.iter().map(|u| u64::from(u.count)).sum();
        if size < k || class.len() < l {
            continue;
        }
        let d = if ordinal {
            if m < 2 {
                0.0
            } else {
                q.fill(0.0);
                for u in class {
                    q[rank[(u.key & smask) as usize]] = f64::from(u.count) / size as f64;
                }
                let (mut cum, mut sum) = (0.0, 0.0);
                for (qi, pi) in q.iter().zip(&pf) {
                    cum += qi - pi;
                    sum += f64::abs(cum);
                }
                sum / (m - 1) as f64
            }
        } else {
            // Σ|q - p| over all values = Σ over the class's values of (|q - p| - p), plus 1.
            let mut sum = 1.0;
            for u in class {
                let pi = pf[rank[(u.key & smask) as usize]];
                let qi = f64::from(u.count) / size as f64;
                sum += (qi - pi).abs() - pi;
            }
            0.5 * sum
        };
        t = t.max(d);
    }
    t
}

/// The lattice of level vectors: mixed-radix indices, the loss metric, predictive tagging.
pub(crate) struct Lattice {
    heights: Vec<usize>,
    size: usize,
    /// Loss weights: `L / height` with `L` the least common multiple of the heights, so the
    /// precision loss `Σ level/height` compares exactly as the integer `Σ level × weight`.
    weights: Vec<u64>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Lattice {
    pub(crate) fn new(heights: &[usize]) -> Result<Self, MicrodataError> {
        let mut size: usize = 1;
        for &h in heights {
            size = size
                .checked_mul(h + 1)
                .filter(|&s| s <= MAX_NODES)
                .ok_or(MicrodataError::LatticeTooLarge { max: MAX_NODES })?;
            if h > u8::MAX as usize {
                return Err(MicrodataError::LatticeTooLarge { max: MAX_NODES });
            }
        }
        let mut lcm: u64 = 1;
        for &h in heights.iter().filter(|&&h| h > 0) {
            let h = h as u64;
            lcm = (lcm / gcd(lcm, h))
                .checked_mul(h)
                .ok_or(MicrodataError::LatticeTooLarge { max: MAX_NODES })?;
        }
        let weights = heights
            .iter()
            .map(|&h| if h == 0 { 0 } else { lcm / h as u64 })
            .collect();
        Ok(Self {
            heights: heights.to_vec(),
            size,
            weights,
        })
    }

    pub(crate) fn loss(&self, node: &[u8]) -> u64 {
        node.iter()
            .zip(&self.weights)
            .map(|(&h, &w)| u64::from(h) * w)
            .sum()
    }

    /// The precision loss in [0, 1]: the mean of `level / height` over the quasi-identifiers
    /// that can be generalised.
    pub(crate) fn precision(&self, node: &[u8]) -> f64 {
        let (sum, n) = node
            .iter()
            .zip(&self.heights)
            .filter(|&(_, &h)| h > 0)
            .fold((0.0, 0usize), |(s, n), (&l, &h)| {
                (s + f64::from(l) / h as f64, n + 1)
            });
        if n == 0 { 0.0 } else { sum / n as f64 }
    }

    fn index(&self, node: &[u8]) -> usize {
        node.iter()
            .zip(&self.heights)
            .fold(0, |i, (&l, &h)| i * (h + 1) + l as usize)
    }

    fn node(&self, mut index: usize) -> Vec<u8> {
        let mut node = vec![0u8; self.heights.len()];
        for (c, &h) in self.heights.iter().enumerate().rev() {
            node[c] = (index % (h + 1)) as u8;
            index /= h + 1;
        }
        node
    }

    /// Tags `index` and, upwards (`up`) or downwards, every node reachable, stopping at nodes
    /// already tagged so: those were tagged with their whole up- (down-) set before.
    fn tag(&self, state: &mut [u8], index: usize, tag: u8, up: bool) {
        let mut stack = vec![index];
        while let Some(i) = stack.pop() {
            if state[i] == tag {
                continue;
            }
            state[i] = tag;
            let node = self.node(i);
            for c in 0..node.len() {
                let mut next = node.clone();
                if up && (node[c] as usize) < self.heights[c] {
                    next[c] += 1;
                } else if !up && node[c] > 0 {
                    next[c] -= 1;
                } else {
                    continue;
                }
                stack.push(self.index(&next));
            }
        }
    }
}
