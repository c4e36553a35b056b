use std::sync::Arc;

use chrono::DateTime;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tutela_policy::audit::migration::AuditMigrator;
use tutela_policy::audit::{
    AuditEvent, AuditKeys, AuditLog, Caller, Outcome, RECOVERED, Verification, recover, verify,
};
use tutela_policy::principal::{Audience, Claims};
use tutela_policy::{CategorySet, Principal, PrincipalKind};
use tutela_proto::common::DataCategory;
use tutela_store::testing::TestDatabase;
use tutela_store::{ManualClock, migrate, migrations_of};

pub(crate) async fn setup() -> (TestDatabase, DatabaseConnection, AuditLog, AuditKeys) {
    let (db, conn, keys) = fresh().await;
    let clock = Arc::new(ManualClock::new(
        DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
    ));
    let log = AuditLog::start(conn.clone(), keys.clone(), clock);
    (db, conn, log, keys)
}

fn record(log: &AuditLog, n: usize) -> AuditEvent {
    let subject = format!("learner-{n}");
    tutela_store::testing::logs::personal(&[&subject]);
    let staff = Principal::from_claims(Claims {
        iss: "tutela-test".into(),
        aud: Audience::One("tutela".into()),
        sub: "staff-1".into(),
        exp: 0,
        iat: 0,
        tenant: "acme".into(),
        kind: PrincipalKind::Staff,
        roles: vec!["registrar".into()],
        partner: None,
        wards: Vec::new(),
    })
    .unwrap();
    AuditEvent::SubjectAccess {
        caller: Caller::new(
            log.keys(),
            Some(&staff),
            "tutela.privacy.v1.SubjectData/ExportSubject",
            "subject_rights",
        ),
        subject: log.subject("acme", &subject),
        categories: CategorySet::of(&[DataCategory::Identity, DataCategory::Contact]),
        outcome: Outcome::Allow,
        reason: "dpo-handles-rights-requests".into(),
        write: false,
    }
}

