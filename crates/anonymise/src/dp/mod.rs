//! Differentially private releases of survey responses: noisy counts per option and noisy
//! bounded means, per cohort and overall, with OpenDP's mechanisms, under a privacy budget.
//!
//! # Privacy unit and neighbouring
//! One response is one respondent (the service must make sure a respondent answers a survey
//! once). Neighbouring data sets differ by adding or removing one response ("unbounded" DP); the
//! number of respondents is therefore private too and is released noisy.
//!
//! # Mechanisms
//! [`Mechanism::Laplace`] gives pure ε-DP (δ must be 0); [`Mechanism::Gaussian`] gives
//! approximate (ε, δ)-DP (0 < δ < 1). The Gaussian's noise grows with the L2 rather than the L1
//! sensitivity, which is what makes it worth a δ for multiple-choice questions with a large
//! `max_choices`. It is not worth it for single counts: at ε = 1 and δ = 10⁻⁶ (per question) its σ
//! for one count per respondent is 4.5, against the Laplace's standard deviation of 1.4; the two
//! are level at about ten counts per respondent (`max_choices` 9).
//!
//! # Splitting ε and δ
//! The request's ε and δ are split evenly over the questions (sequential composition: one
//! respondent appears in every question), in whole millionths of ε and whole 10⁻¹² of δ, rounded
//! down; what the rounding leaves is not spent, and [`DpRelease::spend`] records what was. Within
//! a question, the cohorts are disjoint (one response has one cohort label), so each cohort's query
//! gets the question's whole ε and δ (parallel composition). The cohort list is the caller's and
//! must not depend on the data (e.g. all course runs of the survey), or which cohorts appear would
//! itself leak; a cohort without responses is released (as noise) like any other. Overall figures
//! are sums of the cohorts' noisy values: post-processing, at no further cost.
//!
//! # Queries and sensitivities (add/remove one respondent)
//! Laplace noise is calibrated to the L1 sensitivity, Gaussian noise to the L2 sensitivity.
//! * Rating and single choice: the histogram of one cohort; one respondent adds one to one count,
//!   so L1 = L2 = 1. n is the sum of the noisy counts; a rating mean is `Σ v·count / n` of the
//!   noisy counts (post-processing), clamped to `1..=scale`.
//! * Multiple choice: the vector `[count of option 0, …, count of option k-1, n]`. A respondent
//!   contributes to at most `max_choices` options (their lowest-numbered distinct choices are
//!   kept, the rest dropped, which biases counts of high-numbered options down when respondents
//!   pick more than that) and to n: one added to each of at most `max_choices + 1` entries, so
//!   L1 = `max_choices + 1` and L2 = `√(max_choices + 1)` (the float rounded up, so it is never
//!   understated).
//! * Number: half the question's ε (and δ) to the count (L1 = L2 = 1), half to the sum of the
//!   values clamped to the declared bounds and centred on their midpoint (a scalar with
//!   sensitivity `(max - min) / 2`); the mean is `midpoint + sum / count`, clamped to the bounds,
//!   `None` when the noisy count is below 1.
//!
//! # Noise and calibration
//! Each query's measurement is built once per question and invoked for every cohort, and its own
//! privacy map is asked whether it stays within the allotment before it is invoked.
//! * Laplace: counts use OpenDP's `make_laplace` over integers (discrete Laplace), sums
//!   `make_laplace` over floats (OpenDP samples it discretely too, at granularity `2^k`). The
//!   scale is `sensitivity / ε`, widened by a hair when float rounding takes the map over ε.
//! * Gaussian: counts use `make_gaussian` over integers (discrete Gaussian), sums `make_gaussian`
//!   over floats (sampled discretely at granularity `2^k`). Its map answers ρ of zero-concentrated
//!   DP; `make_zCDP_to_approxDP` turns that into a privacy profile δ(ε), and `make_fix_delta` fixes
//!   δ at the allotment, so the chained measurement's map answers the ε spent at that δ. There is
//!   no closed form for σ under that conversion, so σ is found by bisection: the smallest σ (to a
//!   relative 10⁻⁹) at which the converted measurement's profile gives δ(ε) within the allotted
//!   δ. Bisection only ever keeps a σ the map has accepted, so float rounding in the map cannot
//!   make it overspend; and the fixed-δ measurement that is invoked has its own map checked
//!   against the allotted ε first (σ widened by a hair when that map's own search over ε lands
//!   just above it).
//!
//! Negative noisy counts are reported as 0 (post-processing, so no privacy cost; it biases small
//! counts up). [`DpQuestion::count_scale`] and [`DpQuestion::sum_scale`] record the noise scale of
//! each query (Laplace scale b, or Gaussian σ) for error bars.
//!
//! # OpenDP `contrib` (not yet vetted upstream)
//! Every OpenDP constructor used here is a `contrib` one in 0.16: its module is compiled only
//! with the crate's `contrib` feature, which marks code whose proofs have not been through
//! OpenDP's vetting process.
//! * `opendp::measurements::make_laplace` and `make_gaussian` (module `measurements::noise`):
//!   their noise and privacy maps carry proof documents (`#[proven]`), not yet vetted.
//! * `opendp::combinators::make_zCDP_to_approxDP` (module `combinators::measure_cast`): the
//!   ρ-to-δ(ε) bound it uses (`cdp_delta`, after Canonne, Kamath and Steinke 2020) has a proof
//!   document; the combinator itself has none.
//! * `opendp::combinators::make_fix_delta` (module `combinators::fix_delta`): no proof document.
//!
//! The domains, metrics and measures used (`AtomDomain`, `VectorDomain`, `AbsoluteDistance`,
//! `L1Distance`, `L2Distance`, `MaxDivergence`, `Approximate`, `ZeroConcentratedDivergence`) are
//! not feature-gated.

