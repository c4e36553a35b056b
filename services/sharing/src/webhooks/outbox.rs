//! The durable outbox: [`enqueue`] writes a message in the caller's transaction, and
//! [`Webhooks::deliver_due`] sends what is due, signed, to the partner's endpoint, following the
//! Standard Webhooks retry schedule.
//!
//! Messages are thin: the event type and ids only ("results ready, pull them"), so a webhook
//! never carries personal data and a leaked or misdirected one discloses nothing; the partner
//! pulls the data itself over its authenticated channel.
//!
//! Delivery is at least once: a message is marked after its POST, so a crash between the two
//! sends it again, with the same `webhook-id` the receiver deduplicates on.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tutela_policy::scope::Tenant;
use tutela_policy::{Error, Result};
use url::{Host, Position, Url};

use super::entity::{endpoint, message};
use super::signature::Secret;
use super::ssrf::{Refusal, TargetRules};
use crate::keys::PartnerKeys;

/// A message waiting for its next attempt.
pub const PENDING: &str = "pending";
/// A message its endpoint answered with 2xx.
pub const DELIVERED: &str = "delivered";
/// A message that failed every attempt of the schedule.
pub const FAILED: &str = "failed";
/// A message not sent because its endpoint was disabled (it answered 410 Gone) or removed.
pub const ENDPOINT_DISABLED: &str = "endpoint_disabled";

/// Why an endpoint that answered 410 Gone was disabled.
pub const GONE: &str = "gone: the endpoint answered 410";

/// How long one attempt may take, connection and TLS included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The waits after the 1st, 2nd, ... failed attempt (the first attempt is immediate): the
/// Standard Webhooks example schedule as Svix runs it. After the last, the message has failed.
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// How many messages one page of the worker reads.
const PAGE: u64 = 100;

/// The most attempts one run makes, so that a backlog cannot hold the sweep's lease for ever;
/// the rest stays due for the next run.
const MAX_PER_RUN: u64 = 1000;

/// Writes a `event_type` message for `partner_id` within `txn`, the caller's transaction, so
/// that it is sent if and only if the change it announces commits. `ids` is a JSON object of
/// ids only (`{"delivery_id": "…"}`): its values must be strings of at most 128 characters of
/// `[A-Za-z0-9._:-]`, so that no personal data can slip into a webhook. The body sent is `ids`
/// with `type` and `partner_id` added. `now` is the caller's clock.
///
/// A no-op (`None`) when the partner has no enabled endpoint; otherwise the message's id.
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    tenant: &Tenant,
    partner_id: &str,
    event_type: &str,
    ids: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    if !is_event_type(event_type) {
        return Err(Error::internal("a webhook event type of the wrong shape"));
    }
    let Some(fields) = ids.as_object() else {
        return Err(Error::internal("webhook ids that are not a JSON object"));
    };
    let mut body = serde_json::Map::new();
    for (name, value) in fields {
        match value.as_str() {
            Some(id) if is_id(id) && is_id(name) && name != "type" => {
                body.insert(name.clone(), serde_json::Value::String(id.to_owned()));
            }
            _ => return Err(Error::internal("a webhook field that is not an id")),
        }
    }
    body.insert("type".into(), event_type.into());
    body.insert("partner_id".into(), partner_id.into());
    let enabled = tenant
        .find::<endpoint::Entity>()
        .filter(endpoint::Column::PartnerId.eq(partner_id))
        .filter(endpoint::Column::Enabled.eq(true))
        .one(txn)
        .await?;
    if enabled.is_none() {
        return Ok(None);
    }
    let message_id = uuid::Uuid::now_v7().to_string();
    message::ActiveModel {
        message_id: Set(message_id.clone()),
        tenant: Set(tenant.as_str().to_owned()),
        partner_id: Set(partner_id.to_owned()),
        event_type: Set(event_type.to_owned()),
        body: Set(serde_json::Value::Object(body).to_string()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        state: Set(PENDING.to_owned()),
        last_status: Set(None),
        last_error: Set(None),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(Some(message_id))
}

fn is_event_type(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// What one run of [`Webhooks::deliver_due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Messages their endpoint accepted (2xx).
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub retrying: u64,
    /// Messages that failed their last attempt.
    pub failed: u64,
    /// Messages not sent because their endpoint is disabled or gone.
    pub endpoint_disabled: u64,
}

impl Delivered {
    /// How many messages the run settled or rescheduled.
    pub fn total(&self) -> u64 {
        self.delivered + self.retrying + self.failed + self.endpoint_disabled
    }
}

impl fmt::Display for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} webhook(s) delivered, {} to retry, {} failed, {} for disabled endpoints",
            self.delivered, self.retrying, self.failed, self.endpoint_disabled
        )
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No answer: why, in words that never hold the URL or a body.
    Failed(&'static str),
}

