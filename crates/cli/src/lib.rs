//! The `tutela` binary as a library: configuration, the server and the operator commands, so that
//! tests and the testkit run exactly what `tutela serve` runs.

pub mod auth;
pub mod breach;
pub mod check;
pub mod config;
pub mod devcerts;
pub mod export;
pub mod guard;
pub mod handshake;
pub mod keys;
pub mod remote;
pub mod retention;
pub mod rights;
pub mod server;
pub mod services;
pub mod tls;

pub use config::{Config, Overrides};
