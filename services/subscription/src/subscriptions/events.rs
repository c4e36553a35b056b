//! The `RecordEvents` handler: delivery events from the sending system, suppressing addresses
//! that hard-bounce or complain.

use chrono::DateTime;
use sea_orm::{ActiveModelTrait, ColumnTrait, QueryFilter, Set};
use tutela_policy::validate::Checks;
use tutela_policy::{Authorized, CategorySet, Result};
use tutela_proto::common::DataCategory;
use tutela_proto::subscription::{
    EventKind as DeliveryKind, RecordEventsRequest, RecordEventsResponse,
};
use uuid::Uuid;

use super::entity::{event, subscription};
use super::service::SubscriptionService;
use super::state::kind_name;
use super::suppression::suppress;

impl SubscriptionService {
    pub(super) async fn record_events(
        &self,
        call: &Authorized,
        r: &RecordEventsRequest,
    ) -> Result<RecordEventsResponse> {
        let s = &self.subs;
        let mut c = Checks::new();
        c.ensure(
            (1..=1000).contains(&r.events.len()),
            "events",
            "between 1 and 1000 events",
        );
        let now = s.clock.now();
        let mut checked = Vec::with_capacity(r.events.len());
        for (i, e) in r.events.iter().enumerate() {
            let id = Uuid::parse_str(e.subscription_id.trim()).ok();
            c.ensure(
                id.is_some(),
                &format!("events[{i}].subscription_id"),
                "must be a UUID",
            );
            c.required_text(&e.message_id, &format!("events[{i}].message_id"), 256);
            let kind = match DeliveryKind::try_from(e.kind) {
                Ok(DeliveryKind::Unspecified) | Err(_) => {
                    c.fail(
                        format!("events[{i}].kind"),
                        "required: an event of tutela.subscription.v1.EventKind",
                    );
                    None
                }
                Ok(k) => Some(k),
            };
            let at = match &e.occurred_at {
                None => Some(now),
                Some(ts) => match u32::try_from(ts.nanos)
                    .ok()
                    .and_then(|n| DateTime::from_timestamp(ts.seconds, n))
                {
                    Some(at) if at <= now + chrono::Duration::seconds(60) => Some(at),
                    _ => {
                        c.fail(
                            format!("events[{i}].occurred_at"),
                            "a valid time, not in the future",
                        );
                        None
                    }
                },
            };
            if let (Some(id), Some(kind), Some(at)) = (id, kind, at) {
                checked.push((id.to_string(), e.message_id.trim().to_owned(), kind, at));
            }
        }
        c.finish()?;
        let tenant = call.tenant();
        let ids: Vec<&str> = checked.iter().map(|(id, ..)| id.as_str()).collect();
        let rows = call
            .find::<subscription::Entity>()
            .filter(subscription::Column::SubscriptionId.is_in(ids))
            .all(&s.db)
            .await?;
        let by_id: std::collections::HashMap<&str, &subscription::Model> = rows
            .iter()
            .map(|r| (r.subscription_id.as_str(), r))
            .collect();
        let mut recorded = 0u32;
        let mut suppressed = 0u32;
        let txn = tutela_store::begin(&s.db).await?;
        for (id, message_id, kind, at) in &checked {
            // An erased contact's subscription is gone: its events are not kept.
            let Some(row) = by_id.get(id.as_str()) else {
                continue;
            };
            event::ActiveModel {
                tenant: Set(tenant.to_owned()),
                contact_id: Set(row.contact_id.clone()),
                subscription_id: Set(row.subscription_id.clone()),
                message_id: Set(message_id.clone()),
                kind: Set(kind_name(*kind).to_owned()),
                occurred_at: Set(*at),
                recorded_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            recorded += 1;
            if matches!(kind, DeliveryKind::HardBounce | DeliveryKind::Complaint) {
                suppressed +=
                    suppress(&txn, row, kind_name(*kind), &call.principal().id, now).await?;
            }
        }
        let summary = s
            .audit
            .summarise_in(
                &txn,
                call,
                CategorySet::of(&[DataCategory::Communication]),
                format!("events recorded: {recorded}; subscriptions suppressed: {suppressed}"),
            )
            .await?;
        txn.commit().await?;
        summary.append().await?;
        Ok(RecordEventsResponse {
            recorded,
            suppressed,
        })
    }
}
