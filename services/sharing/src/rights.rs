//! The sharing service's part in data-subject rights (`tutela.privacy.v1.SubjectData`): the
//! actual recipients of a learner's data, from the disclosure log (GDPR Art. 15(1)(c), CJEU
//! C-154/21: the recipients themselves, not their categories), the notices sent to them, and on
//! erasure: the learner's records still waiting in deliveries are deleted, every recipient is
//! notified (Art. 19), and the log keeps its entries (who received which fields, when, on which
//! basis: the organisation's proof, Art. 5(2)), which hold no disclosed value. Exam bookings
//! partners confirmed for the learner are exported and, on erasure, deleted.

use std::collections::HashMap;

use chrono::SubsecRound;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use tutela_policy::rights::{SubjectDataProvider, rfc3339};
use tutela_policy::validate::timestamp;
use tutela_policy::{CategorySet, Result, SubjectAccess};
use tutela_proto::common::DataCategory;
use tutela_proto::privacy::{ServiceErasure, ServiceExport, ServiceHoldings};

use crate::entity::{booking, delivery_record, disclosure, notice, partner};
use crate::notices::{Change, notify};
use crate::{SERVICE, Sharing, paths};

/// Describe, export and erase what the sharing service holds of a learner.
#[derive(Debug, Clone)]
pub struct SharingRights {
    sharing: Sharing,
}

impl SharingRights {
    /// The provider over `sharing`.
    pub fn new(sharing: Sharing) -> Self {
        Self { sharing }
    }

    /// The learner's log entries, oldest first per recipient.
    async fn entries(&self, access: &SubjectAccess) -> Result<Vec<disclosure::Model>> {
        Ok(access
            .find::<disclosure::Entity>()
            .order_by_asc(disclosure::Column::PartnerId)
            .order_by_asc(disclosure::Column::Position)
            .all(&self.sharing.db)
            .await?)
    }

    /// The exam bookings partners confirmed for the learner, oldest first.
    async fn bookings(&self, access: &SubjectAccess) -> Result<Vec<booking::Model>> {
        Ok(access
            .find::<booking::Entity>()
            .order_by_asc(booking::Column::BookingId)
            .all(&self.sharing.db)
            .await?)
    }

    /// The entries the learner may be told of now: an exceptional disclosure whose
    /// `do_not_tell_until` has not passed is left out (S5; GDPR Art. 23 restrictions).
    async fn told(&self, access: &SubjectAccess) -> Result<Vec<disclosure::Model>> {
        let now = self.sharing.now();
        let mut entries = self.entries(access).await?;
        entries.retain(|e| e.do_not_tell_until.is_none_or(|until| until <= now));
        Ok(entries)
    }
}

/// The categories of the fields the entries disclosed, and the learner's identity (the log names
/// the learner).
fn categories_of(entries: &[disclosure::Model]) -> CategorySet {
    let mut held = CategorySet::EMPTY;
    if entries.is_empty() {
        return held;
    }
    held.insert(DataCategory::Identity);
    for e in entries {
        let fields: Vec<String> = serde_json::from_str(&e.fields).unwrap_or_default();
        for f in fields {
            if let Ok(cats) = paths::categories(&f) {
                held = held.union(cats);
            }
        }
    }
    held
}

