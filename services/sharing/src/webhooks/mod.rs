//! Thin signed webhooks to partners (issue 15, channel c): a partner registers one endpoint
//! ([`service`]), the sharing service writes notifications of ids only to a durable outbox in
//! the transaction of the change they announce ([`outbox::enqueue`]), and a periodic job
//! ([`outbox::Webhooks::deliver_due`]) POSTs them signed per Standard Webhooks ([`signature`])
//! to addresses checked against SSRF at every delivery ([`ssrf`]).

pub mod entity;
pub mod migration;
pub mod outbox;
pub mod service;
pub mod signature;
pub mod ssrf;

pub use outbox::{Delivered, Webhooks, enqueue};
pub use service::WebhookService;
pub use signature::Secret;
pub use ssrf::TargetRules;
