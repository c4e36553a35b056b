//! Courses, enrolments with their lifecycle, and assessment results:
//! `tutela.enrolment.v1.CourseService` and `tutela.enrolment.v1.EnrolmentService`.

pub mod entity;

pub(crate) use entity::{status_of, to_enrolment, to_result};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use tonic::{Request, Response, Status};
use tutela_policy::Precondition;
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, page_token};
use tutela_policy::{Authorized, CategorySet, Error, Result, SubjectAccess};
use tutela_proto::common::{DataCategory, PageResponse, SubjectRef};
use tutela_proto::enrolment::course_service_server::CourseService as CourseApi;
use tutela_proto::enrolment::enrolment_service_server::EnrolmentService as EnrolmentApi;
use tutela_proto::enrolment::{
    ChangeEnrolmentStatusRequest, ChangeEnrolmentStatusResponse, Course, CreateCourseRequest,
    CreateCourseResponse, EnrolLearnerRequest, EnrolLearnerResponse, EnrolmentStatus,
    GetCourseRequest, GetCourseResponse, ListCoursesRequest, ListCoursesResponse,
    ListEnrolmentsRequest, ListEnrolmentsResponse, ListResultsRequest, ListResultsResponse,
    RecordResultRequest, RecordResultResponse,
};

use crate::held::Held;
use crate::learners::Learners;
use crate::requests::{Enrol, NewCourse, NewResult, ResultFor, StatusChange};

/// What erasing a learner's records did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Erased {
    /// Rows deleted.
    pub rows: u64,
    /// Enrolments kept under a hold.
    pub kept_enrolments: u64,
    /// Results kept under a hold.
    pub kept_results: u64,
}
use entity::{course, enrolment, result};

/// Whether an enrolment may move from `from` to `to`.
pub fn transition_allowed(from: EnrolmentStatus, to: EnrolmentStatus) -> bool {
    use EnrolmentStatus::*;
    matches!(
        (from, to),
        (Applied, Enrolled)
            | (Enrolled, Started)
            | (Started, Completed)
            | (Applied | Enrolled | Started, Withdrawn)
    )
}

// Each row of these tables remembers the idempotency key and request of the write that made it.
tutela_policy::idempotent_rows!(course, enrolment, result);

fn to_course(row: &course::Model) -> Course {
    Course {
        course_id: row.course_id.clone(),
        code: row.code.clone(),
        title: row.title.clone(),
        programme: row.programme.clone(),
        awarding_body: row.awarding_body.clone(),
        start_date: row.start_date.format("%Y-%m-%d").to_string(),
        end_date: row.end_date.format("%Y-%m-%d").to_string(),
        staff_names: entity::staff_names_of(row),
    }
}

fn next_token<T>(rows: &mut Vec<T>, size: u64, seq: impl Fn(&T) -> i64) -> String {
    let more = rows.len() as u64 > size;
    rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    if more {
        rows.last().map(|r| page_token(seq(r))).unwrap_or_default()
    } else {
        String::new()
    }
}

/// Courses, enrolments and results, shared by the gRPC services and the rights provider.
#[derive(Debug, Clone)]
pub struct Records {
    db: DatabaseConnection,
    learners: Learners,
}

impl Records {
    /// Records over `db` (migrated with [`crate::EnrolmentMigrator`]), checking learners in
    /// `learners` (whose clock they share).
    pub fn new(db: DatabaseConnection, learners: Learners) -> Self {
        Self { db, learners }
    }

    /// Every enrolment and result of a learner, oldest first, recording the access.
    pub async fn of_learner(
        &self,
        access: &SubjectAccess,
    ) -> Result<(Vec<enrolment::Model>, Vec<result::Model>)> {
        let enrolments = access
            .find::<enrolment::Entity>()
            .order_by_asc(enrolment::Column::Seq)
            .all(&self.db)
            .await?;
        let results = access
            .find::<result::Entity>()
            .order_by_asc(result::Column::Seq)
            .all(&self.db)
            .await?;
        let mut read = CategorySet::EMPTY;
        if !enrolments.is_empty() {
            read.insert(DataCategory::Education);
        }
        if !results.is_empty() {
            read.insert(DataCategory::Assessment);
        }
        access.record(read);
        Ok((enrolments, results))
    }

