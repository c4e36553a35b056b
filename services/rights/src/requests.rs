//! `tutela.rights.v1.RightsRequestService`: the requests as staff record, verify, decide and
//! follow them. A request moves received → identity verified → (approved) in progress →
//! completed or partially completed, or refused; every move is one conditional update, so two
//! staff acting at once cannot both move it, and each is audited in its own transaction. Going
//! in progress creates the request's tasks, one per service, in that same transaction; the
//! [`crate::coordinator`] carries them out.

use std::collections::HashMap;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::rights::parse_verification_method;
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, Field, next_page, page_token, time_of, timestamp};
use tutela_policy::{
    Authorized, CategorySet, Error, Precondition, Register, Result, SubjectAccess, fields,
};
use tutela_proto::common::{DataCategory, PageResponse, Purpose, SubjectRef};
use tutela_proto::rights::rights_request_service_server::RightsRequestService as Api;
use tutela_proto::rights::{
    ApproveRightsRequestRequest, ApproveRightsRequestResponse, Correction,
    DownloadAccessBundleRequest, DownloadAccessBundleResponse, ExtendRightsRequestDeadlineRequest,
    ExtendRightsRequestDeadlineResponse, GetRightsRequestRequest, GetRightsRequestResponse,
    ListRightsRequestsRequest, ListRightsRequestsResponse, RefuseRightsRequestRequest,
    RefuseRightsRequestResponse, Requester, RetryRightsRequestRequest, RetryRightsRequestResponse,
    RightsRequest, RightsRequestKind, RightsRequestState, RightsTask, SubmitRightsRequestRequest,
    SubmitRightsRequestResponse, TaskOutcome, TaskState, VerifyRequesterIdentityRequest,
    VerifyRequesterIdentityResponse,
};

use crate::Rights;
use crate::entity::{request, task};

// A request remembers the idempotency key and request of the SubmitRightsRequest that made it.
tutela_policy::idempotent_rows!(request);

const SUBMIT: &str = "tutela.rights.v1.RightsRequestService/SubmitRightsRequest";

/// How far back a request's receipt may be dated: it came by post or to a colleague first.
const MAX_BACKDATING: chrono::Duration = chrono::Duration::days(31);

/// A task failing this many times in a row makes its request stuck.
pub(crate) const STUCK_ATTEMPTS: i32 = 3;

/// A verified request waiting longer than this for a dpo is stuck.
const STUCK_APPROVAL: chrono::Duration = chrono::Duration::days(7);

/// The largest piece of a bundle per message.
const CHUNK: usize = 1 << 20;

/// The states a request is in, as stored: the short names of `RightsRequestState`
/// (`tutela_proto::RIGHTS_REQUEST_STATE_NAMES`, which a test holds these to), as constants for
/// the queries.
pub(crate) mod state {
    pub const RECEIVED: &str = "received";
    pub const IDENTITY_VERIFIED: &str = "identity_verified";
    pub const IN_PROGRESS: &str = "in_progress";
    pub const COMPLETED: &str = "completed";
    pub const PARTIALLY_COMPLETED: &str = "partially_completed";
    pub const REFUSED: &str = "refused";
}

/// The states a task is in, as stored.
pub(crate) mod task_state {
    pub const PENDING: &str = "pending";
    pub const DONE: &str = "done";
    pub const FAILED: &str = "failed";
}

/// Whether a request in `state` is finished with (nothing more is owed).
fn finished(state: &str) -> bool {
    state == state::COMPLETED || state == state::REFUSED
}

fn not_pending(message: impl Into<String>) -> Error {
    Error::FailedPrecondition {
        reason: Precondition::RightsRequestNotPending,
        message: message.into(),
    }
}

/// One month from `at` (Art. 12(3)), or `months` generally.
fn months_after(at: DateTime<Utc>, months: u32) -> Result<DateTime<Utc>> {
    at.checked_add_months(chrono::Months::new(months))
        .ok_or_else(|| Error::internal("a deadline out of range"))
}

/// Whether a request is unfinished past its deadline at `now`.
fn overdue(row: &request::Model, now: DateTime<Utc>) -> bool {
    !finished(&row.state) && row.deadline < now
}

