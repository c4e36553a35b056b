//! The audit log's tables, in every service database.

use sea_orm_migration::prelude::*;

/// Migrations of the audit log.
pub struct AuditMigrator;

impl MigratorTrait for AuditMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_audit_log::Migration),
            Box::new(m20261201_000001_audit_outbox::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("tutela_migrations_audit").into()
    }
}

mod m20261124_000001_audit_log {
    use sea_orm_migration::prelude::*;

    #[derive(DeriveMigrationName)]
    pub struct Migration;

    #[derive(DeriveIden)]
    enum TutelaAuditLog {
        Table,
        Seq,
        At,
        Kind,
        Tenant,
        Principal,
        PrincipalKind,
        Roles,
        Rpc,
        Purpose,
        Subject,
        Categories,
        Decision,
        Reason,
        TraceId,
        PrevHash,
        Hash,
    }

    #[derive(DeriveIden)]
    enum TutelaAuditHead {
        Table,
        Id,
        Seq,
        Hash,
    }

    #[derive(DeriveIden)]
    enum TutelaAuditSubjects {
        Table,
        Pseudonym,
        Tenant,
        SubjectId,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            use TutelaAuditLog as L;
            let text = |c: L| ColumnDef::new(c).text().not_null().to_owned();
            m.create_table(
                Table::create()
                    .table(L::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(L::Seq)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(L::At).timestamp_with_time_zone().not_null())
                    .col(text(L::Kind))
                    .col(text(L::Tenant))
                    .col(text(L::Principal))
                    .col(text(L::PrincipalKind))
                    .col(text(L::Roles))
                    .col(text(L::Rpc))
                    .col(text(L::Purpose))
                    .col(ColumnDef::new(L::Subject).text().null())
                    .col(text(L::Categories))
                    .col(text(L::Decision))
                    .col(text(L::Reason))
                    .col(text(L::TraceId))
                    .col(text(L::PrevHash))
                    .col(text(L::Hash))
                    .to_owned(),
            )
            .await?;
            // The breach question (X2) asks by principal and time.
            m.create_index(
                Index::create()
                    .name("tutela_audit_log_principal_at")
                    .table(L::Table)
                    .col(L::Tenant)
                    .col(L::Principal)
                    .col(L::At)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
            m.create_table(
                Table::create()
                    .table(TutelaAuditHead::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TutelaAuditHead::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TutelaAuditHead::Seq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(TutelaAuditHead::Hash).text().not_null())
                    .to_owned(),
            )
            .await?;
            m.create_table(
                Table::create()
                    .table(TutelaAuditSubjects::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TutelaAuditSubjects::Pseudonym)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TutelaAuditSubjects::Tenant)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TutelaAuditSubjects::SubjectId)
                            .text()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(TutelaAuditSubjects::Table).to_owned())
                .await?;
            m.drop_table(Table::drop().table(TutelaAuditHead::Table).to_owned())
                .await?;
            m.drop_table(Table::drop().table(TutelaAuditLog::Table).to_owned())
                .await
        }
    }
}

/// The head row from the start, so that the first batch of several processes on a fresh database
/// locks a row that exists (two writers would otherwise both start at record 1); and the outbox,
/// where a write stages its audit record in its own transaction.
mod m20261201_000001_audit_outbox {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    // Named by hand: the derive names a migration after its file, which the first one of this
    // file already is (and is recorded as, in every existing database).
    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261201_000001_audit_outbox"
        }
    }

    #[derive(DeriveIden)]
    enum TutelaAuditHead {
        Table,
        Id,
        Seq,
        Hash,
    }

    #[derive(DeriveIden)]
    enum TutelaAuditOutbox {
        Table,
        Id,
        At,
        Kind,
        Tenant,
        Principal,
        PrincipalKind,
        Roles,
        Rpc,
        Purpose,
        Subject,
        SubjectId,
        Categories,
        Decision,
        Reason,
        TraceId,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            use TutelaAuditOutbox as O;
            // A database with records already has its head; one without gets the genesis head,
            // which is what `verify` expects of an empty log.
            let mut head = Query::insert();
            head.into_table(TutelaAuditHead::Table)
                .columns([
                    TutelaAuditHead::Id,
                    TutelaAuditHead::Seq,
                    TutelaAuditHead::Hash,
                ])
                .values([1.into(), 0i64.into(), super::super::GENESIS.into()])
                .map_err(|e| DbErr::Custom(e.to_string()))?
                .on_conflict(
                    OnConflict::column(TutelaAuditHead::Id)
                        .do_nothing()
                        .to_owned(),
                );
            m.exec_stmt(head).await?;
            let text = |c: O| ColumnDef::new(c).text().not_null().to_owned();
            m.create_table(
                Table::create()
                    .table(O::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(O::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(O::At).timestamp_with_time_zone().not_null())
                    .col(text(O::Kind))
                    .col(text(O::Tenant))
                    .col(text(O::Principal))
                    .col(text(O::PrincipalKind))
                    .col(text(O::Roles))
                    .col(text(O::Rpc))
                    .col(text(O::Purpose))
                    .col(text(O::Subject))
                    .col(text(O::SubjectId))
                    .col(text(O::Categories))
                    .col(text(O::Decision))
                    .col(text(O::Reason))
                    .col(text(O::TraceId))
                    .to_owned(),
            )
            .await?;
            // Recovery looks for rows older than a cut-off.
            m.create_index(
                Index::create()
                    .name("tutela_audit_outbox_at")
                    .table(O::Table)
                    .col(O::At)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(TutelaAuditOutbox::Table).to_owned())
                .await
        }
    }
}
