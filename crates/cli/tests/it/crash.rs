//! No effect without its audit record, even under `kill -9`: the real binary is killed while
//! several clients write, restarted, killed again; afterwards every stored learner, consent entry
//! and enrolment is explained by an audit record of its RPC about its subject, and the chain
//! verifies. And several processes on one fresh database chain their first records without
//! colliding. On SQLite, or on a fresh PostgreSQL database when `TEST_DATABASE_URL` is set.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::process::Command;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use secrecy::ExposeSecret;
use tonic::transport::{Channel, Endpoint};
use tutela_policy::audit::{AuditKeys, RECOVERED};
use tutela_proto::common::{Purpose, SubjectRef};
use tutela_proto::consent::consent_ledger_client::ConsentLedgerClient;
use tutela_proto::consent::{ConsentActor, ConsentEvidence, ConsentMethod, RecordConsentRequest};
use tutela_proto::enrolment::course_service_client::CourseServiceClient;
use tutela_proto::enrolment::enrolment_service_client::EnrolmentServiceClient;
use tutela_proto::enrolment::learner_service_client::LearnerServiceClient;
use tutela_proto::enrolment::{
    Course, CreateCourseRequest, CreateLearnerRequest, EnrolLearnerRequest, LearnerProfile,
};
use tutela_store::testing::TestDatabase;
use tutela_testkit::Credentials;

use crate::binary::{SECRET, Served, dev_token, serve};

const BIN: &str = env!("CARGO_BIN_EXE_tutela");
const CREATE: &str = "tutela.enrolment.v1.LearnerService/CreateLearner";
const CONSENT: &str = "tutela.consent.v1.ConsentLedger/RecordConsent";
const ENROL: &str = "tutela.enrolment.v1.EnrolmentService/EnrolLearner";

/// A data dir with real key files, and one database for every process started on it.
struct Deployment {
    dir: tempfile::TempDir,
    database: TestDatabase,
    audit_key: String,
}