mod budget;

use std::collections::BTreeMap;

use opendp::combinators::{make_fix_delta, make_zCDP_to_approxDP};
use opendp::core::{Domain, Measurement, Metric, MetricSpace};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::error::Fallible;
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L1Distance, L2Distance};

pub use budget::{
    Budget, BudgetExhausted, Mechanism, MicroEpsilon, PicoDelta, Spend, check, remaining,
};

use crate::aggregate::{
    AggregateError, Answer, Means, Question, QuestionKind, Response, distinct, validate_questions,
    validate_responses,
};

/// δ = 1 in [`PicoDelta`] units: a δ this large promises nothing.
const DELTA_ONE: u64 = 1_000_000_000_000;

/// What to release and at what cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpRequest {
    pub mechanism: Mechanism,
    /// The release's ε, split over the questions.
    pub epsilon: MicroEpsilon,
    /// The release's δ, split over the questions like ε: 0 for [`Mechanism::Laplace`], strictly
    /// between 0 and 1 (`1..10¹²` units) for [`Mechanism::Gaussian`].
    pub delta: PicoDelta,
    /// The cohorts to release, fixed independently of the responses (see the module doc).
    pub cohorts: Vec<String>,
    /// Contribution bound of a multiple-choice respondent (at least 1).
    pub max_choices: u16,
}

impl DpRequest {
    /// A pure ε-DP release (δ = 0).
    pub fn laplace(epsilon: MicroEpsilon, cohorts: Vec<String>, max_choices: u16) -> Self {
        DpRequest {
            mechanism: Mechanism::Laplace,
            epsilon,
            delta: PicoDelta(0),
            cohorts,
            max_choices,
        }
    }

    /// An (ε, δ)-DP release with Gaussian noise.
    pub fn gaussian(
        epsilon: MicroEpsilon,
        delta: PicoDelta,
        cohorts: Vec<String>,
        max_choices: u16,
    ) -> Self {
        DpRequest {
            mechanism: Mechanism::Gaussian,
            epsilon,
            delta,
            cohorts,
            max_choices,
        }
    }
}

