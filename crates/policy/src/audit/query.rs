//! Questions asked of the log: whose data a principal accessed (the breach question), and the
//! dpo's resolution of pseudonyms to subject ids.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};

use super::entity;
use super::record::{EventKind, Outcome};

/// What one principal accessed of one subject in a time window (X2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSummary {
    /// The subject's pseudonym.
    pub subject: String,
    /// Every category accessed.
    pub categories: Vec<String>,
    /// How many accesses.
    pub accesses: u64,
    /// First access in the window.
    pub first: DateTime<Utc>,
    /// Last access in the window.
    pub last: DateTime<Utc>,
}

/// The breach question: whose data, of which categories, `principal` of `tenant` accessed between
/// `from` and `to`. Answers with pseudonyms; [`resolve_pseudonyms`] turns them into ids.
pub async fn accessed_by(
    db: &DatabaseConnection,
    tenant: &str,
    principal: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> std::result::Result<Vec<AccessSummary>, sea_orm::DbErr> {
    use entity::record::Column as C;
    let rows = entity::record::Entity::find()
        .filter(C::Tenant.eq(tenant))
        .filter(C::Principal.eq(principal))
        .filter(C::At.gte(from))
        .filter(C::At.lte(to))
        .filter(C::Kind.is_in([EventKind::Access.as_str(), EventKind::Write.as_str()]))
        .filter(C::Decision.eq(Outcome::Allow.as_str()))
        .filter(C::Subject.is_not_null())
        .order_by_asc(C::Seq)
        .all(db)
        .await?;
    let mut by_subject: std::collections::BTreeMap<String, AccessSummary> = Default::default();
    for row in rows {
        let Some(subject) = row.subject else { continue };
        let entry = by_subject
            .entry(subject.clone())
            .or_insert_with(|| AccessSummary {
                subject,
                categories: Vec::new(),
                accesses: 0,
                first: row.at,
                last: row.at,
            });
        entry.accesses += 1;
        entry.first = entry.first.min(row.at);
        entry.last = entry.last.max(row.at);
        for c in row.categories.split(',').filter(|c| !c.is_empty()) {
            if !entry.categories.iter().any(|e| e == c) {
                entry.categories.push(c.to_owned());
            }
        }
    }
    Ok(by_subject.into_values().collect())
}

/// Subject ids behind pseudonyms of `tenant`; an erased subject's pseudonym resolves to nothing.
/// Only the dpo may call this (the caller checks).
pub async fn resolve_pseudonyms(
    db: &DatabaseConnection,
    tenant: &str,
    pseudonyms: &[String],
) -> std::result::Result<std::collections::HashMap<String, String>, sea_orm::DbErr> {
    use entity::subject::Column as C;
    let mut out = std::collections::HashMap::new();
    for chunk in pseudonyms.chunks(500) {
        let rows = entity::subject::Entity::find()
            .filter(C::Tenant.eq(tenant))
            .filter(C::Pseudonym.is_in(chunk.iter().cloned()))
            .all(db)
            .await?;
        out.extend(rows.into_iter().map(|r| (r.pseudonym, r.subject_id)));
    }
    Ok(out)
}
