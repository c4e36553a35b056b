//! The sharing service's tables. Portable SeaQuery on SQLite and PostgreSQL alike: UUID keys (no
//! new ordering on sequences), composite keys where a row belongs to a parent, and unique indexes
//! that catch races (a version number, an idempotency key) in the database.

use sea_orm_migration::prelude::*;

/// Migrations of the sharing service.
pub struct SharingMigrator;

impl MigratorTrait for SharingMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261201_000001_partners_and_agreements::Migration),
            Box::new(crate::webhooks::migration::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("tutela_migrations_sharing").into()
    }
}

// Column and index shapes: the ones every service's tables use.
use tutela_store::migration::columns::{index, number, optional, optional_time, text, time};

mod m20261201_000001_partners_and_agreements {
    use super::{index, number, optional, optional_time, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261201_000001_partners_and_agreements"
        }
    }

    #[derive(DeriveIden)]
    enum SharingPartners {
        Table,
        PartnerId,
        Tenant,
        LegalName,
        Kind,
        Role,
        Country,
        ContactEmail,
        KeyVersion,
        CreatedAt,
        UpdatedAt,
        IdempotencyKey,
        RequestHash,
    }

    #[derive(DeriveIden)]
    enum SharingPartnerKeys {
        Table,
        PartnerId,
        Version,
        Tenant,
        SealedKey,
        CreatedAt,
        RetiredAt,
    }

    #[derive(DeriveIden)]
    enum SharingAgreements {
        Table,
        AgreementId,
        Tenant,
        PartnerId,
        Version,
        State,
        ValidFrom,
        ValidTo,
        PartnerRetention,
        AccessPeriod,
        TransferSafeguard,
        SafeguardReference,
        CreatedAt,
        ActivatedAt,
        TerminatedAt,
        IdempotencyKey,
        RequestHash,
    }

    #[derive(DeriveIden)]
    enum SharingAgreementPurposes {
        Table,
        AgreementId,
        Purpose,
        Tenant,
        LegalBasis,
        Fields,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use SharingAgreementPurposes as P;
            use SharingAgreements as A;
            use SharingPartnerKeys as K;
            use SharingPartners as S;
            manager
                .create_table(
                    Table::create()
                        .table(S::Table)
                        .col(text(S::PartnerId).primary_key())
                        .col(text(S::Tenant))
                        .col(text(S::LegalName))
                        .col(text(S::Kind))
                        .col(text(S::Role))
                        .col(text(S::Country))
                        .col(text(S::ContactEmail))
                        .col(number(S::KeyVersion))
                        .col(time(S::CreatedAt))
                        .col(time(S::UpdatedAt))
                        .col(optional(S::IdempotencyKey))
                        .col(optional(S::RequestHash))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "sharing_partners_by_tenant",
                S::Table,
                vec![S::Tenant.into_iden(), S::PartnerId.into_iden()],
                true,
            )
            .await?;
            // NULL keys never collide; a key used twice in a tenant loses the race here.
            index(
                manager,
                "sharing_partners_by_idempotency_key",
                S::Table,
                vec![S::Tenant.into_iden(), S::IdempotencyKey.into_iden()],
                true,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(K::Table)
                        .col(text(K::PartnerId))
                        .col(number(K::Version))
                        .col(text(K::Tenant))
                        .col(ColumnDef::new(K::SealedKey).binary().not_null())
                        .col(time(K::CreatedAt))
                        .col(optional_time(K::RetiredAt))
                        .primary_key(Index::create().col(K::PartnerId).col(K::Version))
                        .to_owned(),
                )
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(A::Table)
                        .col(text(A::AgreementId).primary_key())
                        .col(text(A::Tenant))
                        .col(text(A::PartnerId))
                        .col(number(A::Version))
                        .col(text(A::State))
                        .col(time(A::ValidFrom))
                        .col(optional_time(A::ValidTo))
                        .col(text(A::PartnerRetention))
                        .col(text(A::AccessPeriod))
                        .col(text(A::TransferSafeguard))
                        .col(text(A::SafeguardReference))
                        .col(time(A::CreatedAt))
                        .col(optional_time(A::ActivatedAt))
                        .col(optional_time(A::TerminatedAt))
                        .col(optional(A::IdempotencyKey))
                        .col(optional(A::RequestHash))
                        .to_owned(),
                )
                .await?;
            // One row per version: two drafts made at once cannot both take version n+1.
            index(
                manager,
                "sharing_agreements_by_version",
                A::Table,
                vec![
                    A::Tenant.into_iden(),
                    A::PartnerId.into_iden(),
                    A::Version.into_iden(),
                ],
                true,
            )
            .await?;
            index(
                manager,
                "sharing_agreements_by_idempotency_key",
                A::Table,
                vec![A::Tenant.into_iden(), A::IdempotencyKey.into_iden()],
                true,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(P::Table)
                        .col(text(P::AgreementId))
                        .col(text(P::Purpose))
                        .col(text(P::Tenant))
                        .col(text(P::LegalBasis))
                        .col(ColumnDef::new(P::Fields).text().not_null())
                        .primary_key(Index::create().col(P::AgreementId).col(P::Purpose))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                SharingAgreementPurposes::Table.into_iden(),
                SharingAgreements::Table.into_iden(),
                SharingPartnerKeys::Table.into_iden(),
                SharingPartners::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}
