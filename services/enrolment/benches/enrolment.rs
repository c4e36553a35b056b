//! Benchmarks of the enrolment service over real gRPC on loopback, guard and audit on:
//!
//! 1. CreateLearner and GetLearner calls per second (SQLite; PostgreSQL when
//!    `TEST_DATABASE_URL` is set),
//! 2. the time to export a learner with 1,000 enrolments and 1,000 results (target <= 100 ms).
//!
//! Run: `cargo bench -p tutela-enrolment --bench enrolment`. Figures are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::{
    AssessmentResult, ChangeEnrolmentStatusRequest, Course, CreateCourseRequest,
    CreateLearnerRequest, EnrolLearnerRequest, EnrolmentStatus, GetLearnerRequest,
    RecordResultRequest,
};
use tutela_proto::privacy::{
    ExportSubjectRequest, RecordIdentityVerificationRequest, VerificationMethod,
};
use tutela_testkit::{Credentials, TestSuite};

const IN_FLIGHT: usize = 32;

fn subject(id: &str) -> Option<SubjectRef> {
    Some(SubjectRef {
        subject_id: id.to_owned(),
    })
}

/// Runs `calls` calls of `call` with `IN_FLIGHT` in flight; returns calls per second.
async fn throughput<F, Fut>(calls: usize, call: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    futures::stream::iter(0..calls)
        .map(call)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    calls as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    tutela_testkit::bench_logging();
    let suite = TestSuite::start().await.unwrap();
    let backend = suite.database().backend().name();
    let registrar = Credentials::new(
        &suite.token("acme", "registrar-1", &["registrar"]),
        "course_administration",
    );
    let learners = suite.learners(registrar.clone());

    let n = 2_000;
    let ids = std::sync::Mutex::new(Vec::with_capacity(n));
    let created = throughput(n, |i| {
        let mut client = learners.clone();
        let ids = &ids;
        async move {
            let learner = client
                .create_learner(CreateLearnerRequest {
                    profile: Some(tutela_testkit::sample_profile(i as u64)),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .learner
                .unwrap();
            ids.lock().unwrap().push(learner.learner_id);
        }
    })
    .await;
    let ids = ids.into_inner().unwrap();
    let read = throughput(n * 2, |i| {
        let mut client = learners.clone();
        let id = ids[i % ids.len()].clone();
        async move {
            client
                .get_learner(GetLearnerRequest {
                    learner: subject(&id),
                })
                .await
                .unwrap();
        }
    })
    .await;
    println!(
        "{backend}, {IN_FLIGHT} in flight: CreateLearner {created:.0} calls/s, GetLearner {read:.0} calls/s"
    );

    // One learner with 1,000 enrolments (one per course) and a result each.
    let records = 1_000;
    let learner = ids[0].clone();
    let courses = suite.courses(registrar.clone());
    let enrolments = suite.enrolments(registrar.clone());
    let tutor = suite.enrolments(Credentials::new(
        &suite.token("acme", "tutor-1", &["tutor"]),
        "course_administration",
    ));
    let setup = Instant::now();
    throughput(records, |i| {
        let mut courses = courses.clone();
        let mut enrolments = enrolments.clone();
        let mut tutor = tutor.clone();
        let learner = learner.clone();
        async move {
            let course_id = courses
                .create_course(CreateCourseRequest {
                    course: Some(Course {
                        code: format!("C-{i}"),
                        title: format!("Course {i}"),
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
            let enrolment_id = enrolments
                .enrol_learner(EnrolLearnerRequest {
                    learner: subject(&learner),
                    course_id,
                    status: EnrolmentStatus::Enrolled as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .enrolment
                .unwrap()
                .enrolment_id;
            enrolments
                .change_enrolment_status(ChangeEnrolmentStatusRequest {
                    enrolment_id: enrolment_id.clone(),
                    status: EnrolmentStatus::Started as i32,
                })
                .await
                .unwrap();
            tutor
                .record_result(RecordResultRequest {
                    result: Some(AssessmentResult {
                        enrolment_id,
                        assessment: "Final exam".into(),
                        score: 70.0,
                        maximum: 100.0,
                        passed: true,
                        assessed_at: Some(prost_types::Timestamp {
                            seconds: 1_790_000_000,
                            nanos: 0,
                        }),
                        assessor: "tutor-1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    })
    .await;
    let setup = setup.elapsed();

    let mut rights = suite.subject_data(Credentials::new(
        &suite.token("acme", "dpo-1", &["dpo"]),
        "subject_rights",
    ));
    // Exports are released only after a staff member checked the requester's identity.
    rights
        .record_identity_verification(RecordIdentityVerificationRequest {
            subject: subject(&learner),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "bench".into(),
        })
        .await
        .unwrap();
    let mut samples: Vec<Duration> = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let start = Instant::now();
        let export = rights
            .export_subject(ExportSubjectRequest {
                subject: subject(&learner),
                services: vec!["enrolment".into()],
            })
            .await
            .unwrap()
            .into_inner();
        samples.push(start.elapsed());
        size = export.exports[0].document.len();
    }
    samples.sort();
    println!(
        "{backend}: export of a learner with {records} enrolments and {records} results ({} KiB JSON): p50 {:.1} ms, max {:.1} ms over {} runs (setup {:.1} s)",
        size / 1024,
        samples[samples.len() / 2].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len(),
        setup.as_secs_f64()
    );
    suite.stop().await.unwrap();
}
