//! The survey service's tables. Portable SeaQuery on SQLite and PostgreSQL alike; unique indexes
//! catch races in the database (one invitation per learner and survey, one response per
//! invitation, an idempotency key used twice), and a conditional update of the survey's spent
//! privacy budget keeps two releases at once from spending past it.

use sea_orm_migration::prelude::*;
use tutela_store::migration::columns::{index, number, optional, optional_time, seq, text, time};

/// Migrations of the survey service.
pub struct SurveyMigrator;

impl MigratorTrait for SurveyMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261203_000001_surveys::Migration)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("tutela_migrations_survey").into()
    }
}

mod m20261203_000001_surveys {
    use super::{index, number, optional, optional_time, seq, text, time};
    use sea_orm_migration::prelude::*;

    /// A 64-bit integer column: budgets in millionths of ε pass `i32`.
    fn big<T: IntoIden>(name: T) -> ColumnDef {
        ColumnDef::new(name).big_integer().not_null().to_owned()
    }

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000001_surveys"
        }
    }

    #[derive(DeriveIden)]
    enum SurveySurveys {
        Table,
        Seq,
        SurveyId,
        Tenant,
        CourseId,
        Title,
        Questions,
        Attributes,
        State,
        CreatedAt,
        ClosedAt,
        IdempotencyKey,
        RequestHash,
        BudgetEpsilon,
        BudgetDelta,
        SpentEpsilon,
        SpentDelta,
    }

    #[derive(DeriveIden)]
    enum SurveyReleases {
        Table,
        Seq,
        ReleaseId,
        Tenant,
        SurveyId,
        Form,
        Recipient,
        Purpose,
        Requester,
        CreatedAt,
        Parameters,
        Results,
        InputSha256,
        OutputSha256,
        SpentEpsilon,
        SpentDelta,
        Mechanism,
        BuiltFromErased,
        IdempotencyKey,
        RequestHash,
    }

    #[derive(DeriveIden)]
    enum SurveyInvitations {
        Table,
        Seq,
        Tenant,
        SurveyId,
        SubjectId,
        Cohort,
        State,
        InvitedAt,
        AnsweredAt,
        Reminders,
    }

    #[derive(DeriveIden)]
    enum SurveyResponses {
        Table,
        ResponseId,
        Tenant,
        SurveyId,
        SubjectId,
        Cohort,
        Sealed,
        IdentifiersReplaced,
        HeldForReview,
        CommentWithheld,
        SubmittedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use SurveyInvitations as I;
            use SurveyReleases as L;
            use SurveyResponses as R;
            use SurveySurveys as S;
            manager
                .create_table(
                    Table::create()
                        .table(S::Table)
                        .col(seq(S::Seq))
                        .col(text(S::SurveyId))
                        .col(text(S::Tenant))
                        .col(text(S::CourseId))
                        .col(text(S::Title))
                        .col(ColumnDef::new(S::Questions).text().not_null())
                        .col(text(S::Attributes))
                        .col(text(S::State))
                        .col(time(S::CreatedAt))
                        .col(optional_time(S::ClosedAt))
                        .col(optional(S::IdempotencyKey))
                        .col(optional(S::RequestHash))
                        // Privacy budget and spend: ε in millionths, δ in 10⁻¹² (exact integers,
                        // see tutela_anonymise::dp::budget).
                        .col(big(S::BudgetEpsilon))
                        .col(big(S::BudgetDelta))
                        .col(big(S::SpentEpsilon))
                        .col(big(S::SpentDelta))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "survey_surveys_by_id",
                S::Table,
                vec![S::Tenant.into_iden(), S::SurveyId.into_iden()],
                true,
            )
            .await?;
            index(
                manager,
                "survey_surveys_by_course",
                S::Table,
                vec![
                    S::Tenant.into_iden(),
                    S::CourseId.into_iden(),
                    S::Seq.into_iden(),
                ],
                false,
            )
            .await?;
            // NULL keys never collide; a key used twice in a tenant loses the race here.
            index(
                manager,
                "survey_surveys_by_idempotency_key",
                S::Table,
                vec![S::Tenant.into_iden(), S::IdempotencyKey.into_iden()],
                true,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(I::Table)
                        .col(seq(I::Seq))
                        .col(text(I::Tenant))
                        .col(text(I::SurveyId))
                        .col(text(I::SubjectId))
                        .col(text(I::Cohort))
                        .col(text(I::State))
                        .col(time(I::InvitedAt))
                        .col(optional_time(I::AnsweredAt))
                        .col(number(I::Reminders))
                        .to_owned(),
                )
                .await?;
            // One invitation per learner and survey: two answers at once meet here.
            index(
                manager,
                "survey_invitations_by_learner",
                I::Table,
                vec![
                    I::Tenant.into_iden(),
                    I::SurveyId.into_iden(),
                    I::SubjectId.into_iden(),
                ],
                true,
            )
            .await?;
            // The rights path finds a learner's invitations.
            index(
                manager,
                "survey_invitations_by_subject",
                I::Table,
                vec![I::Tenant.into_iden(), I::SubjectId.into_iden()],
                false,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(R::Table)
                        .col(text(R::ResponseId).primary_key())
                        .col(text(R::Tenant))
                        .col(text(R::SurveyId))
                        .col(text(R::SubjectId))
                        .col(text(R::Cohort))
                        .col(ColumnDef::new(R::Sealed).binary().not_null())
                        .col(number(R::IdentifiersReplaced))
                        .col(ColumnDef::new(R::HeldForReview).boolean().not_null())
                        .col(ColumnDef::new(R::CommentWithheld).boolean().not_null())
                        .col(time(R::SubmittedAt))
                        .to_owned(),
                )
                .await?;
            // One response per learner and survey, whatever the invitation says.
            index(
                manager,
                "survey_responses_by_learner",
                R::Table,
                vec![
                    R::Tenant.into_iden(),
                    R::SurveyId.into_iden(),
                    R::SubjectId.into_iden(),
                ],
                true,
            )
            .await?;
            index(
                manager,
                "survey_responses_by_subject",
                R::Table,
                vec![R::Tenant.into_iden(), R::SubjectId.into_iden()],
                false,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(L::Table)
                        .col(seq(L::Seq))
                        .col(text(L::ReleaseId))
                        .col(text(L::Tenant))
                        .col(text(L::SurveyId))
                        .col(text(L::Form))
                        .col(text(L::Recipient))
                        .col(text(L::Purpose))
                        .col(text(L::Requester))
                        .col(time(L::CreatedAt))
                        .col(ColumnDef::new(L::Parameters).binary().not_null())
                        .col(ColumnDef::new(L::Results).binary().not_null())
                        .col(text(L::InputSha256))
                        .col(text(L::OutputSha256))
                        .col(big(L::SpentEpsilon))
                        .col(big(L::SpentDelta))
                        .col(text(L::Mechanism))
                        .col(ColumnDef::new(L::BuiltFromErased).boolean().not_null())
                        .col(optional(L::IdempotencyKey))
                        .col(optional(L::RequestHash))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "survey_releases_by_id",
                L::Table,
                vec![L::Tenant.into_iden(), L::ReleaseId.into_iden()],
                true,
            )
            .await?;
            index(
                manager,
                "survey_releases_by_survey",
                L::Table,
                vec![
                    L::Tenant.into_iden(),
                    L::SurveyId.into_iden(),
                    L::Seq.into_iden(),
                ],
                false,
            )
            .await?;
            index(
                manager,
                "survey_releases_by_idempotency_key",
                L::Table,
                vec![L::Tenant.into_iden(), L::IdempotencyKey.into_iden()],
                true,
            )
            .await?;

            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                SurveyReleases::Table.into_iden(),
                SurveyResponses::Table.into_iden(),
                SurveyInvitations::Table.into_iden(),
                SurveySurveys::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}
