//! Benchmark of survey releases through the service, over real gRPC on loopback with the guard
//! and the audit on (SQLite; PostgreSQL when `TEST_DATABASE_URL` is set):
//!
//! 1. an AGGREGATE release over 100,000 responses (target <= 1 s);
//! 2. a DIFFERENTIALLY_PRIVATE release (Laplace, ε 1) over the same responses;
//!
//! each beside the same release made in memory by `tutela-anonymise` from the same answers, in
//! the same run: the difference is what the service adds (reading the responses with their key
//! rows in one statement, opening 100,000 data keys and sealed responses on every core, writing
//! the immutable record, and the budget's conditional update). Each is run three
//! times; the median is printed with its ratio to the in-memory release.
//!
//! Setup is not measured: one survey (a rating, a single choice, a number) in 10 cohorts,
//! InviteRespondents in pages of 1,000 and SubmitResponse 32 in flight, as the platform (a
//! `service` principal answering for the learner it names). `BENCH_RESPONSES=N` changes the
//! 100,000.
//!
//! Run: `cargo bench -p tutela-survey --bench releases`. Figures are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use tutela_anonymise::aggregate::{self, Rules};
use tutela_anonymise::dp::{self, Budget, DpRequest, MicroEpsilon, PicoDelta};
use tutela_proto::survey::{
    Answer, CreateReleaseRequest, CreateSurveyRequest, DifferentiallyPrivateParameters,
    InviteRespondentsRequest, Invitee, PrivacyBudget, Question, QuestionKind, ReleaseForm,
    SubmitResponseRequest, Survey, answer,
};
use tutela_testkit::{Credentials, TestSuite};

/// SubmitResponse calls in flight during setup.
const IN_FLIGHT: usize = 32;
/// Cohorts the respondents are spread over.
const COHORTS: usize = 10;
/// The target for an aggregate release over 100,000 responses.
const AGGREGATE_TARGET_SECS: f64 = 1.0;
const RUNS: usize = 3;

/// The answers of respondent `i`: cohort, rating (1–5), choice (of 4), hours (0–40).
fn answers_of(i: usize) -> (String, u32, u32, f64) {
    (
        format!("cohort-{:02}", i % COHORTS),
        1 + (i * 7 % 5) as u32,
        (i * 3 % 4) as u32,
        (i % 41) as f64,
    )
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            question_id: "overall".into(),
            text: "Overall, how was the course?".into(),
            kind: QuestionKind::Rating as i32,
            scale_points: 5,
            ..Default::default()
        },
        Question {
            question_id: "track".into(),
            text: "Which track did you take?".into(),
            kind: QuestionKind::SingleChoice as i32,
            options: vec!["A".into(), "B".into(), "C".into(), "D".into()],
            ..Default::default()
        },
        Question {
            question_id: "hours".into(),
            text: "Hours of study a week".into(),
            kind: QuestionKind::Number as i32,
            min: 0.0,
            max: 40.0,
            ..Default::default()
        },
    ]
}

