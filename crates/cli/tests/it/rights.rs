//! Rights requests across a deployment of separate processes, through the real binary: one
//! `tutela serve --service X` per service, each on its own database, the consent ledger in the
//! subscription process, and the coordinator in the rights process reaching every service's
//! SubjectData endpoint at its configured address. The survey process is killed during an
//! erasure and started again, the coordinator's process is killed and started again: the
//! erasure completes, nothing is erased twice, and an access request afterwards brings every
//! service's part into one bundle. On SQLite, or on fresh PostgreSQL databases when
//! `TEST_DATABASE_URL` is set.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::time::{Duration, Instant};

use futures::StreamExt;
use secrecy::ExposeSecret;
use tonic::transport::{Channel, Endpoint};
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::course_service_client::CourseServiceClient;
use tutela_proto::enrolment::enrolment_service_client::EnrolmentServiceClient;
use tutela_proto::enrolment::learner_service_client::LearnerServiceClient;
use tutela_proto::enrolment::{
    Course, CreateCourseRequest, CreateLearnerRequest, EnrolLearnerRequest, LearnerProfile,
};
use tutela_proto::privacy::VerificationMethod;
use tutela_proto::rights::rights_request_service_client::RightsRequestServiceClient;
use tutela_proto::rights::{
    ApproveRightsRequestRequest, DownloadAccessBundleRequest, GetRightsRequestRequest, Requester,
    RightsRequest, RightsRequestKind, RightsRequestState, SubmitRightsRequestRequest, TaskState,
    VerifyRequesterIdentityRequest,
};
use tutela_store::testing::TestDatabase;
use tutela_testkit::Credentials;

use crate::binary::{SECRET, Served, dev_token, serve_args};

/// One process of the deployment: its data dir (keys, SQLite file), database, services and
/// address.
struct Process {
    dir: tempfile::TempDir,
    database: TestDatabase,
    services: Vec<&'static str>,
    env: Vec<(String, OsString)>,
    addr: String,
    served: Option<Served>,
}

impl Process {
    async fn new(services: &[&'static str], env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for file in ["kek", "audit-key"] {
            let key = tutela_store::Keyring::generate_base64().unwrap();
            let line = if file == "kek" {
                format!("k-1:{}", key.expose_secret())
            } else {
                key.expose_secret().to_owned()
            };
            std::fs::write(dir.path().join(file), line).unwrap();
        }
        // The token this process's calls to the consent ledger carry (a `service` of `acme`).
        let tokens = dir.path().join("consent-tokens");
        std::fs::create_dir(&tokens).unwrap();
        std::fs::write(tokens.join("acme"), service_token()).unwrap();
        let mut process = Self {
            database: TestDatabase::create().await.unwrap(),
            services: services.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
                .collect(),
            addr: "127.0.0.1:0".into(),
            served: None,
            dir,
        };
        process.start();
        process
    }

