//! `tutela serve --check`: the configuration check that the Kubernetes manifests run as an init
//! step and CI runs on every rendered Deployment.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tutela");

fn check(args: &[&str], env: &[(&str, &Path)], data_dir: &Path) -> Output {
    Command::new(BIN)
        .args(["serve", "--check", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("TEST_DATABASE_URL")
        .env_remove("PGPASSFILE")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_fresh_sqlite_setup_passes_and_the_check_generates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(&[], &[], dir.path());
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("services: enrolment, sharing, survey, subscription"),
        "{report}"
    );
    assert!(report.contains("guard: every RPC"), "{report}");
    assert!(report.contains("0 problem(s)"), "{report}");
    // serve would generate keys and a database here; the check leaves the directory as it was.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn every_problem_is_listed_at_once_and_the_exit_status_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.cedar");
    // Nothing listens on port 1: the check must not try to connect.
    let out = check(
        &[
            "--service",
            "enrolment",
            "--database-url",
            "postgres://tutela@127.0.0.1:1/tutela",
        ],
        &[("TUTELA_ACCESS__POLICIES_FILE", &missing)],
        dir.path(),
    );
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    for expected in [
        "keys.kek_file is required with PostgreSQL",
        "keys.audit_key_file is required with PostgreSQL",
        "missing.cedar",
        "no token verification key",
        "4 problems",
    ] {
        assert!(report.contains(expected), "{expected:?} in {report}");
    }
}

#[test]
fn a_service_on_its_own_with_mounted_files_passes_and_an_unusable_password_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kek = dir.path().join("kek");
    std::fs::write(
        &kek,
        "# current first\nk2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap();
    let audit = dir.path().join("audit-key");
    std::fs::write(&audit, "an-audit-key-of-at-least-32-characters\n").unwrap();
    let tokens = dir.path().join("consent-tokens");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(tokens.join("acme"), "a.service.token\n").unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, "db:5432:enrolment:enrolment:pw\n").unwrap();
    let set_mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(0o600);
    let env: Vec<(&str, &Path)> = vec![
        ("TUTELA_KEYS__KEK_FILE", &kek),
        ("TUTELA_KEYS__AUDIT_KEY_FILE", &audit),
        (
            "TUTELA_AUTH_DEV_SECRET",
            Path::new("0123456789abcdef0123456789abcdef"),
        ),
        (
            "TUTELA_CONSENT__LEDGER_ENDPOINT",
            Path::new("http://tutela-subscription:50051"),
        ),
        ("TUTELA_CONSENT__TOKEN_DIR", &tokens),
        ("PGPASSFILE", &pgpass),
    ];
    let args = [
        "--service",
        "enrolment",
        "--database-url",
        "postgres://enrolment@db:5432/enrolment",
    ];
    let out = check(&args, &env, &data);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("consent tokens: 1 tenant(s)"), "{report}");
    assert!(report.contains("0 problem(s), 0 warning(s)"), "{report}");

    // Group-readable, as a Kubernetes secret volume with an fsGroup makes it: the driver would
    // skip the file silently.
    set_mode(0o640);
    let out = check(&args, &env, &data);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("readable by group or others"), "{report}");
}
