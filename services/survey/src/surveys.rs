//! `tutela.survey.v1.SurveyService`: a tenant's surveys, their questions and their state, and
//! [`Surveys`], the parts both of the service's gRPC services work with.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use tonic::{Request, Response, Status};
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, next_page, page_token, timestamp};
use tutela_policy::{Authorized, Error, Precondition, Result};
use tutela_proto::common::PageResponse;
use tutela_proto::survey::survey_service_server::SurveyService as SurveyApi;
use tutela_proto::survey::{
    CloseSurveyRequest, CloseSurveyResponse, CreateSurveyRequest, CreateSurveyResponse,
    GetSurveyRequest, GetSurveyResponse, ListSurveysRequest, ListSurveysResponse, Survey,
    SurveyState,
};
use tutela_store::{KeyVault, Keyring, SharedClock};

use crate::entity::{invitation, response, survey};
use crate::{questions, releases};

// A survey row remembers the idempotency key and request of the CreateSurvey that made it.
tutela_policy::idempotent_rows!(survey);

const CREATE: &str = "tutela.survey.v1.SurveyService/CreateSurvey";

/// The stored names of a survey's states.
pub(crate) const OPEN: &str = "open";
pub(crate) const CLOSED: &str = "closed";

/// The database, the respondents' key vault and the clock of the survey service. Cheap to clone.
#[derive(Clone)]
pub struct Surveys {
    pub(crate) db: DatabaseConnection,
    pub(crate) vault: KeyVault,
    pub(crate) clock: SharedClock,
}

impl std::fmt::Debug for Surveys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surveys").finish_non_exhaustive()
    }
}

