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
            Box::new(m20261202_000002_disclosures::Migration),
            Box::new(m20261202_000003_notices::Migration),
            Box::new(crate::webhooks::migration::Migration),
            Box::new(m20261203_000005_notice_reasons::Migration),
            Box::new(m20261203_000006_inbound::Migration),
            Box::new(m20261203_000007_release_shares::Migration),
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

mod m20261202_000002_disclosures {
    use super::{index, number, optional, optional_time, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261202_000002_disclosures"
        }
    }

    #[derive(DeriveIden)]
    enum SharingDeliveries {
        Table,
        DeliveryId,
        Tenant,
        PartnerId,
        AgreementId,
        AgreementVersion,
        Purpose,
        LegalBasis,
        Fields,
        Channel,
        Layout,
        FileSha256,
        KeyVersion,
        RecordCount,
        Actor,
        CreatedAt,
        AvailableUntil,
        DeletionRequestedAt,
        IdempotencyKey,
        RequestHash,
    }

    #[derive(DeriveIden)]
    enum SharingDeliveryRecords {
        Table,
        DeliveryId,
        Position,
        Tenant,
        Pseudonym,
        SealedRecord,
        PayloadSha256,
    }

    #[derive(DeriveIden)]
    enum SharingDisclosureLog {
        Table,
        PartnerId,
        Position,
        Tenant,
        SubjectId,
        DeliveryId,
        AgreementId,
        AgreementVersion,
        Purpose,
        LegalBasis,
        Fields,
        Channel,
        DisclosedAt,
        Actor,
        PayloadSha256,
        Reference,
        Requester,
        DoNotTellUntil,
        PrevHash,
        EntryHash,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use SharingDeliveries as D;
            use SharingDeliveryRecords as R;
            use SharingDisclosureLog as L;
            manager
                .create_table(
                    Table::create()
                        .table(D::Table)
                        .col(text(D::DeliveryId).primary_key())
                        .col(text(D::Tenant))
                        .col(text(D::PartnerId))
                        .col(text(D::AgreementId))
                        .col(number(D::AgreementVersion))
                        .col(text(D::Purpose))
                        .col(text(D::LegalBasis))
                        .col(ColumnDef::new(D::Fields).text().not_null())
                        .col(text(D::Channel))
                        .col(text(D::Layout))
                        .col(text(D::FileSha256))
                        .col(number(D::KeyVersion))
                        .col(number(D::RecordCount))
                        .col(text(D::Actor))
                        .col(time(D::CreatedAt))
                        .col(optional_time(D::AvailableUntil))
                        .col(optional_time(D::DeletionRequestedAt))
                        .col(optional(D::IdempotencyKey))
                        .col(optional(D::RequestHash))
                        .to_owned(),
                )
                .await?;
            // A partner's pulls walk its deliveries in order.
            index(
                manager,
                "sharing_deliveries_by_partner",
                D::Table,
                vec![
                    D::Tenant.into_iden(),
                    D::PartnerId.into_iden(),
                    D::DeliveryId.into_iden(),
                ],
                true,
            )
            .await?;
            index(
                manager,
                "sharing_deliveries_by_idempotency_key",
                D::Table,
                vec![D::Tenant.into_iden(), D::IdempotencyKey.into_iden()],
                true,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(R::Table)
                        .col(text(R::DeliveryId))
                        .col(number(R::Position))
                        .col(text(R::Tenant))
                        .col(text(R::Pseudonym))
                        .col(ColumnDef::new(R::SealedRecord).binary().not_null())
                        .col(text(R::PayloadSha256))
                        .primary_key(Index::create().col(R::DeliveryId).col(R::Position))
                        .to_owned(),
                )
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(L::Table)
                        .col(text(L::PartnerId))
                        .col(ColumnDef::new(L::Position).big_integer().not_null())
                        .col(text(L::Tenant))
                        .col(text(L::SubjectId))
                        .col(text(L::DeliveryId))
                        .col(text(L::AgreementId))
                        .col(number(L::AgreementVersion))
                        .col(text(L::Purpose))
                        .col(text(L::LegalBasis))
                        .col(ColumnDef::new(L::Fields).text().not_null())
                        .col(text(L::Channel))
                        .col(time(L::DisclosedAt))
                        .col(text(L::Actor))
                        .col(text(L::PayloadSha256))
                        .col(text(L::Reference))
                        .col(text(L::Requester))
                        .col(optional_time(L::DoNotTellUntil))
                        .col(text(L::PrevHash))
                        .col(text(L::EntryHash))
                        // One chain per partner: two disclosures racing for the same position
                        // cannot both commit.
                        .primary_key(Index::create().col(L::PartnerId).col(L::Position))
                        .to_owned(),
                )
                .await?;
            // An access request lists a learner's recipients; a rectification finds them.
            index(
                manager,
                "sharing_disclosure_log_by_subject",
                L::Table,
                vec![
                    L::Tenant.into_iden(),
                    L::SubjectId.into_iden(),
                    L::PartnerId.into_iden(),
                    L::Position.into_iden(),
                ],
                false,
            )
            .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                SharingDisclosureLog::Table.into_iden(),
                SharingDeliveryRecords::Table.into_iden(),
                SharingDeliveries::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m20261202_000003_notices {
    use super::{index, optional_time, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261202_000003_notices"
        }
    }

    #[derive(DeriveIden)]
    enum SharingNotices {
        Table,
        NoticeId,
        Tenant,
        PartnerId,
        SubjectId,
        Pseudonym,
        Kind,
        Fields,
        ChangeKey,
        State,
        ChangedAt,
        CreatedAt,
        SentAt,
        AcknowledgedAt,
        DeliveryId,
    }

    #[derive(DeriveIden)]
    enum SharingChangeCursors {
        Table,
        Tenant,
        Cursor,
        UpdatedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use SharingChangeCursors as C;
            use SharingNotices as N;
            manager
                .create_table(
                    Table::create()
                        .table(N::Table)
                        .col(text(N::NoticeId).primary_key())
                        .col(text(N::Tenant))
                        .col(text(N::PartnerId))
                        .col(text(N::SubjectId))
                        .col(text(N::Pseudonym))
                        .col(text(N::Kind))
                        .col(ColumnDef::new(N::Fields).text().not_null())
                        .col(text(N::ChangeKey))
                        .col(text(N::State))
                        .col(time(N::ChangedAt))
                        .col(time(N::CreatedAt))
                        .col(optional_time(N::SentAt))
                        .col(optional_time(N::AcknowledgedAt))
                        .col(text(N::DeliveryId))
                        .to_owned(),
                )
                .await?;
            // One notice per partner and change, however the change was learnt of (the feed, or
            // an erasure through the rights endpoint, or both).
            index(
                manager,
                "sharing_notices_once_per_change",
                N::Table,
                vec![
                    N::Tenant.into_iden(),
                    N::PartnerId.into_iden(),
                    N::SubjectId.into_iden(),
                    N::ChangeKey.into_iden(),
                ],
                true,
            )
            .await?;
            index(
                manager,
                "sharing_notices_by_partner",
                N::Table,
                vec![
                    N::Tenant.into_iden(),
                    N::PartnerId.into_iden(),
                    N::NoticeId.into_iden(),
                ],
                true,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(C::Table)
                        .col(text(C::Tenant).primary_key())
                        .col(text(C::Cursor))
                        .col(time(C::UpdatedAt))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                SharingChangeCursors::Table.into_iden(),
                SharingNotices::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

/// Why a notice failed or is not possible (its webhook's last error, or the dpo's words).
mod m20261203_000005_notice_reasons {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000005_notice_reasons"
        }
    }

    #[derive(DeriveIden)]
    enum SharingNotices {
        Table,
        Reason,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(SharingNotices::Table)
                        .add_column(
                            ColumnDef::new(SharingNotices::Reason)
                                .text()
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
                        .table(SharingNotices::Table)
                        .drop_column(SharingNotices::Reason)
                        .to_owned(),
                )
                .await
        }
    }
}

