//! Every call is audited before it returns; the chain verifies; tampering is caught by
//! `tutela audit verify`; and calls fail closed when the log cannot be written.

use std::process::Command;

use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;
use tonic_types::StatusExt;
use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::DescribeSubjectRequest;
use tutela_testkit::{Credentials, TestSuite};

const SUBJECT: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";
const BIN: &str = env!("CARGO_BIN_EXE_tutela");

fn describe() -> DescribeSubjectRequest {
    tutela_store::testing::logs::personal(&[SUBJECT]);
    DescribeSubjectRequest {
        subject: Some(SubjectRef {
            subject_id: SUBJECT.to_owned(),
        }),
        services: Vec::new(),
    }
}

async fn exec(suite: &TestSuite, sql: &str) {
    let conn = suite.database().connect().await.unwrap();
    conn.execute_raw(Statement::from_string(
        conn.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap();
}

fn verify(suite: &TestSuite) -> std::process::Output {
    Command::new(BIN)
        .args(["audit", "verify", "--database-url", suite.database().url()])
        .env(
            "TUTELA_KEYS__AUDIT_KEY_FILE",
            &suite.config().keys.audit_key_file,
        )
        .output()
        .unwrap()
}

#[tokio::test]
async fn allowed_and_refused_calls_are_audited_without_the_subject_id() {
    let suite = TestSuite::start().await.unwrap();
    let dpo = suite.token("acme", "dpo-1", &["dpo"]);
    let tutor = suite.token("acme", "tutor-1", &["tutor"]);
    suite
        .subject_data(Credentials::new(&dpo, "subject_rights"))
        .describe_subject(describe())
        .await
        .unwrap();
    suite
        .subject_data(Credentials::new(&tutor, "subject_rights"))
        .describe_subject(describe())
        .await
        .unwrap_err();

    let conn = suite.database().connect().await.unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT kind, principal, subject, decision, reason FROM tutela_audit_log ORDER BY seq",
        ))
        .await
        .unwrap();
    let rows: Vec<(String, String, Option<String>, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "kind").unwrap(),
                r.try_get("", "principal").unwrap(),
                r.try_get("", "subject").unwrap(),
                r.try_get("", "decision").unwrap(),
                r.try_get("", "reason").unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let access = rows.iter().find(|r| r.0 == "access").unwrap();
    assert_eq!(access.1, "dpo-1");
    let pseudonym = access.2.clone().unwrap();
    assert!(pseudonym.starts_with("p_") && !pseudonym.contains(SUBJECT));
    // The access record carries the decision that allowed it.
    assert_eq!(
        (access.3.as_str(), access.4.as_str()),
        ("allow", "dpo-handles-rights-requests")
    );
    assert!(
        rows.iter()
            .any(|r| r.1 == "tutor-1" && r.3 == "deny" && r.4 == "ACCESS_DENIED")
    );
    // The subject's id appears nowhere in the log.
    assert!(!format!("{rows:?}").contains(SUBJECT));

    let out = verify(&suite);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact: 2 records"));
}

#[tokio::test]
async fn audit_verify_names_the_first_edited_record() {
    let suite = TestSuite::start().await.unwrap();
    let dpo = suite.token("acme", "dpo-1", &["dpo"]);
    for _ in 0..3 {
        suite
            .subject_data(Credentials::new(&dpo, "subject_rights"))
            .describe_subject(describe())
            .await
            .unwrap();
    }
    exec(
        &suite,
        "UPDATE tutela_audit_log SET principal = 'someone-else' WHERE seq = 2",
    )
    .await;
    let out = verify(&suite);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("record 2") && err.contains("edited"), "{err}");
}

#[tokio::test]
async fn calls_fail_closed_when_the_audit_log_cannot_be_written() {
    let suite = TestSuite::start().await.unwrap();
    let dpo = suite.token("acme", "dpo-1", &["dpo"]);
    let client = suite.subject_data(Credentials::new(&dpo, "subject_rights"));
    client.clone().describe_subject(describe()).await.unwrap();
    exec(&suite, "DROP TABLE tutela_audit_log").await;
    let err = client
        .clone()
        .describe_subject(describe())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "AUDIT_UNAVAILABLE"
    );
}

#[tokio::test]
async fn the_breach_question_lists_pseudonyms_and_only_the_dpo_resolves_them() {
    let suite = TestSuite::start().await.unwrap();
    let staff = suite.token("acme", "staff-7", &["dpo"]);
    let other = "5d0c1f8e-2b3a-4c4d-8e9f-a0b1c2d3e4f5";
    tutela_store::testing::logs::personal(&[SUBJECT, other]);
    for subject in [SUBJECT, other, SUBJECT] {
        suite
            .subject_data(Credentials::new(&staff, "subject_rights"))
            .describe_subject(DescribeSubjectRequest {
                subject: Some(SubjectRef {
                    subject_id: subject.to_owned(),
                }),
                services: Vec::new(),
            })
            .await
            .unwrap();
    }
    let accessed = |extra: &[&str]| {
        Command::new(BIN)
            .args([
                "audit",
                "accessed",
                "--json",
                "--tenant",
                "acme",
                "--principal",
                "staff-7",
            ])
            .args([
                "--from",
                "2000-01-01T00:00:00Z",
                "--to",
                "2100-01-01T00:00:00Z",
            ])
            .args(["--database-url", suite.database().url()])
            .args(extra)
            .env("TUTELA_AUTH_DEV_SECRET", tutela_testkit::DEV_SECRET)
            .output()
            .unwrap()
    };

    let out = accessed(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(SUBJECT) && !text.contains(other), "{text}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter()
            .map(|r| r["accesses"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );

    let tutor = suite.token("acme", "tutor-1", &["tutor"]);
    let out = accessed(&["--resolve", "--token", &tutor]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dpo token"));

    let dpo = suite.token("acme", "dpo-1", &["dpo"]);
    let out = accessed(&["--resolve", "--token", &dpo]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["subject_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = [SUBJECT, other];
    expected.sort_unstable();
    assert_eq!(ids, expected);
}
