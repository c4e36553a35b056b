//! `tutela.sharing.v1.InboundService`: what exam partners send back. A partner submits booking
//! confirmations and exam results against the pseudonyms it was given; each pseudonym is mapped
//! back to the learner only if the disclosure log shows this partner was sent that learner under
//! one of its agreements in force (under any of its key versions, current or retired), so a
//! partner can neither probe for learners it never received nor use another partner's
//! pseudonyms. Bookings (for a course that exists) are kept here; results go to the learner's enrolment record through
//! enrolment's own API (as a `service` principal: the enrolment found for course
//! administration, the result recorded for `exam_results`), where its guard and audit apply, each under an idempotency key derived from the partner and the item so that a
//! retried item is recorded once.
//!
//! One bad item never fails a batch: each gets its outcome. Only a malformed request (a field
//! out of its rules) is refused whole, with the field named.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use prost::Message;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Precondition, Result};
use tutela_proto::common::{DataCategory, PageResponse, SubjectRef};
use tutela_proto::enrolment::AssessmentResult;
use tutela_proto::sharing::inbound_service_server::InboundService as InboundApi;
use tutela_proto::sharing::{
    Booking, ItemOutcome, ItemResult, ListBookingsRequest, ListBookingsResponse,
    SubmitBookingConfirmationsRequest, SubmitBookingConfirmationsResponse, SubmitResultsRequest,
    SubmitResultsResponse,
};

use crate::entity::{
    agreement, agreement_purpose, booking, delivery, disclosure, inbound_submission, partner_key,
};
use crate::sharing::{Sharing, next_page, page_size, time_of};
use tutela_enrolment_client::{Enrolment, Recorded};

const SUBMIT_BOOKINGS: &str = "tutela.sharing.v1.InboundService/SubmitBookingConfirmations";
const SUBMIT_RESULTS: &str = "tutela.sharing.v1.InboundService/SubmitResults";

/// Most items one submission may carry.
const MAX_ITEMS: usize = 1_000;

/// `tutela.sharing.v1.InboundService`.
#[derive(Debug, Clone)]
pub struct InboundService {
    sharing: Sharing,
    enrolment: Option<Arc<Enrolment>>,
}

impl InboundService {
    /// The service over `sharing`, looking enrolments up and recording results through
    /// `enrolment` (`None`: none configured, and every submission is UNAVAILABLE).
    pub fn new(sharing: Sharing, enrolment: Option<Arc<Enrolment>>) -> Self {
        Self { sharing, enrolment }
    }

    fn enrolment(&self) -> Result<&Enrolment> {
        self.enrolment.as_deref().ok_or_else(|| {
            Error::Unavailable(
                "no enrolment service is configured (sharing.enrolment_endpoint)".into(),
            )
        })
    }
}

/// The partner of a partner token; the rules let no other kind submit.
fn partner_of(call: &Authorized) -> Result<String> {
    call.principal().partner.clone().ok_or(Error::Denied)
}

/// One item's outcome.
fn outcome(index: usize, outcome: ItemOutcome, detail: &str) -> ItemResult {
    ItemResult {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        outcome: outcome as i32,
        detail: detail.to_owned(),
    }
}

const UNKNOWN: &str =
    "not a pseudonym of a learner sent to this partner under an agreement in force";

/// The ids of the partner's agreements in force at `now`.
async fn agreements_in_force<C: ConnectionTrait>(
    conn: &C,
    call: &Authorized,
    partner_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    Ok(call
        .find::<agreement::Entity>()
        .filter(agreement::Column::PartnerId.eq(partner_id))
        .filter(agreement::Column::State.eq("active"))
        .filter(agreement::Column::ValidFrom.lte(now))
        .all(conn)
        .await?
        .into_iter()
        .filter(|a| a.valid_to.is_none_or(|end| end > now))
        .map(|a| a.agreement_id)
        .collect())
}

/// FAILED_PRECONDITION `AGREEMENT_REQUIRED` unless one of `in_force` covers the call's purpose.
async fn require_agreement<C: ConnectionTrait>(
    conn: &C,
    call: &Authorized,
    in_force: &[String],
) -> Result<()> {
    let purpose = call.purpose().short_name();
    let covered = call
        .find::<agreement_purpose::Entity>()
        .filter(agreement_purpose::Column::AgreementId.is_in(in_force.to_vec()))
        .filter(agreement_purpose::Column::Purpose.eq(purpose))
        .one(conn)
        .await?
        .is_some();
    if covered {
        Ok(())
    } else {
        Err(Error::FailedPrecondition {
            reason: Precondition::AgreementRequired,
            message: format!("no agreement of this partner in force covers the purpose {purpose}"),
        })
    }
}

