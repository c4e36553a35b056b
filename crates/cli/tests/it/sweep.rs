//! Sweeps between replicas: while another replica holds a sweep's lease, `serve` skips its
//! scheduled round and `tutela retention sweep` removes nothing and says so.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::binary::BIN;

const ELSEWHERE: &str = "replica-elsewhere/41/0f0f0f0f";
/// Every sweeper the default build schedules: the test holds all their leases elsewhere.
const SWEEPERS: [(&str, &str); 6] = [
    ("enrolment", "retention"),
    ("enrolment", "learner changes"),
    ("sharing", "recipient notices"),
    ("sharing", "webhook deliveries"),
    ("subscription", "delivery events"),
    ("rights", "rights requests"),
];

fn tutela(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("TEST_DATABASE_URL")
        .output()
        .unwrap()
}

async fn database(dir: &Path) -> DatabaseConnection {
    let url = format!("sqlite://{}?mode=rwc", dir.join("tutela.db").display());
    tutela_store::connect(&url, 1).await.unwrap()
}

async fn execute(db: &DatabaseConnection, sql: &str) {
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
}

async fn holders(db: &DatabaseConnection) -> Vec<String> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT holder FROM tutela_leases ORDER BY name",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get("", "holder").unwrap())
    .collect()
}

/// `serve`'s log lines until `count` of them contain `needle` (at most 20 s), then the process
/// is killed.
fn serve_until(dir: &Path, needle: &str, count: usize) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("TUTELA_TELEMETRY__FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("TEST_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut found = Vec::new();
    while found.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => found.push(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    found
}

#[tokio::test]
async fn while_another_replica_holds_the_sweep_leases_serve_skips_and_the_sweep_command_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = tutela(dir.path(), &["migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    let db = database(dir.path()).await;
    for (service, sweeper) in SWEEPERS {
        let lease = tutela::retention::lease_name(service, sweeper);
        execute(
            &db,
            &format!(
                "INSERT INTO tutela_leases (name, holder, expires_at) \
                 VALUES ('{lease}', '{ELSEWHERE}', 4000000000000)"
            ),
        )
        .await;
    }

    // `serve` sweeps at once on start: every scheduled sweep finds its lease held.
    let skipped = serve_until(dir.path(), "scheduled sweep skipped", SWEEPERS.len());
    assert_eq!(skipped.len(), SWEEPERS.len(), "{skipped:?}");
    for line in &skipped {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["fields"]["holder"], ELSEWHERE, "{line}");
    }
    assert_eq!(holders(&db).await, [ELSEWHERE; SWEEPERS.len()]);

    // The operator's sweep removes nothing, says who sweeps, and exits with 75 (EX_TEMPFAIL).
    let busy = tutela(dir.path(), &["retention", "sweep"]);
    assert_eq!(busy.status.code(), Some(75), "{busy:?}");
    let stderr = String::from_utf8(busy.stderr).unwrap();
    assert!(
        stderr.contains(&format!("another replica ({ELSEWHERE}) is sweeping")),
        "{stderr}"
    );
    assert!(busy.stdout.is_empty(), "nothing was reported as swept");
    // A dry run only counts: it needs no lease.
    let dry = tutela(dir.path(), &["retention", "sweep", "--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");

    // Once the other replica's leases lapse, the sweep takes them, and releases them when done.
    execute(&db, "UPDATE tutela_leases SET expires_at = 0").await;
    let swept = tutela(dir.path(), &["retention", "sweep"]);
    assert!(swept.status.success(), "{swept:?}");
    assert!(
        String::from_utf8(swept.stdout)
            .unwrap()
            .contains("removed 0 result(s)")
    );
    assert!(holders(&db).await.is_empty());
}
