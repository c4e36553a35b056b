//! Two-way count tables with margins: small-cell (primary) and complementary suppression, and the
//! exact auditor that proves no suppressed value can be derived from what is published.
//!
//! # The model
//! A released table has cells `x[r][c]`, row totals `R[r]`, column totals `C[c]` and a grand total
//! `T`; any of them may be published or suppressed. Its arithmetic (`Σ_c x[r][c] = R[r]`,
//! `Σ_r x[r][c] = C[c]`, `Σ R = Σ C = T`, everything a nonnegative integer) is exactly the flow
//! conservation of a circulation on a small network:
//!
//! ```text
//!   H --R[r]--> row r --x[r][c]--> col c --C[c]--> H' --T--> H
//! ```
//!
//! Its constraint matrix is a network matrix, hence totally unimodular: the extremes of any one
//! value over the real (LP) relaxation are integers, so the integer bounds equal the LP bounds and
//! max-flow computes them exactly. Given one feasible circulation `f`, the largest value a variable
//! `e = (u→v)` can take is `f[e]` plus the max flow from `v` back to `u` in the residual network
//! of the suppressed variables without `e` (each suppressed variable is an arc `u→v` of unbounded
//! capacity, since nothing but the equations bounds it above, and an arc `v→u` of capacity `f[e]`,
//! since it cannot go below zero); the smallest is `f[e]` minus the max flow from `u` to `v`,
//! capped at `f[e]`. Published values are fixed and give no arcs. This is what [`audit`] does, and
//! it needs no simplex: a table of 50 × 12 has 64 nodes.
//!
//! # Choosing complements
//! Protection is monotone: suppressing more can only widen every interval. So [`suppress`] marks
//! the primary cells, then for each suppressed value, in turn, makes sure it can move by one unit
//! up and (if it is not already 0) one unit down, i.e. that the residual network has a path closing
//! a cycle through it. If no such path exists among the suppressed values, a cheapest path is found
//! with Dijkstra where a published value costs its count plus one to suppress (smallest counts
//! first, fewest cells among zeros) and margins cost far more than cells (they are what readers
//! need most); the published values on that path are suppressed and queued in turn. This is the
//! classic "hypercube" idea generalised to margins, and usually produces rectangles of four cells.
//! Every path ends in a valid ±1 circulation, so every suppressed value ends with an interval of
//! width at least 1 on the side(s) it can move, and [`audit`] double-checks the result.
//!
//! # Conventions
//! * A cell with count 0 is not primary-sensitive: it says nobody in the cohort gave that answer,
//!   which discloses nothing about any one respondent that the published total does not, and
//!   suppressing every zero would blank most sparse tables. Zeros are still used as complements
//!   (they are the cheapest).
//! * Column totals are the overall distribution, itself a released row, so a column total below
//!   the threshold is primary too. Row totals and the grand total are respondent counts (how many
//!   answered), not answers, so they are never primary; they are suppressed only as a last resort
//!   complement (or when the caller forces them, see `suppress_with`).

use std::collections::{BinaryHeap, VecDeque};

/// One published value of a released table, or the mark that it was suppressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cell {
    Count(u64),
    Suppressed,
}

impl Cell {
    /// The published count, `None` when suppressed.
    pub fn count(self) -> Option<u64> {
        match self {
            Cell::Count(n) => Some(n),
            Cell::Suppressed => None,
        }
    }

    pub fn is_suppressed(self) -> bool {
        matches!(self, Cell::Suppressed)
    }
}

/// A released two-way table: rows are cohorts, columns are answer options. `row_totals[r]` is the
/// number of respondents of row `r`, `col_totals[c]` the overall count of option `c` (over the
/// released rows), `total` the overall number of respondents. Aggregates, not personal data, so it
/// derives `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub cells: Vec<Vec<Cell>>,
    pub row_totals: Vec<Cell>,
    pub col_totals: Vec<Cell>,
    pub total: Cell,
}

