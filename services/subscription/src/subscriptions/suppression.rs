//! The suppression list: putting an address on it suppresses every subscription of that
//! address on the channel. Shared by delivery events and the rights provider (erasure).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use tutela_policy::{Result, Tenant};

use super::entity::{subscription, suppression};
use super::state::State;
use super::store::Subscriptions;

/// Puts `row`'s address on the suppression list and suppresses every subscription of it on the
/// channel; returns how many subscriptions changed.
pub(crate) async fn suppress<C: sea_orm::ConnectionTrait>(
    db: &C,
    row: &subscription::Model,
    reason: &str,
    recorded_by: &str,
    now: DateTime<Utc>,
) -> Result<u32> {
    // The first suppression of an address keeps its reason; later ones change nothing.
    suppression::Entity::insert(suppression::ActiveModel {
        tenant: Set(row.tenant.clone()),
        channel: Set(row.channel.clone()),
        address_index: Set(row.address_index.clone()),
        reason: Set(reason.to_owned()),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([
            suppression::Column::Tenant,
            suppression::Column::Channel,
            suppression::Column::AddressIndex,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    let affected = Tenant::of_row(row)?
        .find::<subscription::Entity>()
        .filter(subscription::Column::Channel.eq(row.channel.as_str()))
        .filter(subscription::Column::AddressIndex.eq(row.address_index.as_str()))
        .filter(subscription::Column::State.ne(State::Suppressed.as_str()))
        .all(db)
        .await?;
    let mut changed = 0;
    for other in affected {
        subscription::Entity::update_many()
            .col_expr(
                subscription::Column::State,
                Expr::value(State::Suppressed.as_str()),
            )
            .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
            .filter(subscription::Column::Seq.eq(other.seq))
            .exec(db)
            .await?;
        Subscriptions::evidence_row(
            &other,
            Some(State::of(&other.state)),
            State::Suppressed,
            reason,
            None,
            recorded_by,
            now,
        )
        .insert(db)
        .await?;
        changed += 1;
    }
    Ok(changed)
}
