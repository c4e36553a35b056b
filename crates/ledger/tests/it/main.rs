//! The ledger's public API on a real database (SQLite, or PostgreSQL with `TEST_DATABASE_URL`).
//! The `ConsentLedger` RPCs are tested where a process hosts them, in the subscription crate.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