/// Where a value sits in a [`Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    Cell { row: usize, col: usize },
    RowTotal(usize),
    ColTotal(usize),
    Total,
}

/// Why a released table is not safe to publish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Leak {
    /// The published values force this suppressed value to a single number.
    #[error(
        "the suppressed value at {at:?} is derivable from the published values: it can only be {value}"
    )]
    Derivable { at: Position, value: u64 },
    /// No table of nonnegative integers fits the published values (they contradict each other),
    /// so the table cannot be audited; it is refused rather than assumed safe.
    #[error("the published values are inconsistent: no nonnegative table fits them")]
    Inconsistent,
    /// Rows of different lengths, or margins of the wrong length.
    #[error("the table is malformed: {0}")]
    Malformed(&'static str),
}

/// The feasible interval of one suppressed value: `max` is `None` when it is unbounded (possible
/// only when the grand total and margins around it are all suppressed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub at: Position,
    pub min: u64,
    pub max: Option<u64>,
}

/// Capacity standing for "unbounded"; far above any real count, and sums of a few stay below
/// `u64::MAX` (additions saturate anyway).
const INF: u64 = u64::MAX / 4;
/// Extra cost of suppressing a row or column total instead of cells: larger than any sum of cell
/// counts along one path, so a margin is chosen only when no path through cells exists.
const MARGIN_COST: u64 = 1 << 36;
/// Extra cost of suppressing the grand total: the very last resort.
const TOTAL_COST: u64 = 1 << 44;

const HUB_IN: usize = 0;
const HUB_OUT: usize = 1;

#[derive(Clone, Copy)]
struct Var {
    tail: usize,
    head: usize,
    at: Position,
}

/// The network of a `rows × cols` table: node 0 is H, 1 is H', then rows, then columns; one
/// variable (arc) per value, in the order total, row totals, column totals, cells.
struct Layout {
    rows: usize,
    cols: usize,
    vars: Vec<Var>,
}

impl Layout {
    fn new(rows: usize, cols: usize) -> Self {
        let mut vars = Vec::with_capacity(1 + rows + cols + rows * cols);
        vars.push(Var {
            tail: HUB_OUT,
            head: HUB_IN,
            at: Position::Total,
        });
        for r in 0..rows {
            vars.push(Var {
                tail: HUB_IN,
                head: 2 + r,
                at: Position::RowTotal(r),
            });
        }
        for c in 0..cols {
            vars.push(Var {
                tail: 2 + rows + c,
                head: HUB_OUT,
                at: Position::ColTotal(c),
            });
        }
        for r in 0..rows {
            for c in 0..cols {
                vars.push(Var {
                    tail: 2 + r,
                    head: 2 + rows + c,
                    at: Position::Cell { row: r, col: c },
                });
            }
        }
        Layout { rows, cols, vars }
    }

    fn nodes(&self) -> usize {
        2 + self.rows + self.cols
    }

    fn cell(&self, r: usize, c: usize) -> usize {
        1 + self.rows + self.cols + r * self.cols + c
    }

    /// The cost of suppressing a published value when choosing complements.
    fn unfreeze_cost(&self, i: usize, value: u64) -> u64 {
        let base = value.saturating_add(1);
        match self.vars[i].at {
            Position::Cell { .. } => base,
            Position::RowTotal(_) | Position::ColTotal(_) => base.saturating_add(MARGIN_COST),
            Position::Total => base.saturating_add(TOTAL_COST),
        }
    }

    /// Builds the released table from the values and the suppressed set.
    fn table(&self, values: &[u64], free: &[bool]) -> Table {
        let show = |i: usize| {
            if free[i] {
                Cell::Suppressed
            } else {
                Cell::Count(values[i])
            }
        };
        Table {
            cells: (0..self.rows)
                .map(|r| (0..self.cols).map(|c| show(self.cell(r, c))).collect())
                .collect(),
            row_totals: (0..self.rows).map(|r| show(1 + r)).collect(),
            col_totals: (0..self.cols).map(|c| show(1 + self.rows + c)).collect(),
            total: show(0),
        }
    }
}

