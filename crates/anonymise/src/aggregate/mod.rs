//! Aggregate releases of survey responses: per question, by cohort and overall, the distribution
//! of answers, the number of respondents and (for ratings and numbers) the mean, with a minimum
//! cohort size, small-cell suppression and complementary suppression. This is the default release
//! form; [`crate::dp`] is the differentially private one.
//!
//! The crate takes responses in memory and returns the release; storing it (and the responses) is
//! the survey service's business.
//!
//! # Rules
//! * A cohort with fewer than [`Rules::min_cohort`] responses is withheld entirely: it is named in
//!   [`Release::withheld`], without its count, and counted nowhere, not even in the overall
//!   figures (else "overall minus the released cohorts" would give it back). So the survey's total
//!   response count must not be published beside a release that withholds a cohort.
//! * Each question's table (rows: released cohorts; columns: rating values or options; row totals:
//!   respondents of the cohort who answered; column totals: the overall distribution) goes through
//!   [`suppress`]: cells and column totals with `0 < count < min_cell` are suppressed, then
//!   complements until [`audit`] finds every suppressed value undetermined. Zeros are published
//!   (see `table`'s module doc for why).
//! * A multiple-choice respondent may pick several options, so totals are not sums of the option
//!   cells: each option is its own table with the columns picked / not picked and the same row
//!   totals. The row totals are shared by the option tables, so one that one option table had to
//!   suppress is suppressed in all of them.
//! * A mean adds an equation (`Σ value·count = mean·n`) an attacker could solve suppressed cells
//!   with, so a rating mean (per cohort or overall) is published only when all of its row (or all
//!   column totals) and its n are published, i.e. when it discloses nothing beyond the published
//!   cells. A number question publishes n per cohort and a mean when n ≥ `min_cell`; when exactly
//!   one cohort's mean is withheld the next smallest cohort's mean is withheld with it (or the
//!   overall mean, if no other cohort has one), so it cannot be had from the overall mean. That
//!   last rule is a heuristic over real values, not the exact audit the count tables get.

mod table;

use std::collections::BTreeMap;
use std::fmt;

pub use table::{Cell, Interval, Leak, Position, Table, audit, intervals, suppress};

/// One survey question, as the aggregate (and DP) release needs to know it.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    pub id: String,
    pub kind: QuestionKind,
}

/// The kinds of answer a question takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QuestionKind {
    /// A rating `1..=scale`.
    Rating { scale: u16 },
    /// One option index `0..options`.
    SingleChoice { options: u16 },
    /// A set of option indices `0..options`.
    MultipleChoice { options: u16 },
    /// A number within the declared bounds `min..=max` (finite, `min < max`).
    Number { min: f64, max: f64 },
}

/// One answer; its variant must match the question's kind.
#[derive(Clone, PartialEq)]
pub enum Answer {
    Rating(u16),
    Choice(u16),
    /// Duplicates count once.
    Choices(Vec<u16>),
    Number(f64),
}

impl fmt::Debug for Answer {
    // A respondent's answer is personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One response: its cohort label (course run, group) and one answer per question, in the order
/// of the questions, `None` where the respondent skipped it.
#[derive(Clone, PartialEq)]
pub struct Response {
    pub cohort: String,
    pub answers: Vec<Option<Answer>>,
}

impl fmt::Debug for Response {
    // The answers are personal data, and the cohort with them narrows who gave them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The caller's disclosure thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Cohorts with fewer responses than this are withheld entirely.
    pub min_cohort: u64,
    /// Counts `1..min_cell` are suppressed.
    pub min_cell: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            min_cohort: 10,
            min_cell: 5,
        }
    }
}

/// An aggregate release.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    /// The released cohorts, in row order of every table.
    pub cohorts: Vec<String>,
    /// Cohorts below the minimum size: nothing about them is released, not even their count.
    pub withheld: Vec<String>,
    /// One per question, in question order.
    pub questions: Vec<QuestionRelease>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QuestionRelease {
    pub id: String,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Ratings (columns are the values 1..=scale, so column `c` is rating `c + 1`; with means) and
    /// single choice (columns are the options; `means` is `None`).
    Distribution { table: Table, means: Option<Means> },
    /// One table per option: columns `[picked, not picked]`, row totals the cohort's respondents.
    MultipleChoice { options: Vec<Table> },
    /// Numbers: respondents per cohort and overall, and the means.
    Number {
        n: Vec<u64>,
        n_total: u64,
        means: Means,
    },
}

/// Means per released cohort (row order) and overall; `None` where withheld (or n is 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Means {
    pub cohorts: Vec<Option<f64>>,
    pub overall: Option<f64>,
}

