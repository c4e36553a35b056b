//! The three forms of release over opened responses: from the stored questions and answers to
//! `tutela-anonymise`'s inputs, and from its releases to the API's results. Pure and CPU-bound:
//! the service runs [`make`] on the blocking pool.

use std::collections::BTreeSet;

use prost::Message;
use tutela_anonymise::aggregate::{self, Answer, Body, Cell, Means, QuestionKind, Rules};
use tutela_anonymise::dp::{self, Budget, DpError, DpRequest, MicroEpsilon, PicoDelta, Spend};
use tutela_anonymise::microdata::{
    self, MicrodataError, QuasiIdentifier, Sensitive, SensitiveKind, Spec,
};
use tutela_policy::validate::Checks;
use tutela_policy::{Error, Precondition, Result};
use tutela_proto::survey::release::Results;
use tutela_proto::survey::{
    AggregateResults, Count, DifferentiallyPrivateParameters, DifferentiallyPrivateResults,
    MicrodataParameters, MicrodataResults, MicrodataRow, NoiseMechanism, QuestionResults,
    ReleaseForm, ResultRow,
};

use super::{Asked, hierarchies};
use crate::answers::{Sealed, Value};
use crate::questions::{self, Kind, Stored as Question};
use crate::responses::precondition;

/// One response, opened: what a release is made from.
pub(crate) struct Respondent {
    pub(crate) response_id: String,
    /// Neither held for review nor withheld by it: its comments may be published.
    pub(crate) comments_publishable: bool,
    pub(crate) cohort: String,
    pub(crate) sealed: Sealed,
}

impl std::fmt::Debug for Respondent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Respondent([redacted])")
    }
}

/// A release made, before it is stored.
pub(crate) struct Made {
    pub(crate) results: Results,
    /// MICRODATA: hierarchy labels and levels, in column order.
    pub(crate) hierarchies: Vec<String>,
    pub(crate) levels: Vec<u32>,
    /// DIFFERENTIALLY_PRIVATE: what it spent.
    pub(crate) spend: Option<Spend>,
}

/// INVALID_ARGUMENT naming `field`.
fn invalid(field: &str, description: &str) -> Error {
    let mut c = Checks::new();
    c.fail(field, description);
    match c.finish() {
        Err(e) => e,
        Ok(()) => Error::internal("a failed check passed"),
    }
}

fn too_few(message: &str) -> Error {
    precondition(Precondition::TooFewResponses, message)
}

/// The questions a release covers: all but free text, which is in no release.
fn analysable(questions: &[Question]) -> Vec<&Question> {
    questions
        .iter()
        .filter(|q| q.kind != Kind::FreeText)
        .collect()
}

