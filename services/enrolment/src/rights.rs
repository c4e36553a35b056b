//! The enrolment service's part in data-subject rights (`tutela.privacy.v1.SubjectData`).

use tutela_policy::rights::SubjectDataProvider;
use tutela_policy::validate::timestamp;
use tutela_policy::{Error, Result, SubjectAccess, fields};
use tutela_proto::privacy::{
    RetainedRecord, ServiceErasure, ServiceExport, ServiceHoldings, ServiceRectification,
};

use crate::SERVICE;
use crate::holds::Holds;
use crate::learners::{LearnerService, Learners};
use crate::outcomes::Outcomes;
use crate::records::{Records, to_enrolment, to_result};

/// Describe, export and erase a learner's enrolment records.
#[derive(Debug, Clone)]
pub struct EnrolmentRights {
    /// Corrections go through the same checks and writes as UpdateLearner.
    service: LearnerService,
    learners: Learners,
    records: Records,
    holds: Holds,
    outcomes: Outcomes,
}

impl EnrolmentRights {
    /// The provider over `learners`, their `records` and the `holds` on them, correcting
    /// profiles through `service`.
    pub fn new(
        service: LearnerService,
        learners: Learners,
        records: Records,
        holds: Holds,
    ) -> Self {
        Self {
            service,
            learners,
            outcomes: Outcomes::new(records.clone()),
            records,
            holds,
        }
    }
}

const EDUCATION: tutela_proto::common::DataCategory = tutela_proto::common::DataCategory::Education;
const ASSESSMENT: tutela_proto::common::DataCategory =
    tutela_proto::common::DataCategory::Assessment;
const COMMUNICATION: tutela_proto::common::DataCategory =
    tutela_proto::common::DataCategory::Communication;

/// What the export of an erased learner says about the records it still holds.
pub const ERASED_NOTE: &str = "Your profile was erased at your request. The records below are kept because a legal hold protects them (see legal_hold_reasons); once it is released, they go with a new erasure request or at the end of their retention period.";

/// The service's export of `document`, which holds `categories`.
fn export_of(
    document: &serde_json::Value,
    categories: tutela_policy::CategorySet,
) -> Result<ServiceExport> {
    Ok(ServiceExport {
        service: SERVICE.to_owned(),
        media_type: "application/json".to_owned(),
        document: serde_json::to_vec_pretty(document).map_err(Error::internal)?,
        categories: categories.iter().map(|c| c as i32).collect(),
    })
}

/// A record as export JSON (proto field names, enums by name, RFC 3339 times).
fn json_of<M: prost::Message>(message: &M, full_name: &str) -> Result<serde_json::Value> {
    Ok(fields::to_json(&fields::to_dynamic(message, full_name)?))
}

/// One kind of record as export JSON, when the caller may read its `category` (which is then
/// noted in `held` if there is any); nothing otherwise.
fn section<T>(
    rows: &[T],
    category: tutela_proto::common::DataCategory,
    readable: tutela_policy::CategorySet,
    held: &mut tutela_policy::CategorySet,
    json: impl Fn(&T) -> Result<serde_json::Value>,
) -> Result<Vec<serde_json::Value>> {
    if !readable.contains(category) {
        return Ok(Vec::new());
    }
    if !rows.is_empty() {
        held.insert(category);
    }
    rows.iter().map(json).collect()
}

