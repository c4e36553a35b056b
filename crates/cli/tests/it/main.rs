//! `tutela` end to end: the real server over a real socket, in-process and as a binary.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod binary;
mod check;
mod connections;
mod crash;
mod dev_keys;
mod export;
mod guard;
mod principal;
mod rights;
mod serve;
mod sweep;
mod tls;
mod traces;
mod validation;
