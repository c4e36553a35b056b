//! The coordinator: carries out the pending tasks of requests in progress, each through its
//! service's `tutela.privacy.v1.SubjectData` endpoint, as a `service` principal of the request's
//! tenant with the `subject_rights` purpose and the trace context of the run, so that each
//! service's guard authorises and audits the call there.
//!
//! It runs as a scheduled job of `serve` (every `[rights] interval_secs`), under the job lease
//! that lets one replica at a time run it. Everything it knows is in the database: a task is
//! pending with its attempts and next attempt time until it is done or has failed its last
//! attempt, so a coordinator that stops (or dies) half-way resumes where it was at its next run,
//! in this replica or another. A task's outcome and its state are written together, after the
//! service answered; a task whose answer was lost runs again, which the services make harmless
//! (an erasure erases nothing the second time, with the same idempotency key; an export, a
//! restriction or an objection is the same again). A request whose tasks are all settled is
//! finished in the same run: COMPLETED, or PARTIALLY_COMPLETED when a task failed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::transport::Channel;
use tutela_host::{Progress, ServiceTokens, SweepReport, Sweeper};
use tutela_policy::scope::Tenant;
use tutela_policy::{Error, Result};
use tutela_proto::common::{DataCategory, IdempotencyKey, SubjectRef};
use tutela_proto::privacy::subject_data_client::SubjectDataClient;
use tutela_proto::privacy::{
    EraseSubjectRequest, ExportSubjectRequest, ObjectToProcessingRequest, RectifySubjectRequest,
    RestrictSubjectRequest,
};
use tutela_proto::rights::{Correction, TaskOutcome};

use crate::Rights;
use crate::assemble::export_field;
use crate::entity::{request, task};
use crate::requests::{correction_field, state, task_state};

/// How many tasks one run takes on at most; the rest wait for the next run.
const MAX_PER_RUN: u64 = 200;

/// How many tasks run at once.
const CONCURRENCY: usize = 8;

