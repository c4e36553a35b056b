//! Benchmarks of the guard, with the figures issue notes report:
//!
//! 1. the guard's whole decision per call (token, purpose, register, Cedar with its cache),
//! 2. audit records per second through the batching writer (SQLite; PostgreSQL too when
//!    `TEST_DATABASE_URL` is set),
//! 3. DescribeSubject (the subscription service's provider) guarded and audited against the same
//!    handler unguarded, and both against a bare tonic echo, over real gRPC on loopback with the
//!    same client, concurrency, server stack and database.
//!
//! Run: `cargo bench -p tutela --bench guard` (add `TEST_DATABASE_URL=postgres://...` for
//! PostgreSQL). Timings are medians of what this machine does; they are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic_prost::ProstCodec;
use tutela_policy::audit::migration::AuditMigrator;
use tutela_policy::audit::{AuditEvent, AuditKeys, AuditLog, Caller, Outcome};
use tutela_proto::common::SubjectRef;
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
    let staff = tutela_policy::Principal::from_claims(tutela_policy::principal::Claims {
        iss: "tutela-test".into(),
        aud: tutela_policy::principal::Audience::One("tutela".into()),
        sub: "staff-1".into(),
        exp: 0,
        iat: 0,
        tenant: "acme".into(),
        kind: tutela_policy::PrincipalKind::Staff,
        roles: vec!["registrar".into()],
        partner: None,
        wards: Vec::new(),
    })
    .unwrap();
    let record = AuditEvent::SubjectAccess {
        caller: Caller::new(
            log.keys(),
            Some(&staff),
            "tutela.enrolment.v1.EnrolmentService/GetLearner",
            "course_administration",
        ),
        subject: log.subject("acme", "learner"),
        categories: tutela_policy::CategorySet::of(&[
            tutela_proto::common::DataCategory::Identity,
            tutela_proto::common::DataCategory::Contact,
        ]),
        outcome: Outcome::Allow,
        reason: "registrar-reads-administrative-data".into(),
    };
    let (tasks, per_task) = (1024, 100);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let log = log.clone();
            let record = record.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    log.append(record.clone()).await.unwrap();
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

/// A bare tonic service on the same server stack: `/bench.Echo/Echo` answers with the request.
#[derive(Clone)]
struct Echo;

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "bench.Echo";
}

struct EchoUnary;

impl tonic::server::UnaryService<DescribeSubjectRequest> for EchoUnary {
    type Response = DescribeSubjectRequest;
    type Future = std::future::Ready<Result<tonic::Response<DescribeSubjectRequest>, Status>>;

    fn call(&mut self, request: tonic::Request<DescribeSubjectRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let codec = ProstCodec::<DescribeSubjectRequest, DescribeSubjectRequest>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(EchoUnary, request)
                .await)
        })
    }
}

const DESCRIBE: &str = "/tutela.privacy.v1.SubjectData/DescribeSubject";
const ECHO: &str = "/bench.Echo/Echo";

/// Calls per second of `path` (answering `R`) with 64 calls in flight on one connection, for
/// `secs`: the same client code for every server measured.
async fn drive<R>(
    address: SocketAddr,
    credentials: Credentials,
    path: &'static str,
    secs: u64,
) -> f64
where
    R: prost::Message + Default + Send + 'static,
{
    let in_flight = 64;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
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
            let mut client = tonic::client::Grpc::new(InterceptedService::new(
                channel.clone(),
                credentials.clone(),
            ));
            let request = request.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < deadline {
                    client.ready().await.unwrap();
                    client
                        .unary::<_, R, _>(
                            tonic::Request::new(request.clone()),
                            http::uri::PathAndQuery::from_static(path),
                            ProstCodec::default(),
                        )
                        .await
                        .unwrap();
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

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn bench_rpc(suite: &TestSuite) {
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let creds = Credentials::new(&token, "subject_rights");
    // The same handler without the guard: the same services assembled from the same
    // configuration and database, with the authorisation the guard grants this token made once
    // and attached to every call, where the guard checks token, purpose, register and rules,
    // and writes the audit records, on every call.
    let unguarded = tutela::server::assemble(suite.config()).await.unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert("x-tutela-purpose", "subject_rights".parse().unwrap());
    let Ok(tutela_policy::guard::Outcome::Authorized(authorized, _)) =
        unguarded.guard.check(DESCRIBE, &headers)
    else {
        panic!("the bench's token is not authorised for DescribeSubject");
    };
    // Both beside the suite, with `tutela serve`'s stack and settings.
    let settings = suite.config().server.clone();
    let (listener, unguarded_addr) = bind().await;
    tokio::spawn(tutela::server::serve(
        settings.clone(),
        unguarded.routes,
        tower::util::MapRequestLayer::new(move |mut request: http::Request<tonic::body::Body>| {
            request.extensions_mut().insert(authorized.clone());
            request
        }),
        listener,
        std::future::pending(),
    ));
    let (listener, echo) = bind().await;
    tokio::spawn(tutela::server::serve(
        settings,
        tonic::service::Routes::new(Echo),
        tower::layer::util::Identity::new(),
        listener,
        std::future::pending(),
    ));
    let unguarded = unguarded_addr;
    let guarded = suite.addr();

    // Warm up all three, then measure in turns so that noise hits them alike.
    drive::<DescribeSubjectRequest>(echo, creds.clone(), ECHO, 1).await;
    drive::<DescribeSubjectResponse>(unguarded, creds.clone(), DESCRIBE, 1).await;
    drive::<DescribeSubjectResponse>(guarded, creds.clone(), DESCRIBE, 1).await;
    let (mut e, mut u, mut g) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        e.push(drive::<DescribeSubjectRequest>(echo, creds.clone(), ECHO, 3).await);
        u.push(drive::<DescribeSubjectResponse>(unguarded, creds.clone(), DESCRIBE, 3).await);
        g.push(drive::<DescribeSubjectResponse>(guarded, creds.clone(), DESCRIBE, 3).await);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[1]
    };
    let (e, u, g) = (median(&mut e), median(&mut u), median(&mut g));
    println!(
        "over loopback, 64 calls in flight on one connection, same client and server stack ({} database):",
        suite.database().backend().name()
    );
    println!("  bare tonic echo                                  {e:>8.0} calls/s  100%");
    println!(
        "  DescribeSubject (subscription provider), no guard {u:>8.0} calls/s  {:>3.0}% of echo",
        u / e * 100.0
    );
    println!(
        "  DescribeSubject, guarded + audited                {g:>8.0} calls/s  {:>3.0}% of echo",
        g / e * 100.0
    );
    println!(
        "  the guard keeps {:.0}% of the unguarded handler's rate",
        g / u * 100.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Only the subscription service: DescribeSubject runs its provider, with and without
        // the guard.
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
