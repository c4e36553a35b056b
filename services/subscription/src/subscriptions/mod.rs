//! Subscriptions: `tutela.subscription.v1.SubscriptionService` and the storage behind it.
//!
//! Each subscription is one address's opt-in to one topic by one channel, with its evidence kept
//! append-only beside it. Addresses and dates of birth are sealed under the contact's data key
//! (the same vault scope as the consent ledger's sealed parts, so one erasure shreds both);
//! duplicates and the suppression list are found through keyed blind indexes. Confirming a
//! subscription records a `marketing` grant in the consent ledger, so the guard of every service
//! sees the opt-in; opting out of everything records the withdrawal.
//!
//! The modules: `state` (stored states, channel and event-kind names), `address` (address
//! rules), `checks` (request field checks shared by RPCs), `store` ([`Subscriptions`], its
//! storage, evidence and transitions), `token` (confirmation tokens and codes, unsubscribing
//! with a token), `subscribe`, `opt_out` and `events` (one handler each), `suppression` (the
//! suppression list), `service` (the tonic implementation), plus [`audience`], [`entity`] and
//! [`http`] (the RFC 8058 endpoint).

mod address;
pub mod audience;
mod checks;
pub mod entity;
mod events;
pub mod http;
mod opt_out;
mod service;
mod state;
mod store;
mod subscribe;
mod suppression;
mod token;

pub use address::{address_field, normalise_address};
pub use service::SubscriptionService;
pub use state::{State, channel_name};
pub use store::{Parts, Subscriptions};
pub(crate) use suppression::suppress;
pub use token::{CODE_VALIDITY, MAX_CODE_ATTEMPTS, ONE_CLICK, TOKEN_VALIDITY};
