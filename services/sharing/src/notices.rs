//! Notices to recipients (GDPR Art. 19, S4) and `tutela.sharing.v1.NoticeService`.
//!
//! The [`Follower`] reads each tenant's learner change feed from enrolment (a cursor per tenant,
//! kept here), and for every rectification or erasure of a learner it finds in the disclosure log
//! the partners that received the changed fields, and makes one notice per partner. The notices
//! and the advanced cursor commit together, so a follower that stops half-way resumes without
//! missing or repeating a change; a notice is unique per partner, learner and change, so an
//! erasure learnt of twice (the feed and the rights endpoint) notifies once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tutela_host::{Progress, SweepReport, Sweeper};
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, Error, Precondition, Result, Tenant};
use tutela_proto::common::{PageResponse, SubjectRef};
use tutela_proto::enrolment::{LearnerChange, LearnerChangeKind};
use tutela_proto::sharing::notice_service_server::NoticeService as NoticeApi;
use tutela_proto::sharing::{
    AcknowledgeNoticesRequest, AcknowledgeNoticesResponse, ListNoticesRequest, ListNoticesResponse,
    Notice, NoticeKind, NoticeState, PullNoticesRequest, PullNoticesResponse,
    RecordNoticeNotPossibleRequest, RecordNoticeNotPossibleResponse,
};

use crate::duration::IsoDuration;
use crate::entity::{agreement, change_cursor, delivery, disclosure, notice, partner_key};
use crate::sharing::{Sharing, next_page, page_size, time_of};
use tutela_enrolment_client::Enrolment;

const PENDING: &str = "pending";
const SENT: &str = "sent";
const ACKNOWLEDGED: &str = "acknowledged";
const FAILED: &str = "failed";
const NOT_POSSIBLE: &str = "not_possible";
const RECTIFIED: &str = "rectified";
const ERASED: &str = "erased";
const DELETION_REQUESTED: &str = "deletion_requested";

/// The webhook event that tells a partner of a new notice.
pub(crate) const NOTICE_READY: &str = "notice.ready";

/// What a change is, as the notices about it are made.
pub struct Change<'a> {
    /// The learner's tenant.
    pub tenant: &'a str,
    /// The learner.
    pub subject_id: &'a str,
    /// Rectified fields (profile proto names), or `None` for an erasure.
    pub rectified: Option<&'a [String]>,
    /// When it happened.
    pub changed_at: DateTime<Utc>,
}

impl Change<'_> {
    /// One spelling per change: `erased`, or a hash of when and which fields.
    fn key(&self) -> String {
        match self.rectified {
            None => ERASED.to_owned(),
            Some(fields) => {
                let mut h = Sha256::new();
                h.update(
                    self.changed_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                );
                for f in fields {
                    h.update([0]);
                    h.update(f.as_bytes());
                }
                hex::encode(h.finalize())
            }
        }
    }
}

/// The paths of `disclosed` that `rectified` (profile field names) touches.
fn touched(disclosed: &BTreeSet<String>, rectified: &[String]) -> Vec<String> {
    disclosed
        .iter()
        .filter(|path| {
            path.strip_prefix("profile.").is_some_and(|rest| {
                let field = rest.split('.').next().unwrap_or(rest);
                rectified.iter().any(|r| r == field)
            })
        })
        .cloned()
        .collect()
}