/// Why no release was made.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("question {question}: {reason}")]
    InvalidQuestion {
        question: usize,
        reason: &'static str,
    },
    #[error("response {response} has {got} answers for {expected} questions")]
    WrongLength {
        response: usize,
        got: usize,
        expected: usize,
    },
    // No answer value in the message: it is personal data.
    #[error("response {response}: the answer to question {question} does not fit the question")]
    InvalidAnswer { response: usize, question: usize },
    #[error("question {question}: the suppressed table failed the audit: {leak}")]
    Audit { question: usize, leak: Leak },
}

pub(crate) fn validate_questions(questions: &[Question]) -> Result<(), AggregateError> {
    for (q, question) in questions.iter().enumerate() {
        let reason = match question.kind {
            QuestionKind::Rating { scale: 0 } => Some("a rating scale needs at least one value"),
            QuestionKind::SingleChoice { options: 0 }
            | QuestionKind::MultipleChoice { options: 0 } => {
                Some("a choice needs at least one option")
            }
            QuestionKind::Number { min, max }
                if !(min.is_finite() && max.is_finite() && min < max) =>
            {
                Some("number bounds must be finite with min < max")
            }
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(AggregateError::InvalidQuestion {
                question: q,
                reason,
            });
        }
    }
    Ok(())
}

/// Checks every answer against its question's kind; an answer out of range is an error rather
/// than clamped or dropped, since it means the service stored something the survey did not offer.
pub(crate) fn validate_responses(
    questions: &[Question],
    responses: &[Response],
) -> Result<(), AggregateError> {
    for (i, response) in responses.iter().enumerate() {
        if response.answers.len() != questions.len() {
            return Err(AggregateError::WrongLength {
                response: i,
                got: response.answers.len(),
                expected: questions.len(),
            });
        }
        for (q, (question, answer)) in questions.iter().zip(&response.answers).enumerate() {
            let ok = match (question.kind, answer) {
                (_, None) => true,
                (QuestionKind::Rating { scale }, Some(Answer::Rating(v))) => {
                    (1..=scale).contains(v)
                }
                (QuestionKind::SingleChoice { options }, Some(Answer::Choice(o))) => *o < options,
                (QuestionKind::MultipleChoice { options }, Some(Answer::Choices(os))) => {
                    os.iter().all(|o| *o < options)
                }
                (QuestionKind::Number { min, max }, Some(Answer::Number(x))) => {
                    x.is_finite() && (min..=max).contains(x)
                }
                _ => false,
            };
            if !ok {
                return Err(AggregateError::InvalidAnswer {
                    response: i,
                    question: q,
                });
            }
        }
    }
    Ok(())
}