/// Whether a request is stuck at `now` (see `RightsRequest.stuck`).
fn stuck(row: &request::Model, tasks: &[task::Model], now: DateTime<Utc>) -> bool {
    match row.state.as_str() {
        state::IDENTITY_VERIFIED => row
            .identity_verified_at
            .is_some_and(|at| at + STUCK_APPROVAL < now),
        state::IN_PROGRESS => tasks
            .iter()
            .any(|t| t.state == task_state::PENDING && t.attempts >= STUCK_ATTEMPTS),
        _ => false,
    }
}

fn task_to_proto(t: &task::Model) -> Result<RightsTask> {
    let outcome = match &t.outcome {
        Some(bytes) => Some(
            TaskOutcome::decode(bytes.as_slice())
                .map_err(|_| Error::internal("a stored task outcome does not decode"))?,
        ),
        None => None,
    };
    Ok(RightsTask {
        service: t.service.clone(),
        state: match t.state.as_str() {
            task_state::PENDING => TaskState::Pending,
            task_state::DONE => TaskState::Done,
            task_state::FAILED => TaskState::Failed,
            _ => TaskState::Unspecified,
        } as i32,
        attempts: u32::try_from(t.attempts).unwrap_or(0),
        last_error: t.last_error.clone().unwrap_or_default(),
        next_attempt_at: (t.state == task_state::PENDING).then(|| timestamp(t.next_attempt_at)),
        done_at: t.done_at.map(timestamp),
        outcome,
    })
}

fn to_proto(
    row: &request::Model,
    tasks: &[task::Model],
    now: DateTime<Utc>,
) -> Result<RightsRequest> {
    Ok(RightsRequest {
        request_id: row.request_id.clone(),
        subject: Some(SubjectRef {
            subject_id: row.subject_id.clone(),
        }),
        kind: RightsRequestKind::from_short_name(&row.kind).unwrap_or_default() as i32,
        requester: Requester::from_short_name(&row.requester).unwrap_or_default() as i32,
        state: RightsRequestState::from_short_name(&row.state).unwrap_or_default() as i32,
        reference: row.reference.clone(),
        received_at: Some(timestamp(row.received_at)),
        deadline: Some(timestamp(row.deadline)),
        extension_reason: row.extension_reason.clone().unwrap_or_default(),
        identity_verified_at: row.identity_verified_at.map(timestamp),
        approved_by: row.approved_by.clone().unwrap_or_default(),
        refusal_reason: row.refusal_reason.clone().unwrap_or_default(),
        finished_at: row.finished_at.map(timestamp),
        overdue: overdue(row, now),
        stuck: stuck(row, tasks, now),
        tasks: tasks.iter().map(task_to_proto).collect::<Result<_>>()?,
        corrected_fields: row
            .corrected_fields
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect(),
        purposes: objected_purposes(row)
            .into_iter()
            .map(|p| p as i32)
            .collect(),
    })
}

/// OBJECTION: the purposes `row` objects to (none for another kind).
pub(crate) fn objected_purposes(row: &request::Model) -> Vec<Purpose> {
    row.purposes
        .split(',')
        .filter_map(Purpose::from_short_name)
        .collect()
}

/// A parsed SubmitRightsRequest.
struct NewRequest {
    subject_id: String,
    kind: &'static str,
    requester: &'static str,
    reference: String,
    received_at: Option<DateTime<Utc>>,
    idempotency: Option<Idempotency>,
    /// RECTIFICATION: the correction, the names of its fields and their categories.
    correction: Option<(Correction, Vec<String>, CategorySet)>,
    /// OBJECTION: the purposes objected to.
    purposes: Vec<Purpose>,
}

const PROFILE: &str = "tutela.enrolment.v1.LearnerProfile";

