//! The subscription service's tables.

use sea_orm_migration::prelude::*;

/// Migrations of the subscription service.
pub struct SubscriptionMigrator;

impl MigratorTrait for SubscriptionMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(MovedToTheLedger("migration")),
            Box::new(MovedToTheLedger("m20261124_000002_restrictions")),
            Box::new(MovedToTheLedger("m20261124_000003_identity_verifications")),
            Box::new(m20261124_000004_subscriptions::Migration),
            Box::new(m20261124_000005_subscription_key_seq::Migration),
            Box::new(MovedToTheLedger(
                "m20261201_000006_verification_method_names",
            )),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new(tutela_ledger::migration::SUBSCRIPTION_HISTORY).into()
    }
}

/// A migration of the consent ledger's tables that this migrator ran before the ledger had a
/// crate of its own (`tutela_ledger::migration`, which adopts it where this history records it).
/// Kept by name and doing nothing: the history of a database made before the move stays known,
/// and on a new database the ledger's own migrator, which runs first, has made the tables.
struct MovedToTheLedger(&'static str);

impl MigrationName for MovedToTheLedger {
    fn name(&self) -> &str {
        self.0
    }
}

#[async_trait::async_trait]
impl MigrationTrait for MovedToTheLedger {
    async fn up(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the consent ledger's tables are the ledger's; they are never dropped from here".into(),
        ))
    }
}

