//! ResolveAudience: the recipients of a send, streamed in batches.
//!
//! One scan of the topic and channel's confirmed subscriptions in key order, joined with the
//! contacts' wrapped data keys so that no row costs a query of its own. Who must be left out
//! although their subscription says confirmed — a `marketing` withdrawal in the consent ledger
//! newer than their last grant, a restriction of processing, an address on the suppression list —
//! is read first into memory: these sets are small next to the audience. Pages are decrypted on
//! the blocking pool while the next page is read, so the database and the CPU work side by side.

use std::collections::{HashMap, HashSet};

use sea_orm::{DbBackend, FromQueryResult, Statement, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tutela_policy::{Authorized, CategorySet, Error, Result};
use tutela_proto::common::{DataCategory, Purpose, SubjectRef};
use tutela_proto::subscription::{Channel, Recipient, ResolveAudienceResponse};
use tutela_store::vault::KEYS_TABLE;
use uuid::Uuid;

use super::{ONE_CLICK, State, Subscriptions, address_field, channel_name};

/// The stream ResolveAudience answers with.
pub type AudienceStream = ReceiverStream<std::result::Result<ResolveAudienceResponse, Status>>;

/// Rows read per query.
const PAGE: i64 = 5000;

#[derive(Debug)]
struct Row {
    subscription_id: String,
    contact_id: String,
    sealed_address: Vec<u8>,
    address_index: String,
    kek_id: String,
    wrapped_key: Option<Vec<u8>>,
}

/// `sql` with `$n` placeholders as the backend spells them.
fn placeholders(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(ch) = chars.next() {
                if ch == '$' {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(ch);
                }
            }
            out
        }
    }
}

