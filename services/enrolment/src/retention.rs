//! The retention sweeper (E7): removes what the processing register says is due, and skips what
//! a legal hold protects. Results follow the `exam_results` purpose's retention, enrolments and
//! learner profiles `course_administration`'s; with the default register both are one year after
//! the programme (the course's end date) ended. A learner's profile goes once none of their
//! records remain and their own retention since collection has passed. Results and enrolments
//! are deleted; a learner is erased as on request (rows deleted, data key destroyed).
//! Certificates follow `certification` (six years after the course by default), feedback
//! `quality_assurance` (one year after it was received).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{DatabaseConnection, EntityTrait};
use tutela_policy::register::{Retention, RetentionFrom};
use tutela_policy::{Register, Result, Tenant};
use tutela_proto::common::Purpose;

use crate::holds::Holds;
use crate::learners::Learners;
use crate::learners::entity::learner;
use crate::outcomes::entity::{certificate, feedback};
use crate::records::entity::{course, enrolment, result};

/// What one sweep removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Results removed.
    pub results: u64,
    /// Enrolments removed.
    pub enrolments: u64,
    /// Learners erased.
    pub learners: u64,
    /// Certificates and badges removed.
    pub certificates: u64,
    /// Feedback removed.
    pub feedback: u64,
    /// Records due but kept under a legal hold.
    pub held: u64,
}

