//! The rights service's tables. Portable SeaQuery on SQLite and PostgreSQL alike; a unique index
//! keeps one task per request and service, so a coordinator that restarts half-way through
//! creating tasks cannot create one twice.

use sea_orm_migration::prelude::*;
use tutela_store::migration::columns::{index, number, optional, optional_time, seq, text, time};

/// Migrations of the rights service.
pub struct RightsMigrator;

impl MigratorTrait for RightsMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261203_000001_rights::Migration),
            Box::new(m20261203_000002_objection_purposes::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("tutela_migrations_rights").into()
    }
}

mod m20261203_000001_rights {
    use super::{index, number, optional, optional_time, seq, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000001_rights"
        }
    }

    #[derive(DeriveIden)]
    enum RightsRequests {
        Table,
        Seq,
        RequestId,
        Tenant,
        SubjectId,
        Kind,
        Requester,
        Reference,
        State,
        ReceivedAt,
        Deadline,
        ExtensionReason,
        IdentityVerifiedAt,
        ApprovedBy,
        RefusalReason,
        FinishedAt,
        RecordedBy,
        IdempotencyKey,
        RequestHash,
        CorrectedFields,
        Correction,
    }

    #[derive(DeriveIden)]
    enum RightsTasks {
        Table,
        Seq,
        Tenant,
        SubjectId,
        RequestId,
        Service,
        State,
        Attempts,
        LastError,
        NextAttemptAt,
        DoneAt,
        Outcome,
        Export,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use RightsRequests as Q;
            use RightsTasks as T;
            manager
                .create_table(
                    Table::create()
                        .table(Q::Table)
                        .col(seq(Q::Seq))
                        .col(text(Q::RequestId))
                        .col(text(Q::Tenant))
                        .col(text(Q::SubjectId))
                        .col(text(Q::Kind))
                        .col(text(Q::Requester))
                        .col(text(Q::Reference))
                        .col(text(Q::State))
                        .col(time(Q::ReceivedAt))
                        .col(time(Q::Deadline))
                        .col(optional(Q::ExtensionReason))
                        .col(optional_time(Q::IdentityVerifiedAt))
                        .col(optional(Q::ApprovedBy))
                        .col(optional(Q::RefusalReason))
                        .col(optional_time(Q::FinishedAt))
                        .col(text(Q::RecordedBy))
                        .col(optional(Q::IdempotencyKey))
                        .col(optional(Q::RequestHash))
                        .col(text(Q::CorrectedFields))
                        .col(ColumnDef::new(Q::Correction).binary().null())
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "rights_requests_by_id",
                Q::Table,
                vec![Q::Tenant.into_iden(), Q::RequestId.into_iden()],
                true,
            )
            .await?;
            index(
                manager,
                "rights_requests_by_subject",
                Q::Table,
                vec![Q::Tenant.into_iden(), Q::SubjectId.into_iden()],
                false,
            )
            .await?;
            // The overdue and stuck filters read unfinished requests by state.
            index(
                manager,
                "rights_requests_by_state",
                Q::Table,
                vec![Q::Tenant.into_iden(), Q::State.into_iden()],
                false,
            )
            .await?;
            index(
                manager,
                "rights_requests_by_idempotency_key",
                Q::Table,
                vec![Q::Tenant.into_iden(), Q::IdempotencyKey.into_iden()],
                true,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(T::Table)
                        .col(seq(T::Seq))
                        .col(text(T::Tenant))
                        .col(text(T::SubjectId))
                        .col(text(T::RequestId))
                        .col(text(T::Service))
                        .col(text(T::State))
                        .col(number(T::Attempts))
                        .col(optional(T::LastError))
                        .col(time(T::NextAttemptAt))
                        .col(optional_time(T::DoneAt))
                        .col(ColumnDef::new(T::Outcome).binary().null())
                        .col(ColumnDef::new(T::Export).binary().null())
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "rights_tasks_by_request",
                T::Table,
                vec![
                    T::Tenant.into_iden(),
                    T::RequestId.into_iden(),
                    T::Service.into_iden(),
                ],
                true,
            )
            .await?;
            // The coordinator's query: pending tasks by when they are due, across tenants.
            index(
                manager,
                "rights_tasks_due",
                T::Table,
                vec![T::State.into_iden(), T::NextAttemptAt.into_iden()],
                false,
            )
            .await?;
            index(
                manager,
                "rights_tasks_by_subject",
                T::Table,
                vec![T::Tenant.into_iden(), T::SubjectId.into_iden()],
                false,
            )
            .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                RightsTasks::Table.into_iden(),
                RightsRequests::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

/// OBJECTION requests name the purposes objected to.
mod m20261203_000002_objection_purposes {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000002_objection_purposes"
        }
    }

    #[derive(DeriveIden)]
    enum RightsRequests {
        Table,
        Purposes,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(RightsRequests::Table)
                        .add_column(
                            ColumnDef::new(RightsRequests::Purposes)
                                .string()
                                .not_null()
                                .default(""),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(RightsRequests::Table)
                        .drop_column(RightsRequests::Purposes)
                        .to_owned(),
                )
                .await
        }
    }
}