/// A differentially private release.
#[derive(Clone, Debug, PartialEq)]
pub struct DpRelease {
    /// The requested cohorts, in row order.
    pub cohorts: Vec<String>,
    pub questions: Vec<DpQuestion>,
    /// What this release cost: record it with the survey's spends.
    pub spend: Spend,
}

/// One question's noisy figures. Noise, not suppression, protects them: nothing is withheld.
#[derive(Clone, Debug, PartialEq)]
pub struct DpQuestion {
    pub id: String,
    /// ε of each cohort's query for this question (parallel over cohorts).
    pub epsilon: MicroEpsilon,
    /// δ of each cohort's query for this question (0 for Laplace).
    pub delta: PicoDelta,
    /// Noisy counts per cohort and option (empty rows for numbers), negatives reported as 0.
    pub counts: Vec<Vec<u64>>,
    /// Noisy counts per option over all cohorts (sums of the cohorts' noisy counts).
    pub overall: Vec<u64>,
    /// Noisy respondents per cohort and overall.
    pub n: Vec<u64>,
    pub n_total: u64,
    /// Ratings and numbers: noisy means within the declared bounds.
    pub means: Option<Means>,
    /// Scale of the noise on each count (and on n), for error bars. Laplace: the scale b (the
    /// standard deviation is `b·√2`). Gaussian: σ, the standard deviation of the Gaussian the
    /// discrete Gaussian is built on (the discrete one's own is slightly below σ, by a negligible
    /// amount once σ is above 1). Before the clamp at 0 and before summing: an overall count over
    /// c cohorts has `√c` times the spread.
    pub count_scale: f64,
    /// Numbers only: the same scale for the noise on each cohort's centred sum.
    pub sum_scale: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error(transparent)]
    Budget(#[from] BudgetExhausted),
    #[error(transparent)]
    Invalid(#[from] AggregateError),
    #[error(
        "ε of {epsilon} over {questions} questions leaves less than one millionth per question"
    )]
    EpsilonTooSmall {
        epsilon: MicroEpsilon,
        questions: usize,
    },
    #[error("the Laplace mechanism is pure ε-DP: δ must be 0, not {0}")]
    DeltaWithLaplace(PicoDelta),
    #[error("the Gaussian mechanism needs 0 < δ < 1, not δ = {0}")]
    DeltaOutOfRange(PicoDelta),
    #[error("δ of {delta} over {questions} questions leaves less than 10⁻¹² per question")]
    DeltaTooSmall { delta: PicoDelta, questions: usize },
    #[error("max_choices must be at least 1")]
    MaxChoices,
    #[error("a response names a cohort not in the request: {0}")]
    UnknownCohort(String),
    #[error("the mechanism could not be built within the allotted ε and δ: {0}")]
    Mechanism(String),
}

impl From<opendp::error::Error> for DpError {
    fn from(e: opendp::error::Error) -> Self {
        DpError::Mechanism(e.to_string())
    }
}

/// The spend of `request` over `questions`, without touching any response: what the service
/// checks against the budget (the release itself checks again).
pub fn plan(questions: &[Question], request: &DpRequest) -> Result<Spend, DpError> {
    let (epsilon, delta) = per_question(questions.len(), request)?;
    let q = questions.len() as u64;
    // No overflow: each share is at most the request's total divided by q.
    Ok(Spend {
        epsilon: MicroEpsilon(epsilon.0 * q),
        delta: PicoDelta(delta.0 * q),
        mechanism: request.mechanism,
    })
}

