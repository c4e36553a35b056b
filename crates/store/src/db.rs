//! Connecting by URL. SQLite is tuned for a server (WAL, `synchronous=NORMAL`, foreign keys, a busy
//! timeout, and `secure_delete` so that erased rows do not linger in free pages); PostgreSQL is
//! used as it comes.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::error::{StoreError, StoreResult};

/// The database engines tutela runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite: the default for one process.
    Sqlite,
    /// PostgreSQL: production, and any number of processes.
    Postgres,
}

impl Backend {
    /// The engine's name, for reports and benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }

    /// The engine a URL names, or an error naming the accepted schemes.
    pub fn of_url(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Config(
                "database url must start with sqlite: or postgres://".into(),
            ))
        }
    }
}

/// Opens a connection pool for `url` (`sqlite://path?mode=rwc` or `postgres://…`).
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<DatabaseConnection> {
    let backend = Backend::of_url(url)?;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections.max(1))
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // Statements can hold personal data in bound values and literals: never log them.
        .sqlx_logging(false);
    match backend {
        // A pooled connection to a file has no peer that could have dropped it: the ping sqlx
        // sends on every checkout by default is a round trip to the connection's worker thread
        // per statement, a third of a short read's thread switches.
        Backend::Sqlite => {
            options
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(sqlite_options);
        }
        // A server, a proxy or a firewall may drop a connection that sat idle; one in use is
        // known to be alive, and pinging it would cost a network round trip per statement.
        Backend::Postgres => {
            options.test_before_acquire_if_idle_for(Duration::from_secs(30));
        }
    }
    Ok(Database::connect(options).await?)
}

/// SQLite tuned for a server.
fn sqlite_options(o: SqliteConnectOptions) -> SqliteConnectOptions {
    o.journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        .pragma("secure_delete", "ON")
        // No memory map: in WAL mode a connection whose read transaction starts after
        // another connection committed unmaps its whole map (TLB shootdowns on every
        // core) and faults the pages back in, which under the audit writer's constant
        // commits is every read. It cost a GetLearner a tenth of its time, and a
        // 200,000-recipient ResolveAudience is no slower without it (0.42-0.59 s).
        .pragma("mmap_size", "0")
}

/// Begins a transaction that may write. On SQLite it takes the write lock at `BEGIN IMMEDIATE`,
/// waiting out the busy timeout for it: a deferred transaction that reads first and writes later
/// fails at once with `SQLITE_BUSY_SNAPSHOT` (code 517) when another connection committed in
/// between, and no busy timeout helps then. PostgreSQL starts its usual transaction. Every
/// transaction goes through here (clippy's `disallowed-methods` forbids a bare `begin`).
pub async fn begin<C: TransactionTrait>(db: &C) -> Result<C::Transaction, DbErr> {
    #[allow(clippy::disallowed_methods)]
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// Whether a database error is a unique-constraint violation, on SQLite and PostgreSQL alike.
/// Callers turn it into ALREADY_EXISTS.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// After an erasure on SQLite, folds the write-ahead log back into the database and truncates it,
/// so that pre-erasure pages do not survive in the `-wal` file. A no-op on PostgreSQL, whose
/// vacuum is the operator's.
pub async fn purge_freed_pages(db: &DatabaseConnection) -> StoreResult<()> {
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
            .await?;
    }
    Ok(())
}

/// `sql` written with PostgreSQL's `$n` placeholders, as the backend spells them (`?` for
/// SQLite), for the few hand-written bulk queries.
pub fn placeholders(backend: sea_orm::DbBackend, sql: &str) -> String {
    match backend {
        sea_orm::DbBackend::Postgres => sql.to_owned(),
        _ => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(ch) = chars.next() {
                if ch == '$' {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(ch);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            Backend::of_url("sqlite://x.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://u@h/db").is_err());
    }
}
