//! Benchmark of an access request's bundle across the services, over real gRPC on loopback with
//! the guard and the audit on (SQLite; PostgreSQL when `TEST_DATABASE_URL` is set), for a
//! learner with 1,000 records (assessment results of one enrolment; `BENCH_RECORDS=N`):
//!
//! 1. `collect`: what the coordinator does for the request, ExportSubject of each of the five
//!    services (enrolment, sharing, survey, subscription, rights) as a `service` principal, all
//!    at once (sealing each under the subject's key, which the coordinator adds, is one
//!    AES-GCM pass over it and left out);
//! 2. `bundle`: DownloadAccessBundle of the completed request (opening the kept exports,
//!    the readable index, the manifest, the ZIP) as the dpo;
//! 3. `collect + bundle` against the target of <= 300 ms, and as a ratio to one bare
//!    ExportSubject of the enrolment service alone (the floor: the largest part, read once);
//! 4. for information, end to end through the coordinator: VerifyRequesterIdentity to the
//!    request COMPLETED, which adds the coordinator's schedule (`[rights] interval_secs`, 1 s
//!    here) to the work.
//!
//! Each is run five times; the median is printed. Setup (the learner, the course, the results)
//! is not measured. Run: `cargo bench -p tutela-rights --bench bundle`. Figures are printed,
//! never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::EnrolmentStatus;
use tutela_proto::privacy::{
    ExportSubjectRequest, RecordIdentityVerificationRequest, VerificationMethod,
};
use tutela_proto::rights::{
    DownloadAccessBundleRequest, GetRightsRequestRequest, Requester, RightsRequestKind,
    RightsRequestState, SubmitRightsRequestRequest, VerifyRequesterIdentityRequest,
};
use tutela_testkit::{Credentials, TestSuite};

const RUNS: usize = 5;
const TARGET_MS: f64 = 300.0;
const SERVICES: [&str; 5] = ["enrolment", "sharing", "survey", "subscription", "rights"];

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    tutela_testkit::bench_logging();
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let suite = TestSuite::start_with(|c| {
        c.sections
            .insert("rights".into(), serde_json::json!({ "interval_secs": 1 }));
    })
    .await
    .unwrap();
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    let service = Credentials::new(
        &suite.token("acme", "coordinator", &["service"]),
        "subject_rights",
    );
    let tutor = Credentials::new(
        &suite.token("acme", "tutor-1", &["tutor"]),
        "course_administration",
    );

    // Setup: one learner, one started enrolment, `records` results.
    let learner = suite
        .create_learners("acme", [tutela_testkit::sample_profile(1)], 1)
        .await
        .unwrap()
        .remove(0);
    let course = suite.create_course("acme", "BENCH-RIGHTS").await.unwrap();
    let enrolment = suite
        .enrol("acme", &learner, &course, EnrolmentStatus::Started)
        .await
        .unwrap();
    let started = Instant::now();
    futures::stream::iter(0..records)
        .map(|i| {
            let mut client = suite.enrolments(tutor.clone());
            let request = tutela_testkit::sample_result(&enrolment, (i % 101) as f64);
            async move { client.record_result(request).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    println!(
        "setup: {records} results recorded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let subject = || {
        Some(SubjectRef {
            subject_id: learner.clone(),
        })
    };
    suite
        .subject_data(dpo.clone())
        .record_identity_verification(RecordIdentityVerificationRequest {
            subject: subject(),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "bench".into(),
        })
        .await
        .unwrap();

    // The floor: the enrolment service's export alone.
    let mut floor = Vec::new();
    let mut size = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let exports = suite
            .subject_data(service.clone())
            .export_subject(ExportSubjectRequest {
                subject: subject(),
                services: vec!["enrolment".into()],
            })
            .await
            .unwrap()
            .into_inner()
            .exports;
        floor.push(t.elapsed());
        size = exports[0].document.len();
    }

    // 1. Collect: every service's export at once, as the coordinator's tasks run.
    let mut collect = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let parts = futures::future::join_all(SERVICES.iter().map(|s| {
            let mut client = suite.subject_data(service.clone());
            let request = ExportSubjectRequest {
                subject: subject(),
                services: vec![(*s).to_owned()],
            };
            async move { client.export_subject(request).await.unwrap() }
        }))
        .await;
        collect.push(t.elapsed());
        assert_eq!(parts.len(), SERVICES.len());
    }

    // 4. End to end, and a completed request to download.
    let mut rights = suite.rights(dpo.clone());
    let mut end_to_end = Vec::new();
    let mut request_id = String::new();
    for _ in 0..RUNS {
        let made = rights
            .submit_rights_request(SubmitRightsRequestRequest {
                subject: subject(),
                kind: RightsRequestKind::Access as i32,
                requester: Requester::Subject as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        let t = Instant::now();
        rights
            .verify_requester_identity(VerifyRequesterIdentityRequest {
                request_id: made.request_id.clone(),
                method: VerificationMethod::PhotoIdInPerson as i32,
                evidence_reference: "bench".into(),
            })
            .await
            .unwrap();
        loop {
            let r = rights
                .get_rights_request(GetRightsRequestRequest {
                    request_id: made.request_id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .request
                .unwrap();
            if r.state == RightsRequestState::Completed as i32 {
                break;
            }
            assert_ne!(
                r.state,
                RightsRequestState::PartiallyCompleted as i32,
                "{r:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        end_to_end.push(t.elapsed());
        request_id = made.request_id;
    }

    // 2. The bundle of a completed request.
    let mut bundle = Vec::new();
    let mut archive_bytes = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut stream = rights
            .download_access_bundle(DownloadAccessBundleRequest {
                request_id: request_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut bytes = 0;
        while let Some(chunk) = stream.next().await {
            bytes += chunk.unwrap().data.len();
        }
        bundle.push(t.elapsed());
        archive_bytes = bytes;
    }

    let (floor, collect, bundle, end_to_end) = (
        median(floor),
        median(collect),
        median(bundle),
        median(end_to_end),
    );
    let work = collect + bundle;
    println!(
        "learner with {records} records; enrolment export {size} bytes; bundle {archive_bytes} bytes"
    );
    println!(
        "enrolment ExportSubject alone (floor)   {:>8.1} ms",
        ms(floor)
    );
    println!(
        "collect: 5 services' exports at once    {:>8.1} ms",
        ms(collect)
    );
    println!(
        "bundle: DownloadAccessBundle           {:>8.1} ms",
        ms(bundle)
    );
    println!(
        "collect + bundle                        {:>8.1} ms  (target <= {TARGET_MS} ms: {}; {:.1}x the floor)",
        ms(work),
        if ms(work) <= TARGET_MS {
            "met"
        } else {
            "NOT met"
        },
        work.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "end to end via the coordinator          {:>8.1} ms  (verify -> completed, with its 1 s schedule)",
        ms(end_to_end)
    );
    suite.stop().await.unwrap();
}
