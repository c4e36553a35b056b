//! StreamLearners: learners in bulk, for a service that passes them on for the call's purpose.
//!
//! A batch costs three statements whatever its size: the learners' rows with their key rows, the
//! consent states of them all (one batch from the ledger), and their parts of the categories
//! read. Each batch's audit record is durable before the batch leaves, so a stream cut off by a
//! dying process has recorded everything it sent (and at most one batch it did not).

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, FieldDescriptor, ReflectMessage};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType};
use sea_orm::{ColumnTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tutela_policy::consent::ConsentNeed;
use tutela_policy::validate::{page_token, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Result, fields};
use tutela_proto::enrolment::{
    Learner, LearnerProfile, LearnerRecords, RecordKind, StreamLearnersResponse, WithheldLearner,
};
use tutela_store::StoredKey;
use tutela_store::vault::KEYS_TABLE;

use super::entity::{learner, part};
use super::{Learners, PROFILE};
use crate::outcomes::entity::certificate::{self, to_certificate};
use crate::records::entity::{enrolment, result, to_enrolment, to_result};

/// The stream StreamLearners answers with.
pub type LearnerStream = ReceiverStream<std::result::Result<StreamLearnersResponse, Status>>;

/// What a stream reads, from a checked request.
pub(crate) struct Plan {
    /// Only these learners, in batches of `batch`; `None` for the whole tenant.
    pub ids: Option<Vec<String>>,
    /// Resume after the learner with this row number (whole-tenant streams).
    pub after: i64,
    pub batch: usize,
    /// The recipient consent must cover, if any.
    pub recipient: Option<String>,
    /// The profile fields asked for; `None` for every readable one.
    pub mask: Option<Vec<FieldDescriptor>>,
    /// The categories opened: what the caller may read, within the mask's.
    pub categories: CategorySet,
    /// Which of each learner's records go with them, each kind once.
    pub records: Vec<RecordKind>,
    /// Only records of this course.
    pub course_id: Option<String>,
    /// Which consent each learner must have.
    pub consent: ConsentNeed,
}

/// A learner's row of a batch with their key row (none if they have none). No Debug: it holds a
/// wrapped key.
#[derive(FromQueryResult)]
struct Row {
    seq: i64,
    learner_id: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    key_seq: Option<i64>,
    kek_id: Option<String>,
    wrapped_key: Option<Vec<u8>>,
}

/// Starts the stream; it ends after the last batch, or with the error that stopped it.
pub(crate) fn start(learners: Learners, call: Authorized, plan: Plan) -> LearnerStream {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let outcome = produce(&learners, &call, &plan, &tx).await;
        match outcome {
            Ok(count) => tracing::info!(learners = count, "learners streamed"),
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
            }
        }
    });
    ReceiverStream::new(rx)
}

async fn produce(
    learners: &Learners,
    call: &Authorized,
    plan: &Plan,
    tx: &mpsc::Sender<std::result::Result<StreamLearnersResponse, Status>>,
) -> Result<u64> {
    let mut sent = 0u64;
    let mut after = plan.after;
    let mut chunks = plan.ids.as_ref().map(|ids| ids.chunks(plan.batch));
    loop {
        let (rows, asked) = match chunks.as_mut() {
            Some(chunks) => match chunks.next() {
                Some(chunk) => (
                    learners
                        .batch_rows(call, Some(chunk), 0, chunk.len())
                        .await?,
                    chunk,
                ),
                None => break,
            },
            None => (
                learners.batch_rows(call, None, after, plan.batch).await?,
                &[][..],
            ),
        };
        if rows.is_empty() && asked.is_empty() {
            break;
        }
        let found: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.learner_id.as_str()).collect();
        let mut withheld: Vec<WithheldLearner> = asked
            .iter()
            .filter(|id| !found.contains(id.as_str()))
            .map(|id| WithheldLearner {
                learner_id: id.clone(),
                reason: Error::NotFound("learner").reason().to_owned(),
            })
            .collect();
        let ids: Vec<String> = rows.iter().map(|r| r.learner_id.clone()).collect();
        let checks = call
            .subjects_for(&ids, plan.recipient.as_deref(), plan.consent)
            .await?;
        let mut allowed = Vec::with_capacity(rows.len());
        for (row, check) in rows.iter().zip(checks) {
            match check {
                Ok(_) => allowed.push(row),
                Err(err) if err.leaves_subject_out() || matches!(err, Error::Restricted) => {
                    withheld.push(WithheldLearner {
                        learner_id: row.learner_id.clone(),
                        reason: err.reason().to_owned(),
                    })
                }
                Err(err) => return Err(err),
            }
        }
        let (batch, mut read) = learners.open_batch(call, &allowed, plan).await?;
        let records = if plan.records.is_empty() {
            Vec::new()
        } else {
            let (records, held) = learners.records_of(call, &allowed, plan).await?;
            read = read.union(held);
            records
        };
        let resume_token = match (&plan.ids, rows.last()) {
            (None, Some(last)) => {
                after = last.seq;
                page_token(last.seq)
            }
            _ => String::new(),
        };
        // Recorded before the batch leaves: the count and categories, not who (the batch's ids
        // went to the caller, who keeps its own per-learner log, e.g. the disclosure log).
        let note = format!(
            "learners streamed: {} read, {} withheld",
            batch.len(),
            withheld.len()
        );
        call.summarise(read, note).await?;
        sent += batch.len() as u64;
        let message = StreamLearnersResponse {
            learners: batch,
            withheld,
            resume_token,
            records,
        };
        if tx.send(Ok(message)).await.is_err() {
            // The caller went away; what it received is recorded.
            break;
        }
        if plan.ids.is_none() && rows.len() < plan.batch {
            break;
        }
    }
    Ok(sent)
}

