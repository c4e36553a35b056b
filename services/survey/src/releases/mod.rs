//! `tutela.survey.v1.ReleaseService`: the only way survey answers leave the service. A release
//! opens the survey's responses (each under its respondent's key, read with its key row in one
//! statement), hands them to `tutela-anonymise` in one of three forms ([`forms`]), and writes an
//! immutable record: the parameters applied, the hierarchies used, SHA-256 of input and output,
//! recipient, purpose and requester, and the results as handed out. A release reads every
//! response its survey has when it is made, so erasing a respondent marks the releases of their
//! survey made since they answered ([`mark_erased`]). A differentially private release spends the
//! survey's privacy budget in the same transaction, by a conditional update that cannot take the
//! spend past the budget however many releases run at once.

mod forms;
mod hierarchies;

use prost::Message;
use sea_orm::sea_query::{Alias, Expr, JoinType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Set,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tutela_anonymise::dp::{self, Budget, MicroEpsilon, PicoDelta, Spend};
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::register::Releases;
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, next_page, page_size, page_token, timestamp};
use tutela_policy::{Authorized, Error, Precondition, Result};
use tutela_proto::common::PageResponse;
use tutela_proto::survey::release_service_server::ReleaseService as ReleaseApi;
use tutela_proto::survey::{
    AggregateParameters, CreateReleaseRequest, CreateReleaseResponse,
    DifferentiallyPrivateParameters, GetReleaseRequest, GetReleaseResponse, ListReleasesRequest,
    ListReleasesResponse, MicrodataParameters, NoiseMechanism, PrivacyBudget, Release, ReleaseForm,
};
use tutela_proto::survey::{
    CommentDecision, HeldComment, ListHeldCommentsRequest, ListHeldCommentsResponse,
    ReviewHeldCommentRequest, ReviewHeldCommentResponse,
};
use tutela_store::vault::KEYS_TABLE;
use tutela_store::{KeyVault, StoredKey};

use crate::answers::Sealed;
use crate::entity::{invitation, release, response, survey};
use crate::questions;
use crate::responses::{precondition, sealed_field};
use crate::surveys::Surveys;

pub(crate) use forms::Respondent;

// A release row remembers the idempotency key and request of the CreateRelease that made it.
tutela_policy::idempotent_rows!(release);

const CREATE: &str = "tutela.survey.v1.ReleaseService/CreateRelease";

/// Defaults of what a request leaves unset.
const DEFAULT_K: u32 = 5;
const DEFAULT_L: u32 = 2;
const DEFAULT_MAX_SUPPRESSION: f64 = 0.05;
const DEFAULT_MAX_CHOICES: u32 = 3;
/// Bounds of what a request may ask for.
const MAX_K: u32 = 1000;
const MAX_COHORTS: usize = 1000;
const MAX_SUPPRESSION: f64 = 0.5;
/// The largest ε a release or a budget may hold: beyond it differential privacy means nothing,
/// and the integer accounting stays far from overflow.
const MAX_EPSILON: f64 = 100.0;
/// The largest δ of a budget: far below 1/n for any survey.
const MAX_DELTA: f64 = 1e-6;

/// A survey's budget when CreateSurvey sets none: ε 1, pure DP.
pub(crate) const DEFAULT_BUDGET: (i64, i64) = (1_000_000, 0);

/// ε as whole millionths, rounded down; `None` unless finite, above 0 and at most the maximum.
pub(crate) fn micro_epsilon(epsilon: f64) -> Option<u64> {
    let micro = (epsilon * 1e6).floor();
    (epsilon.is_finite() && epsilon <= MAX_EPSILON && micro >= 1.0).then_some(micro as u64)
}

/// δ as whole 10⁻¹², rounded down; `None` unless finite, from 0 to the maximum.
pub(crate) fn pico_delta(delta: f64) -> Option<u64> {
    (delta.is_finite() && (0.0..=MAX_DELTA).contains(&delta)).then(|| (delta * 1e12).floor() as u64)
}

/// A budget or spend as the API shows it.
pub(crate) fn budget_proto(epsilon: i64, delta: i64) -> PrivacyBudget {
    PrivacyBudget {
        epsilon: epsilon as f64 / 1e6,
        delta: delta as f64 / 1e12,
    }
}

