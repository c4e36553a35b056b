//! The one gRPC endpoint of a tutela process: the hosted services, health and reflection behind
//! the guard and explicit limits, with a graceful shutdown. Connections reach it only once they
//! have proved a protocol within the handshake timeout ([`crate::handshake`]); every request runs
//! in a server span named after the contract or a route template, never the path's own text.
//! `run` takes an already-bound listener, so that tests run the real server on port 0.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tutela_host::{HostedService, Served};

use crate::config::Config;
use crate::handshake::{self, OneRequestPerHttp1Connection};
use crate::{keys, services};

/// Health service name that reports the whole process.
const OVERALL: &str = "";

/// gRPC service names this process always serves (reflection only when configured).
const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
const SUBJECT_DATA: &str = "tutela.privacy.v1.SubjectData";
const AUDIT: &str = "tutela.audit.v1.AuditService";

/// Connects to the configured database and applies the audit log's and every hosted service's
/// migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let hosted = services::hosted(&config.server.services)?;
    let url = config.database_url();
    if tutela_store::Backend::of_url(&url)? == tutela_store::Backend::Sqlite {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    }
    let db = tutela_store::connect(&url, config.database.max_connections)
        .await
        .context("cannot connect to the database")?;
    // The audit log's tables live in every service database, beside the data they account for.
    let mut sets = vec![tutela_store::migrations_of::<
        tutela_policy::audit::migration::AuditMigrator,
    >("audit")];
    for service in &hosted {
        sets.extend(service.migrations());
    }
    tutela_store::migrate(&db, &sets)
        .await
        .context("migrations failed")?;
    Ok(db)
}

fn reflection_builder<'a>(names: &[&str]) -> tonic_reflection::server::Builder<'a> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tutela_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // The google.rpc error details (ErrorInfo, BadRequest, PreconditionFailure, ...) every
        // error carries, so that grpcurl and other reflection clients decode them.
        .register_encoded_file_descriptor_set(tutela_proto::ERROR_DETAILS_DESCRIPTOR_SET);
    // Advertise what this process serves, not every service in the contract.
    for name in names {
        builder = builder.with_service_name(*name);
    }
    builder
}

async fn set_all(reporter: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name.as_str(), status).await;
    }
}

/// What `run` serves, assembled from the configuration: the routes of the hosted services,
/// health and reflection (unguarded until [`serve`] puts a guard in front of them), the guard,
/// and the health reporter. Assembling also starts the scheduled sweeps.
pub struct Assembled {
    pub routes: Routes,
    pub guard: Arc<tutela_policy::Guard>,
    reporter: HealthReporter,
    health_names: Vec<String>,
}

/// Serves until `shutdown` resolves, then drains: health turns NOT_SERVING at once, new calls
/// stop after `drain_delay_secs`, and in-flight calls get `shutdown_grace_secs` to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Assembled {
        routes,
        guard,
        reporter,
        health_names,
    } = assemble(&config, Some(listener.local_addr()?)).await?;
    let s = &config.server;
    let hosted = services::resolve(&s.services)?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, services = ?hosted, reflection = s.reflection, "tutela serving");
    let stopping = Arc::new(Notify::new());
    let signal = {
        let stopping = stopping.clone();
        let drain = Duration::from_secs(s.drain_delay_secs);
        async move {
            shutdown.await;
            tracing::info!("shutting down: health is NOT_SERVING, draining in-flight calls");
            set_all(&reporter, &health_names, ServingStatus::NotServing).await;
            stopping.notify_one();
            tokio::time::sleep(drain).await;
        }
    };
    // Around the whole router: no RPC is reachable except through the guard.
    let serve = serve(
        s.clone(),
        routes,
        tutela_policy::GuardLayer::new(guard),
        listener,
        signal,
    );
    let grace = Duration::from_secs(s.shutdown_grace_secs + s.drain_delay_secs);
    tokio::select! {
        served = serve => served?,
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "calls still in flight after the grace period; exiting anyway");
        }
    }
    tracing::info!("tutela stopped");
    Ok(())
}

/// What `serve` and `retention sweep` load before any hosted service is built.
pub(crate) struct Shared {
    pub db: sea_orm::DatabaseConnection,
    pub keyring: Arc<tutela_store::Keyring>,
    pub audit: tutela_policy::audit::AuditLog,
    pub clock: tutela_store::SharedClock,
    pub register: Arc<tutela_policy::Register>,
}

