//! Privacy budget accounting, independent of storage: the service keeps the spends of a survey
//! in its database and asks [`check`] before every differentially private release.
//!
//! Every amount is an integer: ε in millionths ([`MicroEpsilon`]), δ in units of 10⁻¹²
//! ([`PicoDelta`]). Floats are never used for the accounting, because float addition can lose a
//! small spend outright (a total of 1.0 plus a spend of 1e-17 is still 1.0, and a subnormal spend
//! vanishes), which makes repeated tiny releases free: a known fail-open. Integer sums are exact,
//! and overflow is treated as exhaustion (fail closed).
//!
//! Composition is basic sequential composition: the ε (and δ) of all releases of a survey add up.

use std::fmt;

/// ε in millionths: `MicroEpsilon(1_000_000)` is ε = 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroEpsilon(pub u64);

/// δ in units of 10⁻¹²: `PicoDelta(1_000_000)` is δ = 10⁻⁶.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PicoDelta(pub u64);

impl MicroEpsilon {
    /// ε as a float, for the mechanism's noise scale only (never for accounting). Rounded down,
    /// so a mechanism calibrated to it never spends more than the integer allotment.
    pub fn as_f64_down(self) -> f64 {
        let x = self.0 as f64 / 1e6;
        if x > 0.0 { x.next_down() } else { x }
    }
}

impl PicoDelta {
    /// δ as a float, for calibrating the mechanism only (never for accounting). Rounded down, so
    /// a mechanism calibrated to it never spends more than the integer allotment.
    pub fn as_f64_down(self) -> f64 {
        let x = self.0 as f64 / 1e12;
        if x > 0.0 { x.next_down() } else { x }
    }
}

impl fmt::Display for MicroEpsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for PicoDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}e-12", self.0)
    }
}

/// A survey's total privacy budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub epsilon_total: MicroEpsilon,
    pub delta_total: PicoDelta,
}

/// The mechanism a spend was made with (kept with the spend for the record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// Pure ε-DP (δ = 0): the discrete Laplace counts and Laplace sums of [`super::release_dp`].
    Laplace,
    /// Approximate (ε, δ)-DP: the discrete Gaussian counts and Gaussian sums of
    /// [`super::release_dp`], calibrated through zero-concentrated DP.
    Gaussian,
}

/// One release's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spend {
    pub epsilon: MicroEpsilon,
    pub delta: PicoDelta,
    pub mechanism: Mechanism,
}

/// The request would take the spends past the budget (the service answers FAILED_PRECONDITION
/// `PRIVACY_BUDGET_EXHAUSTED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "privacy budget exhausted: spent ε {epsilon_spent} δ {delta_spent} of ε {} δ {}, requested ε {} δ {}",
    budget.epsilon_total, budget.delta_total, request.epsilon, request.delta
)]
pub struct BudgetExhausted {
    pub budget: Budget,
    /// What the earlier spends add up to (saturated at `u64::MAX` on overflow).
    pub epsilon_spent: MicroEpsilon,
    pub delta_spent: PicoDelta,
    pub request: Spend,
}

/// Sum of `spent`, `None` on overflow.
fn total(spent: &[Spend]) -> Option<(u64, u64)> {
    spent.iter().try_fold((0u64, 0u64), |(e, d), s| {
        Some((e.checked_add(s.epsilon.0)?, d.checked_add(s.delta.0)?))
    })
}

/// What is left of `budget` after `spent` (zero when overspent or on overflow).
pub fn remaining(budget: &Budget, spent: &[Spend]) -> (MicroEpsilon, PicoDelta) {
    match total(spent) {
        Some((e, d)) => (
            MicroEpsilon(budget.epsilon_total.0.saturating_sub(e)),
            PicoDelta(budget.delta_total.0.saturating_sub(d)),
        ),
        None => (MicroEpsilon(0), PicoDelta(0)),
    }
}

/// `Ok` when `request` fits in `budget` beside `spent` by sequential composition (ε and δ each
/// add up); pure, so a refused request changes nothing.
pub fn check(budget: &Budget, spent: &[Spend], request: &Spend) -> Result<(), BudgetExhausted> {
    let sums = total(spent);
    let fits = sums.and_then(|(e, d)| {
        let e = e.checked_add(request.epsilon.0)?;
        let d = d.checked_add(request.delta.0)?;
        Some(e <= budget.epsilon_total.0 && d <= budget.delta_total.0)
    });
    if fits == Some(true) {
        return Ok(());
    }
    let (e, d) = sums.unwrap_or((u64::MAX, u64::MAX));
    Err(BudgetExhausted {
        budget: *budget,
        epsilon_spent: MicroEpsilon(e),
        delta_spent: PicoDelta(d),
        request: *request,
    })
}
