//! The seam between a `tutela` process and the services it hosts. Each service crate exports one
//! [`HostedService`]; the host (`tutela serve`, `migrate`, `retention sweep`, `serve --check`
//! and the testkit, which runs `serve`) iterates one list of them, so that a new service is its
//! crate plus one line in that list. The shape follows quickwit's `add_optional_service`: the
//! host hands each hosted service the shared parts and collects what it serves.
//!
//! A crate of its own rather than a module of `tutela-policy`: it names the consent ledger's
//! crate and tonic's and axum's routers, which the guard has no business depending on.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tutela_policy::audit::AuditLog;
use tutela_policy::rights::SubjectDataProvider;
use tutela_policy::{ConsentGate, Register};
use tutela_store::{Keyring, Migrations, SharedClock};

pub mod peer;

pub use peer::LocalEndpoint;

pub use tutela_ledger::Ledger;

/// Why a service could not be built (its settings, usually).
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// One service as a process hosts it.
pub trait HostedService: Send + Sync {
    /// The short name: `--service`, `server.services`, the health entry the probes ask for, and
    /// the name of the service's settings section.
    fn name(&self) -> &'static str;

    /// The service's migration sets, in the order they apply (after the audit log's).
    fn migrations(&self) -> Vec<Box<dyn Migrations>>;

    /// Whether a process hosting this service hosts the consent ledger too. The host then builds
    /// the [`Ledger`] (in [`Context::ledger`]), serves it and has the guard read it in-process.
    fn hosts_ledger(&self) -> bool {
        false
    }

    /// Checks the service's own settings section (`None` when the configuration has none), as
    /// the configuration is loaded: an error names the setting. A service without settings
    /// refuses a section.
    fn check_settings(&self, section: Option<&serde_json::Value>) -> Result<(), String> {
        match section {
            None => Ok(()),
            Some(_) => Err(format!("the {} service has no settings", self.name())),
        }
    }

    /// The templates of its plain HTTP routes (`/unsubscribe/{token}`), the only names server
    /// spans may give requests to them.
    fn http_route_templates(&self) -> Vec<String> {
        Vec::new()
    }

    /// Builds what the service serves from the shared parts of the process.
    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError>;

    /// Its retention sweepers, which `serve` runs on schedule and `tutela retention sweep` once.
    fn sweepers(&self, ctx: &Context) -> Result<Vec<Arc<dyn Sweeper>>, BuildError> {
        let _ = ctx;
        Ok(Vec::new())
    }

    /// The recipients its own records say a purpose's data goes to at `now` (the sharing
    /// service's agreements in force), for the record of processing activities that `tutela
    /// register` prints: the register names kinds of recipient, these name the actual ones.
    /// Reads only; never called on a database it would have to create.
    fn recipients<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        register: &'a Register,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<RecipientEntry>, BuildError>> {
        let _ = (db, register, now);
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// A future a hosted service returns through the object-safe trait.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One actual recipient of one purpose's data, from a service's records: who (an organisation,
/// never a person), on which basis, which fields, since and until when, and how a transfer abroad
/// is safeguarded (GDPR Art. 30(1)(d)–(e)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecipientEntry {
    /// The tenant whose agreement it is.
    pub tenant: String,
    /// The register purpose's short name (`exam_booking`).
    pub purpose: String,
    /// The recipient organisation's legal name.
    pub recipient: String,
    /// What kind of organisation it is (`exam_body`, `funder`, ...).
    pub kind: String,
    /// Its role in the processing (`controller`, `processor`, `joint_controller`).
    pub role: String,
    /// Its country, ISO 3166-1 alpha-2.
    pub country: String,
    /// The legal basis of the disclosure (`contract`, `consent`, ...).
    pub legal_basis: String,
    /// The fields it receives, as paths of the enrolment contract.
    pub fields: Vec<String>,
    /// The agreement and its version.
    pub agreement_id: String,
    /// The agreement's version.
    pub version: i32,
    /// From when the agreement applies.
    pub valid_from: DateTime<Utc>,
    /// Until when, if it ends.
    pub valid_to: Option<DateTime<Utc>>,
    /// How long the recipient may keep what it receives (ISO-8601 duration).
    pub recipient_retention: String,
    /// A transfer outside the EEA and UK without adequacy: the safeguard and its document
    /// reference; `None` when no transfer safeguard is needed.
    pub transfer: Option<TransferEntry>,
}

/// The safeguard of a transfer abroad (S7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransferEntry {
    /// `sccs`, `uk_idta`, `bcrs` or `art49_derogation`.
    pub safeguard: String,
    /// The document that records it.
    pub reference: String,
}