/// Starts resolving the audience; the stream ends with the last batch, or with the error that
/// stopped it.
pub fn resolve(
    subs: Subscriptions,
    call: Authorized,
    topic: String,
    channel: Channel,
    batch: usize,
) -> AudienceStream {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        match produce(&subs, &call, &topic, channel, batch, &tx).await {
            Ok(count) => {
                // The decision record was durable before the first batch left; this one says
                // how many were sent. The count is not personal data.
                let note = format!(
                    "audience resolved: topic {topic}, channel {}, {count} recipients",
                    channel_name(channel)
                );
                let categories = CategorySet::of(&[DataCategory::Identity, DataCategory::Contact]);
                if let Err(err) = subs.audit.summarise(&call, categories, note).await {
                    let _ = tx.send(Err(err.into())).await;
                }
                tracing::info!(recipients = count, "audience resolved");
            }
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Contacts whose latest `marketing` entry for the purpose as a whole is a withdrawal, or whose
/// processing is restricted.
async fn excluded(subs: &Subscriptions, tenant: &str) -> Result<HashSet<String>> {
    #[derive(FromQueryResult)]
    struct Latest {
        subject_id: String,
        granted: bool,
        last: i64,
    }
    let backend = subs.db.get_database_backend();
    let marketing = Purpose::Marketing.short_name();
    let rows = Latest::find_by_statement(Statement::from_sql_and_values(
        backend,
        placeholders(
            backend,
            "SELECT subject_id, granted, MAX(seq) AS last FROM consent_entries \
             WHERE tenant = $1 AND purpose = $2 AND recipient = '' AND subject_id IN \
             (SELECT subject_id FROM consent_entries WHERE tenant = $3 AND purpose = $4 \
              AND recipient = '' AND granted = $5) \
             GROUP BY subject_id, granted",
        ),
        [
            Value::from(tenant),
            Value::from(marketing),
            Value::from(tenant),
            Value::from(marketing),
            Value::from(false),
        ],
    ))
    .all(&subs.db)
    .await?;
    let mut latest: HashMap<String, (i64, i64)> = HashMap::new();
    for r in rows {
        let entry = latest.entry(r.subject_id).or_default();
        if r.granted {
            entry.0 = r.last;
        } else {
            entry.1 = r.last;
        }
    }
    let mut out: HashSet<String> = latest
        .into_iter()
        .filter(|(_, (grant, withdrawal))| withdrawal > grant)
        .map(|(s, _)| s)
        .collect();

    #[derive(FromQueryResult)]
    struct Restriction {
        subject_id: String,
        restricted: bool,
    }
    let restrictions = Restriction::find_by_statement(Statement::from_sql_and_values(
        backend,
        placeholders(
            backend,
            "SELECT subject_id, restricted FROM restrictions WHERE tenant = $1 ORDER BY seq",
        ),
        [Value::from(tenant)],
    ))
    .all(&subs.db)
    .await?;
    let mut restricted: HashMap<String, bool> = HashMap::new();
    for r in restrictions {
        restricted.insert(r.subject_id, r.restricted);
    }
    out.extend(restricted.into_iter().filter(|(_, r)| *r).map(|(s, _)| s));
    Ok(out)
}

async fn suppressed(subs: &Subscriptions, tenant: &str, channel: &str) -> Result<HashSet<String>> {
    #[derive(FromQueryResult)]
    struct Suppressed {
        address_index: String,
    }
    let backend = subs.db.get_database_backend();
    Ok(
        Suppressed::find_by_statement(Statement::from_sql_and_values(
            backend,
            placeholders(
                backend,
                "SELECT address_index FROM suppressions WHERE tenant = $1 AND channel = $2",
            ),
            [Value::from(tenant), Value::from(channel)],
        ))
        .all(&subs.db)
        .await?
        .into_iter()
        .map(|s| s.address_index)
        .collect(),
    )
}

/// One page of the audience packed into a single result row: every subscription as
/// length-prefixed hex fields, concatenated. A driver hands rows over one at a time (sqlx's
/// SQLite worker wakes the reader per row), which for a million recipients cost more than
/// everything else together; packed, a page of 5,000 is one hand-over and one string.
#[derive(Debug, FromQueryResult)]
struct PackedPage {
    packed: Option<String>,
    last: Option<i64>,
    rows: i64,
}

/// The packing query. Every field is `<4 hex digits of length><value>`: text as it is (ids and
/// indexes are ASCII), binary as hex; the sequence number leads as 16 hex digits.
fn packed_sql(backend: DbBackend) -> String {
    let (field, blob, seq, agg) = match backend {
        DbBackend::Postgres => (
            "lpad(to_hex(length({0})), 4, '0') || {0}",
            "lpad(to_hex(coalesce(length({0}), 0)), 4, '0') || coalesce(encode({0}, 'hex'), '')",
            "lpad(to_hex(s.seq), 16, '0')",
            "string_agg(rec, '' ORDER BY seq)",
        ),
        _ => (
            "printf('%04x', length({0})) || {0}",
            "printf('%04x', coalesce(length({0}), 0)) || coalesce(hex({0}), '')",
            "printf('%016x', s.seq)",
            "group_concat(rec, '')",
        ),
    };
    let f = |col: &str| field.replace("{0}", col);
    let b = |col: &str| blob.replace("{0}", col);
    let record = [
        seq.to_owned(),
        f("s.subscription_id"),
        f("s.contact_id"),
        f("s.address_index"),
        b("s.sealed_address"),
    ]
    .join(" || ");
    let key = [f("k.kek_id"), b("k.wrapped_key")].join(" || ");
    let keyed = "k.scope = $1 AND k.tenant = s.tenant AND k.subject_id = s.contact_id";
    let from = match backend {
        // A correlated look-up on the key table's primary key, not a join: a join's plan
        // depends on statistics, and right after a bulk import PostgreSQL planned it as a scan
        // of all the tenant's keys per subscription. A subscription without a key row gets
        // empty key fields and fails to open, never silently drops out.
        DbBackend::Postgres => format!(
            "SELECT s.seq AS seq, {record} || coalesce((SELECT {key} FROM {KEYS_TABLE} k \
             WHERE {keyed}), '00000000') AS rec FROM subscriptions s"
        ),
        // SQLite (never ANALYZEd here) plans the join as a primary-key look-up per row, and a
        // fifth faster than the correlated form.
        _ => format!(
            "SELECT s.seq AS seq, {record} || {key} AS rec FROM subscriptions s \
             JOIN {KEYS_TABLE} k ON {keyed}"
        ),
    };
    format!(
        "SELECT {agg} AS packed, MAX(seq) AS last, COUNT(*) AS rows FROM ({from} \
         WHERE s.tenant = $2 AND s.topic = $3 AND s.channel = $4 AND s.state = $5 AND s.seq > $6 \
         ORDER BY s.seq LIMIT $7) page"
    )
}

/// Reads the fields [`packed_sql`] wrote.
struct Unpack<'a> {
    rest: &'a str,
}

impl<'a> Unpack<'a> {
    fn take(&mut self, n: usize) -> Result<&'a str> {
        if self.rest.len() < n || !self.rest.is_char_boundary(n) {
            return Err(Error::internal("truncated audience page"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn number(&mut self, digits: usize) -> Result<u64> {
        u64::from_str_radix(self.take(digits)?, 16).map_err(Error::internal)
    }

    fn text(&mut self) -> Result<String> {
        let n = usize::try_from(self.number(4)?).map_err(Error::internal)?;
        Ok(self.take(n)?.to_owned())
    }

    fn blob(&mut self) -> Result<Vec<u8>> {
        let n = usize::try_from(self.number(4)?).map_err(Error::internal)?;
        hex::decode(self.take(n * 2)?).map_err(Error::internal)
    }

    fn rows(packed: &str) -> Result<Vec<Row>> {
        let mut u = Unpack { rest: packed };
        let mut rows = Vec::new();
        while !u.rest.is_empty() {
            // The sequence number orders the page in SQL; the cursor comes from MAX(seq).
            u.number(16)?;
            let subscription_id = u.text()?;
            let contact_id = u.text()?;
            let address_index = u.text()?;
            let sealed_address = u.blob()?;
            let kek_id = u.text()?;
            let wrapped = u.blob()?;
            rows.push(Row {
                subscription_id,
                contact_id,
                sealed_address,
                address_index,
                kek_id,
                wrapped_key: (!wrapped.is_empty()).then_some(wrapped),
            });
        }
        Ok(rows)
    }
}

/// The next page after `after`: the packed rows, how many there are and the last sequence
/// number (the next page's cursor).
async fn page(
    subs: &Subscriptions,
    tenant: &str,
    topic: &str,
    channel: &str,
    after: i64,
) -> Result<(String, i64, i64)> {
    let backend = subs.db.get_database_backend();
    let page = PackedPage::find_by_statement(Statement::from_sql_and_values(
        backend,
        placeholders(backend, &packed_sql(backend)),
        [
            Value::from(subs.vault.scope()),
            Value::from(tenant),
            Value::from(topic),
            Value::from(channel),
            Value::from(State::Confirmed.as_str()),
            Value::from(after),
            Value::from(PAGE),
        ],
    ))
    .one(&subs.db)
    .await?
    .ok_or_else(|| Error::internal("an aggregate query returned no row"))?;
    Ok((
        page.packed.unwrap_or_default(),
        page.rows,
        page.last.unwrap_or(after),
    ))
}

/// The recipients of one page, in order, leaving out `excluded` contacts and `suppressed`
/// addresses. CPU-bound: runs on the blocking pool.
fn recipients(
    subs: &Subscriptions,
    tenant: &str,
    email: bool,
    packed: &str,
    excluded: &HashSet<String>,
    suppressed: &HashSet<String>,
) -> Result<Vec<Recipient>> {
    let rows = Unpack::rows(packed)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if excluded.contains(&row.contact_id) || suppressed.contains(&row.address_index) {
            continue;
        }
        let key =
            subs.vault
                .unwrap_stored(tenant, &row.contact_id, &row.kek_id, row.wrapped_key)?;
        let address = key.open_string(&address_field(&row.subscription_id), &row.sealed_address)?;
        let id = Uuid::parse_str(&row.subscription_id).map_err(Error::internal)?;
        let token = subs.tokens.unsubscribe(id);
        let (list_unsubscribe, list_unsubscribe_post) = if email {
            (
                format!("<{}>", subs.unsubscribe_url(&token)),
                ONE_CLICK.to_owned(),
            )
        } else {
            (String::new(), String::new())
        };
        out.push(Recipient {
            subscription_id: row.subscription_id,
            contact: Some(SubjectRef {
                subject_id: row.contact_id,
            }),
            address,
            unsubscribe_token: token,
            list_unsubscribe,
            list_unsubscribe_post,
        });
    }
    Ok(out)
}

async fn produce(
    subs: &Subscriptions,
    call: &Authorized,
    topic: &str,
    channel: Channel,
    batch: usize,
    tx: &mpsc::Sender<std::result::Result<ResolveAudienceResponse, Status>>,
) -> Result<u64> {
    let tenant = call.tenant().to_owned();
    let channel_name = channel_name(channel);
    let excluded = std::sync::Arc::new(excluded(subs, &tenant).await?);
    let suppressed = std::sync::Arc::new(suppressed(subs, &tenant, channel_name).await?);
    let email = channel == Channel::Email;
    let mut count = 0u64;
    let mut pending: Vec<Recipient> = Vec::with_capacity(batch);
    let (mut packed, mut rows, mut after) = page(subs, &tenant, topic, channel_name, 0).await?;
    while rows > 0 {
        let full = rows == PAGE;
        let decrypting = {
            let (subs, tenant) = (subs.clone(), tenant.clone());
            let (excluded, suppressed) = (excluded.clone(), suppressed.clone());
            tokio::task::spawn_blocking(move || {
                recipients(&subs, &tenant, email, &packed, &excluded, &suppressed)
            })
        };
        // Read the next page while this one is decrypted.
        let next = if full {
            page(subs, &tenant, topic, channel_name, after).await?
        } else {
            (String::new(), 0, after)
        };
        let decrypted = decrypting.await.map_err(Error::internal)??;
        for recipient in decrypted {
            pending.push(recipient);
            if pending.len() == batch {
                count += pending.len() as u64;
                let recipients = std::mem::replace(&mut pending, Vec::with_capacity(batch));
                if tx
                    .send(Ok(ResolveAudienceResponse { recipients }))
                    .await
                    .is_err()
                {
                    // The caller went away: stop reading, and audit what was sent.
                    return Ok(count);
                }
            }
        }
        (packed, rows, after) = next;
    }
    if !pending.is_empty() {
        count += pending.len() as u64;
        let _ = tx
            .send(Ok(ResolveAudienceResponse {
                recipients: pending,
            }))
            .await;
    }
    Ok(count)
}
