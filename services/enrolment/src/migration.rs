//! The enrolment service's tables.

use sea_orm_migration::prelude::*;

/// Migrations of the enrolment service.
pub struct EnrolmentMigrator;

impl MigratorTrait for EnrolmentMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_learners::Migration),
            Box::new(m20261124_000002_records::Migration),
            Box::new(m20261124_000003_legal_holds::Migration),
            Box::new(m20261124_000004_outcomes::Migration),
            Box::new(m20261201_000005_learner_changes::Migration),
            Box::new(m20261203_000006_course_staff_names::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("tutela_migrations_enrolment").into()
    }
}

// Column and index shapes: the ones every service's tables use.
use tutela_store::migration::columns::{index, optional, seq, text, time};

mod m20261124_000001_learners {
    use super::{seq, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    // Named by hand: the derive takes the file's name, which both migrations share.
    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000001_learners"
        }
    }

    #[derive(DeriveIden)]
    enum Learners {
        Table,
        Seq,
        Tenant,
        LearnerId,
        EmailIndex,
        FamilyNameIndex,
        CreatedAt,
        UpdatedAt,
        CreatedBy,
    }

    #[derive(DeriveIden)]
    enum LearnerData {
        Table,
        Seq,
        Tenant,
        LearnerId,
        Category,
        Sealed,
        UpdatedAt,
    }

    #[derive(DeriveIden)]
    enum EnrolmentIdempotency {
        Table,
        Seq,
        Tenant,
        Key,
        Rpc,
        RequestHash,
        LearnerId,
        CreatedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Learners::Table)
                        .col(seq(Learners::Seq))
                        .col(text(Learners::Tenant))
                        .col(text(Learners::LearnerId))
                        // Keyed HMACs of the normalised email and family name: exact look-ups
                        // without a plaintext index.
                        .col(ColumnDef::new(Learners::EmailIndex).string().null())
                        .col(ColumnDef::new(Learners::FamilyNameIndex).string().null())
                        .col(time(Learners::CreatedAt))
                        .col(time(Learners::UpdatedAt))
                        .col(text(Learners::CreatedBy))
                        .to_owned(),
                )
                .await?;
            for (name, columns) in [
                (
                    "learners_by_id",
                    vec![Learners::Tenant, Learners::LearnerId],
                ),
                (
                    "learners_by_email",
                    vec![Learners::Tenant, Learners::EmailIndex],
                ),
                (
                    "learners_by_family_name",
                    vec![Learners::Tenant, Learners::FamilyNameIndex],
                ),
            ] {
                let mut index = Index::create();
                index.name(name).table(Learners::Table);
                for c in columns {
                    index.col(c);
                }
                if name == "learners_by_id" {
                    index.unique();
                }
                manager.create_index(index.to_owned()).await?;
            }

            manager
                .create_table(
                    Table::create()
                        .table(LearnerData::Table)
                        .col(seq(LearnerData::Seq))
                        .col(text(LearnerData::Tenant))
                        .col(text(LearnerData::LearnerId))
                        // The data category's short name: one sealed part per category.
                        .col(text(LearnerData::Category))
                        .col(ColumnDef::new(LearnerData::Sealed).binary().not_null())
                        .col(time(LearnerData::UpdatedAt))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("learner_data_by_learner")
                        .table(LearnerData::Table)
                        .col(LearnerData::Tenant)
                        .col(LearnerData::LearnerId)
                        .col(LearnerData::Category)
                        .unique()
                        .to_owned(),
                )
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(EnrolmentIdempotency::Table)
                        .col(seq(EnrolmentIdempotency::Seq))
                        .col(text(EnrolmentIdempotency::Tenant))
                        .col(text(EnrolmentIdempotency::Key))
                        .col(text(EnrolmentIdempotency::Rpc))
                        .col(text(EnrolmentIdempotency::RequestHash))
                        .col(text(EnrolmentIdempotency::LearnerId))
                        .col(time(EnrolmentIdempotency::CreatedAt))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("enrolment_idempotency_by_key")
                        .table(EnrolmentIdempotency::Table)
                        .col(EnrolmentIdempotency::Tenant)
                        .col(EnrolmentIdempotency::Key)
                        .unique()
                        .to_owned(),
                )
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                EnrolmentIdempotency::Table.into_iden(),
                LearnerData::Table.into_iden(),
                Learners::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m20261124_000002_records {
    use super::{index, optional, seq, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    // Named by hand: the derive takes the file's name, which both migrations share.
    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000002_records"
        }
    }

    #[derive(DeriveIden)]
    enum Courses {
        Table,
        Seq,
        Tenant,
        CourseId,
        Code,
        Title,
        Programme,
        AwardingBody,
        StartDate,
        EndDate,
        CreatedAt,
        IdempotencyKey,
        RequestHash,
    }

    #[derive(DeriveIden)]
    enum Enrolments {
        Table,
        Seq,
        Tenant,
        EnrolmentId,
        LearnerId,
        CourseId,
        Status,
        CreatedAt,
        StatusChangedAt,
        IdempotencyKey,
        RequestHash,
    }

    #[derive(DeriveIden)]
    enum Results {
        Table,
        Seq,
        Tenant,
        ResultId,
        EnrolmentId,
        LearnerId,
        Assessment,
        Score,
        Maximum,
        Passed,
        AssessedAt,
        Assessor,
        RecordedAt,
        IdempotencyKey,
        RequestHash,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Courses::Table)
                        .col(seq(Courses::Seq))
                        .col(text(Courses::Tenant))
                        .col(text(Courses::CourseId))
                        .col(text(Courses::Code))
                        .col(text(Courses::Title))
                        .col(text(Courses::Programme))
                        .col(text(Courses::AwardingBody))
                        .col(ColumnDef::new(Courses::StartDate).date().not_null())
                        .col(ColumnDef::new(Courses::EndDate).date().not_null())
                        .col(time(Courses::CreatedAt))
                        .col(optional(Courses::IdempotencyKey))
                        .col(optional(Courses::RequestHash))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "courses_by_id",
                Courses::Table,
                vec![Courses::Tenant.into_iden(), Courses::CourseId.into_iden()],
                true,
            )
            .await?;
            index(
                manager,
                "courses_by_code",
                Courses::Table,
                vec![Courses::Tenant.into_iden(), Courses::Code.into_iden()],
                true,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Enrolments::Table)
                        .col(seq(Enrolments::Seq))
                        .col(text(Enrolments::Tenant))
                        .col(text(Enrolments::EnrolmentId))
                        .col(text(Enrolments::LearnerId))
                        .col(text(Enrolments::CourseId))
                        .col(text(Enrolments::Status))
                        .col(time(Enrolments::CreatedAt))
                        .col(time(Enrolments::StatusChangedAt))
                        .col(optional(Enrolments::IdempotencyKey))
                        .col(optional(Enrolments::RequestHash))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "enrolments_by_id",
                Enrolments::Table,
                vec![
                    Enrolments::Tenant.into_iden(),
                    Enrolments::EnrolmentId.into_iden(),
                ],
                true,
            )
            .await?;
            index(
                manager,
                "enrolments_by_learner",
                Enrolments::Table,
                vec![
                    Enrolments::Tenant.into_iden(),
                    Enrolments::LearnerId.into_iden(),
                ],
                false,
            )
            .await?;
            index(
                manager,
                "enrolments_by_course",
                Enrolments::Table,
                vec![
                    Enrolments::Tenant.into_iden(),
                    Enrolments::CourseId.into_iden(),
                ],
                false,
            )
            .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Results::Table)
                        .col(seq(Results::Seq))
                        .col(text(Results::Tenant))
                        .col(text(Results::ResultId))
                        .col(text(Results::EnrolmentId))
                        .col(text(Results::LearnerId))
                        .col(text(Results::Assessment))
                        .col(ColumnDef::new(Results::Score).double().not_null())
                        .col(ColumnDef::new(Results::Maximum).double().not_null())
                        .col(ColumnDef::new(Results::Passed).boolean().not_null())
                        .col(time(Results::AssessedAt))
                        .col(text(Results::Assessor))
                        .col(time(Results::RecordedAt))
                        .col(optional(Results::IdempotencyKey))
                        .col(optional(Results::RequestHash))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "results_by_id",
                Results::Table,
                vec![Results::Tenant.into_iden(), Results::ResultId.into_iden()],
                true,
            )
            .await?;
            index(
                manager,
                "results_by_learner",
                Results::Table,
                vec![Results::Tenant.into_iden(), Results::LearnerId.into_iden()],
                false,
            )
            .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                Results::Table.into_iden(),
                Enrolments::Table.into_iden(),
                Courses::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m20261124_000003_legal_holds {
    use super::{index, optional, seq, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000003_legal_holds"
        }
    }

    #[derive(DeriveIden)]
    enum LegalHolds {
        Table,
        Seq,
        Tenant,
        HoldId,
        LearnerId,
        Scope,
        RecordId,
        Reason,
        PlacedBy,
        PlacedAt,
        ReleasedAt,
        ReleasedBy,
        ReleaseReason,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(LegalHolds::Table)
                        .col(seq(LegalHolds::Seq))
                        .col(text(LegalHolds::Tenant))
                        .col(text(LegalHolds::HoldId))
                        .col(text(LegalHolds::LearnerId))
                        .col(text(LegalHolds::Scope))
                        .col(text(LegalHolds::RecordId))
                        .col(text(LegalHolds::Reason))
                        .col(text(LegalHolds::PlacedBy))
                        .col(time(LegalHolds::PlacedAt))
                        .col(
                            ColumnDef::new(LegalHolds::ReleasedAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .col(optional(LegalHolds::ReleasedBy))
                        .col(optional(LegalHolds::ReleaseReason))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "legal_holds_by_id",
                LegalHolds::Table,
                vec![
                    LegalHolds::Tenant.into_iden(),
                    LegalHolds::HoldId.into_iden(),
                ],
                true,
            )
            .await?;
            index(
                manager,
                "legal_holds_by_learner",
                LegalHolds::Table,
                vec![
                    LegalHolds::Tenant.into_iden(),
                    LegalHolds::LearnerId.into_iden(),
                ],
                false,
            )
            .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(LegalHolds::Table).to_owned())
                .await
        }
    }
}