async fn append_many(log: &AuditLog, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let r = record(&log, i);
                log.append(r).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

async fn exec(conn: &DatabaseConnection, sql: &str) {
    conn.execute_raw(Statement::from_string(
        conn.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn concurrent_appends_form_one_intact_chain() {
    let (_db, conn, log, keys) = setup().await;
    append_many(&log, 300).await;
    append_many(&log, 300).await;
    assert_eq!(
        verify(&conn, &keys).await.unwrap(),
        Verification::Intact { records: 600 }
    );
}

#[tokio::test]
async fn an_edited_record_is_caught() {
    let (_db, conn, log, keys) = setup().await;
    append_many(&log, 20).await;
    exec(
        &conn,
        "UPDATE tutela_audit_log SET purpose = 'marketing' WHERE seq = 7",
    )
    .await;
    match verify(&conn, &keys).await.unwrap() {
        Verification::Broken { seq, problem } => {
            assert_eq!(seq, 7);
            assert!(problem.contains("edited"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_deleted_record_is_caught() {
    let (_db, conn, log, keys) = setup().await;
    append_many(&log, 20).await;
    exec(&conn, "DELETE FROM tutela_audit_log WHERE seq = 11").await;
    match verify(&conn, &keys).await.unwrap() {
        Verification::Broken { seq, problem } => {
            assert_eq!(seq, 11);
            assert!(problem.contains("missing"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reordered_records_are_caught() {
    let (_db, conn, log, keys) = setup().await;
    append_many(&log, 20).await;
    // Swap records 5 and 6 by renumbering them.
    exec(&conn, "UPDATE tutela_audit_log SET seq = -5 WHERE seq = 5").await;
    exec(&conn, "UPDATE tutela_audit_log SET seq = 5 WHERE seq = 6").await;
    exec(&conn, "UPDATE tutela_audit_log SET seq = 6 WHERE seq = -5").await;
    match verify(&conn, &keys).await.unwrap() {
        Verification::Broken { seq, .. } => assert_eq!(seq, 5),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_truncated_tail_is_caught() {
    let (_db, conn, log, keys) = setup().await;
    append_many(&log, 20).await;
    exec(&conn, "DELETE FROM tutela_audit_log WHERE seq > 18").await;
    match verify(&conn, &keys).await.unwrap() {
        Verification::Broken { problem, .. } => assert!(problem.contains("head"), "{problem}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_record_forged_without_the_key_is_caught() {
    let (_db, conn, log, keys) = setup().await;
    append_many(&log, 5).await;
    let other = AuditKeys::from_secret(b"someone else's secret, also long enough");
    assert!(matches!(
        verify(&conn, &other).await.unwrap(),
        Verification::Broken { seq: 1, .. }
    ));
    assert_eq!(
        verify(&conn, &keys).await.unwrap(),
        Verification::Intact { records: 5 }
    );
}

#[tokio::test]
async fn appends_fail_closed_when_the_log_cannot_be_written() {
    let (_db, conn, log, _keys) = setup().await;
    append_many(&log, 3).await;
    exec(&conn, "DROP TABLE tutela_audit_log").await;
    let err = log.append(record(&log, 99)).await.unwrap_err();
    assert_eq!(err.reason(), "AUDIT_UNAVAILABLE");
}

#[tokio::test]
async fn pseudonyms_are_stable_keyed_and_not_the_id() {
    let keys = AuditKeys::from_secret(b"an audit secret of at least thirty-two bytes");
    let a = keys.pseudonym("acme", "learner-1");
    assert_eq!(a, keys.pseudonym("acme", "learner-1"));
    assert_ne!(a, keys.pseudonym("globex", "learner-1"));
    assert!(!a.contains("learner"));
    let other = AuditKeys::from_secret(b"another audit secret, also thirty-two bytes");
    assert_ne!(a, other.pseudonym("acme", "learner-1"));
    assert_eq!(format!("{keys:?}"), "AuditKeys([redacted])");
}

async fn fresh() -> (TestDatabase, DatabaseConnection, AuditKeys) {
    let db = TestDatabase::create().await.unwrap();
    let conn = db.connect().await.unwrap();
    migrate(&conn, &[migrations_of::<AuditMigrator>("audit")])
        .await
        .unwrap();
    let keys = AuditKeys::from_secret(b"an audit secret of at least thirty-two bytes");
    (db, conn, keys)
}

#[tokio::test]
async fn several_writers_on_a_fresh_database_form_one_chain() {
    let (db, conn, keys) = fresh().await;
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let mut logs = Vec::new();
    for _ in 0..3 {
        // Each with its own pool, as separate processes have.
        let own = db.connect().await.unwrap();
        logs.push(AuditLog::start(own, keys.clone(), clock.clone()));
    }
    let appends: Vec<_> = logs
        .iter()
        .flat_map(|log| (0..50).map(move |i| (log.clone(), i)))
        .map(|(log, i)| {
            tokio::spawn(async move {
                let r = record(&log, i);
                log.append(r).await
            })
        })
        .collect();
    for a in appends {
        a.await.unwrap().unwrap();
    }
    assert_eq!(
        verify(&conn, &keys).await.unwrap(),
        Verification::Intact { records: 150 }
    );
}

#[tokio::test]
async fn staged_records_of_interrupted_calls_are_recovered_once_and_marked() {
    use sea_orm::{ActiveValue::Set, EntityTrait};
    use tutela_policy::audit::entity::outbox;
    let (db, conn, keys) = fresh().await;
    let rows: Vec<outbox::ActiveModel> = (0..40)
        .map(|i| {
            let subject = format!("learner-{i}");
            tutela_store::testing::logs::personal(&[&subject]);
            outbox::ActiveModel {
                id: Set(uuid::Uuid::new_v4().to_string()),
                at: Set(chrono::Utc::now()),
                kind: Set("access".into()),
                tenant: Set("acme".into()),
                principal: Set("staff-1".into()),
                principal_kind: Set("staff".into()),
                roles: Set("registrar".into()),
                rpc: Set("tutela.enrolment.v1.LearnerService/CreateLearner".into()),
                purpose: Set("course_administration".into()),
                subject: Set(keys.pseudonym("acme", &subject)),
                subject_id: Set(subject),
                categories: Set("identity".into()),
                decision: Set("allow".into()),
                reason: Set("registrar-manages-learners".into()),
                trace_id: Set(String::new()),
            }
        })
        .collect();
    outbox::Entity::insert_many(rows)
        .exec_without_returning(&conn)
        .await
        .unwrap();
    // Two processes recover at once, each with its own pool.
    let (a, b) = (db.connect().await.unwrap(), db.connect().await.unwrap());
    let (x, y) = tokio::join!(recover(&a, &keys, None), recover(&b, &keys, None));
    assert_eq!(
        x.unwrap() + y.unwrap(),
        40,
        "each staged record chained once"
    );
    assert_eq!(
        verify(&conn, &keys).await.unwrap(),
        Verification::Intact { records: 40 }
    );
    assert!(
        outbox::Entity::find().all(&conn).await.unwrap().is_empty(),
        "the outbox is empty"
    );
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT reason FROM tutela_audit_log",
        ))
        .await
        .unwrap();
    for r in rows {
        let reason: String = r.try_get("", "reason").unwrap();
        assert_eq!(reason, format!("registrar-manages-learners{RECOVERED}"));
    }
    let resolved = tutela_policy::audit::resolve_pseudonyms(
        &conn,
        "acme",
        &[keys.pseudonym("acme", "learner-7")],
    )
    .await
    .unwrap();
    assert_eq!(
        resolved.values().next().map(String::as_str),
        Some("learner-7")
    );
}
