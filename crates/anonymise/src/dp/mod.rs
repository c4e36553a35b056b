//! Differentially private releases of survey responses: noisy counts per option and noisy
//! bounded means, per cohort and overall, with OpenDP's mechanisms, under a privacy budget.
//!
//! # Privacy unit and neighbouring
//! One response is one respondent (the service must make sure a respondent answers a survey
//! once). Neighbouring data sets differ by adding or removing one response ("unbounded" DP); the
//! number of respondents is therefore private too and is released noisy.
//!
//! # Splitting ε
//! The request's ε is split evenly over the questions (sequential composition: one respondent
//! appears in every question), in whole millionths, rounded down; what the rounding leaves is not
//! spent, and [`DpRelease::spend`] records what was. Within a question, the cohorts are disjoint
//! (one response has one cohort label), so each cohort's query gets the question's whole ε
//! (parallel composition). The cohort list is the caller's and must not depend on the data (e.g.
//! all course runs of the survey), or which cohorts appear would itself leak; a cohort without
//! responses is released (as noise) like any other. Overall figures are sums of the cohorts' noisy
//! values: post-processing, at no further cost.
//!
//! # Queries and sensitivities (L1, add/remove one respondent)
//! * Rating and single choice: the histogram of one cohort, sensitivity 1 (one respondent adds one
//!   to one count). n is the sum of the noisy counts; a rating mean is `Σ v·count / n` of the
//!   noisy counts (post-processing), clamped to `1..=scale`.
//! * Multiple choice: the vector `[count of option 0, …, count of option k-1, n]`. A respondent
//!   contributes to at most `max_choices` options (their lowest-numbered distinct choices are
//!   kept, the rest dropped, which biases counts of high-numbered options down when respondents
//!   pick more than that) and to n, so the sensitivity is `max_choices + 1`.
//! * Number: half the question's ε to the count, half to the sum of the values clamped to the
//!   declared bounds and centred on their midpoint (sensitivity `(max - min) / 2`); the mean is
//!   `midpoint + sum / count`, clamped to the bounds, `None` when the noisy count is below 1.
//!
//! Counts use OpenDP's `make_laplace` over integers (discrete Laplace), sums `make_laplace` over
//! floats (OpenDP samples it discretely too, at granularity `2^k`); each measurement's own privacy
//! map is asked whether it stays within the allotted ε before it is invoked. Negative noisy counts
//! are reported as 0 (post-processing, so no privacy cost; it biases small counts up).
//!
//! # OpenDP `contrib` (not yet vetted upstream)
//! `opendp::measurements::make_laplace` is a `contrib` constructor (the crate's `contrib` feature;
//! its proof has not been reviewed by OpenDP's vetting process). The domains and metrics used
//! (`AtomDomain`, `VectorDomain`, `AbsoluteDistance`, `L1Distance`) are not feature-gated.

mod budget;

use std::collections::BTreeMap;

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_laplace;
use opendp::metrics::{AbsoluteDistance, L1Distance};

pub use budget::{
    Budget, BudgetExhausted, Mechanism, MicroEpsilon, PicoDelta, Spend, check, remaining,
};

use crate::aggregate::{
    AggregateError, Answer, Means, Question, QuestionKind, Response, distinct, validate_questions,
    validate_responses,
};

/// What to release and at what cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpRequest {
    /// The release's ε, split over the questions.
    pub epsilon: MicroEpsilon,
    /// The cohorts to release, fixed independently of the responses (see the module doc).
    pub cohorts: Vec<String>,
    /// Contribution bound of a multiple-choice respondent (at least 1).
    pub max_choices: u16,
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
    /// Noisy counts per cohort and option (empty rows for numbers), negatives reported as 0.
    pub counts: Vec<Vec<u64>>,
    /// Noisy counts per option over all cohorts (sums of the cohorts' noisy counts).
    pub overall: Vec<u64>,
    /// Noisy respondents per cohort and overall.
    pub n: Vec<u64>,
    pub n_total: u64,
    /// Ratings and numbers: noisy means within the declared bounds.
    pub means: Option<Means>,
    /// Laplace scale of the count noise (standard deviation is `scale·√2`), for error bars.
    pub count_scale: f64,
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
    #[error("max_choices must be at least 1")]
    MaxChoices,
    #[error("a response names a cohort not in the request: {0}")]
    UnknownCohort(String),
    #[error("the mechanism could not be built within the allotted ε: {0}")]
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
    let per_question = per_question(questions.len(), request.epsilon)?;
    Ok(Spend {
        epsilon: MicroEpsilon(per_question.0 * questions.len() as u64),
        delta: PicoDelta(0),
        mechanism: Mechanism::Laplace,
    })
}

