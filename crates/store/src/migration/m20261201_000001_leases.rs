//! Leases: one row per job that only one replica may run at a time (the retention sweeps). The
//! expiry is unix milliseconds, a plain integer, so that one `expires_at < $now` compares the same
//! way on SQLite (which keeps timestamps as text) and PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TutelaLeases {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TutelaLeases::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TutelaLeases::Name)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TutelaLeases::Holder)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TutelaLeases::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TutelaLeases::Table).to_owned())
            .await
    }
}