/// Each question's share of the request's ε and δ, after checking δ suits the mechanism.
fn per_question(
    questions: usize,
    request: &DpRequest,
) -> Result<(MicroEpsilon, PicoDelta), DpError> {
    let DpRequest {
        mechanism,
        epsilon,
        delta,
        ..
    } = *request;
    match mechanism {
        Mechanism::Laplace if delta.0 != 0 => return Err(DpError::DeltaWithLaplace(delta)),
        Mechanism::Gaussian if delta.0 == 0 || delta.0 >= DELTA_ONE => {
            return Err(DpError::DeltaOutOfRange(delta));
        }
        _ => {}
    }
    let q = (questions as u64).max(1);
    let each = epsilon.0 / q;
    if each == 0 {
        return Err(DpError::EpsilonTooSmall { epsilon, questions });
    }
    let each_delta = delta.0 / q;
    if mechanism == Mechanism::Gaussian && each_delta == 0 {
        return Err(DpError::DeltaTooSmall { delta, questions });
    }
    Ok((MicroEpsilon(each), PicoDelta(each_delta)))
}

/// What one query may spend, as floats rounded down from the integer allotment.
#[derive(Clone, Copy, Debug)]
struct Allotment {
    mechanism: Mechanism,
    epsilon: f64,
    delta: f64,
}

impl Allotment {
    /// Half of each (a number question's count and sum). Halving a float is exact, so the two
    /// halves never add up to more than the whole.
    fn half(self) -> Self {
        Allotment {
            epsilon: self.epsilon / 2.0,
            delta: self.delta / 2.0,
            ..self
        }
    }
}

/// A checked measurement's invocation, with its type (domains, metrics, measure) erased so that
/// Laplace and Gaussian measurements can stand in for each other.
type Invoke<T> = Box<dyn Fn(&T) -> Fallible<T>>;

/// A query's measurement, calibrated and checked once per question and invoked for every cohort.
struct Noise<T> {
    /// Laplace scale b, or Gaussian σ.
    scale: f64,
    release: Invoke<T>,
}

impl<T> Noise<T> {
    fn release(&self, value: &T) -> Result<T, DpError> {
        Ok((self.release)(value)?)
    }
}

/// Noise for an integer vector to which one respondent adds one to at most `entries` entries
/// (L1 sensitivity `entries`, L2 `√entries`).
fn count_noise(allot: Allotment, entries: u32) -> Result<Noise<Vec<i64>>, DpError> {
    match allot.mechanism {
        Mechanism::Laplace => {
            let sensitivity = i64::from(entries);
            laplace(
                |scale| {
                    make_laplace(
                        VectorDomain::new(AtomDomain::<i64>::default()),
                        L1Distance::<i64>::default(),
                        scale,
                        None,
                    )
                },
                sensitivity,
                sensitivity as f64,
                1e-9,
                allot,
            )
        }
        Mechanism::Gaussian => gaussian(
            |scale| {
                make_gaussian::<_, _, ZeroConcentratedDivergence>(
                    VectorDomain::new(AtomDomain::<i64>::default()),
                    L2Distance::<f64>::default(),
                    scale,
                    None,
                )
            },
            sqrt_up(entries),
            allot,
        ),
    }
}

/// Noise for a real value with absolute `sensitivity`.
fn sum_noise(allot: Allotment, sensitivity: f64) -> Result<Noise<f64>, DpError> {
    match allot.mechanism {
        Mechanism::Laplace => laplace(
            |scale| {
                make_laplace(
                    AtomDomain::<f64>::new_non_nan(),
                    AbsoluteDistance::<f64>::default(),
                    scale,
                    None,
                )
            },
            sensitivity,
            sensitivity,
            1e-6,
            allot,
        ),
        Mechanism::Gaussian => gaussian(
            |scale| {
                make_gaussian::<_, _, ZeroConcentratedDivergence>(
                    AtomDomain::<f64>::new_non_nan(),
                    AbsoluteDistance::<f64>::default(),
                    scale,
                    None,
                )
            },
            sensitivity,
            allot,
        ),
    }
}

