//! Throw-away databases for tests: a fresh SQLite file in a temporary directory, or, when
//! `TEST_DATABASE_URL` names a PostgreSQL server, a freshly created, uniquely named database on it
//! that is dropped afterwards. One test suite thus runs unchanged on both backends.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::db::{Backend, connect};
use crate::error::{StoreError, StoreResult};

pub mod logs;

/// The environment variable naming a PostgreSQL server (any database on it) for tests.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// A database that exists for as long as this value does.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: Backend,
    // For SQLite: the directory holding the file. For PostgreSQL: the admin URL and name.
    dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh, empty database on the backend the environment selects.
    pub async fn create() -> StoreResult<Self> {
        logs::capture();
        match std::env::var(TEST_DATABASE_URL) {
            Ok(admin) if !admin.is_empty() => Self::postgres(&admin).await,
            _ => Self::sqlite(),
        }
    }

    /// A fresh SQLite database in its own temporary directory.
    pub fn sqlite() -> StoreResult<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tutela-test-")
            .tempdir()
            .map_err(|e| StoreError::Config(format!("cannot create temp dir: {e}")))?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("tutela.db").display()
        );
        Ok(Self {
            url,
            backend: Backend::Sqlite,
            dir: Some(dir),
            pg: None,
        })
    }

    /// A fresh database on the PostgreSQL server that `admin_url` reaches.
    pub async fn postgres(admin_url: &str) -> StoreResult<Self> {
        let name = format!("tutela_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(admin_url, 1).await?;
        admin
            .execute_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("CREATE DATABASE {name}"),
            ))
            .await?;
        admin.close().await?;
        // Same server and options, another database: replace the path, keep `?...`.
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url, None), |(b, q)| (b, Some(q)));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Ok(Self {
            url,
            backend: Backend::Postgres,
            dir: None,
            pg: Some((admin_url.to_owned(), name)),
        })
    }

    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The SQLite file, for tests that search its raw bytes.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("tutela.db"))
    }

    /// A connection pool to the database.
    pub async fn connect(&self) -> StoreResult<DatabaseConnection> {
        connect(&self.url, 5).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        logs::scan_or_fail();
        let Some((admin_url, name)) = self.pg.take() else {
            return;
        };
        // Drop may run inside or outside a runtime; a thread of its own works in both.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = connect(&admin_url, 1).await {
                    let _ = admin
                        .execute_raw(Statement::from_string(
                            DbBackend::Postgres,
                            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        ))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
