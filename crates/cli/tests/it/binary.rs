//! The real `tutela` binary: SIGTERM with a call in flight, and command-line errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

const BIN: &str = env!("CARGO_BIN_EXE_tutela");

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

#[tokio::test]
async fn sigterm_lets_the_call_in_flight_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TUTELA_TELEMETRY__FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("TEST_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The bound address is in the "tutela serving" log line.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        if line.contains("tutela serving") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["fields"]["address"].as_str().unwrap().to_owned();
        }
    };
    let log_rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

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

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Still answered after SIGTERM, then closed by us.
    tx.send(list_services()).await.unwrap();
    replies.next().await.unwrap().unwrap();
    drop(tx);
    assert!(replies.next().await.is_none());

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let log = log_rest.join().unwrap().join("\n");
    assert!(log.contains("tutela stopped"), "{log}");
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
    let secret = "a-development-secret-for-this-test-0123456789";
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
