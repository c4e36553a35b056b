//! The retention sweeper (E7): removes what the processing register says is due, and skips what
//! a legal hold protects. Results follow the `exam_results` purpose's retention, enrolments and
//! learner profiles `course_administration`'s; with the default register both are one year after
//! the programme (the course's end date) ended. A learner's profile goes once none of their
//! records remain and their own retention since collection has passed. Results and enrolments
//! are deleted; a learner is erased as on request (rows deleted, data key destroyed).
//! Certificates follow `certification` (six years after the course by default), feedback
//! `quality_assurance` (one year after it was received).
//!
//! Each table is read in pages in primary-key order (keyset pagination: `seq > last seen`), and
//! what a page's decisions need (course end dates, holds in force, the learner's other records)
//! is looked up for that page alone, so a sweep holds at most a page of rows and their
//! neighbours in memory however large the tables grow. A row is visited at most once per sweep:
//! one added during the sweep is visited if its key is past the cursor, otherwise the next sweep
//! finds it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use tutela_policy::register::{PurposeRule, Retention, RetentionFrom};
use tutela_policy::{Register, Result, Tenant};
use tutela_proto::common::Purpose;

use crate::holds::{self, Held, Holds};
use crate::learners::Learners;
use crate::learners::entity::learner;
use crate::outcomes::entity::{certificate, feedback};
use crate::records::entity::{course, enrolment, result};

/// Rows of one table a sweep reads at a time.
pub const PAGE_SIZE: u64 = 500;

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

/// Progress of a sweep: the phase, how many of its rows were looked at (counted as each page
/// completes), and how many it has (counted when the phase began, or more if rows were added).
pub type Progress<'a> = &'a (dyn Fn(&'static str, u64, u64) + Send + Sync);

/// The enrolment service's retention sweeper.
#[derive(Debug, Clone)]
pub struct Sweeper {
    db: DatabaseConnection,
    learners: Learners,
    holds: Holds,
    register: Arc<Register>,
    page_size: u64,
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

/// (tenant, id): how every record is keyed.
type Key = (String, String);

fn key(tenant: &str, id: &str) -> Key {
    (tenant.to_owned(), id.to_owned())
}

/// `tenant = t AND id IN (..)` for each tenant among `keys`; `None` for no keys, since an empty
/// disjunction would select every row.
fn keyed<C: ColumnTrait>(tenant: C, id: C, keys: &BTreeSet<Key>) -> Option<Condition> {
    let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (t, i) in keys {
        by_tenant.entry(t).or_default().push(i);
    }
    if by_tenant.is_empty() {
        return None;
    }
    Some(
        by_tenant
            .into_iter()
            .fold(Condition::any(), |any, (t, ids)| {
                any.add(Condition::all().add(tenant.eq(t)).add(id.is_in(ids)))
            }),
    )
}

/// The rows of `E` whose (tenant, id) is among `keys`.
async fn rows_of<E: EntityTrait>(
    db: &DatabaseConnection,
    tenant: E::Column,
    id: E::Column,
    keys: &BTreeSet<Key>,
) -> Result<Vec<E::Model>> {
    match keyed(tenant, id, keys) {
        Some(which) => Ok(E::find().filter(which).all(db).await?),
        None => Ok(Vec::new()),
    }
}

/// One table read page by page in key order, reporting progress as pages complete.
struct Pages<'a, E: EntityTrait> {
    db: &'a DatabaseConnection,
    phase: &'static str,
    seq: E::Column,
    seq_of: fn(&E::Model) -> i64,
    size: u64,
    after: Option<i64>,
    exhausted: bool,
    done: u64,
    total: u64,
    progress: Progress<'a>,
}

impl<'a, E: EntityTrait> Pages<'a, E>
where
    E::Model: Sync,
{
    async fn start(
        sweeper: &'a Sweeper,
        phase: &'static str,
        seq: E::Column,
        seq_of: fn(&E::Model) -> i64,
        progress: Progress<'a>,
    ) -> Result<Self> {
        let total = E::find().count(&sweeper.db).await?;
        progress(phase, 0, total);
        Ok(Self {
            db: &sweeper.db,
            phase,
            seq,
            seq_of,
            size: sweeper.page_size,
            after: None,
            exhausted: false,
            done: 0,
            total,
            progress,
        })
    }

    /// The next page, or `None` after the last.
    async fn next(&mut self) -> Result<Option<Vec<E::Model>>> {
        if self.exhausted {
            return Ok(None);
        }
        let mut query = E::find();
        if let Some(after) = self.after {
            query = query.filter(self.seq.gt(after));
        }
        let rows = query
            .order_by_asc(self.seq)
            .limit(self.size)
            .all(self.db)
            .await?;
        self.exhausted = (rows.len() as u64) < self.size;
        match rows.last() {
            Some(last) => self.after = Some((self.seq_of)(last)),
            None => return Ok(None),
        }
        Ok(Some(rows))
    }

    /// Counts a page as swept.
    fn completed(&mut self, rows: usize) {
        self.done += rows as u64;
        self.total = self.total.max(self.done);
        (self.progress)(self.phase, self.done, self.total);
    }
}

/// What the decisions on one page need to know beyond its rows.
#[derive(Default)]
struct Facts {
    holds: HashMap<Key, Held>,
    /// Course of each enrolment looked up, by (tenant, enrolment id).
    courses_of: HashMap<Key, String>,
    /// End of each course looked up, by (tenant, course id).
    ends: HashMap<Key, DateTime<Utc>>,
}

impl Facts {
    fn held(&self, tenant: &str, learner: &str) -> Option<&Held> {
        self.holds.get(&key(tenant, learner))
    }

    fn course_end(&self, tenant: &str, course_id: &str) -> Option<DateTime<Utc>> {
        self.ends.get(&key(tenant, course_id)).copied()
    }

    fn enrolment_end(&self, tenant: &str, enrolment_id: &str) -> Option<DateTime<Utc>> {
        let course = self.courses_of.get(&key(tenant, enrolment_id))?;
        self.course_end(tenant, course)
    }
}

/// What the sweep does with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Due and not held: removed.
    Remove,
    /// Due, but a legal hold keeps it.
    Held,
    /// Not due (or due, but kept for a record that remains).
    Keep,
}

/// The register's rules as they stand at the sweep's moment.
struct Rules<'a> {
    now: DateTime<Utc>,
    results: Option<&'a PurposeRule>,
    administration: Option<&'a PurposeRule>,
    certification: Option<&'a PurposeRule>,
    quality: Option<&'a PurposeRule>,
}