impl Shared {
    /// The parts of this process every hosted service is built from. The consent ledger is
    /// built here where a hosted service hosts it, and the guard reads it in-process; elsewhere
    /// the guard reads a remote ledger when `remote` and one is configured, and otherwise
    /// consent-based purposes fail closed.
    pub(crate) fn context(
        self,
        config: &Config,
        hosted: &[&'static dyn HostedService],
        remote: bool,
        local: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<tutela_host::Context> {
        let ledger = hosted.iter().any(|s| s.hosts_ledger()).then(|| {
            Arc::new(tutela_ledger::Ledger::new(
                self.db.clone(),
                self.keyring.clone(),
                self.clock.clone(),
            ))
        });
        let consent = match &ledger {
            Some(ledger) => ledger.gate(),
            None => Arc::new(match config.remote_ledger().filter(|_| remote) {
                Some(settings) => {
                    let tokens = crate::auth::ServiceTokenFiles::new(config)?;
                    let ledger = tutela_policy::consent::RemoteLedger::new(&settings)?
                        .with_minted_tokens(Arc::new(move |tenant| tokens.minted(tenant)));
                    tutela_policy::ConsentGate::new(
                        Arc::new(ledger),
                        tutela_policy::consent::MAX_TTL,
                    )
                }
                None => tutela_policy::ConsentGate::without_ledger(),
            }),
        };
        Ok(tutela_host::Context {
            db: self.db,
            keyring: self.keyring,
            audit: self.audit,
            clock: self.clock,
            register: self.register,
            consent,
            ledger,
            settings: serde_json::Value::Null,
            max_message_bytes: config.server.max_message_bytes,
            local_endpoint: local.map(|addr| local_endpoint(addr, &config.server.tls)),
            service_tokens: Arc::new(crate::auth::ServiceTokenFiles::new(config)?),
            suite: crate::services::available(),
        })
    }
}

/// `ctx` with the settings section of `service`.
pub(crate) fn for_service(
    ctx: &tutela_host::Context,
    config: &Config,
    service: &dyn HostedService,
) -> tutela_host::Context {
    tutela_host::Context {
        settings: config.section(service.name()).cloned().unwrap_or_default(),
        ..ctx.clone()
    }
}

/// Where a service of this process reaches another hosted in it: the listen address, with an
/// unspecified one (`0.0.0.0`, `[::]`) replaced by the loopback address of its family.
fn local_endpoint(
    addr: std::net::SocketAddr,
    tls: &crate::tls::TlsConfig,
) -> tutela_host::LocalEndpoint {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls.enabled() { "https" } else { "http" };
    tutela_host::LocalEndpoint {
        url: format!("{scheme}://{}", std::net::SocketAddr::new(ip, addr.port())),
        ca_file: tls.enabled().then(|| tls.ca_file.clone()),
    }
}

/// Connects, migrates and builds everything `run` serves, for a process listening on `local`
/// (where its services reach each other).
pub async fn assemble(
    config: &Config,
    local: Option<std::net::SocketAddr>,
) -> anyhow::Result<Assembled> {
    let hosted = services::hosted(&config.server.services)?;
    // The one place development keys are generated: every other command only reads them.
    let generated = keys::generate_development_keys(config)?;
    let keyring = Arc::new(keys::load_keyring(config)?);
    let audit_keys = keys::load_audit_keys(config)?;
    let db = migrate(config).await?;
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let audit = tutela_policy::audit::AuditLog::start(db.clone(), audit_keys, clock.clone());
    let register = Arc::new(crate::guard::load_register(config)?);
    let ctx = Shared {
        db,
        keyring,
        audit: audit.clone(),
        clock,
        register: register.clone(),
    }
    .context(config, &hosted, true, local)?;
    let audit_log = audit.clone();
    let guard = Arc::new(crate::guard::build(
        config,
        audit,
        register.clone(),
        ctx.consent.clone(),
    )?);
    write_dev_admin_token(config, generated.dev_secret)?;
    let s = &config.server;

    let mut served = Served::default();
    if let Some(ledger) = &ctx.ledger {
        served.grpc(
            tutela_proto::consent::consent_ledger_server::ConsentLedgerServer::new(
                tutela_ledger::ConsentLedgerService::new(ledger, register.clone()),
            )
            .max_decoding_message_size(s.max_message_bytes)
            .max_encoding_message_size(s.max_message_bytes),
        );
    }
    let interval = Duration::from_secs(config.retention.sweep_interval_secs);
    for service in &hosted {
        let ctx = for_service(&ctx, config, *service);
        service
            .build(&ctx, &mut served)
            .map_err(|e| anyhow::anyhow!("{}: {e}", service.name()))?;
        let sweepers = service
            .sweepers(&ctx)
            .map_err(|e| anyhow::anyhow!("{}: {e}", service.name()))?;
        for sweeper in sweepers {
            let interval = sweeper.interval().unwrap_or(interval);
            let clock = ctx.clock.clone();
            let lease =
                crate::retention::lease(&ctx.db, service.name(), sweeper.name(), clock.clone());
            tokio::spawn(async move {
                on_schedule(sweeper.name(), interval, lease, || {
                    let (sweeper, now) = (sweeper.clone(), clock.now());
                    async move { sweeper.sweep(now, false, &|_, _, _| {}).await.map(|_| ()) }
                })
                .await;
            });
        }
    }
    let tutela_host::ServedParts {
        grpc: mut routes,
        names,
        http,
        providers,
    } = served.into_parts();

    let (reporter, health) = tonic_health::server::health_reporter();
    // Overall status, plus one entry per hosted service under its short name (the name the
    // Kubernetes probes ask for)...
    let mut health_names = vec![OVERALL.to_owned()];
    health_names.extend(hosted.iter().map(|s| s.name().to_owned()));
    // ...and under the full gRPC names of the services they expose, as generic clients ask.
    health_names.push(SUBJECT_DATA.to_owned());
    health_names.push(AUDIT.to_owned());
    health_names.extend(names.iter().map(|n| (*n).to_owned()));
    set_all(&reporter, &health_names, ServingStatus::Serving).await;

    routes.add_service(
        health
            .max_decoding_message_size(s.max_message_bytes)
            .max_encoding_message_size(s.max_message_bytes),
    );
    // One SubjectData endpoint with a provider per hosted service.
    routes.add_service(
        tutela_proto::privacy::subject_data_server::SubjectDataServer::new(
            tutela_policy::rights::SubjectDataDispatcher::new(providers, register.clone()),
        )
        .max_decoding_message_size(s.max_message_bytes)
        .max_encoding_message_size(s.max_message_bytes),
    );
    // Every process answers for its own audit log (the breach question, X2).
    routes.add_service(
        tutela_proto::audit::audit_service_server::AuditServiceServer::new(
            tutela_policy::audit::service::AuditQueries::new(ctx.db.clone(), audit_log),
        )
        .max_decoding_message_size(s.max_message_bytes)
        .max_encoding_message_size(s.max_message_bytes),
    );
    let mut advertised = vec![HEALTH, SUBJECT_DATA, AUDIT];
    advertised.extend(names);
    if s.reflection {
        advertised.extend([REFLECTION_V1, REFLECTION_V1ALPHA]);
        routes.add_service(
            reflection_builder(&advertised)
                .build_v1()?
                .max_decoding_message_size(s.max_message_bytes)
                .max_encoding_message_size(s.max_message_bytes),
        );
        routes.add_service(
            reflection_builder(&advertised)
                .build_v1alpha()?
                .max_decoding_message_size(s.max_message_bytes)
                .max_encoding_message_size(s.max_message_bytes),
        );
    }

    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(config.clone(), guard.clone()));

    let mut routes = routes.routes();
    if let Some(http) = http {
        // Plain HTTP routes of the hosted services (RFC 8058 unsubscribe), beside gRPC.
        let router = std::mem::take(routes.axum_router_mut());
        *routes.axum_router_mut() = router.merge(http);
    }
    Ok(Assembled {
        routes,
        guard,
        reporter,
        health_names,
    })
}

/// Serves `routes` behind `guard` on the connections of `listener` that prove a protocol, with
/// the limits of `settings`, until `signal` resolves (then waits for open calls). Outside the
/// guard: the server span, one request per HTTP/1.1 connection and the concurrency limit. `run`
/// passes the guard; only benchmarks pass anything else.
pub async fn serve<G>(
    settings: crate::config::ServerConfig,
    routes: Routes,
    guard: G,
    listener: TcpListener,
    signal: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    G: tower::Layer<Routes> + Clone,
    G::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    <G::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
{
    let s = &settings;
    let limits = handshake::Limits {
        timeout: Duration::from_secs(s.handshake_timeout_secs),
        max_pending: s.max_pending_handshakes,
        max_head_bytes: s.max_header_bytes as usize,
    };
    // Loaded before the port serves, so that a wrong file stops the start with its name.
    let tls = if s.tls.enabled() {
        Some(crate::tls::Acceptor::start(&s.tls).context("server.tls")?)
    } else {
        None
    };
    let router = tonic::transport::Server::builder()
        // gRPC stays HTTP/2; HTTP/1.1 is for the unsubscribe endpoint only.
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(s.keepalive_interval_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(s.keepalive_timeout_secs)))
        .http2_max_header_list_size(s.max_header_bytes)
        .max_concurrent_streams(s.max_concurrent_streams)
        .timeout(Duration::from_secs(s.request_timeout_secs))
        .layer(tutela_telemetry::ServerTraceLayer::new(span_names()?))
        .layer(OneRequestPerHttp1Connection)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            s.concurrency_limit,
        ))
        .layer(guard)
        .add_routes(routes);
    match tls {
        Some(acceptor) => {
            router
                .serve_with_incoming_shutdown(
                    handshake::admit_tls(listener, limits, acceptor),
                    signal,
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(handshake::admit(listener, limits), signal)
                .await
        }
    }
    .context("server failed")
}

