//! The enrolment service as the sharing service reads it: over its gRPC API, as a `service`
//! principal of the caller's tenant, for the disclosure's purpose, so that the guard in front of
//! enrolment applies to every learner read (Cedar, the register's categories, consent for the
//! recipient, restriction) and audits it there. No service imports another's crate: this is a
//! client of the contract, in one process (the process's own address) or across pods.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tutela_host::ServiceTokens;
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

/// How long to wait to connect to the enrolment service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one bulk read may take (10,000 learners, in batches).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the enrolment service is.
#[derive(Debug, Clone, Default)]
pub struct EnrolmentSettings {
    /// `http://host:port`, or `https://host:port` with `ca_file`.
    pub endpoint: String,
    /// PEM file with the CA that signed enrolment's certificate (https only).
    pub ca_file: Option<PathBuf>,
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
    /// A client of the service at `settings.endpoint`, connecting on first use so that this
    /// process starts whether or not enrolment is up yet.
    pub fn new(
        settings: &EnrolmentSettings,
        tokens: Arc<dyn ServiceTokens>,
    ) -> std::result::Result<Self, tutela_host::BuildError> {
        let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(READ_TIMEOUT);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("sharing.enrolment_ca_file {}: {e}", ca.display()))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: LearnerServiceClient::new(channel.clone()),
            records: EnrolmentServiceClient::new(channel.clone()),
            courses: CourseServiceClient::new(channel),
            tokens,
        })
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
}

/// Puts the service token and the purpose on `request`.
fn authorise<T>(request: &mut tonic::Request<T>, token: &str, purpose: &str) -> Result<()> {
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::Unavailable("the service token is not valid ASCII".into()))?,
    );
    metadata.insert(
        "x-tutela-purpose",
        purpose
            .parse()
            .map_err(|_| Error::internal("a purpose name is not valid ASCII"))?,
    );
    Ok(())
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