/// What partners send back (InboundService): confirmed exam bookings, and the idempotency keys of
/// their submissions with the answers given.
mod m20261203_000006_inbound {
    use super::{index, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000006_inbound"
        }
    }

    #[derive(DeriveIden)]
    enum SharingBookings {
        Table,
        BookingId,
        Tenant,
        PartnerId,
        SubjectId,
        BookingReference,
        CourseId,
        StartsAt,
        Venue,
        ConfirmedAt,
        UpdatedAt,
    }

    #[derive(DeriveIden)]
    enum SharingInboundSubmissions {
        Table,
        Tenant,
        IdempotencyKey,
        PartnerId,
        Rpc,
        RequestHash,
        Response,
        CreatedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use SharingBookings as B;
            use SharingInboundSubmissions as S;
            manager
                .create_table(
                    Table::create()
                        .table(B::Table)
                        .col(text(B::BookingId).primary_key())
                        .col(text(B::Tenant))
                        .col(text(B::PartnerId))
                        .col(text(B::SubjectId))
                        .col(text(B::BookingReference))
                        .col(text(B::CourseId))
                        .col(time(B::StartsAt))
                        .col(ColumnDef::new(B::Venue).text().not_null())
                        .col(time(B::ConfirmedAt))
                        .col(time(B::UpdatedAt))
                        .to_owned(),
                )
                .await?;
            // A partner's reference names one booking: a rebooking upserts on it, and two
            // concurrent confirmations of one reference cannot both insert.
            index(
                manager,
                "sharing_bookings_by_reference",
                B::Table,
                vec![
                    B::Tenant.into_iden(),
                    B::PartnerId.into_iden(),
                    B::BookingReference.into_iden(),
                ],
                true,
            )
            .await?;
            // ListBookings filtered by course, in order.
            index(
                manager,
                "sharing_bookings_by_course",
                B::Table,
                vec![
                    B::Tenant.into_iden(),
                    B::CourseId.into_iden(),
                    B::BookingId.into_iden(),
                ],
                true,
            )
            .await?;
            // A learner's bookings (export, erasure).
            index(
                manager,
                "sharing_bookings_by_subject",
                B::Table,
                vec![B::Tenant.into_iden(), B::SubjectId.into_iden()],
                false,
            )
            .await?;
            manager
                .create_table(
                    Table::create()
                        .table(S::Table)
                        .col(text(S::Tenant))
                        .col(text(S::IdempotencyKey))
                        .col(text(S::PartnerId))
                        .col(text(S::Rpc))
                        .col(text(S::RequestHash))
                        .col(ColumnDef::new(S::Response).binary().not_null())
                        .col(time(S::CreatedAt))
                        // The key is unique in the tenant: a race on it loses on the insert.
                        .primary_key(Index::create().col(S::Tenant).col(S::IdempotencyKey))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                SharingInboundSubmissions::Table.into_iden(),
                SharingBookings::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m20261203_000007_release_shares {
    use super::{index, optional, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000007_release_shares"
        }
    }

    #[derive(DeriveIden)]
    enum SharingReleaseShares {
        Table,
        ShareId,
        Tenant,
        PartnerId,
        ReleaseId,
        SurveyId,
        OutputSha256,
        Release,
        SharedAt,
        SharedBy,
        IdempotencyKey,
        RequestHash,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use SharingReleaseShares as R;
            manager
                .create_table(
                    Table::create()
                        .table(R::Table)
                        .col(text(R::ShareId).primary_key())
                        .col(text(R::Tenant))
                        .col(text(R::PartnerId))
                        .col(text(R::ReleaseId))
                        .col(text(R::SurveyId))
                        .col(text(R::OutputSha256))
                        .col(ColumnDef::new(R::Release).binary().not_null())
                        .col(time(R::SharedAt))
                        .col(text(R::SharedBy))
                        .col(optional(R::IdempotencyKey))
                        .col(optional(R::RequestHash))
                        .to_owned(),
                )
                .await?;
            // A partner pulls its shares in order.
            index(
                manager,
                "sharing_release_shares_by_partner",
                R::Table,
                vec![
                    R::Tenant.into_iden(),
                    R::PartnerId.into_iden(),
                    R::ShareId.into_iden(),
                ],
                true,
            )
            .await?;
            // NULL keys never collide; a key used twice in a tenant loses the race here.
            index(
                manager,
                "sharing_release_shares_by_idempotency_key",
                R::Table,
                vec![R::Tenant.into_iden(), R::IdempotencyKey.into_iden()],
                true,
            )
            .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(SharingReleaseShares::Table).to_owned())
                .await
        }
    }
}
