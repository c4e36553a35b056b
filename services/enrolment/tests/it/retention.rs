//! Legal holds, erasure that keeps only what a hold protects, and the retention sweeper run at
//! injected times.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;
use tutela_proto::enrolment::{
    EnrolmentStatus, GetLearnerRequest, HoldScope, ListLegalHoldsRequest, ListResultsRequest,
    PlaceLegalHoldRequest, ReleaseLegalHoldRequest,
};
use tutela_proto::privacy::{DescribeSubjectRequest, EraseSubjectRequest, ExportSubjectRequest};
use tutela_testkit::{Credentials, TestSuite};

use crate::learners::stored_in_plaintext;
use crate::records::{enrol, move_to, new_course, new_learner};
use crate::*;

/// A learner with a started enrolment and two results; returns (learner, [result ids]).
async fn learner_with_results(suite: &TestSuite) -> (String, Vec<String>) {
    let course_id = new_course(suite, "ENG-L3-2027").await;
    learner_on(suite, &course_id).await
}

/// A learner with a started enrolment on `course_id` and two results; returns (learner,
/// [result ids]).
async fn learner_on(suite: &TestSuite, course_id: &str) -> (String, Vec<String>) {
    let learner = new_learner(suite).await;
    let enrolment = enrol(suite, &learner, course_id).await;
    move_to(suite, &enrolment, EnrolmentStatus::Enrolled)
        .await
        .unwrap();
    move_to(suite, &enrolment, EnrolmentStatus::Started)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for score in [40.0, 80.0] {
        ids.push(
            suite
                .enrolments(staff(suite, "tutor", "course_administration"))
                .record_result(tutela_testkit::sample_result(&enrolment, score))
                .await
                .unwrap()
                .into_inner()
                .result
                .unwrap()
                .result_id,
        );
    }
    (learner, ids)
}

fn dpo(suite: &TestSuite, purpose: &str) -> Credentials {
    Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), purpose)
}