/// Maps the partner's pseudonyms in `wanted` back to learners: only those of learners the
/// disclosure log shows were sent to the partner under `in_force`, each under the key version of
/// the delivery that sent it (retired keys stay, so old pseudonyms still map). The log keeps the
/// learner, not the pseudonym, so the candidates' pseudonyms are computed: one HMAC per learner
/// and key version the partner received, bounded by what was disclosed to it.
async fn map_back<C: ConnectionTrait>(
    sharing: &Sharing,
    conn: &C,
    call: &Authorized,
    partner_id: &str,
    in_force: &[String],
    wanted: &HashSet<&str>,
) -> Result<HashMap<String, String>> {
    let mut mapped = HashMap::new();
    if in_force.is_empty() || wanted.is_empty() {
        return Ok(mapped);
    }
    let versions: HashMap<String, i32> = call
        .find::<delivery::Entity>()
        .filter(delivery::Column::PartnerId.eq(partner_id))
        .filter(delivery::Column::AgreementId.is_in(in_force.to_vec()))
        .all(conn)
        .await?
        .into_iter()
        .map(|d| (d.delivery_id, d.key_version))
        .collect();
    let sent: Vec<(String, String)> = call
        .find::<disclosure::Entity>()
        .select_only()
        .column(disclosure::Column::SubjectId)
        .column(disclosure::Column::DeliveryId)
        .filter(disclosure::Column::PartnerId.eq(partner_id))
        .filter(disclosure::Column::AgreementId.is_in(in_force.to_vec()))
        .distinct()
        .into_tuple()
        .all(conn)
        .await?;
    let mut pairs: HashSet<(i32, String)> = HashSet::new();
    for (subject, delivery_id) in sent {
        if let Some(version) = versions.get(&delivery_id) {
            pairs.insert((*version, subject));
        }
    }
    let needed: HashSet<i32> = pairs.iter().map(|(v, _)| *v).collect();
    let mut keys = HashMap::new();
    for row in call
        .find::<partner_key::Entity>()
        .filter(partner_key::Column::PartnerId.eq(partner_id))
        .all(conn)
        .await?
        .into_iter()
        .filter(|k| needed.contains(&k.version))
    {
        let version = u32::try_from(row.version).unwrap_or(0);
        let key = sharing
            .keys
            .open(call.tenant(), partner_id, version, &row.sealed_key)
            .await?;
        keys.insert(row.version, key);
    }
    for (version, subject) in pairs {
        let Some(key) = keys.get(&version) else {
            continue;
        };
        let pseudonym = key.pseudonym(&subject);
        if wanted.contains(pseudonym.as_str()) {
            mapped.insert(pseudonym, subject);
        }
    }
    Ok(mapped)
}

/// The submission stored under `key`, when this call is its retry (decoded as `R`).
async fn replayed<R: Message + Default>(
    sharing: &Sharing,
    call: &Authorized,
    key: Option<&Idempotency>,
) -> Result<Option<R>> {
    let stored = idempotency::replay::<inbound_submission::Entity>(call, &sharing.db, key).await?;
    stored
        .map(|row| {
            R::decode(row.response.as_slice())
                .map_err(|e| Error::internal(format!("a stored submission response: {e}")))
        })
        .transpose()
}

/// Stores the submission's key and response within `txn`, so a retry answers the same.
async fn remember<C: ConnectionTrait, R: Message>(
    conn: &C,
    call: &Authorized,
    partner_id: &str,
    key: Option<&Idempotency>,
    response: &R,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(key) = key else {
        return Ok(());
    };
    inbound_submission::ActiveModel {
        tenant: Set(call.tenant().to_owned()),
        idempotency_key: Set(key.key().to_owned()),
        partner_id: Set(partner_id.to_owned()),
        rpc: Set(key.rpc().to_owned()),
        request_hash: Set(key.fingerprint().to_owned()),
        response: Set(response.encode_to_vec()),
        created_at: Set(now),
    }
    .insert(conn)
    .await
    .map_err(idempotency::key_taken)?;
    Ok(())
}