/// The correction of a RECTIFICATION request (required there, refused elsewhere): its fields
/// must be fields of the learner profile; their values are checked by the services that hold
/// them, as UpdateLearner checks them.
fn parse_correction(
    c: &mut Checks,
    kind: Option<&str>,
    correction: Option<&Correction>,
) -> Field<Option<(Correction, Vec<String>, CategorySet)>> {
    match (kind, correction) {
        (Some("rectification"), None) => {
            Err(c.flag("correction", "required for a RECTIFICATION request"))
        }
        (Some("rectification"), Some(correction)) => {
            let paths = correction
                .update_mask
                .as_ref()
                .map(|m| m.paths.clone())
                .unwrap_or_default();
            if paths.is_empty() {
                return Err(c.flag(
                    "correction.update_mask",
                    "required: the fields of correction.profile to correct",
                ));
            }
            let masked = fields::descriptor(PROFILE).and_then(|d| {
                fields::masked(&d, &paths, "correction.profile", "correction.update_mask")
            });
            match masked {
                Ok(masked) => {
                    let names = masked.iter().map(|(f, _, _)| f.name().to_owned()).collect();
                    let categories = masked.iter().map(|(_, _, c)| *c).collect();
                    Ok(Some((correction.clone(), names, categories)))
                }
                Err(Error::InvalidArgument(violations)) => {
                    let mut flagged = None;
                    for v in violations {
                        flagged = Some(c.flag(v.field, v.description));
                    }
                    Err(flagged.unwrap_or_else(|| c.flag("correction", "not a correction")))
                }
                Err(_) => Err(c.flag("correction", "not a correction of the learner profile")),
            }
        }
        (_, Some(_)) => Err(c.flag("correction", "only for a RECTIFICATION request")),
        (_, None) => Ok(None),
    }
}

/// The purposes of an OBJECTION request (required there, refused elsewhere).
fn parse_purposes(
    c: &mut Checks,
    register: &Register,
    kind: Option<&str>,
    purposes: &[i32],
) -> Field<Vec<Purpose>> {
    match kind {
        Some("objection") => {
            tutela_policy::rights::objection_purposes(c, register, purposes, "purposes")
        }
        _ if !purposes.is_empty() => Err(c.flag("purposes", "only for an OBJECTION request")),
        _ => Ok(Vec::new()),
    }
}

fn parse_submit(
    r: &SubmitRightsRequestRequest,
    register: &Register,
    now: DateTime<Utc>,
) -> Result<NewRequest> {
    let mut c = Checks::new();
    let subject = c.subject(r.subject.as_ref(), "subject");
    let kind = RightsRequestKind::try_from(r.kind)
        .ok()
        .filter(|k| *k != RightsRequestKind::Unspecified)
        .map(RightsRequestKind::short_name);
    let kind = c.parse(
        kind,
        "kind",
        "required: ACCESS, PORTABILITY, ERASURE, RESTRICTION, RECTIFICATION or OBJECTION",
    );
    let requester = Requester::try_from(r.requester)
        .ok()
        .filter(|q| *q != Requester::Unspecified)
        .map(Requester::short_name);
    let requester = c.parse(
        requester,
        "requester",
        "required: SUBJECT, GUARDIAN or AUTHORISED_AGENT",
    );
    let reference = c.optional(&r.reference, "reference", 200);
    let received_at = match &r.received_at {
        None => Ok(None),
        Some(ts) => {
            let at = time_of(ts).filter(|at| {
                // A minute of clock skew between the caller and this service is not the future.
                *at <= now + chrono::Duration::minutes(1) && *at >= now - MAX_BACKDATING
            });
            c.parse(
                at.map(Some),
                "received_at",
                "at most 31 days ago and not in the future",
            )
        }
    };
    let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
    let correction = parse_correction(&mut c, kind.as_ref().ok().copied(), r.correction.as_ref());
    let purposes = parse_purposes(&mut c, register, kind.as_ref().ok().copied(), &r.purposes);
    let (subject_id, kind, requester, reference, received_at, key, correction, purposes) = c
        .parsed((
            subject,
            kind,
            requester,
            reference,
            received_at,
            key,
            correction,
            purposes,
        ))?;
    Ok(NewRequest {
        subject_id,
        kind,
        requester,
        reference: reference.to_owned(),
        received_at,
        idempotency: Idempotency::of_request(key, SUBMIT, r, |m| m.idempotency_key = None),
        correction,
        purposes,
    })
}

/// The field a RECTIFICATION request's correction is sealed under.
pub(crate) fn correction_field(request_id: &str) -> String {
    format!("correction/{request_id}")
}

/// The one UUID a request names, parsed.
fn request_id(id: &str) -> Result<String> {
    let mut c = Checks::new();
    let id = c.uuid(id, "request_id");
    c.parsed(id)
}

/// The gRPC service.
#[derive(Clone)]
pub struct RightsRequestService {
    rights: Rights,
}

