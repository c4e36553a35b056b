//! `tutela.survey.v1.ResponseService`: invitations, reminders, declines and responses.
//!
//! Taking part is voluntary, and the state of an invitation says how far it went: `invited`,
//! then `declined` or `responded`, both final. Reminders list only `invited` learners, so a
//! learner who declined is never asked again. A response is sealed under the respondent's data
//! key in this service's vault scope; its free text is scrubbed before anything is stored and
//! only the scrubbed text is kept. The invitation's move to `responded` and the response commit
//! together, with the audit record of the write, and unique indexes refuse a second answer even
//! when two arrive at once.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use tonic::{Request, Response, Status};
use tutela_policy::consent::ConsentNeed;
use tutela_policy::validate::{Checks, next_page, page_token, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Precondition, Result, SubjectAccess};
use tutela_proto::common::{DataCategory, PageResponse};
use tutela_proto::survey::response_service_server::ResponseService as ResponseApi;
use tutela_proto::survey::{
    DeclineSurveyRequest, DeclineSurveyResponse, InviteRespondentsRequest,
    InviteRespondentsResponse, RemindRespondentsRequest, RemindRespondentsResponse,
    SubmitResponseRequest, SubmitResponseResponse,
};

use crate::answers::{self, Value};
use crate::entity::{invitation, response, survey};
use crate::people::People;
use crate::questions;
use crate::scrub::Scrubbing;
use crate::surveys::{Surveys, to_json};

/// The stored names of an invitation's states.
pub(crate) const INVITED: &str = "invited";
pub(crate) const DECLINED: &str = "declined";
pub(crate) const RESPONDED: &str = "responded";

/// The most learners one InviteRespondents names.
const MAX_INVITEES: usize = 1000;

/// The vault field a response's answers are sealed under: bound to the response, so sealed
/// answers copied to another row do not open.
pub(crate) fn sealed_field(response_id: &str) -> String {
    format!("response:{response_id}")
}

/// `tutela.survey.v1.ResponseService`.
#[derive(Debug, Clone)]
pub struct ResponseService {
    surveys: Surveys,
    scrubbing: Scrubbing,
    people: People,
}

/// FAILED_PRECONDITION with `reason`.
pub(crate) fn precondition(reason: Precondition, message: &str) -> Error {
    Error::FailedPrecondition {
        reason,
        message: message.into(),
    }
}

/// The learner's invitation to the survey, which must still wait for an answer: NOT_INVITED
/// without one, SURVEY_ALREADY_ANSWERED once declined or responded.
async fn waiting_invitation<C: ConnectionTrait>(
    conn: &C,
    access: &SubjectAccess,
    survey_id: &str,
) -> Result<invitation::Model> {
    let row = access
        .find::<invitation::Entity>()
        .filter(invitation::Column::SurveyId.eq(survey_id))
        .one(conn)
        .await?
        .ok_or_else(|| {
            precondition(
                Precondition::NotInvited,
                "the learner was not invited to the survey",
            )
        })?;
    if row.state != INVITED {
        return Err(already_answered());
    }
    Ok(row)
}

fn already_answered() -> Error {
    precondition(
        Precondition::SurveyAlreadyAnswered,
        "the learner responded to the survey or declined it already",
    )
}

/// Moves the learner's waiting invitation to `state`, unless another call moved it first.
async fn answer_invitation(
    txn: &DatabaseTransaction,
    access: &SubjectAccess,
    survey_id: &str,
    state: &'static str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let moved = access
        .update::<invitation::Entity>()
        .col_expr(invitation::Column::State, Expr::value(state))
        .col_expr(invitation::Column::AnsweredAt, Expr::value(Some(at)))
        .filter(invitation::Column::SurveyId.eq(survey_id))
        .filter(invitation::Column::State.eq(INVITED))
        .exec(txn)
        .await?;
    if moved.rows_affected == 0 {
        return Err(already_answered());
    }
    Ok(())
}

impl ResponseService {
    /// The service over `surveys`, reading the invitees' names (to scrub free text) and the
    /// respondents' declared attributes through `people`.
    pub fn new(surveys: Surveys, people: People) -> Self {
        Self {
            surveys,
            scrubbing: Scrubbing::new(people.clone()),
            people,
        }
    }

