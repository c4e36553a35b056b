//! The subscription service's part in data-subject rights (`tutela.privacy.v1.SubjectData`):
//! a contact's subscriptions with their evidence, the events of messages sent to them, and their
//! consent history in the ledger.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use tutela_policy::rights::{SubjectDataProvider, rfc3339};
use tutela_policy::validate::timestamp;
use tutela_policy::{CategorySet, Result, SubjectAccess, fields};
use tutela_proto::common::DataCategory;
use tutela_proto::privacy::{ServiceErasure, ServiceExport, ServiceHoldings};

use crate::SERVICE;
use crate::subscriptions::entity::{contact, event, evidence, subscription, topic};
use crate::subscriptions::{Subscriptions, suppress};

/// What an export says about erasure, as the register does.
pub const SUPPRESSION_NOTE: &str = "If you ask us to erase your data, we delete your subscriptions, addresses and message events, and keep only a keyed hash of each address on our suppression list, so that no later import can subscribe you again. The record of when and how you opted in and out, without your address, is kept as proof.";

/// Describe, export and erase a contact's subscription data.
#[derive(Debug, Clone)]
pub struct SubscriptionRights {
    subs: Subscriptions,
}

impl SubscriptionRights {
    /// The provider over `subs`.
    pub fn new(subs: Subscriptions) -> Self {
        Self { subs }
    }
}

#[async_trait::async_trait]
impl SubjectDataProvider for SubscriptionRights {
    fn service(&self) -> &'static str {
        SERVICE
    }

    async fn describe(&self, access: &SubjectAccess) -> Result<ServiceHoldings> {
        let db = &self.subs.db;
        let mut held = CategorySet::EMPTY;
        if access
            .find::<subscription::Entity>()
            .one(db)
            .await?
            .is_some()
        {
            held = held.union(CategorySet::of(&[
                DataCategory::Identity,
                DataCategory::Contact,
                DataCategory::Communication,
            ]));
        }
        if access
            .find::<contact::Entity>()
            .one(db)
            .await?
            .is_some_and(|c| !c.sealed_profile.is_empty())
        {
            held.insert(DataCategory::Demographic);
        }
        if self
            .subs
            .ledger
            .has_entries(access.call().scope(), access.subject_id())
            .await?
        {
            held = held.union(CategorySet::of(&[
                DataCategory::Identity,
                DataCategory::Communication,
            ]));
        }
        Ok(ServiceHoldings {
            service: SERVICE.to_owned(),
            categories: held.iter().map(|c| c as i32).collect(),
            restricted: false,
            objected_to: Vec::new(),
            legal_hold: false,
        })
    }

    async fn export(&self, access: &SubjectAccess) -> Result<ServiceExport> {
        let readable = access.call().readable();
        let s = &self.subs;
        let db = &s.db;
        let mut held = CategorySet::EMPTY;
        let mut document = json!({ "erasure": SUPPRESSION_NOTE });
        if readable.contains(DataCategory::Contact) {
            let subscriptions = s.of_contact(access).await?;
            if !subscriptions.is_empty() {
                held = held.union(CategorySet::of(&[
                    DataCategory::Identity,
                    DataCategory::Contact,
                    DataCategory::Communication,
                ]));
            }
            // Each subscription names its topic's description beside its id: the person reads
            // the export.
            let ids: Vec<String> = subscriptions.iter().map(|o| o.row.topic.clone()).collect();
            let titles: std::collections::HashMap<String, String> = access
                .call()
                .find::<topic::Entity>()
                .filter(topic::Column::TopicId.is_in(ids))
                .all(db)
                .await?
                .into_iter()
                .map(|t| (t.topic_id, t.description))
                .collect();
            document["subscriptions"] = subscriptions
                .iter()
                .map(|o| {
                    let mut json = fields::to_json(&fields::to_dynamic(
                        &Subscriptions::to_subscription(&o.row, o.address.clone()),
                        "tutela.subscription.v1.Subscription",
                    )?);
                    if let Some(title) = titles.get(&o.row.topic) {
                        json["topic_title"] = title.clone().into();
                    }
                    Ok(json)
                })
                .collect::<Result<Vec<_>>>()?
                .into();
        }
        if readable.contains(DataCategory::Demographic) {
            let profile = s
                .profile(access.call().scope(), access.subject_id())
                .await?;
            if !profile.date_of_birth.is_empty() || !profile.country.is_empty() {
                held.insert(DataCategory::Demographic);
                document["contact"] = json!({
                    "date_of_birth": profile.date_of_birth,
                    "country": profile.country,
                });
            }
        }
        if readable.contains(DataCategory::Communication) {
            let evidence = access
                .find::<evidence::Entity>()
                .order_by_asc(evidence::Column::Seq)
                .all(db)
                .await?;
            document["subscription_evidence"] = evidence
                .iter()
                .map(|e| {
                    json!({
                        "subscription_id": e.subscription_id,
                        "from_state": e.from_state,
                        "to_state": e.to_state,
                        "method": e.method,
                        "source": e.source,
                        "wording_version": e.wording_version,
                        "wording_sha256": e.wording_sha256,
                        "occurred_at": rfc3339(e.occurred_at),
                    })
                })
                .collect::<Vec<_>>()
                .into();
            let events = access
                .find::<event::Entity>()
                .order_by_asc(event::Column::Seq)
                .all(db)
                .await?;
            if !events.is_empty() || !evidence.is_empty() {
                held.insert(DataCategory::Communication);
            }
            document["events"] = events
                .iter()
                .map(|e| {
                    json!({
                        "subscription_id": e.subscription_id,
                        "message_id": e.message_id,
                        "kind": e.kind,
                        "occurred_at": rfc3339(e.occurred_at),
                    })
                })
                .collect::<Vec<_>>()
                .into();
            let history = s
                .ledger
                .history(access.call().scope(), access.subject_id())
                .await?;
            document["consent_history"] = history
                .into_iter()
                .map(|entry| {
                    Ok(fields::to_json(&fields::to_dynamic(
                        &entry,
                        "tutela.consent.v1.ConsentEntry",
                    )?))
                })
                .collect::<Result<Vec<_>>>()?
                .into();
            if document["consent_history"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                held = held.union(CategorySet::of(&[
                    DataCategory::Identity,
                    DataCategory::Communication,
                ]));
            }
        }
        access.record(held);
        Ok(ServiceExport {
            service: SERVICE.to_owned(),
            media_type: "application/json".to_owned(),
            document: serde_json::to_vec_pretty(&document)
                .map_err(tutela_policy::Error::internal)?,
            categories: held.iter().map(|c| c as i32).collect(),
        })
    }

    async fn erase(&self, access: &SubjectAccess, _reason: &str) -> Result<ServiceErasure> {
        let erased_categories = CategorySet::of(&[
            DataCategory::Identity,
            DataCategory::Contact,
            DataCategory::Demographic,
            DataCategory::Communication,
        ]);
        let s = &self.subs;
        let contact_id = access.subject_id();
        let now = s.clock.now();
        let txn = tutela_store::begin(&s.db).await?;
        // A write first: on SQLite a transaction that starts by reading cannot become a writer
        // once another connection has committed; after a write it holds the lock, and the
        // subscriptions it reads next are all there are.
        let mut erased = access
            .delete::<event::Entity>()
            .exec(&txn)
            .await?
            .rows_affected;
        let rows = access.find::<subscription::Entity>().all(&txn).await?;
        // The keyed hash stays on the suppression list: an import cannot add them again.
        for row in &rows {
            suppress(&txn, row, "erasure", &access.call().principal().id, now).await?;
        }
        erased += access
            .delete::<subscription::Entity>()
            .exec(&txn)
            .await?
            .rows_affected;
        erased += access
            .delete::<contact::Entity>()
            .exec(&txn)
            .await?
            .rows_affected;
        access.record_in(&txn, erased_categories).await?;
        txn.commit().await?;
        // After the rows: the contact's key, which the ledger's sealed evidence references and
        // guardian details share, so they become unreadable too; the bare consent facts stay as
        // proof. The ledger shreds it and forgets what its gate cached.
        if s.ledger.erase(access.call().scope(), contact_id).await? {
            erased += 1;
        }
        tutela_store::purge_freed_pages(&s.db).await?;
        tracing::info!(records = erased, "contact's subscription data erased");
        Ok(ServiceErasure {
            service: SERVICE.to_owned(),
            records_erased: erased,
            retained: Vec::new(),
            erased_at: Some(timestamp(now)),
        })
    }
}

