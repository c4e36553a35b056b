//! ResolveAudience: the recipients of a send, streamed in batches.
//!
//! One scan of the topic and channel's confirmed subscriptions in key order, joined with the
//! contacts' wrapped data keys (by the key row's number each subscription keeps) so that no row
//! costs a query of its own. Who must be left out
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
use tutela_store::StoredKey;
use tutela_store::placeholders;
use tutela_store::vault::KEYS_TABLE;
use uuid::Uuid;

use super::{ONE_CLICK, State, Subscriptions, address_field, channel_name};

/// The stream ResolveAudience answers with.
pub type AudienceStream = ReceiverStream<std::result::Result<ResolveAudienceResponse, Status>>;

/// Rows read per query.
const PAGE: i64 = 5000;

/// One subscription of a page, borrowed from the page's bytes.
struct Row<'a> {
    subscription_id: &'a str,
    contact_id: &'a str,
    address_index: &'a str,
    sealed_address: &'a [u8],
    kek_id: &'a str,
    wrapped_key: &'a [u8],
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

/// One page of the audience packed into a single result row, a column per field: the
/// identifiers (UUIDs and hex, which never hold a comma) as comma-separated lists, the binary
/// fields as their bytes one after another with a list of their lengths. A driver hands rows over
/// one at a time (sqlx's SQLite worker wakes the reader per row), which for a million recipients
/// cost more than everything else together; packed, a page of 5,000 is one hand-over. Raw bytes
/// rather than hex, because decoding hex was a fifth of the CPU time of a resolution; a column
/// per field rather than records, because concatenating each record first copied every byte
/// several times over.
#[derive(Debug, FromQueryResult)]
struct PackedPage {
    subscription_ids: Option<String>,
    contact_ids: Option<String>,
    address_indexes: Option<String>,
    sealed_addresses: Option<Vec<u8>>,
    sealed_address_lengths: Option<String>,
    // The KEK id and wrapped data key are empty if the contact has no key row, which then fails
    // to open rather than silently dropping out.
    kek_ids: Option<Vec<u8>>,
    kek_id_lengths: Option<String>,
    wrapped_keys: Option<Vec<u8>>,
    wrapped_key_lengths: Option<String>,
    last: Option<i64>,
    rows: i64,
}

/// The packing query (see [`PackedPage`]).
fn packed_sql(backend: DbBackend) -> String {
    // By the key row's number, which the subscription keeps: key rows are numbered in the order
    // contacts signed up, so the look-ups walk the key table forwards instead of jumping about
    // the text index of (scope, tenant, subject), which cost half of reading a million
    // recipients. The text columns are still compared, so a wrong number can only fail to
    // open, never open someone else's key.
    let keyed = "k.seq = s.key_seq AND k.scope = $1 AND k.tenant = s.tenant \
                 AND k.subject_id = s.contact_id";
    let postgres = backend == DbBackend::Postgres;
    let join = if postgres {
        // A lateral look-up, not a plain join: a join's plan depends on statistics, and right
        // after a bulk import PostgreSQL planned one as a scan of all the tenant's keys per
        // subscription.
        format!(
            "LEFT JOIN LATERAL (SELECT k.kek_id, k.wrapped_key FROM {KEYS_TABLE} k \
             WHERE {keyed}) dk ON TRUE"
        )
    } else {
        format!(
            "LEFT JOIN {KEYS_TABLE} dk ON {}",
            keyed.replace("k.", "dk.")
        )
    };
    let listed = |col: &str, name: &str| {
        if postgres {
            format!("string_agg({col}, ',' ORDER BY seq) AS {name}")
        } else {
            format!("group_concat({col}, ',') AS {name}")
        }
    };
    let bytes = |col: &str, name: &str, plural: &str| {
        let lengths = if postgres {
            format!("string_agg(octet_length({col})::text, ',' ORDER BY seq)")
        } else {
            format!("group_concat(octet_length({col}), ',')")
        };
        // SQLite's group_concat appends a blob's bytes as they are, under the type text, which
        // the driver hands over as bytes without checking them as UTF-8. No cast back to blob:
        // that copy of every page cost a tenth of a resolution.
        let joined = if postgres {
            format!("string_agg({col}, ''::bytea ORDER BY seq)")
        } else {
            format!("group_concat({col}, '')")
        };
        format!("{joined} AS {plural}, {lengths} AS {name}_lengths")
    };
    let (kek_id, no_key) = if postgres {
        ("convert_to(coalesce(kek_id, ''), 'UTF8')", "''::bytea")
    } else {
        ("coalesce(kek_id, '')", "x''")
    };
    let columns = [
        listed("subscription_id", "subscription_ids"),
        listed("contact_id", "contact_ids"),
        listed("address_index", "address_indexes"),
        bytes("sealed_address", "sealed_address", "sealed_addresses"),
        bytes(kek_id, "kek_id", "kek_ids"),
        bytes(
            &format!("coalesce(wrapped_key, {no_key})"),
            "wrapped_key",
            "wrapped_keys",
        ),
    ]
    .join(", ");
    format!(
        "SELECT {columns}, MAX(seq) AS last, COUNT(*) AS rows FROM (SELECT s.seq, \
         s.subscription_id, s.contact_id, s.address_index, s.sealed_address, dk.kek_id, \
         dk.wrapped_key FROM subscriptions s {join} WHERE s.tenant = $2 AND s.topic = $3 \
         AND s.channel = $4 AND s.state = $5 AND s.seq > $6 AND s.seq <= $7 ORDER BY s.seq \
         LIMIT $8) page"
    )
}