impl Learners {
    /// A batch's learner rows with their key rows: those of `ids`, or the `limit` after row
    /// `after` of the tenant, in the order they were created.
    async fn batch_rows(
        &self,
        call: &Authorized,
        ids: Option<&[String]>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let keys = Alias::new(KEYS_TABLE);
        let key_column = |name: &str| Expr::col((keys.clone(), Alias::new(name)));
        let mut select = call
            .find::<learner::Entity>()
            .select_only()
            .column(learner::Column::Seq)
            .column(learner::Column::LearnerId)
            .column(learner::Column::CreatedAt)
            .column(learner::Column::UpdatedAt)
            .expr_as(key_column("seq"), "key_seq")
            .expr_as(key_column("kek_id"), "kek_id")
            .expr_as(key_column("wrapped_key"), "wrapped_key")
            .order_by_asc(learner::Column::Seq);
        select = match ids {
            Some(ids) => select.filter(learner::Column::LearnerId.is_in(ids.iter().cloned())),
            None => select
                .filter(learner::Column::Seq.gt(after))
                .limit(u64::try_from(limit).unwrap_or(u64::MAX)),
        };
        QueryTrait::query(&mut select).join(
            JoinType::LeftJoin,
            keys.clone(),
            Expr::col((keys.clone(), Alias::new("scope")))
                .eq(self.vault.scope())
                .and(key_column("tenant").equals((learner::Entity, learner::Column::Tenant)))
                .and(
                    key_column("subject_id").equals((learner::Entity, learner::Column::LearnerId)),
                ),
        );
        Ok(select.into_model::<Row>().all(&self.db).await?)
    }

    /// The `rows`' learners with the plan's categories opened and the mask applied, and the
    /// categories that held data in any of them.
    async fn open_batch(
        &self,
        call: &Authorized,
        rows: &[&Row],
        plan: &Plan,
    ) -> Result<(Vec<Learner>, CategorySet)> {
        let mut parts: HashMap<String, Vec<part::Model>> = HashMap::new();
        if !rows.is_empty() && !plan.categories.is_empty() {
            for p in call
                .find::<part::Entity>()
                .filter(part::Column::LearnerId.is_in(rows.iter().map(|r| r.learner_id.clone())))
                .filter(part::Column::Category.is_in(plan.categories.names()))
                .all(&self.db)
                .await?
            {
                parts.entry(p.learner_id.clone()).or_default().push(p);
            }
        }
        let mut read = CategorySet::EMPTY;
        let mut learners = Vec::with_capacity(rows.len());
        for row in rows {
            let profile = match parts.get(&row.learner_id) {
                None => LearnerProfile::default(),
                Some(parts) => {
                    let (Some(kek_id), Some(key_seq)) = (&row.kek_id, row.key_seq) else {
                        return Err(tutela_store::StoreError::KeyNotFound.into());
                    };
                    let key = self.vault.stored_key(
                        StoredKey {
                            tenant: call.tenant(),
                            subject: &row.learner_id,
                            kek_id,
                            wrapped_key: row.wrapped_key.as_deref(),
                        },
                        key_seq,
                    )?;
                    let (profile, held) = Self::open_parts(
                        &key,
                        parts
                            .iter()
                            .map(|p| (p.category.as_str(), p.sealed.as_slice())),
                    )?;
                    read = read.union(held);
                    match &plan.mask {
                        Some(mask) => only(&profile, mask)?,
                        None => profile,
                    }
                }
            };
            learners.push(Learner {
                learner_id: row.learner_id.clone(),
                profile: Some(profile),
                created_at: Some(timestamp(row.created_at)),
                updated_at: Some(timestamp(row.updated_at)),
            });
        }
        Ok((learners, read))
    }
}