impl Surveys {
    /// The service's parts over `db` (migrated with [`crate::SurveyMigrator`]); respondents'
    /// keys live in the vault's `survey` scope, apart from any other service's.
    pub fn new(db: DatabaseConnection, keyring: Arc<Keyring>, clock: SharedClock) -> Self {
        Self {
            vault: KeyVault::new(db.clone(), keyring, crate::SERVICE, clock.clone()),
            db,
            clock,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The survey `survey_id` of the caller's tenant, read within `conn`; NOT_FOUND otherwise.
    pub(crate) async fn survey<C: ConnectionTrait>(
        &self,
        conn: &C,
        call: &Authorized,
        survey_id: &str,
    ) -> Result<survey::Model> {
        found(
            call.find::<survey::Entity>()
                .filter(survey::Column::SurveyId.eq(survey_id))
                .one(conn)
                .await?,
            "survey",
        )
    }

    /// [`Surveys::survey`], refused with SURVEY_CLOSED unless it is open.
    pub(crate) async fn open_survey<C: ConnectionTrait>(
        &self,
        conn: &C,
        call: &Authorized,
        survey_id: &str,
    ) -> Result<survey::Model> {
        let row = self.survey(conn, call, survey_id).await?;
        if row.state != OPEN {
            return Err(closed());
        }
        Ok(row)
    }

    /// How many rows of a survey-scoped table each of the surveys `ids` has (absent: none), in
    /// one grouped query for a whole page of surveys.
    async fn counts<E>(
        &self,
        query: sea_orm::Select<E>,
        survey: E::Column,
        ids: &[String],
    ) -> Result<HashMap<String, i64>>
    where
        E: sea_orm::EntityTrait,
    {
        Ok(query
            .select_only()
            .column(survey)
            .column_as(survey.count(), "n")
            .filter(survey.is_in(ids.to_vec()))
            .group_by(survey)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect())
    }

    /// The surveys as the API shows them, with their participation counts: three grouped
    /// queries for all of them, not three per survey.
    async fn to_surveys(&self, call: &Authorized, rows: &[survey::Model]) -> Result<Vec<Survey>> {
        let ids: Vec<String> = rows.iter().map(|r| r.survey_id.clone()).collect();
        let invited = self
            .counts(
                call.find::<invitation::Entity>(),
                invitation::Column::SurveyId,
                &ids,
            )
            .await?;
        let responded = self
            .counts(
                call.find::<invitation::Entity>()
                    .filter(invitation::Column::State.eq(crate::responses::RESPONDED)),
                invitation::Column::SurveyId,
                &ids,
            )
            .await?;
        let held = self
            .counts(
                call.find::<response::Entity>()
                    .filter(response::Column::HeldForReview.eq(true)),
                response::Column::SurveyId,
                &ids,
            )
            .await?;
        let count = |counts: &HashMap<String, i64>, id: &str| {
            u32::try_from(counts.get(id).copied().unwrap_or(0)).unwrap_or(u32::MAX)
        };
        let mut surveys = Vec::with_capacity(rows.len());
        for row in rows {
            let stored = questions::of_survey(row)?;
            let attributes = questions::attributes_of(row)?;
            surveys.push(Survey {
                survey_id: row.survey_id.clone(),
                course_id: row.course_id.clone(),
                title: row.title.clone(),
                questions: stored.iter().map(questions::Stored::to_proto).collect(),
                attributes: questions::attribute_numbers(&attributes),
                state: if row.state == OPEN {
                    SurveyState::Open
                } else {
                    SurveyState::Closed
                } as i32,
                created_at: Some(timestamp(row.created_at)),
                closed_at: row.closed_at.map(timestamp),
                invited: count(&invited, &row.survey_id),
                responded: count(&responded, &row.survey_id),
                held_for_review: count(&held, &row.survey_id),
                privacy_budget: Some(releases::budget_proto(row.budget_epsilon, row.budget_delta)),
                privacy_spent: Some(releases::budget_proto(row.spent_epsilon, row.spent_delta)),
            });
        }
        Ok(surveys)
    }

    /// One survey as the API shows it.
    async fn to_survey(&self, call: &Authorized, row: survey::Model) -> Result<Survey> {
        self.to_surveys(call, std::slice::from_ref(&row))
            .await?
            .pop()
            .ok_or_else(|| Error::internal("a survey went missing while shown"))
    }
}

/// FAILED_PRECONDITION, reason SURVEY_CLOSED.
pub(crate) fn closed() -> Error {
    Error::FailedPrecondition {
        reason: Precondition::SurveyClosed,
        message: "the survey is closed".into(),
    }
}

/// A CreateSurveyRequest, checked.
struct NewSurvey {
    course_id: String,
    title: String,
    questions: String,
    attributes: String,
    /// ε in millionths, δ in 10⁻¹².
    budget: (i64, i64),
    idempotency: Option<Idempotency>,
}

impl TryFrom<&CreateSurveyRequest> for NewSurvey {
    type Error = Error;

    fn try_from(r: &CreateSurveyRequest) -> Result<Self> {
        let s = r.survey.clone().unwrap_or_default();
        let mut c = Checks::new();
        let course_id = c.uuid(&s.course_id, "survey.course_id");
        let title = c.required(&s.title, "survey.title", 200);
        let questions = questions::parse(&mut c, &s.questions, "survey.questions");
        let attributes = questions::attributes(&mut c, &s.attributes, "survey.attributes");
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let budget = match &s.privacy_budget {
            None => Ok(releases::DEFAULT_BUDGET),
            Some(b) => {
                let epsilon = c.parse(
                    releases::micro_epsilon(b.epsilon),
                    "survey.privacy_budget.epsilon",
                    "a number from 0.000001 to 100",
                );
                let delta = c.parse(
                    releases::pico_delta(b.delta),
                    "survey.privacy_budget.delta",
                    "a number from 0 to 0.000001",
                );
                // Both fit in i64: ε ≤ 10⁸ millionths, δ ≤ 10⁶ units.
                epsilon.and_then(|e| delta.map(|d| (e as i64, d as i64)))
            }
        };
        let (course_id, title, questions, attributes, key, budget) =
            c.parsed((course_id, title, questions, attributes, key, budget))?;
        Ok(Self {
            course_id,
            title: title.to_owned(),
            questions: to_json(&questions)?,
            attributes: to_json(&attributes)?,
            budget,
            idempotency: Idempotency::of_request(key, CREATE, r, |m| m.idempotency_key = None),
        })
    }
}

/// What a row stores as JSON.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|_| Error::internal("a stored value does not serialise"))
}

/// `tutela.survey.v1.SurveyService`.
#[derive(Debug, Clone)]
pub struct SurveyService {
    surveys: Surveys,
}

impl SurveyService {
    /// The service over `surveys`.
    pub fn new(surveys: Surveys) -> Self {
        Self { surveys }
    }

