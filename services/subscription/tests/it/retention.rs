//! The delivery-event sweep at scale: more due events than one delete takes.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{EntityTrait, QueryOrder, Set};
use tutela_store::testing::TestDatabase;
use tutela_subscription::subscriptions::entity::event;

#[tokio::test]
async fn the_event_sweep_deletes_page_by_page_every_due_event_once_and_no_other() {
    let database = TestDatabase::create().await.unwrap();
    let db = database.connect().await.unwrap();
    tutela_store::migrate(
        &db,
        &[tutela_store::migrations_of::<
            tutela_subscription::SubscriptionMigrator,
        >(tutela_subscription::SERVICE)],
    )
    .await
    .unwrap();
    let register = tutela_policy::Register::default_register().unwrap();
    let days = i64::from(register.communications.event_retention_days);
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let (old, recent) = (now - Duration::days(days + 1), now - Duration::days(1));
    // Seven due among ten, in pages of two: the last page is short.
    let kept = [
        false, true, false, false, true, false, false, false, true, false,
    ];
    let insert = |message_id: String, occurred_at: DateTime<Utc>| {
        event::Entity::insert(event::ActiveModel {
            tenant: Set("acme".into()),
            contact_id: Set("c".into()),
            subscription_id: Set("s".into()),
            message_id: Set(message_id),
            kind: Set("EVENT_KIND_DELIVERED".into()),
            occurred_at: Set(occurred_at),
            recorded_at: Set(occurred_at),
            ..Default::default()
        })
        .exec(&db)
    };
    let mut expected_left = Vec::new();
    for (i, kept) in kept.into_iter().enumerate() {
        let occurred_at = if kept { recent } else { old };
        let seq = insert(format!("m{i}"), occurred_at)
            .await
            .unwrap()
            .last_insert_id;
        if kept {
            expected_left.push(seq);
        }
    }
    let sweep = |dry, page| tutela_subscription::sweep_events_paged(&db, &register, now, dry, page);

    assert_eq!(sweep(true, 2).await.unwrap(), 7, "a dry run counts");
    assert_eq!(sweep(false, 2).await.unwrap(), 7);
    assert_eq!(sweep(false, 2).await.unwrap(), 0);
    let left: Vec<i64> = event::Entity::find()
        .order_by_asc(event::Column::Seq)
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, expected_left);
    // Pages that end exactly at the last due event.
    for i in 0..3 {
        insert(format!("late{i}"), old).await.unwrap();
    }
    assert_eq!(sweep(false, 3).await.unwrap(), 3);
}