/// The same survey and answers as the anonymiser takes them.
fn in_memory(n: usize) -> (Vec<aggregate::Question>, Vec<aggregate::Response>) {
    use aggregate::{Answer as A, QuestionKind as K};
    let qs = vec![
        aggregate::Question {
            id: "overall".into(),
            kind: K::Rating { scale: 5 },
        },
        aggregate::Question {
            id: "track".into(),
            kind: K::SingleChoice { options: 4 },
        },
        aggregate::Question {
            id: "hours".into(),
            kind: K::Number {
                min: 0.0,
                max: 40.0,
            },
        },
    ];
    let responses = (0..n)
        .map(|i| {
            let (cohort, rating, choice, hours) = answers_of(i);
            aggregate::Response {
                cohort,
                answers: vec![
                    Some(A::Rating(rating as u16)),
                    Some(A::Choice(choice as u16)),
                    Some(A::Number(hours)),
                ],
            }
        })
        .collect();
    (qs, responses)
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_RESPONSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let suite = TestSuite::start().await.unwrap();
    let tutor = Credentials::new(
        &suite.token("acme", "tutor-1", &["tutor"]),
        "quality_assurance",
    );
    let platform = Credentials::new(
        &suite.token("acme", "platform-1", &["service"]),
        "quality_assurance",
    );
    let survey = suite
        .surveys(tutor.clone())
        .create_survey(CreateSurveyRequest {
            survey: Some(Survey {
                course_id: uuid::Uuid::new_v4().to_string(),
                title: "Release benchmark".into(),
                questions: questions(),
                privacy_budget: Some(PrivacyBudget {
                    epsilon: 100.0,
                    delta: 0.0,
                }),
                ..Default::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    let survey_id = survey.survey_id;

    let setup = Instant::now();
    let learners: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for (page, chunk) in learners.chunks(1000).enumerate() {
        suite
            .responses(tutor.clone())
            .invite_respondents(InviteRespondentsRequest {
                survey_id: survey_id.clone(),
                invitees: chunk
                    .iter()
                    .enumerate()
                    .map(|(j, l)| Invitee {
                        learner_id: l.clone(),
                        cohort: answers_of(page * 1000 + j).0,
                    })
                    .collect(),
            })
            .await
            .unwrap();
    }
    let client = suite.responses(platform);
    futures::stream::iter(learners.iter().enumerate())
        .map(|(i, learner)| {
            let mut client = client.clone();
            let survey_id = survey_id.clone();
            async move {
                let (_, rating, choice, hours) = answers_of(i);
                client
                    .submit_response(SubmitResponseRequest {
                        survey_id,
                        learner_id: learner.clone(),
                        answers: vec![
                            Answer {
                                question_id: "overall".into(),
                                value: Some(answer::Value::Rating(rating)),
                            },
                            Answer {
                                question_id: "track".into(),
                                value: Some(answer::Value::Choice(choice)),
                            },
                            Answer {
                                question_id: "hours".into(),
                                value: Some(answer::Value::Number(hours)),
                            },
                        ],
                    })
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let setup = setup.elapsed().as_secs_f64();
    println!(
        "releases: {n} responses in {COHORTS} cohorts submitted in {setup:.1} s ({:.0}/s, setup, not measured)",
        n as f64 / setup
    );

    let (qs, responses) = in_memory(n);
    let mut memory = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        std::hint::black_box(aggregate::release(&qs, &responses, &Rules::default()).unwrap());
        memory.push(start.elapsed());
    }
    let mut service = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        suite
            .releases(tutor.clone())
            .create_release(CreateReleaseRequest {
                survey_id: survey_id.clone(),
                recipient: "course_board".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        service.push(start.elapsed());
    }
    let (memory, service) = (median(memory), median(service));
    println!(
        "releases: AGGREGATE over {n}: service {service:.3} s (target <= {AGGREGATE_TARGET_SECS} s: {}), in memory {memory:.3} s, service / in memory x{:.1}",
        if service <= AGGREGATE_TARGET_SECS {
            "met"
        } else {
            "NOT met"
        },
        service / memory
    );

    let cohorts: Vec<String> = (0..COHORTS).map(|i| format!("cohort-{i:02}")).collect();
    let budget = Budget {
        epsilon_total: MicroEpsilon(100_000_000),
        delta_total: PicoDelta(0),
    };
    let mut memory = Vec::new();
    for _ in 0..RUNS {
        let request = DpRequest::laplace(MicroEpsilon(1_000_000), cohorts.clone(), 3);
        let start = Instant::now();
        std::hint::black_box(dp::release_dp(&qs, &responses, &request, &budget, &[]).unwrap());
        memory.push(start.elapsed());
    }
    let mut service = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        suite
            .releases(tutor.clone())
            .create_release(CreateReleaseRequest {
                survey_id: survey_id.clone(),
                form: ReleaseForm::DifferentiallyPrivate as i32,
                recipient: "public".into(),
                differentially_private: Some(DifferentiallyPrivateParameters {
                    epsilon: 1.0,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        service.push(start.elapsed());
    }
    let (memory, service) = (median(memory), median(service));
    println!(
        "releases: DIFFERENTIALLY_PRIVATE (Laplace, ε 1) over {n}: service {service:.3} s, in memory {memory:.3} s, service / in memory x{:.1}",
        service / memory
    );
    suite.stop().await.unwrap();
}