/// The Laplace noise of scale `sensitivity / ε` (`magnitude` is the sensitivity as a float),
/// widened by the factor `1 + step` a few times if the measurement's own privacy map finds it
/// just over the allotted ε (the map rounds conservatively).
fn laplace<DI, MI>(
    make: impl Fn(f64) -> Fallible<Measurement<DI, MI, MaxDivergence, DI::Carrier>>,
    sensitivity: MI::Distance,
    magnitude: f64,
    step: f64,
    allot: Allotment,
) -> Result<Noise<DI::Carrier>, DpError>
where
    DI: Domain + 'static,
    MI: Metric + 'static,
    (DI, MI): MetricSpace,
    DI::Carrier: 'static,
{
    let mut scale = magnitude / allot.epsilon;
    for _ in 0..4 {
        let m = make(scale)?;
        if m.map(&sensitivity)? <= allot.epsilon {
            return Ok(Noise {
                scale,
                release: Box::new(move |x| m.invoke(x)),
            });
        }
        scale *= 1.0 + step;
    }
    Err(DpError::Mechanism(format!(
        "no Laplace scale found for sensitivity {magnitude} at ε {}",
        allot.epsilon
    )))
}

/// `√n` rounded up to a float: f64's square root is correctly rounded, so it may fall just below
/// the true root, which would understate the sensitivity.
fn sqrt_up(n: u32) -> f64 {
    let root = f64::from(n).sqrt();
    let exact = root.fract() == 0.0 && (root as u64) * (root as u64) == u64::from(n);
    if exact { root } else { root.next_up() }
}