/// Makes, within `conn`, the notices `change` calls for: one per partner that received any of
/// the changed fields (any field at all, for an erasure). Returns how many were new.
pub async fn notify<C: ConnectionTrait>(
    sharing: &Sharing,
    conn: &C,
    change: &Change<'_>,
    now: DateTime<Utc>,
) -> Result<u64> {
    // Every entry of the learner, to know per partner what it received and under which delivery
    // last (whose key version its pseudonym is under).
    let entries = disclosure::Entity::find()
        .filter(disclosure::Column::Tenant.eq(change.tenant))
        .filter(disclosure::Column::SubjectId.eq(change.subject_id))
        .order_by_asc(disclosure::Column::PartnerId)
        .order_by_asc(disclosure::Column::Position)
        .all(conn)
        .await?;
    let mut received: BTreeMap<String, (BTreeSet<String>, String)> = BTreeMap::new();
    for e in entries {
        let fields: Vec<String> = serde_json::from_str(&e.fields).unwrap_or_default();
        let slot = received
            .entry(e.partner_id.clone())
            .or_insert_with(|| (BTreeSet::new(), String::new()));
        slot.0.extend(fields);
        slot.1 = e.delivery_id;
    }
    let mut made = 0;
    for (partner_id, (fields, last_delivery)) in received {
        let (kind, paths) = match change.rectified {
            Some(rectified) => {
                let paths = touched(&fields, rectified);
                if paths.is_empty() {
                    continue;
                }
                (RECTIFIED, paths)
            }
            None => (ERASED, Vec::new()),
        };
        let pseudonym = pseudonym_of(sharing, conn, change, &partner_id, &last_delivery).await?;
        made += record(
            conn,
            notice::Model {
                notice_id: uuid::Uuid::now_v7().to_string(),
                tenant: change.tenant.to_owned(),
                partner_id,
                subject_id: change.subject_id.to_owned(),
                pseudonym,
                kind: kind.to_owned(),
                fields: serde_json::Value::from(paths).to_string(),
                change_key: change.key(),
                state: PENDING.to_owned(),
                changed_at: change.changed_at,
                created_at: now,
                sent_at: None,
                acknowledged_at: None,
                delivery_id: String::new(),
                reason: String::new(),
            },
        )
        .await?;
    }
    Ok(made)
}

