//! The store against a real database: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set.

mod vault;
