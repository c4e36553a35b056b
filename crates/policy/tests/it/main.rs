//! The guard's parts against a real database: SQLite always, PostgreSQL with TEST_DATABASE_URL.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod token_call;