impl std::fmt::Debug for RightsRequestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RightsRequestService")
            .finish_non_exhaustive()
    }
}

/// What a state change writes beside the new state.
#[derive(Default)]
struct Change {
    identity_verified_at: Option<DateTime<Utc>>,
    approved_by: Option<String>,
    refusal_reason: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

impl RightsRequestService {
    /// The service over `rights`.
    pub fn new(rights: Rights) -> Self {
        Self { rights }
    }

    async fn request(&self, call: &Authorized, id: &str) -> Result<request::Model> {
        found(
            call.find::<request::Entity>()
                .filter(request::Column::RequestId.eq(id))
                .one(&self.rights.db)
                .await?,
            "rights request",
        )
    }

    async fn tasks_of(
        &self,
        call: &Authorized,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<task::Model>>> {
        let mut by_request: HashMap<String, Vec<task::Model>> = HashMap::new();
        if ids.is_empty() {
            return Ok(by_request);
        }
        let rows = call
            .find::<task::Entity>()
            .filter(task::Column::RequestId.is_in(ids.to_vec()))
            .order_by_asc(task::Column::Seq)
            .all(&self.rights.db)
            .await?;
        for t in rows {
            by_request.entry(t.request_id.clone()).or_default().push(t);
        }
        Ok(by_request)
    }

    /// The request as the API shows it, with its tasks, read again after a change.
    async fn show(&self, call: &Authorized, id: &str) -> Result<RightsRequest> {
        let row = self.request(call, id).await?;
        let tasks = self
            .tasks_of(call, std::slice::from_ref(&row.request_id))
            .await?;
        to_proto(
            &row,
            tasks.get(&row.request_id).map_or(&[][..], Vec::as_slice),
            self.rights.now(),
        )
    }

    async fn submit(
        &self,
        call: &Authorized,
        r: &SubmitRightsRequestRequest,
    ) -> Result<RightsRequest> {
        let now = self.rights.now();
        let new = parse_submit(r, &self.rights.register, now)?;
        let db = &self.rights.db;
        if let Some(row) =
            idempotency::replay::<request::Entity>(call, db, new.idempotency.as_ref()).await?
        {
            return to_proto(&row, &[], now);
        }
        let access = call.subject(&new.subject_id).await?;
        let received_at = new.received_at.unwrap_or(now);
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let request_id = uuid::Uuid::now_v7().to_string();
        let mut written = CategorySet::of(&[DataCategory::Identity]);
        let (corrected_fields, sealed) = match &new.correction {
            None => (String::new(), None),
            Some((correction, names, categories)) => {
                written = written.union(*categories);
                // The corrected values are the subject's data: sealed until they are applied.
                let key = self
                    .rights
                    .vault
                    .get_or_create(call.tenant(), &new.subject_id)
                    .await
                    .map_err(Error::from)?;
                let sealed = key
                    .seal(&correction_field(&request_id), &correction.encode_to_vec())
                    .map_err(Error::from)?;
                (names.join(","), Some(sealed))
            }
        };
        let txn = tutela_store::begin(db).await?;
        access.record_in(&txn, written).await?;
        let row = request::ActiveModel {
            request_id: Set(request_id),
            corrected_fields: Set(corrected_fields),
            correction: Set(sealed),
            purposes: Set(new
                .purposes
                .iter()
                .map(|p| p.short_name())
                .collect::<Vec<_>>()
                .join(",")),
            tenant: Set(call.tenant().to_owned()),
            subject_id: Set(new.subject_id.clone()),
            kind: Set(new.kind.to_owned()),
            requester: Set(new.requester.to_owned()),
            reference: Set(new.reference),
            state: Set(state::RECEIVED.to_owned()),
            received_at: Set(received_at),
            deadline: Set(months_after(received_at, 1)?),
            recorded_by: Set(call.principal().id.clone()),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(idempotency::key_taken)?;
        txn.commit().await?;
        tracing::info!(request_id = %row.request_id, kind = %row.kind, "rights request received");
        to_proto(&row, &[], now)
    }

    /// Moves `row` from one of `from` to `to` with `change`, audited as a change of the
    /// subject's request; with `start`, creates its tasks in the same transaction.
    /// RIGHTS_REQUEST_NOT_PENDING when it is no longer in one of `from`.
    async fn transition(
        &self,
        access: &SubjectAccess,
        row: &request::Model,
        from: &[&str],
        to: &str,
        change: Change,
    ) -> Result<()> {
        let db = &self.rights.db;
        let now = self.rights.now();
        let txn = tutela_store::begin(db).await?;
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Identity]))
            .await?;
        let mut update = access
            .update::<request::Entity>()
            .col_expr(request::Column::State, Expr::value(to))
            .filter(request::Column::RequestId.eq(&row.request_id))
            .filter(request::Column::State.is_in(from.iter().copied()));
        if let Some(at) = change.identity_verified_at {
            update = update.col_expr(request::Column::IdentityVerifiedAt, Expr::value(at));
        }
        if let Some(by) = change.approved_by {
            update = update.col_expr(request::Column::ApprovedBy, Expr::value(by));
        }
        if let Some(reason) = change.refusal_reason {
            update = update.col_expr(request::Column::RefusalReason, Expr::value(reason));
        }
        if let Some(at) = change.finished_at {
            update = update.col_expr(request::Column::FinishedAt, Expr::value(at));
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            return Err(not_pending(
                "the rights request changed meanwhile; read it again",
            ));
        }
        if to == state::IN_PROGRESS {
            self.create_tasks(&txn, row, now).await?;
        }
        txn.commit().await?;
        tracing::info!(request_id = %row.request_id, state = to, "rights request moved");
        Ok(())
    }

