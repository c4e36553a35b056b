//! The enrolment service as other services read it: over its gRPC API
//! (`tutela.enrolment.v1`), as a `service` principal of the caller's tenant, for a purpose, so
//! that the guard in front of enrolment applies to every learner read (Cedar, the register's
//! categories, consent for the recipient, restriction) and audits it there. No service imports
//! another's crate: this is a client of the contract, shared by the services that read learners
//! (sharing, survey), in one process (the process's own address) or across pods.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tutela_host::ServiceTokens;
use tutela_host::peer::{PeerSettings, authorise};
use tutela_policy::{Error, Result};
use tutela_proto::common::{IdempotencyKey, SubjectRef};
use tutela_proto::enrolment::course_service_client::CourseServiceClient;
use tutela_proto::enrolment::enrolment_service_client::EnrolmentServiceClient;
use tutela_proto::enrolment::learner_service_client::LearnerServiceClient;
use tutela_proto::enrolment::{
    AssessmentResult, ConsentCheck, GetCourseRequest, Learner, LearnerChange, LearnerRecords,
    ListLearnerChangesRequest, RecordKind, RecordResultRequest, StreamLearnersRequest,
    WithheldLearner,
};

/// How long one bulk read may take (10,000 learners, in batches).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the enrolment service is: the `enrolment_endpoint` and `enrolment_ca_file` keys of a
/// service's settings section (`[sharing]`, `[survey]`), one parser and one check for all
/// (`tutela_host::peer`, as every peer's).
#[derive(Debug, Clone, Default)]
pub struct EnrolmentSettings(PeerSettings);

impl EnrolmentSettings {
    /// The enrolment keys of the settings section `section` (`None`: no section), checked, and
    /// the section's other keys for the service's own settings (an object, empty when there are
    /// none). An error names the setting.
    pub fn split(
        section: &str,
        value: Option<&serde_json::Value>,
    ) -> std::result::Result<(Self, serde_json::Value), String> {
        let mut rest = PeerSettings::section(section, value)?;
        let peer = PeerSettings::take(section, "enrolment", &mut rest)?;
        Ok((Self(peer), serde_json::Value::Object(rest)))
    }

    /// The configured endpoint; empty for this process's own address.
    pub fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    /// The enrolment service's client: the configured endpoint, or else `local_endpoint` (this
    /// process's own address); `None` for a command that does not serve and has none configured.
    pub fn client(
        &self,
        local_endpoint: Option<&tutela_host::LocalEndpoint>,
        tokens: Arc<dyn ServiceTokens>,
    ) -> std::result::Result<Option<Arc<Enrolment>>, tutela_host::BuildError> {
        Ok(self
            .0
            .channel(local_endpoint, READ_TIMEOUT)?
            .map(|channel| Arc::new(Enrolment::new(channel, tokens))))
    }
}

/// A client of `tutela.enrolment.v1.LearnerService`.
#[derive(Clone)]
pub struct Enrolment {
    client: LearnerServiceClient<Channel>,
    /// `tutela.enrolment.v1.EnrolmentService` on the same channel: partners' inbound results.
    records: EnrolmentServiceClient<Channel>,
    /// `tutela.enrolment.v1.CourseService` on the same channel: the courses partners book for.
    courses: CourseServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment").finish_non_exhaustive()
    }
}

/// What a bulk read asks enrolment for.
pub struct Asked {
    /// The learners.
    pub ids: Vec<String>,
    /// The profile fields, by their proto names.
    pub mask: Vec<String>,
    /// Which of their records, if any.
    pub records: Vec<RecordKind>,
    /// Only records of this course; empty for every course.
    pub course_id: String,
    /// Which consent each learner must have.
    pub consent: ConsentCheck,
}

/// What a bulk read returned: the learners, their records, and those withheld with the reason.
#[derive(Default)]
pub struct Read {
    /// The learners, each redacted by enrolment to what the purpose may read and to the mask.
    pub learners: Vec<Learner>,
    /// The records asked for, one entry per learner in the order of `learners`.
    pub records: Vec<LearnerRecords>,
    /// The learners enrolment did not return, with the reason.
    pub withheld: Vec<WithheldLearner>,
}

impl Enrolment {
    /// A client of the service on `channel` (connecting on first use, so that this process
    /// starts whether or not enrolment is up yet).
    fn new(channel: Channel, tokens: Arc<dyn ServiceTokens>) -> Self {
        Self {
            client: LearnerServiceClient::new(channel.clone()),
            records: EnrolmentServiceClient::new(channel.clone()),
            courses: CourseServiceClient::new(channel),
            tokens,
        }
    }

    /// The learners `asked` of `tenant` with the records asked, read for `purpose` (its short
    /// name) and disclosed to `recipient`.
    pub async fn learners(
        &self,
        tenant: &str,
        purpose: &'static str,
        asked: Asked,
        recipient: &str,
    ) -> Result<Read> {
        let token = self.token(tenant)?;
        let mut request = tonic::Request::new(StreamLearnersRequest {
            learner_ids: asked.ids,
            read_mask: Some(prost_types::FieldMask { paths: asked.mask }),
            resume_token: String::new(),
            batch_size: 1000,
            recipient: recipient.to_owned(),
            records: asked.records.into_iter().map(i32::from).collect(),
            course_id: asked.course_id,
            consent_check: asked.consent.into(),
        });
        authorise(&mut request, &token, purpose)?;
        let mut stream = self
            .client
            .clone()
            .stream_learners(request)
            .await
            .map_err(refused)?
            .into_inner();
        let mut read = Read::default();
        while let Some(batch) = stream.message().await.map_err(refused)? {
            read.learners.extend(batch.learners);
            read.records.extend(batch.records);
            read.withheld.extend(batch.withheld);
        }
        Ok(read)
    }
}

