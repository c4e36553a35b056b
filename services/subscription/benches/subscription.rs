//! Benchmarks of subscription management over real gRPC on loopback, guard and audit on:
//!
//! 1. Subscribe + ConfirmSubscription pairs per second (32 in flight),
//! 2. ResolveAudience streaming 1,000,000 confirmed subscribers to the client (target <= 2 s on
//!    SQLite): every address decrypted under its contact's own key, every unsubscribe token
//!    signed, List-Unsubscribe headers built.
//!
//! SQLite by default; PostgreSQL when `TEST_DATABASE_URL` is set. The million subscribers are
//! seeded straight into the database (bulk key creation and inserts; seeding through the API
//! would take hours and measure something else); the time it takes is printed too.
//!
//! Run: `cargo bench -p tutela-subscription --bench subscription`. `BENCH_AUDIENCE` changes the
//! audience size, `BENCH_RUNS` the number of resolutions timed (3), and `BENCH_KEY_ORDER=random`
//! signs contacts up in an order unrelated to the order their keys were made (the worst case for
//! the audience's key look-ups). Figures are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use sea_orm::{EntityTrait, Set};
use tutela_proto::subscription::{
    Channel, ConfirmSubscriptionRequest, OptInEvidence, PutTopicRequest, ResolveAudienceRequest,
    SubscribeRequest, Topic,
};
use tutela_subscription::subscriptions::entity::subscription;
use tutela_subscription::subscriptions::{State, address_field, channel_name};
use tutela_testkit::{Credentials, TestSuite};

const TENANT: &str = "acme";
const IN_FLIGHT: usize = 32;

fn evidence(source: &str) -> Option<OptInEvidence> {
    Some(OptInEvidence {
        source: source.into(),
        wording_version: "bench-1".into(),
        wording_sha256: "d".repeat(64),
    })
}

/// Seeds `n` confirmed email subscriptions to `topic`, each of a contact of its own.
async fn seed(suite: &TestSuite, topic: &str, n: usize) {
    let config = suite.config();
    let db = suite.database().connect().await.unwrap();
    let keyring = Arc::new(tutela::keys::load_keyring(config).unwrap());
    let keys = tutela::keys::load_audit_keys(config).unwrap();
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let subs = tutela_subscription::Subscriptions::new(tutela_subscription::Parts {
        db: db.clone(),
        keyring: keyring.clone(),
        audit: tutela_policy::audit::AuditLog::detached(keys),
        clock: clock.clone(),
        ledger: Arc::new(tutela_ledger::Ledger::new(
            db.clone(),
            keyring.clone(),
            clock.clone(),
        )),
        register: Arc::new(tutela_policy::Register::default_register().unwrap()),
        public_base_url: "https://news.example.org".into(),
    });
    let vault = tutela_store::KeyVault::new(db.clone(), keyring, "subscription", clock);
    // BENCH_KEY_ORDER=random makes every contact's key first and then signs the contacts up in
    // the order of their ids, which has nothing to do with the order the keys were made: the
    // worst case for the audience's key look-ups. By default each contact's key is made just
    // before their subscription, as a sign-up does.
    let random = std::env::var("BENCH_KEY_ORDER").is_ok_and(|o| o == "random");
    let mut pending: Vec<(String, tutela_store::SubjectKey)> = Vec::new();
    let mut signed_up = 0;
    let chunk = 10_000;
    for start in (0..n).step_by(chunk) {
        let contacts: Vec<String> = (start..(start + chunk).min(n))
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let keys = vault.create_many(TENANT, &contacts).await.unwrap();
        pending.extend(contacts.into_iter().zip(keys));
        if !random {
            signed_up += sign_up(&db, &subs, topic, signed_up, &pending).await;
            pending.clear();
        }
    }
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    for batch in pending.chunks(chunk) {
        signed_up += sign_up(&db, &subs, topic, signed_up, batch).await;
    }
    // On SQLite, fold the import's write-ahead log into the database, as its automatic
    // checkpoints do in steady use: otherwise the first resolutions read through a log of
    // hundreds of megabytes, or pay for a checkpoint running beside them.
    tutela_store::purge_freed_pages(&db).await.unwrap();
}

