//! ResolveAudience: the recipients of a send, streamed in batches.
//!
//! One scan of the topic and channel's confirmed subscriptions in key order, joined with the
//! contacts' wrapped data keys so that no row costs a query of its own. Who must be left out
//! although their subscription says confirmed — a `marketing` withdrawal in the consent ledger
//! newer than their last grant, a restriction of processing, an address on the suppression list —
//! is read first into memory: these sets are small next to the audience. Pages are decrypted on
//! the blocking pool while the next page is read, so the database and the CPU work side by side.

use std::collections::HashSet;
use std::sync::Arc;

use sea_orm::{DbBackend, FromQueryResult, Statement, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tutela_policy::{Authorized, CategorySet, Error, Result};
use tutela_proto::common::{DataCategory, SubjectRef};
use tutela_proto::subscription::{Channel, Recipient, ResolveAudienceResponse};
use tutela_store::placeholders;
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

/// One page of the audience packed into a single result row: every subscription as a record of
/// separated fields, concatenated. A driver hands rows over one at a time (sqlx's
/// SQLite worker wakes the reader per row), which for a million recipients cost more than
/// everything else together; packed, a page of 5,000 is one hand-over and one string.
#[derive(Debug, FromQueryResult)]
struct PackedPage {
    packed: Option<String>,
    last: Option<i64>,
    rows: i64,
}

/// The packing query. A record is `id,contact,index,address,kek,wrapped;` with the ids and the
/// index as stored (UUIDs and hex, which never hold `,` or `;`) and every other field as hex:
/// separators instead of length prefixes spare SQLite a printf per field.
fn packed_sql(backend: DbBackend) -> String {
    let (hex, text_hex, agg) = match backend {
        DbBackend::Postgres => (
            "coalesce(encode({0}, 'hex'), '')",
            "encode(convert_to({0}, 'UTF8'), 'hex')",
            "string_agg(rec, '' ORDER BY seq)",
        ),
        _ => (
            "coalesce(hex({0}), '')",
            "hex({0})",
            "group_concat(rec, '')",
        ),
    };
    let record = format!(
        "s.subscription_id || ',' || s.contact_id || ',' || s.address_index || ',' || {}",
        hex.replace("{0}", "s.sealed_address")
    );
    let key = format!(
        "{} || ',' || {}",
        text_hex.replace("{0}", "k.kek_id"),
        hex.replace("{0}", "k.wrapped_key")
    );
    let keyed = "k.scope = $1 AND k.tenant = s.tenant AND k.subject_id = s.contact_id";
    let from = match backend {
        // A correlated look-up on the key table's primary key, not a join: a join's plan
        // depends on statistics, and right after a bulk import PostgreSQL planned it as a scan
        // of all the tenant's keys per subscription. A subscription without a key row gets
        // empty key fields and fails to open, never silently drops out.
        DbBackend::Postgres => format!(
            "SELECT s.seq AS seq, {record} || ',' || coalesce((SELECT {key} FROM {KEYS_TABLE} k \
             WHERE {keyed}), ',') || ';' AS rec FROM subscriptions s"
        ),
        // SQLite (never ANALYZEd here) plans the join as a primary-key look-up per row, and a
        // fifth faster than the correlated form.
        _ => format!(
            "SELECT s.seq AS seq, {record} || ',' || {key} || ';' AS rec FROM subscriptions s \
             JOIN {KEYS_TABLE} k ON {keyed}"
        ),
    };
    format!(
        "SELECT {agg} AS packed, MAX(seq) AS last, COUNT(*) AS rows FROM ({from} \
         WHERE s.tenant = $2 AND s.topic = $3 AND s.channel = $4 AND s.state = $5 AND s.seq > $6 \
         AND s.seq <= $7 ORDER BY s.seq LIMIT $8) page"
    )
}

/// The rows of a packed page (see [`packed_sql`]).
fn unpack(packed: &str) -> Result<Vec<Row>> {
    let broken = || Error::internal("malformed audience page");
    let decode = |h: &str| hex::decode(h).map_err(Error::internal);
    let mut rows = Vec::new();
    for record in packed.split_terminator(';') {
        let mut f = record.split(',');
        let mut next = || f.next().ok_or_else(broken);
        let subscription_id = next()?.to_owned();
        let contact_id = next()?.to_owned();
        let address_index = next()?.to_owned();
        let sealed_address = decode(next()?)?;
        let kek_id = String::from_utf8(decode(next()?)?).map_err(Error::internal)?;
        let wrapped = decode(next()?)?;
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

/// The next page after `after`: the packed rows, how many there are and the last sequence
/// number (the next page's cursor).
async fn page(
    subs: &Subscriptions,
    tenant: &str,
    topic: &str,
    channel: &str,
    (after, upto): (i64, i64),
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
            Value::from(upto),
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
    let rows = unpack(packed)?;
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

/// The lowest and highest sequence number of the audience's subscriptions.
async fn bounds(
    subs: &Subscriptions,
    tenant: &str,
    topic: &str,
    channel: &str,
) -> Result<(i64, i64)> {
    #[derive(FromQueryResult)]
    struct Bounds {
        lo: Option<i64>,
        hi: Option<i64>,
    }
    let backend = subs.db.get_database_backend();
    let b = Bounds::find_by_statement(Statement::from_sql_and_values(
        backend,
        placeholders(
            backend,
            "SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM subscriptions \
             WHERE tenant = $1 AND topic = $2 AND channel = $3 AND state = $4",
        ),
        [
            Value::from(tenant),
            Value::from(topic),
            Value::from(channel),
            Value::from(State::Confirmed.as_str()),
        ],
    ))
    .one(&subs.db)
    .await?;
    Ok(b.and_then(|b| b.lo.zip(b.hi)).unwrap_or((0, -1)))
}

/// What a reader needs, owned, so that it can run as a task of its own.
#[derive(Clone)]
struct Scan {
    subs: Subscriptions,
    tenant: String,
    topic: String,
    channel: &'static str,
    email: bool,
    excluded: Arc<HashSet<String>>,
    suppressed: Arc<HashSet<String>>,
}

impl Scan {
    /// Reads and decrypts the subscriptions with sequence numbers in `(after, upto]` page by
    /// page, each page decrypted on the blocking pool while the next is read, and sends each
    /// page's recipients to `out` until it is closed.
    async fn range(
        self,
        (after, upto): (i64, i64),
        out: mpsc::Sender<Result<Vec<Recipient>>>,
    ) -> Result<()> {
        let s = &self;
        let (mut packed, mut rows, mut after) =
            page(&s.subs, &s.tenant, &s.topic, s.channel, (after, upto)).await?;
        while rows > 0 {
            let full = rows == PAGE;
            let decrypting = {
                let s = self.clone();
                tokio::task::spawn_blocking(move || {
                    recipients(
                        &s.subs,
                        &s.tenant,
                        s.email,
                        &packed,
                        &s.excluded,
                        &s.suppressed,
                    )
                })
            };
            let next = if full {
                page(&s.subs, &s.tenant, &s.topic, s.channel, (after, upto)).await?
            } else {
                (String::new(), 0, after)
            };
            let decrypted = decrypting.await.map_err(Error::internal)??;
            if out.send(Ok(decrypted)).await.is_err() {
                return Ok(());
            }
            (packed, rows, after) = next;
        }
        Ok(())
    }
}

/// Readers working side by side on parts of the audience: reading a page on one connection
/// takes about as long as everything else the pipeline does with it, so two keep both cores of
/// a small machine busy.
const READERS: i64 = 2;

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
    let scan = Scan {
        subs: subs.clone(),
        excluded: Arc::new(subs.ledger.left_out_of_marketing(&tenant).await?),
        suppressed: Arc::new(suppressed(subs, &tenant, channel_name).await?),
        topic: topic.to_owned(),
        channel: channel_name,
        email: channel == Channel::Email,
        tenant,
    };
    let (lo, hi) = bounds(subs, &scan.tenant, topic, channel_name).await?;
    let (pages_tx, mut pages) = mpsc::channel(2 * READERS as usize);
    if hi >= lo {
        let span = (hi - lo) / READERS + 1;
        for r in 0..READERS {
            let from = lo - 1 + r * span;
            let upto = if r == READERS - 1 { hi } else { from + span };
            let (scan, out) = (scan.clone(), pages_tx.clone());
            tokio::spawn(async move {
                if let Err(err) = scan.range((from, upto), out.clone()).await {
                    let _ = out.send(Err(err)).await;
                }
            });
        }
    }
    drop(pages_tx);
    let mut count = 0u64;
    let mut pending: Vec<Recipient> = Vec::with_capacity(batch);
    while let Some(decrypted) = pages.recv().await {
        for recipient in decrypted? {
            pending.push(recipient);
            if pending.len() == batch {
                count += pending.len() as u64;
                let recipients = std::mem::replace(&mut pending, Vec::with_capacity(batch));
                if tx
                    .send(Ok(ResolveAudienceResponse { recipients }))
                    .await
                    .is_err()
                {
                    // The caller went away: the readers stop when their channel closes, and
                    // what was sent is audited.
                    return Ok(count);
                }
            }
        }
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