/// The form's stored name.
fn form_name(form: ReleaseForm) -> &'static str {
    match form {
        ReleaseForm::Microdata => "microdata",
        ReleaseForm::DifferentiallyPrivate => "differentially_private",
        ReleaseForm::Aggregate | ReleaseForm::Unspecified => "aggregate",
    }
}

fn form_of(name: &str) -> ReleaseForm {
    match name {
        "microdata" => ReleaseForm::Microdata,
        "differentially_private" => ReleaseForm::DifferentiallyPrivate,
        _ => ReleaseForm::Aggregate,
    }
}

/// What a CreateReleaseRequest asks for, checked against the register's floors (the survey's
/// own questions and attributes are checked once it is read).
#[derive(Debug, Clone)]
pub(crate) enum Asked {
    Aggregate(AggregateParameters),
    Microdata(MicrodataParameters),
    Dp {
        params: DifferentiallyPrivateParameters,
        epsilon: MicroEpsilon,
        delta: PicoDelta,
    },
}

struct NewRelease {
    survey_id: String,
    recipient: String,
    asked: Asked,
    idempotency: Option<Idempotency>,
}

fn parse(r: &CreateReleaseRequest, floors: &Releases) -> Result<NewRelease> {
    let mut c = Checks::new();
    let survey_id = c.uuid(&r.survey_id, "survey_id");
    let recipient = c.required(r.recipient.trim(), "recipient", 64);
    let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
    let form = c.parse(
        ReleaseForm::try_from(r.form).ok(),
        "form",
        "AGGREGATE, MICRODATA or DIFFERENTIALLY_PRIVATE",
    );
    let form = form.unwrap_or(ReleaseForm::Aggregate);
    // Parameters of another form are refused rather than ignored: the caller meant something.
    for (given, field, of) in [
        (r.aggregate.is_some(), "aggregate", ReleaseForm::Aggregate),
        (r.microdata.is_some(), "microdata", ReleaseForm::Microdata),
        (
            r.differentially_private.is_some(),
            "differentially_private",
            ReleaseForm::DifferentiallyPrivate,
        ),
    ] {
        let this = form == of || (form == ReleaseForm::Unspecified && of == ReleaseForm::Aggregate);
        if given && !this {
            c.fail(field, "only with its own form");
        }
    }
    let asked = match form {
        ReleaseForm::Unspecified | ReleaseForm::Aggregate => {
            let a = r.aggregate.unwrap_or_default();
            let min_cohort = if a.min_cohort == 0 {
                floors.min_cohort
            } else {
                a.min_cohort
            };
            let min_cell = if a.min_cell == 0 {
                floors.min_cell
            } else {
                a.min_cell
            };
            if !(floors.min_cohort..=1000).contains(&min_cohort) {
                c.fail(
                    "aggregate.min_cohort",
                    format!("from the register's {} to 1000", floors.min_cohort),
                );
            }
            if min_cell < floors.min_cell || min_cell > min_cohort {
                c.fail(
                    "aggregate.min_cell",
                    format!(
                        "from the register's {} to min_cohort ({min_cohort})",
                        floors.min_cell
                    ),
                );
            }
            Some(Asked::Aggregate(AggregateParameters {
                min_cohort,
                min_cell,
            }))
        }
        ReleaseForm::Microdata => match &r.microdata {
            None => {
                c.fail("microdata", "required for a MICRODATA release");
                None
            }
            Some(m) => {
                let mut m = m.clone();
                let question = c.required(m.question_id.trim(), "microdata.question_id", 64);
                m.question_id = question.map(str::to_owned).unwrap_or_default();
                // Checked for kind and duplicates here, against the survey's declared ones later.
                let _ = questions::attributes(&mut c, &m.attributes, "microdata.attributes");
                if m.k == 0 {
                    m.k = Ord::max(DEFAULT_K, floors.min_cell);
                }
                // The register's min_cell is at least 2: a class of one is a person.
                if !(floors.min_cell..=MAX_K).contains(&m.k) {
                    c.fail(
                        "microdata.k",
                        format!("from the register's {} to {MAX_K}", floors.min_cell),
                    );
                }
                if m.l == 0 {
                    m.l = Ord::min(DEFAULT_L, m.k);
                }
                if m.l > m.k {
                    c.fail("microdata.l", "from 1 to k");
                }
                if let Some(t) = m.t
                    && !(t > 0.0 && t <= 1.0)
                {
                    c.fail("microdata.t", "above 0, at most 1");
                }
                let s = *m.max_suppression.get_or_insert(DEFAULT_MAX_SUPPRESSION);
                if !(0.0..=MAX_SUPPRESSION).contains(&s) {
                    c.fail("microdata.max_suppression", "from 0 to 0.5");
                }
                Some(Asked::Microdata(m))
            }
        },
        ReleaseForm::DifferentiallyPrivate => match &r.differentially_private {
            None => {
                c.fail(
                    "differentially_private",
                    "required for a DIFFERENTIALLY_PRIVATE release",
                );
                None
            }
            Some(d) => {
                let mut d = d.clone();
                let epsilon = c.parse(
                    micro_epsilon(d.epsilon),
                    "differentially_private.epsilon",
                    "a number above 0 (at least 0.000001) and at most 100",
                );
                let gaussian = match NoiseMechanism::try_from(d.mechanism) {
                    Ok(NoiseMechanism::Gaussian) => true,
                    Ok(NoiseMechanism::Laplace | NoiseMechanism::Unspecified) => {
                        d.mechanism = NoiseMechanism::Laplace as i32;
                        false
                    }
                    Err(_) => {
                        c.fail("differentially_private.mechanism", "LAPLACE or GAUSSIAN");
                        false
                    }
                };
                let delta = if gaussian {
                    c.parse(
                        pico_delta(d.delta).filter(|d| *d > 0),
                        "differentially_private.delta",
                        "a number above 0 (at least 10⁻¹²) and at most 0.000001",
                    )
                } else if d.delta != 0.0 {
                    c.fail("differentially_private.delta", "only with GAUSSIAN");
                    Ok(0)
                } else {
                    Ok(0)
                };
                if d.max_choices == 0 {
                    d.max_choices = DEFAULT_MAX_CHOICES;
                }
                if d.max_choices > 30 {
                    c.fail("differentially_private.max_choices", "from 1 to 30");
                }
                if d.cohorts.len() > MAX_COHORTS {
                    c.fail("differentially_private.cohorts", "at most 1000");
                }
                let mut seen = std::collections::HashSet::new();
                for (i, cohort) in d.cohorts.iter_mut().enumerate() {
                    *cohort = cohort.trim().to_owned();
                    if !seen.insert(cohort.clone()) {
                        c.fail(
                            format!("differentially_private.cohorts[{i}]"),
                            "listed already",
                        );
                    }
                }
                match (epsilon, delta) {
                    (Ok(e), Ok(delta)) => Some(Asked::Dp {
                        params: d,
                        epsilon: MicroEpsilon(e),
                        delta: PicoDelta(delta),
                    }),
                    _ => None,
                }
            }
        },
    };
    let (survey_id, recipient, key) = c.parsed((survey_id, recipient, key))?;
    let asked = asked.ok_or_else(|| Error::internal("a refused parameter passed the checks"))?;
    Ok(NewRelease {
        survey_id,
        recipient: recipient.to_owned(),
        asked,
        idempotency: Idempotency::of_request(key, CREATE, r, |m| m.idempotency_key = None),
    })
}