/// An endpoint as the worker uses it during one run.
struct Target {
    url: String,
    secret: Secret,
}

/// A partner's endpoint for one run: `Ok(None)` when it has none enabled, `Err` when its
/// messages wait for the next run, untouched: its secret could not be opened, or an attempt
/// failed this run (so that an endpoint that times out costs one 10 s attempt per run, not one
/// per message, while the sweep holds its lease).
type Lookup = std::result::Result<Option<Arc<Target>>, ()>;

/// Sends the outbox's due messages. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    db: DatabaseConnection,
    keys: PartnerKeys,
    rules: TargetRules,
    tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// A worker over `db` (migrated), opening secrets with `keys`, sending where `rules` allow,
    /// over TLS that trusts the Mozilla roots.
    pub fn new(
        db: DatabaseConnection,
        keys: PartnerKeys,
        rules: TargetRules,
    ) -> std::result::Result<Self, rustls::Error> {
        Self::trusting(db, keys, rules, Vec::new())
    }

    /// [`Webhooks::new`] trusting `extra_roots` beside the Mozilla roots: for tests' receivers
    /// with a self-signed certificate (and, later, partners behind a private CA).
    pub fn trusting(
        db: DatabaseConnection,
        keys: PartnerKeys,
        rules: TargetRules,
        extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> std::result::Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in extra_roots {
            roots.add(root)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            db,
            keys,
            rules,
            tls: Arc::new(tls),
        })
    }

    /// How many messages are due at `now` (for a dry run), counting at most [`MAX_PER_RUN`].
    pub async fn count_due(&self, now: DateTime<Utc>) -> Result<u64> {
        let due = message::Entity::find()
            .select_only()
            .column(message::Column::MessageId)
            .filter(message::Column::State.eq(PENDING))
            .filter(message::Column::NextAttemptAt.lte(now))
            .limit(MAX_PER_RUN)
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        Ok(due.len() as u64)
    }

    /// Makes one attempt at every message due at `now`, oldest due first, a page at a time
    /// (at most [`MAX_PER_RUN`] per run). Across tenants: this is the service's own job, not a
    /// caller's, so it reads the outbox unscoped and each endpoint in the message's tenant.
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<Delivered> {
        let mut report = Delivered::default();
        let mut targets: HashMap<(String, String), Lookup> = HashMap::new();
        let mut after: Option<(DateTime<Utc>, String)> = None;
        while report.total() < MAX_PER_RUN {
            let mut query = message::Entity::find()
                .filter(message::Column::State.eq(PENDING))
                .filter(message::Column::NextAttemptAt.lte(now))
                .order_by_asc(message::Column::NextAttemptAt)
                .order_by_asc(message::Column::MessageId)
                .limit(PAGE);
            // Keyset paging: a message whose update failed is not picked again in this run.
            if let Some((at, id)) = &after {
                query = query.filter(
                    Condition::any()
                        .add(message::Column::NextAttemptAt.gt(*at))
                        .add(
                            Condition::all()
                                .add(message::Column::NextAttemptAt.eq(*at))
                                .add(message::Column::MessageId.gt(id.clone())),
                        ),
                );
            }
            let page = query.all(&self.db).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.next_attempt_at, last.message_id.clone()));
            for m in page {
                let key = (m.tenant.clone(), m.partner_id.clone());
                let target = match targets.get(&key) {
                    Some(t) => t.clone(),
                    None => {
                        // One partner's unreadable secret must not hold up every other partner.
                        let t = self.target(&m).await.map_err(|err| {
                            tracing::error!(
                                partner_id = %m.partner_id,
                                error = %err,
                                "webhook endpoint unusable: its messages wait"
                            );
                        });
                        targets.insert(key.clone(), t.clone());
                        t
                    }
                };
                let Ok(target) = target else { continue };
                let Some(target) = target else {
                    // Already given up with the rest when its endpoint answered 410 this run.
                    if self.settle(&m, ENDPOINT_DISABLED, None, None, now).await? {
                        report.endpoint_disabled += 1;
                    }
                    continue;
                };
                let outcome = self.attempt(&target, &m, now).await;
                match outcome {
                    Outcome::Status(s) if (200..300).contains(&s) => {
                        if self.settle(&m, DELIVERED, Some(s), None, now).await? {
                            report.delivered += 1;
                        }
                    }
                    Outcome::Status(410) => {
                        report.endpoint_disabled += self.disable(&m, now).await?;
                        targets.insert(key, Ok(None));
                        tracing::warn!(
                            partner_id = %m.partner_id,
                            "webhook endpoint answered 410 gone: disabled"
                        );
                    }
                    other => {
                        let (status, error) = match other {
                            Outcome::Status(s) => (Some(s), format!("HTTP status {s}")),
                            Outcome::Failed(why) => (None, why.to_owned()),
                        };
                        let attempts = m.attempts.saturating_add(1);
                        let delay = usize::try_from(attempts - 1)
                            .ok()
                            .and_then(|n| RETRY_DELAYS.get(n));
                        match delay {
                            Some(delay) => {
                                let next = now + jittered(*delay);
                                if self.retry(&m, status, &error, next).await? {
                                    report.retrying += 1;
                                }
                            }
                            None => {
                                if self.settle(&m, FAILED, status, Some(error), now).await? {
                                    report.failed += 1;
                                }
                            }
                        }
                        tracing::info!(
                            message_id = %m.message_id,
                            partner_id = %m.partner_id,
                            attempts,
                            status,
                            "webhook attempt failed"
                        );
                        targets.insert(key, Err(()));
                    }
                }
            }
        }
        Ok(report)
    }

    /// The partner's enabled endpoint with its secret opened; `None` when it has none.
    async fn target(&self, m: &message::Model) -> Result<Option<Arc<Target>>> {
        let row = Tenant::of_row(m)?
            .find::<endpoint::Entity>()
            .filter(endpoint::Column::PartnerId.eq(m.partner_id.as_str()))
            .filter(endpoint::Column::Enabled.eq(true))
            .one(&self.db)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let secret = self
            .keys
            .open_webhook_secret(&m.tenant, &m.partner_id, &row.sealed_secret)
            .await?;
        Ok(Some(Arc::new(Target {
            url: row.url,
            secret,
        })))
    }

    /// One POST of `m` to `target`, within [`ATTEMPT_TIMEOUT`].
    async fn attempt(&self, target: &Target, m: &message::Model, now: DateTime<Utc>) -> Outcome {
        // Checked again here, not only at registration: the settings may have changed since.
        let checked = match self.rules.check_url(&target.url) {
            Ok(url) => self.rules.resolve(&url).await.map(|addrs| (url, addrs)),
            Err(refusal) => Err(refusal),
        };
        let (url, addrs) = match checked {
            Ok(checked) => checked,
            Err(Refusal::NotPublic) => {
                return Outcome::Failed("the endpoint's address is not public");
            }
            Err(Refusal::Unresolved) => {
                return Outcome::Failed("the endpoint's host does not resolve");
            }
            Err(_) => return Outcome::Failed("the endpoint's URL is not allowed"),
        };
        let timestamp = now.timestamp();
        let signature = target
            .secret
            .sign(&m.message_id, timestamp, m.body.as_bytes());
        let request = http::Request::post(&url[Position::BeforePath..])
            .header(
                http::header::HOST,
                &url[Position::BeforeHost..Position::AfterPort],
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "tutela-webhooks")
            .header("webhook-id", &m.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(m.body.clone())));
        let Ok(request) = request else {
            return Outcome::Failed("the request could not be built");
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.send(&url, &addrs, request)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed("timed out after 10 s"),
        }
    }

    /// Connects to the first of `addrs` that answers (all of them checked), over TLS for https,
    /// and sends `request` on that connection.
    async fn send(
        &self,
        url: &Url,
        addrs: &[SocketAddr],
        request: http::Request<Full<Bytes>>,
    ) -> Outcome {
        let mut stream = None;
        for addr in addrs {
            if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                stream = Some(s);
                break;
            }
        }
        let Some(stream) = stream else {
            return Outcome::Failed("could not connect to the endpoint");
        };
        if url.scheme() != "https" {
            return exchange(stream, request).await;
        }
        let name = match url.host() {
            Some(Host::Domain(d)) => rustls::pki_types::ServerName::try_from(d.to_owned()).ok(),
            Some(Host::Ipv4(ip)) => Some(rustls::pki_types::ServerName::IpAddress(
                std::net::IpAddr::V4(ip).into(),
            )),
            Some(Host::Ipv6(ip)) => Some(rustls::pki_types::ServerName::IpAddress(
                std::net::IpAddr::V6(ip).into(),
            )),
            None => None,
        };
        let Some(name) = name else {
            return Outcome::Failed("the endpoint's host is not a TLS server name");
        };
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        match connector.connect(name, stream).await {
            Ok(tls) => exchange(tls, request).await,
            Err(_) => Outcome::Failed("the TLS handshake failed"),
        }
    }

    /// Records the message's final state (or, for a disabled endpoint, why it was not sent).
    async fn settle(
        &self,
        m: &message::Model,
        state: &str,
        status: Option<u16>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let attempts = if state == ENDPOINT_DISABLED {
            m.attempts
        } else {
            m.attempts.saturating_add(1)
        };
        // A notice the endpoint would not take fails with its message, in one transaction.
        let gave_up = match state {
            FAILED => Some(format!(
                "webhook: every attempt of the retry schedule failed (last: {})",
                error.as_deref().unwrap_or("unknown")
            )),
            ENDPOINT_DISABLED => Some("webhook: the partner's endpoint is disabled".to_owned()),
            _ => None,
        };
        let txn = tutela_store::begin(&self.db).await?;
        let done = self
            .update(m)?
            .col_expr(message::Column::State, Expr::value(state))
            .col_expr(message::Column::Attempts, Expr::value(attempts))
            .col_expr(message::Column::NextAttemptAt, Expr::value(now))
            .col_expr(
                message::Column::LastStatus,
                Expr::value(status.map(i32::from)),
            )
            .col_expr(message::Column::LastError, Expr::value(error))
            .exec(&txn)
            .await?;
        let settled = done.rows_affected == 1;
        if let (true, Some(reason), Some(notice)) = (settled, gave_up, notice_of(m)) {
            crate::notices::undeliverable(&txn, &Tenant::of_row(m)?, vec![notice], &reason).await?;
        }
        txn.commit().await?;
        Ok(settled)
    }

    async fn retry(
        &self,
        m: &message::Model,
        status: Option<u16>,
        error: &str,
        next: DateTime<Utc>,
    ) -> Result<bool> {
        let done = self
            .update(m)?
            .col_expr(
                message::Column::Attempts,
                Expr::value(m.attempts.saturating_add(1)),
            )
            .col_expr(message::Column::NextAttemptAt, Expr::value(next))
            .col_expr(
                message::Column::LastStatus,
                Expr::value(status.map(i32::from)),
            )
            .col_expr(message::Column::LastError, Expr::value(error))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// An update of `m` that applies only while it is pending at the attempt count it was read
    /// with: a second worker (should the lease ever be lost mid-run) cannot count an attempt twice.
    fn update(&self, m: &message::Model) -> Result<sea_orm::UpdateMany<message::Entity>> {
        Ok(Tenant::of_row(m)?
            .update::<message::Entity>()
            .filter(message::Column::MessageId.eq(m.message_id.as_str()))
            .filter(message::Column::State.eq(PENDING))
            .filter(message::Column::Attempts.eq(m.attempts)))
    }

    /// The endpoint of `m` answered 410 Gone: disables it and gives up its pending messages, `m`
    /// among them, in one transaction. How many messages that was.
    async fn disable(&self, m: &message::Model, now: DateTime<Utc>) -> Result<u64> {
        let scope = Tenant::of_row(m)?;
        let txn = tutela_store::begin(&self.db).await?;
        scope
            .update::<endpoint::Entity>()
            .col_expr(endpoint::Column::Enabled, Expr::value(false))
            .col_expr(endpoint::Column::DisabledReason, Expr::value(GONE))
            .col_expr(endpoint::Column::UpdatedAt, Expr::value(now))
            .filter(endpoint::Column::PartnerId.eq(m.partner_id.as_str()))
            .exec(&txn)
            .await?;
        self.update(m)?
            .col_expr(
                message::Column::Attempts,
                Expr::value(m.attempts.saturating_add(1)),
            )
            .col_expr(message::Column::LastStatus, Expr::value(Some(410)))
            .col_expr(message::Column::LastError, Expr::value(Some(GONE)))
            .exec(&txn)
            .await?;
        let given_up = scope
            .find::<message::Entity>()
            .filter(message::Column::PartnerId.eq(m.partner_id.as_str()))
            .filter(message::Column::State.eq(PENDING))
            .filter(message::Column::EventType.eq(crate::notices::NOTICE_READY))
            .all(&txn)
            .await?;
        let gone = scope
            .update::<message::Entity>()
            .col_expr(message::Column::State, Expr::value(ENDPOINT_DISABLED))
            .filter(message::Column::PartnerId.eq(m.partner_id.as_str()))
            .filter(message::Column::State.eq(PENDING))
            .exec(&txn)
            .await?;
        crate::notices::undeliverable(
            &txn,
            &scope,
            given_up.iter().filter_map(notice_of).collect(),
            &format!("webhook: {GONE}"),
        )
        .await?;
        txn.commit().await?;
        Ok(gone.rows_affected)
    }
}

