//! The consent ledger's tables: its entries, restrictions, objections and identity verifications.
//!
//! Until the ledger had a crate of its own, the subscription service's migrator created these
//! tables, and databases made then record those migrations in the subscription history. The
//! ledger's migrator keeps the same migrations under the same names in a history of its own, and
//! each of them adopts, without running it again, a migration the subscription history already
//! records: a table is never created twice, and a database stopped half-way (some of these
//! applied by the subscription migrator, some not) gets exactly the ones it lacks. The
//! subscription migrator keeps their names as no-ops, so that its history stays known to it;
//! for that reason the ledger's set runs before the subscription set (see
//! `tutela_subscription::HOSTED`'s migrations).

use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::prelude::*;

/// The history table of the ledger's migrations.
pub const HISTORY: &str = "tutela_migrations_ledger";

/// Where these migrations were recorded before the ledger had a crate of its own.
pub const SUBSCRIPTION_HISTORY: &str = "tutela_migrations_subscription";

/// Migrations of the consent ledger.
pub struct LedgerMigrator;

impl MigratorTrait for LedgerMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Adopting(m20261124_000001_consent_ledger::Migration)),
            Box::new(Adopting(m20261124_000002_restrictions::Migration)),
            Box::new(Adopting(m20261124_000003_identity_verifications::Migration)),
            Box::new(Adopting(
                m20261201_000006_verification_method_names::Migration,
            )),
            // Made after the ledger had its own history: nothing to adopt.
            Box::new(m20261203_000002_objections::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new(HISTORY).into()
    }
}

/// The ledger's migrations as a set for `tutela_store::migrate`.
pub fn migrations() -> Box<dyn tutela_store::Migrations> {
    tutela_store::migrations_of::<LedgerMigrator>(crate::LEDGER)
}

/// A ledger migration that is skipped when the subscription history records it as applied.
struct Adopting<M>(M);

impl<M: MigrationName> MigrationName for Adopting<M> {
    fn name(&self) -> &str {
        self.0.name()
    }
}

#[async_trait::async_trait]
impl<M: MigrationTrait> MigrationTrait for Adopting<M> {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if recorded_by_subscription(manager, self.0.name()).await? {
            tracing::debug!(
                migration = self.0.name(),
                "ledger migration adopted from the subscription history"
            );
            return Ok(());
        }
        self.0.up(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.0.down(manager).await
    }
}

/// Whether the subscription migrator applied the migration `name` (from before the move).
async fn recorded_by_subscription(manager: &SchemaManager<'_>, name: &str) -> Result<bool, DbErr> {
    if !manager.has_table(SUBSCRIPTION_HISTORY).await? {
        return Ok(false);
    }
    let backend = manager.get_database_backend();
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            tutela_store::placeholders(
                backend,
                &format!("SELECT version FROM {SUBSCRIPTION_HISTORY} WHERE version = $1"),
            ),
            [name.into()],
        ))
        .await?;
    Ok(row.is_some())
}

/// Refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL) on `table`: the ledger is evidence.
pub async fn append_only(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, DbBackend};
    let db = manager.get_connection();
    match manager.get_database_backend() {
        DbBackend::Sqlite => {
            for op in ["UPDATE", "DELETE"] {
                db.execute_unprepared(&sqlite_refusal(table, op)).await?;
            }
        }
        DbBackend::Postgres => {
            db.execute_unprepared(&format!(
                "CREATE FUNCTION {table}_append_only() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION 'the consent ledger is append-only'; END $$"
            ))
            .await?;
            db.execute_unprepared(&format!(
                "CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE \
                 OR TRUNCATE ON {table} FOR EACH STATEMENT \
                 EXECUTE FUNCTION {table}_append_only()"
            ))
            .await?;
        }
        other => {
            return Err(DbErr::Migration(format!("unsupported backend {other:?}")));
        }
    }
    Ok(())
}

/// The SQLite trigger that refuses `op` on `table`.
pub fn sqlite_refusal(table: &str, op: &str) -> String {
    format!(
        "CREATE TRIGGER {table}_no_{op} BEFORE {op} ON {table} \
         BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END"
    )
}

