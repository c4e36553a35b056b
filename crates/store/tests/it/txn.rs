//! Transactions that read before they write, beside another writer: the case in which a
//! deferred SQLite transaction fails with `SQLITE_BUSY_SNAPSHOT` (517) whatever the busy timeout.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::sync::oneshot;
use tutela_store::testing::TestDatabase;

async fn count(db: &impl ConnectionTrait) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM txn_probe",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

async fn insert(db: &impl ConnectionTrait, n: i64) {
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("INSERT INTO txn_probe (n) VALUES ({n})"),
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_reads_then_writes_survives_a_commit_in_between() {
    let db = TestDatabase::create().await.unwrap();
    // Two pools, as two processes (or two connections of one pool) would be.
    let first: DatabaseConnection = db.connect().await.unwrap();
    let second: DatabaseConnection = db.connect().await.unwrap();
    first
        .execute_unprepared("CREATE TABLE txn_probe (n BIGINT NOT NULL)")
        .await
        .unwrap();

    let (read, has_read) = oneshot::channel();
    let reader = tokio::spawn(async move {
        let txn = tutela_store::begin(&first).await.unwrap();
        let seen = count(&txn).await;
        read.send(()).unwrap();
        // Give the other writer every chance to commit between this read and the write below.
        tokio::time::sleep(Duration::from_millis(300)).await;
        insert(&txn, seen + 1).await;
        txn.commit().await.unwrap();
    });
    has_read.await.unwrap();
    let txn = tutela_store::begin(&second).await.unwrap();
    insert(&txn, 100).await;
    txn.commit().await.unwrap();
    reader.await.unwrap();

    assert_eq!(count(&second).await, 2);
}

#[tokio::test]
async fn sqlite_connections_are_tuned_for_a_server_without_a_memory_map() {
    let db = TestDatabase::create().await.unwrap();
    let conn = db.connect().await.unwrap();
    if conn.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return;
    }
    let pragma = |name: &'static str| {
        let conn = conn.clone();
        async move {
            let row = conn
                .query_one_raw(Statement::from_string(
                    sea_orm::DbBackend::Sqlite,
                    format!("PRAGMA {name}"),
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<String>(0)
                .or_else(|_| row.try_get_by_index::<i64>(0).map(|n| n.to_string()))
                .unwrap()
        }
    };
    assert_eq!(pragma("journal_mode").await, "wal");
    assert_eq!(pragma("secure_delete").await, "1");
    // A map would be unmapped and faulted back at the start of every read after a commit.
    assert_eq!(pragma("mmap_size").await, "0");
}