    /// One pending task per service of the deployment, due now.
    async fn create_tasks(
        &self,
        txn: &impl ConnectionTrait,
        row: &request::Model,
        now: DateTime<Utc>,
    ) -> Result<()> {
        for service in self.rights.services.iter() {
            task::ActiveModel {
                tenant: Set(row.tenant.clone()),
                subject_id: Set(row.subject_id.clone()),
                request_id: Set(row.request_id.clone()),
                service: Set(service.clone()),
                state: Set(task_state::PENDING.to_owned()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                ..Default::default()
            }
            .insert(txn)
            .await?;
        }
        Ok(())
    }

    async fn verify(
        &self,
        call: &Authorized,
        r: &VerifyRequesterIdentityRequest,
    ) -> Result<RightsRequest> {
        let mut c = Checks::new();
        let id = c.uuid(&r.request_id, "request_id");
        let reference = c.required(&r.evidence_reference, "evidence_reference", 200);
        let method = parse_verification_method(&mut c, r.method);
        let (id, reference, method) = c.parsed((id, reference, method))?;
        let row = self.request(call, &id).await?;
        if row.state != state::RECEIVED {
            return Err(not_pending(format!(
                "the requester's identity is verified while the request is received; it is {}",
                row.state
            )));
        }
        let access = call.subject(&row.subject_id).await?;
        // Into the consent ledger, which every service's ExportSubject reads.
        access
            .record_identity_verification(method, reference)
            .await?;
        let now = self.rights.now();
        let change = Change {
            identity_verified_at: Some(now),
            ..Default::default()
        };
        if self.rights.register.rights.needs_approval(&row.kind) {
            self.transition(
                &access,
                &row,
                &[state::RECEIVED],
                state::IDENTITY_VERIFIED,
                change,
            )
            .await?;
        } else {
            let change = Change {
                approved_by: Some("register".into()),
                ..change
            };
            self.transition(
                &access,
                &row,
                &[state::RECEIVED],
                state::IN_PROGRESS,
                change,
            )
            .await?;
        }
        self.show(call, &id).await
    }

    async fn approve(&self, call: &Authorized, id: &str) -> Result<RightsRequest> {
        let id = request_id(id)?;
        let row = self.request(call, &id).await?;
        if row.state != state::IDENTITY_VERIFIED {
            return Err(not_pending(format!(
                "a request is approved once the requester's identity is verified; it is {}",
                row.state
            )));
        }
        let access = call.subject(&row.subject_id).await?;
        let change = Change {
            approved_by: Some(call.principal().id.clone()),
            ..Default::default()
        };
        self.transition(
            &access,
            &row,
            &[state::IDENTITY_VERIFIED],
            state::IN_PROGRESS,
            change,
        )
        .await?;
        self.show(call, &id).await
    }

    async fn refuse(
        &self,
        call: &Authorized,
        r: &RefuseRightsRequestRequest,
    ) -> Result<RightsRequest> {
        let mut c = Checks::new();
        let id = c.uuid(&r.request_id, "request_id");
        let reason = c.required(&r.reason, "reason", 500);
        let (id, reason) = c.parsed((id, reason))?;
        let row = self.request(call, &id).await?;
        let open = [state::RECEIVED, state::IDENTITY_VERIFIED];
        if !open.contains(&row.state.as_str()) {
            return Err(not_pending(format!(
                "a request is refused before it is in progress; it is {}",
                row.state
            )));
        }
        let access = call.subject(&row.subject_id).await?;
        let change = Change {
            refusal_reason: Some(reason.to_owned()),
            finished_at: Some(self.rights.now()),
            ..Default::default()
        };
        self.transition(&access, &row, &open, state::REFUSED, change)
            .await?;
        self.show(call, &id).await
    }

    async fn extend(
        &self,
        call: &Authorized,
        r: &ExtendRightsRequestDeadlineRequest,
    ) -> Result<RightsRequest> {
        let mut c = Checks::new();
        let id = c.uuid(&r.request_id, "request_id");
        let reason = c.required(&r.reason, "reason", 500);
        let (id, reason) = c.parsed((id, reason))?;
        let row = self.request(call, &id).await?;
        if finished(&row.state) {
            return Err(not_pending(format!(
                "the request is {}: there is no deadline left to extend",
                row.state
            )));
        }
        if row.extension_reason.is_some() {
            return Err(Error::FailedPrecondition {
                reason: Precondition::RightsRequestAlreadyExtended,
                message: "the deadline was extended already; it can be extended once".into(),
            });
        }
        let access = call.subject(&row.subject_id).await?;
        let txn = tutela_store::begin(&self.rights.db).await?;
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Identity]))
            .await?;
        let extended = access
            .update::<request::Entity>()
            .col_expr(
                request::Column::Deadline,
                Expr::value(months_after(row.deadline, 2)?),
            )
            .col_expr(request::Column::ExtensionReason, Expr::value(reason))
            .filter(request::Column::RequestId.eq(&id))
            .filter(request::Column::ExtensionReason.is_null())
            .exec(&txn)
            .await?;
        if extended.rows_affected == 0 {
            return Err(Error::FailedPrecondition {
                reason: Precondition::RightsRequestAlreadyExtended,
                message: "the deadline was extended meanwhile; it can be extended once".into(),
            });
        }
        txn.commit().await?;
        self.show(call, &id).await
    }

    async fn retry(&self, call: &Authorized, id: &str) -> Result<RightsRequest> {
        let id = request_id(id)?;
        let row = self.request(call, &id).await?;
        if row.state != state::PARTIALLY_COMPLETED {
            return Err(not_pending(format!(
                "only a partially completed request has failed tasks to run again; it is {}",
                row.state
            )));
        }
        let access = call.subject(&row.subject_id).await?;
        let now = self.rights.now();
        let txn = tutela_store::begin(&self.rights.db).await?;
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Identity]))
            .await?;
        let moved = access
            .update::<request::Entity>()
            .col_expr(request::Column::State, Expr::value(state::IN_PROGRESS))
            .col_expr(
                request::Column::FinishedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(request::Column::RequestId.eq(&id))
            .filter(request::Column::State.eq(state::PARTIALLY_COMPLETED))
            .exec(&txn)
            .await?;
        if moved.rows_affected == 0 {
            return Err(not_pending(
                "the rights request changed meanwhile; read it again",
            ));
        }
        access
            .update::<task::Entity>()
            .col_expr(task::Column::State, Expr::value(task_state::PENDING))
            .col_expr(task::Column::Attempts, Expr::value(0))
            .col_expr(task::Column::NextAttemptAt, Expr::value(now))
            .filter(task::Column::RequestId.eq(&id))
            .filter(task::Column::State.eq(task_state::FAILED))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.show(call, &id).await
    }

    async fn list(
        &self,
        call: &Authorized,
        r: &ListRightsRequestsRequest,
    ) -> Result<ListRightsRequestsResponse> {
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        let wanted = match RightsRequestState::try_from(r.state) {
            Ok(RightsRequestState::Unspecified) => Ok(None),
            Ok(s) => Ok(Some(s.short_name())),
            Err(_) => c.parse(None, "state", "a tutela.rights.v1.RightsRequestState"),
        };
        let subject = match &r.subject {
            None => Ok(None),
            Some(s) => c.subject(Some(s), "subject").map(Some),
        };
        let (wanted, subject) = c.parsed((wanted, subject))?;
        let now = self.rights.now();
        let mut query = call.find::<request::Entity>();
        if let Some(subject) = &subject {
            // Only within the caller's reach: a learner's own, a guardian's wards'.
            call.subject(subject).await?;
            query = query.filter(request::Column::SubjectId.eq(subject));
        }
        if let Some(wanted) = wanted {
            query = query.filter(request::Column::State.eq(wanted));
        }
        if r.overdue_only {
            query = query
                .filter(request::Column::State.is_not_in([state::COMPLETED, state::REFUSED]))
                .filter(request::Column::Deadline.lt(now));
        }
        if r.stuck_only {
            let failing = Query::select()
                .column(task::Column::RequestId)
                .from(task::Entity)
                .and_where(task::Column::Tenant.eq(call.tenant()))
                .and_where(task::Column::State.eq(task_state::PENDING))
                .and_where(task::Column::Attempts.gte(STUCK_ATTEMPTS))
                .to_owned();
            query = query.filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(request::Column::State.eq(state::IDENTITY_VERIFIED))
                            .add(request::Column::IdentityVerifiedAt.lt(now - STUCK_APPROVAL)),
                    )
                    .add(
                        Condition::all()
                            .add(request::Column::State.eq(state::IN_PROGRESS))
                            .add(request::Column::RequestId.in_subquery(failing)),
                    ),
            );
        }
        if after > 0 {
            query = query.filter(request::Column::Seq.lt(after));
        }
        let mut rows = query
            .order_by_desc(request::Column::Seq)
            .limit(size + 1)
            .all(&self.rights.db)
            .await?;
        let next_page_token = next_page(&mut rows, size, |r| page_token(r.seq));
        let ids: Vec<String> = rows.iter().map(|r| r.request_id.clone()).collect();
        let tasks = self.tasks_of(call, &ids).await?;
        // Each subject listed is an access to their data (their id and their requests).
        // Their consent states are read in one batch, not one look-up per subject.
        let mut subjects: Vec<String> = rows.iter().map(|r| r.subject_id.clone()).collect();
        subjects.sort_unstable();
        subjects.dedup();
        for access in call
            .subjects_for(
                &subjects,
                None,
                tutela_policy::consent::ConsentNeed::Register,
            )
            .await?
        {
            access?.record_response();
        }
        Ok(ListRightsRequestsResponse {
            requests: rows
                .iter()
                .map(|row| {
                    to_proto(
                        row,
                        tasks.get(&row.request_id).map_or(&[][..], Vec::as_slice),
                        now,
                    )
                })
                .collect::<Result<_>>()?,
            page: Some(PageResponse { next_page_token }),
        })
    }

    async fn bundle(&self, call: &Authorized, id: &str) -> Result<Vec<u8>> {
        let id = request_id(id)?;
        let row = self.request(call, &id).await?;
        if !matches!(row.kind.as_str(), "access" | "portability") {
            return Err(not_pending(format!(
                "a bundle is made for access and portability requests; this is an {} request",
                row.kind
            )));
        }
        if !matches!(
            row.state.as_str(),
            state::COMPLETED | state::PARTIALLY_COMPLETED
        ) {
            return Err(not_pending(format!(
                "the bundle is ready once the request's tasks are done; it is {}",
                row.state
            )));
        }
        let access = call.subject(&row.subject_id).await?;
        let tasks = self.tasks_of(call, std::slice::from_ref(&id)).await?;
        let tasks = tasks.get(&id).map_or(&[][..], Vec::as_slice);
        let (archive, categories) = crate::assemble::archive(&self.rights, &row, tasks).await?;
        access.record(categories);
        Ok(archive)
    }
}