/// One response with its respondent's key row, as one statement reads them.
#[derive(FromQueryResult)]
struct Row {
    response_id: String,
    subject_id: String,
    cohort: String,
    sealed: Vec<u8>,
    held_for_review: bool,
    comment_withheld: bool,
    key_seq: Option<i64>,
    kek_id: Option<String>,
    wrapped_key: Option<Vec<u8>>,
}

impl Row {
    /// Neither held for review nor withheld by it.
    fn publishable(&self) -> bool {
        !self.held_for_review && !self.comment_withheld
    }
}

/// The responses of `rows`, each opened with its respondent's key from the row's key columns.
fn open_rows(vault: &KeyVault, tenant: &str, rows: &[Row]) -> Result<Vec<Respondent>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let (Some(kek_id), Some(key_seq)) = (&row.kek_id, row.key_seq) else {
            return Err(tutela_store::StoreError::KeyNotFound.into());
        };
        let key = vault.stored_key(
            StoredKey {
                tenant,
                subject: &row.subject_id,
                kek_id,
                wrapped_key: row.wrapped_key.as_deref(),
            },
            key_seq,
        )?;
        let json = key.open_string(&sealed_field(&row.response_id), &row.sealed)?;
        let sealed: Sealed = serde_json::from_str(&json)
            .map_err(|_| Error::internal("a stored response does not parse"))?;
        out.push(Respondent {
            response_id: row.response_id.clone(),
            comments_publishable: row.publishable(),
            cohort: row.cohort.clone(),
            sealed,
        });
    }
    Ok(out)
}