/// A submission whose key another call stored meanwhile (the insert lost the race): that call's
/// answer when it was the same request (this one's items were the same, so nothing is lost by
/// rolling back), else `err` (ALREADY_EXISTS, or the database's error).
async fn raced<R: Message + Default>(
    sharing: &Sharing,
    call: &Authorized,
    key: Option<&Idempotency>,
    err: Error,
) -> Result<R> {
    if matches!(err, Error::AlreadyExists(_))
        && let Some(response) = replayed(sharing, call, key).await?
    {
        return Ok(response);
    }
    Err(err)
}

/// The idempotency of a partner's submission: its key is spent per partner (prefixed with the
/// partner's id), fingerprinted over the request without the key.
fn submission_key<M: Message + Clone>(
    c: &mut Checks,
    partner_id: &str,
    rpc: &'static str,
    request: &M,
    key: Option<&tutela_proto::common::IdempotencyKey>,
    clear: impl FnOnce(&mut M),
) -> Option<Idempotency> {
    let key = c.key(key, "idempotency_key").ok().flatten()?;
    Idempotency::of_request(Some(format!("{partner_id}:{key}")), rpc, request, clear)
}

/// A booking confirmation, parsed.
struct NewBooking {
    pseudonym: String,
    reference: String,
    course_id: String,
    starts_at: DateTime<Utc>,
    venue: String,
}

fn parse_bookings(r: &SubmitBookingConfirmationsRequest, c: &mut Checks) -> Vec<NewBooking> {
    c.ensure(!r.items.is_empty(), "items", "required: 1 to 1000 items");
    c.ensure(r.items.len() <= MAX_ITEMS, "items", "at most 1000 items");
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    for (i, item) in r.items.iter().enumerate().take(MAX_ITEMS) {
        let at = |f: &str| format!("items[{i}].{f}");
        let pseudonym = c.required(&item.pseudonym, &at("pseudonym"), 64);
        let reference = c.required(&item.booking_reference, &at("booking_reference"), 64);
        if let Ok(reference) = reference
            && !seen.insert(reference.to_owned())
        {
            c.fail(at("booking_reference"), "named twice in this submission");
        }
        let course_id = c.uuid(&item.course_id, &at("course_id"));
        let starts_at = match item.starts_at.as_ref() {
            None => Err(c.flag(at("starts_at"), "required")),
            Some(t) => c.parse(time_of(t), &at("starts_at"), "not a valid time"),
        };
        let venue = c.required(&item.venue, &at("venue"), 300);
        if let (Ok(pseudonym), Ok(reference), Ok(course_id), Ok(starts_at), Ok(venue)) =
            (pseudonym, reference, course_id, starts_at, venue)
        {
            parsed.push(NewBooking {
                pseudonym: pseudonym.to_owned(),
                reference: reference.to_owned(),
                course_id,
                starts_at: starts_at.trunc_subsecs(6),
                venue: venue.to_owned(),
            });
        }
    }
    parsed
}

/// A result, parsed: the course named directly or through a booking reference.
struct NewResult {
    pseudonym: String,
    reference: Option<String>,
    course_id: Option<String>,
    assessment: String,
    score: f64,
    maximum: f64,
    passed: bool,
    assessed_at: DateTime<Utc>,
}

fn parse_results(r: &SubmitResultsRequest, c: &mut Checks, now: DateTime<Utc>) -> Vec<NewResult> {
    c.ensure(!r.items.is_empty(), "items", "required: 1 to 1000 items");
    c.ensure(r.items.len() <= MAX_ITEMS, "items", "at most 1000 items");
    let mut parsed = Vec::new();
    for (i, item) in r.items.iter().enumerate().take(MAX_ITEMS) {
        let at = |f: &str| format!("items[{i}].{f}");
        let before = c.len();
        let pseudonym = c.required(&item.pseudonym, &at("pseudonym"), 64);
        let reference = c.optional(&item.booking_reference, &at("booking_reference"), 64);
        let course_id = match item.course_id.trim() {
            "" => None,
            id => c.uuid(id, &at("course_id")).ok(),
        };
        let has_reference = reference.as_ref().is_ok_and(|r| !r.is_empty());
        let has_course = !item.course_id.trim().is_empty();
        c.ensure(
            has_reference != has_course,
            &at("course_id"),
            "name exactly one of booking_reference and course_id",
        );
        let assessment = c.required(&item.assessment, &at("assessment"), 300);
        c.ensure(
            item.maximum.is_finite() && item.maximum > 0.0,
            &at("maximum"),
            "must be a positive number",
        );
        c.ensure(
            item.score.is_finite() && item.score >= 0.0 && item.score <= item.maximum,
            &at("score"),
            "must be from 0 to maximum",
        );
        let assessed_at = match item.assessed_at.as_ref() {
            None => Err(c.flag(at("assessed_at"), "required")),
            Some(t) => match time_of(t) {
                Some(t) if t <= now => Ok(t.trunc_subsecs(6)),
                Some(_) => Err(c.flag(at("assessed_at"), "must not be in the future")),
                None => Err(c.flag(at("assessed_at"), "not a valid time")),
            },
        };
        if let (true, Ok(pseudonym), Ok(reference), Ok(assessment), Ok(assessed_at)) = (
            c.len() == before,
            pseudonym,
            reference,
            assessment,
            assessed_at,
        ) {
            parsed.push(NewResult {
                pseudonym: pseudonym.to_owned(),
                reference: (!reference.is_empty()).then(|| reference.to_owned()),
                course_id,
                assessment: assessment.to_owned(),
                score: item.score,
                maximum: item.maximum,
                passed: item.passed,
                assessed_at,
            });
        }
    }
    parsed
}