/// The notice a `notice.ready` message announces; `None` for other events.
fn notice_of(m: &message::Model) -> Option<String> {
    if m.event_type != crate::notices::NOTICE_READY {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&m.body).ok()?;
    body.get("notice_id")?.as_str().map(str::to_owned)
}

/// Sends `request` over `io` as HTTP/1.1 and reads the status; the body is not read.
async fn exchange<IO>(io: IO, request: http::Request<Full<Bytes>>) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await
    else {
        return Outcome::Failed("the HTTP connection failed");
    };
    let driver = tokio::spawn(connection);
    let outcome = match sender.send_request(request).await {
        Ok(response) => Outcome::Status(response.status().as_u16()),
        Err(_) => Outcome::Failed("the endpoint did not answer the request"),
    };
    // The body is never read: drop the connection with it.
    driver.abort();
    outcome
}

/// `delay` plus up to a tenth of it at random, so that retries after a shared outage spread out.
fn jittered(delay: Duration) -> chrono::Duration {
    let spread = delay.as_millis() / 10;
    let extra = match spread {
        0 => 0,
        n => uuid::Uuid::new_v4().as_u128() % n,
    };
    let total = delay.as_millis().saturating_add(extra);
    chrono::Duration::milliseconds(i64::try_from(total).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_svix_and_jitter_stays_within_a_tenth() {
        let minutes: Vec<u64> = RETRY_DELAYS.iter().map(|d| d.as_secs()).collect();
        assert_eq!(minutes, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        for delay in RETRY_DELAYS {
            for _ in 0..20 {
                let j = jittered(delay).num_milliseconds();
                let base = i64::try_from(delay.as_millis()).unwrap();
                assert!(j >= base && j <= base + base / 10, "{j} for {base}");
            }
        }
    }

    #[test]
    fn event_types_and_ids_have_a_narrow_shape() {
        assert!(is_event_type("delivery.ready"));
        assert!(!is_event_type("Delivery Ready"));
        assert!(!is_event_type(""));
        assert!(is_id("0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77"));
        assert!(!is_id("ada@example.org"));
        assert!(!is_id("Ada Lovelace"));
        assert!(!is_id(&"a".repeat(129)));
    }
}