#[async_trait::async_trait]
impl SubjectDataProvider for EnrolmentRights {
    fn service(&self) -> &'static str {
        SERVICE
    }

    async fn describe(&self, access: &SubjectAccess) -> Result<ServiceHoldings> {
        let mut held = self.learners.held(access).await?;
        let (enrolments, results) = self.records.of_learner(access).await?;
        if !enrolments.is_empty() {
            held.insert(tutela_proto::common::DataCategory::Education);
        }
        if !results.is_empty() {
            held.insert(tutela_proto::common::DataCategory::Assessment);
        }
        let (certificates, feedback) = self.outcomes.of_learner(access).await?;
        if !certificates.is_empty() {
            held.insert(EDUCATION);
        }
        if !feedback.is_empty() {
            held.insert(COMMUNICATION);
        }
        Ok(ServiceHoldings {
            service: SERVICE.to_owned(),
            categories: held.iter().map(|c| c as i32).collect(),
            restricted: false,
            objected_to: Vec::new(),
            legal_hold: self.holds.of(access).await?.any(),
        })
    }

    async fn export(&self, access: &SubjectAccess) -> Result<ServiceExport> {
        let readable = access.call().readable();
        let profile = self.learners.exists(access).await?;
        let (enrolments, results) = self.records.of_learner(access).await?;
        let (certificates, feedback) = self.outcomes.of_learner(access).await?;
        if !profile
            && enrolments.is_empty()
            && results.is_empty()
            && certificates.is_empty()
            && feedback.is_empty()
        {
            // Never enrolled here, or erased with nothing held.
            return export_of(
                &serde_json::json!({ "service": SERVICE, "learner": null }),
                tutela_policy::CategorySet::EMPTY,
            );
        }
        let mut held = if profile {
            self.learners.held(access).await?
        } else {
            tutela_policy::CategorySet::EMPTY
        };
        // Each enrolment names its course's title beside its id: the person reads the export.
        let titles = self
            .records
            .course_titles(
                access.call(),
                enrolments.iter().map(|e| e.course_id.clone()).collect(),
            )
            .await?;
        let enrolments = section(&enrolments, EDUCATION, readable, &mut held, |e| {
            let mut json = json_of(&to_enrolment(e), "tutela.enrolment.v1.Enrolment")?;
            if let Some(title) = titles.get(&e.course_id) {
                json["course_title"] = title.clone().into();
            }
            Ok(json)
        })?;
        let results = section(&results, ASSESSMENT, readable, &mut held, |r| {
            json_of(&to_result(r), "tutela.enrolment.v1.AssessmentResult")
        })?;
        let certificates = section(&certificates, EDUCATION, readable, &mut held, |c| {
            json_of(c, "tutela.enrolment.v1.Certificate")
        })?;
        let feedback = section(&feedback, COMMUNICATION, readable, &mut held, |f| {
            json_of(f, "tutela.enrolment.v1.Feedback")
        })?;
        let mut document = serde_json::json!({
            "service": SERVICE,
            // The learner's pseudonym in the audit log: the dpo looks up who accessed
            // their data with it (`tutela audit accessed`).
            "audit_pseudonym": self.learners.pseudonym(access),
            "enrolments": enrolments,
            "results": results,
            "certificates": certificates,
            "feedback": feedback,
        });
        if profile {
            let learner = self.learners.learner(access, readable).await?;
            document["learner"] = json_of(&learner, "tutela.enrolment.v1.Learner")?;
        } else {
            // Erased, but records a legal hold protects are kept: the person gets those, and
            // why they are still here.
            document["learner_erased"] = true.into();
            document["note"] = ERASED_NOTE.into();
            document["legal_hold_reasons"] = self.holds.of(access).await?.reasons.into();
        }
        export_of(&document, held.intersect(readable))
    }

    async fn rectify(
        &self,
        access: &SubjectAccess,
        correction: &tutela_policy::rights::Correction<'_>,
    ) -> Result<ServiceRectification> {
        let call = access.call();
        let r = self.service.parse_rectification(
            call,
            correction.profile,
            correction.paths,
            tutela_policy::validate::Checks::new(),
        )?;
        let now = timestamp(chrono::Utc::now());
        if !self.learners.exists(access).await? {
            // Never enrolled here, or erased: no profile to correct.
            return Ok(ServiceRectification {
                service: SERVICE.to_owned(),
                rectified: Vec::new(),
                not_held: r.names().into_iter().map(str::to_owned).collect(),
                rectified_at: Some(now),
            });
        }
        self.service
            .rectify(call, access, &r, correction.idempotency)
            .await?;
        Ok(ServiceRectification {
            service: SERVICE.to_owned(),
            rectified: r.names().into_iter().map(str::to_owned).collect(),
            not_held: Vec::new(),
            rectified_at: Some(now),
        })
    }

    async fn erase(&self, access: &SubjectAccess, _reason: &str) -> Result<ServiceErasure> {
        let held = self.holds.of(access).await?;
        let reason = held.reasons.join("; ");
        let retained = |record_type: &str, count: u64| RetainedRecord {
            record_type: record_type.to_owned(),
            count,
            hold_reason: reason.clone(),
        };
        let now = Some(timestamp(self.learners.now()));
        if held.whole {
            // Everything is held, the profile included: nothing may go, not even the key.
            let (enrolments, results) = self.records.of_learner(access).await?;
            let mut kept = vec![retained("learner", 1)];
            if !enrolments.is_empty() {
                kept.push(retained("enrolment", enrolments.len() as u64));
            }
            if !results.is_empty() {
                kept.push(retained("result", results.len() as u64));
            }
            tracing::info!("learner erasure refused in full: legal hold");
            return Ok(ServiceErasure {
                service: SERVICE.to_owned(),
                records_erased: 0,
                retained: kept,
                erased_at: now,
            });
        }
        let records = self.records.erase_except(access, &held).await?;
        // Feedback goes; certificates are evidence of an award and go with the rest, since no
        // hold names them one by one (a hold on the learner kept everything above).
        let erased = records.rows
            + self.outcomes.erase(access, false).await?
            + self.learners.erase(access).await?;
        let mut kept = Vec::new();
        if records.kept_enrolments > 0 {
            kept.push(retained("enrolment", records.kept_enrolments));
        }
        if records.kept_results > 0 {
            kept.push(retained("result", records.kept_results));
        }
        tracing::info!(records = erased, held = kept.len(), "learner erased");
        Ok(ServiceErasure {
            service: SERVICE.to_owned(),
            records_erased: erased,
            retained: kept,
            erased_at: now,
        })
    }
}
