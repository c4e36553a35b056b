//! Benchmarks of the guard, with the figures issue notes report:
//!
//! 1. the guard's whole decision per call (token, purpose, register, Cedar with its cache),
//! 2. audit records per second through the batching writer (SQLite; PostgreSQL too when
//!    `TEST_DATABASE_URL` is set),
//! 3. DescribeSubject (the subscription service's provider) guarded and audited against the same
//!    handler unguarded, and the enrolment data path (GetLearner, CreateLearner), each against a
//!    bare tonic echo measured in the same run, over real gRPC on loopback with the same client,
//!    concurrency, server stack and database.
//!
//! The RPC figures are taken with the server on one core and the client on the other (each on a
//! one-thread runtime whose threads, the database driver's included, are pinned with `taskset`),
//! so that the client's cost does not come out of the server's time; without `taskset` or a
//! second core they run unpinned, and the output says so.
//!
//! Run: `cargo bench -p tutela --bench guard` (add `TEST_DATABASE_URL=postgres://...` for
//! PostgreSQL). Timings are medians of what this machine does; they are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic_prost::ProstCodec;
use tutela_policy::audit::migration::AuditMigrator;
use tutela_policy::audit::{AuditEvent, AuditKeys, AuditLog, Caller, Outcome};
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::{
    CreateLearnerRequest, CreateLearnerResponse, GetLearnerRequest, GetLearnerResponse,
};
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
        write: false,
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
const GET_LEARNER: &str = "/tutela.enrolment.v1.LearnerService/GetLearner";
const CREATE_LEARNER: &str = "/tutela.enrolment.v1.LearnerService/CreateLearner";
const IN_FLIGHT: usize = 64;

/// The request of every DescribeSubject call (and of the echo).
fn describe_request() -> DescribeSubjectRequest {
    DescribeSubjectRequest {
        subject: Some(SubjectRef {
            subject_id: "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77".into(),
        }),
        services: Vec::new(),
    }
}