    /// Deletes a learner's enrolments and results except those `held` protects; returns how
    /// many rows went, and how many enrolments and results were kept.
    pub async fn erase_except(&self, access: &SubjectAccess, held: &Held) -> Result<Erased> {
        let mut erased = Erased::default();
        let txn = tutela_store::begin(&self.db).await?;
        // The audit record first: on SQLite the transaction then holds the write lock before it
        // reads what to delete.
        access
            .record_in(
                &txn,
                CategorySet::of(&[DataCategory::Education, DataCategory::Assessment]),
            )
            .await?;
        for row in access.find::<result::Entity>().all(&txn).await? {
            if held.result(&row.result_id) {
                erased.kept_results += 1;
            } else {
                result::Entity::delete_by_id(row.seq).exec(&txn).await?;
                erased.rows += 1;
            }
        }
        for row in access.find::<enrolment::Entity>().all(&txn).await? {
            if held.enrolment(&row.enrolment_id) {
                erased.kept_enrolments += 1;
            } else {
                enrolment::Entity::delete_by_id(row.seq).exec(&txn).await?;
                erased.rows += 1;
            }
        }
        txn.commit().await?;
        Ok(erased)
    }

    pub(crate) async fn course(&self, call: &Authorized, course_id: &str) -> Result<course::Model> {
        found(
            call.find::<course::Entity>()
                .filter(course::Column::CourseId.eq(course_id))
                .one(&self.db)
                .await?,
            "course",
        )
    }

    /// The titles of the courses `ids` names (those that exist), for an export a person reads.
    pub(crate) async fn course_titles(
        &self,
        call: &Authorized,
        ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>> {
        if ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        Ok(call
            .find::<course::Entity>()
            .filter(course::Column::CourseId.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.course_id, c.title))
            .collect())
    }

    pub(crate) async fn enrolment(
        &self,
        call: &Authorized,
        enrolment_id: &str,
    ) -> Result<enrolment::Model> {
        found(
            call.find::<enrolment::Entity>()
                .filter(enrolment::Column::EnrolmentId.eq(enrolment_id))
                .one(&self.db)
                .await?,
            "enrolment",
        )
    }

    /// `learner`'s enrolment on `course`: the one not withdrawn, else the latest; NOT_FOUND
    /// when there is none.
    pub(crate) async fn enrolment_on(
        &self,
        call: &Authorized,
        learner: &str,
        course: &str,
    ) -> Result<enrolment::Model> {
        let rows = call
            .find::<enrolment::Entity>()
            .filter(enrolment::Column::LearnerId.eq(learner))
            .filter(enrolment::Column::CourseId.eq(course))
            .order_by_desc(enrolment::Column::Seq)
            .all(&self.db)
            .await?;
        let live = rows
            .iter()
            .position(|e| status_of(e) != EnrolmentStatus::Withdrawn)
            .unwrap_or(0);
        rows.into_iter()
            .nth(live)
            .ok_or(Error::NotFound("enrolment"))
    }

    /// The access to the learner named at `field`, whether or not their profile exists (an
    /// erased learner's held records and holds outlive it).
    pub(crate) async fn subject_access(
        &self,
        call: &Authorized,
        learner: Option<&SubjectRef>,
        field: &str,
    ) -> Result<SubjectAccess> {
        let mut c = Checks::new();
        let id = c.subject(learner, field);
        call.subject(&c.parsed(id)?).await
    }

    /// The access to an existing learner named at `field`.
    pub(crate) async fn learner_access(
        &self,
        call: &Authorized,
        learner: Option<&SubjectRef>,
        field: &str,
    ) -> Result<SubjectAccess> {
        let access = self.subject_access(call, learner, field).await?;
        if !self.learners.exists(&access).await? {
            return Err(Error::NotFound("learner"));
        }
        Ok(access)
    }

    /// The rows of `E` of the learner a list request names, ordered by `order`, with the access
    /// that read them.
    pub(crate) async fn learner_rows<E: tutela_policy::scope::SubjectScoped>(
        &self,
        call: &Authorized,
        learner: Option<&SubjectRef>,
        order: E::Column,
    ) -> Result<(SubjectAccess, Vec<E::Model>)> {
        let access = self.learner_access(call, learner, "learner").await?;
        let rows = access.find::<E>().order_by_asc(order).all(&self.db).await?;
        Ok((access, rows))
    }