impl Learners {
    /// The records of the plan's kinds of the `rows`' learners, one entry per learner in their
    /// order, and the categories they can hold that the call may read (the guard redacts the
    /// rest on the wire, as in every response). Three statements at most, whatever the batch.
    async fn records_of(
        &self,
        call: &Authorized,
        rows: &[&Row],
        plan: &Plan,
    ) -> Result<(Vec<LearnerRecords>, CategorySet)> {
        let ids = || rows.iter().map(|r| r.learner_id.clone());
        let wants = |kind| plan.records.contains(&kind);
        let mut of: HashMap<&str, LearnerRecords> = rows
            .iter()
            .map(|r| {
                let records = LearnerRecords {
                    learner_id: r.learner_id.clone(),
                    ..Default::default()
                };
                (r.learner_id.as_str(), records)
            })
            .collect();
        if rows.is_empty() {
            return Ok((Vec::new(), CategorySet::EMPTY));
        }
        let mut kinds = Vec::new();
        // A course's results are those of its enrolments, so they are read for the filter too.
        let mut course_enrolments = Vec::new();
        if wants(RecordKind::Enrolments) || (wants(RecordKind::Results) && plan.course_id.is_some())
        {
            let mut select = call
                .find::<enrolment::Entity>()
                .filter(enrolment::Column::LearnerId.is_in(ids()));
            if let Some(course) = &plan.course_id {
                select = select.filter(enrolment::Column::CourseId.eq(course.as_str()));
            }
            let rows = select
                .order_by_asc(enrolment::Column::Seq)
                .all(&self.db)
                .await?;
            course_enrolments = rows.iter().map(|e| e.enrolment_id.clone()).collect();
            if wants(RecordKind::Enrolments) {
                kinds.push("tutela.enrolment.v1.Enrolment");
                for row in &rows {
                    if let Some(r) = of.get_mut(row.learner_id.as_str()) {
                        r.enrolments.push(to_enrolment(row));
                    }
                }
            }
        }
        if wants(RecordKind::Results) {
            kinds.push("tutela.enrolment.v1.AssessmentResult");
            let mut select = call
                .find::<result::Entity>()
                .filter(result::Column::LearnerId.is_in(ids()));
            if plan.course_id.is_some() {
                select = select.filter(result::Column::EnrolmentId.is_in(course_enrolments));
            }
            for row in select
                .order_by_asc(result::Column::Seq)
                .all(&self.db)
                .await?
            {
                if let Some(r) = of.get_mut(row.learner_id.as_str()) {
                    r.results.push(to_result(&row));
                }
            }
        }
        if wants(RecordKind::Certificates) {
            kinds.push("tutela.enrolment.v1.Certificate");
            let mut select = call
                .find::<certificate::Entity>()
                .filter(certificate::Column::LearnerId.is_in(ids()));
            if let Some(course) = &plan.course_id {
                select = select.filter(certificate::Column::CourseId.eq(course.as_str()));
            }
            for row in select
                .order_by_asc(certificate::Column::Seq)
                .all(&self.db)
                .await?
            {
                if let Some(r) = of.get_mut(row.learner_id.as_str()) {
                    r.certificates.push(to_certificate(&row));
                }
            }
        }
        let mut held = CategorySet::EMPTY;
        for kind in kinds {
            held = held.union(fields::categories_of(&fields::descriptor(kind)?));
        }
        let records = rows
            .iter()
            .filter_map(|r| of.remove(r.learner_id.as_str()))
            .collect();
        Ok((records, held.intersect(call.readable())))
    }
}

/// `profile` with only the `mask`'s fields: a part holds every field of its category, and the
/// caller asked for fewer.
fn only(profile: &LearnerProfile, mask: &[FieldDescriptor]) -> Result<LearnerProfile> {
    let whole = fields::to_dynamic(profile, PROFILE)?;
    let mut kept = DynamicMessage::new(whole.descriptor());
    for field in mask {
        fields::copy_field(&whole, &mut kept, field);
    }
    kept.transcode_to().map_err(Error::internal)
}