/// Calls per second of `path` (sending what `request` makes of a call number, answering `R`)
/// with [`IN_FLIGHT`] calls in flight on one connection, for `secs`: the same client code for
/// every server measured.
async fn drive<Q, R>(
    address: SocketAddr,
    credentials: Credentials,
    path: &'static str,
    secs: u64,
    request: impl Fn(u64) -> Q + Clone + Send + 'static,
) -> f64
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + 'static,
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..IN_FLIGHT as u64)
        .map(|task| {
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
                            tonic::Request::new(request(task + calls * IN_FLIGHT as u64)),
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

/// The servers the RPC figures are taken from, started on the server's runtime.
struct Servers {
    /// Only the subscription service: DescribeSubject runs its provider, guarded.
    subscription: TestSuite,
    /// Every service: GetLearner and CreateLearner, guarded.
    all: TestSuite,
    /// The subscription suite's services without the guard.
    unguarded: SocketAddr,
    /// The bare echo.
    echo: SocketAddr,
}

async fn start_servers() -> Servers {
    let subscription = TestSuite::start_with(|c| c.server.services = vec!["subscription".into()])
        .await
        .unwrap();
    let all = TestSuite::start().await.unwrap();
    let token = subscription.token("acme", "dpo-1", &["dpo"]);
    // The same handler without the guard: the same services assembled from the same
    // configuration and database, with the authorisation the guard grants this token made once
    // and attached to every call, where the guard checks token, purpose, register and rules,
    // and writes the audit records, on every call.
    let assembled = tutela::server::assemble(subscription.config(), None)
        .await
        .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert("x-tutela-purpose", "subject_rights".parse().unwrap());
    let Ok(tutela_policy::guard::Outcome::Authorized(authorized, _)) =
        assembled.guard.check(DESCRIBE, &headers)
    else {
        panic!("the bench's token is not authorised for DescribeSubject");
    };
    // Both beside the suites, with `tutela serve`'s stack and settings.
    let settings = subscription.config().server.clone();
    let (listener, unguarded) = bind().await;
    tokio::spawn(tutela::server::serve(
        settings.clone(),
        assembled.routes,
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
    Servers {
        subscription,
        all,
        unguarded,
        echo,
    }
}

/// Learners read by the GetLearner figure: each is read every few hundred calls, as a busy
/// office reads its current learners (and so the consent cache, one second long, is warm).
const LEARNERS: u64 = 2_000;

async fn bench_rpc(servers: &Servers) {
    let suite = &servers.subscription;
    let creds = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    let registrar = Credentials::new(
        &servers.all.token("acme", "registrar-1", &["registrar"]),
        "course_administration",
    );
    let (echo, unguarded, guarded, learners) = (
        servers.echo,
        servers.unguarded,
        suite.addr(),
        servers.all.addr(),
    );
    // Every created learner is new: the numbers go on from round to round.
    let created = Arc::new(AtomicU64::new(0));
    let create = {
        let created = created.clone();
        move |_| CreateLearnerRequest {
            profile: Some(tutela_testkit::sample_profile(
                created.fetch_add(1, Ordering::Relaxed),
            )),
            ..Default::default()
        }
    };
    // The learners GetLearner reads, made before any figure is taken.
    let mut client = tutela_proto::enrolment::learner_service_client::LearnerServiceClient::new(
        InterceptedService::new(
            tonic::transport::Endpoint::from_shared(format!("http://{learners}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
            registrar.clone(),
        ),
    );
    let mut ids = Vec::with_capacity(LEARNERS as usize);
    for _ in 0..LEARNERS {
        let learner = client.create_learner(create(0)).await.unwrap().into_inner();
        ids.push(learner.learner.unwrap().learner_id);
    }
    let ids = Arc::new(ids);
    let get = move |n: u64| GetLearnerRequest {
        learner: Some(SubjectRef {
            subject_id: ids[(n % LEARNERS) as usize].clone(),
        }),
    };
    let describe = |_| describe_request();

    // One RPC alone, for a profiler (`perf record --call-graph dwarf`): BENCH_PROFILE names it,
    // BENCH_SECONDS (default 20) says how long. No ratio is printed: there is nothing beside it.
    if let Ok(only) = std::env::var("BENCH_PROFILE") {
        let secs = std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        let rate = match only.as_str() {
            "echo" => drive::<_, DescribeSubjectRequest>(echo, creds, ECHO, secs, describe).await,
            "DescribeSubject" => {
                drive::<_, DescribeSubjectResponse>(guarded, creds, DESCRIBE, secs, describe).await
            }
            "GetLearner" => {
                drive::<_, GetLearnerResponse>(learners, registrar, GET_LEARNER, secs, get).await
            }
            "CreateLearner" => {
                drive::<_, CreateLearnerResponse>(learners, registrar, CREATE_LEARNER, secs, create)
                    .await
            }
            other => panic!(
                "BENCH_PROFILE={other:?}: one of echo, DescribeSubject, GetLearner, CreateLearner"
            ),
        };
        println!("{only} alone for {secs} s: {rate:.0} calls/s");
        return;
    }

    // Warm up all of them, then measure in turns so that noise hits them alike.
    let secs = 1;
    drive::<_, DescribeSubjectRequest>(echo, creds.clone(), ECHO, secs, describe).await;
    drive::<_, DescribeSubjectResponse>(unguarded, creds.clone(), DESCRIBE, secs, describe).await;
    drive::<_, DescribeSubjectResponse>(guarded, creds.clone(), DESCRIBE, secs, describe).await;
    drive::<_, GetLearnerResponse>(learners, registrar.clone(), GET_LEARNER, secs, get.clone())
        .await;
    drive::<_, CreateLearnerResponse>(
        learners,
        registrar.clone(),
        CREATE_LEARNER,
        secs,
        create.clone(),
    )
    .await;
    let (mut e, mut u, mut g, mut r, mut w) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let secs = 3;
    for _ in 0..3 {
        e.push(drive::<_, DescribeSubjectRequest>(echo, creds.clone(), ECHO, secs, describe).await);
        u.push(
            drive::<_, DescribeSubjectResponse>(unguarded, creds.clone(), DESCRIBE, secs, describe)
                .await,
        );
        g.push(
            drive::<_, DescribeSubjectResponse>(guarded, creds.clone(), DESCRIBE, secs, describe)
                .await,
        );
        r.push(
            drive::<_, GetLearnerResponse>(
                learners,
                registrar.clone(),
                GET_LEARNER,
                secs,
                get.clone(),
            )
            .await,
        );
        w.push(
            drive::<_, CreateLearnerResponse>(
                learners,
                registrar.clone(),
                CREATE_LEARNER,
                secs,
                create.clone(),
            )
            .await,
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[1]
    };
    let spread = |v: &[f64]| format!("{:.0}..{:.0}", v[0], v[2]);
    let (em, um, gm, rm, wm) = (
        median(&mut e),
        median(&mut u),
        median(&mut g),
        median(&mut r),
        median(&mut w),
    );
    println!(
        "over loopback, {IN_FLIGHT} calls in flight on one connection, same client and server stack ({} database), median (min..max) of 3 runs of {secs} s:",
        suite.database().backend().name()
    );
    let line = |name: &str, rate: f64, runs: &[f64]| {
        println!(
            "  {name:<50} {rate:>8.0} calls/s  {:>5.1}% of echo  ({})",
            rate / em * 100.0,
            spread(runs)
        );
    };
    line("bare tonic echo", em, &e);
    line("DescribeSubject (subscription provider), no guard", um, &u);
    line("DescribeSubject, guarded + audited", gm, &g);
    line(
        &format!("GetLearner, guarded + audited ({LEARNERS} learners)"),
        rm,
        &r,
    );
    line("CreateLearner, guarded + audited", wm, &w);
    println!(
        "  the guard keeps {:.0}% of the unguarded DescribeSubject's rate",
        gm / um * 100.0
    );
}

/// The CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
    else {
        return Vec::new();
    };
    let mut cpus = Vec::new();
    for range in list.trim().split(',') {
        let mut ends = range.split('-').map(|n| n.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), Some(Ok(b))) => cpus.extend(a..=b),
            (Some(Ok(a)), None) => cpus.push(a),
            _ => {}
        }
    }
    cpus
}

/// Pins the calling thread to the CPUs of `cpus` (a list as `taskset` reads it) with `taskset`;
/// threads it starts later inherit the pin. The benchmark forbids unsafe code, so it has no
/// `sched_setaffinity` of its own.
fn pin_this_thread(cpus: &str) -> bool {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return false;
    };
    let Some(tid) = link.file_name().and_then(|t| t.to_str()) else {
        return false;
    };
    std::process::Command::new("taskset")
        .args(["-p", "-c", cpus, tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A runtime with one worker thread, all of whose threads run on `cpu` when it is given.
fn one_core_runtime(name: &str, cpu: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1).thread_name(name).enable_all();
    if let Some(cpu) = cpu {
        builder.on_thread_start(move || {
            pin_this_thread(&cpu.to_string());
        });
    }
    builder.build().unwrap()
}

fn main() {
    tutela_testkit::bench_logging();
    let cpus = allowed_cpus();
    // Pinning this thread to every CPU it may use changes nothing, and shows taskset works.
    let all = cpus
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let (server_cpu, client_cpu) = if cpus.len() >= 2 && pin_this_thread(&all) {
        (Some(cpus[0]), Some(cpus[1]))
    } else {
        (None, None)
    };
    // The server's runtime: every server task, and the threads they start (the SQLite driver
    // runs one per connection), run on its core.
    let server = one_core_runtime("bench-server", server_cpu);
    let servers = server.block_on(server.spawn(start_servers())).unwrap();

    // The guard's decision and the audit writer on a runtime of all cores, as before.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        bench_decision(&servers.subscription).await;
        bench_audit("SQLite", TestDatabase::sqlite().unwrap()).await;
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            bench_audit("PostgreSQL", TestDatabase::postgres(&url).await.unwrap()).await;
        }
    });
    drop(runtime);

    // The client's runtime on the other core; this thread, which drives it, too.
    match (server_cpu, client_cpu) {
        (Some(s), Some(c)) => {
            pin_this_thread(&c.to_string());
            println!(
                "RPC figures: server on CPU {s}, client on CPU {c} (one runtime thread each, pinned with taskset)"
            );
        }
        _ => println!(
            "RPC figures: server and client on one runtime thread each, unpinned (no taskset or a single CPU)"
        ),
    }
    let client = one_core_runtime("bench-client", client_cpu);
    client.block_on(bench_rpc(&servers));
    drop(client);
    drop(servers);
    drop(server);
}