/// Max flow from `s` to `t` (Edmonds–Karp on a dense capacity matrix, fine for the few dozen nodes
/// of a table), stopping once `limit` is reached. Capacities are consumed.
fn max_flow(cap: &mut [u64], n: usize, s: usize, t: usize, limit: u64) -> u64 {
    let mut flow = 0u64;
    let mut prev = vec![usize::MAX; n];
    let mut queue = VecDeque::with_capacity(n);
    while flow < limit {
        prev.fill(usize::MAX);
        prev[s] = s;
        queue.clear();
        queue.push_back(s);
        while let Some(u) = queue.pop_front() {
            if u == t {
                break;
            }
            for v in 0..n {
                if prev[v] == usize::MAX && cap[u * n + v] > 0 {
                    prev[v] = u;
                    queue.push_back(v);
                }
            }
        }
        if prev[t] == usize::MAX {
            break;
        }
        let mut bottleneck = limit - flow;
        let mut v = t;
        while v != s {
            let u = prev[v];
            bottleneck = bottleneck.min(cap[u * n + v]);
            v = u;
        }
        let mut v = t;
        while v != s {
            let u = prev[v];
            cap[u * n + v] -= bottleneck;
            cap[v * n + u] = cap[v * n + u].saturating_add(bottleneck);
            v = u;
        }
        flow = flow.saturating_add(bottleneck);
    }
    flow
}

/// How far the flow can be pushed from `s` to `t` through the suppressed variables other than
/// `except`, around the feasible circulation `values`.
fn shift(
    layout: &Layout,
    values: &[u64],
    free: &[bool],
    except: usize,
    s: usize,
    t: usize,
    limit: u64,
) -> u64 {
    let n = layout.nodes();
    let mut cap = vec![0u64; n * n];
    for (i, var) in layout.vars.iter().enumerate() {
        if i == except || !free[i] {
            continue;
        }
        let fwd = var.tail * n + var.head;
        cap[fwd] = cap[fwd].saturating_add(INF);
        let back = var.head * n + var.tail;
        cap[back] = cap[back].saturating_add(values[i]);
    }
    max_flow(&mut cap, n, s, t, limit)
}

/// The feasible interval of suppressed variable `i` around the feasible circulation `values`.
fn interval(layout: &Layout, values: &[u64], free: &[bool], i: usize) -> Interval {
    let var = layout.vars[i];
    let up = shift(layout, values, free, i, var.head, var.tail, INF);
    let down = shift(layout, values, free, i, var.tail, var.head, values[i]);
    Interval {
        at: var.at,
        min: values[i] - down.min(values[i]),
        max: if up >= INF {
            None
        } else {
            Some(values[i].saturating_add(up))
        },
    }
}

/// The cheapest set of variables to suppress so that a path from `s` to `t` exists in the
/// residual network (so a ±1 cycle through `except` exists); `None` when there is none at all.
/// Already suppressed variables cost nothing, so a path among them returns an empty set.
fn cheapest_path(
    layout: &Layout,
    values: &[u64],
    free: &[bool],
    except: usize,
    s: usize,
    t: usize,
) -> Option<Vec<usize>> {
    let n = layout.nodes();
    // Arcs by tail: (head, variable, cost).
    let mut adj: Vec<Vec<(usize, usize, u64)>> = vec![Vec::new(); n];
    for (i, var) in layout.vars.iter().enumerate() {
        if i == except {
            continue;
        }
        let cost = if free[i] {
            0
        } else {
            layout.unfreeze_cost(i, values[i])
        };
        adj[var.tail].push((var.head, i, cost));
        if values[i] >= 1 {
            adj[var.head].push((var.tail, i, cost));
        }
    }
    let mut dist = vec![u64::MAX; n];
    let mut via: Vec<Option<(usize, usize)>> = vec![None; n];
    let mut heap = BinaryHeap::new();
    dist[s] = 0;
    heap.push(std::cmp::Reverse((0u64, s)));
    while let Some(std::cmp::Reverse((d, u))) = heap.pop() {
        if d > dist[u] {
            continue;
        }
        if u == t {
            break;
        }
        for &(v, i, cost) in &adj[u] {
            let nd = d.saturating_add(cost);
            if nd < dist[v] {
                dist[v] = nd;
                via[v] = Some((u, i));
                heap.push(std::cmp::Reverse((nd, v)));
            }
        }
    }
    if dist[t] == u64::MAX {
        return None;
    }
    let mut path = Vec::new();
    let mut v = t;
    while v != s {
        let (u, i) = via[v]?;
        if !free[i] {
            path.push(i);
        }
        v = u;
    }
    Some(path)
}