#[async_trait::async_trait]
impl SubjectDataProvider for SharingRights {
    fn service(&self) -> &'static str {
        SERVICE
    }

    async fn describe(&self, access: &SubjectAccess) -> Result<ServiceHoldings> {
        let entries = self.told(access).await?;
        let mut held = categories_of(&entries);
        if !self.bookings(access).await?.is_empty() {
            // A booking names the learner and the course, when and where the exam is.
            held.insert(DataCategory::Identity);
            held.insert(DataCategory::Education);
        }
        Ok(ServiceHoldings {
            service: SERVICE.to_owned(),
            // What the log names: the learner, and which categories went to whom (never the
            // values, which left with the deliveries); and the learner's exam bookings.
            categories: held.iter().map(|c| c as i32).collect(),
            restricted: false,
            objected_to: Vec::new(),
            legal_hold: false,
        })
    }

    async fn export(&self, access: &SubjectAccess) -> Result<ServiceExport> {
        let entries = self.told(access).await?;
        let db = &self.sharing.db;
        let booked = self.bookings(access).await?;
        let ids: Vec<String> = entries
            .iter()
            .map(|e| e.partner_id.clone())
            .chain(booked.iter().map(|b| b.partner_id.clone()))
            .collect();
        let partners: HashMap<String, partner::Model> = access
            .call()
            .find::<partner::Entity>()
            .filter(partner::Column::PartnerId.is_in(ids))
            .all(db)
            .await?
            .into_iter()
            .map(|p| (p.partner_id.clone(), p))
            .collect();
        let recipients: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let p = partners.get(&e.partner_id);
                json!({
                    "recipient": p.map(|p| p.legal_name.as_str()),
                    "recipient_kind": p.map(|p| p.kind.as_str()),
                    "recipient_country": p.map(|p| p.country.as_str()),
                    "partner_id": e.partner_id,
                    "purpose": e.purpose,
                    "legal_basis": e.legal_basis,
                    "fields": serde_json::from_str::<serde_json::Value>(&e.fields)
                        .unwrap_or_default(),
                    "channel": e.channel,
                    "disclosed_at": rfc3339(e.disclosed_at),
                    "delivery_id": e.delivery_id,
                    "agreement_id": e.agreement_id,
                    "agreement_version": e.agreement_version,
                    "exceptional": e.agreement_id.is_empty(),
                    "reference": e.reference,
                })
            })
            .collect();
        let notices: Vec<serde_json::Value> = access
            .find::<notice::Entity>()
            .order_by_asc(notice::Column::NoticeId)
            .all(db)
            .await?
            .iter()
            .map(|n| {
                json!({
                    "recipient": partners.get(&n.partner_id).map(|p| p.legal_name.as_str()),
                    "partner_id": n.partner_id,
                    "kind": n.kind,
                    "fields": serde_json::from_str::<serde_json::Value>(&n.fields)
                        .unwrap_or_default(),
                    "state": n.state,
                    // Why a notice failed or could not be given (Art. 19), empty otherwise.
                    "reason": n.reason,
                    "changed_at": rfc3339(n.changed_at),
                })
            })
            .collect();
        let bookings: Vec<serde_json::Value> = booked
            .iter()
            .map(|b| {
                json!({
                    "partner": partners.get(&b.partner_id).map(|p| p.legal_name.as_str()),
                    "partner_id": b.partner_id,
                    "booking_reference": b.booking_reference,
                    "course_id": b.course_id,
                    "starts_at": rfc3339(b.starts_at),
                    "venue": b.venue,
                    "confirmed_at": rfc3339(b.confirmed_at),
                    "updated_at": rfc3339(b.updated_at),
                })
            })
            .collect();
        let held = categories_of(&entries);
        let document = json!({
            "service": SERVICE,
            "recipients": recipients,
            "notices_to_recipients": notices,
            "exam_bookings": bookings,
        });
        Ok(ServiceExport {
            service: SERVICE.to_owned(),
            media_type: "application/json".into(),
            document: serde_json::to_vec(&document).map_err(tutela_policy::Error::internal)?,
            // The document names the learner and which fields went where, never their values.
            // and the learner's exam bookings (the course, when and where).
            categories: match (held.is_empty(), bookings.is_empty()) {
                (true, true) => Vec::new(),
                (false, true) => vec![DataCategory::Identity as i32],
                (_, false) => vec![
                    DataCategory::Identity as i32,
                    DataCategory::Education as i32,
                ],
            },
        })
    }

    async fn erase(&self, access: &SubjectAccess, _reason: &str) -> Result<ServiceErasure> {
        let s = &self.sharing;
        let now = s.now().trunc_subsecs(6);
        let entries = self.entries(access).await?;
        let txn = tutela_store::begin(&s.db).await?;
        access.record_in(&txn, categories_of(&entries)).await?;
        // The learner's records still waiting to be pulled: found by their delivery and hash,
        // which the log keeps.
        let mut erased = 0;
        for e in &entries {
            erased += delivery_record::Entity::delete_many()
                .filter(delivery_record::Column::Tenant.eq(access.tenant()))
                .filter(delivery_record::Column::DeliveryId.eq(e.delivery_id.as_str()))
                .filter(delivery_record::Column::PayloadSha256.eq(e.payload_sha256.as_str()))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        // The exam bookings partners confirmed: the learner's data, nothing the log needs.
        erased += access
            .delete::<booking::Entity>()
            .exec(&txn)
            .await?
            .rows_affected;
        notify(
            s,
            &txn,
            &Change {
                tenant: access.tenant(),
                subject_id: access.subject_id(),
                rectified: None,
                changed_at: now,
            },
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(ServiceErasure {
            service: SERVICE.to_owned(),
            records_erased: erased,
            retained: Vec::new(),
            erased_at: Some(timestamp(now)),
        })
    }
}
