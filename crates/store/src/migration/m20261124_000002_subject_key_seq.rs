//! A stable integer per key row (`seq`), so that a bulk reader (the audience of a send) can reach
//! a subject's key by an integer that follows creation order, instead of a look-up on the text
//! key (scope, tenant, subject), whose random order cost more than anything else in reading a
//! million recipients.
//!
//! SQLite cannot add a primary key to a table, so the table is rebuilt with `seq` as its
//! `INTEGER PRIMARY KEY` (an alias of the row id, which VACUUM keeps) and (scope, tenant,
//! subject) as a unique key; rows keep their order. The runner's transaction (see
//! `MigratorSet::up`) makes the rebuild all or nothing: cut short, it leaves the old table, which
//! holds the only copies of the keys. PostgreSQL adds a `bigserial` column with a unique index.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TutelaSubjectKeys {
    Table,
    Seq,
    Scope,
    Tenant,
    SubjectId,
    KekId,
    WrappedKey,
    CreatedAt,
    ShreddedAt,
}

const REBUILT: &str = "tutela_subject_keys_rebuilt";
const COLUMNS: &str = "scope, tenant, subject_id, kek_id, wrapped_key, created_at, shredded_at";

fn seq() -> ColumnDef {
    ColumnDef::new(TutelaSubjectKeys::Seq)
        .big_integer()
        .not_null()
        .auto_increment()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use TutelaSubjectKeys as K;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .alter_table(Table::alter().table(K::Table).add_column(seq()).to_owned())
                .await?;
            return manager
                .create_index(
                    Index::create()
                        .name("tutela_subject_keys_by_seq")
                        .table(K::Table)
                        .col(K::Seq)
                        .unique()
                        .to_owned(),
                )
                .await;
        }
        // The same columns as the first migration, with `seq` in front as the primary key.
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(REBUILT))
                    .col(seq().primary_key())
                    .col(ColumnDef::new(K::Scope).string_len(32).not_null())
                    .col(ColumnDef::new(K::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(K::SubjectId).string_len(64).not_null())
                    .col(ColumnDef::new(K::KekId).string_len(64).not_null())
                    .col(ColumnDef::new(K::WrappedKey).binary().null())
                    .col(
                        ColumnDef::new(K::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(K::ShreddedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .index(
                        Index::create()
                            .name("tutela_subject_keys_by_subject")
                            .unique()
                            .col(K::Scope)
                            .col(K::Tenant)
                            .col(K::SubjectId),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "INSERT INTO {REBUILT} ({COLUMNS}) SELECT {COLUMNS} FROM tutela_subject_keys \
             ORDER BY rowid"
        ))
        .await?;
        manager
            .drop_table(Table::drop().table(K::Table).to_owned())
            .await?;
        manager
            .rename_table(
                Table::rename()
                    .table(Alias::new(REBUILT), K::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the key vault is never rebuilt backwards: it holds the only copies of the keys".into(),
        ))
    }
}