/// Progress of a sweep: the phase, and how many of its items were looked at out of how many.
pub type Progress<'a> = &'a (dyn Fn(&'static str, u64, u64) + Send + Sync);

/// The enrolment service's retention sweeper.
#[derive(Debug, Clone)]
pub struct Sweeper {
    db: DatabaseConnection,
    learners: Learners,
    holds: Holds,
    register: Arc<Register>,
}

/// The day after `date` began, as the instant a programme that ended on `date` is over.
fn end_of(date: NaiveDate) -> DateTime<Utc> {
    date.succ_opt()
        .unwrap_or(date)
        .and_hms_opt(0, 0, 0)
        .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc())
}

/// When a record is due: its retention counted from the event the register names.
fn due(
    retention: &Retention,
    programme_end: Option<DateTime<Utc>>,
    collected: DateTime<Utc>,
    last_activity: DateTime<Utc>,
) -> DateTime<Utc> {
    let start = match retention.from {
        RetentionFrom::ProgrammeEnd => programme_end.unwrap_or(collected),
        RetentionFrom::LastActivity => last_activity,
        RetentionFrom::Collection | RetentionFrom::Withdrawal => collected,
    };
    retention.due(start)
}

impl Sweeper {
    /// A sweeper over `db` enforcing `register`.
    pub fn new(
        db: DatabaseConnection,
        learners: Learners,
        holds: Holds,
        register: Arc<Register>,
    ) -> Self {
        Self {
            db,
            learners,
            holds,
            register,
        }
    }

    /// Removes what is due at `now` (only counts it when `dry_run`).
    pub async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        progress: Progress<'_>,
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let holds = self.holds.all().await?;
        let held =
            |tenant: &str, learner: &str| holds.get(&(tenant.to_owned(), learner.to_owned()));
        let ends: HashMap<(String, String), DateTime<Utc>> = course::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| ((c.tenant, c.course_id), end_of(c.end_date)))
            .collect();
        let enrolments = enrolment::Entity::find().all(&self.db).await?;
        let course_of: HashMap<(&str, &str), &str> = enrolments
            .iter()
            .map(|e| {
                (
                    (e.tenant.as_str(), e.enrolment_id.as_str()),
                    e.course_id.as_str(),
                )
            })
            .collect();
        let end_of_enrolment = |tenant: &str, enrolment_id: &str| {
            course_of
                .get(&(tenant, enrolment_id))
                .and_then(|c| ends.get(&(tenant.to_owned(), (*c).to_owned())))
                .copied()
        };

        // Results.
        let mut remaining_results: HashSet<(String, String)> = HashSet::new();
        let mut results_with_enrolment: HashSet<(String, String)> = HashSet::new();
        if let Some(rule) = self.register.rule(Purpose::ExamResults) {
            let rows = result::Entity::find().all(&self.db).await?;
            let total = rows.len() as u64;
            for (i, row) in rows.into_iter().enumerate() {
                progress("results", i as u64 + 1, total);
                let is_due = due(
                    &rule.retention,
                    end_of_enrolment(&row.tenant, &row.enrolment_id),
                    row.recorded_at,
                    row.assessed_at,
                ) <= now;
                let protected =
                    held(&row.tenant, &row.learner_id).is_some_and(|h| h.result(&row.result_id));
                if is_due && !protected {
                    report.results += 1;
                    if !dry_run {
                        result::Entity::delete_by_id(row.seq).exec(&self.db).await?;
                    }
                    continue;
                }
                if is_due {
                    report.held += 1;
                }
                remaining_results.insert((row.tenant.clone(), row.learner_id.clone()));
                results_with_enrolment.insert((row.tenant, row.enrolment_id));
            }
        }

        // Enrolments (kept while a result of theirs remains).
        let mut remaining_enrolments: HashSet<(String, String)> = HashSet::new();
        let rule = self.register.rule(Purpose::CourseAdministration);
        let total = enrolments.len() as u64;
        for (i, row) in enrolments.iter().enumerate() {
            progress("enrolments", i as u64 + 1, total);
            let keep = |remaining: &mut HashSet<(String, String)>| {
                remaining.insert((row.tenant.clone(), row.learner_id.clone()));
            };
            let Some(rule) = rule else {
                keep(&mut remaining_enrolments);
                continue;
            };
            let is_due = due(
                &rule.retention,
                end_of_enrolment(&row.tenant, &row.enrolment_id),
                row.created_at,
                row.status_changed_at,
            ) <= now;
            let protected =
                held(&row.tenant, &row.learner_id).is_some_and(|h| h.enrolment(&row.enrolment_id));
            let has_results =
                results_with_enrolment.contains(&(row.tenant.clone(), row.enrolment_id.clone()));
            if is_due && !protected && !has_results {
                report.enrolments += 1;
                if !dry_run {
                    enrolment::Entity::delete_by_id(row.seq)
                        .exec(&self.db)
                        .await?;
                }
                continue;
            }
            if is_due && protected {
                report.held += 1;
            }
            keep(&mut remaining_enrolments);
        }

        // Certificates (the register's `certification` period from the course's end) and
        // feedback (`quality_assurance`'s from when it was received); a hold on the learner
        // keeps both.
        let mut remaining_other: HashSet<(String, String)> = HashSet::new();
        let certification = self.register.rule(Purpose::Certification);
        let rows = certificate::Entity::find().all(&self.db).await?;
        let total = rows.len() as u64;
        for (i, row) in rows.into_iter().enumerate() {
            progress("certificates", i as u64 + 1, total);
            let end = ends
                .get(&(row.tenant.clone(), row.course_id.clone()))
                .copied();
            let is_due = certification
                .is_some_and(|rule| due(&rule.retention, end, row.issued_at, row.issued_at) <= now);
            let protected = held(&row.tenant, &row.learner_id).is_some_and(|h| h.whole);
            if is_due && !protected {
                report.certificates += 1;
                if !dry_run {
                    certificate::Entity::delete_by_id(row.seq)
                        .exec(&self.db)
                        .await?;
                }
                continue;
            }
            if is_due {
                report.held += 1;
            }
            remaining_other.insert((row.tenant, row.learner_id));
        }
        let quality = self.register.rule(Purpose::QualityAssurance);
        let rows = feedback::Entity::find().all(&self.db).await?;
        let total = rows.len() as u64;
        for (i, row) in rows.into_iter().enumerate() {
            progress("feedback", i as u64 + 1, total);
            let is_due = quality.is_some_and(|rule| {
                due(&rule.retention, None, row.received_at, row.received_at) <= now
            });
            let protected = held(&row.tenant, &row.learner_id).is_some_and(|h| h.whole);
            if is_due && !protected {
                report.feedback += 1;
                if !dry_run {
                    feedback::Entity::delete_by_id(row.seq)
                        .exec(&self.db)
                        .await?;
                }
                continue;
            }
            if is_due {
                report.held += 1;
            }
            remaining_other.insert((row.tenant, row.learner_id));
        }

        // Learners with nothing left whose own retention has passed.
        if let Some(rule) = rule {
            let rows = learner::Entity::find().all(&self.db).await?;
            let total = rows.len() as u64;
            for (i, row) in rows.into_iter().enumerate() {
                progress("learners", i as u64 + 1, total);
                let key = (row.tenant.clone(), row.learner_id.clone());
                if remaining_results.contains(&key)
                    || remaining_enrolments.contains(&key)
                    || remaining_other.contains(&key)
                {
                    continue;
                }
                let retention = Retention {
                    from: RetentionFrom::Collection,
                    ..rule.retention
                };
                if retention.due(row.created_at) > now {
                    continue;
                }
                if held(&row.tenant, &row.learner_id).is_some_and(|h| h.whole) {
                    report.held += 1;
                    continue;
                }
                report.learners += 1;
                if !dry_run {
                    self.learners
                        .erase_learner(&Tenant::of_row(&row)?, &row.learner_id, None)
                        .await?;
                }
            }
        }
        tracing::info!(
            dry_run,
            results = report.results,
            enrolments = report.enrolments,
            learners = report.learners,
            held = report.held,
            "retention sweep"
        );
        Ok(report)
    }
}
