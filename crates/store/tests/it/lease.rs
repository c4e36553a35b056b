//! Leases between replicas that share one database: each replica is its own connection pool, as
//! it would be in its own process.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tutela_store::lease::Holding;
use tutela_store::testing::TestDatabase;
use tutela_store::{Lease, Leased, ManualClock, SharedClock, migrate};

const TTL: Duration = Duration::from_secs(60);

async fn database() -> (TestDatabase, Arc<ManualClock>) {
    let db = TestDatabase::create().await.unwrap();
    migrate(&db.connect().await.unwrap(), &[]).await.unwrap();
    let clock = Arc::new(ManualClock::new(
        DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
    ));
    (db, clock)
}

/// Replica `holder`'s view of the "sweep" lease, on a connection pool of its own.
async fn replica(db: &TestDatabase, clock: &Arc<ManualClock>, holder: &str) -> Lease {
    let clock: SharedClock = clock.clone();
    Lease::new(db.connect().await.unwrap(), "sweep", clock)
        .with_holder(holder)
        .with_ttl(TTL)
}

fn seconds(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_replicas_asking_at_once_exactly_one_gets_the_lease() {
    let (db, clock) = database().await;
    for round in 0..3 {
        let mut replicas = Vec::new();
        for i in 0..6 {
            replicas.push(replica(&db, &clock, &format!("replica-{round}-{i}")).await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(replicas.len()));
        let attempts: Vec<_> = replicas
            .iter()
            .cloned()
            .map(|lease| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    lease.acquire().await.unwrap()
                })
            })
            .collect();
        let mut won = Vec::new();
        for (i, attempt) in attempts.into_iter().enumerate() {
            if attempt.await.unwrap() {
                won.push(i);
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?} all got it");
        let winner = &replicas[won[0]];
        assert_eq!(
            winner.current().await.unwrap().unwrap().holder,
            winner.holder()
        );
        // Next round: the lease lapses, and a new set of replicas competes for it.
        clock.advance(seconds(61));
    }
}

#[tokio::test]
async fn a_held_lease_is_refused_until_it_lapses_and_is_then_taken_over() {
    let (db, clock) = database().await;
    let (a, b) = (
        replica(&db, &clock, "a").await,
        replica(&db, &clock, "b").await,
    );
    assert!(a.acquire().await.unwrap());
    assert!(!b.acquire().await.unwrap());
    // Asking again as the holder extends it.
    assert!(a.acquire().await.unwrap());

    clock.advance(seconds(59));
    assert!(!b.acquire().await.unwrap(), "not yet lapsed");
    clock.advance(seconds(1));
    assert!(b.acquire().await.unwrap(), "lapsed: taken over");
    assert_eq!(
        b.current().await.unwrap(),
        Some(Holding {
            lease: "sweep".into(),
            holder: "b".into(),
            expires_at: clock_now(&clock) + seconds(60),
        })
    );
    // The old holder has lost it: it can neither renew nor release the new holder's lease.
    assert!(!a.renew().await.unwrap());
    a.release().await.unwrap();
    assert!(!a.acquire().await.unwrap());
}

fn clock_now(clock: &ManualClock) -> DateTime<chrono::Utc> {
    use tutela_store::Clock as _;
    clock.now()
}

#[tokio::test]
async fn renewing_keeps_the_lease_past_its_first_expiry() {
    let (db, clock) = database().await;
    let (a, b) = (
        replica(&db, &clock, "a").await,
        replica(&db, &clock, "b").await,
    );
    assert!(a.acquire().await.unwrap());
    clock.advance(seconds(50));
    assert!(a.renew().await.unwrap());
    clock.advance(seconds(50));
    assert!(
        !b.acquire().await.unwrap(),
        "100 s after it was taken, renewed at 50 s"
    );
    clock.advance(seconds(10));
    assert!(b.acquire().await.unwrap());
}