fn per_question(questions: usize, epsilon: MicroEpsilon) -> Result<MicroEpsilon, DpError> {
    let q = (questions as u64).max(1);
    let each = epsilon.0 / q;
    if each == 0 {
        return Err(DpError::EpsilonTooSmall { epsilon, questions });
    }
    Ok(MicroEpsilon(each))
}

/// Noisy integer vector with L1 `sensitivity` at `epsilon` (discrete Laplace); the scale is
/// widened by a hair when float rounding would take the measurement's own map over `epsilon`.
fn laplace_counts(values: &[i64], sensitivity: i64, epsilon: f64) -> Result<Vec<i64>, DpError> {
    let mut scale = sensitivity as f64 / epsilon;
    for _ in 0..4 {
        let m = make_laplace(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L1Distance::<i64>::default(),
            scale,
            None,
        )?;
        if m.map(&sensitivity)? <= epsilon {
            return Ok(m.invoke(&values.to_vec())?);
        }
        scale *= 1.0 + 1e-9;
    }
    Err(DpError::Mechanism(format!(
        "no Laplace scale found for sensitivity {sensitivity} at ε {epsilon}"
    )))
}

/// Noisy real value with absolute `sensitivity` at `epsilon`.
fn laplace_sum(value: f64, sensitivity: f64, epsilon: f64) -> Result<f64, DpError> {
    let mut scale = sensitivity / epsilon;
    for _ in 0..4 {
        let m = make_laplace(
            AtomDomain::<f64>::new_non_nan(),
            AbsoluteDistance::<f64>::default(),
            scale,
            None,
        )?;
        if m.map(&sensitivity)? <= epsilon {
            return Ok(m.invoke(&value)?);
        }
        scale *= 1.0 + 1e-6;
    }
    Err(DpError::Mechanism(format!(
        "no Laplace scale found for sensitivity {sensitivity} at ε {epsilon}"
    )))
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
    let eps_q = per_question(questions.len(), request.epsilon)?;
    let eps = eps_q.as_f64_down();

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
                let noisy = counts
                    .iter()
                    .map(|c| laplace_counts(c, 1, eps))
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
                    overall: overall_raw.iter().map(|&c| nonneg(c)).collect(),
                    n_total: n.iter().sum(),
                    counts,
                    n,
                    means,
                    count_scale: 1.0 / eps,
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
                let sensitivity = i64::from(request.max_choices) + 1;
                let noisy = counts
                    .iter()
                    .map(|c| laplace_counts(c, sensitivity, eps))
                    .collect::<Result<Vec<_>, _>>()?;
                let overall: Vec<i64> = (0..=k)
                    .map(|o| noisy.iter().map(|row| row[o]).sum())
                    .collect();
                DpQuestion {
                    id: question.id.clone(),
                    epsilon: eps_q,
                    counts: noisy
                        .iter()
                        .map(|row| row[..k].iter().map(|&c| nonneg(c)).collect())
                        .collect(),
                    overall: overall[..k].iter().map(|&c| nonneg(c)).collect(),
                    n: noisy.iter().map(|row| nonneg(row[k])).collect(),
                    n_total: nonneg(overall[k]),
                    means: None,
                    count_scale: sensitivity as f64 / eps,
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
                let eps_half = eps / 2.0;
                let noisy_n = n
                    .iter()
                    .map(|&c| Ok(laplace_counts(&[c], 1, eps_half)?[0]))
                    .collect::<Result<Vec<i64>, DpError>>()?;
                let noisy_sum = sum
                    .iter()
                    .map(|&s| laplace_sum(s, half, eps_half))
                    .collect::<Result<Vec<f64>, _>>()?;
                let mean = |n: i64, s: f64| (n >= 1).then(|| (mid + s / n as f64).clamp(min, max));
                let n_all: i64 = noisy_n.iter().sum();
                let s_all: f64 = noisy_sum.iter().sum();
                DpQuestion {
                    id: question.id.clone(),
                    epsilon: eps_q,
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
                    count_scale: 1.0 / eps_half,
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