mod m20261124_000001_consent_ledger {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    // Named by hand: the derive takes the file's name, which every migration here shares.
    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "migration"
        }
    }

    #[derive(DeriveIden)]
    enum ConsentEntries {
        Table,
        Seq,
        EntryId,
        Tenant,
        SubjectId,
        Purpose,
        Recipient,
        Granted,
        OccurredAt,
        RecordedAt,
        Method,
        WordingVersion,
        WordingSha256,
        Actor,
        Sealed,
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
                        .table(ConsentEntries::Table)
                        .col(
                            ColumnDef::new(ConsentEntries::Seq)
                                .big_integer()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::EntryId)
                                .string()
                                .not_null()
                                .unique_key(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Tenant).string().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::SubjectId)
                                .string()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Purpose).string().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::Recipient)
                                .string()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Granted).boolean().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::OccurredAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::RecordedAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Method).string().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::WordingVersion)
                                .string()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::WordingSha256)
                                .string()
                                .not_null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::Actor).string().not_null())
                        .col(ColumnDef::new(ConsentEntries::Sealed).binary().not_null())
                        .col(
                            ColumnDef::new(ConsentEntries::RecordedBy)
                                .string()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(ConsentEntries::IdempotencyKey)
                                .string()
                                .null(),
                        )
                        .col(ColumnDef::new(ConsentEntries::RequestHash).string().null())
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("consent_entries_by_subject")
                        .table(ConsentEntries::Table)
                        .col(ConsentEntries::Tenant)
                        .col(ConsentEntries::SubjectId)
                        .col(ConsentEntries::Seq)
                        .to_owned(),
                )
                .await?;
            // NULLs are distinct in unique indexes on both backends: only keyed writes collide.
            manager
                .create_index(
                    Index::create()
                        .name("consent_entries_idempotency")
                        .table(ConsentEntries::Table)
                        .col(ConsentEntries::Tenant)
                        .col(ConsentEntries::IdempotencyKey)
                        .unique()
                        .to_owned(),
                )
                .await?;
            // Append-only in the database itself, not only by the absence of an RPC.
            super::append_only(manager, "consent_entries").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "the consent ledger is evidence and is never dropped by a migration".into(),
            ))
        }
    }
}

mod m20261124_000002_restrictions {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000002_restrictions"
        }
    }

    #[derive(DeriveIden)]
    enum Restrictions {
        Table,
        Seq,
        Tenant,
        SubjectId,
        Restricted,
        Reason,
        RecordedBy,
        RecordedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Restrictions::Table)
                        .col(
                            ColumnDef::new(Restrictions::Seq)
                                .big_integer()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(Restrictions::Tenant).string().not_null())
                        .col(ColumnDef::new(Restrictions::SubjectId).string().not_null())
                        .col(
                            ColumnDef::new(Restrictions::Restricted)
                                .boolean()
                                .not_null(),
                        )
                        .col(ColumnDef::new(Restrictions::Reason).string().not_null())
                        .col(ColumnDef::new(Restrictions::RecordedBy).string().not_null())
                        .col(
                            ColumnDef::new(Restrictions::RecordedAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("restrictions_by_subject")
                        .table(Restrictions::Table)
                        .col(Restrictions::Tenant)
                        .col(Restrictions::SubjectId)
                        .col(Restrictions::Seq)
                        .to_owned(),
                )
                .await?;
            super::append_only(manager, "restrictions").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "restrictions are evidence and are never dropped by a migration".into(),
            ))
        }
    }
}

mod m20261124_000003_identity_verifications {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000003_identity_verifications"
        }
    }

    #[derive(DeriveIden)]
    enum IdentityVerifications {
        Table,
        Seq,
        Tenant,
        SubjectId,
        Method,
        Sealed,
        VerifiedBy,
        VerifiedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use IdentityVerifications as V;
            manager
                .create_table(
                    Table::create()
                        .table(V::Table)
                        .col(
                            ColumnDef::new(V::Seq)
                                .big_integer()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(V::Tenant).string().not_null())
                        .col(ColumnDef::new(V::SubjectId).string().not_null())
                        .col(ColumnDef::new(V::Method).string().not_null())
                        // The evidence reference, sealed under the subject's data key.
                        .col(ColumnDef::new(V::Sealed).binary().not_null())
                        .col(ColumnDef::new(V::VerifiedBy).string().not_null())
                        .col(
                            ColumnDef::new(V::VerifiedAt)
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("identity_verifications_by_subject")
                        .table(V::Table)
                        .col(V::Tenant)
                        .col(V::SubjectId)
                        .col(V::Seq)
                        .to_owned(),
                )
                .await?;
            super::append_only(manager, "identity_verifications").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "identity verifications are evidence and are never dropped by a migration".into(),
            ))
        }
    }
}

