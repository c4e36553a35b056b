//! `tutela`: parses arguments, loads configuration, starts telemetry, and hands over to the
//! library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tutela::{Config, Overrides, server};

/// tutela: learner data for training organisations, kept to their privacy policy on every call.
#[derive(Debug, Parser)]
#[command(name = "tutela", version, about)]
struct Cli {
    /// Configuration file (TOML) over the documented defaults.
    #[arg(long, global = true, env = "TUTELA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the hosted services, health and reflection on one gRPC port.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (default 127.0.0.1:50051).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Host only this service (repeatable): enrolment, sharing, survey, subscription, rights.
        /// Without it, every service is hosted.
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
        /// Load configuration, keys, register and policies as serving would, report every
        /// problem, and exit (non-zero on a problem) without connecting, migrating or listening.
        #[arg(long)]
        check: bool,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the processing register (record of processing activities) the guard enforces.
    /// With a database (the data dir's, or --database-url), it also lists the recipients in force:
    /// each purpose's actual recipients and transfers, from the sharing service's agreements.
    Register {
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print the access policies in force (the configured file, or the built-in defaults) after
    /// validating them against the schema; a copy of the defaults is where your own start.
    Policies {
        /// Print the Cedar schema (the roles, actions and context policies may use) instead.
        #[arg(long, conflicts_with = "matrix")]
        schema: bool,
        /// Print what the policies and register in force allow instead: role × RPC × purpose,
        /// with the categories each allowed call may read (asked of the rules, as the guard
        /// does). The table lists the allowed combinations; everything else is refused.
        #[arg(long)]
        matrix: bool,
        /// Output format of `--matrix`: `table`, or `json` (every combination, allowed or not).
        #[arg(long, value_enum, default_value = "table", requires = "matrix")]
        format: MatrixFormat,
    },
    /// Development tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Make a development CA and, signed by it, a server certificate and a client certificate
    /// (for mTLS), as PEM files in DIR: ca.pem, server.pem/server-key.pem, client.pem/
    /// client-key.pem. Never overwrites. For development only: the CA's key is written beside
    /// them.
    DevCerts {
        /// Where to write them.
        #[arg(long, default_value = "./data/tls")]
        dir: PathBuf,
        /// A further host name or IP address of the server certificate (repeatable);
        /// `localhost` and `127.0.0.1` are always in it.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// The client certificate's name (its common name, and its URI SAN
        /// `urn:tutela:principal:NAME`).
        #[arg(long, default_value = "tutela-dev-client")]
        client: String,
        /// How many days they are valid.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Retention: remove what the register's retention periods make due.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Rights requests (access, erasure, ...) of the running suite: their status, and a
    /// learner's access bundle.
    Rights {
        #[command(subcommand)]
        command: RightsCommand,
    },
    /// Data sharing with partners, through the running suite.
    Sharing {
        #[command(subcommand)]
        command: SharingCommand,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: Common,
        /// Migrate only this service's tables (repeatable); default: every service.
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SharingCommand {
    /// Disclose learners to a partner as a file (a candidate list CSV for its portal, or a
    /// funder return XML) under the agreement in force for the purpose, and write the file. The
    /// disclosure goes through the server's guard and is in the disclosure log with the file's
    /// SHA-256, which the download is checked against.
    Export {
        /// The partner's id.
        #[arg(long)]
        partner: String,
        /// The purpose of the disclosure (a register purpose an agreement names).
        #[arg(long, default_value = "exam_booking")]
        purpose: String,
        /// A file with one learner id per line (at most 10,000; `#` comments skipped).
        #[arg(long)]
        learners: PathBuf,
        /// The file's layout.
        #[arg(long, value_enum, default_value = "csv")]
        layout: ExportLayout,
        /// Only records of this course (an id), where the agreement names fields of learners'
        /// records (`result.score`, ...).
        #[arg(long)]
        course: Option<String>,
        /// Where to write the file; it must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Makes a retried export answer with the same delivery (8 to 128 of [A-Za-z0-9_-]).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        common: Common,
    },
}

/// Where the running suite is, and who a command acts as there.
#[derive(Debug, Args)]
struct RemoteArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    endpoint: String,
    /// PEM of the CA that signed the server's certificate (with an https endpoint).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// A bearer token of the staff member the command acts as (a dpo for rights requests, staff
    /// who may disclose for the purpose for sharing); default: the development admin token
    /// `serve` wrote to the data dir.
    #[arg(long, env = "TUTELA_CLI_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl RemoteArgs {
    /// The suite to reach, with the token given or else the development admin token.
    fn remote(
        self,
        cli_config: Option<&PathBuf>,
        common: Common,
    ) -> anyhow::Result<tutela::remote::Remote> {
        let token = match self.token {
            Some(token) => token,
            None => {
                // The development admin token, where `serve` wrote it.
                let config = load(cli_config, common.overrides())?;
                let path = config.data_dir.join(tutela::server::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "no --token (or TUTELA_CLI_TOKEN), and no development admin token in {}",
                            path.display()
                        )
                    })?
            }
        };
        Ok(tutela::remote::Remote {
            endpoint: self.endpoint,
            ca_file: self.ca_file,
            token,
        })
    }
}

#[derive(Debug, Subcommand)]
enum RightsCommand {
    /// List rights requests, newest first, with their services' progress; overdue and stuck
    /// ones are flagged, with what holds them up.
    Status {
        /// Only unfinished requests past their deadline.
        #[arg(long)]
        overdue: bool,
        /// Only stuck requests (a service failing three times in a row, or a week waiting for
        /// approval).
        #[arg(long)]
        stuck: bool,
        /// Print one JSON object per request instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Write a learner's access bundle (a ZIP with a readable index.html and one JSON document
    /// per service): of their newest access request, or of a new one with --submit, waiting for
    /// every service with a progress bar.
    Export {
        /// The learner's id.
        subject: String,
        /// Where to write the bundle; it must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Record a new access request and the check of the requester's identity first.
        #[arg(long, requires_all = ["method", "evidence_reference"])]
        submit: bool,
        /// How the requester's identity was checked (with --submit).
        #[arg(long, value_enum)]
        method: Option<Method>,
        /// A reference to the note of the identity check, never a copy of a document (with
        /// --submit).
        #[arg(long)]
        evidence_reference: Option<String>,
        /// How long to wait for the services (seconds).
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        common: Common,
    },
}

/// How a requester's identity was checked (`rights export --submit`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Method {
    /// An official photo ID seen in person.
    PhotoIdInPerson,
    /// An official photo ID checked on a video call.
    PhotoIdVideo,
    /// Knowledge only the learner has, checked against the record.
    KnowledgeCheck,
    /// The request came from the learner's own authenticated account.
    AuthenticatedAccount,
}

/// The layouts of `sharing export`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportLayout {
    /// A candidate list as partner portals take it (CSV).
    Csv,
    /// A funder return (XML).
    FunderXml,
}

