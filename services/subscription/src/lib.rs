//! The subscription service: opt-in communications per channel and topic. Because consent is its
//! business, a process hosting it hosts the consent ledger (`tutela_ledger`) too, by default.

mod hosted;
pub mod migration;
pub mod rights;
pub mod subscriptions;
pub mod tokens;

pub use migration::SubscriptionMigrator;
pub use rights::{SubscriptionRights, sweep_events, sweep_events_paged};
pub use subscriptions::{Parts, SubscriptionService, Subscriptions};

/// The service's short name (`--service subscription`, health, key-vault scope).
pub const SERVICE: &str = "subscription";

/// The service as a `tutela` process hosts it.
pub const HOSTED: &dyn tutela_host::HostedService = &hosted::Subscription;
