//! The key vault: one wrapped data key per (scope, tenant, subject). A shredded key keeps its row
//! with the key bytes gone, so that "erased" stays distinguishable from "never existed".

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TutelaSubjectKeys {
    Table,
    Scope,
    Tenant,
    SubjectId,
    KekId,
    WrappedKey,
    CreatedAt,
    ShreddedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TutelaSubjectKeys::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TutelaSubjectKeys::Scope)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TutelaSubjectKeys::Tenant)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TutelaSubjectKeys::SubjectId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TutelaSubjectKeys::KekId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TutelaSubjectKeys::WrappedKey)
                            .binary()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(TutelaSubjectKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TutelaSubjectKeys::ShreddedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(TutelaSubjectKeys::Scope)
                            .col(TutelaSubjectKeys::Tenant)
                            .col(TutelaSubjectKeys::SubjectId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TutelaSubjectKeys::Table).to_owned())
            .await
    }
}