/// `tutela.survey.v1.ReleaseService`.
#[derive(Clone)]
pub struct ReleaseService {
    surveys: Surveys,
    floors: Releases,
}

impl std::fmt::Debug for ReleaseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseService")
            .field("floors", &self.floors)
            .finish_non_exhaustive()
    }
}

impl ReleaseService {
    /// The service over `surveys`, never releasing below the register's `floors`.
    pub fn new(surveys: Surveys, floors: Releases) -> Self {
        Self { surveys, floors }
    }

    /// The survey's responses (`held`: only those held for review, a page after a response
    /// id), opened, in response-id order (random ids: no order of respondents), and the SHA-256
    /// of what was read (ids, sealed bytes, and whether their comments may be published).
    /// CPU-bound opening runs on the blocking pool.
    async fn respondents(
        &self,
        call: &Authorized,
        survey_id: &str,
        held: Option<(&str, u64)>,
    ) -> Result<(Vec<Respondent>, String)> {
        use sea_orm::sea_query::ExprTrait;
        let s = &self.surveys;
        let keys = Alias::new(KEYS_TABLE);
        let key_column = |name: &str| Expr::col((keys.clone(), Alias::new(name)));
        let mut select = call
            .find::<response::Entity>()
            .select_only()
            .column(response::Column::ResponseId)
            .column(response::Column::SubjectId)
            .column(response::Column::Cohort)
            .column(response::Column::Sealed)
            .column(response::Column::HeldForReview)
            .column(response::Column::CommentWithheld)
            .expr_as(key_column("seq"), "key_seq")
            .expr_as(key_column("kek_id"), "kek_id")
            .expr_as(key_column("wrapped_key"), "wrapped_key")
            .filter(response::Column::SurveyId.eq(survey_id))
            .order_by_asc(response::Column::ResponseId);
        if let Some((after, limit)) = held {
            select = select
                .filter(response::Column::HeldForReview.eq(true))
                .filter(response::Column::ResponseId.gt(after))
                .limit(limit);
        }
        QueryTrait::query(&mut select).join(
            JoinType::LeftJoin,
            keys.clone(),
            Expr::col((keys.clone(), Alias::new("scope")))
                .eq(s.vault.scope())
                .and(key_column("tenant").equals((response::Entity, response::Column::Tenant)))
                .and(
                    key_column("subject_id")
                        .equals((response::Entity, response::Column::SubjectId)),
                ),
        );
        let rows = select.into_model::<Row>().all(&s.db).await?;
        let vault = s.vault.clone();
        let tenant = call.tenant().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut hash = Sha256::new();
            for row in &rows {
                hash.update((row.response_id.len() as u64).to_be_bytes());
                hash.update(row.response_id.as_bytes());
                hash.update((row.sealed.len() as u64).to_be_bytes());
                hash.update(&row.sealed);
                hash.update([u8::from(row.publishable())]);
            }
            // Unwrapping a key and opening a response per row is the bulk of a release's work:
            // spread over the cores, in chunks that keep the rows' order.
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            let chunk = rows.len().div_ceil(threads).max(1);
            let opened: Vec<Result<Vec<Respondent>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = rows
                    .chunks(chunk)
                    .map(|part| scope.spawn(|| open_rows(&vault, &tenant, part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::internal("opening a response panicked")))
                    })
                    .collect()
            });
            let mut out = Vec::with_capacity(rows.len());
            for part in opened {
                out.extend(part?);
            }
            Ok((out, hex::encode(hash.finalize())))
        })
        .await
        .map_err(|_| Error::internal("opening the responses stopped"))?
    }

    /// The cohorts of all of the survey's invitations, sorted: what a DP release covers when the
    /// caller names none (fixed by who was invited, not by who answered).
    async fn invited_cohorts(&self, call: &Authorized, survey_id: &str) -> Result<Vec<String>> {
        Ok(call
            .find::<invitation::Entity>()
            .select_only()
            .column(invitation::Column::Cohort)
            .distinct()
            .filter(invitation::Column::SurveyId.eq(survey_id))
            .order_by_asc(invitation::Column::Cohort)
            .into_tuple::<String>()
            .all(&self.surveys.db)
            .await?)
    }

    async fn create(&self, call: &Authorized, new: NewRelease) -> Result<release::Model> {
        use sea_orm::sea_query::ExprTrait;
        let s = &self.surveys;
        if let Some(row) =
            idempotency::replay::<release::Entity>(call, &s.db, new.idempotency.as_ref()).await?
        {
            return Ok(row);
        }
        let survey_row = s.survey(&s.db, call, &new.survey_id).await?;
        let stored = questions::of_survey(&survey_row)?;
        let declared = questions::attributes_of(&survey_row)?;
        let mut asked = new.asked;
        let mut spend = None;
        match &mut asked {
            Asked::Microdata(m) => forms::check_microdata(m, &stored, &declared)?,
            Asked::Dp {
                params,
                epsilon,
                delta,
            } => {
                if params.cohorts.is_empty() {
                    params.cohorts = self.invited_cohorts(call, &new.survey_id).await?;
                }
                // Refused before a single response is read when the budget cannot cover it.
                let planned = forms::plan_dp(&stored, params, *epsilon, *delta)?;
                let budget = Budget {
                    epsilon_total: MicroEpsilon(nonneg(survey_row.budget_epsilon)),
                    delta_total: PicoDelta(nonneg(survey_row.budget_delta)),
                };
                let spent = Spend {
                    epsilon: MicroEpsilon(nonneg(survey_row.spent_epsilon)),
                    delta: PicoDelta(nonneg(survey_row.spent_delta)),
                    mechanism: planned.mechanism,
                };
                dp::check(&budget, &[spent], &planned).map_err(|e| exhausted(&e.to_string()))?;
                spend = Some((budget, spent));
            }
            Asked::Aggregate(_) => {}
        }
        let (respondents, input_sha256) = self.respondents(call, &new.survey_id, None).await?;
        let made = {
            let asked = asked.clone();
            tokio::task::spawn_blocking(move || forms::make(&asked, &stored, &respondents, spend))
                .await
                .map_err(|_| Error::internal("making the release stopped"))??
        };
        let results = made.results.encoded();
        let output_sha256 = hex::encode(Sha256::digest(&results));
        let (form, params) = match &asked {
            Asked::Aggregate(a) => (ReleaseForm::Aggregate, (Some(*a), None, None)),
            Asked::Microdata(m) => (ReleaseForm::Microdata, (None, Some(m.clone()), None)),
            Asked::Dp { params, .. } => (
                ReleaseForm::DifferentiallyPrivate,
                (None, None, Some(params.clone())),
            ),
        };
        let (spent_epsilon, spent_delta, mechanism) = match made.spend {
            Some(spend) => (
                i64::try_from(spend.epsilon.0).map_err(Error::internal)?,
                i64::try_from(spend.delta.0).map_err(Error::internal)?,
                match spend.mechanism {
                    dp::Mechanism::Laplace => "laplace",
                    dp::Mechanism::Gaussian => "gaussian",
                },
            ),
            None => (0, 0, ""),
        };
        let record = Release {
            aggregate_parameters: params.0,
            microdata_parameters: params.1,
            differentially_private_parameters: params.2,
            hierarchies: made.hierarchies,
            levels: made.levels,
            ..Default::default()
        };
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let now = s.now();
        let release_id = uuid::Uuid::now_v7().to_string();
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        if made.spend.is_some() {
            // The spend and the release commit together or not at all; the condition keeps a
            // concurrent release from spending what this one already counted on.
            let spent = call
                .update::<survey::Entity>()
                .col_expr(
                    survey::Column::SpentEpsilon,
                    Expr::col(survey::Column::SpentEpsilon).add(spent_epsilon),
                )
                .col_expr(
                    survey::Column::SpentDelta,
                    Expr::col(survey::Column::SpentDelta).add(spent_delta),
                )
                .filter(survey::Column::SurveyId.eq(&new.survey_id))
                .filter(
                    Expr::col(survey::Column::SpentEpsilon)
                        .add(spent_epsilon)
                        .lte(Expr::col(survey::Column::BudgetEpsilon)),
                )
                .filter(
                    Expr::col(survey::Column::SpentDelta)
                        .add(spent_delta)
                        .lte(Expr::col(survey::Column::BudgetDelta)),
                )
                .exec(&txn)
                .await?;
            if spent.rows_affected == 0 {
                return Err(exhausted(
                    "another release spent the survey's privacy budget meanwhile",
                ));
            }
        }
        let row = release::ActiveModel {
            release_id: Set(release_id.clone()),
            tenant: Set(call.tenant().to_owned()),
            survey_id: Set(new.survey_id.clone()),
            form: Set(form_name(form).to_owned()),
            recipient: Set(new.recipient),
            purpose: Set(call.purpose().short_name().to_owned()),
            requester: Set(call.principal().id.clone()),
            created_at: Set(now),
            parameters: Set(record.encode_to_vec()),
            results: Set(results),
            input_sha256: Set(input_sha256),
            output_sha256: Set(output_sha256),
            spent_epsilon: Set(spent_epsilon),
            spent_delta: Set(spent_delta),
            mechanism: Set(mechanism.to_owned()),
            built_from_erased: Set(false),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(idempotency::key_taken)?;
        txn.commit().await?;
        Ok(row)
    }

    /// A page of the survey's held comments, without their respondents.
    async fn held_comments(
        &self,
        call: &Authorized,
        r: &ListHeldCommentsRequest,
    ) -> Result<ListHeldCommentsResponse> {
        let mut c = Checks::new();
        let survey_id = c.uuid(&r.survey_id, "survey_id");
        let after = match r
            .page
            .as_ref()
            .map(|p| p.page_token.trim())
            .unwrap_or_default()
        {
            "" => Ok(String::new()),
            token => c.uuid(token, "page.page_token"),
        };
        let (survey_id, after) = c.parsed((survey_id, after))?;
        let size = page_size(r.page.as_ref());
        let s = &self.surveys;
        s.survey(&s.db, call, &survey_id).await?;
        let (mut held, _) = self
            .respondents(call, &survey_id, Some((&after, size + 1)))
            .await?;
        let next_page_token = next_page(&mut held, size, |r| r.response_id.clone());
        let comments = held
            .iter()
            .flat_map(|r| {
                r.sealed.answers.iter().filter_map(|a| match &a.value {
                    crate::answers::Value::Text(text) => Some(HeldComment {
                        response_id: r.response_id.clone(),
                        question_id: a.q.clone(),
                        text: text.clone(),
                    }),
                    _ => None,
                })
            })
            .collect();
        Ok(ListHeldCommentsResponse {
            comments,
            page: Some(PageResponse { next_page_token }),
        })
    }

    /// Records the review's decision on a held response's comments.
    async fn review(
        &self,
        call: &Authorized,
        r: &ReviewHeldCommentRequest,
    ) -> Result<ReviewHeldCommentResponse> {
        let mut c = Checks::new();
        let survey_id = c.uuid(&r.survey_id, "survey_id");
        let response_id = c.uuid(&r.response_id, "response_id");
        let withhold = match CommentDecision::try_from(r.decision) {
            Ok(CommentDecision::Publish) => Ok(false),
            Ok(CommentDecision::Withhold) => Ok(true),
            _ => c.parse(None, "decision", "PUBLISH or WITHHOLD"),
        };
        let (survey_id, response_id, withhold) = c.parsed((survey_id, response_id, withhold))?;
        let s = &self.surveys;
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        // Only a response still held: a decision is made once.
        let decided = call
            .update::<response::Entity>()
            .col_expr(response::Column::HeldForReview, Expr::value(false))
            .col_expr(response::Column::CommentWithheld, Expr::value(withhold))
            .filter(response::Column::SurveyId.eq(&survey_id))
            .filter(response::Column::ResponseId.eq(&response_id))
            .filter(response::Column::HeldForReview.eq(true))
            .exec(&txn)
            .await?;
        if decided.rows_affected == 0 {
            return Err(Error::NotFound("held comment"));
        }
        txn.commit().await?;
        Ok(ReviewHeldCommentResponse {
            reviewed_at: Some(timestamp(s.now())),
        })
    }

    async fn release(&self, call: &Authorized, release_id: &str) -> Result<release::Model> {
        found(
            call.find::<release::Entity>()
                .filter(release::Column::ReleaseId.eq(release_id))
                .one(&self.surveys.db)
                .await?,
            "release",
        )
    }
}

