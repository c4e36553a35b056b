//! The real `tutela` binary: SIGTERM with a call in flight, and command-line errors.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

use tutela_policy::access::DEFAULT_POLICIES;
use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::DescribeSubjectRequest;
use tutela_proto::privacy::subject_data_client::SubjectDataClient;
use tutela_testkit::Credentials;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tutela");

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

/// `tutela serve` as a child process on a free port, with JSON logs on a channel.
pub(crate) struct Served {
    pub(crate) child: std::process::Child,
    pub(crate) addr: String,
    log: std::sync::mpsc::Receiver<String>,
}

pub(crate) fn serve(dir: &Path, env: &[(&str, &OsStr)]) -> Served {
    serve_with_stdout(dir, env, Stdio::null())
}

/// [`serve`], with standard output going to `stdout`.
pub(crate) fn serve_with_stdout(dir: &Path, env: &[(&str, &OsStr)], stdout: Stdio) -> Served {
    spawn(dir, &["serve", "--listen", "127.0.0.1:0"], env, stdout)
}

/// `tutela` with `args` (a `serve` command, e.g. with `--service`) on `dir`.
pub(crate) fn serve_args(dir: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> Served {
    spawn(dir, args, env, Stdio::null())
}

fn spawn(dir: &Path, args: &[&str], env: &[(&str, &OsStr)], stdout: Stdio) -> Served {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("TUTELA_TELEMETRY__FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("TEST_DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bound address is in the "tutela serving" log line.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        if line.contains("tutela serving") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["fields"]["listen"].as_str().unwrap().to_owned();
        }
    };
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Served { child, addr, log }
}

impl Served {
    /// Waits (up to 10 s) for a log line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within 10 s"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (up to 10 s) for a clean exit; returns the rest of the log.
    pub(crate) async fn stop(mut self) -> String {
        let sent = Instant::now();
        self.signal("TERM");
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "still running 10 s after SIGTERM"
            );
            // Async: the test's own client connections must keep running to see the GOAWAY.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = self.log.iter().collect::<Vec<_>>().join("\n");
        assert!(status.success(), "exit status {status}: {log}");
        log
    }
}

#[tokio::test]
async fn sigterm_lets_the_call_in_flight_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]);
    let addr = served.addr.clone();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(list_services()).await.unwrap();
    let mut replies = client
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    replies.next().await.unwrap().unwrap();

    served.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Still answered after SIGTERM, then closed by us.
    tx.send(list_services()).await.unwrap();
    replies.next().await.unwrap().unwrap();
    drop(tx);
    assert!(replies.next().await.is_none());

    let log = served.stop().await;
    assert!(log.contains("tutela stopped"), "{log}");
}

pub(crate) const SECRET: &str = "a-development-secret-for-this-test-0123456789";

/// A token of tenant `acme` for `subject` with `roles`, signed with [`SECRET`].
pub(crate) fn dev_token(subject: &str, roles: &[&str]) -> String {
    tutela_policy::principal::issue_hs256(
        &SECRET.into(),
        "tutela",
        "tutela",
        &tutela_policy::principal::TokenRequest {
            tenant: "acme".into(),
            subject: subject.into(),
            kind: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            partner: None,
            wards: Vec::new(),
            ttl: chrono::Duration::hours(1),
        },
        chrono::Utc::now(),
    )
    .unwrap()
}

