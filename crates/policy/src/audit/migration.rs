//! The audit log's tables, in every service database.

use sea_orm_migration::prelude::*;

/// Migrations of the audit log.
pub struct AuditMigrator;

impl MigratorTrait for AuditMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261124_000001_audit_log::Migration)]
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