    async fn invite(
        &self,
        call: &Authorized,
        r: &InviteRespondentsRequest,
    ) -> Result<InviteRespondentsResponse> {
        let mut c = Checks::new();
        let survey_id = c.uuid(&r.survey_id, "survey_id");
        if r.invitees.is_empty() || r.invitees.len() > MAX_INVITEES {
            c.fail("invitees", format!("1 to {MAX_INVITEES} learners"));
        }
        let mut invitees: Vec<(String, String)> = Vec::with_capacity(r.invitees.len());
        for (i, invitee) in r.invitees.iter().enumerate() {
            let id = c.uuid(&invitee.learner_id, &format!("invitees[{i}].learner_id"));
            let cohort = c.optional(&invitee.cohort, &format!("invitees[{i}].cohort"), 64);
            if let (Ok(id), Ok(cohort)) = (id, cohort) {
                if invitees.iter().any(|(seen, _)| *seen == id) {
                    c.fail(
                        format!("invitees[{i}].learner_id"),
                        "named by an earlier invitee",
                    );
                }
                invitees.push((id, cohort.to_owned()));
            }
        }
        let survey_id = c.parsed(survey_id)?;
        let s = &self.surveys;
        let ids: Vec<String> = invitees.iter().map(|(id, _)| id.clone()).collect();
        // Every learner must be one the caller reaches and whose processing is not restricted;
        // otherwise nobody is invited, with the first refusal as the answer.
        let accesses = call
            .subjects_for(&ids, None, ConsentNeed::Register)
            .await?
            .into_iter()
            .collect::<Result<Vec<SubjectAccess>>>()?;
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        s.open_survey(&txn, call, &survey_id).await?;
        let mut invited = 0u32;
        for (access, (_, cohort)) in accesses.iter().zip(&invitees) {
            let inserted = invitation::Entity::insert(invitation::ActiveModel {
                tenant: Set(access.tenant().to_owned()),
                survey_id: Set(survey_id.clone()),
                subject_id: Set(access.subject_id().to_owned()),
                cohort: Set(cohort.clone()),
                state: Set(INVITED.to_owned()),
                invited_at: Set(now),
                answered_at: Set(None),
                reminders: Set(0),
                ..Default::default()
            })
            .on_conflict(
                OnConflict::columns([
                    invitation::Column::Tenant,
                    invitation::Column::SurveyId,
                    invitation::Column::SubjectId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
            if inserted > 0 {
                invited += 1;
                access
                    .record_in(
                        &txn,
                        CategorySet::of(&[DataCategory::Identity, DataCategory::Education]),
                    )
                    .await?;
            }
        }
        txn.commit().await?;
        let total = u32::try_from(invitees.len()).unwrap_or(u32::MAX);
        Ok(InviteRespondentsResponse {
            invited,
            already_invited: total - invited,
        })
    }

    async fn remind(
        &self,
        call: &Authorized,
        r: &RemindRespondentsRequest,
    ) -> Result<RemindRespondentsResponse> {
        let mut c = Checks::new();
        let survey_id = c.uuid(&r.survey_id, "survey_id");
        let (size, after) = c.page(r.page.as_ref(), "page");
        let survey_id = c.parsed(survey_id)?;
        let s = &self.surveys;
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        s.open_survey(&txn, call, &survey_id).await?;
        let mut rows = call
            .find::<invitation::Entity>()
            .filter(invitation::Column::SurveyId.eq(&survey_id))
            .filter(invitation::Column::State.eq(INVITED))
            .filter(invitation::Column::Seq.gt(after))
            .order_by_asc(invitation::Column::Seq)
            .limit(size + 1)
            .all(&txn)
            .await?;
        let next_page_token = next_page(&mut rows, size, |r| page_token(r.seq));
        let ids: Vec<String> = rows.iter().map(|r| r.subject_id.clone()).collect();
        // A learner whose processing is restricted (Art. 18) is not reminded.
        let mut reminded = Vec::with_capacity(ids.len());
        for access in call
            .subjects_for(&ids, None, ConsentNeed::Register)
            .await?
            .into_iter()
            .flatten()
        {
            access
                .record_in(&txn, CategorySet::of(&[DataCategory::Identity]))
                .await?;
            reminded.push(access.subject_id().to_owned());
        }
        if !reminded.is_empty() {
            call.update::<invitation::Entity>()
                .col_expr(
                    invitation::Column::Reminders,
                    Expr::col(invitation::Column::Reminders).add(1),
                )
                .filter(invitation::Column::SurveyId.eq(&survey_id))
                .filter(invitation::Column::SubjectId.is_in(reminded.clone()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(RemindRespondentsResponse {
            learner_ids: reminded,
            page: Some(PageResponse { next_page_token }),
        })
    }

    async fn decline(
        &self,
        call: &Authorized,
        r: &DeclineSurveyRequest,
    ) -> Result<DeclineSurveyResponse> {
        let mut c = Checks::new();
        let survey_id = c.uuid(&r.survey_id, "survey_id");
        let learner = c.uuid(&r.learner_id, "learner_id");
        let (survey_id, learner) = c.parsed((survey_id, learner))?;
        let access = call.subject(&learner).await?;
        let s = &self.surveys;
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await?;
        s.open_survey(&txn, call, &survey_id).await?;
        waiting_invitation(&txn, &access, &survey_id).await?;
        answer_invitation(&txn, &access, &survey_id, DECLINED, now).await?;
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Identity]))
            .await?;
        txn.commit().await?;
        Ok(DeclineSurveyResponse {
            declined_at: Some(timestamp(now)),
        })
    }

    async fn submit(
        &self,
        call: &Authorized,
        r: &SubmitResponseRequest,
    ) -> Result<SubmitResponseResponse> {
        let mut c = Checks::new();
        let survey_id = c.uuid(&r.survey_id, "survey_id");
        let learner = c.uuid(&r.learner_id, "learner_id");
        let (survey_id, learner) = c.parsed((survey_id, learner))?;
        let s = &self.surveys;
        // A closed survey is refused before anything else is read; the transaction checks again.
        let row: survey::Model = s.open_survey(&s.db, call, &survey_id).await?;
        let stored = questions::of_survey(&row)?;
        let mut c = Checks::new();
        let answers = answers::parse(&mut c, &r.answers, &stored, "answers");
        let mut answers = c.parsed(answers)?;
        let access = call.subject(&learner).await?;
        let tenant = access.tenant();
        // So is a learner not invited or answered already: before anything is read from
        // enrolment.
        waiting_invitation(&s.db, &access, &survey_id).await?;
        // Scrubbed before anything is stored: the raw comment never reaches the database. The
        // scrubber knows the invitees' names and the course's staff names, read through
        // enrolment; without them (enrolment unreachable) the call fails before anything is
        // stored.
        let mut replaced = 0u32;
        let mut held = false;
        if answers.iter().any(|a| matches!(a.value, Value::Text(_))) {
            let invitations = call
                .find::<invitation::Entity>()
                .filter(invitation::Column::SurveyId.eq(&survey_id))
                .count(&s.db)
                .await?;
            let scrubber = self
                .scrubbing
                .for_survey(
                    tenant,
                    (&survey_id, &row.course_id),
                    invitations,
                    || async {
                        Ok::<_, Error>(
                            call.find::<invitation::Entity>()
                                .select_only()
                                .column(invitation::Column::SubjectId)
                                .filter(invitation::Column::SurveyId.eq(&survey_id))
                                .into_tuple::<String>()
                                .all(&s.db)
                                .await?,
                        )
                    },
                )
                .await?;
            for answer in &mut answers {
                if let Value::Text(text) = &mut answer.value {
                    let scrubbed = scrubber.scrub(text);
                    replaced += scrubbed.replaced;
                    held |= scrubbed.needs_review;
                    *text = scrubbed.text;
                }
            }
        }
        // Only the attributes the survey declares are read, each from its profile field alone.
        let declared = questions::attributes_of(&row)?;
        let attributes = if declared.is_empty() {
            Default::default()
        } else {
            self.people
                .attributes(tenant, access.subject_id(), &declared, s.now().date_naive())
                .await?
        };
        let json = to_json(&answers::Sealed {
            answers,
            attributes,
        })?;
        let now = s.now();
        let response_id = uuid::Uuid::new_v4().to_string();
        let txn = tutela_store::begin(&s.db).await?;
        s.open_survey(&txn, call, &survey_id).await?;
        let invitation = waiting_invitation(&txn, &access, &survey_id).await?;
        answer_invitation(&txn, &access, &survey_id, RESPONDED, now).await?;
        let key = s
            .vault
            .get_or_create_in(&txn, access.tenant(), access.subject_id())
            .await
            .map_err(Error::from)?;
        response::ActiveModel {
            response_id: Set(response_id.clone()),
            tenant: Set(access.tenant().to_owned()),
            survey_id: Set(survey_id.clone()),
            subject_id: Set(access.subject_id().to_owned()),
            cohort: Set(invitation.cohort),
            sealed: Set(key
                .seal(&sealed_field(&response_id), json.as_bytes())
                .map_err(Error::from)?),
            identifiers_replaced: Set(i32::try_from(replaced).unwrap_or(i32::MAX)),
            held_for_review: Set(held),
            comment_withheld: Set(false),
            submitted_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(|e| {
            if tutela_store::is_unique_violation(&e) {
                already_answered()
            } else {
                e.into()
            }
        })?;
        access
            .record_in(
                &txn,
                CategorySet::of(&[DataCategory::Identity, DataCategory::SurveyResponse]),
            )
            .await?;
        txn.commit().await?;
        Ok(SubmitResponseResponse {
            submitted_at: Some(timestamp(now)),
            identifiers_replaced: replaced,
            held_for_review: held,
        })
    }
}

#[tonic::async_trait]
impl ResponseApi for ResponseService {
    async fn invite_respondents(
        &self,
        request: Request<InviteRespondentsRequest>,
    ) -> std::result::Result<Response<InviteRespondentsResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.invite(&call, request.get_ref()).await?))
    }

    async fn remind_respondents(
        &self,
        request: Request<RemindRespondentsRequest>,
    ) -> std::result::Result<Response<RemindRespondentsResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.remind(&call, request.get_ref()).await?))
    }

    async fn decline_survey(
        &self,
        request: Request<DeclineSurveyRequest>,
    ) -> std::result::Result<Response<DeclineSurveyResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.decline(&call, request.get_ref()).await?))
    }

    async fn submit_response(
        &self,
        request: Request<SubmitResponseRequest>,
    ) -> std::result::Result<Response<SubmitResponseResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.submit(&call, request.get_ref()).await?))
    }
}