/// Distinct, sorted option indices of a multiple-choice answer.
pub(crate) fn distinct(options: &[u16]) -> Vec<u16> {
    let mut v = options.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Makes the aggregate release of `responses` to `questions` under `rules`.
pub fn release(
    questions: &[Question],
    responses: &[Response],
    rules: &Rules,
) -> Result<Release, AggregateError> {
    validate_questions(questions)?;
    validate_responses(questions, responses)?;

    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for response in responses {
        *sizes.entry(response.cohort.as_str()).or_default() += 1;
    }
    let mut cohorts = Vec::new();
    let mut withheld = Vec::new();
    let mut row_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (&label, &size) in &sizes {
        if size >= rules.min_cohort {
            row_of.insert(label, cohorts.len());
            cohorts.push(label.to_owned());
        } else {
            withheld.push(label.to_owned());
        }
    }
    let rows: Vec<Option<usize>> = responses
        .iter()
        .map(|r| row_of.get(r.cohort.as_str()).copied())
        .collect();

    let mut released = Vec::with_capacity(questions.len());
    for (q, question) in questions.iter().enumerate() {
        let answers = || {
            responses
                .iter()
                .zip(&rows)
                .filter_map(move |(resp, row)| Some(((*row)?, resp.answers[q].as_ref()?)))
        };
        let audit_err = |leak| AggregateError::Audit { question: q, leak };
        let body = match question.kind {
            QuestionKind::Rating { scale } => {
                let mut counts = vec![vec![0u64; usize::from(scale)]; cohorts.len()];
                for (row, answer) in answers() {
                    if let Answer::Rating(v) = answer {
                        counts[row][usize::from(*v) - 1] += 1;
                    }
                }
                let table = suppress(&counts, rules.min_cell).map_err(audit_err)?;
                let means = rating_means(&counts, &table);
                Body::Distribution {
                    table,
                    means: Some(means),
                }
            }
            QuestionKind::SingleChoice { options } => {
                let mut counts = vec![vec![0u64; usize::from(options)]; cohorts.len()];
                for (row, answer) in answers() {
                    if let Answer::Choice(o) = answer {
                        counts[row][usize::from(*o)] += 1;
                    }
                }
                let table = suppress(&counts, rules.min_cell).map_err(audit_err)?;
                Body::Distribution { table, means: None }
            }
            QuestionKind::MultipleChoice { options } => {
                let mut n = vec![0u64; cohorts.len()];
                let mut picked = vec![vec![0u64; usize::from(options)]; cohorts.len()];
                for (row, answer) in answers() {
                    if let Answer::Choices(os) = answer {
                        n[row] += 1;
                        for o in distinct(os) {
                            picked[row][usize::from(o)] += 1;
                        }
                    }
                }
                let tables: Vec<Vec<Vec<u64>>> = (0..usize::from(options))
                    .map(|o| {
                        (0..cohorts.len())
                            .map(|r| vec![picked[r][o], n[r] - picked[r][o]])
                            .collect()
                    })
                    .collect();
                Body::MultipleChoice {
                    options: suppress_shared_rows(&tables, rules.min_cell).map_err(audit_err)?,
                }
            }
            QuestionKind::Number { .. } => {
                let mut n = vec![0u64; cohorts.len()];
                let mut sum = vec![0f64; cohorts.len()];
                for (row, answer) in answers() {
                    if let Answer::Number(x) = answer {
                        n[row] += 1;
                        sum[row] += x;
                    }
                }
                number_body(&n, &sum, rules.min_cell)
            }
        };
        released.push(QuestionRelease {
            id: question.id.clone(),
            body,
        });
    }
    Ok(Release {
        cohorts,
        withheld,
        questions: released,
    })
}

/// Suppresses the per-option tables of a multiple-choice question until they agree on which row
/// totals are suppressed (monotone: the forced set only grows, so this ends).
fn suppress_shared_rows(tables: &[Vec<Vec<u64>>], min_cell: u64) -> Result<Vec<Table>, Leak> {
    let rows = tables.first().map_or(0, Vec::len);
    let mut forced = vec![false; rows];
    loop {
        let out = tables
            .iter()
            .map(|t| table::suppress_with(t, min_cell, &forced))
            .collect::<Result<Vec<_>, _>>()?;
        let mut grew = false;
        for t in &out {
            for (r, total) in t.row_totals.iter().enumerate() {
                if total.is_suppressed() && !forced[r] {
                    forced[r] = true;
                    grew = true;
                }
            }
        }
        if !grew {
            return Ok(out);
        }
    }
}

/// Means of a rating table, each published only if everything it is computed from is.
fn rating_means(counts: &[Vec<u64>], table: &Table) -> Means {
    let mean = |cells: &mut dyn Iterator<Item = u64>| {
        let (mut n, mut s) = (0u64, 0u64);
        for (i, x) in cells.enumerate() {
            n += x;
            s += x * (i as u64 + 1);
        }
        (n > 0).then(|| s as f64 / n as f64)
    };
    let cohorts = counts
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let published = !table.row_totals[r].is_suppressed()
                && table.cells[r].iter().all(|c| !c.is_suppressed());
            if published {
                mean(&mut row.iter().copied())
            } else {
                None
            }
        })
        .collect();
    let overall_published =
        !table.total.is_suppressed() && table.col_totals.iter().all(|c| !c.is_suppressed());
    let cols = table.col_totals.len();
    let overall = if overall_published {
        mean(&mut (0..cols).map(|c| counts.iter().map(|row| row[c]).sum::<u64>()))
    } else {
        None
    };
    Means { cohorts, overall }
}

/// n and means of a number question (see the module doc for the rule).
fn number_body(n: &[u64], sum: &[f64], min_cell: u64) -> Body {
    let n_total: u64 = n.iter().sum();
    let mut shown: Vec<bool> = n.iter().map(|&k| k > 0 && k >= min_cell).collect();
    // Cohorts with n == 0 have no mean to hide; the ones that matter are nonempty and withheld.
    let hidden = |shown: &[bool]| (0..n.len()).filter(|&r| n[r] > 0 && !shown[r]).count();
    let mut overall_shown = n_total > 0 && n_total >= min_cell;
    if hidden(&shown) == 1 {
        let complement = (0..n.len()).filter(|&r| shown[r]).min_by_key(|&r| n[r]);
        match complement {
            Some(r) => shown[r] = false,
            None => overall_shown = false,
        }
    }
    let cohorts = (0..n.len())
        .map(|r| shown[r].then(|| sum[r] / n[r] as f64))
        .collect();
    let overall = overall_shown.then(|| sum.iter().sum::<f64>() / n_total as f64);
    Body::Number {
        n: n.to_vec(),
        n_total,
        means: Means { cohorts, overall },
    }
}