/// Gaussian noise with the smallest σ (to a relative 10⁻⁹) that stays within the allotted ε and
/// δ for `sensitivity`. `zcdp` builds the ρ-zCDP measurement at a σ.
fn gaussian<DI, MI>(
    zcdp: impl Fn(f64) -> Fallible<Measurement<DI, MI, ZeroConcentratedDivergence, DI::Carrier>>,
    sensitivity: f64,
    allot: Allotment,
) -> Result<Noise<DI::Carrier>, DpError>
where
    DI: Domain + 'static,
    MI: Metric<Distance = f64> + 'static,
    (DI, MI): MetricSpace,
    DI::Carrier: 'static,
{
    // The search asks the converted measurement's privacy profile for δ at the allotted ε: one
    // evaluation of the zCDP-to-(ε, δ) bound, where `make_fix_delta`'s map searches over ε for
    // the δ (about sixty of them: milliseconds in an unoptimised build, too slow for tens of
    // search steps per query). A σ the map cannot answer for (an error, e.g. at an absurd
    // scale) counts as not within: the search only ever keeps a σ the map has accepted.
    let within = |scale: f64| {
        let delta = zcdp(scale)
            .and_then(make_zCDP_to_approxDP)
            .and_then(|m| m.map(&sensitivity))
            .and_then(|profile| profile.delta(allot.epsilon));
        matches!(delta, Ok(d) if d <= allot.delta)
    };
    let fail = || {
        DpError::Mechanism(format!(
            "no Gaussian σ found for sensitivity {sensitivity} at ε {} δ {}",
            allot.epsilon, allot.delta
        ))
    };
    // The classic bound's σ, a starting point only: it is not valid for ε ≥ 1, and the zCDP
    // conversion usually allows less.
    let guess = sensitivity * (2.0 * (1.25 / allot.delta).ln()).sqrt() / allot.epsilon;
    if !guess.is_finite() {
        return Err(fail());
    }
    // Bracket: hi within, lo not (or negligible).
    let mut hi = guess;
    let mut doublings = 0;
    while !within(hi) {
        hi *= 2.0;
        doublings += 1;
        if doublings > 64 || !hi.is_finite() {
            return Err(fail());
        }
    }
    let mut lo = hi / 2.0;
    for _ in 0..64 {
        if !within(lo) {
            break;
        }
        hi = lo;
        lo /= 2.0;
    }
    while hi - lo > hi * 1e-9 {
        let mid = lo + (hi - lo) / 2.0;
        if within(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // The measurement released with has δ fixed (`make_fix_delta`), and its own map must answer
    // an ε within the allotment. Its search over ε may land a hair above where the profile's δ
    // was checked, so the σ is widened by a hair when it does, as for the Laplace.
    for _ in 0..4 {
        let m = make_fix_delta(&make_zCDP_to_approxDP(zcdp(hi)?)?, allot.delta)?;
        let (e, d) = m.map(&sensitivity)?;
        if e <= allot.epsilon && d <= allot.delta {
            return Ok(Noise {
                scale: hi,
                release: Box::new(move |x| m.invoke(x)),
            });
        }
        hi *= 1.0 + 1e-9;
    }
    Err(fail())
}

fn nonneg(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

/// Makes a differentially private release, refusing it (before touching any response) when it
/// would exceed `budget` beside `spent`.
pub fn release_dp(
    questions: &[Question],
    responses: &[Response],
    request: &DpRequest,
    budget: &Budget,
    spent: &[Spend],
) -> Result<DpRelease, DpError> {
    validate_questions(questions)?;
    if request.max_choices == 0 {
        return Err(DpError::MaxChoices);
    }
    let spend = plan(questions, request)?;
    check(budget, spent, &spend)?;
    validate_responses(questions, responses)?;
    let (eps_q, delta_q) = per_question(questions.len(), request)?;
    let allot = Allotment {
        mechanism: request.mechanism,
        epsilon: eps_q.as_f64_down(),
        delta: delta_q.as_f64_down(),
    };

    let row_of: BTreeMap<&str, usize> = request
        .cohorts
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let rows = responses
        .iter()
        .map(|r| {
            row_of
                .get(r.cohort.as_str())
                .copied()
                .ok_or_else(|| DpError::UnknownCohort(r.cohort.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cohorts = request.cohorts.len();

    let mut out = Vec::with_capacity(questions.len());
    for (q, question) in questions.iter().enumerate() {
        let answers = || {
            responses
                .iter()
                .zip(&rows)
                .filter_map(move |(resp, &row)| Some((row, resp.answers[q].as_ref()?)))
        };
        let released = match question.kind {
            QuestionKind::Rating { scale: k } | QuestionKind::SingleChoice { options: k } => {
                let rating = matches!(question.kind, QuestionKind::Rating { .. });
                let mut counts = vec![vec![0i64; usize::from(k)]; cohorts];
                for (row, answer) in answers() {
                    match answer {
                        Answer::Rating(v) => counts[row][usize::from(*v) - 1] += 1,
                        Answer::Choice(o) => counts[row][usize::from(*o)] += 1,
                        _ => {}
                    }
                }
                let noise = count_noise(allot, 1)?;
                let noisy = counts
                    .iter()
                    .map(|c| noise.release(c))
                    .collect::<Result<Vec<_>, _>>()?;
                let mean = |row: &[i64]| {
                    let (mut n, mut s) = (0i64, 0i64);
                    for (i, &c) in row.iter().enumerate() {
                        let c = c.max(0);
                        n += c;
                        s += c * (i as i64 + 1);
                    }
                    (n > 0).then(|| (s as f64 / n as f64).clamp(1.0, f64::from(k)))
                };
                let overall_raw: Vec<i64> = (0..usize::from(k))
                    .map(|o| noisy.iter().map(|row| row[o]).sum())
                    .collect();
                let means = rating.then(|| Means {
                    cohorts: noisy.iter().map(|row| mean(row)).collect(),
                    overall: mean(&overall_raw),
                });
                let counts: Vec<Vec<u64>> = noisy
                    .iter()
                    .map(|row| row.iter().map(|&c| nonneg(c)).collect())
                    .collect();
                let n: Vec<u64> = counts.iter().map(|row| row.iter().sum()).collect();
                DpQuestion {
                    id: question.id.clone(),
                    epsilon: eps_q,
                    delta: delta_q,
                    overall: overall_raw.iter().map(|&c| nonneg(c)).collect(),
                    n_total: n.iter().sum(),
                    counts,
                    n,
                    means,
                    count_scale: noise.scale,
                    sum_scale: None,
                }
            }
            QuestionKind::MultipleChoice { options } => {
                let k = usize::from(options);
                let m = usize::from(request.max_choices);
                // Per cohort: counts of options 0..k, then n.
                let mut counts = vec![vec![0i64; k + 1]; cohorts];
                for (row, answer) in answers() {
                    if let Answer::Choices(os) = answer {
                        counts[row][k] += 1;
                        for o in distinct(os).into_iter().take(m) {
                            counts[row][usize::from(o)] += 1;
                        }
                    }
                }
                let noise = count_noise(allot, u32::from(request.max_choices) + 1)?;
                let noisy = counts
                    .iter()
                    .map(|c| noise.release(c))
                    .collect::<Result<Vec<_>, _>>()?;
                let overall: Vec<i64> = (0..=k)
                    .map(|o| noisy.iter().map(|row| row[o]).sum())
                    .collect();
                DpQuestion {
                    id: question.id.clone(),
                    epsilon: eps_q,
                    delta: delta_q,
                    counts: noisy
                        .iter()
                        .map(|row| row[..k].iter().map(|&c| nonneg(c)).collect())
                        .collect(),
                    overall: overall[..k].iter().map(|&c| nonneg(c)).collect(),
                    n: noisy.iter().map(|row| nonneg(row[k])).collect(),
                    n_total: nonneg(overall[k]),
                    means: None,
                    count_scale: noise.scale,
                    sum_scale: None,
                }
            }
            QuestionKind::Number { min, max } => {
                let mid = min / 2.0 + max / 2.0;
                let half = max / 2.0 - min / 2.0;
                let mut n = vec![0i64; cohorts];
                let mut sum = vec![0f64; cohorts];
                for (row, answer) in answers() {
                    if let Answer::Number(x) = answer {
                        n[row] += 1;
                        // Validated within bounds already; the clamp is what the sensitivity
                        // rests on, so it stays.
                        sum[row] += x.clamp(min, max) - mid;
                    }
                }
                let n_noise = count_noise(allot.half(), 1)?;
                let s_noise = sum_noise(allot.half(), half)?;
                let noisy_n = n
                    .iter()
                    .map(|&c| Ok(n_noise.release(&vec![c])?[0]))
                    .collect::<Result<Vec<i64>, DpError>>()?;
                let noisy_sum = sum
                    .iter()
                    .map(|s| s_noise.release(s))
                    .collect::<Result<Vec<f64>, _>>()?;
                let mean = |n: i64, s: f64| (n >= 1).then(|| (mid + s / n as f64).clamp(min, max));
                let n_all: i64 = noisy_n.iter().sum();
                let s_all: f64 = noisy_sum.iter().sum();
                DpQuestion {
                    id: question.id.clone(),
                    epsilon: eps_q,
                    delta: delta_q,
                    counts: vec![Vec::new(); cohorts],
                    overall: Vec::new(),
                    n: noisy_n.iter().map(|&c| nonneg(c)).collect(),
                    n_total: nonneg(n_all),
                    means: Some(Means {
                        cohorts: noisy_n
                            .iter()
                            .zip(&noisy_sum)
                            .map(|(&n, &s)| mean(n, s))
                            .collect(),
                        overall: mean(n_all, s_all),
                    }),
                    count_scale: n_noise.scale,
                    sum_scale: Some(s_noise.scale),
                }
            }
        };
        out.push(released);
    }
    Ok(DpRelease {
        cohorts: request.cohorts.clone(),
        questions: out,
        spend,
    })
}