/// The names server spans may carry: every RPC of the contract, of health and of reflection, and
/// the templates of the services' plain HTTP routes (the one-click unsubscribe).
fn span_names() -> anyhow::Result<tutela_telemetry::Routes> {
    let sets = [
        tutela_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut rpcs = Vec::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set).context("descriptor set")?;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    rpcs.push(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    let mut routes = tutela_telemetry::Routes::default().with_rpcs(rpcs);
    for service in services::all() {
        for template in service.http_route_templates() {
            routes = routes.with_http_route(&template);
        }
    }
    Ok(routes)
}

/// The service name spans are exported under unless `OTEL_SERVICE_NAME` names one: `tutela`, or
/// `tutela-<service>` when the process hosts a single service (one Deployment per service).
pub fn default_service_name(config: &Config) -> String {
    match services::resolve(&config.server.services).as_deref() {
        Ok([only]) => format!("tutela-{only}"),
        _ => "tutela".to_owned(),
    }
}

/// The file beside the generated development secret that holds a ready admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// In development (a generated token secret), writes a ready admin token to a file only its owner
/// can read, so that a newcomer can call the suite at once, and prints where it is: a long-lived
/// admin credential must not end up in every log the output goes to. The token is renewed on
/// every start, so the file always holds one that works.
fn write_dev_admin_token(config: &Config, first_start: bool) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let generated = config.auth.dev_secret.expose_secret().is_empty()
        && config.auth.jwks_file.as_os_str().is_empty();
    if !generated {
        return Ok(());
    }
    let Some(secret) = keys::find_dev_secret(config, keys::DEV_SECRET)? else {
        return Ok(());
    };
    let path = secret.with_file_name(ADMIN_TOKEN_FILE);
    let request = tutela_policy::principal::TokenRequest {
        tenant: "default".into(),
        subject: "dev-admin".into(),
        kind: Some(tutela_policy::PrincipalKind::Staff),
        roles: vec!["dpo".into(), "registrar".into()],
        partner: None,
        wards: Vec::new(),
        ttl: chrono::Duration::hours(12),
    };
    let token = crate::auth::issue(config, &request)?;
    keys::write_private(&path, &format!("{token}\n"), true)?;
    println!(
        "development admin token (tenant \"default\", roles dpo and registrar, valid 12 h) {} {}",
        if first_start {
            "written to"
        } else {
            "renewed in"
        },
        path.display()
    );
    Ok(())
}