fn verdict(is_due: bool, protected: bool) -> Verdict {
    match (is_due, protected) {
        (true, false) => Verdict::Remove,
        (true, true) => Verdict::Held,
        (false, _) => Verdict::Keep,
    }
}

impl Rules<'_> {
    fn result(&self, row: &result::Model, facts: &Facts) -> Verdict {
        let Some(rule) = self.results else {
            return Verdict::Keep;
        };
        let end = facts.enrolment_end(&row.tenant, &row.enrolment_id);
        let is_due = due(&rule.retention, end, row.recorded_at, row.assessed_at) <= self.now;
        let protected = facts
            .held(&row.tenant, &row.learner_id)
            .is_some_and(|h| h.result(&row.result_id));
        verdict(is_due, protected)
    }

    /// An enrolment is kept while a result of its own remains (`has_results`).
    fn enrolment(&self, row: &enrolment::Model, facts: &Facts, has_results: bool) -> Verdict {
        let Some(rule) = self.administration else {
            return Verdict::Keep;
        };
        let end = facts.course_end(&row.tenant, &row.course_id);
        let is_due = due(&rule.retention, end, row.created_at, row.status_changed_at) <= self.now;
        let protected = facts
            .held(&row.tenant, &row.learner_id)
            .is_some_and(|h| h.enrolment(&row.enrolment_id));
        match verdict(is_due, protected) {
            Verdict::Remove if has_results => Verdict::Keep,
            other => other,
        }
    }

    /// The register's `certification` period from the course's end; a hold on the learner keeps
    /// it.
    fn certificate(&self, row: &certificate::Model, facts: &Facts) -> Verdict {
        let end = facts.course_end(&row.tenant, &row.course_id);
        let is_due = self.certification.is_some_and(|rule| {
            due(&rule.retention, end, row.issued_at, row.issued_at) <= self.now
        });
        let protected = facts
            .held(&row.tenant, &row.learner_id)
            .is_some_and(|h| h.whole);
        verdict(is_due, protected)
    }

    /// `quality_assurance`'s period from when it was received; a hold on the learner keeps it.
    fn feedback(&self, row: &feedback::Model, facts: &Facts) -> Verdict {
        let is_due = self.quality.is_some_and(|rule| {
            due(&rule.retention, None, row.received_at, row.received_at) <= self.now
        });
        let protected = facts
            .held(&row.tenant, &row.learner_id)
            .is_some_and(|h| h.whole);
        verdict(is_due, protected)
    }
}