impl Enrolment {
    fn token(&self, tenant: &str) -> Result<String> {
        self.tokens
            .token(tenant)
            .map_err(|e| Error::Unavailable(format!("no service token for enrolment: {e}")))
    }

    /// The changes to `tenant`'s learners after `cursor` (at most 500), and the cursor to read on
    /// from, read for `legal_obligation` (Art. 19).
    pub async fn changes(
        &self,
        tenant: &str,
        cursor: &str,
    ) -> Result<(Vec<LearnerChange>, String)> {
        let token = self.token(tenant)?;
        let mut request = tonic::Request::new(ListLearnerChangesRequest {
            cursor: cursor.to_owned(),
            page_size: 500,
        });
        authorise(&mut request, &token, "legal_obligation")?;
        let page = self
            .client
            .clone()
            .list_learner_changes(request)
            .await
            .map_err(refused)?
            .into_inner();
        Ok((page.changes, page.next_cursor))
    }
}

/// What enrolment made of a result submitted for recording.
#[derive(Debug)]
pub enum Recorded {
    /// Recorded (or, under the same idempotency key, recorded before): the result's id.
    Yes(String),
    /// The enrolment has not started (or was withdrawn): nothing recorded.
    NotStarted,
    /// The learner has no enrolment on the course: nothing recorded.
    NotEnrolled,
    /// Enrolment refused the result's values (INVALID_ARGUMENT): why, naming no learner.
    Invalid(String),
}

impl Enrolment {
    /// Whether `tenant` has the course `course_id`, read for `purpose` (the catalogue holds no
    /// personal data).
    pub async fn course_exists(
        &self,
        tenant: &str,
        purpose: &'static str,
        course_id: &str,
    ) -> Result<bool> {
        let token = self.token(tenant)?;
        let mut request = tonic::Request::new(GetCourseRequest {
            course_id: course_id.to_owned(),
        });
        authorise(&mut request, &token, purpose)?;
        match self.courses.clone().get_course(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(refused(status)),
        }
    }

    /// Records `result` (its `enrolment_id` set) in `tenant` for `exam_results`, under
    /// `idempotency_key`, so that the same item submitted again is recorded once.
    pub async fn record_result(
        &self,
        tenant: &str,
        on: (&str, &str),
        result: AssessmentResult,
        idempotency_key: String,
    ) -> Result<Recorded> {
        let (learner_id, course_id) = on;
        let token = self.token(tenant)?;
        let mut request = tonic::Request::new(RecordResultRequest {
            result: Some(result),
            idempotency_key: Some(IdempotencyKey {
                key: idempotency_key,
            }),
            learner: Some(SubjectRef {
                subject_id: learner_id.to_owned(),
            }),
            course_id: course_id.to_owned(),
        });
        authorise(&mut request, &token, "exam_results")?;
        match self.records.clone().record_result(request).await {
            Ok(response) => Ok(Recorded::Yes(
                response
                    .into_inner()
                    .result
                    .map(|r| r.result_id)
                    .unwrap_or_default(),
            )),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                Ok(Recorded::NotStarted)
            }
            // No enrolment on the course, or the learner is gone (erased).
            Err(status) if status.code() == tonic::Code::NotFound => Ok(Recorded::NotEnrolled),
            // Enrolment's field messages name fields and rules, never values.
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                Ok(Recorded::Invalid(status.message().to_owned()))
            }
            // The key is the result's identity: the same result with other values was recorded.
            Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(Recorded::Invalid(
                "this assessment's result was recorded before with other values".into(),
            )),
            Err(status) => Err(refused(status)),
        }
    }

    /// The names of the staff of `tenant`'s course `course_id`, read for `quality_assurance`
    /// (what the survey scrubber knows besides the invitees); `None` when the tenant has no such
    /// course. The names are identity data: enrolment's guard withholds them from a caller that
    /// may not read identity for the purpose, which comes back as no names.
    pub async fn course_staff_names(
        &self,
        tenant: &str,
        course_id: &str,
    ) -> Result<Option<Vec<String>>> {
        let token = self.token(tenant)?;
        let mut request = tonic::Request::new(GetCourseRequest {
            course_id: course_id.to_owned(),
        });
        authorise(&mut request, &token, "quality_assurance")?;
        match self.courses.clone().get_course(request).await {
            Ok(response) => Ok(Some(
                response
                    .into_inner()
                    .course
                    .map(|c| c.staff_names)
                    .unwrap_or_default(),
            )),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(refused(status)),
        }
    }
}

/// The enrolment service's refusal says nothing about any learner (withheld learners come in the
/// stream): its code and message say why a read failed.
fn refused(status: tonic::Status) -> Error {
    Error::Unavailable(format!(
        "the enrolment service answered {:?}: {}",
        status.code(),
        status.message()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_take_their_keys_and_leave_the_rest() {
        let section = serde_json::json!({
            "enrolment_endpoint": "http://enrolment:50051",
            "notice_interval_secs": 5,
        });
        let (settings, rest) = EnrolmentSettings::split("sharing", Some(&section)).unwrap();
        assert_eq!(settings.endpoint(), "http://enrolment:50051");
        assert_eq!(rest, serde_json::json!({ "notice_interval_secs": 5 }));
        let (settings, rest) = EnrolmentSettings::split("survey", None).unwrap();
        assert!(settings.endpoint().is_empty());
        assert_eq!(rest, serde_json::json!({}));
        // The checks are the peer settings' (tutela_host::peer), named for the section.
        let bare = serde_json::json!({ "enrolment_endpoint": "enrolment:50051" });
        let err = EnrolmentSettings::split("survey", Some(&bare)).unwrap_err();
        assert!(err.contains("survey.enrolment_endpoint"), "{err}");
    }
}