fn small(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn to_question(q: &Question) -> aggregate::Question {
    let options = small(u32::try_from(q.options.len()).unwrap_or(u32::MAX));
    aggregate::Question {
        id: q.id.clone(),
        kind: match q.kind {
            Kind::Rating => QuestionKind::Rating {
                scale: small(q.scale_points),
            },
            Kind::SingleChoice => QuestionKind::SingleChoice { options },
            Kind::MultipleChoice | Kind::FreeText => QuestionKind::MultipleChoice { options },
            Kind::Number => {
                let (min, max) = q.bounds.unwrap_or_default();
                QuestionKind::Number { min, max }
            }
        },
    }
}

/// The respondent's answer to `q`, as the anonymiser takes it.
fn answer_of(sealed: &Sealed, q: &Question) -> Option<Answer> {
    let a = sealed.answers.iter().find(|a| a.q == q.id)?;
    Some(match &a.value {
        Value::Rating(r) => Answer::Rating(small(*r)),
        Value::Choice(i) => Answer::Choice(small(*i)),
        Value::Choices(is) => Answer::Choices(is.iter().map(|i| small(*i)).collect()),
        Value::Number(n) => Answer::Number(*n),
        Value::Text(_) => return None,
    })
}

fn responses(questions: &[&Question], respondents: &[&Respondent]) -> Vec<aggregate::Response> {
    respondents
        .iter()
        .map(|r| aggregate::Response {
            cohort: r.cohort.clone(),
            answers: questions.iter().map(|q| answer_of(&r.sealed, q)).collect(),
        })
        .collect()
}

/// The column labels of a question's counts: rating values, or the options' texts.
fn columns(q: &Question) -> Vec<String> {
    match q.kind {
        Kind::Rating => (1..=q.scale_points).map(|v| v.to_string()).collect(),
        Kind::SingleChoice | Kind::MultipleChoice => q.options.clone(),
        Kind::Number | Kind::FreeText => Vec::new(),
    }
}

fn count(cell: Cell) -> Count {
    match cell {
        Cell::Count(value) => Count {
            value,
            suppressed: false,
        },
        Cell::Suppressed => Count {
            value: 0,
            suppressed: true,
        },
    }
}

fn exact(value: u64) -> Count {
    Count {
        value,
        suppressed: false,
    }
}

fn header(q: &Question) -> QuestionResults {
    QuestionResults {
        question_id: q.id.clone(),
        kind: q.kind.number() as i32,
        columns: columns(q),
        ..Default::default()
    }
}

fn mean_of(means: Option<&Means>, row: Option<usize>) -> Option<f64> {
    let means = means?;
    match row {
        Some(r) => means.cohorts.get(r).copied().flatten(),
        None => means.overall,
    }
}

/// A question's aggregate release as the API shows it.
fn aggregate_question(q: &Question, cohorts: &[String], body: &Body) -> QuestionResults {
    let mut out = header(q);
    let row = |cohort: &str, counts: Vec<Count>, respondents: Count, mean: Option<f64>| ResultRow {
        cohort: cohort.to_owned(),
        counts,
        respondents: Some(respondents),
        mean,
    };
    match body {
        Body::Distribution { table, means } => {
            for (r, cohort) in cohorts.iter().enumerate() {
                out.cohorts.push(row(
                    cohort,
                    table.cells[r].iter().copied().map(count).collect(),
                    count(table.row_totals[r]),
                    mean_of(means.as_ref(), Some(r)),
                ));
            }
            out.overall = Some(row(
                "",
                table.col_totals.iter().copied().map(count).collect(),
                count(table.total),
                mean_of(means.as_ref(), None),
            ));
        }
        Body::MultipleChoice { options } => {
            // Each option's table is [picked, not picked] with the shared row totals; "not
            // picked" is the total less "picked", so the picked column is the whole of it.
            let totals = options.first();
            for (r, cohort) in cohorts.iter().enumerate() {
                out.cohorts.push(row(
                    cohort,
                    options.iter().map(|t| count(t.cells[r][0])).collect(),
                    totals.map_or(exact(0), |t| count(t.row_totals[r])),
                    None,
                ));
            }
            out.overall = Some(row(
                "",
                options.iter().map(|t| count(t.col_totals[0])).collect(),
                totals.map_or(exact(0), |t| count(t.total)),
                None,
            ));
        }
        Body::Number { n, n_total, means } => {
            for (r, cohort) in cohorts.iter().enumerate() {
                out.cohorts.push(row(
                    cohort,
                    Vec::new(),
                    exact(n[r]),
                    mean_of(Some(means), Some(r)),
                ));
            }
            out.overall = Some(row("", Vec::new(), exact(*n_total), means.overall));
        }
    }
    out
}

fn make_aggregate(
    a: &tutela_proto::survey::AggregateParameters,
    questions: &[Question],
    respondents: &[Respondent],
) -> Result<Made> {
    let qs = analysable(questions);
    if qs.is_empty() {
        return Err(invalid("form", "the survey has only free-text questions"));
    }
    let all: Vec<&Respondent> = respondents.iter().collect();
    let rules = Rules {
        min_cohort: u64::from(a.min_cohort),
        min_cell: u64::from(a.min_cell),
    };
    let aq: Vec<aggregate::Question> = qs.iter().map(|q| to_question(q)).collect();
    let release =
        aggregate::release(&aq, &responses(&qs, &all), &rules).map_err(Error::internal)?;
    if release.cohorts.is_empty() {
        return Err(too_few(
            "no cohort of the survey has min_cohort responses: nothing can be released",
        ));
    }
    // The comments of the released cohorts' respondents whose comments may be published, sorted
    // so that their order says nothing of who wrote them or when.
    let released: BTreeSet<&str> = release.cohorts.iter().map(String::as_str).collect();
    let mut counted = release.questions.iter();
    let mut out = Vec::with_capacity(questions.len());
    for q in questions {
        if q.kind == Kind::FreeText {
            let mut comments: Vec<String> = respondents
                .iter()
                .filter(|r| r.comments_publishable && released.contains(r.cohort.as_str()))
                .filter_map(|r| {
                    r.sealed.answers.iter().find_map(|a| match &a.value {
                        Value::Text(t) if a.q == q.id && !t.trim().is_empty() => Some(t.clone()),
                        _ => None,
                    })
                })
                .collect();
            comments.sort_unstable();
            out.push(QuestionResults {
                comments,
                ..header(q)
            });
        } else if let Some(r) = counted.next() {
            out.push(aggregate_question(q, &release.cohorts, &r.body));
        }
    }
    Ok(Made {
        results: Results::Aggregate(AggregateResults {
            questions: out,
            cohorts: release.cohorts,
            withheld_cohorts: release.withheld,
        }),
        hierarchies: Vec::new(),
        levels: Vec::new(),
        spend: None,
    })
}

/// Checks a microdata request against the survey: the question is a rating or single choice of
/// it, and the attributes (all declared ones when none are named) are declared.
pub(crate) fn check_microdata(
    m: &mut MicrodataParameters,
    questions: &[Question],
    declared: &[String],
) -> Result<()> {
    match questions.iter().find(|q| q.id == m.question_id) {
        None => return Err(invalid("microdata.question_id", "a question of the survey")),
        Some(q) if !matches!(q.kind, Kind::Rating | Kind::SingleChoice) => {
            return Err(invalid(
                "microdata.question_id",
                "a RATING or SINGLE_CHOICE question",
            ));
        }
        Some(_) => {}
    }
    if declared.is_empty() {
        return Err(invalid(
            "microdata.attributes",
            "the survey declares no respondent attributes to release by",
        ));
    }
    if m.attributes.is_empty() {
        m.attributes = questions::attribute_numbers(declared);
    }
    for (i, name) in names(&m.attributes).iter().enumerate() {
        if !declared.contains(name) {
            return Err(invalid(
                &format!("microdata.attributes[{i}]"),
                "an attribute the survey declares",
            ));
        }
    }
    Ok(())
}

/// Attribute numbers (already checked) as short names.
fn names(attributes: &[i32]) -> Vec<String> {
    let mut c = Checks::new();
    questions::attributes(&mut c, attributes, "attributes").unwrap_or_default()
}

fn make_microdata(
    m: &MicrodataParameters,
    questions: &[Question],
    respondents: &[Respondent],
) -> Result<Made> {
    let q = questions
        .iter()
        .find(|q| q.id == m.question_id)
        .ok_or_else(|| Error::internal("a checked question went missing"))?;
    let attributes = names(&m.attributes);
    let label = |sealed: &Sealed| -> Option<String> {
        match answer_of(sealed, q)? {
            Answer::Rating(r) => Some(r.to_string()),
            Answer::Choice(i) => q.options.get(usize::from(i)).cloned(),
            _ => None,
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in respondents {
        let Some(answer) = label(&r.sealed) else {
            continue;
        };
        let mut row: Vec<String> = attributes
            .iter()
            .map(|a| {
                r.sealed
                    .attributes
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_owned())
            })
            .collect();
        row.push(answer);
        rows.push(row);
    }
    if rows.len() < m.k as usize {
        return Err(too_few("fewer responses answer the question than k"));
    }
    let mut quasi = Vec::with_capacity(attributes.len());
    for (column, a) in attributes.iter().enumerate() {
        let values: BTreeSet<&str> = rows.iter().map(|r| r[column].as_str()).collect();
        let values: Vec<&str> = values.into_iter().collect();
        let hierarchy = hierarchies::of(a, &values)
            .ok_or_else(|| Error::internal("an attribute without a hierarchy"))?;
        quasi.push(QuasiIdentifier { column, hierarchy });
    }
    let kind = match q.kind {
        Kind::Rating => SensitiveKind::Ordinal(columns(q)),
        _ => SensitiveKind::Categorical,
    };
    let mut spec = Spec::new(quasi, m.k as usize)
        .sensitive(Sensitive {
            column: attributes.len(),
            kind,
        })
        .l(m.l as usize)
        .max_suppression(m.max_suppression.unwrap_or(super::DEFAULT_MAX_SUPPRESSION));
    if let Some(t) = m.t {
        spec = spec.t(t);
    }
    let release = match microdata::anonymise(&rows, &spec) {
        Ok(release) => release,
        Err(MicrodataError::Unsatisfiable { .. }) => {
            return Err(precondition(
                Precondition::AnonymityNotReached,
                "no generalisation of the attributes meets k, l (and t) within the suppression \
                 limit: ask for a smaller k or l, fewer attributes, or more suppression",
            ));
        }
        Err(MicrodataError::NoRows) => return Err(too_few("no response answers the question")),
        Err(e) => return Err(Error::internal(e)),
    };
    let record = release.record();
    let mut columns = attributes.clone();
    columns.push(q.id.clone());
    let results = MicrodataResults {
        columns,
        rows: release
            .rows()
            .map(|values| MicrodataRow {
                values: values.into_iter().map(str::to_owned).collect(),
            })
            .collect(),
        suppressed: u32::try_from(record.suppressed).unwrap_or(u32::MAX),
        k_reached: u32::try_from(record.k).unwrap_or(u32::MAX),
        l_reached: u32::try_from(record.l).unwrap_or(u32::MAX),
        t_reached: record.t.unwrap_or(0.0),
    };
    Ok(Made {
        results: Results::Microdata(results),
        hierarchies: record.hierarchies.clone(),
        levels: record
            .levels
            .iter()
            .map(|l| u32::try_from(*l).unwrap_or(u32::MAX))
            .collect(),
        spend: None,
    })
}

fn dp_request(
    d: &DifferentiallyPrivateParameters,
    epsilon: MicroEpsilon,
    delta: PicoDelta,
) -> DpRequest {
    match NoiseMechanism::try_from(d.mechanism) {
        Ok(NoiseMechanism::Gaussian) => {
            DpRequest::gaussian(epsilon, delta, d.cohorts.clone(), small(d.max_choices))
        }
        _ => DpRequest::laplace(epsilon, d.cohorts.clone(), small(d.max_choices)),
    }
}

fn dp_error(e: DpError) -> Error {
    match e {
        DpError::Budget(e) => super::exhausted(&e.to_string()),
        DpError::EpsilonTooSmall { .. } => invalid(
            "differentially_private.epsilon",
            "at least one millionth per question of the survey",
        ),
        DpError::DeltaTooSmall { .. } | DpError::DeltaOutOfRange(_) => invalid(
            "differentially_private.delta",
            "at least 10⁻¹² per question of the survey, below 1",
        ),
        DpError::DeltaWithLaplace(_) => invalid(
            "differentially_private.delta",
            "0 with the Laplace mechanism",
        ),
        other => Error::internal(other),
    }
}

/// What a DP release of `questions` would spend, before any response is read.
pub(crate) fn plan_dp(
    questions: &[Question],
    d: &DifferentiallyPrivateParameters,
    epsilon: MicroEpsilon,
    delta: PicoDelta,
) -> Result<Spend> {
    let qs = analysable(questions);
    if qs.is_empty() {
        return Err(invalid("form", "the survey has only free-text questions"));
    }
    let aq: Vec<aggregate::Question> = qs.iter().map(|q| to_question(q)).collect();
    dp::plan(&aq, &dp_request(d, epsilon, delta)).map_err(dp_error)
}

fn make_dp(
    d: &DifferentiallyPrivateParameters,
    (epsilon, delta): (MicroEpsilon, PicoDelta),
    questions: &[Question],
    respondents: &[Respondent],
    (budget, spent): (Budget, Spend),
) -> Result<Made> {
    let qs = analysable(questions);
    // Only the cohorts asked for: a response of another is not in this release.
    let cohorts: BTreeSet<&str> = d.cohorts.iter().map(String::as_str).collect();
    let used: Vec<&Respondent> = respondents
        .iter()
        .filter(|r| cohorts.contains(r.cohort.as_str()))
        .collect();
    let aq: Vec<aggregate::Question> = qs.iter().map(|q| to_question(q)).collect();
    let release = dp::release_dp(
        &aq,
        &responses(&qs, &used),
        &dp_request(d, epsilon, delta),
        &budget,
        &[spent],
    )
    .map_err(dp_error)?;
    let sd_of = |scale: f64| match release.spend.mechanism {
        // Laplace with scale b has standard deviation b·√2.
        dp::Mechanism::Laplace => scale * std::f64::consts::SQRT_2,
        dp::Mechanism::Gaussian => scale,
    };
    let questions = qs
        .iter()
        .zip(&release.questions)
        .map(|(q, r)| {
            let mut out = header(q);
            for (i, cohort) in release.cohorts.iter().enumerate() {
                out.cohorts.push(ResultRow {
                    cohort: cohort.clone(),
                    counts: r
                        .counts
                        .get(i)
                        .map(|c| c.iter().copied().map(exact).collect())
                        .unwrap_or_default(),
                    respondents: Some(exact(r.n.get(i).copied().unwrap_or(0))),
                    mean: mean_of(r.means.as_ref(), Some(i)),
                });
            }
            out.overall = Some(ResultRow {
                cohort: String::new(),
                counts: r.overall.iter().copied().map(exact).collect(),
                respondents: Some(exact(r.n_total)),
                mean: mean_of(r.means.as_ref(), None),
            });
            out.count_noise_sd = sd_of(r.count_scale);
            out
        })
        .collect();
    Ok(Made {
        results: Results::DifferentiallyPrivate(DifferentiallyPrivateResults {
            cohorts: release.cohorts.clone(),
            questions,
        }),
        hierarchies: Vec::new(),
        levels: Vec::new(),
        spend: Some(release.spend),
    })
}

/// Makes the release `asked` for; a DP release needs the survey's budget and what it spent.
pub(crate) fn make(
    asked: &Asked,
    questions: &[Question],
    respondents: &[Respondent],
    budget: Option<(Budget, Spend)>,
) -> Result<Made> {
    match asked {
        Asked::Aggregate(a) => make_aggregate(a, questions, respondents),
        Asked::Microdata(m) => make_microdata(m, questions, respondents),
        Asked::Dp {
            params,
            epsilon,
            delta,
        } => {
            let budget = budget.ok_or_else(|| Error::internal("a DP release without a budget"))?;
            make_dp(params, (*epsilon, *delta), questions, respondents, budget)
        }
    }
}

/// Stored results of a release of `form`.
pub(crate) fn decode_results(
    form: ReleaseForm,
    bytes: &[u8],
) -> std::result::Result<Results, prost::DecodeError> {
    Ok(match form {
        ReleaseForm::Microdata => Results::Microdata(MicrodataResults::decode(bytes)?),
        ReleaseForm::DifferentiallyPrivate => {
            Results::DifferentiallyPrivate(DifferentiallyPrivateResults::decode(bytes)?)
        }
        ReleaseForm::Aggregate | ReleaseForm::Unspecified => {
            Results::Aggregate(AggregateResults::decode(bytes)?)
        }
    })
}