/// How `policies --matrix` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MatrixFormat {
    /// A plain table of the allowed combinations.
    Table,
    /// JSON: every combination with `allowed`.
    Json,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain; exits non-zero naming the first broken record.
    Verify {
        #[command(flatten)]
        common: Common,
    },
    /// Whose data, of which categories, a principal accessed in a time window (breach question).
    /// Subjects are listed by pseudonym; `--resolve` with a dpo token lists their ids.
    Accessed {
        #[command(flatten)]
        common: Common,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The principal id (as in its token's `sub`).
        #[arg(long)]
        principal: String,
        /// Start of the window (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End of the window (RFC 3339).
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// Resolve pseudonyms to subject ids; needs `--token` of the tenant's dpo.
        #[arg(long, requires = "token")]
        resolve: bool,
        /// A bearer token (for `--resolve`, and a dpo's for `--endpoint`).
        #[arg(long, env = "TUTELA_CLI_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Ask these running processes (repeatable: every process of a deployment, each with
        /// its own log) over gRPC instead of reading the database; answers in subject ids, each
        /// access listed with its process, changes apart from reads.
        #[arg(long = "endpoint", requires = "token")]
        endpoints: Vec<String>,
        /// PEM of the CA that signed the processes' certificates (https endpoints).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Who accessed one learner's data in a time window, across every process of a deployment
    /// (asked over gRPC): each access with its process, principal, RPC, purpose and categories,
    /// changes apart from reads.
    WhoAccessed {
        /// The learner's id.
        #[arg(long)]
        subject: String,
        /// Start of the window (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End of the window (RFC 3339).
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// The processes to ask (repeatable).
        #[arg(long = "endpoint", default_value = "http://127.0.0.1:50051")]
        endpoints: Vec<String>,
        /// PEM of the CA that signed the processes' certificates (https endpoints).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A dpo's bearer token; default: the development admin token `serve` wrote to the data
        /// dir.
        #[arg(long, env = "TUTELA_CLI_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print JSON lines instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Sweep once now, with a progress bar and a summary; records under a legal hold are kept.
    Sweep {
        #[command(flatten)]
        common: Common,
        /// Count what is due without removing anything (and without taking the sweep's lease,
        /// which a real sweep holds so that no other replica sweeps at the same time; while
        /// another replica holds it, a real sweep removes nothing and exits with status 75).
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Sign a development token (HS256, with the development secret) and print it on the last
    /// line of standard output.
    Issue {
        /// The tenant (training organisation).
        #[arg(long)]
        tenant: String,
        /// A role (repeatable): staff roles (registrar, tutor, exam_officer, marketing, dpo),
        /// or alone the role of another kind (learner, guardian, partner, service). Roles that
        /// contradict the kind are refused, as the guard would refuse the token.
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
        /// The principal id (for a learner: their learner id, a UUID). Default: a new random id.
        #[arg(long)]
        subject: Option<String>,
        /// The partner id, required for partner tokens and refused on others.
        #[arg(long)]
        partner: Option<String>,
        /// A learner the guardian acts for (repeatable; required for guardians, refused on
        /// others).
        #[arg(long = "ward", value_name = "LEARNER_ID")]
        wards: Vec<String>,
        /// The principal kind; default: the kind whose role is given, else staff.
        #[arg(long, value_parser = ["staff", "service", "partner", "learner", "guardian"])]
        kind: Option<String>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Directory holding a generated development secret (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Database URL: sqlite://PATH?mode=rwc or postgres://USER@HOST/DB.
    #[arg(long)]
    database_url: Option<String>,
    /// Directory for the embedded database and generated development keys (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Common {
    /// The settings these flags override.
    fn overrides(self) -> Overrides {
        Overrides {
            data_dir: self.data_dir,
            database_url: self.database_url,
            ..Overrides::default()
        }
    }
}

fn load(cli_config: Option<&PathBuf>, overrides: Overrides) -> anyhow::Result<Config> {
    Ok(Config::load(
        cli_config.map(PathBuf::as_path),
        std::env::vars(),
        &overrides,
    )?)
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            services,
            check,
        } => {
            let config = load(
                cli.config.as_ref(),
                Overrides {
                    data_dir: common.data_dir,
                    listen,
                    database_url: common.database_url,
                    services,
                },
            )?;
            let telemetry = tutela_telemetry::init(
                &server::default_service_name(&config),
                config.telemetry.format.into(),
                &config.telemetry.filter,
            )?;
            if check {
                let report = tutela::check::check(&config, &|name| std::env::var(name).ok());
                print!("{report}");
                return report.into_result();
            }
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.listen))?;
            let result = server::run(config, listener, server::shutdown_signal()).await;
            telemetry.shutdown();
            result
        }
        Command::Audit {
            command: AuditCommand::Verify { common },
        } => {
            let config = load(cli.config.as_ref(), common.overrides())?;
            let keys = tutela::keys::load_audit_keys(&config)?;
            let db = tutela_store::connect(&config.existing_database_url()?, 2).await?;
            match tutela_policy::audit::verify(&db, &keys).await? {
                tutela_policy::audit::Verification::Intact { records } => {
                    println!("audit log intact: {records} records");
                    Ok(())
                }
                tutela_policy::audit::Verification::Broken { seq, problem } => {
                    anyhow::bail!("audit log broken at record {seq}: {problem}")
                }
            }
        }
        Command::Audit {
            command:
                AuditCommand::Accessed {
                    common,
                    tenant,
                    principal,
                    from,
                    to,
                    resolve,
                    token,
                    endpoints,
                    ca_file,
                    json,
                },
        } => {
            if !endpoints.is_empty() {
                let question = tutela::breach::Question {
                    principal: Some(principal),
                    subject: None,
                    from,
                    to,
                };
                let found = tutela::breach::ask(
                    &endpoints,
                    ca_file,
                    token.as_deref().unwrap_or_default(),
                    &question,
                )
                .await?;
                print!("{}", tutela::breach::render(&found, json));
                return Ok(());
            }
            let config = load(cli.config.as_ref(), common.overrides())?;
            // Only the tenant's dpo may turn pseudonyms back into subject ids.
            if resolve {
                let settings = tutela::auth::settings(&config)?;
                let verifier = tutela_policy::principal::TokenVerifier::new(&settings)
                    .map_err(anyhow::Error::msg)?;
                let caller = verifier
                    .verify(token.as_deref().unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
                if caller.tenant != tenant || !caller.roles.iter().any(|r| r == "dpo") {
                    anyhow::bail!(
                        "resolving pseudonyms to subject ids needs a dpo token of tenant {tenant:?}"
                    );
                }
            }
            let db = tutela_store::connect(&config.existing_database_url()?, 2).await?;
            let summary =
                tutela_policy::audit::accessed_by(&db, &tenant, &principal, from, to).await?;
            let resolved = if resolve {
                let pseudonyms: Vec<String> = summary.iter().map(|s| s.subject.clone()).collect();
                tutela_policy::audit::resolve_pseudonyms(&db, &tenant, &pseudonyms).await?
            } else {
                Default::default()
            };
            let rows: Vec<serde_json::Value> = summary
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "subject": s.subject,
                        "subject_id": resolved.get(&s.subject),
                        "categories": s.categories,
                        "accesses": s.accesses,
                        "first": s.first.to_rfc3339(),
                        "last": s.last.to_rfc3339(),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("subject\tsubject_id\tcategories\taccesses\tfirst\tlast");
                for s in &summary {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.subject,
                        resolved.get(&s.subject).map_or("-", String::as_str),
                        s.categories.join(","),
                        s.accesses,
                        s.first.to_rfc3339(),
                        s.last.to_rfc3339()
                    );
                }
                println!("{} subject(s)", summary.len());
            }
            Ok(())
        }
        Command::Register { json, common } => {
            let config = load(cli.config.as_ref(), common.overrides())?;
            let register = tutela::guard::load_register(&config)?;
            let recipients = match tutela::services::recipients_in_force(&config, &register).await {
                Ok(rows) => Some(rows),
                Err(e) => {
                    // The register itself still prints: it is the organisation's record even
                    // before any agreement exists; the note says why the recipients are missing.
                    eprintln!("recipients in force not shown: {e:#}");
                    None
                }
            };
            if json {
                let mut doc: serde_json::Value = serde_json::from_str(&register.to_json())?;
                if let (Some(rows), Some(obj)) = (&recipients, doc.as_object_mut()) {
                    obj.insert("recipients_in_force".into(), serde_json::to_value(rows)?);
                }
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", register.to_markdown());
                if let Some(rows) = &recipients {
                    print!("{}", tutela::services::recipients_markdown(rows));
                }
            }
            Ok(())
        }
        Command::Policies {
            schema,
            matrix,
            format,
        } => {
            let config = load(cli.config.as_ref(), Overrides::default())?;
            // Loading validates: a file that does not validate fails here, naming the error.
            let rules = tutela::guard::load_rules(&config)?;
            if matrix {
                let register = tutela::guard::load_register(&config)?;
                let pool = tutela_proto::descriptor_pool()
                    .map_err(|e| anyhow::anyhow!("descriptors: {e}"))?;
                let matrix = tutela_policy::matrix::access_matrix(
                    &rules,
                    &register,
                    &tutela_policy::MethodTable::from_pool(pool),
                );
                let text = match format {
                    MatrixFormat::Json => serde_json::to_string_pretty(&matrix)? + "\n",
                    MatrixFormat::Table => matrix_table(&matrix),
                };
                // An error, not a panic, when the reader goes away (`| head`).
                std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
            } else if schema {
                print!("{}", tutela_policy::access::DEFAULT_SCHEMA);
            } else if config.access.policies_file.as_os_str().is_empty() {
                print!("{}", tutela_policy::access::DEFAULT_POLICIES);
            } else {
                print!("{}", std::fs::read_to_string(&config.access.policies_file)?);
            }
            Ok(())
        }
        Command::DevCerts {
            dir,
            hosts,
            client,
            days,
        } => {
            for path in tutela::devcerts::write(&dir, &hosts, &client, days)? {
                println!("{}", path.display());
            }
            println!(
                "serve with TLS: TUTELA_SERVER__TLS__CERT_FILE={0}/server.pem \
                 TUTELA_SERVER__TLS__KEY_FILE={0}/server-key.pem \
                 TUTELA_SERVER__TLS__CA_FILE={0}/ca.pem; for mTLS also \
                 TUTELA_SERVER__TLS__CLIENT_CA_FILE={0}/ca.pem \
                 TUTELA_SERVER__TLS__CLIENT_CERTS=required",
                dir.display()
            );
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    tenant,
                    roles,
                    subject,
                    partner,
                    wards,
                    kind,
                    ttl,
                    data_dir,
                },
        } => {
            let config = load(
                cli.config.as_ref(),
                Overrides {
                    data_dir,
                    ..Overrides::default()
                },
            )?;
            let kind = kind.and_then(|k| {
                tutela_policy::PrincipalKind::ALL
                    .into_iter()
                    .find(|kind| kind.as_str() == k)
            });
            let request = tutela_policy::principal::TokenRequest {
                tenant,
                subject: subject.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                kind,
                roles,
                partner,
                wards,
                ttl: chrono::Duration::from_std(ttl).context("ttl is too long")?,
            };
            println!("{}", tutela::auth::issue(&config, &request)?);
            Ok(())
        }
        Command::Retention {
            command: RetentionCommand::Sweep { common, dry_run },
        } => {
            let config = load(cli.config.as_ref(), common.overrides())?;
            let report = tutela::retention::sweep(&config, dry_run).await?;
            print!("{report}");
            Ok(())
        }
        Command::Sharing {
            command:
                SharingCommand::Export {
                    partner,
                    purpose,
                    learners,
                    layout,
                    course,
                    out,
                    idempotency_key,
                    remote,
                    common,
                },
        } => {
            let remote = remote.remote(cli.config.as_ref(), common)?;
            let done = tutela::export::export(tutela::export::ExportRequest {
                remote,
                purpose,
                partner_id: partner,
                learners,
                layout: match layout {
                    ExportLayout::Csv => tutela_proto::sharing::FileLayout::CandidatesCsv,
                    ExportLayout::FunderXml => tutela_proto::sharing::FileLayout::FunderReturnXml,
                },
                out: out.clone(),
                idempotency_key,
                course_id: course.unwrap_or_default(),
            })
            .await?;
            println!(
                "delivery {}: {} record(s) written to {}, sha256 {}",
                done.delivery_id,
                done.records,
                out.display(),
                done.sha256
            );
            for (reason, count) in done.withheld {
                println!("not disclosed: {count} learner(s), {reason}");
            }
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::WhoAccessed {
                    subject,
                    from,
                    to,
                    endpoints,
                    ca_file,
                    token,
                    json,
                    common,
                },
        } => {
            let remote = RemoteArgs {
                endpoint: endpoints.first().cloned().unwrap_or_default(),
                ca_file: ca_file.clone(),
                token,
            }
            .remote(cli.config.as_ref(), common)?;
            let question = tutela::breach::Question {
                principal: None,
                subject: Some(subject),
                from,
                to,
            };
            let found = tutela::breach::ask(&endpoints, ca_file, &remote.token, &question).await?;
            print!("{}", tutela::breach::render(&found, json));
            Ok(())
        }
        Command::Rights {
            command:
                RightsCommand::Status {
                    overdue,
                    stuck,
                    json,
                    remote,
                    common,
                },
        } => {
            let remote = remote.remote(cli.config.as_ref(), common)?;
            let filter = tutela::rights::Filter { overdue, stuck };
            print!("{}", tutela::rights::status(&remote, filter, json).await?);
            Ok(())
        }
        Command::Rights {
            command:
                RightsCommand::Export {
                    subject,
                    out,
                    submit,
                    method,
                    evidence_reference,
                    wait_secs,
                    remote,
                    common,
                },
        } => {
            use tutela_proto::privacy::VerificationMethod as V;
            let remote = remote.remote(cli.config.as_ref(), common)?;
            let submit = match (submit, method, evidence_reference) {
                (true, Some(method), Some(evidence_reference)) => Some(tutela::rights::Submit {
                    method: match method {
                        Method::PhotoIdInPerson => V::PhotoIdInPerson,
                        Method::PhotoIdVideo => V::PhotoIdVideo,
                        Method::KnowledgeCheck => V::KnowledgeCheck,
                        Method::AuthenticatedAccount => V::AuthenticatedAccount,
                    },
                    evidence_reference,
                }),
                _ => None,
            };
            let done = tutela::rights::export(
                &remote,
                &subject,
                &out,
                submit,
                std::time::Duration::from_secs(wait_secs),
            )
            .await?;
            println!(
                "request {}: bundle of {} bytes written to {}, sha256 {}",
                done.request_id,
                done.bytes,
                out.display(),
                done.sha256
            );
            if done.partial {
                println!(
                    "some services' parts are missing (see index.html); `tutela rights status` shows why"
                );
            }
            Ok(())
        }
        Command::Migrate { common, services } => {
            let config = load(
                cli.config.as_ref(),
                Overrides {
                    services,
                    ..common.overrides()
                },
            )?;
            let _telemetry = tutela_telemetry::init(
                "tutela",
                config.telemetry.format.into(),
                &config.telemetry.filter,
            )?;
            tutela::services::resolve(&config.server.services)?;
            server::migrate(&config).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

/// The allowed rows of `matrix` as a plain table, with what the table leaves out.
fn matrix_table(matrix: &tutela_policy::matrix::AccessMatrix) -> String {
    use std::fmt::Write as _;
    let allowed: Vec<_> = matrix.entries.iter().filter(|e| e.allowed).collect();
    let rows: Vec<[String; 5]> = allowed
        .iter()
        .map(|e| {
            [
                e.role.clone(),
                e.rpc.clone(),
                e.purpose.to_owned(),
                if e.consent_required { "yes" } else { "no" }.to_owned(),
                e.readable.join(","),
            ]
        })
        .collect();
    let header = ["ROLE", "RPC", "PURPOSE", "CONSENT", "READABLE"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "\n{} of {} role × RPC × purpose combinations allowed; every other one is refused \
         (ACCESS_DENIED, or PURPOSE_NOT_REGISTERED for a purpose the register does not list).",
        allowed.len(),
        matrix.entries.len()
    );
    let _ = writeln!(
        out,
        "CONSENT yes: allowed only for a subject whose consent for the purpose is in the ledger. \
         A learner or guardian reaches only themselves or their wards."
    );
    if !matrix.message_token_rpcs.is_empty() {
        let _ = writeln!(
            out,
            "Authorised by a token in the message, with no role: {}",
            matrix.message_token_rpcs.join(", ")
        );
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_inner(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tutela: {err:#}");
            let missing_key = err
                .chain()
                .any(|e| e.downcast_ref::<tutela::keys::MissingKey>().is_some());
            let busy = err
                .chain()
                .any(|e| e.downcast_ref::<tutela::retention::SweepBusy>().is_some());
            if missing_key {
                ExitCode::from(tutela::keys::MISSING_KEY_EXIT)
            } else if busy {
                ExitCode::from(tutela::retention::SWEEP_BUSY_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The environment variables every argument of `command` and its subcommands reads.
    fn env_vars(command: &clap::Command, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(var) = arg.get_env() {
                out.push(var.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            env_vars(sub, out);
        }
    }

    #[test]
    fn no_command_line_variable_can_be_taken_for_a_setting() {
        let mut vars = Vec::new();
        env_vars(&Cli::command(), &mut vars);
        assert!(vars.iter().any(|v| v == "TUTELA_CLI_TOKEN"), "{vars:?}");
        for var in vars {
            assert!(
                var.starts_with(tutela::config::CLI_ENV_PREFIX)
                    || tutela::config::NOT_SETTINGS.contains(&var.as_str()),
                "{var}: a command's variable must start with {}",
                tutela::config::CLI_ENV_PREFIX
            );
            let set = [(var.clone(), "not-a-setting".to_owned())];
            let config = Config::load(None, set, &Overrides::default());
            assert!(config.is_ok(), "{var}: {:?}", config.err());
        }
    }
}
