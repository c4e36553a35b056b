//! The subscription service's tables.

use sea_orm_migration::prelude::*;

/// Migrations of the subscription service.
pub struct SubscriptionMigrator;

impl MigratorTrait for SubscriptionMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261124_000001_consent_ledger::Migration)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("tutela_migrations_subscription").into()
    }
}

mod m20261124_000001_consent_ledger {
    use sea_orm::{ConnectionTrait, DbBackend};
    use sea_orm_migration::prelude::*;

    #[derive(DeriveMigrationName)]
    pub struct Migration;

    #[derive(DeriveIden)]
    enum ConsentEntries {
        Table,
        Seq,
        EntryId,
        Tenant,
        SubjectId,
        Purpose,
        Recipient,
        Granted,
        OccurredAt,
        RecordedAt,
        Method,
        WordingVersion,
        WordingSha256,
        Actor,
        Sealed,
        RecordedBy,
        IdempotencyKey,
        RequestHash,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(ConsentEntries::Table)
                        .col(
                            ColumnDef::new(ConsentEntries::Seq)
                                .big_integer()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::EntryId)
                                .string()
                                .not_null()
                                .unique_key(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Tenant).string().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::SubjectId)
                                .string()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Purpose).string().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::Recipient)
                                .string()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Granted).boolean().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::OccurredAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::RecordedAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Method).string().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::WordingVersion)
                                .string()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::WordingSha256)
                                .string()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Actor).string().not_null())
                        .col(ColumnDef::new(ConsentEntries::Sealed).binary().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::RecordedBy)
                                .string()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::IdempotencyKey)
                                .string()
                                .null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::RequestHash).string().null())
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("consent_entries_by_subject")
                        .table(ConsentEntries::Table)
                        .col(ConsentEntries::Tenant)
                        .col(ConsentEntries::SubjectId)
                        .col(ConsentEntries::Seq)
                        .to_owned(),
                )
                .await?;
            // NULLs are distinct in unique indexes on both backends: only keyed writes collide.
            manager
                .create_index(
                    Index::create()
                        .name("consent_entries_idempotency")
                        .table(ConsentEntries::Table)
                        .col(ConsentEntries::Tenant)
                        .col(ConsentEntries::IdempotencyKey)
                        .unique()
                        .to_owned(),
                )
                .await?;
            // Append-only in the database itself, not only by the absence of an RPC.
            let db = manager.get_connection();
            match manager.get_database_backend() {
                DbBackend::Sqlite => {
                    for op in ["UPDATE", "DELETE"] {
                        db.execute_unprepared(&format!(
                            "CREATE TRIGGER consent_entries_no_{op} BEFORE {op} ON consent_entries \
                             BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END"
                        ))
                        .await?;
                    }
                }
                DbBackend::Postgres => {
                    db.execute_unprepared(
                        "CREATE FUNCTION consent_entries_append_only() RETURNS trigger \
                         LANGUAGE plpgsql AS $$ BEGIN \
                         RAISE EXCEPTION 'the consent ledger is append-only'; END $$",
                    )
                    .await?;
                    db.execute_unprepared(
                        "CREATE TRIGGER consent_entries_append_only BEFORE UPDATE OR DELETE \
                         OR TRUNCATE ON consent_entries FOR EACH STATEMENT \
                         EXECUTE FUNCTION consent_entries_append_only()",
                    )
                    .await?;
                }
                other => {
                    return Err(DbErr::Migration(format!("unsupported backend {other:?}")));
                }
            }
            Ok(())
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "the consent ledger is evidence and is never dropped by a migration".into(),
            ))
        }
    }
}
