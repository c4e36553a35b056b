//! The whole suite in-process, as `tutela serve` runs it, on `127.0.0.1:0` against a fresh
//! database: SQLite in a temporary directory, or a new PostgreSQL database when
//! `TEST_DATABASE_URL` is set. Tests talk to it over a real socket with typed clients.

use std::net::SocketAddr;

use secrecy::ExposeSecret;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tutela::{Config, Overrides};
use tutela_policy::principal::TokenRequest;
use tutela_proto::consent::consent_ledger_client::ConsentLedgerClient;
use tutela_proto::enrolment::certificate_service_client::CertificateServiceClient;
use tutela_proto::enrolment::course_service_client::CourseServiceClient;
use tutela_proto::enrolment::enrolment_service_client::EnrolmentServiceClient;
use tutela_proto::enrolment::feedback_service_client::FeedbackServiceClient;
use tutela_proto::enrolment::learner_service_client::LearnerServiceClient;
use tutela_proto::enrolment::legal_hold_service_client::LegalHoldServiceClient;
use tutela_proto::privacy::subject_data_client::SubjectDataClient;
use tutela_proto::sharing::agreement_service_client::AgreementServiceClient;
use tutela_proto::sharing::disclosure_service_client::DisclosureServiceClient;
use tutela_proto::sharing::notice_service_client::NoticeServiceClient;
use tutela_proto::sharing::partner_service_client::PartnerServiceClient;
use tutela_proto::subscription::subscription_service_client::SubscriptionServiceClient;
use tutela_proto::survey::release_service_client::ReleaseServiceClient;
use tutela_proto::survey::response_service_client::ResponseServiceClient;
use tutela_proto::survey::survey_service_client::SurveyServiceClient;
use tutela_store::testing::TestDatabase;

pub use tonic_health::pb::health_client::HealthClient;
pub use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
pub use tutela_store::testing;

/// The token secret of every test suite.
pub const DEV_SECRET: &str = "tutela-testkit-development-secret-0123456789";

/// Adds the bearer token and purpose to every call of a client.
#[derive(Clone)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
    purpose: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// No token and no purpose (for testing refusals).
    pub fn none() -> Self {
        Self {
            authorization: None,
            purpose: None,
        }
    }

    /// `token` for `purpose` (any string, so tests can send unknown ones).
    pub fn new(token: &str, purpose: &str) -> Self {
        Self {
            authorization: format!("Bearer {token}").parse().ok(),
            purpose: purpose.parse().ok(),
        }
    }

    /// The same token without a purpose.
    pub fn without_purpose(mut self) -> Self {
        self.purpose = None;
        self
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.purpose {
            request.metadata_mut().insert("x-tutela-purpose", v.clone());
        }
        Ok(request)
    }
}

/// A client channel that sends [`Credentials`].
pub type Authed = InterceptedService<Channel, Credentials>;

/// A running suite. Dropping it stops the server; [`TestSuite::stop`] also reports how it ended.
pub struct TestSuite {
    addr: SocketAddr,
    channel: Channel,
    config: Config,
    database: TestDatabase,
    _data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl std::fmt::Debug for TestSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSuite")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestSuite {
    /// Starts every available service with the default configuration.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts the suite after `adjust` has changed the configuration (fresh data dir and database
    /// already filled in).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let data_dir = tempfile::Builder::new().prefix("tutela-suite-").tempdir()?;
        let overrides = Overrides {
            data_dir: Some(data_dir.path().to_owned()),
            database_url: Some(database.url().to_owned()),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            services: Vec::new(),
        };
        let mut config = Config::load(None, Vec::new(), &overrides)?;
        config.server.shutdown_grace_secs = 5;
        // A real key file, as production mounts one (PostgreSQL refuses to serve without).
        let kek_file = data_dir.path().join("kek.test");
        let kek = tutela_store::Keyring::generate_base64()?;
        std::fs::write(&kek_file, format!("test-1:{}\n", kek.expose_secret()))?;
        config.keys.kek_file = kek_file;
        let audit_key_file = data_dir.path().join("audit-key.test");
        let audit_key = tutela_store::Keyring::generate_base64()?;
        std::fs::write(&audit_key_file, format!("{}\n", audit_key.expose_secret()))?;
        config.keys.audit_key_file = audit_key_file;
        // A known development secret, so tests can sign tokens for any principal.
        config.auth.dev_secret = secrecy::SecretString::from(DEV_SECRET);
        adjust(&mut config);