/// Suppresses a table of true counts (`counts[r][c]`, rows of equal length) so that no cell, and
/// no column total, below `min_cell` is published (zeros excepted, see the module doc) and no
/// suppressed value can be derived from the rest: the result passes [`audit`], and every
/// suppressed value can move by at least one unit up and, when nonzero, down.
pub fn suppress(counts: &[Vec<u64>], min_cell: u64) -> Result<Table, Leak> {
    suppress_with(counts, min_cell, &[])
}

/// [`suppress`], with the row totals marked in `forced_rows` suppressed from the start: the
/// per-option tables of one multiple-choice question share their row totals, so a row total one
/// of them had to suppress is suppressed in all (or the others would publish it).
pub(crate) fn suppress_with(
    counts: &[Vec<u64>],
    min_cell: u64,
    forced_rows: &[bool],
) -> Result<Table, Leak> {
    let rows = counts.len();
    let cols = counts.first().map_or(0, Vec::len);
    if counts.iter().any(|row| row.len() != cols) {
        return Err(Leak::Malformed("rows of different lengths"));
    }
    let layout = Layout::new(rows, cols);
    let mut values = vec![0u64; layout.vars.len()];
    for (r, row) in counts.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            values[layout.cell(r, c)] = x;
            values[1 + r] = values[1 + r].saturating_add(x);
            values[1 + rows + c] = values[1 + rows + c].saturating_add(x);
            values[0] = values[0].saturating_add(x);
        }
    }
    let primary = |x: u64| x > 0 && x < min_cell;
    let mut free = vec![false; layout.vars.len()];
    for (i, var) in layout.vars.iter().enumerate() {
        free[i] = match var.at {
            Position::Cell { .. } | Position::ColTotal(_) => primary(values[i]),
            Position::RowTotal(r) => forced_rows.get(r).copied().unwrap_or(false),
            Position::Total => false,
        };
    }
    let mut queue: VecDeque<usize> = (0..free.len()).filter(|&i| free[i]).collect();
    while let Some(e) = queue.pop_front() {
        let var = layout.vars[e];
        // Up: a path head → tail closes a cycle that raises e by one; down: tail → head lowers it.
        let mut directions = vec![(var.head, var.tail)];
        if values[e] >= 1 {
            directions.push((var.tail, var.head));
        }
        for (s, t) in directions {
            // None: this direction is impossible whatever is suppressed (cannot happen for a table
            // with a row and a column, see the module doc); the audit below still checks width.
            if let Some(path) = cheapest_path(&layout, &values, &free, e, s, t) {
                for i in path {
                    if !free[i] {
                        free[i] = true;
                        queue.push_back(i);
                    }
                }
            }
        }
    }
    let table = layout.table(&values, &free);
    // Fail closed: the constructive step should already guarantee this, the exact audit proves it.
    for i in 0..free.len() {
        if free[i] {
            let iv = interval(&layout, &values, &free, i);
            if iv.max == Some(iv.min) {
                return Err(Leak::Derivable {
                    at: iv.at,
                    value: iv.min,
                });
            }
        }
    }
    Ok(table)
}