fn nonneg(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

/// FAILED_PRECONDITION, reason PRIVACY_BUDGET_EXHAUSTED.
fn exhausted(message: &str) -> Error {
    precondition(Precondition::PrivacyBudgetExhausted, message)
}

/// A release row as the API shows it, with its results or without.
fn to_proto(row: &release::Model, with_results: bool) -> Result<Release> {
    let broken = |_| Error::internal("a stored release does not decode");
    let mut out = Release::decode(row.parameters.as_slice()).map_err(broken)?;
    let form = form_of(&row.form);
    out.release_id = row.release_id.clone();
    out.survey_id = row.survey_id.clone();
    out.form = form as i32;
    out.recipient = row.recipient.clone();
    out.purpose = row.purpose.clone();
    out.requester = row.requester.clone();
    out.created_at = Some(timestamp(row.created_at));
    out.input_sha256 = row.input_sha256.clone();
    out.output_sha256 = row.output_sha256.clone();
    out.spent = (form == ReleaseForm::DifferentiallyPrivate)
        .then(|| budget_proto(row.spent_epsilon, row.spent_delta));
    out.built_from_erased_responses = row.built_from_erased;
    out.results = if with_results {
        Some(forms::decode_results(form, &row.results).map_err(broken)?)
    } else {
        None
    };
    Ok(out)
}

#[tonic::async_trait]
impl ReleaseApi for ReleaseService {
    async fn create_release(
        &self,
        request: Request<CreateReleaseRequest>,
    ) -> std::result::Result<Response<CreateReleaseResponse>, Status> {
        let call = Authorized::of(&request)?;
        let new = parse(request.get_ref(), &self.floors)?;
        let row = self.create(&call, new).await?;
        Ok(Response::new(CreateReleaseResponse {
            release: Some(to_proto(&row, true)?),
        }))
    }

    async fn get_release(
        &self,
        request: Request<GetReleaseRequest>,
    ) -> std::result::Result<Response<GetReleaseResponse>, Status> {
        let call = Authorized::of(&request)?;
        let mut c = Checks::new();
        let id = c.uuid(&request.get_ref().release_id, "release_id");
        let id = c.parsed(id)?;
        let row = self.release(&call, &id).await?;
        Ok(Response::new(GetReleaseResponse {
            release: Some(to_proto(&row, true)?),
        }))
    }

    async fn list_releases(
        &self,
        request: Request<ListReleasesRequest>,
    ) -> std::result::Result<Response<ListReleasesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        let id = c.uuid(&r.survey_id, "survey_id");
        let id = c.parsed(id)?;
        let s = &self.surveys;
        s.survey(&s.db, &call, &id).await?;
        // The results stay in the database: a page of releases lists how they were made.
        let mut rows = call
            .find::<release::Entity>()
            .filter(release::Column::SurveyId.eq(&id))
            .filter(release::Column::Seq.gt(after))
            .order_by_asc(release::Column::Seq)
            .limit(size + 1)
            .all(&s.db)
            .await
            .map_err(Error::from)?;
        let next_page_token = next_page(&mut rows, size, |r| page_token(r.seq));
        Ok(Response::new(ListReleasesResponse {
            releases: rows
                .iter()
                .map(|row| to_proto(row, false))
                .collect::<Result<_>>()?,
            page: Some(PageResponse { next_page_token }),
        }))
    }

    async fn list_held_comments(
        &self,
        request: Request<ListHeldCommentsRequest>,
    ) -> std::result::Result<Response<ListHeldCommentsResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(
            self.held_comments(&call, request.get_ref()).await?,
        ))
    }

    async fn review_held_comment(
        &self,
        request: Request<ReviewHeldCommentRequest>,
    ) -> std::result::Result<Response<ReviewHeldCommentResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.review(&call, request.get_ref()).await?))
    }
}

/// Marks the releases built from `responses` (a learner's, being erased) within the erasure's
/// transaction. A release reads every response of its survey there is when it is made (what
/// its input hash covers), so it was built from a response when it is of the same survey and
/// was made at or after the response came in. Returns how many releases were marked.
pub(crate) async fn mark_erased(
    txn: &sea_orm::DatabaseTransaction,
    access: &tutela_policy::SubjectAccess,
    responses: &[response::Model],
) -> Result<u64> {
    let mut marked = 0;
    for r in responses {
        marked += access
            .call()
            .update::<release::Entity>()
            .col_expr(release::Column::BuiltFromErased, Expr::value(true))
            .filter(release::Column::SurveyId.eq(r.survey_id.as_str()))
            .filter(release::Column::CreatedAt.gte(r.submitted_at))
            .filter(release::Column::BuiltFromErased.eq(false))
            .exec(txn)
            .await?
            .rows_affected;
    }
    Ok(marked)
}