impl Sweeper {
    /// A sweeper over `db` enforcing `register`, reading [`PAGE_SIZE`] rows at a time.
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
            page_size: PAGE_SIZE,
        }
    }

    /// The same sweeper reading `rows` rows of a table at a time (at least one).
    pub fn with_page_size(mut self, rows: u64) -> Self {
        self.page_size = rows.max(1);
        self
    }

    /// Holds in force on `learners`, the enrolments' courses (`known` rows first, the rest
    /// looked up) and the end dates of those courses and of `courses`.
    async fn facts(
        &self,
        learners: &BTreeSet<Key>,
        enrolments: &BTreeSet<Key>,
        known: &[enrolment::Model],
        courses: &BTreeSet<Key>,
    ) -> Result<Facts> {
        let mut facts = Facts::default();
        if let Some(which) = keyed(
            holds::entity::Column::Tenant,
            holds::entity::Column::LearnerId,
            learners,
        ) {
            facts.holds = self.holds.in_force(which).await?;
        }
        for row in known {
            facts
                .courses_of
                .insert(key(&row.tenant, &row.enrolment_id), row.course_id.clone());
        }
        let unknown: BTreeSet<Key> = enrolments
            .iter()
            .filter(|k| !facts.courses_of.contains_key(*k))
            .cloned()
            .collect();
        for row in rows_of::<enrolment::Entity>(
            &self.db,
            enrolment::Column::Tenant,
            enrolment::Column::EnrolmentId,
            &unknown,
        )
        .await?
        {
            facts
                .courses_of
                .insert(key(&row.tenant, &row.enrolment_id), row.course_id);
        }
        let mut courses = courses.clone();
        for ((tenant, _), course) in &facts.courses_of {
            courses.insert(key(tenant, course));
        }
        for row in rows_of::<course::Entity>(
            &self.db,
            course::Column::Tenant,
            course::Column::CourseId,
            &courses,
        )
        .await?
        {
            facts
                .ends
                .insert((row.tenant, row.course_id), end_of(row.end_date));
        }
        Ok(facts)
    }

    /// Removes what is due at `now` (only counts it when `dry_run`).
    pub async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        progress: Progress<'_>,
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let rules = Rules {
            now,
            results: self.register.rule(Purpose::ExamResults).map(|r| &**r),
            administration: self
                .register
                .rule(Purpose::CourseAdministration)
                .map(|r| &**r),
            certification: self.register.rule(Purpose::Certification).map(|r| &**r),
            quality: self.register.rule(Purpose::QualityAssurance).map(|r| &**r),
        };
        let none = BTreeSet::new();

        // Results.
        if rules.results.is_some() {
            let mut pages = Pages::<result::Entity>::start(
                self,
                "results",
                result::Column::Seq,
                |r| r.seq,
                progress,
            )
            .await?;
            while let Some(rows) = pages.next().await? {
                let learners = rows.iter().map(|r| key(&r.tenant, &r.learner_id)).collect();
                let enrolments = rows
                    .iter()
                    .map(|r| key(&r.tenant, &r.enrolment_id))
                    .collect();
                let facts = self.facts(&learners, &enrolments, &[], &none).await?;
                let decided = rows.iter().map(|r| (r.seq, rules.result(r, &facts)));
                let counts = (&mut report.results, &mut report.held);
                self.settle::<result::Entity>(result::Column::Seq, decided, counts, dry_run)
                    .await?;
                pages.completed(rows.len());
            }
        }

        // Enrolments (kept while a result of theirs remains).
        if rules.administration.is_some() {
            let mut pages = Pages::<enrolment::Entity>::start(
                self,
                "enrolments",
                enrolment::Column::Seq,
                |e| e.seq,
                progress,
            )
            .await?;
            while let Some(rows) = pages.next().await? {
                let learners = rows.iter().map(|e| key(&e.tenant, &e.learner_id)).collect();
                let courses = rows.iter().map(|e| key(&e.tenant, &e.course_id)).collect();
                let facts = self.facts(&learners, &none, &rows, &courses).await?;
                // Results only matter to enrolments that would otherwise go.
                let candidates: BTreeSet<Key> = rows
                    .iter()
                    .filter(|e| rules.enrolment(e, &facts, false) == Verdict::Remove)
                    .map(|e| key(&e.tenant, &e.learner_id))
                    .collect();
                let with_results = self
                    .remaining_results(&rules, &facts, &candidates, dry_run)
                    .await?;
                let decided = rows.iter().map(|e| {
                    let has_results = with_results.contains(&key(&e.tenant, &e.enrolment_id));
                    (e.seq, rules.enrolment(e, &facts, has_results))
                });
                let counts = (&mut report.enrolments, &mut report.held);
                self.settle::<enrolment::Entity>(enrolment::Column::Seq, decided, counts, dry_run)
                    .await?;
                pages.completed(rows.len());
            }
        }

        // Certificates and feedback.
        if rules.certification.is_some() {
            let mut pages = Pages::<certificate::Entity>::start(
                self,
                "certificates",
                certificate::Column::Seq,
                |c| c.seq,
                progress,
            )
            .await?;
            while let Some(rows) = pages.next().await? {
                let learners = rows.iter().map(|c| key(&c.tenant, &c.learner_id)).collect();
                let courses = rows.iter().map(|c| key(&c.tenant, &c.course_id)).collect();
                let facts = self.facts(&learners, &none, &[], &courses).await?;
                let decided = rows.iter().map(|c| (c.seq, rules.certificate(c, &facts)));
                let counts = (&mut report.certificates, &mut report.held);
                self.settle::<certificate::Entity>(
                    certificate::Column::Seq,
                    decided,
                    counts,
                    dry_run,
                )
                .await?;
                pages.completed(rows.len());
            }
        }
        if rules.quality.is_some() {
            let mut pages = Pages::<feedback::Entity>::start(
                self,
                "feedback",
                feedback::Column::Seq,
                |f| f.seq,
                progress,
            )
            .await?;
            while let Some(rows) = pages.next().await? {
                let learners = rows.iter().map(|f| key(&f.tenant, &f.learner_id)).collect();
                let facts = self.facts(&learners, &none, &[], &none).await?;
                let decided = rows.iter().map(|f| (f.seq, rules.feedback(f, &facts)));
                let counts = (&mut report.feedback, &mut report.held);
                self.settle::<feedback::Entity>(feedback::Column::Seq, decided, counts, dry_run)
                    .await?;
                pages.completed(rows.len());
            }
        }

        // Learners with nothing left whose own retention has passed.
        if let Some(rule) = rules.administration {
            let retention = Retention {
                from: RetentionFrom::Collection,
                ..rule.retention
            };
            let mut pages = Pages::<learner::Entity>::start(
                self,
                "learners",
                learner::Column::Seq,
                |l| l.seq,
                progress,
            )
            .await?;
            while let Some(rows) = pages.next().await? {
                // Only learners whose own retention has passed need their records looked at.
                let due: Vec<&learner::Model> = rows
                    .iter()
                    .filter(|l| retention.due(l.created_at) <= now)
                    .collect();
                let learners: BTreeSet<Key> =
                    due.iter().map(|l| key(&l.tenant, &l.learner_id)).collect();
                let remaining = self.remaining_records(&rules, &learners, dry_run).await?;
                for row in due {
                    if remaining.kept.contains(&key(&row.tenant, &row.learner_id)) {
                        continue;
                    }
                    if remaining
                        .facts
                        .held(&row.tenant, &row.learner_id)
                        .is_some_and(|h| h.whole)
                    {
                        report.held += 1;
                        continue;
                    }
                    report.learners += 1;
                    if !dry_run {
                        self.learners
                            .erase_learner(&Tenant::of_row(row)?, &row.learner_id, None)
                            .await?;
                    }
                }
                pages.completed(rows.len());
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

    /// Counts the verdicts on a page's rows (by key) into `(removed, held)`, and deletes those
    /// removed in one statement unless `dry_run`.
    async fn settle<E: EntityTrait>(
        &self,
        seq: E::Column,
        decided: impl Iterator<Item = (i64, Verdict)>,
        (removed, held): (&mut u64, &mut u64),
        dry_run: bool,
    ) -> Result<()> {
        let mut gone = Vec::new();
        for (key, verdict) in decided {
            match verdict {
                Verdict::Remove => gone.push(key),
                Verdict::Held => *held += 1,
                Verdict::Keep => {}
            }
        }
        *removed += gone.len() as u64;
        if !dry_run && !gone.is_empty() {
            E::delete_many()
                .filter(seq.is_in(gone))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// The (tenant, enrolment id) of every result of `learners` that stays after this sweep.
    /// Once results were swept, every one still stored stays; a dry run removed none, so it asks
    /// of each whether the sweep would have kept it.
    async fn remaining_results(
        &self,
        rules: &Rules<'_>,
        facts: &Facts,
        learners: &BTreeSet<Key>,
        dry_run: bool,
    ) -> Result<HashSet<Key>> {
        let results = rows_of::<result::Entity>(
            &self.db,
            result::Column::Tenant,
            result::Column::LearnerId,
            learners,
        )
        .await?;
        Ok(results
            .iter()
            .filter(|r| !dry_run || rules.result(r, facts) != Verdict::Remove)
            .map(|r| key(&r.tenant, &r.enrolment_id))
            .collect())
    }

    /// Which of `learners` keep a record after this sweep (every stored one after a real sweep;
    /// those the sweep would keep, in a dry run), with the facts their decisions took.
    async fn remaining_records(
        &self,
        rules: &Rules<'_>,
        learners: &BTreeSet<Key>,
        dry_run: bool,
    ) -> Result<Remaining> {
        let db = &self.db;
        let results = rows_of::<result::Entity>(
            db,
            result::Column::Tenant,
            result::Column::LearnerId,
            learners,
        )
        .await?;
        let enrolments = rows_of::<enrolment::Entity>(
            db,
            enrolment::Column::Tenant,
            enrolment::Column::LearnerId,
            learners,
        )
        .await?;
        let certificates = rows_of::<certificate::Entity>(
            db,
            certificate::Column::Tenant,
            certificate::Column::LearnerId,
            learners,
        )
        .await?;
        let feedback = rows_of::<feedback::Entity>(
            db,
            feedback::Column::Tenant,
            feedback::Column::LearnerId,
            learners,
        )
        .await?;
        let of_results = results
            .iter()
            .map(|r| key(&r.tenant, &r.enrolment_id))
            .collect();
        let courses = certificates
            .iter()
            .map(|c| key(&c.tenant, &c.course_id))
            .collect();
        let facts = self
            .facts(learners, &of_results, &enrolments, &courses)
            .await?;
        let stays = |verdict: Verdict| !dry_run || verdict != Verdict::Remove;
        let mut kept = HashSet::new();
        let mut with_results = HashSet::new();
        for r in &results {
            if stays(rules.result(r, &facts)) {
                kept.insert(key(&r.tenant, &r.learner_id));
                with_results.insert(key(&r.tenant, &r.enrolment_id));
            }
        }
        for e in &enrolments {
            let has_results = with_results.contains(&key(&e.tenant, &e.enrolment_id));
            if stays(rules.enrolment(e, &facts, has_results)) {
                kept.insert(key(&e.tenant, &e.learner_id));
            }
        }
        for c in &certificates {
            if stays(rules.certificate(c, &facts)) {
                kept.insert(key(&c.tenant, &c.learner_id));
            }
        }
        for f in &feedback {
            if stays(rules.feedback(f, &facts)) {
                kept.insert(key(&f.tenant, &f.learner_id));
            }
        }
        Ok(Remaining { kept, facts })
    }
}

/// Learners who keep a record, and what was looked up to decide it.
struct Remaining {
    /// (tenant, learner id) of each learner with a record that stays.
    kept: HashSet<Key>,
    facts: Facts,
}