#[tokio::test]
async fn sighup_reloads_the_access_policies_and_keeps_them_when_the_new_ones_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.cedar");
    let suspended = format!(
        "{DEFAULT_POLICIES}\n@id(\"test-dpo-suspended\")\nforbid (principal in Tutela::Role::\"dpo\", action, resource);\n"
    );
    std::fs::write(&policies, &suspended).unwrap();
    let served = serve(
        dir.path(),
        &[
            ("TUTELA_ACCESS__POLICIES_FILE", policies.as_os_str()),
            ("TUTELA_AUTH_DEV_SECRET", OsStr::new(SECRET)),
        ],
    );
    let token = dev_token("dpo-1", &["dpo"]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", served.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        SubjectDataClient::with_interceptor(channel, Credentials::new(&token, "subject_rights"));
    let describe = || DescribeSubjectRequest {
        subject: Some(SubjectRef {
            subject_id: "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77".into(),
        }),
        services: Vec::new(),
    };
    let err = client.describe_subject(describe()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The forbid lifted: allowed after the reload, with no decision of the old rules cached.
    std::fs::write(&policies, DEFAULT_POLICIES).unwrap();
    served.signal("HUP");
    served.wait_for("access policies reloaded");
    client.describe_subject(describe()).await.unwrap();

    // A file that does not validate is refused and the rules in force stay.
    std::fs::write(
        &policies,
        "permit (principal, action == Tutela::Action::\"no-such-action\", resource);",
    )
    .unwrap();
    served.signal("HUP");
    let line = served.wait_for("access policies not reloaded");
    assert!(line.contains("no-such-action"), "{line}");
    client.describe_subject(describe()).await.unwrap();
    served.stop().await;
}

#[test]
fn retention_sweep_reports_what_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    // The keys `serve` would have generated: the sweep never generates them.
    let kek = "dev-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    std::fs::write(dir.path().join("kek"), kek).unwrap();
    std::fs::write(
        dir.path().join("audit-key"),
        "an-audit-key-of-at-least-32-chars\n",
    )
    .unwrap();
    for (args, expected) in [
        (
            &["retention", "sweep", "--dry-run"][..],
            "would remove 0 result(s)",
        ),
        (&["retention", "sweep"][..], "removed 0 result(s)"),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("TEST_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains(expected), "{stdout}");
    }
}

/// `policies --matrix` is computed from the policies in force: the built-in ones by default,
/// an operator's file when configured (its own role appears, the defaults' grants are gone).
#[test]
fn policies_matrix_prints_what_the_policies_in_force_allow() {
    let out = Command::new(BIN)
        .args(["policies", "--matrix"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("ROLE"), "{table}");
    let dpo_describes = table.lines().any(|l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        cells.len() >= 4
            && cells[0] == "dpo"
            && cells[1] == "tutela.privacy.v1.SubjectData/DescribeSubject"
            && cells[2] == "subject_rights"
    });
    assert!(dpo_describes, "{table}");
    assert!(table.contains("SubscriptionService/Unsubscribe"), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.cedar");
    std::fs::write(
        &file,
        "@id(\"auditors-read-certificates\")\n\
         permit (principal in Tutela::Role::\"auditor\", \
         action == Tutela::Action::\"tutela.enrolment.v1.CertificateService/ListCertificates\", \
         resource) when { context.purpose == \"quality_assurance\" };",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["policies", "--matrix", "--format", "json"])
        .env("TUTELA_ACCESS__POLICIES_FILE", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let matrix: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed: Vec<&serde_json::Value> = matrix["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["allowed"] == true)
        .collect();
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    assert_eq!(allowed[0]["role"], "auditor");
    assert_eq!(
        allowed[0]["rpc"],
        "tutela.enrolment.v1.CertificateService/ListCertificates"
    );
    assert_eq!(allowed[0]["purpose"], "quality_assurance");
    assert_eq!(allowed[0]["policies"][0], "auditors-read-certificates");
    assert!(allowed[0]["readable"].as_array().is_some());
}

#[test]
fn policies_prints_the_rules_in_force_and_refuses_invalid_ones() {
    let out = Command::new(BIN).arg("policies").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), DEFAULT_POLICIES);
    let out = Command::new(BIN)
        .args(["policies", "--schema"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("entity Role")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.cedar");
    std::fs::write(
        &file,
        "permit (principal in Tutela::Role::\"tutor\", action, resource) when { context.mood == \"good\" };",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("policies")
        .env("TUTELA_ACCESS__POLICIES_FILE", &file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policies.cedar") && err.contains("mood"),
        "{err}"
    );
}

#[test]
fn an_unknown_service_name_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--service",
            "enrollment",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown service \"enrollment\""), "{err}");
}

#[test]
fn migrate_prepares_an_empty_database_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args(["migrate", "--data-dir"])
            .arg(dir.path())
            .env_remove("TEST_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("tutela.db").exists());
}

#[test]
fn register_prints_every_purpose_as_a_record_of_processing() {
    let out = Command::new(BIN).arg("register").output().unwrap();
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    for (_, purpose) in tutela_proto::PURPOSE_NAMES {
        assert!(md.contains(&format!("`{purpose}`")), "missing {purpose}");
    }
    let out = Command::new(BIN)
        .args(["register", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["purposes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["purpose"] == "exam_booking")
    );
}

#[test]
fn register_without_a_database_prints_the_register_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["register", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("`exam_booking`"), "{md}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recipients in force not shown"), "{err}");
    assert!(!dir.path().join("tutela.db").exists());

    // With a database, the section is there, saying no agreement is in force yet.
    let out = Command::new(BIN)
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["register", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("## Recipients in force"), "{md}");
    assert!(
        md.contains("No data-sharing agreement is in force."),
        "{md}"
    );
    let out = Command::new(BIN)
        .args(["register", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["recipients_in_force"], serde_json::json!([]));
}

#[test]
fn a_register_with_an_unknown_category_refuses_to_load_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("register.toml");
    let text = tutela_policy::register::DEFAULT_REGISTER.replacen(
        "\"survey_response\"",
        "\"survey_answers\"",
        1,
    );
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(BIN)
        .arg("register")
        .env("TUTELA_REGISTER__FILE", &file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .position(|l| l.contains("survey_answers"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("line {line}")), "{err}");
    assert!(err.contains("survey_answers"), "{err}");
}

#[test]
fn token_issue_prints_a_token_the_guard_accepts() {
    let secret = SECRET;
    let out = Command::new(BIN)
        .args([
            "token", "issue", "--tenant", "acme", "--role", "dpo", "--ttl", "15m",
        ])
        .env("TUTELA_AUTH_DEV_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    let verifier =
        tutela_policy::principal::TokenVerifier::new(&tutela_policy::principal::AuthSettings {
            issuer: "tutela".into(),
            audience: "tutela".into(),
            hs256_secret: Some(secret.into()),
            jwks: None,
            leeway_secs: 0,
        })
        .unwrap();
    let principal = verifier.verify(token).unwrap();
    assert_eq!(principal.tenant, "acme");
    assert_eq!(principal.roles, ["dpo"]);
}

/// `token issue` signs no token the guard would refuse as contradictory, and says why; it still
/// derives the kind from a kind's role.
#[test]
fn token_issue_refuses_roles_that_contradict_the_kind() {
    let issue = |args: &[&str]| {
        Command::new(BIN)
            .args(["token", "issue", "--tenant", "acme"])
            .args(args)
            .env("TUTELA_AUTH_DEV_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let ward = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    for args in [
        &["--role", "tutor", "--role", "learner"][..],
        &["--role", "learner", "--kind", "staff"],
        &["--role", "registrar", "--role", "guardian", "--ward", ward],
    ] {
        let out = issue(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to sign a contradictory"),
            "{args:?}: {err}"
        );
    }
    let out = issue(&["--role", "guardian", "--ward", ward]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