fn broken() -> Error {
    Error::internal("malformed audience page")
}

/// The `rows` items of a comma-separated list column.
fn listed(list: Option<&str>, rows: usize) -> Result<Vec<&str>> {
    let items: Vec<&str> = list.unwrap_or_default().split(',').collect();
    (items.len() == rows).then_some(items).ok_or_else(broken)
}

/// The `rows` items of a bytes column cut at its list of lengths.
fn cut<'a>(bytes: Option<&'a [u8]>, lengths: Option<&str>, rows: usize) -> Result<Vec<&'a [u8]>> {
    let mut bytes = bytes.unwrap_or_default();
    let mut items = Vec::with_capacity(rows);
    for len in lengths.unwrap_or_default().split(',') {
        let len: usize = len.parse().map_err(|_| broken())?;
        items.push(bytes.split_off(..len).ok_or_else(broken)?);
    }
    (items.len() == rows && bytes.is_empty())
        .then_some(items)
        .ok_or_else(broken)
}

/// The rows of a packed page (see [`PackedPage`]).
fn unpack(page: &PackedPage) -> Result<Vec<Row<'_>>> {
    let rows = usize::try_from(page.rows).map_err(|_| broken())?;
    if rows == 0 {
        // An empty list would read as one empty item.
        return Ok(Vec::new());
    }
    let ids = listed(page.subscription_ids.as_deref(), rows)?;
    let contacts = listed(page.contact_ids.as_deref(), rows)?;
    let indexes = listed(page.address_indexes.as_deref(), rows)?;
    let addresses = cut(
        page.sealed_addresses.as_deref(),
        page.sealed_address_lengths.as_deref(),
        rows,
    )?;
    let keks = cut(
        page.kek_ids.as_deref(),
        page.kek_id_lengths.as_deref(),
        rows,
    )?;
    let wrapped = cut(
        page.wrapped_keys.as_deref(),
        page.wrapped_key_lengths.as_deref(),
        rows,
    )?;
    (0..rows)
        .map(|i| {
            Ok(Row {
                subscription_id: ids[i],
                contact_id: contacts[i],
                address_index: indexes[i],
                sealed_address: addresses[i],
                kek_id: std::str::from_utf8(keks[i]).map_err(|_| broken())?,
                wrapped_key: wrapped[i],
            })
        })
        .collect()
}