mod m20261124_000004_outcomes {
    use super::{index, optional, seq, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000004_outcomes"
        }
    }

    #[derive(DeriveIden)]
    enum Certificates {
        Table,
        Seq,
        Tenant,
        CertificateId,
        LearnerId,
        EnrolmentId,
        CourseId,
        Kind,
        Title,
        IssuedAt,
        IdempotencyKey,
        RequestHash,
    }

    // The enum names the table (`feedback`) and its columns, `feedback_id` among them.
    #[allow(clippy::enum_variant_names)]
    #[derive(DeriveIden)]
    enum Feedback {
        Table,
        Seq,
        Tenant,
        FeedbackId,
        LearnerId,
        CourseId,
        Kind,
        Sealed,
        ReceivedAt,
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
                        .table(Certificates::Table)
                        .col(seq(Certificates::Seq))
                        .col(text(Certificates::Tenant))
                        .col(text(Certificates::CertificateId))
                        .col(text(Certificates::LearnerId))
                        .col(text(Certificates::EnrolmentId))
                        .col(text(Certificates::CourseId))
                        .col(text(Certificates::Kind))
                        .col(text(Certificates::Title))
                        .col(time(Certificates::IssuedAt))
                        .col(optional(Certificates::IdempotencyKey))
                        .col(optional(Certificates::RequestHash))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "certificates_by_id",
                Certificates::Table,
                vec![
                    Certificates::Tenant.into_iden(),
                    Certificates::CertificateId.into_iden(),
                ],
                true,
            )
            .await?;
            index(
                manager,
                "certificates_by_learner",
                Certificates::Table,
                vec![
                    Certificates::Tenant.into_iden(),
                    Certificates::LearnerId.into_iden(),
                ],
                false,
            )
            .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Feedback::Table)
                        .col(seq(Feedback::Seq))
                        .col(text(Feedback::Tenant))
                        .col(text(Feedback::FeedbackId))
                        .col(text(Feedback::LearnerId))
                        .col(text(Feedback::CourseId))
                        .col(text(Feedback::Kind))
                        // The text, sealed under the learner's data key: free text may say
                        // anything, health included.
                        .col(ColumnDef::new(Feedback::Sealed).binary().not_null())
                        .col(time(Feedback::ReceivedAt))
                        .col(text(Feedback::RecordedBy))
                        .col(optional(Feedback::IdempotencyKey))
                        .col(optional(Feedback::RequestHash))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "feedback_by_learner",
                Feedback::Table,
                vec![
                    Feedback::Tenant.into_iden(),
                    Feedback::LearnerId.into_iden(),
                ],
                false,
            )
            .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [Feedback::Table.into_iden(), Certificates::Table.into_iden()] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m20261201_000005_learner_changes {
    use super::{index, seq, text, time};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261201_000005_learner_changes"
        }
    }

    #[derive(DeriveIden)]
    enum LearnerChanges {
        Table,
        Seq,
        Tenant,
        LearnerId,
        Kind,
        Fields,
        ChangedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(LearnerChanges::Table)
                        .col(seq(LearnerChanges::Seq))
                        .col(text(LearnerChanges::Tenant))
                        .col(text(LearnerChanges::LearnerId))
                        .col(text(LearnerChanges::Kind))
                        // The names of the fields changed, never their values.
                        .col(text(LearnerChanges::Fields))
                        .col(time(LearnerChanges::ChangedAt))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "learner_changes_by_tenant",
                LearnerChanges::Table,
                vec![
                    LearnerChanges::Tenant.into_iden(),
                    LearnerChanges::Seq.into_iden(),
                ],
                false,
            )
            .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(LearnerChanges::Table).to_owned())
                .await
        }
    }
}