/// Delivery events one sweep deletes per statement: short statements keep other writers (on
/// SQLite, every other writer) waiting for milliseconds, not for one delete of a whole table.
pub const EVENT_PAGE: u64 = 500;

/// Deletes delivery events older than the register's event retention (only counts them when
/// `dry_run`); returns how many. Deletes [`EVENT_PAGE`] at a time.
pub async fn sweep_events(
    db: &sea_orm::DatabaseConnection,
    register: &tutela_policy::Register,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<u64> {
    sweep_events_paged(db, register, now, dry_run, EVENT_PAGE).await
}

/// [`sweep_events`], deleting `page` events at a time: it reads the keys of the next `page` due
/// events past the last one deleted (keyset order, so each event is looked at once however the
/// table changes meanwhile) and deletes those.
pub async fn sweep_events_paged(
    db: &sea_orm::DatabaseConnection,
    register: &tutela_policy::Register,
    now: DateTime<Utc>,
    dry_run: bool,
    page: u64,
) -> Result<u64> {
    use sea_orm::{PaginatorTrait as _, QuerySelect as _};
    let days = i64::from(register.communications.event_retention_days);
    let cutoff = now - chrono::Duration::days(days);
    let due = event::Column::OccurredAt.lt(cutoff);
    if dry_run {
        return Ok(event::Entity::find().filter(due).count(db).await?);
    }
    let page = page.max(1);
    let (mut swept, mut after) = (0, None);
    loop {
        let mut next = event::Entity::find()
            .select_only()
            .column(event::Column::Seq)
            .filter(due.clone());
        if let Some(after) = after {
            next = next.filter(event::Column::Seq.gt(after));
        }
        let seqs: Vec<i64> = next
            .order_by_asc(event::Column::Seq)
            .limit(page)
            .into_tuple()
            .all(db)
            .await?;
        let Some(&last) = seqs.last() else {
            break;
        };
        let full = seqs.len() as u64 == page;
        swept += event::Entity::delete_many()
            .filter(event::Column::Seq.is_in(seqs))
            .filter(due.clone())
            .exec(db)
            .await?
            .rows_affected;
        after = Some(last);
        if !full {
            break;
        }
    }
    if swept > 0 {
        tracing::info!(events = swept, "delivery events past retention swept");
    }
    Ok(swept)
}