mod m20261124_000004_subscriptions {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000004_subscriptions"
        }
    }

    #[derive(DeriveIden)]
    enum Contacts {
        Table,
        Seq,
        Tenant,
        ContactId,
        SealedProfile,
        CreatedAt,
        UpdatedAt,
    }

    #[derive(DeriveIden)]
    enum Subscriptions {
        Table,
        Seq,
        SubscriptionId,
        Tenant,
        ContactId,
        Channel,
        Topic,
        State,
        SealedAddress,
        AddressIndex,
        CodeHash,
        ConfirmExpiresAt,
        CodeAttempts,
        CreatedAt,
        ConfirmedAt,
        UpdatedAt,
    }

    #[derive(DeriveIden)]
    enum SubscriptionEvidence {
        Table,
        Seq,
        Tenant,
        ContactId,
        SubscriptionId,
        FromState,
        ToState,
        Method,
        Source,
        WordingVersion,
        WordingSha256,
        RecordedBy,
        OccurredAt,
    }

    #[derive(DeriveIden)]
    enum DeliveryEvents {
        Table,
        Seq,
        Tenant,
        ContactId,
        SubscriptionId,
        MessageId,
        Kind,
        OccurredAt,
        RecordedAt,
    }

    #[derive(DeriveIden)]
    enum Suppressions {
        Table,
        Seq,
        Tenant,
        Channel,
        AddressIndex,
        Reason,
        CreatedAt,
    }

    #[derive(DeriveIden)]
    enum Topics {
        Table,
        Seq,
        Tenant,
        TopicId,
        Description,
        UpdatedAt,
    }

    fn seq<T: IntoIden>(col: T) -> ColumnDef {
        ColumnDef::new(col)
            .big_integer()
            .not_null()
            .auto_increment()
            .primary_key()
            .to_owned()
    }

    fn text<T: IntoIden>(col: T) -> ColumnDef {
        ColumnDef::new(col).string().not_null().to_owned()
    }

    fn at<T: IntoIden>(col: T) -> ColumnDef {
        ColumnDef::new(col)
            .timestamp_with_time_zone()
            .not_null()
            .to_owned()
    }

    async fn index(
        manager: &SchemaManager<'_>,
        name: &str,
        table: impl IntoIden,
        cols: Vec<DynIden>,
        unique: bool,
    ) -> Result<(), DbErr> {
        let mut index = Index::create().name(name).table(table).to_owned();
        for col in cols {
            index.col(col);
        }
        if unique {
            index.unique();
        }
        manager.create_index(index).await
    }

    fn cols<const N: usize>(cols: [DynIden; N]) -> Vec<DynIden> {
        cols.into()
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            use Contacts as C;
            use DeliveryEvents as E;
            use SubscriptionEvidence as V;
            use Subscriptions as S;
            use Suppressions as X;
            use Topics as T;
            manager
                .create_table(
                    Table::create()
                        .table(C::Table)
                        .col(seq(C::Seq))
                        .col(text(C::Tenant))
                        .col(text(C::ContactId))
                        .col(ColumnDef::new(C::SealedProfile).binary().not_null())
                        .col(at(C::CreatedAt))
                        .col(at(C::UpdatedAt))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "contacts_by_id",
                C::Table,
                cols([C::Tenant.into_iden(), C::ContactId.into_iden()]),
                true,
            )
            .await?;
            manager
                .create_table(
                    Table::create()
                        .table(S::Table)
                        .col(seq(S::Seq))
                        .col(text(S::SubscriptionId).unique_key().to_owned())
                        .col(text(S::Tenant))
                        .col(text(S::ContactId))
                        .col(text(S::Channel))
                        .col(text(S::Topic))
                        .col(text(S::State))
                        .col(ColumnDef::new(S::SealedAddress).binary().not_null())
                        .col(text(S::AddressIndex))
                        .col(ColumnDef::new(S::CodeHash).string().null())
                        .col(
                            ColumnDef::new(S::ConfirmExpiresAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .col(
                            ColumnDef::new(S::CodeAttempts)
                                .integer()
                                .not_null()
                                .default(0),
                        )
                        .col(at(S::CreatedAt))
                        .col(
                            ColumnDef::new(S::ConfirmedAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .col(at(S::UpdatedAt))
                        .to_owned(),
                )
                .await?;
            // One subscription per address, channel and topic: a second sign-up finds the first.
            index(
                manager,
                "subscriptions_by_address",
                S::Table,
                cols([
                    S::Tenant.into_iden(),
                    S::Channel.into_iden(),
                    S::AddressIndex.into_iden(),
                    S::Topic.into_iden(),
                ]),
                true,
            )
            .await?;
            // The audience scan: one topic and channel's confirmed rows in order.
            index(
                manager,
                "subscriptions_audience",
                S::Table,
                cols([
                    S::Tenant.into_iden(),
                    S::Topic.into_iden(),
                    S::Channel.into_iden(),
                    S::State.into_iden(),
                    S::Seq.into_iden(),
                ]),
                false,
            )
            .await?;
            index(
                manager,
                "subscriptions_by_contact",
                S::Table,
                cols([S::Tenant.into_iden(), S::ContactId.into_iden()]),
                false,
            )
            .await?;
            manager
                .create_table(
                    Table::create()
                        .table(V::Table)
                        .col(seq(V::Seq))
                        .col(text(V::Tenant))
                        .col(text(V::ContactId))
                        .col(text(V::SubscriptionId))
                        .col(text(V::FromState))
                        .col(text(V::ToState))
                        .col(text(V::Method))
                        .col(text(V::Source))
                        .col(text(V::WordingVersion))
                        .col(text(V::WordingSha256))
                        .col(text(V::RecordedBy))
                        .col(at(V::OccurredAt))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "subscription_evidence_by_contact",
                V::Table,
                cols([
                    V::Tenant.into_iden(),
                    V::ContactId.into_iden(),
                    V::Seq.into_iden(),
                ]),
                false,
            )
            .await?;
            manager
                .create_table(
                    Table::create()
                        .table(E::Table)
                        .col(seq(E::Seq))
                        .col(text(E::Tenant))
                        .col(text(E::ContactId))
                        .col(text(E::SubscriptionId))
                        .col(text(E::MessageId))
                        .col(text(E::Kind))
                        .col(at(E::OccurredAt))
                        .col(at(E::RecordedAt))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "delivery_events_by_contact",
                E::Table,
                cols([E::Tenant.into_iden(), E::ContactId.into_iden()]),
                false,
            )
            .await?;
            // The retention sweep deletes by age.
            index(
                manager,
                "delivery_events_by_age",
                E::Table,
                cols([E::OccurredAt.into_iden()]),
                false,
            )
            .await?;
            manager
                .create_table(
                    Table::create()
                        .table(X::Table)
                        .col(seq(X::Seq))
                        .col(text(X::Tenant))
                        .col(text(X::Channel))
                        .col(text(X::AddressIndex))
                        .col(text(X::Reason))
                        .col(at(X::CreatedAt))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "suppressions_by_address",
                X::Table,
                cols([
                    X::Tenant.into_iden(),
                    X::Channel.into_iden(),
                    X::AddressIndex.into_iden(),
                ]),
                true,
            )
            .await?;
            manager
                .create_table(
                    Table::create()
                        .table(T::Table)
                        .col(seq(T::Seq))
                        .col(text(T::Tenant))
                        .col(text(T::TopicId))
                        .col(text(T::Description))
                        .col(at(T::UpdatedAt))
                        .to_owned(),
                )
                .await?;
            index(
                manager,
                "topics_by_id",
                T::Table,
                cols([T::Tenant.into_iden(), T::TopicId.into_iden()]),
                true,
            )
            .await?;
            tutela_ledger::migration::append_only(manager, "subscription_evidence").await
        }

        async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
            Err(DbErr::Migration(
                "subscriptions and their evidence are never dropped by a migration".into(),
            ))
        }
    }
}

/// Each subscription keeps the `seq` of its contact's key row (the store's migrations, which
/// give key rows that number, run before any service's), so that an audience reads keys by an
/// integer that follows sign-up order instead of a random look-up on the contact's id.
mod m20261124_000005_subscription_key_seq {
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000005_subscription_key_seq"
        }
    }

    #[derive(DeriveIden)]
    enum Subscriptions {
        Table,
        KeySeq,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(Subscriptions::Table)
                        .add_column(ColumnDef::new(Subscriptions::KeySeq).big_integer().null())
                        .to_owned(),
                )
                .await?;
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "UPDATE subscriptions SET key_seq = (SELECT k.seq FROM {} k \
                     WHERE k.scope = '{}' AND k.tenant = subscriptions.tenant \
                     AND k.subject_id = subscriptions.contact_id)",
                    tutela_store::vault::KEYS_TABLE,
                    crate::SERVICE
                ))
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(Subscriptions::Table)
                        .drop_column(Subscriptions::KeySeq)
                        .to_owned(),
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement, Value};
    use tutela_store::testing::TestDatabase;

    use super::*;

    /// The subscription history as releases before the ledger's move made it: the ledger's
    /// tables were its first three migrations and its sixth.
    struct BeforeTheMove;

    impl MigratorTrait for BeforeTheMove {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            let mut ledger = tutela_ledger::migration::LedgerMigrator::migrations().into_iter();
            let mut first: Vec<Box<dyn MigrationTrait>> = ledger.by_ref().take(3).collect();
            first.push(Box::new(m20261124_000004_subscriptions::Migration));
            first.push(Box::new(m20261124_000005_subscription_key_seq::Migration));
            first.extend(ledger);
            first
        }

        fn migration_table_name() -> DynIden {
            SubscriptionMigrator::migration_table_name()
        }
    }

    /// A fresh database migrated as a release before the ledger's move did, up to number `n`.
    async fn migrated_up_to(n: u32) -> (TestDatabase, sea_orm::DatabaseConnection) {
        let db = TestDatabase::create().await.unwrap();
        let conn = db.connect().await.unwrap();
        tutela_store::migrate(&conn, &[]).await.unwrap();
        // In one transaction, as the runner applied them (see `tutela_store::migrate`).
        let txn = tutela_store::begin(&conn).await.unwrap();
        BeforeTheMove::up(&txn, Some(n)).await.unwrap();
        txn.commit().await.unwrap();
        (db, conn)
    }

    /// The remaining migrations, through the runner, as `tutela migrate` and `serve` apply them
    /// since the move: the ledger's set, then the subscription set.
    async fn migrate_the_rest(conn: &sea_orm::DatabaseConnection) {
        let sets = tutela_host::HostedService::migrations(crate::HOSTED);
        tutela_store::migrate(conn, &sets).await.unwrap();
    }

    async fn count(conn: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
        let row = conn
            .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index(0).unwrap()
    }

    #[tokio::test]
    async fn a_database_made_before_the_ledger_moved_keeps_its_ledger_and_makes_no_table_twice() {
        let (_db, conn) = migrated_up_to(6).await;
        let backend = conn.get_database_backend();
        conn.execute_raw(Statement::from_sql_and_values(
            backend,
            tutela_store::placeholders(
                backend,
                "INSERT INTO restrictions (tenant, subject_id, restricted, reason, recorded_by, \
                 recorded_at) VALUES ('t', 's', $1, 'asked', 'dpo', $2)",
            ),
            vec![Value::from(true), Value::from(chrono::Utc::now())],
        ))
        .await
        .unwrap();

        // Twice: the second run finds nothing pending.
        migrate_the_rest(&conn).await;
        migrate_the_rest(&conn).await;
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM restrictions").await, 1);
        // The ledger's history adopted all four and ran its own later ones; the subscription
        // history kept its six.
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM tutela_migrations_ledger").await,
            5
        );
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM tutela_migrations_subscription").await,
            6
        );
        let err = conn
            .execute_unprepared("DELETE FROM restrictions")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[tokio::test]
    async fn a_new_database_gets_the_ledger_tables_from_the_ledgers_migrations() {
        let db = TestDatabase::create().await.unwrap();
        let conn = db.connect().await.unwrap();
        migrate_the_rest(&conn).await;
        for table in [
            "consent_entries",
            "restrictions",
            "identity_verifications",
            "objections",
        ] {
            assert_eq!(
                count(&conn, &format!("SELECT COUNT(*) FROM {table}")).await,
                0
            );
        }
        for history in ["tutela_migrations_ledger", "tutela_migrations_subscription"] {
            let applied = count(&conn, &format!("SELECT COUNT(*) FROM {history}")).await;
            assert_eq!(applied, if history.ends_with("ledger") { 5 } else { 6 });
        }
    }

    #[tokio::test]
    async fn subscriptions_made_before_key_numbers_get_their_contacts_number() {
        let (_db, conn) = migrated_up_to(4).await;
        let backend = conn.get_database_backend();
        let run = |sql: &str, values: Vec<Value>| {
            Statement::from_sql_and_values(
                backend,
                tutela_store::placeholders(backend, sql),
                values,
            )
        };
        let now = chrono::Utc::now();
        for contact in ["c1", "c2"] {
            conn.execute_raw(run(
                "INSERT INTO tutela_subject_keys (scope, tenant, subject_id, kek_id, wrapped_key, \
                 created_at) VALUES ('subscription', 't', $1, 'k', $2, $3)",
                vec![contact.into(), Some(vec![1u8]).into(), now.into()],
            ))
            .await
            .unwrap();
        }
        // c2 signs up first, so the subscription and key orders differ.
        for (sub, contact) in [("s1", "c2"), ("s2", "c1")] {
            conn.execute_raw(run(
                "INSERT INTO subscriptions (subscription_id, tenant, contact_id, channel, topic, \
                 state, sealed_address, address_index, created_at, updated_at) \
                 VALUES ($1, 't', $2, 'email', 'news', 'confirmed', $3, $4, $5, $6)",
                vec![
                    sub.into(),
                    contact.into(),
                    vec![0u8].into(),
                    sub.into(),
                    now.into(),
                    now.into(),
                ],
            ))
            .await
            .unwrap();
        }

        migrate_the_rest(&conn).await;
        let rows = conn
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT s.subscription_id AS id, s.key_seq AS got, k.seq AS want \
                 FROM subscriptions s JOIN tutela_subject_keys k ON k.subject_id = s.contact_id \
                 ORDER BY s.subscription_id",
            ))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            let got: Option<i64> = row.try_get("", "got").unwrap();
            let want: i64 = row.try_get("", "want").unwrap();
            assert_eq!(got, Some(want));
        }
    }

    #[tokio::test]
    async fn free_text_verification_methods_become_short_names_or_other_and_stay_append_only() {
        let (_db, conn) = migrated_up_to(5).await;
        let backend = conn.get_database_backend();
        let stored = [
            (
                "VERIFICATION_METHOD_PHOTO_ID_IN_PERSON",
                "photo_id_in_person",
            ),
            ("VERIFICATION_METHOD_KNOWLEDGE_CHECK", "knowledge_check"),
            ("authenticated_account", "authenticated_account"),
            (" photo_id_video ", "photo_id_video"),
            ("passport, SSN 123-45-6789", "other"),
            ("", "other"),
        ];
        let now = chrono::Utc::now();
        for (i, (method, _)) in stored.iter().enumerate() {
            conn.execute_raw(Statement::from_sql_and_values(
                backend,
                tutela_store::placeholders(
                    backend,
                    "INSERT INTO identity_verifications (tenant, subject_id, method, sealed, \
                     verified_by, verified_at) VALUES ('t', $1, $2, $3, 'dpo', $4)",
                ),
                vec![
                    Value::from(format!("s{i}")),
                    Value::from(*method),
                    Value::from(vec![0u8]),
                    Value::from(now),
                ],
            ))
            .await
            .unwrap();
        }

        migrate_the_rest(&conn).await;
        let rows = conn
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT subject_id, method FROM identity_verifications ORDER BY seq",
            ))
            .await
            .unwrap();
        let got: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String>("", "method").unwrap())
            .collect();
        let want: Vec<&str> = stored.iter().map(|(_, short)| *short).collect();
        assert_eq!(got, want);
        for short in &got {
            assert!(
                short == "other"
                    || tutela_proto::privacy::VerificationMethod::from_short_name(short).is_some(),
                "{short}"
            );
        }
        // The ledger is append-only again.
        let err = conn
            .execute_unprepared("UPDATE identity_verifications SET method = 'x'")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}