/// Inserts a confirmed email subscription to `topic` for each contact, numbering their
/// addresses from `first`; returns how many.
async fn sign_up(
    db: &sea_orm::DatabaseConnection,
    subs: &tutela_subscription::Subscriptions,
    topic: &str,
    first: usize,
    contacts: &[(String, tutela_store::SubjectKey)],
) -> usize {
    let now = chrono::Utc::now();
    let mut rows = Vec::with_capacity(contacts.len());
    for (i, (contact, key)) in contacts.iter().enumerate() {
        let id = uuid::Uuid::now_v7().to_string();
        let address = format!("subscriber{}@example.org", first + i);
        rows.push(subscription::ActiveModel {
            subscription_id: Set(id.clone()),
            tenant: Set(TENANT.into()),
            contact_id: Set(contact.clone()),
            channel: Set(channel_name(Channel::Email).into()),
            topic: Set(topic.into()),
            state: Set(State::Confirmed.as_str().into()),
            sealed_address: Set(key.seal(&address_field(&id), address.as_bytes()).unwrap()),
            address_index: Set(subs.address_index(TENANT, Channel::Email, &address)),
            code_hash: Set(None),
            confirm_expires_at: Set(None),
            code_attempts: Set(0),
            created_at: Set(now),
            confirmed_at: Set(Some(now)),
            updated_at: Set(now),
            key_seq: Set(Some(key.handle())),
            ..Default::default()
        });
    }
    for batch in rows.chunks(1000) {
        subscription::Entity::insert_many(batch.to_vec())
            .exec_without_returning(db)
            .await
            .unwrap();
    }
    contacts.len()
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`; `None` off Linux.
/// Next to the wall time it shows how much of the machine a resolution keeps busy.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture tutela builds for.
    Some(ticks as f64 / 100.0)
}

/// A number from the environment variable `name`, or `default`.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    tutela_testkit::bench_logging();
    let audience_size = setting("BENCH_AUDIENCE", 1_000_000);
    let suite = TestSuite::start().await.unwrap();
    let backend = suite.database().backend().name();
    let editor = Credentials::new(
        &suite.token(TENANT, "editor", &["marketing"]),
        "consent_management",
    );
    for topic in ["courses", "news"] {
        suite
            .subscriptions(editor.clone())
            .put_topic(PutTopicRequest {
                topic: Some(Topic {
                    topic_id: topic.into(),
                    description: "bench".into(),
                }),
            })
            .await
            .unwrap();
    }

    // 1. Subscribe + confirm, as a sign-up form and the person's click would.
    let platform = Credentials::new(
        &suite.token(TENANT, "platform", &["service"]),
        "consent_management",
    );
    let pairs = 2_000;
    let start = Instant::now();
    futures::stream::iter(0..pairs)
        .map(|i| {
            let mut staff = suite.subscriptions(platform.clone());
            let mut anyone = suite.subscriptions(Credentials::none());
            async move {
                let r = staff
                    .subscribe(SubscribeRequest {
                        channel: Channel::Email as i32,
                        topic: "news".into(),
                        address: format!("signup{i}@example.org"),
                        evidence: evidence("bench-form"),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                anyone
                    .confirm_subscription(ConfirmSubscriptionRequest {
                        token: r.confirmation_token,
                        evidence: evidence("bench-confirm"),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let per_second = pairs as f64 / start.elapsed().as_secs_f64();
    println!(
        "{backend}: Subscribe+ConfirmSubscription pairs/s, {IN_FLIGHT} in flight: {per_second:.0}"
    );

    // 2. The audience of a million.
    let start = Instant::now();
    seed(&suite, "courses", audience_size).await;
    println!(
        "{backend}: seeded {audience_size} confirmed subscribers in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let marketing = Credentials::new(&suite.token(TENANT, "mkt", &["marketing"]), "marketing");
    for run in 1..=setting("BENCH_RUNS", 3) {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let mut stream = suite
            .subscriptions(marketing.clone())
            .resolve_audience(ResolveAudienceRequest {
                topic: "courses".into(),
                channel: Channel::Email as i32,
                batch_size: 5000,
            })
            .await
            .unwrap()
            .into_inner();
        let (mut recipients, mut bytes) = (0usize, 0usize);
        while let Some(batch) = stream.message().await.unwrap() {
            recipients += batch.recipients.len();
            bytes += prost::Message::encoded_len(&batch);
        }
        assert_eq!(recipients, audience_size);
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu
            .zip(cpu_seconds())
            .map(|(before, after)| format!(", CPU {:.2} s", after - before))
            .unwrap_or_default();
        println!(
            "{backend}: ResolveAudience streamed {recipients} recipients ({:.0} MiB) in {wall:.2} s (run {run}{cpu})",
            bytes as f64 / 1048576.0,
        );
    }
    suite.stop().await.unwrap();
}