/// Runs `job` every `interval` (never when zero), the first time at once, under `lease`: of the
/// replicas that schedule the same job, only the one holding the lease runs it, and the others
/// skip that round. A failed run is logged and retried at the next tick: what was due stays due.
async fn on_schedule<F, Fut>(
    what: &'static str,
    interval: Duration,
    lease: tutela_store::Lease,
    job: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = tutela_policy::Result<()>>,
{
    use tutela_store::Leased;
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match lease.run(job()).await {
            Ok(Leased::Done(Ok(()))) => {}
            Ok(Leased::Done(Err(err))) => {
                tracing::error!(error = %err, job = what, "scheduled sweep failed")
            }
            Ok(Leased::Busy(holding)) => tracing::info!(
                job = what,
                holder = holding.as_ref().map(|h| h.holder.as_str()),
                "scheduled sweep skipped: another replica holds its lease"
            ),
            Ok(Leased::Lost) => tracing::warn!(
                job = what,
                "scheduled sweep stopped: its lease passed to another replica"
            ),
            Err(err) => {
                tracing::error!(error = %err, job = what, "scheduled sweep's lease unavailable")
            }
        }
    }
}

/// Reloads the access policies on every SIGHUP; rules that do not validate are refused with an
/// error in the log, and the running ones stay.
#[cfg(unix)]
async fn reload_on_hangup(config: Config, guard: Arc<tutela_policy::Guard>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("SIGHUP cannot be caught here: access policies reload only on restart");
        return;
    };
    while hangups.recv().await.is_some() {
        let reloaded = crate::guard::load_rules(&config)
            .and_then(|rules| Ok(guard.replace_rules(Arc::new(rules))?));
        match reloaded {
            Ok(()) => tracing::info!("access policies reloaded"),
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "access policies not reloaded; the previous ones stay in force")
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled: the server polls it only once it serves, and a SIGTERM in
/// between (a pod stopped while starting, a test stopping a server that just said it serves)
/// would otherwise meet the default action and kill the process instead of stopping it cleanly.
/// Must be called inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let installed = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            let (terminate, interrupt) = installed;
            tokio::select! {
                () = next(terminate) => {},
                () = next(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