/// The idempotency key enrolment records a partner's result under: the partner, the learner,
/// the course, the assessment and when it took place make one result, so the same result sent
/// again (in any submission) is recorded once, and a different score for it is refused by
/// enrolment rather than recorded beside the first. Hashed: the key names no learner.
fn result_key(partner_id: &str, subject_id: &str, course_id: &str, r: &NewResult) -> String {
    let mut h = Sha256::new();
    for part in [
        partner_id,
        subject_id,
        course_id,
        r.assessment.as_str(),
        &r.assessed_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("inbound-{}", &hex::encode(h.finalize())[..48])
}

/// A booking as staff see it.
fn to_booking(row: &booking::Model) -> Booking {
    Booking {
        booking_id: row.booking_id.clone(),
        partner_id: row.partner_id.clone(),
        subject: Some(SubjectRef {
            subject_id: row.subject_id.clone(),
        }),
        booking_reference: row.booking_reference.clone(),
        course_id: row.course_id.clone(),
        starts_at: Some(timestamp(row.starts_at)),
        venue: row.venue.clone(),
        confirmed_at: Some(timestamp(row.confirmed_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

impl InboundService {
    async fn submit_bookings(
        &self,
        call: &Authorized,
        r: &SubmitBookingConfirmationsRequest,
    ) -> Result<SubmitBookingConfirmationsResponse> {
        let partner_id = partner_of(call)?;
        let mut c = Checks::new();
        let items = parse_bookings(r, &mut c);
        let key = submission_key(
            &mut c,
            &partner_id,
            SUBMIT_BOOKINGS,
            r,
            r.idempotency_key.as_ref(),
            |m| m.idempotency_key = None,
        );
        c.finish()?;
        let s = &self.sharing;
        if let Some(response) = replayed(s, call, key.as_ref()).await? {
            return Ok(response);
        }
        let enrolment = self.enrolment()?;
        let now = s.now().trunc_subsecs(6);
        let in_force = agreements_in_force(&s.db, call, &partner_id, now).await?;
        require_agreement(&s.db, call, &in_force).await?;
        let wanted: HashSet<&str> = items.iter().map(|i| i.pseudonym.as_str()).collect();
        let learners = map_back(s, &s.db, call, &partner_id, &in_force, &wanted).await?;

        let mut results = Vec::with_capacity(items.len());
        let mut accepted = Vec::new();
        // A batch books many learners on few courses: one look-up per course.
        let mut courses: HashMap<String, bool> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let Some(subject) = learners.get(&item.pseudonym) else {
                results.push(outcome(i, ItemOutcome::UnknownPseudonym, UNKNOWN));
                continue;
            };
            // The course must exist; the learner's enrolment on it is not checked: exam booking
            // is not given enrolment records (the register's categories for it), and the exam
            // officer asked for the booking.
            let exists = match courses.get(&item.course_id) {
                Some(known) => *known,
                None => {
                    let known = enrolment
                        .course_exists(call.tenant(), "exam_booking", &item.course_id)
                        .await?;
                    courses.insert(item.course_id.clone(), known);
                    known
                }
            };
            if !exists {
                results.push(outcome(i, ItemOutcome::Invalid, "no such course"));
                continue;
            }
            let access = match call.subject(subject).await {
                Ok(access) => access,
                Err(err) => {
                    results.push(outcome(i, ItemOutcome::Invalid, refusal(&err)));
                    continue;
                }
            };
            results.push(outcome(i, ItemOutcome::Accepted, ""));
            accepted.push((access, item));
        }
        let response = SubmitBookingConfirmationsResponse {
            accepted: u32::try_from(accepted.len()).unwrap_or(u32::MAX),
            results,
        };

        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        for (access, item) in &accepted {
            access
                .record_in(&txn, CategorySet::of(&[DataCategory::Education]))
                .await?;
            booking::Entity::insert(booking::ActiveModel {
                booking_id: Set(uuid::Uuid::now_v7().to_string()),
                tenant: Set(call.tenant().to_owned()),
                partner_id: Set(partner_id.clone()),
                subject_id: Set(access.subject_id().to_owned()),
                booking_reference: Set(item.reference.clone()),
                course_id: Set(item.course_id.clone()),
                starts_at: Set(item.starts_at),
                venue: Set(item.venue.clone()),
                confirmed_at: Set(now),
                updated_at: Set(now),
            })
            // The partner's reference names its booking: a rebooking replaces the details, and
            // keeps the booking's id and first confirmation.
            .on_conflict(
                OnConflict::columns([
                    booking::Column::Tenant,
                    booking::Column::PartnerId,
                    booking::Column::BookingReference,
                ])
                .update_columns([
                    booking::Column::SubjectId,
                    booking::Column::CourseId,
                    booking::Column::StartsAt,
                    booking::Column::Venue,
                    booking::Column::UpdatedAt,
                ])
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        if let Err(err) = remember(&txn, call, &partner_id, key.as_ref(), &response, now).await {
            txn.rollback().await?;
            return raced(s, call, key.as_ref(), err).await;
        }
        txn.commit().await?;
        tracing::info!(
            items = items.len(),
            accepted = response.accepted,
            "booking confirmations received"
        );
        Ok(response)
    }

    async fn submit_results(
        &self,
        call: &Authorized,
        r: &SubmitResultsRequest,
    ) -> Result<SubmitResultsResponse> {
        let partner_id = partner_of(call)?;
        let s = &self.sharing;
        let now = s.now().trunc_subsecs(6);
        let mut c = Checks::new();
        let items = parse_results(r, &mut c, now);
        let key = submission_key(
            &mut c,
            &partner_id,
            SUBMIT_RESULTS,
            r,
            r.idempotency_key.as_ref(),
            |m| m.idempotency_key = None,
        );
        c.finish()?;
        if let Some(response) = replayed(s, call, key.as_ref()).await? {
            return Ok(response);
        }
        let enrolment = self.enrolment()?;
        let in_force = agreements_in_force(&s.db, call, &partner_id, now).await?;
        require_agreement(&s.db, call, &in_force).await?;
        let wanted: HashSet<&str> = items.iter().map(|i| i.pseudonym.as_str()).collect();
        let learners = map_back(s, &s.db, call, &partner_id, &in_force, &wanted).await?;

        let mut results = Vec::with_capacity(items.len());
        let mut accepted = 0u32;
        for (i, item) in items.iter().enumerate() {
            let Some(subject) = learners.get(&item.pseudonym) else {
                results.push(outcome(i, ItemOutcome::UnknownPseudonym, UNKNOWN));
                continue;
            };
            let course_id = match (&item.course_id, &item.reference) {
                (Some(course), _) => Some(course.clone()),
                (None, Some(reference)) => call
                    .find::<booking::Entity>()
                    .filter(booking::Column::PartnerId.eq(partner_id.as_str()))
                    .filter(booking::Column::BookingReference.eq(reference.as_str()))
                    .filter(booking::Column::SubjectId.eq(subject.as_str()))
                    .one(&s.db)
                    .await?
                    .map(|b| b.course_id),
                (None, None) => None,
            };
            let Some(course_id) = course_id else {
                results.push(outcome(
                    i,
                    ItemOutcome::NotEnrolled,
                    "no booking of this partner for this learner has this reference",
                ));
                continue;
            };
            // Enrolment finds the learner's enrolment on the course itself: the enrolment's id is
            // education data, which exam results may not read.
            let result = AssessmentResult {
                assessment: item.assessment.clone(),
                score: item.score,
                maximum: item.maximum,
                passed: item.passed,
                assessed_at: Some(timestamp(item.assessed_at)),
                // Who assessed: the exam partner, by its id (never a learner's).
                assessor: partner_id.clone(),
                ..Default::default()
            };
            let key = result_key(&partner_id, subject, &course_id, item);
            results.push(
                match enrolment
                    .record_result(call.tenant(), (subject, &course_id), result, key)
                    .await?
                {
                    Recorded::Yes(_) => {
                        accepted += 1;
                        outcome(i, ItemOutcome::Accepted, "")
                    }
                    Recorded::NotEnrolled => outcome(
                        i,
                        ItemOutcome::NotEnrolled,
                        "the learner has no enrolment on this course",
                    ),
                    Recorded::NotStarted => outcome(
                        i,
                        ItemOutcome::NotEnrolled,
                        "the learner's enrolment on this course has not started",
                    ),
                    Recorded::Invalid(why) => outcome(i, ItemOutcome::Invalid, &why),
                },
            );
        }
        let response = SubmitResultsResponse { results, accepted };
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        if let Err(err) = remember(&txn, call, &partner_id, key.as_ref(), &response, now).await {
            txn.rollback().await?;
            return raced(s, call, key.as_ref(), err).await;
        }
        txn.commit().await?;
        tracing::info!(
            items = items.len(),
            accepted = response.accepted,
            "exam results received"
        );
        Ok(response)
    }
}

/// Why a mapped learner's item was refused by the guard's per-subject checks (a restriction of
/// processing, consent): the reason code only, naming no learner.
fn refusal(err: &Error) -> &'static str {
    match err {
        Error::ConsentRequired { .. } => "the learner's consent for this purpose is missing",
        _ => "processing of this learner's data for this purpose is not possible now",
    }
}

#[tonic::async_trait]
impl InboundApi for InboundService {
    async fn submit_booking_confirmations(
        &self,
        request: Request<SubmitBookingConfirmationsRequest>,
    ) -> std::result::Result<Response<SubmitBookingConfirmationsResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(
            self.submit_bookings(&call, request.get_ref()).await?,
        ))
    }

    async fn submit_results(
        &self,
        request: Request<SubmitResultsRequest>,
    ) -> std::result::Result<Response<SubmitResultsResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(
            self.submit_results(&call, request.get_ref()).await?,
        ))
    }

    async fn list_bookings(
        &self,
        request: Request<ListBookingsRequest>,
    ) -> std::result::Result<Response<ListBookingsResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let course_id = match r.course_id.trim() {
            "" => None,
            id => c.uuid(id, "course_id").ok(),
        };
        let after = match r.page.as_ref().map(|p| p.page_token.trim()).unwrap_or("") {
            "" => None,
            t => c.uuid(t, "page.page_token").ok(),
        };
        c.finish()?;
        let size = page_size(r.page.as_ref());
        let mut query = call.find::<booking::Entity>();
        if let Some(course_id) = &course_id {
            query = query.filter(booking::Column::CourseId.eq(course_id.as_str()));
        }
        if let Some(after) = &after {
            query = query.filter(booking::Column::BookingId.gt(after.as_str()));
        }
        let mut rows = query
            .order_by_asc(booking::Column::BookingId)
            .limit(size + 1)
            .all(&self.sharing.db)
            .await
            .map_err(Error::from)?;
        let next = next_page(&mut rows, size, |b| b.booking_id.clone());
        let mut bookings = Vec::with_capacity(rows.len());
        for row in &rows {
            // Each learner listed is an access to their data, recorded per learner.
            match call.subject(&row.subject_id).await {
                Ok(access) => access.record_response(),
                Err(err) if err.leaves_subject_out() => continue,
                Err(err) => return Err(err.into()),
            }
            bookings.push(to_booking(row));
        }
        Ok(Response::new(ListBookingsResponse {
            bookings,
            page: Some(PageResponse {
                next_page_token: next,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_results_key_is_a_valid_idempotency_key_that_names_no_learner() {
        let r = NewResult {
            pseudonym: "p".into(),
            reference: None,
            course_id: None,
            assessment: "Unit 4".into(),
            score: 1.0,
            maximum: 2.0,
            passed: false,
            assessed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        };
        let subject = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";
        let key = result_key("partner", subject, "course", &r);
        assert!(tutela_policy::validate::is_idempotency_key(&key), "{key}");
        assert!(!key.contains(subject));
        assert_eq!(key, result_key("partner", subject, "course", &r));
        assert_ne!(key, result_key("other", subject, "course", &r));
    }
}
