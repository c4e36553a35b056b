//! One runner for every service's migrations. Each service brings its own sea-orm migrator with
//! its own history table (so that services sharing one database, as `tutela serve` does with
//! SQLite, do not see each other's migrations as unknown); the store's own tables come first.

use std::marker::PhantomData;

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use sea_orm_migration::MigratorTrait;

use crate::error::StoreResult;

pub mod columns;
mod m20261124_000001_subject_keys;
mod m20261124_000002_subject_key_seq;
mod m20261201_000001_leases;

/// A set of migrations that can be applied to a database.
pub trait Migrations: Send + Sync {
    /// The owner of the migrations (a service name, or `store`), for logs.
    fn name(&self) -> &'static str;
    /// Applies every pending migration.
    fn up<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>>;
}

struct MigratorSet<M>(&'static str, PhantomData<fn() -> M>);

impl<M: MigratorTrait + 'static> Migrations for MigratorSet<M> {
    fn name(&self) -> &'static str {
        self.0
    }

    fn up<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(async move {
            // One transaction on both engines: a run cut short leaves no half-made schema, and
            // on SQLite every statement then runs on the same connection (sea-orm otherwise runs
            // SQLite migrations outside a transaction, on whichever pooled connection is free).
            let txn = crate::begin(db).await?;
            if db.get_database_backend() == DbBackend::Postgres {
                // Several pods may start at once: one migrates, the others wait and then find
                // nothing pending. The lock is released when the transaction ends.
                txn.execute_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_xact_lock(7238561120934)",
                ))
                .await?;
            }
            M::up(&txn, None).await?;
            txn.commit().await
        })
    }
}

/// Wraps a sea-orm migrator as a [`Migrations`] set named `name`. The migrator must override
/// `migration_table_name` so that its history does not mix with another service's.
pub fn migrations_of<M: MigratorTrait + 'static>(name: &'static str) -> Box<dyn Migrations> {
    Box::new(MigratorSet::<M>(name, PhantomData))
}

/// The store's own tables (the key vault, the leases), which every service database needs.
pub(crate) struct StoreMigrator;

impl MigratorTrait for StoreMigrator {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_subject_keys::Migration),
            Box::new(m20261124_000002_subject_key_seq::Migration),
            Box::new(m20261201_000001_leases::Migration),
        ]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        sea_orm::sea_query::Alias::new("tutela_migrations_store").into()
    }
}

/// Applies the store's migrations and then each set in order.
pub async fn migrate(db: &DatabaseConnection, sets: &[Box<dyn Migrations>]) -> StoreResult<()> {
    let store = migrations_of::<StoreMigrator>("store");
    for set in std::iter::once(&store).chain(sets) {
        tracing::debug!(owner = set.name(), "applying migrations");
        set.up(db).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm::{FromQueryResult, Value};

    use super::*;
    use crate::testing::TestDatabase;

    #[derive(Debug, FromQueryResult, PartialEq)]
    struct Key {
        subject_id: String,
        seq: i64,
        wrapped_key: Option<Vec<u8>>,
    }

    #[tokio::test]
    async fn giving_keys_a_seq_keeps_every_key_and_numbers_new_ones_after_them() {
        let db = TestDatabase::create().await.unwrap();
        let conn = db.connect().await.unwrap();
        StoreMigrator::up(&conn, Some(1)).await.unwrap();
        let backend = conn.get_database_backend();
        let insert = |subject: &str, wrapped: Option<Vec<u8>>| {
            Statement::from_sql_and_values(
                backend,
                crate::placeholders(
                    backend,
                    "INSERT INTO tutela_subject_keys (scope, tenant, subject_id, kek_id, \
                     wrapped_key, created_at) VALUES ('s', 't', $1, 'k', $2, $3)",
                ),
                [
                    Value::from(subject),
                    Value::from(wrapped),
                    Value::from(chrono::Utc::now()),
                ],
            )
        };
        // A live key and a tombstone, written under the first schema.
        conn.execute_raw(insert("b", Some(vec![1, 2, 3])))
            .await
            .unwrap();
        conn.execute_raw(insert("a", None)).await.unwrap();

        migrate(&conn, &[]).await.unwrap();
        conn.execute_raw(insert("c", Some(vec![4]))).await.unwrap();
        let keys = Key::find_by_statement(Statement::from_string(
            backend,
            "SELECT subject_id, seq, wrapped_key FROM tutela_subject_keys ORDER BY seq",
        ))
        .all(&conn)
        .await
        .unwrap();
        let subjects: Vec<(&str, Option<&[u8]>)> = keys
            .iter()
            .map(|k| (k.subject_id.as_str(), k.wrapped_key.as_deref()))
            .collect();
        assert_eq!(
            subjects,
            [
                ("b", Some(&[1u8, 2, 3][..])),
                ("a", None),
                ("c", Some(&[4u8][..]))
            ]
        );
        // (scope, tenant, subject) is still unique.
        assert!(conn.execute_raw(insert("a", None)).await.is_err());
    }
}