async fn hold(suite: &TestSuite, learner: &str, scope: HoldScope, record: &str) -> String {
    suite
        .holds(dpo(suite, "legal_obligation"))
        .place_legal_hold(PlaceLegalHoldRequest {
            learner: subject(learner),
            scope: scope as i32,
            record_id: record.into(),
            reason: "appeal case 2026/114".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap()
        .hold_id
}

async fn erase(suite: &TestSuite, learner: &str) -> tutela_proto::privacy::ServiceErasure {
    suite
        .subject_data(dpo(suite, "subject_rights"))
        .erase_subject(EraseSubjectRequest {
            subject: subject(learner),
            services: Vec::new(),
            reason: "erasure request".into(),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .services
        .remove(0)
}

async fn results_stored(suite: &TestSuite, learner: &str) -> i64 {
    let db = suite.database().connect().await.unwrap();
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "SELECT count(*) AS n FROM results WHERE learner_id = $1",
        _ => "SELECT count(*) AS n FROM results WHERE learner_id = ?",
    };
    db.query_one_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [learner.into()],
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get::<i64>("", "n")
    .unwrap()
}

#[tokio::test]
async fn erasure_destroys_the_profile_and_keeps_only_a_held_result() {
    let suite = TestSuite::start().await.unwrap();
    let (learner, results) = learner_with_results(&suite).await;
    hold(&suite, &learner, HoldScope::Result, &results[1]).await;
    let described = suite
        .subject_data(dpo(&suite, "subject_rights"))
        .describe_subject(DescribeSubjectRequest {
            subject: subject(&learner),
            services: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(described.services[0].legal_hold);

    let erased = erase(&suite, &learner).await;
    assert_eq!(erased.retained.len(), 1);
    assert_eq!(erased.retained[0].record_type, "result");
    assert_eq!(erased.retained[0].count, 1);
    assert_eq!(erased.retained[0].hold_reason, "appeal case 2026/114");
    for value in [EMAIL, GIVEN, FAMILY, DOB] {
        assert!(
            !stored_in_plaintext(&suite, value).await,
            "{value:?} survived"
        );
    }
    assert_eq!(
        results_stored(&suite, &learner).await,
        1,
        "the held result survives"
    );
    let err = suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .get_learner(GetLearnerRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn what_a_hold_keeps_after_erasure_stays_described_exported_and_its_holds_listed() {
    use tutela_proto::common::{DataCategory, Purpose};
    use tutela_proto::consent::{
        ConsentActor, ConsentEvidence, ConsentMethod, GetConsentStateRequest, RecordConsentRequest,
    };
    let suite = TestSuite::start().await.unwrap();
    let (learner, results) = learner_with_results(&suite).await;
    let cm = Credentials::new(
        &suite.token("acme", "staff-1", &["registrar"]),
        "consent_management",
    );
    let evidence_reference = tutela_store::testing::logs::personal_value("consent form 4471-b");
    suite
        .consent_ledger(cm.clone())
        .record_consent(RecordConsentRequest {
            subject: subject(&learner),
            purpose: Purpose::Marketing as i32,
            evidence: Some(ConsentEvidence {
                method: ConsentMethod::WebForm as i32,
                wording_version: "marketing-2026-03".into(),
                wording_sha256: "a".repeat(64),
                evidence_reference,
                actor: ConsentActor::Subject as i32,
                guardian: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let hold_id = hold(&suite, &learner, HoldScope::Result, &results[1]).await;
    erase(&suite, &learner).await;

    // The dpo still finds the hold in force that keeps the result.
    let holds = suite
        .holds(dpo(&suite, "legal_obligation"))
        .list_legal_holds(ListLegalHoldsRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap()
        .into_inner()
        .holds;
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].hold_id, hold_id);
    assert!(holds[0].released_at.is_none());

    // The person may ask for a copy of what is kept: their identity check is recorded...
    verify_identity(&suite, &learner).await;
    let mut rights = suite.subject_data(dpo(&suite, "subject_rights"));
    let described = rights
        .describe_subject(DescribeSubjectRequest {
            subject: subject(&learner),
            services: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    let exported = rights
        .export_subject(ExportSubjectRequest {
            subject: subject(&learner),
            services: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .exports;
    // ...and what DescribeSubject lists is what ExportSubject returns, service by service.
    assert_eq!(described.len(), exported.len());
    for (d, e) in described.iter().zip(&exported) {
        assert_eq!(d.service, e.service);
        let mut held = d.categories.clone();
        let mut sent = e.categories.clone();
        held.sort_unstable();
        sent.sort_unstable();
        assert_eq!(held, sent, "{}", d.service);
    }
    let of = |service: &str| exported.iter().find(|e| e.service == service).unwrap();
    let enrolment = of("enrolment");
    assert_eq!(enrolment.categories, [DataCategory::Assessment as i32]);
    assert!(
        described
            .iter()
            .any(|d| d.service == "enrolment" && d.legal_hold)
    );
    let document: serde_json::Value = serde_json::from_slice(&enrolment.document).unwrap();
    assert!(document.get("learner").is_none(), "{document}");
    assert_eq!(document["learner_erased"], true);
    assert_eq!(document["legal_hold_reasons"][0], "appeal case 2026/114");
    assert_eq!(document["results"].as_array().unwrap().len(), 1);
    assert_eq!(document["results"][0]["result_id"], results[1].as_str());
    assert!(document["enrolments"].as_array().unwrap().is_empty());
    let document: serde_json::Value = serde_json::from_slice(&of("subscription").document).unwrap();
    let history = document["consent_history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    // Shredded with the key: the export leaves the empty field out.
    assert!(history[0]["evidence"]["evidence_reference"].is_null());
    assert_eq!(
        history[0]["evidence"]["wording_version"],
        "marketing-2026-03"
    );

    // The consent history stays readable as evidence, and says the subject was erased.
    let state = suite
        .consent_ledger(cm)
        .get_consent_state(GetConsentStateRequest {
            subject: subject(&learner),
            purpose: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(state.subject_erased);
    assert_eq!(state.states.len(), 1);
    assert!(state.states[0].granted);
    assert!(state.identity_verified_at.is_some());

    // A learner who never was is still NOT_FOUND.
    let err = suite
        .holds(dpo(&suite, "legal_obligation"))
        .list_legal_holds(ListLegalHoldsRequest {
            learner: subject("6f0c1e2d-3b4a-4c5d-8e9f-0a1b2c3d4e5f"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_subject_erased_with_nothing_held_may_still_be_verified_and_gets_an_empty_export() {
    let suite = TestSuite::start().await.unwrap();
    let learner = new_learner(&suite).await;
    erase(&suite, &learner).await;
    verify_identity(&suite, &learner).await;
    let exported = suite
        .subject_data(dpo(&suite, "subject_rights"))
        .export_subject(ExportSubjectRequest {
            subject: subject(&learner),
            services: vec!["enrolment".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .exports;
    let document: serde_json::Value = serde_json::from_slice(&exported[0].document).unwrap();
    assert_eq!(
        document,
        serde_json::json!({ "service": "enrolment", "learner": null })
    );
    assert!(exported[0].categories.is_empty());
}

#[tokio::test]
async fn a_hold_on_the_whole_learner_keeps_everything_until_released() {
    let suite = TestSuite::start().await.unwrap();
    let (learner, _) = learner_with_results(&suite).await;
    let hold_id = hold(&suite, &learner, HoldScope::Learner, "").await;
    let erased = erase(&suite, &learner).await;
    assert_eq!(erased.records_erased, 0);
    assert_eq!(erased.retained[0].record_type, "learner");
    suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .get_learner(GetLearnerRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap();

    let mut holds = suite.holds(dpo(&suite, "legal_obligation"));
    holds
        .release_legal_hold(ReleaseLegalHoldRequest {
            hold_id: hold_id.clone(),
            reason: "appeal decided".into(),
        })
        .await
        .unwrap();
    let again = holds
        .release_legal_hold(ReleaseLegalHoldRequest {
            hold_id,
            reason: "twice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "HOLD_RELEASED");
    let listed = holds
        .list_legal_holds(ListLegalHoldsRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap()
        .into_inner()
        .holds;
    assert!(listed[0].released_at.is_some());
    let erased = erase(&suite, &learner).await;
    assert!(erased.retained.is_empty());
    assert_eq!(results_stored(&suite, &learner).await, 0);

    // Only the dpo places holds, and only for legal obligations.
    let err = suite
        .holds(staff(&suite, "registrar", "legal_obligation"))
        .list_legal_holds(ListLegalHoldsRequest {
            learner: subject(&learner),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// The suite's sweeper with the default register, reading the default page size.
async fn sweeper(suite: &TestSuite) -> tutela_enrolment::Sweeper {
    let db = suite.database().connect().await.unwrap();
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let learners = tutela_enrolment::Learners::new(
        db.clone(),
        Arc::new(tutela::keys::load_keyring(suite.config()).unwrap()),
        tutela::keys::load_audit_keys(suite.config()).unwrap(),
        clock,
    );
    tutela_enrolment::Sweeper::new(
        db.clone(),
        learners,
        tutela_enrolment::Holds::new(db),
        Arc::new(tutela_policy::Register::default_register().unwrap()),
    )
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[tokio::test]
async fn the_sweeper_removes_what_is_due_at_the_injected_time_and_skips_held_records() {
    let suite = TestSuite::start().await.unwrap();
    let (learner, results) = learner_with_results(&suite).await;
    let hold_id = hold(&suite, &learner, HoldScope::Result, &results[1]).await;

    let sweeper = sweeper(&suite).await;
    let none = &|_: &'static str, _: u64, _: u64| {};

    // The course ends on 2027-06-30; results are kept one year after that.
    let report = sweeper
        .sweep(at("2028-06-30T23:59:59Z"), false, none)
        .await
        .unwrap();
    assert_eq!(report, tutela_enrolment::SweepReport::default());

    let due = at("2028-07-01T00:00:00Z");
    let dry = sweeper.sweep(due, true, none).await.unwrap();
    assert_eq!(
        (dry.results, dry.held, dry.enrolments, dry.learners),
        (1, 1, 0, 0)
    );
    assert_eq!(
        results_stored(&suite, &learner).await,
        2,
        "a dry run removes nothing"
    );

    let report = sweeper.sweep(due, false, none).await.unwrap();
    assert_eq!(report, dry);
    let left = suite
        .enrolments(staff(&suite, "registrar", "course_administration"))
        .list_results(ListResultsRequest {
            learner: subject(&learner),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].result_id, results[1], "the held result stays");

    // Released, everything due goes: the result, the enrolment it kept, then the learner.
    suite
        .holds(dpo(&suite, "legal_obligation"))
        .release_legal_hold(ReleaseLegalHoldRequest {
            hold_id,
            reason: "appeal decided".into(),
        })
        .await
        .unwrap();
    let report = sweeper.sweep(due, false, none).await.unwrap();
    assert_eq!(
        (
            report.results,
            report.enrolments,
            report.learners,
            report.held
        ),
        (1, 1, 1, 0)
    );
    for value in [EMAIL, FAMILY, DOB] {
        assert!(
            !stored_in_plaintext(&suite, value).await,
            "{value:?} survived"
        );
    }
}

#[tokio::test]
async fn a_sweep_decides_the_same_whatever_its_page_size_and_a_dry_run_counts_what_a_real_one_removes()
 {
    let suite = TestSuite::start().await.unwrap();
    let course_id = new_course(&suite, "ENG-L3-2027").await;
    // One result held, nothing held, everything held.
    let (a, a_results) = learner_on(&suite, &course_id).await;
    let (b, _) = learner_on(&suite, &course_id).await;
    let (c, _) = learner_on(&suite, &course_id).await;
    hold(&suite, &a, HoldScope::Result, &a_results[1]).await;
    hold(&suite, &c, HoldScope::Learner, "").await;
    let none = &|_: &'static str, _: u64, _: u64| {};
    let due = at("2028-07-01T00:00:00Z");
    let whole = sweeper(&suite).await;
    let paged = sweeper(&suite).await.with_page_size(1);

    let dry = whole.sweep(due, true, none).await.unwrap();
    // a: one result goes, one is held and keeps the enrolment and the learner; b: everything
    // goes; c: both results and the enrolment are held.
    assert_eq!(
        dry,
        tutela_enrolment::SweepReport {
            results: 3,
            enrolments: 1,
            learners: 1,
            held: 4,
            ..Default::default()
        }
    );
    assert_eq!(paged.sweep(due, true, none).await.unwrap(), dry);
    assert_eq!(paged.sweep(due, false, none).await.unwrap(), dry);
    assert_eq!(
        [
            results_stored(&suite, &a).await,
            results_stored(&suite, &b).await,
            results_stored(&suite, &c).await
        ],
        [1, 0, 2]
    );
    // Nothing goes twice; what is held is still counted as held.
    assert_eq!(
        paged.sweep(due, false, none).await.unwrap(),
        tutela_enrolment::SweepReport {
            held: 4,
            ..Default::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_sweep_visits_each_row_once_while_rows_change_between_pages() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sea_orm::{ActiveModelTrait, EntityTrait, Set};
    use tutela_enrolment::outcomes::entity::feedback;

    let suite = TestSuite::start().await.unwrap();
    let db = suite.database().connect().await.unwrap();
    let (old, recent) = (at("2026-01-01T00:00:00Z"), at("2028-06-01T00:00:00Z"));
    let insert = |received_at: DateTime<Utc>| {
        let db = db.clone();
        async move {
            feedback::Entity::insert(feedback::ActiveModel {
                tenant: Set("acme".into()),
                feedback_id: Set(uuid::Uuid::new_v4().to_string()),
                learner_id: Set(uuid::Uuid::new_v4().to_string()),
                course_id: Set("course-1".into()),
                kind: Set("FEEDBACK_KIND_COMPLAINT".into()),
                sealed: Set(vec![0]),
                received_at: Set(received_at),
                recorded_by: Set("staff-1".into()),
                ..Default::default()
            })
            .exec(&db)
            .await
            .unwrap()
            .last_insert_id
        }
    };
    // Due (received long ago) but for three; pages of four rows.
    let mut seqs = Vec::new();
    for kept in [
        false, false, true, false, false, true, false, false, false, true, false, false, false,
    ] {
        seqs.push(insert(if kept { recent } else { old }).await);
    }
    let set_received = |seq: i64, received_at: DateTime<Utc>| {
        let db = db.clone();
        async move {
            feedback::ActiveModel {
                seq: Set(seq),
                received_at: Set(received_at),
                ..Default::default()
            }
            .update(&db)
            .await
            .unwrap();
        }
    };

    // Once the first page is swept: a due row ahead of the cursor is deleted, a kept row ahead
    // becomes due, a kept row behind it becomes due, and two due rows are added.
    let changed = AtomicBool::new(false);
    let calls = Mutex::new(Vec::new());
    let handle = tokio::runtime::Handle::current();
    let progress = |phase: &'static str, done: u64, total: u64| {
        if phase != "feedback" {
            return;
        }
        calls.lock().unwrap().push((done, total));
        if done == 4 && !changed.swap(true, Ordering::SeqCst) {
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    feedback::Entity::delete_by_id(seqs[12])
                        .exec(&db)
                        .await
                        .unwrap();
                    set_received(seqs[5], old).await;
                    set_received(seqs[2], old).await;
                    insert(old).await;
                    insert(old).await;
                })
            });
        }
    };
    let sweeper = sweeper(&suite).await.with_page_size(4);
    let due = at("2028-07-01T00:00:00Z");
    let report = sweeper.sweep(due, false, &progress).await.unwrap();
    assert!(changed.load(Ordering::SeqCst));
    // 10 due at the start, less the one deleted, plus the one made due ahead and the two added.
    assert_eq!(report.feedback, 12);
    assert_eq!(
        *calls.lock().unwrap(),
        [(0, 13), (4, 13), (8, 13), (12, 13), (14, 14)],
        "progress counts pages as they complete, against a count taken at the start"
    );
    // The row made due behind the cursor waits for the next sweep; the one kept stays.
    let report = sweeper.sweep(due, false, &|_, _, _| {}).await.unwrap();
    assert_eq!(report.feedback, 1);
    let left: Vec<i64> = feedback::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.seq)
        .collect();
    assert_eq!(left, [seqs[9]]);
}