impl Deployment {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kek = tutela_store::Keyring::generate_base64().unwrap();
        std::fs::write(
            dir.path().join("kek"),
            format!("crash-1:{}", kek.expose_secret()),
        )
        .unwrap();
        let audit_key = tutela_store::Keyring::generate_base64()
            .unwrap()
            .expose_secret()
            .to_owned();
        std::fs::write(dir.path().join("audit-key"), &audit_key).unwrap();
        Self {
            dir,
            database: TestDatabase::create().await.unwrap(),
            audit_key,
        }
    }

    fn vars(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("TUTELA_DATABASE__URL", self.database.url().into()),
            ("TUTELA_KEYS__KEK_FILE", self.dir.path().join("kek").into()),
            (
                "TUTELA_KEYS__AUDIT_KEY_FILE",
                self.dir.path().join("audit-key").into(),
            ),
            ("TUTELA_AUTH_DEV_SECRET", SECRET.into()),
        ]
    }

    /// `tutela serve` on this deployment.
    fn serve(&self) -> Served {
        let vars = self.vars();
        let env: Vec<(&str, &OsStr)> = vars.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        serve(self.dir.path(), &env)
    }

    async fn connect(&self) -> DatabaseConnection {
        self.database.connect().await.unwrap()
    }

    fn keys(&self) -> AuditKeys {
        AuditKeys::from_secret(self.audit_key.as_bytes())
    }

    /// `tutela audit verify` passes.
    fn verify(&self) {
        let vars = self.vars();
        let out = Command::new(BIN)
            .args(["audit", "verify", "--database-url", self.database.url()])
            .env_remove("TEST_DATABASE_URL")
            .envs(vars.iter().map(|(k, v)| (*k, v.as_os_str())))
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "audit verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The clients of one process, as a registrar.
#[derive(Clone)]
struct Clients {
    channel: Channel,
    token: String,
}

impl Clients {
    async fn of(served: &Served) -> Self {
        let channel = Endpoint::from_shared(format!("http://{}", served.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            channel,
            token: dev_token("registrar-1", &["registrar"]),
        }
    }

    fn credentials(&self, purpose: &str) -> Credentials {
        Credentials::new(&self.token, purpose)
    }

    async fn create_learner(&self, n: usize) -> Result<String, tonic::Status> {
        let profile = LearnerProfile {
            given_name: format!("Given{}", n % 97),
            family_name: "Crashtest".into(),
            email: format!("learner-{n}@example.org"),
            date_of_birth: "1990-04-01".into(),
            country: "GB".into(),
            ..Default::default()
        };
        let learner = LearnerServiceClient::with_interceptor(
            self.channel.clone(),
            self.credentials("course_administration"),
        )
        .create_learner(CreateLearnerRequest {
            profile: Some(profile),
            ..Default::default()
        })
        .await?
        .into_inner()
        .learner
        .ok_or_else(|| tonic::Status::internal("no learner"))?;
        Ok(learner.learner_id)
    }

    async fn record_consent(&self, subject: &str) -> Result<(), tonic::Status> {
        ConsentLedgerClient::with_interceptor(
            self.channel.clone(),
            self.credentials("consent_management"),
        )
        .record_consent(RecordConsentRequest {
            subject: Some(SubjectRef {
                subject_id: subject.to_owned(),
            }),
            purpose: Purpose::Marketing as i32,
            evidence: Some(ConsentEvidence {
                method: ConsentMethod::WebForm as i32,
                wording_version: "marketing-2026-03".into(),
                wording_sha256: "a".repeat(64),
                evidence_reference: "form 12".into(),
                actor: ConsentActor::Subject as i32,
                guardian: None,
            }),
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    async fn enrol(&self, learner: &str, course_id: &str) -> Result<(), tonic::Status> {
        EnrolmentServiceClient::with_interceptor(
            self.channel.clone(),
            self.credentials("course_administration"),
        )
        .enrol_learner(EnrolLearnerRequest {
            learner: Some(SubjectRef {
                subject_id: learner.to_owned(),
            }),
            course_id: course_id.to_owned(),
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    async fn create_course(&self) -> String {
        CourseServiceClient::with_interceptor(
            self.channel.clone(),
            self.credentials("course_administration"),
        )
        .create_course(CreateCourseRequest {
            course: Some(Course {
                code: "CRASH-1".into(),
                title: "Crash testing".into(),
                programme: "Engineering".into(),
                awarding_body: "Pearson".into(),
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
        .course_id
    }

    /// Writes learners, their consents and enrolments until a call fails (the process died).
    async fn write_until_killed(self, task: usize, course_id: String) {
        for i in 0.. {
            let n = task * 1_000_000 + i;
            let Ok(learner) = self.create_learner(n).await else {
                return;
            };
            if self.record_consent(&learner).await.is_err() {
                return;
            }
            if self.enrol(&learner, &course_id).await.is_err() {
                return;
            }
        }
    }
}

async fn pairs(db: &DatabaseConnection, sql: &str) -> Vec<(String, String)> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get_by_index(0).unwrap(),
                r.try_get_by_index(1).unwrap(),
            )
        })
        .collect()
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
}

/// Waits until the outbox is empty: what the killed processes left has been chained.
async fn outbox_drained(db: &DatabaseConnection) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(db, "SELECT COUNT(*) FROM tutela_audit_outbox").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the outbox still holds records 20 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_survives_kill_9_with_its_audit_record() {
    const ROUNDS: u64 = 5;
    const TASKS: usize = 8;
    let deployment = Deployment::new().await;
    let mut course_id = None;
    for round in 0..ROUNDS {
        let served = deployment.serve();
        let clients = Clients::of(&served).await;
        let course = match &course_id {
            Some(id) => String::clone(id),
            None => course_id.insert(clients.create_course().await).clone(),
        };
        let writers: Vec<_> = (0..TASKS)
            .map(|t| {
                let task = round as usize * TASKS + t;
                tokio::spawn(clients.clone().write_until_killed(task, course.clone()))
            })
            .collect();
        // Killed at a different point of the load each round.
        tokio::time::sleep(Duration::from_millis(700 + 170 * round)).await;
        served.kill();
        for w in writers {
            w.await.unwrap();
        }
    }
    // A last start chains what the last kill left; then a clean stop.
    let db = deployment.connect().await;
    let served = deployment.serve();
    outbox_drained(&db).await;
    served.stop().await;

    let keys = deployment.keys();
    let audited: HashSet<(String, String)> = pairs(
        &db,
        "SELECT rpc, subject FROM tutela_audit_log \
         WHERE kind = 'write' AND decision = 'allow' AND subject IS NOT NULL",
    )
    .await
    .into_iter()
    .collect();
    let mut unexplained = Vec::new();
    for (rpc, sql) in [
        (CREATE, "SELECT tenant, learner_id FROM learners"),
        (CONSENT, "SELECT tenant, subject_id FROM consent_entries"),
        (ENROL, "SELECT tenant, learner_id FROM enrolments"),
    ] {
        let rows = pairs(&db, sql).await;
        assert!(
            rows.len() > ROUNDS as usize,
            "{rpc}: only {} rows",
            rows.len()
        );
        let missing = rows
            .iter()
            .filter(|(tenant, id)| !audited.contains(&(rpc.to_owned(), keys.pseudonym(tenant, id))))
            .count();
        if missing > 0 {
            unexplained.push(format!("{missing} of {} rows of {rpc}", rows.len()));
        }
    }
    let recovered = count(
        &db,
        &format!(
            "SELECT COUNT(*) FROM tutela_audit_log WHERE reason LIKE '%{}'",
            RECOVERED.trim()
        ),
    )
    .await;
    eprintln!("records recovered from the outbox after the kills: {recovered}");
    assert!(
        unexplained.is_empty(),
        "stored without an audit record: {unexplained:?}"
    );
    deployment.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_fresh_database_chain_their_first_records_without_colliding() {
    const CALLS: usize = 8;
    let deployment = Deployment::new().await;
    // Started together, as three replicas of a first deploy are.
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let vars = deployment.vars();
            let dir = deployment.dir.path().to_owned();
            std::thread::spawn(move || {
                let env: Vec<(&str, &OsStr)> =
                    vars.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
                serve(&dir, &env)
            })
        })
        .collect();
    let processes: Vec<Served> = starts.into_iter().map(|s| s.join().unwrap()).collect();
    let mut clients = Vec::new();
    for p in &processes {
        clients.push(Clients::of(p).await);
    }
    // Every process's first audit batch at once.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(3 * CALLS));
    let calls: Vec<_> = clients
        .iter()
        .enumerate()
        .flat_map(|(p, c)| {
            let barrier = barrier.clone();
            (0..CALLS).map(move |i| {
                let (c, barrier) = (c.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    c.create_learner(p * 100 + i).await
                })
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    for p in processes {
        p.stop().await;
    }
    let db = deployment.connect().await;
    assert_eq!(
        count(
            &db,
            &format!("SELECT COUNT(*) FROM tutela_audit_log WHERE rpc = '{CREATE}'")
        )
        .await,
        3 * CALLS as i64
    );
    deployment.verify();
}
