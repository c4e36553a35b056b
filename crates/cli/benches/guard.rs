//! Benchmarks of the guard, with the figures issue notes report:
//!
//! 1. the guard's whole decision per call (token, purpose, register, Cedar with its cache),
//! 2. audit records per second through the batching writer (SQLite; PostgreSQL too when
//!    `TEST_DATABASE_URL` is set),
//! 3. a guarded, audited trivial RPC against the same RPC unguarded, over real gRPC on loopback.
//!
//! Run: `cargo bench -p tutela --bench guard` (add `TEST_DATABASE_URL=postgres://...` for
//! PostgreSQL). Timings are medians of what this machine does; they are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tutela_policy::audit::migration::AuditMigrator;
use tutela_policy::audit::{AuditKeys, AuditLog, AuditRecord, EventKind, Outcome};
use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::subject_data_server::{SubjectData, SubjectDataServer};
use tutela_proto::privacy::*;
use tutela_store::testing::TestDatabase;
use tutela_testkit::{Credentials, TestSuite};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench_decision(suite: &TestSuite) {
    let audit = AuditLog::detached(AuditKeys::from_secret(b"bench"));
    let guard = tutela::guard::build(
        suite.config(),
        audit,
        Arc::new(tutela::guard::load_register(suite.config()).unwrap()),
        Arc::new(tutela_policy::ConsentGate::without_ledger()),
    )
    .unwrap();
    let roles: [&[&str]; 3] = [&["dpo"], &["learner"], &["tutor"]];
    let tokens: Vec<http::HeaderMap> = roles
        .iter()
        .map(|r| {
            let mut h = http::HeaderMap::new();
            let t = suite.token("acme", "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77", r);
            h.insert("authorization", format!("Bearer {t}").parse().unwrap());
            h.insert("x-tutela-purpose", "subject_rights".parse().unwrap());
            h
        })
        .collect();
    let path = "/tutela.privacy.v1.SubjectData/DescribeSubject";
    // Warm the decision cache, as a running server's is.
    for h in &tokens {
        let _ = guard.check(path, h);
    }
    let n = 200_000;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let h = &tokens[i % tokens.len()];
        let start = Instant::now();
        let outcome = guard.check(path, h);
        samples.push(start.elapsed());
        std::hint::black_box(outcome.is_ok());
    }
    samples.sort();
    println!(
        "guard decision (token + purpose + register + Cedar, 11 categories, cached): p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs over {n} calls",
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        percentile(&samples, 0.999).as_secs_f64() * 1e6,
    );
    // The uncached evaluation, for comparison.
    let key = tutela_policy::DecisionKey {
        kind: tutela_policy::PrincipalKind::Staff,
        roles: vec!["dpo".into()],
        has_partner: false,
        rpc: "tutela.privacy.v1.SubjectData/DescribeSubject".into(),
        service: "privacy".into(),
        purpose: tutela_proto::common::Purpose::SubjectRights,
    };
    let rules = tutela_policy::AccessRules::default_rules().unwrap();
    let m = 2_000;
    let mut raw = Vec::with_capacity(m);
    for _ in 0..m {
        let start = Instant::now();
        std::hint::black_box(rules.evaluate(&key));
        raw.push(start.elapsed());
    }
    raw.sort();
    println!(
        "uncached Cedar evaluation (1 RPC + 11 category actions): p50 {:.1} µs, p99 {:.1} µs",
        percentile(&raw, 0.50).as_secs_f64() * 1e6,
        percentile(&raw, 0.99).as_secs_f64() * 1e6,
    );
}

