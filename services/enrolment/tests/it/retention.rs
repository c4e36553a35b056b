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
use tutela_proto::privacy::{DescribeSubjectRequest, EraseSubjectRequest};
use tutela_testkit::{Credentials, TestSuite};

use crate::learners::stored_in_plaintext;
use crate::records::{enrol, move_to, new_course, new_learner, result};
use crate::*;

/// A learner with a started enrolment and two results; returns (learner, [result ids]).
async fn learner_with_results(suite: &TestSuite) -> (String, Vec<String>) {
    let course_id = new_course(suite, "ENG-L3-2027").await;
    let learner = new_learner(suite).await;
    let enrolment = enrol(suite, &learner, &course_id).await;
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
                .record_result(result(&enrolment, score))
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

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[tokio::test]
async fn the_sweeper_removes_what_is_due_at_the_injected_time_and_skips_held_records() {
    let suite = TestSuite::start().await.unwrap();
    let (learner, results) = learner_with_results(&suite).await;
    let hold_id = hold(&suite, &learner, HoldScope::Result, &results[1]).await;

    let db = suite.database().connect().await.unwrap();
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let learners = tutela_enrolment::Learners::new(
        db.clone(),
        Arc::new(tutela::keys::load_keyring(suite.config()).unwrap()),
        tutela::keys::load_audit_keys(suite.config()).unwrap(),
        clock,
    );
    let sweeper = tutela_enrolment::Sweeper::new(
        db.clone(),
        learners,
        tutela_enrolment::Holds::new(db.clone()),
        Arc::new(tutela_policy::Register::default_register().unwrap()),
    );
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
