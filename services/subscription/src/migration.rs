//! The subscription service's tables.

use sea_orm_migration::prelude::*;

/// Migrations of the subscription service.
pub struct SubscriptionMigrator;

impl MigratorTrait for SubscriptionMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_consent_ledger::Migration),
            Box::new(m20261124_000002_restrictions::Migration),
            Box::new(m20261124_000003_identity_verifications::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("tutela_migrations_subscription").into()
    }
}

/// Refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL) on `table`: the ledger is evidence.
async fn append_only(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, DbBackend};
    let db = manager.get_connection();
    match manager.get_database_backend() {
        DbBackend::Sqlite => {
            for op in ["UPDATE", "DELETE"] {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER {table}_no_{op} BEFORE {op} ON {table} \
                     BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END"
                ))
                .await?;
            }
        }
        DbBackend::Postgres => {
            db.execute_unprepared(&format!(
                "CREATE FUNCTION {table}_append_only() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION 'the consent ledger is append-only'; END $$"
            ))
            .await?;
            db.execute_unprepared(&format!(
                "CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE \
                 OR TRUNCATE ON {table} FOR EACH STATEMENT \
                 EXECUTE FUNCTION {table}_append_only()"
            ))
            .await?;
        }
        other => {
            return Err(DbErr::Migration(format!("unsupported backend {other:?}")));
        }
    }
    Ok(())
}

mod m20261124_000001_consent_ledger {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    // Named by hand: the derive takes the file's name, which every migration here shares.
    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "migration"
        }
    }

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
            super::append_only(manager, "consent_entries").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "the consent ledger is evidence and is never dropped by a migration".into(),
            ))
        }
    }
}

mod m20261124_000002_restrictions {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000002_restrictions"
        }
    }

    #[derive(DeriveIden)]
    enum Restrictions {
        Table,
        Seq,
        Tenant,
        SubjectId,
        Restricted,
        Reason,
        RecordedBy,
        RecordedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Restrictions::Table)
                        .col(
                            ColumnDef::new(Restrictions::Seq)
                                .big_integer()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(Restrictions::Tenant).string().not_null())
                        .col(ColumnDef::new(Restrictions::SubjectId).string().not_null())
                        .col(
                            ColumnDef::new(Restrictions::Restricted)
                                .boolean()
                                .not_null(),
                        )
                        .col(ColumnDef::new(Restrictions::Reason).string().not_null())
                        .col(ColumnDef::new(Restrictions::RecordedBy).string().not_null())
                        .col(
                            ColumnDef::new(Restrictions::RecordedAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("restrictions_by_subject")
                        .table(Restrictions::Table)
                        .col(Restrictions::Tenant)
                        .col(Restrictions::SubjectId)
                        .col(Restrictions::Seq)
                        .to_owned(),
                )
                .await?;
            super::append_only(manager, "restrictions").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "restrictions are evidence and are never dropped by a migration".into(),
            ))
        }
    }
}

mod m20261124_000003_identity_verifications {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000003_identity_verifications"
        }
    }

    #[derive(DeriveIden)]
    enum IdentityVerifications {
        Table,
        Seq,
        Tenant,
        SubjectId,
        Method,
        Sealed,
        VerifiedBy,
        VerifiedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use IdentityVerifications as V;
            manager
                .create_table(
                    Table::create()
                        .table(V::Table)
                        .col(
                            ColumnDef::new(V::Seq)
                                .big_integer()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(V::Tenant).string().not_null())
                        .col(ColumnDef::new(V::SubjectId).string().not_null())
                        .col(ColumnDef::new(V::Method).string().not_null())
                        // The evidence reference, sealed under the subject's data key.
                        .col(ColumnDef::new(V::Sealed).binary().not_null())
                        .col(ColumnDef::new(V::VerifiedBy).string().not_null())
                        .col(
                            ColumnDef::new(V::VerifiedAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("identity_verifications_by_subject")
                        .table(V::Table)
                        .col(V::Tenant)
                        .col(V::SubjectId)
                        .col(V::Seq)
                        .to_owned(),
                )
                .await?;
            super::append_only(manager, "identity_verifications").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "identity verifications are evidence and are never dropped by a migration".into(),
            ))
        }
    }
}