/// The exact feasible interval of every suppressed value of a released table, given only what it
/// publishes (see the module doc for the method).
pub fn intervals(table: &Table) -> Result<Vec<Interval>, Leak> {
    let rows = table.cells.len();
    let cols = table.col_totals.len();
    if table.row_totals.len() != rows || table.cells.iter().any(|row| row.len() != cols) {
        return Err(Leak::Malformed("margins do not match the cells"));
    }
    let layout = Layout::new(rows, cols);
    let mut published: Vec<Option<u64>> = vec![None; layout.vars.len()];
    published[0] = table.total.count();
    for r in 0..rows {
        published[1 + r] = table.row_totals[r].count();
        for c in 0..cols {
            published[layout.cell(r, c)] = table.cells[r][c].count();
        }
    }
    for c in 0..cols {
        published[1 + rows + c] = table.col_totals[c].count();
    }
    // A feasible circulation: published values are arcs with lower = upper bound, removed by the
    // standard reduction (their flow becomes an excess at the head and a deficit at the tail); the
    // suppressed values are arcs [0, ∞); a super source and sink must saturate.
    let n = layout.nodes();
    let (src, snk) = (n, n + 1);
    let m = n + 2;
    let mut cap = vec![0u64; m * m];
    let mut excess = vec![0i128; n];
    for (i, var) in layout.vars.iter().enumerate() {
        match published[i] {
            Some(v) => {
                excess[var.head] += i128::from(v);
                excess[var.tail] -= i128::from(v);
            }
            None => cap[var.tail * m + var.head] = INF,
        }
    }
    let mut need = 0u64;
    for (v, &e) in excess.iter().enumerate() {
        let amount = u64::try_from(e.unsigned_abs()).map_err(|_| Leak::Inconsistent)?;
        if e > 0 {
            cap[src * m + v] = amount;
            need = need.saturating_add(amount);
        } else if e < 0 {
            cap[v * m + snk] = amount;
        }
    }
    if max_flow(&mut cap, m, src, snk, need) != need {
        return Err(Leak::Inconsistent);
    }
    let mut values = vec![0u64; layout.vars.len()];
    let mut free = vec![false; layout.vars.len()];
    for (i, var) in layout.vars.iter().enumerate() {
        match published[i] {
            Some(v) => values[i] = v,
            None => {
                free[i] = true;
                // Each node pair carries at most one variable and none in the reverse direction,
                // so the flow on it is what left its forward capacity.
                values[i] = INF - cap[var.tail * m + var.head];
            }
        }
    }
    Ok((0..free.len())
        .filter(|&i| free[i])
        .map(|i| interval(&layout, &values, &free, i))
        .collect())
}

/// Checks a released table: `Err(Leak::Derivable)` names a suppressed value the published cells
/// and totals pin to a single number.
pub fn audit(table: &Table) -> Result<(), Leak> {
    for iv in intervals(table)? {
        if iv.max == Some(iv.min) {
            return Err(Leak::Derivable {
                at: iv.at,
                value: iv.min,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn single_suppressed_cell_in_a_row_is_derivable() {
        let table = Table {
            cells: vec![
                vec![Cell::Suppressed, Cell::Count(10)],
                vec![Cell::Count(7), Cell::Count(9)],
            ],
            row_totals: vec![Cell::Count(13), Cell::Count(16)],
            col_totals: vec![Cell::Count(10), Cell::Count(19)],
            total: Cell::Count(29),
        };
        assert_eq!(
            audit(&table),
            Err(Leak::Derivable {
                at: Position::Cell { row: 0, col: 0 },
                value: 3
            })
        );
    }

    #[test]
    fn rectangle_protects_both_ways() {
        let counts = vec![vec![3, 10, 8], vec![7, 9, 12], vec![6, 6, 6]];
        let table = suppress(&counts, 5).unwrap();
        assert!(table.cells[0][0].is_suppressed());
        audit(&table).unwrap();
        let iv = intervals(&table).unwrap();
        let first = iv
            .iter()
            .find(|iv| iv.at == Position::Cell { row: 0, col: 0 })
            .unwrap();
        assert!(first.min <= 2 && first.max.unwrap() >= 4, "{first:?}");
    }
}