    /// Starts (again) on the same data dir, database and address.
    fn start(&mut self) {
        let mut vars: Vec<(String, OsString)> = vec![
            ("TUTELA_DATABASE__URL".into(), self.database.url().into()),
            (
                "TUTELA_KEYS__KEK_FILE".into(),
                self.dir.path().join("kek").into(),
            ),
            (
                "TUTELA_KEYS__AUDIT_KEY_FILE".into(),
                self.dir.path().join("audit-key").into(),
            ),
            ("TUTELA_AUTH_DEV_SECRET".into(), SECRET.into()),
        ];
        vars.extend(self.env.iter().cloned());
        let env: Vec<(&str, &OsStr)> = vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_os_str()))
            .collect();
        let mut args = vec!["serve", "--listen", self.addr.as_str()];
        for s in &self.services {
            args.extend(["--service", s]);
        }
        let served = serve_args(self.dir.path(), &args, &env);
        self.addr = served.addr.clone();
        self.served = Some(served);
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(served) = self.served.take() {
            served.kill();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `service` principal's token of `acme`, signed with [`SECRET`].
fn service_token() -> String {
    tutela_policy::principal::issue_hs256(
        &SECRET.into(),
        "tutela",
        "tutela",
        &tutela_policy::principal::TokenRequest {
            tenant: "acme".into(),
            subject: "tutela-service".into(),
            kind: Some(tutela_policy::PrincipalKind::Service),
            roles: vec!["service".into()],
            partner: None,
            wards: Vec::new(),
            ttl: chrono::Duration::hours(1),
        },
        chrono::Utc::now(),
    )
    .unwrap()
}

fn staff(roles: &[&str], purpose: &str) -> Credentials {
    Credentials::new(&dev_token(&format!("{}-1", roles[0]), roles), purpose)
}

async fn rights(p: &Process) -> RightsRequestServiceClient<tutela_testkit::Authed> {
    RightsRequestServiceClient::with_interceptor(
        p.channel().await,
        staff(&["dpo"], "subject_rights"),
    )
}

/// A learner enrolled on a course, in the enrolment process; their id.
async fn learner(enrolment: &Process, n: u32) -> String {
    let channel = enrolment.channel().await;
    let registrar = staff(&["registrar"], "course_administration");
    let id = LearnerServiceClient::with_interceptor(channel.clone(), registrar.clone())
        .create_learner(CreateLearnerRequest {
            profile: Some(LearnerProfile {
                given_name: format!("Given{n}"),
                family_name: "Apart".into(),
                email: format!("apart-{n}@example.org"),
                date_of_birth: "1990-04-01".into(),
                country: "GB".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .learner_id;
    let course = CourseServiceClient::with_interceptor(channel.clone(), registrar.clone())
        .create_course(CreateCourseRequest {
            course: Some(Course {
                code: format!("APART-{n}"),
                title: "Welding".into(),
                start_date: "2026-09-01".into(),
                end_date: "2027-06-30".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .course
        .unwrap()
        .course_id;
    EnrolmentServiceClient::with_interceptor(channel, registrar)
        .enrol_learner(EnrolLearnerRequest {
            learner: Some(SubjectRef {
                subject_id: id.clone(),
            }),
            course_id: course,
            ..Default::default()
        })
        .await
        .unwrap();
    id
}

async fn submit(p: &Process, subject: &str, kind: RightsRequestKind) -> String {
    let mut client = rights(p).await;
    let id = client
        .submit_rights_request(SubmitRightsRequestRequest {
            subject: Some(SubjectRef {
                subject_id: subject.into(),
            }),
            kind: kind as i32,
            requester: Requester::Subject as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .request_id;
    client
        .verify_requester_identity(VerifyRequesterIdentityRequest {
            request_id: id.clone(),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "front desk note".into(),
        })
        .await
        .unwrap();
    if kind == RightsRequestKind::Erasure {
        client
            .approve_rights_request(ApproveRightsRequestRequest {
                request_id: id.clone(),
            })
            .await
            .unwrap();
    }
    id
}

async fn wait_until(
    p: &Process,
    id: &str,
    what: &str,
    done: impl Fn(&RightsRequest) -> bool,
) -> RightsRequest {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let request = rights(p)
            .await
            .get_rights_request(GetRightsRequestRequest {
                request_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        if done(&request) {
            return request;
        }
        assert!(Instant::now() < deadline, "not {what} in 90 s: {request:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn task<'a>(r: &'a RightsRequest, service: &str) -> &'a tutela_proto::rights::RightsTask {
    r.tasks.iter().find(|t| t.service == service).unwrap()
}

#[tokio::test]
async fn requests_complete_across_separate_processes_through_a_stopped_service_and_coordinator() {
    // The ledger first: every other process reads consent from it.
    let subscription = Process::new(&["subscription"], &[]).await;
    let ledger = ("TUTELA_CONSENT__LEDGER_ENDPOINT", subscription.endpoint());
    let enrolment = Process::new(&["enrolment"], std::slice::from_ref(&ledger)).await;
    let sharing = Process::new(
        &["sharing"],
        &[
            ledger.clone(),
            ("TUTELA_SHARING__ENROLMENT_ENDPOINT", enrolment.endpoint()),
        ],
    )
    .await;
    let mut survey = Process::new(
        &["survey"],
        &[
            ledger.clone(),
            ("TUTELA_SURVEY__ENROLMENT_ENDPOINT", enrolment.endpoint()),
        ],
    )
    .await;
    let mut coordinator = Process::new(
        &["rights"],
        &[
            ledger.clone(),
            ("TUTELA_RIGHTS__ENROLMENT_ENDPOINT", enrolment.endpoint()),
            ("TUTELA_RIGHTS__SHARING_ENDPOINT", sharing.endpoint()),
            ("TUTELA_RIGHTS__SURVEY_ENDPOINT", survey.endpoint()),
            (
                "TUTELA_RIGHTS__SUBSCRIPTION_ENDPOINT",
                subscription.endpoint(),
            ),
            ("TUTELA_RIGHTS__INTERVAL_SECS", "1".into()),
            ("TUTELA_RIGHTS__RETRY_BASE_SECS", "1".into()),
        ],
    )
    .await;

    let me = learner(&enrolment, 1).await;
    let other = learner(&enrolment, 2).await;

    // The survey process is down when the erasure starts.
    survey.kill();
    let erasure = submit(&coordinator, &me, RightsRequestKind::Erasure).await;
    let waiting = wait_until(&coordinator, &erasure, "retrying the survey task", |r| {
        task(r, "survey").attempts >= 2 && task(r, "enrolment").state == TaskState::Done as i32
    })
    .await;
    assert_eq!(waiting.state, RightsRequestState::InProgress as i32);
    assert!(
        task(&waiting, "survey")
            .last_error
            .starts_with("Unavailable"),
        "{waiting:?}"
    );
    let enrolment_outcome = task(&waiting, "enrolment").outcome.clone();
    assert!(
        enrolment_outcome
            .as_ref()
            .and_then(|o| o.erasure.as_ref())
            .is_some_and(|e| e.records_erased >= 2),
        "{waiting:?}"
    );

    // The coordinator dies and comes back; so does the survey service.
    coordinator.kill();
    coordinator.start();
    survey.start();
    let done = wait_until(&coordinator, &erasure, "completed", |r| {
        r.state == RightsRequestState::Completed as i32
    })
    .await;
    for t in &done.tasks {
        assert_eq!(t.state, TaskState::Done as i32, "{t:?}");
        if t.service != "survey" {
            // Done once, before the restarts, and not again after them.
            assert_eq!(t.attempts, 1, "{t:?}");
        }
    }
    assert_eq!(task(&done, "enrolment").outcome, enrolment_outcome);

    // A rectification for the other learner, carried out in the enrolment process (which holds
    // the profile) and reported as not held by the others.
    let mut client = rights(&coordinator).await;
    let rectification = client
        .submit_rights_request(SubmitRightsRequestRequest {
            subject: Some(SubjectRef {
                subject_id: other.clone(),
            }),
            kind: RightsRequestKind::Rectification as i32,
            requester: Requester::Subject as i32,
            correction: Some(tutela_proto::rights::Correction {
                profile: Some(LearnerProfile {
                    family_name: "Rectified".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["family_name".into()],
                }),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .request_id;
    client
        .verify_requester_identity(VerifyRequesterIdentityRequest {
            request_id: rectification.clone(),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "front desk note".into(),
        })
        .await
        .unwrap();
    client
        .approve_rights_request(ApproveRightsRequestRequest {
            request_id: rectification.clone(),
        })
        .await
        .unwrap();
    let done = wait_until(&coordinator, &rectification, "completed", |r| {
        r.state == RightsRequestState::Completed as i32
    })
    .await;
    let report = |service: &str| {
        task(&done, service)
            .outcome
            .clone()
            .and_then(|o| o.rectification)
            .unwrap()
    };
    assert_eq!(report("enrolment").rectified, ["family_name"]);
    assert_eq!(report("sharing").not_held, ["family_name"]);

    // An access request for another learner afterwards: every service's part in the bundle.
    let access = submit(&coordinator, &other, RightsRequestKind::Access).await;
    let done = wait_until(&coordinator, &access, "completed", |r| {
        r.state == RightsRequestState::Completed as i32
    })
    .await;
    assert_eq!(done.tasks.len(), 5);
    let mut stream = rights(&coordinator)
        .await
        .download_access_bundle(DownloadAccessBundleRequest {
            request_id: access.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        archive.extend_from_slice(&chunk.unwrap().data);
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let mut manifest = String::new();
    zip.by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        manifest["incomplete"].as_array().map(Vec::len),
        Some(0),
        "{manifest}"
    );
    let mut enrolment_part = String::new();
    zip.by_name("services/enrolment.json")
        .unwrap()
        .read_to_string(&mut enrolment_part)
        .unwrap();
    let part: serde_json::Value = serde_json::from_str(&enrolment_part).unwrap();
    assert_eq!(part["data"]["learner"]["profile"]["given_name"], "Given2");
    assert_eq!(
        part["data"]["learner"]["profile"]["family_name"],
        "Rectified"
    );

    // The breach question across the deployment: who reached this learner, asked of every
    // process (each with its own log and pseudonym key), answered in ids, changes apart.
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let endpoints: Vec<String> = [&subscription, &enrolment, &sharing, &survey, &coordinator]
        .iter()
        .map(|p| p.endpoint())
        .collect();
    let mut args = vec![
        "audit".to_owned(),
        "who-accessed".into(),
        "--subject".into(),
        other.clone(),
        "--from".into(),
        from.clone(),
        "--to".into(),
        to.clone(),
        "--token".into(),
        dev_token("dpo-1", &["dpo"]),
    ];
    for e in &endpoints {
        args.extend(["--endpoint".to_owned(), e.clone()]);
    }
    let out = std::process::Command::new(crate::binary::BIN)
        .args(&args)
        .env_remove("TUTELA_CLI_TOKEN")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (changed, read) = table.split_once("\nread: ").unwrap();
    // The registrar created and enrolled the learner in the enrolment process...
    assert!(
        changed.lines().any(|l| l.contains(&enrolment.endpoint())
            && l.contains("registrar-1")
            && l.contains("LearnerService/CreateLearner")
            && l.contains(&other)),
        "{table}"
    );
    // ...and the coordinator read their data in every service for the access request.
    for e in &endpoints {
        assert!(
            read.lines()
                .any(|l| l.contains(e.as_str()) && l.contains("SubjectData/ExportSubject")),
            "no export at {e}: {table}"
        );
    }
    // The same from the principal's side, in one process.
    let out = std::process::Command::new(crate::binary::BIN)
        .args([
            "audit",
            "accessed",
            "--tenant",
            "acme",
            "--principal",
            "registrar-1",
            "--from",
            &from,
            "--to",
            &to,
            "--endpoint",
            &enrolment.endpoint(),
            "--token",
            &dev_token("dpo-1", &["dpo"]),
            "--json",
        ])
        .env_remove("TUTELA_CLI_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["subject"] == me.as_str() && l["kind"] == "write"),
        "{lines:?}"
    );
    drop((subscription, enrolment, sharing));
}

// Multi-threaded: the binary is waited for synchronously while this process serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_export_records_waits_and_writes_the_bundle_and_status_lists_the_request() {
    let suite = tutela_testkit::TestSuite::start_with(|c| {
        c.sections
            .insert("rights".into(), serde_json::json!({ "interval_secs": 1 }));
    })
    .await
    .unwrap();
    let ids = suite
        .create_learners("acme", [tutela_testkit::sample_profile(5)], 1)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle.zip");
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let endpoint = format!("http://{}", suite.addr());
    let tutela = |args: &[&str]| {
        std::process::Command::new(crate::binary::BIN)
            .args(args)
            .args(["--endpoint", &endpoint, "--token", &token])
            .env_remove("TUTELA_CLI_TOKEN")
            .output()
            .unwrap()
    };
    let run = tutela(&[
        "rights",
        "export",
        &ids[0],
        "--out",
        out.to_str().unwrap(),
        "--submit",
        "--method",
        "photo-id-in-person",
        "--evidence-reference",
        "desk note 12",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("bundle of"), "{stdout}");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut index = String::new();
    zip.by_name("index.html")
        .unwrap()
        .read_to_string(&mut index)
        .unwrap();
    assert!(
        index.contains("Given5"),
        "the profile is in the readable index"
    );

    // The file is never overwritten.
    let again = tutela(&["rights", "export", &ids[0], "--out", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let status = tutela(&["rights", "status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(table.contains("access"), "{table}");
    assert!(table.contains("completed"), "{table}");
    assert!(table.contains("5/5"), "{table}");
    let stuck = tutela(&["rights", "status", "--stuck"]);
    assert_eq!(
        String::from_utf8_lossy(&stuck.stdout),
        "no rights requests\n"
    );
}
