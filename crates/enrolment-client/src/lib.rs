//! The enrolment service as other services read it: over its gRPC API
//! (`tutela.enrolment.v1`), as a `service` principal of the caller's tenant, for a purpose, so
//! that the guard in front of enrolment applies to every learner read (Cedar, the register's
//! categories, consent for the recipient, restriction) and audits it there. No service imports
//! another's crate: this is a client of the contract, shared by the services that read learners
//! (sharing, survey), in one process (the process's own address) or across pods.

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

/// Where the enrolment service is: the `enrolment_endpoint` and `enrolment_ca_file` keys of a
/// service's settings section (`[sharing]`, `[survey]`), one parser and one check for all.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentSettings {
    /// `http://host:port`, or `https://host:port` with `enrolment_ca_file`; empty for this
    /// process's own address (enrolment hosted with the service).
    #[serde(default)]
    pub enrolment_endpoint: String,
    /// PEM file with the CA that signed enrolment's certificate (https only); empty for none.
    #[serde(default)]
    pub enrolment_ca_file: PathBuf,
    /// The section they were read from, to name the settings in errors.
    #[serde(skip)]
    section: String,
}

/// The settings keys [`EnrolmentSettings`] reads.
const KEYS: [&str; 2] = ["enrolment_endpoint", "enrolment_ca_file"];

impl EnrolmentSettings {
    /// The enrolment keys of the settings section `section` (`None`: no section), checked, and
    /// the section's other keys for the service's own settings (an object, empty when there are
    /// none). An error names the setting.
    pub fn split(
        section: &str,
        value: Option<&serde_json::Value>,
    ) -> std::result::Result<(Self, serde_json::Value), String> {
        let mut rest = match value {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(map)) => map.clone(),
            Some(_) => return Err(format!("{section} settings: not a table")),
        };
        let mut ours = serde_json::Map::new();
        for key in KEYS {
            if let Some(v) = rest.remove(key) {
                ours.insert(key.to_owned(), v);
            }
        }
        let mut settings: Self = serde_json::from_value(serde_json::Value::Object(ours))
            .map_err(|e| format!("{section} settings: {e}"))?;
        settings.section = section.to_owned();
        let e = &settings.enrolment_endpoint;
        if !(e.is_empty() || e.starts_with("http://") || e.starts_with("https://")) {
            return Err(format!(
                "{section}.enrolment_endpoint must start with http:// or https://, not {e:?}"
            ));
        }
        if e.starts_with("https://") && settings.enrolment_ca_file.as_os_str().is_empty() {
            return Err(format!(
                "{section}.enrolment_endpoint is https:// but {section}.enrolment_ca_file is not set"
            ));
        }
        Ok((settings, serde_json::Value::Object(rest)))
    }

    /// The enrolment service's client: the configured endpoint, or else `local_endpoint` (this
    /// process's own address); `None` for a command that does not serve and has none configured.
    pub fn client(
        &self,
        local_endpoint: Option<&str>,
        tokens: Arc<dyn ServiceTokens>,
    ) -> std::result::Result<Option<Arc<Enrolment>>, tutela_host::BuildError> {
        let endpoint = match self.enrolment_endpoint.as_str() {
            "" => local_endpoint,
            configured => Some(configured),
        };
        Ok(endpoint
            .map(|endpoint| Enrolment::new(endpoint, self, tokens))
            .transpose()?
            .map(Arc::new))
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
    /// A client of the service at `endpoint`, connecting on first use so that this process
    /// starts whether or not enrolment is up yet.
    fn new(
        endpoint: &str,
        settings: &EnrolmentSettings,
        tokens: Arc<dyn ServiceTokens>,
    ) -> std::result::Result<Self, tutela_host::BuildError> {
        let mut endpoint = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(READ_TIMEOUT);
        let ca = &settings.enrolment_ca_file;
        if !ca.as_os_str().is_empty() {
            let pem = std::fs::read(ca).map_err(|e| {
                format!(
                    "{}.enrolment_ca_file {}: {e}",
                    settings.section,
                    ca.display()
                )
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_take_their_keys_check_the_scheme_and_leave_the_rest() {
        let section = serde_json::json!({
            "enrolment_endpoint": "http://enrolment:50051",
            "notice_interval_secs": 5,
        });
        let (settings, rest) = EnrolmentSettings::split("sharing", Some(&section)).unwrap();
        assert_eq!(settings.enrolment_endpoint, "http://enrolment:50051");
        assert_eq!(rest, serde_json::json!({ "notice_interval_secs": 5 }));
        let (settings, rest) = EnrolmentSettings::split("survey", None).unwrap();
        assert!(settings.enrolment_endpoint.is_empty());
        assert_eq!(rest, serde_json::json!({}));
        let bare = serde_json::json!({ "enrolment_endpoint": "enrolment:50051" });
        let err = EnrolmentSettings::split("survey", Some(&bare)).unwrap_err();
        assert!(err.contains("survey.enrolment_endpoint"), "{err}");
        let tls = serde_json::json!({ "enrolment_endpoint": "https://enrolment:50051" });
        let err = EnrolmentSettings::split("survey", Some(&tls)).unwrap_err();
        assert!(err.contains("survey.enrolment_ca_file"), "{err}");
        let tls = serde_json::json!({
            "enrolment_endpoint": "https://enrolment:50051",
            "enrolment_ca_file": "/etc/tutela/ca.pem",
        });
        assert!(EnrolmentSettings::split("survey", Some(&tls)).is_ok());
        let wrong = serde_json::json!({ "enrolment_endpoint": 1 });
        let err = EnrolmentSettings::split("sharing", Some(&wrong)).unwrap_err();
        assert!(err.starts_with("sharing settings"), "{err}");
    }
}