    /// The row an earlier write with this idempotency key made, when this is its retry (see
    /// [`idempotency::replay`]).
    pub(crate) async fn replay<E: idempotency::KeyTable>(
        &self,
        call: &Authorized,
        idempotency: Option<&Idempotency>,
    ) -> Result<Option<E::Model>> {
        idempotency::replay::<E>(call, &self.db, idempotency).await
    }

    /// The database.
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The learners.
    pub(crate) fn learners(&self) -> &Learners {
        &self.learners
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.learners.now()
    }
}

/// `tutela.enrolment.v1.CourseService`.
#[derive(Debug, Clone)]
pub struct CourseService {
    records: Records,
}

impl CourseService {
    /// The service over `records`.
    pub fn new(records: Records) -> Self {
        Self { records }
    }
}

#[tonic::async_trait]
impl CourseApi for CourseService {
    async fn create_course(
        &self,
        request: Request<CreateCourseRequest>,
    ) -> std::result::Result<Response<CreateCourseResponse>, Status> {
        let call = Authorized::of(&request)?;
        let new = NewCourse::try_from(request.get_ref())?;
        if let Some(row) = self
            .records
            .replay::<course::Entity>(&call, new.idempotency.as_ref())
            .await?
        {
            return Ok(Response::new(CreateCourseResponse {
                course: Some(to_course(&row)),
            }));
        }
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let txn = tutela_store::begin(&self.records.db)
            .await
            .map_err(Error::from)?;
        let row = course::ActiveModel {
            tenant: Set(call.tenant().to_owned()),
            course_id: Set(uuid::Uuid::new_v4().to_string()),
            code: Set(new.code),
            title: Set(new.title),
            programme: Set(new.programme),
            awarding_body: Set(new.awarding_body),
            start_date: Set(new.start),
            end_date: Set(new.end),
            staff_names: Set(entity::staff_names_column(&new.staff_names)),
            created_at: Set(self.records.now()),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(|err| {
            if tutela_store::is_unique_violation(&err) {
                Error::AlreadyExists("course with this code")
            } else {
                err.into()
            }
        })?;
        call.record_in(&txn).await?;
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(CreateCourseResponse {
            course: Some(to_course(&row)),
        }))
    }

    async fn get_course(
        &self,
        request: Request<GetCourseRequest>,
    ) -> std::result::Result<Response<GetCourseResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = request.get_ref().course_id.trim();
        if id.is_empty() {
            return Err(Error::invalid("course_id", "required").into());
        }
        let row = self.records.course(&call, id).await?;
        Ok(Response::new(GetCourseResponse {
            course: Some(to_course(&row)),
        }))
    }

    async fn list_courses(
        &self,
        request: Request<ListCoursesRequest>,
    ) -> std::result::Result<Response<ListCoursesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let mut c = Checks::new();
        let (size, after) = c.page(request.get_ref().page.as_ref(), "page");
        c.finish()?;
        let mut rows = call
            .find::<course::Entity>()
            .filter(course::Column::Seq.gt(after))
            .order_by_asc(course::Column::Seq)
            .limit(size + 1)
            .all(&self.records.db)
            .await
            .map_err(Error::from)?;
        let next_page_token = next_token(&mut rows, size, |r| r.seq);
        Ok(Response::new(ListCoursesResponse {
            courses: rows.iter().map(to_course).collect(),
            page: Some(PageResponse { next_page_token }),
        }))
    }
}

/// `tutela.enrolment.v1.EnrolmentService`.
#[derive(Debug, Clone)]
pub struct EnrolmentService {
    records: Records,
}

impl EnrolmentService {
    /// The service over `records`.
    pub fn new(records: Records) -> Self {
        Self { records }
    }
}