/// The shared parts of a process that a hosted service is built from.
#[derive(Clone)]
pub struct Context {
    /// The database, migrated with every hosted service's sets.
    pub db: DatabaseConnection,
    /// Key-encryption keys.
    pub keyring: Arc<Keyring>,
    /// The audit log (and through it the audit, pseudonym, index and token keys).
    pub audit: AuditLog,
    /// The clock.
    pub clock: SharedClock,
    /// The processing register.
    pub register: Arc<Register>,
    /// The guard's consent gate.
    pub consent: Arc<ConsentGate>,
    /// The consent ledger, where this process hosts it.
    pub ledger: Option<Arc<Ledger>>,
    /// The service's own settings section (`Null` when the configuration has none).
    pub settings: serde_json::Value,
    /// The largest gRPC message, each way.
    pub max_message_bytes: usize,
    /// Where this process serves gRPC, when it serves: a hosted service calls another hosted in
    /// the same process there, through the guard like any client. `None` for commands that do
    /// not serve.
    pub local_endpoint: Option<peer::LocalEndpoint>,
    /// Bearer tokens of `service` principals, for calls this process makes to the others.
    pub service_tokens: Arc<dyn ServiceTokens>,
    /// Every service of the suite built into this binary, hosted here or not, in hosting order:
    /// what a deployment has, and so where a rights request is carried out.
    pub suite: Vec<&'static str>,
}

/// Where a service's calls to another service get their bearer token: one `service` principal
/// per tenant, since every call is scoped to the tenant of its token.
pub trait ServiceTokens: Send + Sync {
    /// A token of a `service` principal of `tenant`, valid for at least a minute; an error says
    /// where one was looked for (never a token).
    fn token(&self, tenant: &str) -> Result<String, BuildError>;
}

/// A process without service tokens: every call it would make to another service fails.
#[derive(Debug, Default)]
pub struct NoServiceTokens;

impl ServiceTokens for NoServiceTokens {
    fn token(&self, _tenant: &str) -> Result<String, BuildError> {
        Err("this process has no service tokens".into())
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("hosts_ledger", &self.ledger.is_some())
            .field("max_message_bytes", &self.max_message_bytes)
            .field("local_endpoint", &self.local_endpoint)
            .finish_non_exhaustive()
    }
}

/// What the hosted services serve, collected by the host.
#[derive(Default)]
pub struct Served {
    grpc: RoutesBuilder,
    names: Vec<&'static str>,
    http: Option<axum::Router>,
    providers: Vec<Arc<dyn SubjectDataProvider>>,
}

impl fmt::Debug for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Served")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Served {
    /// Serves a gRPC service (with its message limits already set) under its full name, which
    /// health reports and reflection advertises.
    pub fn grpc<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// Serves plain HTTP routes beside gRPC (HTTP/1.1, outside the gRPC contract); each needs a
    /// template in [`HostedService::http_route_templates`].
    pub fn http(&mut self, router: axum::Router) -> &mut Self {
        self.http = Some(match self.http.take() {
            Some(routes) => routes.merge(router),
            None => router,
        });
        self
    }

    /// Adds the service's part in data-subject rights to the one `SubjectData` endpoint.
    pub fn subject_data(&mut self, provider: Arc<dyn SubjectDataProvider>) -> &mut Self {
        self.providers.push(provider);
        self
    }

    /// The full gRPC names of the services added so far, in order.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Takes everything apart for the host.
    pub fn into_parts(self) -> ServedParts {
        ServedParts {
            grpc: self.grpc,
            names: self.names,
            http: self.http,
            providers: self.providers,
        }
    }
}

/// What the hosted services serve, apart.
pub struct ServedParts {
    /// Their gRPC routes.
    pub grpc: RoutesBuilder,
    /// The full names of their gRPC services, in the order they were added.
    pub names: Vec<&'static str>,
    /// Their plain HTTP routes, if any.
    pub http: Option<axum::Router>,
    /// Their parts in data-subject rights.
    pub providers: Vec<Arc<dyn SubjectDataProvider>>,
}

/// Progress of a sweep: the phase, and how many of its items were looked at out of how many.
pub type Progress<'a> = &'a (dyn Fn(&'static str, u64, u64) + Send + Sync);

/// What one sweep removed (or, dry, would remove), printable for `tutela retention sweep`.
pub type SweepReport = Box<dyn fmt::Display + Send + Sync>;

/// One retention sweep of a service.
#[async_trait::async_trait]
pub trait Sweeper: Send + Sync {
    /// What it sweeps, for logs and the report (`delivery events`).
    fn name(&self) -> &'static str;

    /// How often `serve` runs it: `None` for the retention schedule
    /// (`retention.sweep_interval_secs`); a job that others wait on (notices to recipients)
    /// runs more often.
    fn interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Removes what is due at `now` (with `dry_run`, only counts it).
    async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        progress: Progress<'_>,
    ) -> tutela_policy::Result<SweepReport>;
}
