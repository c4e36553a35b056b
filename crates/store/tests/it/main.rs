//! The store against a real database: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lease;
mod txn;
mod vault;