#[tonic::async_trait]
impl EnrolmentApi for EnrolmentService {
    async fn enrol_learner(
        &self,
        request: Request<EnrolLearnerRequest>,
    ) -> std::result::Result<Response<EnrolLearnerResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let Enrol {
            idempotency,
            course_id,
            status,
        } = Enrol::try_from(r)?;
        let access = self
            .records
            .learner_access(&call, r.learner.as_ref(), "learner")
            .await?;
        if let Some(row) = self
            .records
            .replay::<enrolment::Entity>(&call, idempotency.as_ref())
            .await?
        {
            access.record_response();
            return Ok(Response::new(EnrolLearnerResponse {
                enrolment: Some(to_enrolment(&row)),
            }));
        }
        self.records.course(&call, &course_id).await?;
        let open = access
            .find::<enrolment::Entity>()
            .filter(enrolment::Column::CourseId.eq(&course_id))
            .filter(enrolment::Column::Status.ne(EnrolmentStatus::Withdrawn.as_str_name()))
            .one(&self.records.db)
            .await
            .map_err(Error::from)?;
        if open.is_some() {
            return Err(Error::AlreadyExists("enrolment of this learner on this course").into());
        }
        let now = self.records.now();
        let (key, request_hash) = Idempotency::columns(idempotency.as_ref());
        let txn = tutela_store::begin(&self.records.db)
            .await
            .map_err(Error::from)?;
        let row = enrolment::ActiveModel {
            tenant: Set(access.tenant().to_owned()),
            enrolment_id: Set(uuid::Uuid::new_v4().to_string()),
            learner_id: Set(access.subject_id().to_owned()),
            course_id: Set(course_id),
            status: Set(status.as_str_name().to_owned()),
            created_at: Set(now),
            status_changed_at: Set(now),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(Error::from)?;
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Education]))
            .await?;
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(EnrolLearnerResponse {
            enrolment: Some(to_enrolment(&row)),
        }))
    }

    async fn change_enrolment_status(
        &self,
        request: Request<ChangeEnrolmentStatusRequest>,
    ) -> std::result::Result<Response<ChangeEnrolmentStatusResponse>, Status> {
        let call = Authorized::of(&request)?;
        let StatusChange {
            enrolment_id: id,
            to,
        } = StatusChange::try_from(request.get_ref())?;
        let row = self.records.enrolment(&call, &id).await?;
        let access = call.subject(&row.learner_id).await?;
        let from = status_of(&row);
        if from == to {
            access.record_response();
            return Ok(Response::new(ChangeEnrolmentStatusResponse {
                enrolment: Some(to_enrolment(&row)),
            }));
        }
        if !transition_allowed(from, to) {
            return Err(Error::FailedPrecondition {
                reason: Precondition::InvalidTransition,
                message: format!(
                    "an enrolment cannot go from {} to {}",
                    from.as_str_name(),
                    to.as_str_name()
                ),
            }
            .into());
        }
        // Only from the status read: a concurrent change makes this one a no-op, reported as
        // the conflict it is.
        let txn = tutela_store::begin(&self.records.db)
            .await
            .map_err(Error::from)?;
        let updated = enrolment::Entity::update_many()
            .col_expr(
                enrolment::Column::Status,
                sea_orm::sea_query::Expr::value(to.as_str_name()),
            )
            .col_expr(
                enrolment::Column::StatusChangedAt,
                sea_orm::sea_query::Expr::value(self.records.now()),
            )
            .filter(enrolment::Column::Seq.eq(row.seq))
            .filter(enrolment::Column::Status.eq(from.as_str_name()))
            .exec(&txn)
            .await
            .map_err(Error::from)?;
        if updated.rows_affected != 1 {
            return Err(Error::FailedPrecondition {
                reason: Precondition::ConcurrentChange,
                message: "the enrolment changed meanwhile; read it again".into(),
            }
            .into());
        }
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Education]))
            .await?;
        txn.commit().await.map_err(Error::from)?;
        let row = self.records.enrolment(&call, &id).await?;
        Ok(Response::new(ChangeEnrolmentStatusResponse {
            enrolment: Some(to_enrolment(&row)),
        }))
    }

    async fn list_enrolments(
        &self,
        request: Request<ListEnrolmentsRequest>,
    ) -> std::result::Result<Response<ListEnrolmentsResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        let by_learner = r
            .learner
            .as_ref()
            .is_some_and(|l| !l.subject_id.trim().is_empty());
        let by_course = !r.course_id.trim().is_empty();
        c.ensure(
            by_learner != by_course,
            "learner",
            "name exactly one of learner and course_id",
        );
        c.finish()?;
        let query = if by_learner {
            let access = self
                .records
                .learner_access(&call, r.learner.as_ref(), "learner")
                .await?;
            access.find::<enrolment::Entity>()
        } else {
            self.records.course(&call, r.course_id.trim()).await?;
            call.find::<enrolment::Entity>()
                .filter(enrolment::Column::CourseId.eq(r.course_id.trim()))
        };
        let mut rows = query
            .filter(enrolment::Column::Seq.gt(after))
            .order_by_asc(enrolment::Column::Seq)
            .limit(size + 1)
            .all(&self.records.db)
            .await
            .map_err(Error::from)?;
        let next_page_token = next_token(&mut rows, size, |r| r.seq);
        let mut enrolments = Vec::with_capacity(rows.len());
        for row in &rows {
            // Each learner listed is an access to their data (and, for a purpose that needs
            // consent, shown only with it).
            match call.subject(&row.learner_id).await {
                Ok(access) => access.record_response(),
                Err(err) if err.leaves_subject_out() => continue,
                Err(err) => return Err(err.into()),
            }
            enrolments.push(to_enrolment(row));
        }
        Ok(Response::new(ListEnrolmentsResponse {
            enrolments,
            page: Some(PageResponse { next_page_token }),
        }))
    }

    async fn record_result(
        &self,
        request: Request<RecordResultRequest>,
    ) -> std::result::Result<Response<RecordResultResponse>, Status> {
        let call = Authorized::of(&request)?;
        let now = self.records.now();
        let new = NewResult::parse(request.get_ref(), now)?;
        let row = match &new.enrolment {
            ResultFor::Enrolment(id) => self.records.enrolment(&call, id).await?,
            ResultFor::OnCourse { learner, course } => {
                self.records.enrolment_on(&call, learner, course).await?
            }
        };
        let access = call.subject(&row.learner_id).await?;
        if let Some(stored) = self
            .records
            .replay::<result::Entity>(&call, new.idempotency.as_ref())
            .await?
        {
            access.record_response();
            return Ok(Response::new(RecordResultResponse {
                result: Some(to_result(&stored)),
            }));
        }
        if !matches!(
            status_of(&row),
            EnrolmentStatus::Started | EnrolmentStatus::Completed
        ) {
            return Err(Error::FailedPrecondition {
                reason: Precondition::EnrolmentNotStarted,
                message: "results are recorded for enrolments that have started".into(),
            }
            .into());
        }
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let txn = tutela_store::begin(&self.records.db)
            .await
            .map_err(Error::from)?;
        let stored = result::ActiveModel {
            tenant: Set(access.tenant().to_owned()),
            result_id: Set(uuid::Uuid::new_v4().to_string()),
            enrolment_id: Set(row.enrolment_id.clone()),
            learner_id: Set(row.learner_id.clone()),
            assessment: Set(new.assessment),
            score: Set(new.score),
            maximum: Set(new.maximum),
            passed: Set(new.passed),
            assessed_at: Set(new.assessed_at),
            assessor: Set(new.assessor),
            recorded_at: Set(now),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(Error::from)?;
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Assessment]))
            .await?;
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(RecordResultResponse {
            result: Some(to_result(&stored)),
        }))
    }

    async fn list_results(
        &self,
        request: Request<ListResultsRequest>,
    ) -> std::result::Result<Response<ListResultsResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        c.finish()?;
        let access = self
            .records
            .learner_access(&call, r.learner.as_ref(), "learner")
            .await?;
        let mut rows = access
            .find::<result::Entity>()
            .filter(result::Column::Seq.gt(after))
            .order_by_asc(result::Column::Seq)
            .limit(size + 1)
            .all(&self.records.db)
            .await
            .map_err(Error::from)?;
        let next_page_token = next_token(&mut rows, size, |r| r.seq);
        if !rows.is_empty() {
            access.record_response();
        }
        Ok(Response::new(ListResultsResponse {
            results: rows.iter().map(to_result).collect(),
            page: Some(PageResponse { next_page_token }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_allows_only_forward_moves_and_withdrawal_before_completion() {
        use EnrolmentStatus::*;
        let all = [Applied, Enrolled, Started, Completed, Withdrawn];
        let allowed: Vec<(EnrolmentStatus, EnrolmentStatus)> = all
            .iter()
            .flat_map(|f| all.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| transition_allowed(*f, *t))
            .collect();
        assert_eq!(
            allowed,
            [
                (Applied, Enrolled),
                (Applied, Withdrawn),
                (Enrolled, Started),
                (Enrolled, Withdrawn),
                (Started, Completed),
                (Started, Withdrawn),
            ]
        );
    }
}