type BundleStream =
    Pin<Box<dyn Stream<Item = std::result::Result<DownloadAccessBundleResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Api for RightsRequestService {
    async fn submit_rights_request(
        &self,
        request: Request<SubmitRightsRequestRequest>,
    ) -> std::result::Result<Response<SubmitRightsRequestResponse>, Status> {
        let call = Authorized::of(&request)?;
        let request = self.submit(&call, request.get_ref()).await?;
        Ok(Response::new(SubmitRightsRequestResponse {
            request: Some(request),
        }))
    }

    async fn verify_requester_identity(
        &self,
        request: Request<VerifyRequesterIdentityRequest>,
    ) -> std::result::Result<Response<VerifyRequesterIdentityResponse>, Status> {
        let call = Authorized::of(&request)?;
        let request = self.verify(&call, request.get_ref()).await?;
        Ok(Response::new(VerifyRequesterIdentityResponse {
            request: Some(request),
        }))
    }

    async fn approve_rights_request(
        &self,
        request: Request<ApproveRightsRequestRequest>,
    ) -> std::result::Result<Response<ApproveRightsRequestResponse>, Status> {
        let call = Authorized::of(&request)?;
        let request = self.approve(&call, &request.get_ref().request_id).await?;
        Ok(Response::new(ApproveRightsRequestResponse {
            request: Some(request),
        }))
    }

    async fn refuse_rights_request(
        &self,
        request: Request<RefuseRightsRequestRequest>,
    ) -> std::result::Result<Response<RefuseRightsRequestResponse>, Status> {
        let call = Authorized::of(&request)?;
        let request = self.refuse(&call, request.get_ref()).await?;
        Ok(Response::new(RefuseRightsRequestResponse {
            request: Some(request),
        }))
    }

    async fn extend_rights_request_deadline(
        &self,
        request: Request<ExtendRightsRequestDeadlineRequest>,
    ) -> std::result::Result<Response<ExtendRightsRequestDeadlineResponse>, Status> {
        let call = Authorized::of(&request)?;
        let request = self.extend(&call, request.get_ref()).await?;
        Ok(Response::new(ExtendRightsRequestDeadlineResponse {
            request: Some(request),
        }))
    }

    async fn retry_rights_request(
        &self,
        request: Request<RetryRightsRequestRequest>,
    ) -> std::result::Result<Response<RetryRightsRequestResponse>, Status> {
        let call = Authorized::of(&request)?;
        let request = self.retry(&call, &request.get_ref().request_id).await?;
        Ok(Response::new(RetryRightsRequestResponse {
            request: Some(request),
        }))
    }

    async fn get_rights_request(
        &self,
        request: Request<GetRightsRequestRequest>,
    ) -> std::result::Result<Response<GetRightsRequestResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = request_id(&request.get_ref().request_id)?;
        let shown = self.show(&call, &id).await?;
        if let Some(subject) = &shown.subject {
            call.subject(&subject.subject_id).await?.record_response();
        }
        Ok(Response::new(GetRightsRequestResponse {
            request: Some(shown),
        }))
    }

    async fn list_rights_requests(
        &self,
        request: Request<ListRightsRequestsRequest>,
    ) -> std::result::Result<Response<ListRightsRequestsResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.list(&call, request.get_ref()).await?))
    }

    type DownloadAccessBundleStream = BundleStream;

    async fn download_access_bundle(
        &self,
        request: Request<DownloadAccessBundleRequest>,
    ) -> std::result::Result<Response<Self::DownloadAccessBundleStream>, Status> {
        let call = Authorized::of(&request)?;
        let archive = self.bundle(&call, &request.get_ref().request_id).await?;
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&archive));
        let chunks: Vec<std::result::Result<DownloadAccessBundleResponse, Status>> = archive
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, data)| {
                Ok(DownloadAccessBundleResponse {
                    data: data.to_vec(),
                    archive_sha256: if i == 0 { sha.clone() } else { String::new() },
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_states_are_the_short_names_of_the_contract() {
        use RightsRequestState as S;
        for (constant, value) in [
            (state::RECEIVED, S::Received),
            (state::IDENTITY_VERIFIED, S::IdentityVerified),
            (state::IN_PROGRESS, S::InProgress),
            (state::COMPLETED, S::Completed),
            (state::PARTIALLY_COMPLETED, S::PartiallyCompleted),
            (state::REFUSED, S::Refused),
        ] {
            assert_eq!(constant, value.short_name());
        }
    }
}