#[tokio::test]
async fn releasing_frees_the_lease_at_once() {
    let (db, clock) = database().await;
    let (a, b) = (
        replica(&db, &clock, "a").await,
        replica(&db, &clock, "b").await,
    );
    assert!(a.acquire().await.unwrap());
    // Someone else's release leaves it alone.
    b.release().await.unwrap();
    assert!(!b.acquire().await.unwrap());
    a.release().await.unwrap();
    assert_eq!(a.current().await.unwrap(), None);
    assert!(b.acquire().await.unwrap());
}

async fn expiry_of(db: &DatabaseConnection) -> i64 {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT expires_at FROM tutela_leases WHERE name = 'sweep'",
    ))
    .await
    .unwrap()
    .map_or(0, |row| row.try_get::<i64>("", "expires_at").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_under_a_lease_renews_it_keeps_others_out_and_releases_it_at_the_end() {
    let (db, clock) = database().await;
    let conn = db.connect().await.unwrap();
    let a = replica(&db, &clock, "a")
        .await
        .with_renewal(Duration::from_millis(10));
    let b = replica(&db, &clock, "b").await;
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move { a.run(async move { finished.await.is_ok() }).await });
    while expiry_of(&conn).await == 0 {
        tokio::task::yield_now().await;
    }
    // Past the first expiry by the clock; the running job's renewals move the lease along.
    clock.advance(seconds(100));
    let renewed = (clock_now(&clock) + seconds(60)).timestamp_millis();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while expiry_of(&conn).await < renewed {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the lease was not renewed while its job ran"
    );
    assert!(matches!(
        b.run(async { unreachable!("two replicas ran the job") }).await.unwrap(),
        Leased::Busy(Some(Holding { ref holder, .. })) if holder == "a"
    ));

    finish.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap(), Leased::Done(true));
    assert_eq!(b.current().await.unwrap(), None, "released at the end");
    assert_eq!(b.run(async { 7 }).await.unwrap(), Leased::Done(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_is_taken_over_is_stopped() {
    let (db, clock) = database().await;
    let conn = db.connect().await.unwrap();
    let a = replica(&db, &clock, "a")
        .await
        .with_renewal(Duration::from_millis(10));
    let running = tokio::spawn(async move { a.run(std::future::pending::<()>()).await });
    while expiry_of(&conn).await == 0 {
        tokio::task::yield_now().await;
    }
    // As if `a` had stalled past its expiry and `b` had taken over.
    conn.execute_raw(Statement::from_string(
        conn.get_database_backend(),
        "UPDATE tutela_leases SET holder = 'b' WHERE name = 'sweep'",
    ))
    .await
    .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    assert_eq!(stopped.unwrap().unwrap().unwrap(), Leased::Lost);
    assert_eq!(
        replica(&db, &clock, "b")
            .await
            .current()
            .await
            .unwrap()
            .unwrap()
            .holder,
        "b",
        "the loser leaves the new holder's lease alone"
    );
}

#[tokio::test]
async fn a_job_under_several_leases_runs_only_when_it_gets_them_all() {
    let (db, clock) = database().await;
    let shared: SharedClock = clock.clone();
    let lease = |name: &str, holder: &str| {
        let shared = shared.clone();
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let db = &db;
        async move {
            Lease::new(db.connect().await.unwrap(), name, shared)
                .with_holder(holder)
                .with_ttl(TTL)
        }
    };
    let mine = [lease("events", "a").await, lease("records", "a").await];
    let theirs = lease("records", "b").await;
    assert!(theirs.acquire().await.unwrap());

    let busy =
        tutela_store::lease::run_all(&mine, async { unreachable!("ran without its leases") })
            .await
            .unwrap();
    assert!(matches!(
        busy,
        Leased::Busy(Some(Holding { ref lease, ref holder, .. })) if lease == "records" && holder == "b"
    ));
    assert_eq!(
        mine[0].current().await.unwrap(),
        None,
        "the lease taken first is given back"
    );

    theirs.release().await.unwrap();
    let done = tutela_store::lease::run_all(&mine, async { "swept" })
        .await
        .unwrap();
    assert_eq!(done, Leased::Done("swept"));
    for lease in &mine {
        assert_eq!(lease.current().await.unwrap(), None, "released at the end");
    }
}