/// The recipients of one page, in order, leaving out `excluded` contacts and `suppressed`
/// addresses. CPU-bound: runs on the blocking pool.
fn recipients(
    subs: &Subscriptions,
    tenant: &str,
    email: bool,
    page: &PackedPage,
    excluded: &HashSet<String>,
    suppressed: &HashSet<String>,
) -> Result<Vec<Recipient>> {
    let rows = unpack(page)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if excluded.contains(row.contact_id) || suppressed.contains(row.address_index) {
            continue;
        }
        if row.kek_id.is_empty() {
            // No key row matched the number and the contact together: the data is
            // inconsistent, which is no erasure and must not pass for one.
            return Err(Error::internal(
                "a subscription without its contact's key row",
            ));
        }
        let key = StoredKey {
            tenant,
            subject: row.contact_id,
            kek_id: row.kek_id,
            wrapped_key: (!row.wrapped_key.is_empty()).then_some(row.wrapped_key),
        };
        let address = subs.vault.open_stored_string(
            key,
            &address_field(row.subscription_id),
            row.sealed_address,
        )?;
        let id = Uuid::parse_str(row.subscription_id).map_err(Error::internal)?;
        let token = subs.tokens.unsubscribe(id);
        let (list_unsubscribe, list_unsubscribe_post) = if email {
            (subs.list_unsubscribe(&token), ONE_CLICK.to_owned())
        } else {
            (String::new(), String::new())
        };
        out.push(Recipient {
            subscription_id: row.subscription_id.to_owned(),
            contact: Some(SubjectRef {
                subject_id: row.contact_id.to_owned(),
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
            // Two subqueries, because SQLite answers a lone MIN or MAX from the end of the
            // index, but both in one SELECT by scanning the whole audience.
            "SELECT (SELECT MIN(seq) FROM subscriptions WHERE tenant = $1 AND topic = $2 \
             AND channel = $3 AND state = $4) AS lo, (SELECT MAX(seq) FROM subscriptions \
             WHERE tenant = $5 AND topic = $6 AND channel = $7 AND state = $8) AS hi",
        ),
        [
            Value::from(tenant),
            Value::from(topic),
            Value::from(channel),
            Value::from(State::Confirmed.as_str()),
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
    /// [`packed_sql`] as the backend spells it, written once per resolution.
    sql: Arc<str>,
}

impl Scan {
    /// The page of up to [`PAGE`] subscriptions with sequence numbers in `(after, upto]`.
    async fn page(&self, (after, upto): (i64, i64)) -> Result<PackedPage> {
        PackedPage::find_by_statement(Statement::from_sql_and_values(
            self.subs.db.get_database_backend(),
            &*self.sql,
            [
                Value::from(self.subs.vault.scope()),
                Value::from(self.tenant.as_str()),
                Value::from(self.topic.as_str()),
                Value::from(self.channel),
                Value::from(State::Confirmed.as_str()),
                Value::from(after),
                Value::from(upto),
                Value::from(PAGE),
            ],
        ))
        .one(&self.subs.db)
        .await?
        .ok_or_else(|| Error::internal("an aggregate query returned no row"))
    }

    /// Reads and decrypts the subscriptions with sequence numbers in `(after, upto]` page by
    /// page, each page decrypted on the blocking pool while the next is read, and sends each
    /// page's recipients to `out` until it is closed.
    async fn range(
        self,
        (after, upto): (i64, i64),
        out: mpsc::Sender<Result<Vec<Recipient>>>,
    ) -> Result<()> {
        let mut current = self.page((after, upto)).await?;
        while current.rows > 0 {
            let full = current.rows == PAGE;
            let after = current.last.unwrap_or(upto);
            let decrypting = {
                let s = self.clone();
                tokio::task::spawn_blocking(move || {
                    recipients(
                        &s.subs,
                        &s.tenant,
                        s.email,
                        &current,
                        &s.excluded,
                        &s.suppressed,
                    )
                })
            };
            let next = if full {
                Some(self.page((after, upto)).await?)
            } else {
                None
            };
            let decrypted = decrypting.await.map_err(Error::internal)??;
            if out.send(Ok(decrypted)).await.is_err() {
                return Ok(());
            }
            let Some(next) = next else { break };
            current = next;
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
    let backend = subs.db.get_database_backend();
    let scan = Scan {
        sql: placeholders(backend, &packed_sql(backend)).into(),
        subs: subs.clone(),
        excluded: Arc::new(subs.ledger.marketing_exclusions(call.scope()).await?),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn page(rows: i64, lengths: &str) -> PackedPage {
        PackedPage {
            subscription_ids: Some("a,b".into()),
            contact_ids: Some("c,d".into()),
            address_indexes: Some("e,f".into()),
            sealed_addresses: Some(b"xyzzy".to_vec()),
            sealed_address_lengths: Some(lengths.into()),
            kek_ids: Some(b"k1k1".to_vec()),
            kek_id_lengths: Some("2,2".into()),
            wrapped_keys: Some(Vec::new()),
            wrapped_key_lengths: Some("0,0".into()),
            last: Some(9),
            rows,
        }
    }

    #[test]
    fn a_page_unpacks_into_its_rows() {
        let page = page(2, "2,3");
        let rows = unpack(&page).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[1].subscription_id,
                rows[1].contact_id,
                rows[1].address_index
            ),
            ("b", "d", "f")
        );
        assert_eq!(rows[0].sealed_address, b"xy");
        assert_eq!(rows[1].sealed_address, b"zzy");
        assert_eq!(rows[1].kek_id, "k1");
        assert!(rows[0].wrapped_key.is_empty());
    }

    #[test]
    fn a_malformed_page_is_an_error_not_a_panic() {
        // Lengths past the bytes, bytes left over, a length that is no number, and a row count
        // that disagrees with the lists.
        for (rows, lengths) in [(2, "2,9"), (2, "1,1"), (2, "2,x"), (3, "2,3"), (1, "5")] {
            assert!(unpack(&page(rows, lengths)).is_err(), "{rows} {lengths}");
        }
        assert!(unpack(&page(0, "")).unwrap().is_empty());
    }
}