async fn bench_audit(label: &str, db: TestDatabase) {
    let conn = db.connect().await.unwrap();
    tutela_store::migrate(
        &conn,
        &[tutela_store::migrations_of::<AuditMigrator>("audit")],
    )
    .await
    .unwrap();
    let log = AuditLog::start(
        conn,
        AuditKeys::from_secret(b"an audit secret of at least thirty-two bytes"),
        Arc::new(tutela_store::SystemClock),
    );
    let record = AuditRecord {
        at: log.now(),
        kind: EventKind::Access,
        tenant: "acme".into(),
        principal: "staff-1".into(),
        principal_kind: "staff".into(),
        roles: "registrar".into(),
        rpc: "tutela.enrolment.v1.EnrolmentService/GetLearner".into(),
        purpose: "course_administration".into(),
        subject: Some(log.keys().pseudonym("acme", "learner")),
        categories: "identity,contact".into(),
        decision: Outcome::Allow,
        reason: "registrar-reads-administrative-data".into(),
        trace_id: String::new(),
    };
    let (tasks, per_task) = (1024, 100);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let log = log.clone();
            let record = record.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    log.append(record.clone(), None).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    let total = tasks * per_task;
    println!(
        "audit writer on {label}: {total} records from {tasks} concurrent callers in {:.2} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

/// The same RPC with no guard: answers what the dispatcher answers with no providers.
struct Unguarded;

#[tonic::async_trait]
impl SubjectData for Unguarded {
    async fn describe_subject(
        &self,
        request: Request<DescribeSubjectRequest>,
    ) -> Result<Response<DescribeSubjectResponse>, Status> {
        let id = request
            .get_ref()
            .subject
            .as_ref()
            .map(|s| s.subject_id.as_str())
            .unwrap_or("");
        uuid::Uuid::parse_str(id).map_err(|_| Status::invalid_argument("subject"))?;
        Ok(Response::new(DescribeSubjectResponse {
            services: Vec::new(),
        }))
    }
    async fn export_subject(
        &self,
        _: Request<ExportSubjectRequest>,
    ) -> Result<Response<ExportSubjectResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn erase_subject(
        &self,
        _: Request<EraseSubjectRequest>,
    ) -> Result<Response<EraseSubjectResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn restrict_subject(
        &self,
        _: Request<RestrictSubjectRequest>,
    ) -> Result<Response<RestrictSubjectResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn record_identity_verification(
        &self,
        _: Request<RecordIdentityVerificationRequest>,
    ) -> Result<Response<RecordIdentityVerificationResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

async fn drive(channel: tonic::transport::Channel, credentials: Credentials, secs: u64) -> f64 {
    let in_flight = 64;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let request = DescribeSubjectRequest {
        subject: Some(SubjectRef {
            subject_id: "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77".into(),
        }),
        services: Vec::new(),
    };
    let start = Instant::now();
    let handles: Vec<_> = (0..in_flight)
        .map(|_| {
            let mut client =
                tutela_proto::privacy::subject_data_client::SubjectDataClient::with_interceptor(
                    channel.clone(),
                    credentials.clone(),
                );
            let request = request.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < deadline {
                    client.describe_subject(request.clone()).await.unwrap();
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for h in handles {
        calls += h.await.unwrap();
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

async fn bench_rpc(suite: &TestSuite) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The same server settings as `tutela serve`, minus the guard.
    let s = &suite.config().server;
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(s.max_concurrent_streams)
            .timeout(Duration::from_secs(s.request_timeout_secs))
            .trace_fn(tutela_telemetry::server_span)
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                s.concurrency_limit,
            ))
            .add_service(SubjectDataServer::new(Unguarded))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let bare = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let creds = Credentials::new(&token, "subject_rights");
    // Warm up both, then measure alternately so that noise hits both alike.
    drive(bare.clone(), creds.clone(), 1).await;
    drive(suite.channel(), creds.clone(), 1).await;
    let (mut unguarded, mut guarded) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        unguarded.push(drive(bare.clone(), creds.clone(), 3).await);
        guarded.push(drive(suite.channel(), creds.clone(), 3).await);
    }
    unguarded.sort_by(f64::total_cmp);
    guarded.sort_by(f64::total_cmp);
    let (u, g) = (unguarded[1], guarded[1]);
    println!(
        "DescribeSubject over loopback, 64 in flight: unguarded {u:.0} calls/s, guarded + audited ({} database) {g:.0} calls/s = {:.0}%",
        suite.database().backend().name(),
        g / u * 100.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Only the subscription service: no SubjectData provider, so the guarded DescribeSubject
        // does what the unguarded one does, and the difference is the guard (token, purpose,
        // rules, restriction check through the consent cache, audit).
        let suite = TestSuite::start_with(|c| c.server.services = vec!["subscription".into()])
            .await
            .unwrap();
        bench_decision(&suite).await;
        bench_audit("SQLite", TestDatabase::sqlite().unwrap()).await;
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            bench_audit("PostgreSQL", TestDatabase::postgres(&url).await.unwrap()).await;
        }
        bench_rpc(&suite).await;
    });
}