/// Identity verifications keep how the identity was checked as a short name of
/// `tutela.common.v1.VerificationMethod`. Before, the ledger's own RPC took free text, and an SSN
/// sent there was stored in clear: rows naming one of the four methods (by enum name, as the
/// SubjectData RPC stored them, or by short name) get its short name; anything else becomes
/// `other`, since free text may hold anything and the note of the check is where the detail
/// lives. The append-only trigger is lifted for this one statement, inside the migration's
/// transaction, so no other write can slip through.
mod m20261201_000006_verification_method_names {
    use sea_orm::{ConnectionTrait, DbBackend};
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261201_000006_verification_method_names"
        }
    }

    /// The methods that existed when free text was replaced (frozen: later methods never
    /// appeared as free text).
    const METHODS: [&str; 4] = [
        "photo_id_in_person",
        "photo_id_video",
        "knowledge_check",
        "authenticated_account",
    ];

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let db = manager.get_connection();
            let cases: String = METHODS
                .iter()
                .map(|m| {
                    let upper = m.to_ascii_uppercase();
                    format!("WHEN UPPER(TRIM(method)) IN ('VERIFICATION_METHOD_{upper}', '{upper}') THEN '{m}' ")
                })
                .collect();
            let update =
                format!("UPDATE identity_verifications SET method = CASE {cases}ELSE 'other' END");
            match manager.get_database_backend() {
                DbBackend::Sqlite => {
                    db.execute_unprepared("DROP TRIGGER identity_verifications_no_UPDATE")
                        .await?;
                    db.execute_unprepared(&update).await?;
                    db.execute_unprepared(&super::sqlite_refusal(
                        "identity_verifications",
                        "UPDATE",
                    ))
                    .await?;
                }
                DbBackend::Postgres => {
                    db.execute_unprepared(
                        "ALTER TABLE identity_verifications \
                         DISABLE TRIGGER identity_verifications_append_only",
                    )
                    .await?;
                    db.execute_unprepared(&update).await?;
                    db.execute_unprepared(
                        "ALTER TABLE identity_verifications \
                         ENABLE TRIGGER identity_verifications_append_only",
                    )
                    .await?;
                }
                other => {
                    return Err(DbErr::Migration(format!("unsupported backend {other:?}")));
                }
            }
            Ok(())
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "the free text this migration replaced is gone on purpose".into(),
            ))
        }
    }
}

/// Objections to processing (GDPR Art. 21), one row per subject, purpose and change.
mod m20261203_000002_objections {
    use sea_orm_migration::prelude::*;
    use tutela_store::migration::columns::{index, seq, text, time};

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000002_objections"
        }
    }

    #[derive(DeriveIden)]
    enum Objections {
        Table,
        Seq,
        Tenant,
        SubjectId,
        Purpose,
        Objected,
        Reason,
        RecordedBy,
        RecordedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use Objections as O;
            manager
                .create_table(
                    Table::create()
                        .table(O::Table)
                        .col(seq(O::Seq))
                        .col(text(O::Tenant))
                        .col(text(O::SubjectId))
                        .col(text(O::Purpose))
                        .col(ColumnDef::new(O::Objected).boolean().not_null())
                        .col(text(O::Reason))
                        .col(text(O::RecordedBy))
                        .col(time(O::RecordedAt))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "objections_by_subject",
                O::Table,
                vec![
                    O::Tenant.into_iden(),
                    O::SubjectId.into_iden(),
                    O::Seq.into_iden(),
                ],
                false,
            )
            .await?;
            super::append_only(manager, "objections").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "objections are evidence and are never dropped by a migration".into(),
            ))
        }
    }
}
