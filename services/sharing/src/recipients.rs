//! The actual recipients of each purpose's data, from the agreements in force, for the record of
//! processing activities (`tutela register`): the register names kinds of recipient ("exam
//! bodies"), these rows name the organisations, the fields and the transfer safeguards.
//!
//! Read across tenants: it is the operator's record of the whole deployment, printed by a
//! command run with the database's credentials, not an answer to any caller's call.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use tutela_host::{RecipientEntry, TransferEntry};
use tutela_policy::Register;

use crate::entity::{agreement, agreement_purpose, partner};

/// Every (agreement in force at `now`, purpose) of every tenant, as register rows, ordered by
/// tenant, purpose and recipient.
pub async fn in_force<C: ConnectionTrait>(
    db: &C,
    register: &Register,
    now: DateTime<Utc>,
) -> Result<Vec<RecipientEntry>, sea_orm::DbErr> {
    let agreements = agreement::Entity::find()
        .filter(agreement::Column::State.eq("active"))
        .filter(agreement::Column::ValidFrom.lte(now))
        .order_by_asc(agreement::Column::AgreementId)
        .all(db)
        .await?;
    let agreements: Vec<_> = agreements
        .into_iter()
        .filter(|a| a.valid_to.is_none_or(|to| to > now))
        .collect();
    if agreements.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = agreements.iter().map(|a| a.agreement_id.as_str()).collect();
    let partner_ids: Vec<&str> = agreements.iter().map(|a| a.partner_id.as_str()).collect();
    let mut purposes: HashMap<String, Vec<agreement_purpose::Model>> = HashMap::new();
    for p in agreement_purpose::Entity::find()
        .filter(agreement_purpose::Column::AgreementId.is_in(ids))
        .all(db)
        .await?
    {
        purposes.entry(p.agreement_id.clone()).or_default().push(p);
    }
    let partners: HashMap<String, partner::Model> = partner::Entity::find()
        .filter(partner::Column::PartnerId.is_in(partner_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.partner_id.clone(), p))
        .collect();

    let mut rows = Vec::new();
    for a in &agreements {
        let Some(who) = partners.get(&a.partner_id) else {
            continue;
        };
        let transfer = register
            .transfers
            .needs_safeguard(&who.country)
            .then(|| TransferEntry {
                safeguard: a.transfer_safeguard.clone(),
                reference: a.safeguard_reference.clone(),
            });
        for p in purposes.get(&a.agreement_id).into_iter().flatten() {
            rows.push(RecipientEntry {
                tenant: a.tenant.clone(),
                purpose: p.purpose.clone(),
                recipient: who.legal_name.clone(),
                kind: who.kind.clone(),
                role: who.role.clone(),
                country: who.country.clone(),
                legal_basis: p.legal_basis.clone(),
                // Written by this service as a JSON array of paths; a row that does not parse
                // shows no fields rather than failing the whole record.
                fields: serde_json::from_str(&p.fields).unwrap_or_default(),
                agreement_id: a.agreement_id.clone(),
                version: a.version,
                valid_from: a.valid_from,
                valid_to: a.valid_to,
                recipient_retention: a.partner_retention.clone(),
                transfer: transfer.clone(),
            });
        }
    }
    rows.sort_by(|x, y| {
        (&x.tenant, &x.purpose, &x.recipient, x.version).cmp(&(
            &y.tenant,
            &y.purpose,
            &y.recipient,
            y.version,
        ))
    });
    Ok(rows)
}