        Self::serve(config, database, data_dir).await
    }

    /// A channel to the server, over TLS with the certificates of [`client_tls`] when the server
    /// speaks TLS.
    pub fn connect(&self) -> anyhow::Result<Channel> {
        Ok(client_endpoint(&self.config, self.addr)?.connect_lazy())
    }

    /// Serves `config` (on its `server.listen`) over `database` and `data_dir`, once serving.
    async fn serve(
        config: Config,
        database: TestDatabase,
        data_dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(tutela::server::run(config.clone(), listener, async {
            let _ = stopped.await;
        }));
        let channel = client_endpoint(&config, addr)?.connect_lazy();
        let mut suite = Self {
            addr,
            channel,
            config,
            database,
            _data_dir: data_dir,
            stop: Some(stop),
            handle: Some(handle),
        };
        suite.wait_until_serving().await?;
        Ok(suite)
    }

    /// Stops the server as SIGTERM does and starts it again on the same database, data dir,
    /// keys and address: what a process restart does to everything held in the database.
    pub async fn restart(mut self) -> anyhow::Result<Self> {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.await??;
        }
        let mut config = self.config.clone();
        config.server.listen = self.addr;
        // Moved out of a value that has a Drop: an unused SQLite directory stands in.
        let database = std::mem::replace(&mut self.database, TestDatabase::sqlite()?);
        let data_dir = std::mem::replace(&mut self._data_dir, tempfile::tempdir()?);
        Self::serve(config, database, data_dir).await
    }

    /// Waits for SERVING, or returns the error the server stopped with.
    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                if let Some(handle) = self.handle.take() {
                    handle.await??;
                }
                anyhow::bail!("the server stopped before serving");
            }
            let check = self.health().check(HealthCheckRequest::default()).await;
            if check.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the server did not serve within 30 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A channel to the server (cheap to clone).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database the server uses.
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// A `grpc.health.v1` client.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// A `grpc.reflection.v1` client.
    pub fn reflection(&self) -> ServerReflectionClient<Channel> {
        ServerReflectionClient::new(self.channel())
    }

    /// A token for a principal of `tenant` with `roles` (kind implied by the first role).
    pub fn token(&self, tenant: &str, subject: &str, roles: &[&str]) -> String {
        self.token_for(TokenRequest {
            tenant: tenant.to_owned(),
            subject: subject.to_owned(),
            kind: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            partner: None,
            wards: Vec::new(),
            ttl: chrono::Duration::hours(1),
        })
    }

    /// A token for any principal.
    pub fn token_for(&self, request: TokenRequest) -> String {
        tutela::auth::issue(&self.config, &request).unwrap_or_default()
    }

    /// A token carrying exactly `claims`, signed with the suite's development secret, as a
    /// client or an identity provider could make it: unlike [`TestSuite::token_for`], which
    /// refuses to sign contradictory claims, it signs anything. The issuer and audience are the
    /// suite's unless `claims` names its own.
    pub fn signed(&self, claims: &serde_json::Value) -> String {
        let mut claims = claims.clone();
        let now = chrono::Utc::now().timestamp();
        let defaults = [
            ("iss", serde_json::json!(self.config.auth.issuer)),
            ("aud", serde_json::json!(self.config.auth.audience)),
            ("iat", serde_json::json!(now)),
            ("exp", serde_json::json!(now + 3600)),
        ];
        if let Some(map) = claims.as_object_mut() {
            for (name, value) in defaults {
                map.entry(name).or_insert(value);
            }
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(
                self.config.auth.dev_secret.expose_secret().as_bytes(),
            ),
        )
        .unwrap_or_default()
    }

    /// A `tutela.privacy.v1.SubjectData` client sending `credentials`.
    pub fn subject_data(&self, credentials: Credentials) -> SubjectDataClient<Authed> {
        SubjectDataClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.consent.v1.ConsentLedger` client sending `credentials`.
    pub fn consent_ledger(&self, credentials: Credentials) -> ConsentLedgerClient<Authed> {
        ConsentLedgerClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.subscription.v1.SubscriptionService` client sending `credentials`.
    pub fn subscriptions(&self, credentials: Credentials) -> SubscriptionServiceClient<Authed> {
        SubscriptionServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// Creates a learner of `tenant` for each of `profiles` through CreateLearner, as the
    /// tenant's registrar, `in_flight` calls at a time; their ids, in the profiles' order. The
    /// names and email are declared personal first, so that the log scan looks for them.
    pub async fn create_learners(
        &self,
        tenant: &str,
        profiles: impl IntoIterator<Item = tutela_proto::enrolment::LearnerProfile>,
        in_flight: usize,
    ) -> Result<Vec<String>, tonic::Status> {
        use futures::StreamExt;
        let client = self.learners(self.registrar(tenant));
        futures::stream::iter(profiles)
            .map(|profile| {
                testing::logs::personal(&[
                    &profile.given_name,
                    &profile.family_name,
                    &profile.email,
                ]);
                let mut client = client.clone();
                async move {
                    let created = client
                        .create_learner(tutela_proto::enrolment::CreateLearnerRequest {
                            profile: Some(profile),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    created
                        .learner
                        .map(|l| l.learner_id)
                        .ok_or_else(|| tonic::Status::internal("CreateLearner answered no learner"))
                }
            })
            .buffered(in_flight.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Creates a course of `tenant` with `code` through CreateCourse, as the tenant's registrar;
    /// its id.
    pub async fn create_course(&self, tenant: &str, code: &str) -> Result<String, tonic::Status> {
        self.create_course_with_staff(tenant, code, &[]).await
    }

    /// [`TestSuite::create_course`], the course naming `staff_names` as its staff.
    pub async fn create_course_with_staff(
        &self,
        tenant: &str,
        code: &str,
        staff_names: &[&str],
    ) -> Result<String, tonic::Status> {
        use tutela_proto::enrolment::{Course, CreateCourseRequest};
        testing::logs::personal(staff_names);
        self.courses(self.registrar(tenant))
            .create_course(CreateCourseRequest {
                course: Some(Course {
                    code: code.into(),
                    title: format!("Course {code}"),
                    programme: "Engineering".into(),
                    awarding_body: "Pearson".into(),
                    start_date: "2026-09-01".into(),
                    end_date: "2027-06-30".into(),
                    staff_names: staff_names.iter().map(|n| (*n).to_owned()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .course
            .map(|c| c.course_id)
            .ok_or_else(|| tonic::Status::internal("CreateCourse answered no course"))
    }

    /// Enrols `learner` of `tenant` on `course_id` and moves the enrolment forward along its
    /// lifecycle (applied, enrolled, started, completed) until it is `status`; its id.
    pub async fn enrol(
        &self,
        tenant: &str,
        learner: &str,
        course_id: &str,
        status: tutela_proto::enrolment::EnrolmentStatus,
    ) -> Result<String, tonic::Status> {
        use tutela_proto::enrolment::{
            ChangeEnrolmentStatusRequest, EnrolLearnerRequest, EnrolmentStatus,
        };
        let mut enrolments = self.enrolments(self.registrar(tenant));
        let enrolment_id = enrolments
            .enrol_learner(EnrolLearnerRequest {
                learner: Some(tutela_proto::common::SubjectRef {
                    subject_id: learner.into(),
                }),
                course_id: course_id.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .enrolment
            .map(|e| e.enrolment_id)
            .ok_or_else(|| tonic::Status::internal("EnrolLearner answered no enrolment"))?;
        let forward = [
            EnrolmentStatus::Enrolled,
            EnrolmentStatus::Started,
            EnrolmentStatus::Completed,
        ];
        let steps = forward
            .iter()
            .position(|s| *s == status)
            .map_or(0, |i| i + 1);
        for next in &forward[..steps] {
            enrolments
                .change_enrolment_status(ChangeEnrolmentStatusRequest {
                    enrolment_id: enrolment_id.clone(),
                    status: *next as i32,
                })
                .await?;
        }
        Ok(enrolment_id)
    }

    /// Records in the ledger, as `tenant`'s registrar, that `subject` consents to `purpose`
    /// (for `recipient` only, when not empty), on a form signed in person.
    pub async fn grant_consent(
        &self,
        tenant: &str,
        subject: &str,
        purpose: tutela_proto::common::Purpose,
        recipient: &str,
    ) -> Result<(), tonic::Status> {
        use tutela_proto::consent::{
            ConsentActor, ConsentEvidence, ConsentMethod, RecordConsentRequest,
        };
        self.consent_ledger(Credentials::new(
            &self.token(tenant, "registrar-1", &["registrar"]),
            "consent_management",
        ))
        .record_consent(RecordConsentRequest {
            subject: Some(tutela_proto::common::SubjectRef {
                subject_id: subject.into(),
            }),
            purpose: purpose as i32,
            recipient: recipient.into(),
            evidence: Some(ConsentEvidence {
                method: ConsentMethod::Paper as i32,
                wording_version: "consent-form-2026-09".into(),
                wording_sha256: "a".repeat(64),
                evidence_reference: "signed form in the learner file".into(),
                actor: ConsentActor::Subject as i32,
                guardian: None,
            }),
            ..Default::default()
        })
        .await
        .map(|_| ())
    }

    /// Creates `request` as `tenant`'s dpo and activates it; the agreement's id.
    pub async fn agreement_in_force(
        &self,
        tenant: &str,
        request: tutela_proto::sharing::CreateAgreementRequest,
    ) -> Result<String, tonic::Status> {
        let mut agreements = self.agreements(Credentials::new(
            &self.token(tenant, "dpo-1", &["dpo"]),
            "legal_obligation",
        ));
        let agreement_id = agreements
            .create_agreement(request)
            .await?
            .into_inner()
            .agreement
            .map(|a| a.agreement_id)
            .ok_or_else(|| tonic::Status::internal("CreateAgreement answered no agreement"))?;
        agreements
            .activate_agreement(tutela_proto::sharing::ActivateAgreementRequest {
                agreement_id: agreement_id.clone(),
            })
            .await?;
        Ok(agreement_id)
    }

    /// The registrar of `tenant`, for course administration.
    fn registrar(&self, tenant: &str) -> Credentials {
        Credentials::new(
            &self.token(tenant, "registrar-1", &["registrar"]),
            "course_administration",
        )
    }

    /// A `tutela.enrolment.v1.LearnerService` client sending `credentials`.
    pub fn learners(&self, credentials: Credentials) -> LearnerServiceClient<Authed> {
        LearnerServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.enrolment.v1.CourseService` client sending `credentials`.
    pub fn courses(&self, credentials: Credentials) -> CourseServiceClient<Authed> {
        CourseServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.enrolment.v1.EnrolmentService` client sending `credentials`.
    pub fn enrolments(&self, credentials: Credentials) -> EnrolmentServiceClient<Authed> {
        EnrolmentServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.enrolment.v1.LegalHoldService` client sending `credentials`.
    pub fn holds(&self, credentials: Credentials) -> LegalHoldServiceClient<Authed> {
        LegalHoldServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.enrolment.v1.CertificateService` client sending `credentials`.
    pub fn certificates(&self, credentials: Credentials) -> CertificateServiceClient<Authed> {
        CertificateServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.enrolment.v1.FeedbackService` client sending `credentials`.
    pub fn feedback(&self, credentials: Credentials) -> FeedbackServiceClient<Authed> {
        FeedbackServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.sharing.v1.PartnerService` client sending `credentials`.
    pub fn partners(&self, credentials: Credentials) -> PartnerServiceClient<Authed> {
        PartnerServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.sharing.v1.AgreementService` client sending `credentials`.
    pub fn agreements(&self, credentials: Credentials) -> AgreementServiceClient<Authed> {
        AgreementServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.sharing.v1.DisclosureService` client sending `credentials`.
    pub fn disclosures(&self, credentials: Credentials) -> DisclosureServiceClient<Authed> {
        DisclosureServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.sharing.v1.NoticeService` client sending `credentials`.
    pub fn notices(&self, credentials: Credentials) -> NoticeServiceClient<Authed> {
        NoticeServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// `service`'s part of `subject`'s access export (tenant `tenant`), as the tenant's dpo
    /// handles the request: the requester's identity verified first, then the export.
    pub async fn service_export(
        &self,
        tenant: &str,
        subject: &str,
        service: &str,
    ) -> Result<serde_json::Value, tonic::Status> {
        use tutela_proto::common::SubjectRef;
        use tutela_proto::privacy::{
            ExportSubjectRequest, RecordIdentityVerificationRequest, VerificationMethod,
        };
        let dpo = || Credentials::new(&self.token(tenant, "dpo-1", &["dpo"]), "subject_rights");
        let subject = || {
            Some(SubjectRef {
                subject_id: subject.into(),
            })
        };
        self.subject_data(dpo())
            .record_identity_verification(RecordIdentityVerificationRequest {
                subject: subject(),
                method: VerificationMethod::PhotoIdInPerson as i32,
                evidence_reference: "front desk note".into(),
            })
            .await?;
        let exports = self
            .subject_data(dpo())
            .export_subject(ExportSubjectRequest {
                subject: subject(),
                services: vec![service.into()],
            })
            .await?
            .into_inner()
            .exports;
        let document = exports
            .first()
            .map(|e| e.document.as_slice())
            .unwrap_or_default();
        serde_json::from_slice(document)
            .map_err(|e| tonic::Status::internal(format!("the export is not JSON: {e}")))
    }

    /// A `tutela.survey.v1.SurveyService` client sending `credentials`.
    pub fn surveys(&self, credentials: Credentials) -> SurveyServiceClient<Authed> {
        SurveyServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.survey.v1.ReleaseService` client sending `credentials`.
    pub fn releases(&self, credentials: Credentials) -> ReleaseServiceClient<Authed> {
        ReleaseServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.survey.v1.ResponseService` client sending `credentials`.
    pub fn responses(&self, credentials: Credentials) -> ResponseServiceClient<Authed> {
        ResponseServiceClient::with_interceptor(self.channel(), credentials)
    }

    /// A `tutela.rights.v1.RightsRequestService` client sending `credentials`.
    pub fn rights(
        &self,
        credentials: Credentials,
    ) -> tutela_proto::rights::rights_request_service_client::RightsRequestServiceClient<Authed>
    {
        tutela_proto::rights::rights_request_service_client::RightsRequestServiceClient::with_interceptor(
            self.channel(),
            credentials,
        )
    }

    /// Signals shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns how the server ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        match self.handle.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestSuite {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// The ErrorInfo reason of `status` (e.g. `CONSENT_REQUIRED`); empty without one.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The fields `status`'s BadRequest names, in its order; empty without one.
pub fn fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Installs, for a benchmark, the logging a deployment runs (`tutela serve` with JSON logs for a
/// collector at the default `info` filter; `RUST_LOG` overrides it) writing to a sink, so the
/// figures include what logging costs in production. Call it first: otherwise the first test
/// database installs the tests' capture, which formats every debug event and span of every
/// crate and would be measured instead.
pub fn bench_logging() {
    // Held for the process's life: with OTLP requested, dropping it would stop the export.
    static TELEMETRY: std::sync::OnceLock<Option<tutela_telemetry::Telemetry>> =
        std::sync::OnceLock::new();
    TELEMETRY.get_or_init(|| {
        tutela_telemetry::init_to(
            "tutela-bench",
            tutela_telemetry::LogFormat::Json,
            "info",
            std::io::sink,
        )
        .ok()
    });
}

/// A learner's profile, different for every `n`: a value in every category a registrar may
/// write, as an enrolment form fills it. The benches' load; no real person's data.
pub fn sample_profile(n: u64) -> tutela_proto::enrolment::LearnerProfile {
    tutela_proto::enrolment::LearnerProfile {
        given_name: format!("Given{n}"),
        family_name: format!("Family{n}"),
        email: format!("learner{n}@example.org"),
        phone: "+44 20 7946 0000".into(),
        postcode: "SW1A 2AA".into(),
        date_of_birth: "1990-01-01".into(),
        country: "GB".into(),
        organisation: "Initech".into(),
        previous_qualifications: vec!["BTEC Level 3".into()],
        ethnicity: "prefer not to say".into(),
        ..Default::default()
    }
}

/// A result of `score` out of 100 for `enrolment` (passed from 50), assessed on 2026-09-21 by
/// `tutor-1`.
pub fn sample_result(enrolment: &str, score: f64) -> tutela_proto::enrolment::RecordResultRequest {
    tutela_proto::enrolment::RecordResultRequest {
        result: Some(tutela_proto::enrolment::AssessmentResult {
            enrolment_id: enrolment.into(),
            assessment: "Unit 4 written exam".into(),
            score,
            maximum: 100.0,
            passed: score >= 50.0,
            assessed_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            assessor: "tutor-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How a test reaches a server that speaks TLS, in the layout `tutela dev-certs` writes: the CA
/// is `ca.pem` beside the server's certificate, and, where the server asks for client
/// certificates, the client's are `client.pem` and `client-key.pem` there too. `None` for
/// plaintext.
pub fn client_tls(config: &Config) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let tls = &config.server.tls;
    if !tls.enabled() {
        return Ok(None);
    }
    let dir = tls
        .cert_file
        .parent()
        .ok_or_else(|| anyhow::anyhow!("server.tls.cert_file has no directory"))?;
    let mut client = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem"))?))
        .domain_name("localhost");
    if tls.client_certs != tutela::tls::ClientCerts::None {
        client = client.identity(Identity::from_pem(
            std::fs::read(dir.join("client.pem"))?,
            std::fs::read(dir.join("client-key.pem"))?,
        ));
    }
    Ok(Some(client))
}

fn client_endpoint(config: &Config, addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(match client_tls(config)? {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    })
}