    async fn create(&self, call: &Authorized, new: NewSurvey) -> Result<survey::Model> {
        let s = &self.surveys;
        if let Some(row) =
            idempotency::replay::<survey::Entity>(call, &s.db, new.idempotency.as_ref()).await?
        {
            return Ok(row);
        }
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        let row = survey::ActiveModel {
            survey_id: Set(uuid::Uuid::now_v7().to_string()),
            tenant: Set(call.tenant().to_owned()),
            course_id: Set(new.course_id),
            title: Set(new.title),
            questions: Set(new.questions),
            attributes: Set(new.attributes),
            state: Set(OPEN.to_owned()),
            created_at: Set(s.now()),
            closed_at: Set(None),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
            budget_epsilon: Set(new.budget.0),
            budget_delta: Set(new.budget.1),
            spent_epsilon: Set(0),
            spent_delta: Set(0),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(idempotency::key_taken)?;
        txn.commit().await?;
        Ok(row)
    }

    async fn close(&self, call: &Authorized, survey_id: &str) -> Result<survey::Model> {
        let s = &self.surveys;
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        s.open_survey(&txn, call, survey_id).await?;
        call.update::<survey::Entity>()
            .col_expr(survey::Column::State, Expr::value(CLOSED))
            .col_expr(survey::Column::ClosedAt, Expr::value(Some(s.now())))
            .filter(survey::Column::SurveyId.eq(survey_id))
            .exec(&txn)
            .await?;
        let row = s.survey(&txn, call, survey_id).await?;
        txn.commit().await?;
        Ok(row)
    }
}

#[tonic::async_trait]
impl SurveyApi for SurveyService {
    async fn create_survey(
        &self,
        request: Request<CreateSurveyRequest>,
    ) -> std::result::Result<Response<CreateSurveyResponse>, Status> {
        let call = Authorized::of(&request)?;
        let new = NewSurvey::try_from(request.get_ref())?;
        let row = self.create(&call, new).await?;
        Ok(Response::new(CreateSurveyResponse {
            survey: Some(self.surveys.to_survey(&call, row).await?),
        }))
    }

    async fn get_survey(
        &self,
        request: Request<GetSurveyRequest>,
    ) -> std::result::Result<Response<GetSurveyResponse>, Status> {
        let call = Authorized::of(&request)?;
        let mut c = Checks::new();
        let id = c.uuid(&request.get_ref().survey_id, "survey_id");
        let id = c.parsed(id)?;
        let row = self.surveys.survey(&self.surveys.db, &call, &id).await?;
        Ok(Response::new(GetSurveyResponse {
            survey: Some(self.surveys.to_survey(&call, row).await?),
        }))
    }

    async fn list_surveys(
        &self,
        request: Request<ListSurveysRequest>,
    ) -> std::result::Result<Response<ListSurveysResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        let course = if r.course_id.trim().is_empty() {
            None
        } else {
            c.uuid(&r.course_id, "course_id").ok()
        };
        c.finish()?;
        let mut query = call
            .find::<survey::Entity>()
            .filter(survey::Column::Seq.gt(after))
            .order_by_asc(survey::Column::Seq)
            .limit(size + 1);
        if let Some(course) = course {
            query = query.filter(survey::Column::CourseId.eq(course));
        }
        let mut rows = query.all(&self.surveys.db).await.map_err(Error::from)?;
        let next_page_token = next_page(&mut rows, size, |r| page_token(r.seq));
        Ok(Response::new(ListSurveysResponse {
            surveys: self.surveys.to_surveys(&call, &rows).await?,
            page: Some(PageResponse { next_page_token }),
        }))
    }

    async fn close_survey(
        &self,
        request: Request<CloseSurveyRequest>,
    ) -> std::result::Result<Response<CloseSurveyResponse>, Status> {
        let call = Authorized::of(&request)?;
        let mut c = Checks::new();
        let id = c.uuid(&request.get_ref().survey_id, "survey_id");
        let id = c.parsed(id)?;
        let row = self.close(&call, &id).await?;
        Ok(Response::new(CloseSurveyResponse {
            survey: Some(self.surveys.to_survey(&call, row).await?),
        }))
    }
}