/// Stores `notice` unless the same change already made one for the partner (learnt of another
/// way: then the first stays as it is), and, when it is new, announces it to the partner's
/// webhook endpoint as `notice.ready` in the same transaction: ids only, sent if and only if the
/// notice commits. How many notices were made (0 or 1).
async fn record<C: ConnectionTrait>(conn: &C, notice: notice::Model) -> Result<u64> {
    let tenant = Tenant::of_row(&notice)?;
    let (partner_id, notice_id, created_at) = (
        notice.partner_id.clone(),
        notice.notice_id.clone(),
        notice.created_at,
    );
    let made = notice::Entity::insert(notice.into_active_model())
        .on_conflict(
            OnConflict::columns([
                notice::Column::Tenant,
                notice::Column::PartnerId,
                notice::Column::SubjectId,
                notice::Column::ChangeKey,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    if made > 0 {
        crate::webhooks::enqueue(
            conn,
            &tenant,
            &partner_id,
            NOTICE_READY,
            &serde_json::json!({ "notice_id": notice_id }),
            created_at,
        )
        .await?;
    }
    Ok(made)
}

/// The partner's pseudonym of the learner under the key of its last delivery to it.
async fn pseudonym_of<C: ConnectionTrait>(
    sharing: &Sharing,
    conn: &C,
    change: &Change<'_>,
    partner_id: &str,
    delivery_id: &str,
) -> Result<String> {
    let Some(d) = delivery::Entity::find_by_id(delivery_id.to_owned())
        .filter(delivery::Column::Tenant.eq(change.tenant))
        .one(conn)
        .await?
    else {
        return Err(Error::internal(
            "a disclosure log entry without its delivery",
        ));
    };
    let Some(sealed) = partner_key::Entity::find()
        .filter(partner_key::Column::Tenant.eq(change.tenant))
        .filter(partner_key::Column::PartnerId.eq(partner_id))
        .filter(partner_key::Column::Version.eq(d.key_version))
        .one(conn)
        .await?
    else {
        return Err(Error::internal("a delivery's pseudonym key is missing"));
    };
    let key = sharing
        .keys
        .open(
            change.tenant,
            partner_id,
            u32::try_from(d.key_version).unwrap_or(0),
            &sealed.sealed_key,
        )
        .await?;
    Ok(key.pseudonym(change.subject_id))
}

/// Follows every tenant's learner change feed and makes the notices it calls for; run by `serve`
/// on schedule (one replica at a time) and by `tutela retention sweep`.
pub struct Follower {
    sharing: Sharing,
    enrolment: Option<Arc<Enrolment>>,
    every: std::time::Duration,
}

impl Follower {
    /// A follower reading the feed through `enrolment` (`None`: nothing to follow from) every
    /// `every` when `serve` runs it.
    pub fn new(
        sharing: Sharing,
        enrolment: Option<Arc<Enrolment>>,
        every: std::time::Duration,
    ) -> Self {
        Self {
            sharing,
            enrolment,
            every,
        }
    }

    /// Reads every tenant's feed to its end: (changes read, notices made).
    pub async fn follow(&self, dry_run: bool) -> Result<(u64, u64)> {
        let Some(enrolment) = &self.enrolment else {
            let made = if dry_run {
                0
            } else {
                self.request_deletions().await?
            };
            return Ok((0, made));
        };
        let db = &self.sharing.db;
        // Only tenants that ever disclosed have recipients to notify.
        let tenants: Vec<String> = disclosure::Entity::find()
            .select_only()
            .column(disclosure::Column::Tenant)
            .distinct()
            .into_tuple()
            .all(db)
            .await?;
        let (mut read, mut made) = (0, 0);
        for tenant in tenants {
            let mut cursor = change_cursor::Entity::find_by_id(tenant.clone())
                .one(db)
                .await?
                .map(|c| c.cursor)
                .unwrap_or_default();
            loop {
                let (changes, next) = enrolment.changes(&tenant, &cursor).await?;
                if changes.is_empty() {
                    break;
                }
                read += changes.len() as u64;
                if dry_run {
                    cursor = next;
                    continue;
                }
                let now = self.sharing.now().trunc_subsecs(6);
                let txn = tutela_store::begin(db).await?;
                for c in &changes {
                    made += self.apply(&txn, &tenant, c, now).await?;
                }
                change_cursor::Entity::insert(change_cursor::ActiveModel {
                    tenant: Set(tenant.clone()),
                    cursor: Set(next.clone()),
                    updated_at: Set(now),
                })
                .on_conflict(
                    OnConflict::column(change_cursor::Column::Tenant)
                        .update_columns([
                            change_cursor::Column::Cursor,
                            change_cursor::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
                txn.commit().await?;
                cursor = next;
            }
        }
        if !dry_run {
            made += self.request_deletions().await?;
        }
        Ok((read, made))
    }

    /// Asks each partner to delete the deliveries whose retention period under their agreement
    /// has ended: one notice per delivery, made with the delivery's mark in one transaction.
    /// Pages through the deliveries not yet asked about.
    pub async fn request_deletions(&self) -> Result<u64> {
        const PAGE: u64 = 500;
        let db = &self.sharing.db;
        let now = self.sharing.now().trunc_subsecs(6);
        let mut after = String::new();
        let mut made = 0;
        loop {
            let page = delivery::Entity::find()
                .filter(delivery::Column::DeletionRequestedAt.is_null())
                .filter(delivery::Column::DeliveryId.gt(after.as_str()))
                .order_by_asc(delivery::Column::DeliveryId)
                .limit(PAGE)
                .all(db)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.delivery_id.clone();
            let ids: Vec<String> = page.iter().map(|d| d.agreement_id.clone()).collect();
            let retention: std::collections::HashMap<String, String> = agreement::Entity::find()
                .filter(agreement::Column::AgreementId.is_in(ids))
                .all(db)
                .await?
                .into_iter()
                .map(|a| (a.agreement_id, a.partner_retention))
                .collect();
            for d in &page {
                let Some(period) = retention
                    .get(&d.agreement_id)
                    .and_then(|p| IsoDuration::parse(p).ok())
                else {
                    continue;
                };
                if period.after(d.created_at) > now {
                    continue;
                }
                let txn = tutela_store::begin(db).await?;
                made += record(
                    &txn,
                    notice::Model {
                        notice_id: uuid::Uuid::now_v7().to_string(),
                        tenant: d.tenant.clone(),
                        partner_id: d.partner_id.clone(),
                        subject_id: String::new(),
                        pseudonym: String::new(),
                        kind: DELETION_REQUESTED.to_owned(),
                        fields: "[]".to_owned(),
                        change_key: format!("retention:{}", d.delivery_id),
                        state: PENDING.to_owned(),
                        changed_at: period.after(d.created_at),
                        created_at: now,
                        sent_at: None,
                        acknowledged_at: None,
                        delivery_id: d.delivery_id.clone(),
                        reason: String::new(),
                    },
                )
                .await?;
                delivery::Entity::update_many()
                    .col_expr(
                        delivery::Column::DeletionRequestedAt,
                        Expr::value(Some(now)),
                    )
                    .filter(delivery::Column::DeliveryId.eq(d.delivery_id.as_str()))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
            }
            if (page.len() as u64) < PAGE {
                break;
            }
        }
        Ok(made)
    }

    async fn apply<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
        c: &LearnerChange,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let changed_at = c
            .changed_at
            .as_ref()
            .and_then(time_of)
            .unwrap_or(now)
            .trunc_subsecs(6);
        let rectified = match LearnerChangeKind::try_from(c.kind) {
            Ok(LearnerChangeKind::Rectified) => Some(c.fields.as_slice()),
            Ok(LearnerChangeKind::Erased) => None,
            // A kind this build does not know: nothing it could tell a recipient.
            _ => return Ok(0),
        };
        let change = Change {
            tenant,
            subject_id: &c.learner_id,
            rectified,
            changed_at,
        };
        notify(&self.sharing, conn, &change, now).await
    }
}

#[async_trait::async_trait]
impl Sweeper for Follower {
    fn name(&self) -> &'static str {
        "recipient notices"
    }

    fn interval(&self) -> Option<std::time::Duration> {
        Some(self.every)
    }

    async fn sweep(
        &self,
        _now: DateTime<Utc>,
        dry_run: bool,
        progress: Progress<'_>,
    ) -> Result<SweepReport> {
        let (read, made) = self.follow(dry_run).await?;
        progress("recipient notices", read, read);
        Ok(Box::new(if self.enrolment.is_none() {
            format!(
                "no enrolment service to follow (sharing.enrolment_endpoint); {made} deletion \
                 request(s) to recipients made"
            )
        } else {
            format!(
                "{read} learner change(s) read, {made} notice(s) and deletion request(s) to \
                 recipients made"
            )
        }))
    }
}

/// `tutela.sharing.v1.NoticeService`.
#[derive(Debug, Clone)]
pub struct NoticeService {
    sharing: Sharing,
}

impl NoticeService {
    /// The service over `sharing`.
    pub fn new(sharing: Sharing) -> Self {
        Self { sharing }
    }
}

fn state_of(name: &str) -> NoticeState {
    match name {
        PENDING => NoticeState::Pending,
        SENT => NoticeState::Sent,
        ACKNOWLEDGED => NoticeState::Acknowledged,
        FAILED => NoticeState::Failed,
        NOT_POSSIBLE => NoticeState::NotPossible,
        _ => NoticeState::Unspecified,
    }
}

/// A notice as the API shows it; the learner's id only for staff.
fn to_notice(row: &notice::Model, with_subject: bool) -> Notice {
    Notice {
        notice_id: row.notice_id.clone(),
        partner_id: row.partner_id.clone(),
        pseudonym: row.pseudonym.clone(),
        subject: with_subject.then(|| SubjectRef {
            subject_id: row.subject_id.clone(),
        }),
        kind: match row.kind.as_str() {
            RECTIFIED => NoticeKind::Rectified as i32,
            ERASED => NoticeKind::Erased as i32,
            DELETION_REQUESTED => NoticeKind::DeletionRequested as i32,
            _ => NoticeKind::Unspecified as i32,
        },
        fields: serde_json::from_str(&row.fields).unwrap_or_default(),
        state: state_of(&row.state) as i32,
        changed_at: Some(timestamp(row.changed_at)),
        created_at: Some(timestamp(row.created_at)),
        sent_at: row.sent_at.map(timestamp),
        acknowledged_at: row.acknowledged_at.map(timestamp),
        delivery_id: row.delivery_id.clone(),
        reason: row.reason.clone(),
    }
}

/// The page token of a notice list: the last notice's id (UUIDv7, in creation order).
fn after_token(c: &mut Checks, token: &str) -> Option<String> {
    match token.trim() {
        "" => None,
        t => c.uuid(t, "page.page_token").ok(),
    }
}

/// The partner of a partner token; the rules let no other kind reach these calls.
fn partner_of(call: &Authorized) -> Result<String> {
    call.principal().partner.clone().ok_or(Error::Denied)
}

#[tonic::async_trait]
impl NoticeApi for NoticeService {
    async fn pull_notices(
        &self,
        request: Request<PullNoticesRequest>,
    ) -> std::result::Result<Response<PullNoticesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let after = after_token(
            &mut c,
            r.page.as_ref().map(|p| p.page_token.as_str()).unwrap_or(""),
        );
        c.finish()?;
        let partner_id = partner_of(&call)?;
        let size = page_size(r.page.as_ref());
        let s = &self.sharing;
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await.map_err(Error::from)?;
        call.record_in(&txn).await?;
        let mut query = call
            .find::<notice::Entity>()
            .filter(notice::Column::PartnerId.eq(partner_id.as_str()))
            .filter(notice::Column::State.is_in([PENDING, SENT, FAILED]));
        if let Some(after) = &after {
            query = query.filter(notice::Column::NoticeId.gt(after.as_str()));
        }
        let mut rows = query
            .order_by_asc(notice::Column::NoticeId)
            .limit(size + 1)
            .all(&txn)
            .await
            .map_err(Error::from)?;
        let next = next_page(&mut rows, size, |n| n.notice_id.clone());
        // Fetched is sent, whether the webhook reached the partner or failed to.
        let unsent = |n: &notice::Model| n.state == PENDING || n.state == FAILED;
        let fetched: Vec<String> = rows
            .iter()
            .filter(|n| unsent(n))
            .map(|n| n.notice_id.clone())
            .collect();
        if !fetched.is_empty() {
            call.update::<notice::Entity>()
                .col_expr(notice::Column::State, Expr::value(SENT))
                .col_expr(notice::Column::SentAt, Expr::value(Some(now)))
                .col_expr(notice::Column::Reason, Expr::value(""))
                .filter(notice::Column::NoticeId.is_in(fetched))
                .filter(notice::Column::State.is_in([PENDING, FAILED]))
                .exec(&txn)
                .await
                .map_err(Error::from)?;
            for n in rows.iter_mut().filter(|n| unsent(n)) {
                n.state = SENT.to_owned();
                n.sent_at = Some(now);
                n.reason.clear();
            }
        }
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(PullNoticesResponse {
            notices: rows.iter().map(|n| to_notice(n, false)).collect(),
            page: Some(PageResponse {
                next_page_token: next,
            }),
        }))
    }

    async fn acknowledge_notices(
        &self,
        request: Request<AcknowledgeNoticesRequest>,
    ) -> std::result::Result<Response<AcknowledgeNoticesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        c.ensure(
            !r.notice_ids.is_empty(),
            "notice_ids",
            "required: 1 to 500 ids",
        );
        c.ensure(r.notice_ids.len() <= 500, "notice_ids", "at most 500 ids");
        let mut ids = BTreeSet::new();
        for (i, id) in r.notice_ids.iter().enumerate().take(500) {
            if let Ok(id) = c.uuid(id, &format!("notice_ids[{i}]")) {
                ids.insert(id);
            }
        }
        c.finish()?;
        let partner_id = partner_of(&call)?;
        let s = &self.sharing;
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await.map_err(Error::from)?;
        call.record_in(&txn).await?;
        let ids: Vec<String> = ids.into_iter().collect();
        let found = call
            .find::<notice::Entity>()
            .filter(notice::Column::PartnerId.eq(partner_id.as_str()))
            .filter(notice::Column::NoticeId.is_in(ids.clone()))
            .all(&txn)
            .await
            .map_err(Error::from)?;
        if found.len() != ids.len() {
            return Err(Error::NotFound("notice").into());
        }
        let done = call
            .update::<notice::Entity>()
            .col_expr(notice::Column::State, Expr::value(ACKNOWLEDGED))
            .col_expr(notice::Column::AcknowledgedAt, Expr::value(Some(now)))
            // Acknowledging what was never fetched counts as having received it.
            .col_expr(
                notice::Column::SentAt,
                Expr::col(notice::Column::SentAt).if_null(now),
            )
            .filter(notice::Column::PartnerId.eq(partner_id.as_str()))
            .filter(notice::Column::NoticeId.is_in(ids))
            .filter(notice::Column::State.ne(ACKNOWLEDGED))
            .exec(&txn)
            .await
            .map_err(Error::from)?;
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(AcknowledgeNoticesResponse {
            acknowledged: u32::try_from(done.rows_affected).unwrap_or(u32::MAX),
        }))
    }

    async fn list_notices(
        &self,
        request: Request<ListNoticesRequest>,
    ) -> std::result::Result<Response<ListNoticesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let subject = match r.subject.as_ref().map(|s| s.subject_id.trim()) {
            None | Some("") => None,
            Some(id) => c.uuid(id, "subject.subject_id").ok(),
        };
        let partner_id = match r.partner_id.trim() {
            "" => None,
            id => c.uuid(id, "partner_id").ok(),
        };
        let state = match NoticeState::try_from(r.state) {
            Ok(NoticeState::Unspecified) => None,
            Ok(NoticeState::Pending) => Some(PENDING),
            Ok(NoticeState::Sent) => Some(SENT),
            Ok(NoticeState::Acknowledged) => Some(ACKNOWLEDGED),
            Ok(NoticeState::Failed) => Some(FAILED),
            Ok(NoticeState::NotPossible) => Some(NOT_POSSIBLE),
            Err(_) => {
                c.fail("state", "not a notice state");
                None
            }
        };
        let after = after_token(
            &mut c,
            r.page.as_ref().map(|p| p.page_token.as_str()).unwrap_or(""),
        );
        c.finish()?;
        let size = page_size(r.page.as_ref());
        let mut query = call.find::<notice::Entity>();
        if let Some(subject) = &subject {
            query = query.filter(notice::Column::SubjectId.eq(subject.as_str()));
        }
        if let Some(partner_id) = &partner_id {
            query = query.filter(notice::Column::PartnerId.eq(partner_id.as_str()));
        }
        if let Some(state) = state {
            query = query.filter(notice::Column::State.eq(state));
        }
        if let Some(after) = &after {
            query = query.filter(notice::Column::NoticeId.gt(after.as_str()));
        }
        let mut rows = query
            .order_by_asc(notice::Column::NoticeId)
            .limit(size + 1)
            .all(&self.sharing.db)
            .await
            .map_err(Error::from)?;
        let next = next_page(&mut rows, size, |n| n.notice_id.clone());
        Ok(Response::new(ListNoticesResponse {
            notices: rows.iter().map(|n| to_notice(n, true)).collect(),
            page: Some(PageResponse {
                next_page_token: next,
            }),
        }))
    }

    async fn record_notice_not_possible(
        &self,
        request: Request<RecordNoticeNotPossibleRequest>,
    ) -> std::result::Result<Response<RecordNoticeNotPossibleResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let notice_id = c.uuid(&r.notice_id, "notice_id");
        let reason = c.required(&r.reason, "reason", 500);
        let (notice_id, reason) = c.parsed((notice_id, reason))?;
        let txn = tutela_store::begin(&self.sharing.db)
            .await
            .map_err(Error::from)?;
        call.record_in(&txn).await?;
        let found = call
            .find::<notice::Entity>()
            .filter(notice::Column::NoticeId.eq(notice_id.as_str()))
            .one(&txn)
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("notice"))?;
        let notice = match found.state.as_str() {
            ACKNOWLEDGED => {
                return Err(Error::FailedPrecondition {
                    reason: Precondition::NoticeAcknowledged,
                    message: "the partner acknowledged the notice: it was told".into(),
                }
                .into());
            }
            // Decided once: the first reason is the one on record.
            NOT_POSSIBLE => found,
            _ => {
                call.update::<notice::Entity>()
                    .col_expr(notice::Column::State, Expr::value(NOT_POSSIBLE))
                    .col_expr(notice::Column::Reason, Expr::value(reason))
                    .filter(notice::Column::NoticeId.eq(notice_id.as_str()))
                    .exec(&txn)
                    .await
                    .map_err(Error::from)?;
                notice::Model {
                    state: NOT_POSSIBLE.to_owned(),
                    reason: reason.to_owned(),
                    ..found
                }
            }
        };
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(RecordNoticeNotPossibleResponse {
            notice: Some(to_notice(&notice, true)),
        }))
    }
}

