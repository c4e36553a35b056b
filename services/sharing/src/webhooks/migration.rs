//! The webhook tables: one endpoint per partner, and the durable outbox of messages to it. A
//! message is written in the same transaction as the change it announces, so a rolled-back
//! change announces nothing and a committed one is delivered even if the process dies first.

use sea_orm_migration::prelude::*;
use tutela_store::migration::columns::{index, number, optional, text, time};

/// `m20261202_000010_webhooks`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000010_webhooks"
    }
}

#[derive(DeriveIden)]
enum SharingWebhookEndpoints {
    Table,
    PartnerId,
    Tenant,
    Url,
    SealedSecret,
    Enabled,
    DisabledReason,
    CreatedAt,
    UpdatedAt,
    IdempotencyKey,
    RequestHash,
}

#[derive(DeriveIden)]
enum SharingWebhookMessages {
    Table,
    MessageId,
    Tenant,
    PartnerId,
    EventType,
    Body,
    Attempts,
    NextAttemptAt,
    State,
    LastStatus,
    LastError,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SharingWebhookEndpoints as E;
        use SharingWebhookMessages as M;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    // One endpoint per partner: a new one replaces the row.
                    .col(text(E::PartnerId).primary_key())
                    .col(text(E::Tenant))
                    .col(ColumnDef::new(E::Url).text().not_null())
                    .col(ColumnDef::new(E::SealedSecret).binary().not_null())
                    .col(ColumnDef::new(E::Enabled).boolean().not_null())
                    .col(optional(E::DisabledReason))
                    .col(time(E::CreatedAt))
                    .col(time(E::UpdatedAt))
                    .col(optional(E::IdempotencyKey))
                    .col(optional(E::RequestHash))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "sharing_webhook_endpoints_by_idempotency_key",
            E::Table,
            vec![E::Tenant.into_iden(), E::IdempotencyKey.into_iden()],
            true,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(M::Table)
                    // A UUIDv7, sent as `webhook-id`: receivers deduplicate on it.
                    .col(text(M::MessageId).primary_key())
                    .col(text(M::Tenant))
                    .col(text(M::PartnerId))
                    .col(text(M::EventType))
                    .col(ColumnDef::new(M::Body).text().not_null())
                    .col(number(M::Attempts))
                    .col(time(M::NextAttemptAt))
                    .col(text(M::State))
                    .col(ColumnDef::new(M::LastStatus).integer().null())
                    .col(optional(M::LastError))
                    .col(time(M::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // The worker's question: which messages are due, oldest due first.
        index(
            manager,
            "sharing_webhook_messages_due",
            M::Table,
            vec![
                M::State.into_iden(),
                M::NextAttemptAt.into_iden(),
                M::MessageId.into_iden(),
            ],
            false,
        )
        .await?;
        // The operators' question: a partner's messages, in order.
        index(
            manager,
            "sharing_webhook_messages_by_partner",
            M::Table,
            vec![
                M::Tenant.into_iden(),
                M::PartnerId.into_iden(),
                M::MessageId.into_iden(),
            ],
            false,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SharingWebhookMessages::Table.into_iden(),
            SharingWebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
