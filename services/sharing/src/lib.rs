//! The sharing service: the partners learner data may go to (exam bodies, colleges, funders,
//! employers, regulators...), each with its own pseudonym key, and the versioned data-sharing
//! agreements that say per purpose on which legal basis and which fields of the enrolment
//! contract a partner may receive, for how long it may keep them, and how a transfer abroad is
//! safeguarded (S1, S3, S4, S7). Disclosures, their log and notices to recipients build on these.
//!
//! The modules: [`entity`] and [`migration`] (the tables), [`terms`] (stored names of the
//! vocabularies), [`duration`] (ISO-8601 periods), [`paths`] (field paths looked up in the
//! enrolment contract), [`keys`] (pseudonym keys, sealed through the vault), [`partners`] and
//! [`agreements`] (the two gRPC services), [`recipients`] (the agreements in force, for the
//! record of processing activities), [`webhooks`] (thin signed notifications to partners'
//! endpoints, from a durable outbox).

pub mod agreements;
pub mod duration;
pub mod entity;
mod hosted;
pub mod keys;
pub mod migration;
pub mod partners;
pub mod paths;
pub mod recipients;
mod sharing;
pub mod terms;
pub mod webhooks;

pub use agreements::AgreementService;
pub use keys::{PartnerKeys, PseudonymKey};
pub use migration::SharingMigrator;
pub use partners::PartnerService;
pub use sharing::Sharing;

/// The service's short name (`--service sharing`, health).
pub const SERVICE: &str = "sharing";

/// The service as a `tutela` process hosts it.
pub const HOSTED: &dyn tutela_host::HostedService = &hosted::Hosted;