/// Each course keeps the names of its staff (tutela.enrolment.v1.Course.staff_names), for the
/// survey service's scrubber. A JSON array of strings in a text column: a course has a handful
/// and they are only ever read whole with it. Courses made before this column have no staff
/// named (`[]`).
mod m20261203_000006_course_staff_names {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000006_course_staff_names"
        }
    }

    #[derive(DeriveIden)]
    enum Courses {
        Table,
        StaffNames,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(Courses::Table)
                        .add_column(
                            ColumnDef::new(Courses::StaffNames)
                                .text()
                                .not_null()
                                .default("[]"),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(Courses::Table)
                        .drop_column(Courses::StaffNames)
                        .to_owned(),
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, EntityTrait, Statement, Value};
    use tutela_store::testing::TestDatabase;

    use super::*;
    use crate::records::entity::{course, staff_names_of};

    /// The staff names column is added to a table that already has courses (production's):
    /// they keep every value and name no staff.
    #[tokio::test]
    async fn courses_made_before_staff_names_read_back_with_none() {
        let db = TestDatabase::create().await.unwrap();
        let conn = db.connect().await.unwrap();
        tutela_store::migrate(&conn, &[]).await.unwrap();
        EnrolmentMigrator::up(&conn, Some(5)).await.unwrap();
        let backend = conn.get_database_backend();
        conn.execute_raw(Statement::from_sql_and_values(
            backend,
            tutela_store::placeholders(
                backend,
                "INSERT INTO courses (tenant, course_id, code, title, programme, awarding_body, \
                 start_date, end_date, created_at) \
                 VALUES ('t', 'c', 'ENG-1', 'Engineering', '', '', $1, $2, $3)",
            ),
            vec![
                Value::from(chrono::NaiveDate::from_ymd_opt(2026, 9, 1).unwrap()),
                Value::from(chrono::NaiveDate::from_ymd_opt(2027, 6, 30).unwrap()),
                Value::from(chrono::Utc::now()),
            ],
        ))
        .await
        .unwrap();

        EnrolmentMigrator::up(&conn, None).await.unwrap();
        let row = course::Entity::find().one(&conn).await.unwrap().unwrap();
        assert_eq!(
            (row.code.as_str(), row.staff_names.as_str()),
            ("ENG-1", "[]")
        );
        assert!(staff_names_of(&row).is_empty());
        // Debug never shows the names.
        assert!(format!("{row:?}").contains("[redacted]"));
    }
}