/// The longest wait between two attempts of a task.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How the coordinator retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; it doubles with each failure, up to an hour.
    pub base: Duration,
    /// After this many failed attempts a task fails (RetryRightsRequest starts it again).
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`, after `attempts` failed ones.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doubled = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
        self.base.saturating_mul(doubled).min(MAX_BACKOFF)
    }
}

/// The categories a done access task's outcome names.
pub(crate) fn outcome_categories(t: &task::Model) -> Result<Vec<DataCategory>> {
    let Some(bytes) = &t.outcome else {
        return Ok(Vec::new());
    };
    let outcome = TaskOutcome::decode(bytes.as_slice())
        .map_err(|_| Error::internal("a stored task outcome does not decode"))?;
    Ok(outcome
        .categories
        .iter()
        .filter_map(|c| DataCategory::try_from(*c).ok())
        .collect())
}

/// What one attempt came to.
enum Attempt {
    /// The service answered: the outcome, and the export to keep (access).
    Done(Box<TaskOutcome>, Option<Vec<u8>>),
    /// It did not; `retry` says whether trying again may help.
    Failed { error: String, retry: bool },
}

/// The coordinator of one process.
pub struct Coordinator {
    rights: Rights,
    /// Each service's SubjectData endpoint (`None`: not reachable from this command).
    targets: HashMap<String, Option<Channel>>,
    tokens: Arc<dyn ServiceTokens>,
    retry: RetryPolicy,
    interval: Duration,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("services", &self.rights.services)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// What one run did.
#[derive(Debug, Default)]
struct Ran {
    done: u64,
    retrying: u64,
    failed: u64,
    finished: u64,
    dry_run: bool,
    due: u64,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            return write!(f, "{} rights tasks due", self.due);
        }
        write!(
            f,
            "{} rights tasks done, {} to retry, {} failed; {} requests finished",
            self.done, self.retrying, self.failed, self.finished
        )
    }
}

impl Coordinator {
    /// A coordinator over `rights`, reaching each service at `targets`.
    pub fn new(
        rights: Rights,
        targets: HashMap<String, Option<Channel>>,
        tokens: Arc<dyn ServiceTokens>,
        retry: RetryPolicy,
        interval: Duration,
    ) -> Self {
        Self {
            rights,
            targets,
            tokens,
            retry,
            interval,
        }
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<task::Model>> {
        Ok(task::Entity::find()
            .filter(task::Column::State.eq(task_state::PENDING))
            .filter(task::Column::NextAttemptAt.lte(now))
            .order_by_asc(task::Column::NextAttemptAt)
            .order_by_asc(task::Column::Seq)
            .limit(MAX_PER_RUN)
            .all(&self.rights.db)
            .await?)
    }

    /// Runs every task due at `now`, then finishes the requests whose tasks are all settled.
    async fn run(&self, now: DateTime<Utc>) -> Result<Ran> {
        let due = self.due(now).await?;
        let mut ran = Ran::default();
        let mut seen = BTreeSet::new();
        let mut kinds = HashMap::new();
        for t in &due {
            let key = (t.tenant.clone(), t.request_id.clone());
            if !seen.insert(key.clone()) {
                continue;
            }
            let row = Tenant::of_row(t)?
                .find::<request::Entity>()
                .filter(request::Column::RequestId.eq(&t.request_id))
                .one(&self.rights.db)
                .await?;
            if let Some(row) = row.filter(|r| r.state == state::IN_PROGRESS) {
                kinds.insert(key, row);
            }
        }
        let attempts = futures::stream::iter(due.into_iter().filter_map(|t| {
            let row = kinds
                .get(&(t.tenant.clone(), t.request_id.clone()))?
                .clone();
            Some(async move {
                let attempt = self.attempt(&row, &t).await;
                (t, attempt)
            })
        }))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        for (t, attempt) in attempts {
            match self.settle(&t, attempt, now).await? {
                Settled::Done => ran.done += 1,
                Settled::Retrying => ran.retrying += 1,
                Settled::Failed => ran.failed += 1,
                Settled::Raced => {}
            }
        }
        for row in kinds.values() {
            if self.finish(row, now).await? {
                ran.finished += 1;
            }
        }
        Ok(ran)
    }

    /// One attempt at `t`, a task of `row`.
    async fn attempt(&self, row: &request::Model, t: &task::Model) -> Attempt {
        let span = tracing::info_span!(
            "rights.task",
            request_id = %row.request_id,
            service = %t.service,
            kind = %row.kind,
            attempt = t.attempts + 1,
        );
        let _entered = span.enter();
        let Some(Some(channel)) = self.targets.get(&t.service) else {
            return Attempt::Failed {
                error: format!(
                    "no SubjectData endpoint is configured for the {} service",
                    t.service
                ),
                retry: true,
            };
        };
        let token = match self.tokens.token(&row.tenant) {
            Ok(token) => token,
            Err(e) => {
                return Attempt::Failed {
                    error: format!("no service token: {e}"),
                    retry: true,
                };
            }
        };
        let mut client = SubjectDataClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let subject = Some(SubjectRef {
            subject_id: row.subject_id.clone(),
        });
        let services = vec![t.service.clone()];
        let reason = format!("rights request {}", row.request_id);
        // One key per request and service: a repeat after a lost answer is the same erasure
        // or correction, never a second one.
        let idempotency_key = Some(IdempotencyKey {
            key: format!("rights-{}-{}", row.request_id, t.service),
        });
        let correction = if row.kind == "rectification" {
            match self.correction(row).await {
                Ok(correction) => Some(correction),
                Err(e) => {
                    return Attempt::Failed {
                        error: format!("the correction could not be read: {e}"),
                        retry: false,
                    };
                }
            }
        } else {
            None
        };
        let call = async {
            let done = match (row.kind.as_str(), correction) {
                ("access" | "portability", _) => {
                    let request = ExportSubjectRequest { subject, services };
                    let export = client
                        .export_subject(self.authorised(request, &token)?)
                        .await?
                        .into_inner()
                        .exports
                        .into_iter()
                        .next();
                    let outcome = TaskOutcome {
                        categories: export
                            .as_ref()
                            .map(|e| e.categories.clone())
                            .unwrap_or_default(),
                        ..Default::default()
                    };
                    (
                        outcome,
                        Some(export.map(|e| e.document).unwrap_or_default()),
                    )
                }
                ("erasure", _) => {
                    let request = EraseSubjectRequest {
                        subject,
                        services,
                        reason,
                        idempotency_key,
                    };
                    let erasure = client
                        .erase_subject(self.authorised(request, &token)?)
                        .await?
                        .into_inner()
                        .services
                        .into_iter()
                        .next();
                    let outcome = TaskOutcome {
                        erasure,
                        ..Default::default()
                    };
                    (outcome, None)
                }
                ("restriction", _) => {
                    let request = RestrictSubjectRequest {
                        subject,
                        services,
                        restricted: true,
                        reason,
                    };
                    let restricted = client
                        .restrict_subject(self.authorised(request, &token)?)
                        .await?
                        .into_inner()
                        .services
                        .iter()
                        .all(|s| s.restricted);
                    let outcome = TaskOutcome {
                        restricted,
                        ..Default::default()
                    };
                    (outcome, None)
                }
                ("objection", _) => {
                    let request = ObjectToProcessingRequest {
                        subject,
                        services,
                        purposes: crate::requests::objected_purposes(row)
                            .into_iter()
                            .map(|p| p as i32)
                            .collect(),
                        objected: true,
                        reason,
                    };
                    let objected_to = client
                        .object_to_processing(self.authorised(request, &token)?)
                        .await?
                        .into_inner()
                        .services
                        .into_iter()
                        .next()
                        .map(|s| s.objected_to)
                        .unwrap_or_default();
                    let outcome = TaskOutcome {
                        objected_to,
                        ..Default::default()
                    };
                    (outcome, None)
                }
                ("rectification", Some(correction)) => {
                    let request = RectifySubjectRequest {
                        subject,
                        services,
                        profile: correction.profile,
                        update_mask: correction.update_mask,
                        reason,
                        idempotency_key,
                    };
                    let rectification = client
                        .rectify_subject(self.authorised(request, &token)?)
                        .await?
                        .into_inner()
                        .services
                        .into_iter()
                        .next();
                    let outcome = TaskOutcome {
                        rectification,
                        ..Default::default()
                    };
                    (outcome, None)
                }
                (other, _) => {
                    return Err(tonic::Status::internal(format!(
                        "unknown kind of request {other:?}"
                    )));
                }
            };
            Ok::<_, tonic::Status>(done)
        };
        let result = call.await;
        match result {
            Ok((outcome, export)) => Attempt::Done(Box::new(outcome), export),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "rights task attempt failed");
                Attempt::Failed {
                    error: describe(&status),
                    retry: transient(status.code()),
                }
            }
        }
    }

    /// The correction a RECTIFICATION request carries, opened.
    async fn correction(&self, row: &request::Model) -> Result<Correction> {
        let sealed = row
            .correction
            .as_ref()
            .ok_or_else(|| Error::internal("a rectification request without its correction"))?;
        let key = self
            .rights
            .vault
            .get(&row.tenant, &row.subject_id)
            .await
            .map_err(Error::from)?;
        let bytes = key
            .open(&correction_field(&row.request_id), sealed)
            .map_err(Error::from)?;
        Correction::decode(bytes.as_slice())
            .map_err(|_| Error::internal("a stored correction does not decode"))
    }

    /// `message` with the service principal's token, the purpose and the trace context.
    fn authorised<T>(
        &self,
        message: T,
        token: &str,
    ) -> std::result::Result<tonic::Request<T>, tonic::Status> {
        let mut request = tonic::Request::new(message);
        tutela_host::peer::authorise(&mut request, token, "subject_rights")?;
        tutela_telemetry::inject_context(request.metadata_mut());
        Ok(request)
    }

    /// Writes what `attempt` came to onto `t`, unless the task changed meanwhile.
    async fn settle(
        &self,
        t: &task::Model,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> Result<Settled> {
        let scope = Tenant::of_row(t)?;
        let attempts = t.attempts.saturating_add(1);
        let update = scope
            .update::<task::Entity>()
            .col_expr(task::Column::Attempts, Expr::value(attempts))
            .filter(task::Column::Seq.eq(t.seq))
            .filter(task::Column::State.eq(task_state::PENDING))
            .filter(task::Column::Attempts.eq(t.attempts));
        let attempt = match attempt {
            Attempt::Done(outcome, Some(document)) => match self.seal(t, &document).await {
                Ok(sealed) => Attempt::Done(outcome, Some(sealed)),
                // The subject's key here is gone (erased since): the export cannot be kept.
                Err(e) => Attempt::Failed {
                    error: format!("the export could not be kept: {e}"),
                    retry: false,
                },
            },
            other => other,
        };
        let (update, settled) = match attempt {
            Attempt::Done(outcome, sealed) => (
                update
                    .col_expr(task::Column::State, Expr::value(task_state::DONE))
                    .col_expr(task::Column::DoneAt, Expr::value(now))
                    .col_expr(task::Column::Outcome, Expr::value(outcome.encode_to_vec()))
                    .col_expr(task::Column::Export, Expr::value(sealed))
                    .col_expr(task::Column::LastError, Expr::value(Option::<String>::None)),
                Settled::Done,
            ),
            Attempt::Failed { error, retry } => {
                let error: String = error.chars().take(500).collect();
                let give_up = !retry
                    || u32::try_from(attempts).unwrap_or(u32::MAX) >= self.retry.max_attempts;
                let update = update.col_expr(task::Column::LastError, Expr::value(error));
                if give_up {
                    (
                        update.col_expr(task::Column::State, Expr::value(task_state::FAILED)),
                        Settled::Failed,
                    )
                } else {
                    let wait = self
                        .retry
                        .backoff(u32::try_from(attempts).unwrap_or(u32::MAX));
                    let next = now
                        + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
                    (
                        update.col_expr(task::Column::NextAttemptAt, Expr::value(next)),
                        Settled::Retrying,
                    )
                }
            }
        };
        let written = update.exec(&self.rights.db).await?;
        Ok(if written.rows_affected == 0 {
            Settled::Raced
        } else {
            settled
        })
    }

    /// `document` sealed under the subject's key, bound to the task's request and service.
    async fn seal(&self, t: &task::Model, document: &[u8]) -> Result<Vec<u8>> {
        let key = self
            .rights
            .vault
            .get_or_create(&t.tenant, &t.subject_id)
            .await
            .map_err(Error::from)?;
        key.seal(&export_field(&t.request_id, &t.service), document)
            .map_err(Error::from)
    }

    /// Finishes `row` when none of its tasks is pending: COMPLETED, or PARTIALLY_COMPLETED when
    /// one failed. Returns whether it did.
    async fn finish(&self, row: &request::Model, now: DateTime<Utc>) -> Result<bool> {
        let scope = Tenant::of_row(row)?;
        let states: Vec<String> = scope
            .find::<task::Entity>()
            .select_only()
            .column(task::Column::State)
            .filter(task::Column::RequestId.eq(&row.request_id))
            .into_tuple()
            .all(&self.rights.db)
            .await?;
        if states.iter().any(|s| s == task_state::PENDING) {
            return Ok(false);
        }
        let to = if states.iter().any(|s| s == task_state::FAILED) {
            state::PARTIALLY_COMPLETED
        } else {
            state::COMPLETED
        };
        let moved = scope
            .update::<request::Entity>()
            .col_expr(request::Column::State, Expr::value(to))
            .col_expr(request::Column::FinishedAt, Expr::value(now))
            // A correction's values are needed only until every service applied them; a
            // retry of a failed task keeps them.
            .col_expr(
                request::Column::Correction,
                if to == state::COMPLETED {
                    Expr::value(Option::<Vec<u8>>::None)
                } else {
                    Expr::col(request::Column::Correction)
                },
            )
            .filter(request::Column::RequestId.eq(&row.request_id))
            .filter(request::Column::State.eq(state::IN_PROGRESS))
            .exec(&self.rights.db)
            .await?;
        if moved.rows_affected > 0 {
            tracing::info!(request_id = %row.request_id, state = to, "rights request finished");
        }
        Ok(moved.rows_affected > 0)
    }
}

/// What settling a task did.
enum Settled {
    Done,
    Retrying,
    Failed,
    /// Someone else (a retry, another run) changed it first: nothing written.
    Raced,
}

/// Whether trying again may help: the service was away, busy or slow, not refusing.
fn transient(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable
            | DeadlineExceeded
            | ResourceExhausted
            | Aborted
            | Internal
            | Unknown
            | Cancelled
    )
}

/// A status as a task's last error: its code and message (services put no personal data in
/// messages).
fn describe(status: &tonic::Status) -> String {
    let message: String = status
        .message()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    format!("{:?}: {message}", status.code())
}

#[async_trait::async_trait]
impl Sweeper for Coordinator {
    fn name(&self) -> &'static str {
        "rights requests"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        progress: Progress<'_>,
    ) -> Result<SweepReport> {
        if dry_run {
            let due = self.due(now).await?.len() as u64;
            progress("rights tasks", due, due);
            return Ok(Box::new(Ran {
                dry_run: true,
                due,
                ..Default::default()
            }));
        }
        let ran = self.run(now).await?;
        let total = ran.done + ran.retrying + ran.failed;
        progress("rights tasks", total, total);
        Ok(Box::new(ran))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_base_up_to_an_hour() {
        let p = RetryPolicy {
            base: Duration::from_secs(2),
            max_attempts: 12,
        };
        assert_eq!(p.backoff(1), Duration::from_secs(2));
        assert_eq!(p.backoff(2), Duration::from_secs(4));
        assert_eq!(p.backoff(5), Duration::from_secs(32));
        assert_eq!(p.backoff(20), MAX_BACKOFF);
        assert_eq!(p.backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_refusal_is_final_and_an_absence_is_retried() {
        assert!(transient(tonic::Code::Unavailable));
        assert!(transient(tonic::Code::DeadlineExceeded));
        assert!(!transient(tonic::Code::PermissionDenied));
        assert!(!transient(tonic::Code::InvalidArgument));
        assert!(!transient(tonic::Code::FailedPrecondition));
    }
}
