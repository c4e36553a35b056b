//! The subscription service: opt-in communications per channel and topic and, because consent is
//! its business, the consent ledger that the guard of every service reads.

pub mod ledger;
pub mod migration;
pub mod rights;
pub mod subscriptions;
pub mod tokens;

pub use ledger::{ConsentLedgerService, Ledger};
pub use migration::SubscriptionMigrator;
pub use rights::{EVENT_SWEEP_LEASE, SubscriptionRights, sweep_events, sweep_events_paged};
pub use subscriptions::{Parts, SubscriptionService, Subscriptions};

/// The service's short name (`--service subscription`, health, key-vault scope).
pub const SERVICE: &str = "subscription";