/// The partner's webhook endpoint will not take the `notice.ready` events of `notice_ids`
/// (every attempt failed, or it is gone): those the partner has not fetched yet become failed,
/// with `reason`, within `conn` (the transaction that settles the messages). How many did.
pub(crate) async fn undeliverable<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    notice_ids: Vec<String>,
    reason: &str,
) -> Result<u64> {
    if notice_ids.is_empty() {
        return Ok(0);
    }
    let done = tenant
        .update::<notice::Entity>()
        .col_expr(notice::Column::State, Expr::value(FAILED))
        .col_expr(notice::Column::Reason, Expr::value(reason))
        .filter(notice::Column::NoticeId.is_in(notice_ids))
        .filter(notice::Column::State.eq(PENDING))
        .exec(conn)
        .await?;
    Ok(done.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rectification_touches_the_disclosed_paths_under_its_fields() {
        let disclosed: BTreeSet<String> = [
            "learner_id",
            "profile.given_name",
            "profile.email",
            "profile.address.city",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            touched(&disclosed, &["email".into(), "phone".into()]),
            ["profile.email"]
        );
        assert_eq!(
            touched(&disclosed, &["address".into()]),
            ["profile.address.city"]
        );
        assert!(touched(&disclosed, &["phone".into()]).is_empty());
        // A prefix of a name is not the field.
        assert!(touched(&disclosed, &["given".into()]).is_empty());
    }
}
