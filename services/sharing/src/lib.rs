//! The sharing service: the partners learner data may go to (exam bodies, colleges, funders,
//! employers, regulators...), each with its own pseudonym key, and the versioned data-sharing
//! agreements that say per purpose on which legal basis and which fields of the enrolment
//! contract a partner may receive, for how long it may keep them, and how a transfer abroad is
//! safeguarded (S1, S3, S4, S7). Disclosures, their log and notices to recipients build on these.
//!
//! The modules: [`entity`] and [`migration`] (the tables), [`terms`] (stored names of the
//! vocabularies), [`duration`] (ISO-8601 periods), [`paths`] (field paths looked up in the
//! enrolment contract), [`keys`] (pseudonym keys, sealed through the vault), [`partners`] and
//! [`agreements`] (two gRPC services), [`disclosures`] (the disclosure path, the pull channel
//! and the disclosure log) reading learners through enrolment's API (with
//! `tutela-enrolment-client`), [`recipients`] (the
//! agreements in force, for the record of processing activities), [`notices`] (notices to
//! recipients of rectifications and erasures, from enrolment's change feed) and [`rights`] (the
//! service's part in data-subject rights), [`webhooks`] (thin signed notifications to
//! partners' endpoints, from a durable outbox), and [`inbound`] (booking confirmations and exam
//! results partners send back against their pseudonyms).

pub mod agreements;
pub mod disclosures;
pub mod duration;
pub mod entity;
pub mod export;
mod hosted;
pub mod inbound;
pub mod keys;
pub mod migration;
pub mod notices;
pub mod partners;
pub mod paths;
pub mod recipients;
pub mod releases;
pub mod rights;
mod sharing;
pub mod terms;
pub mod webhooks;

pub use agreements::AgreementService;
pub use disclosures::DisclosureService;
pub use inbound::InboundService;
pub use keys::{PartnerKeys, PseudonymKey};
pub use migration::SharingMigrator;
pub use notices::NoticeService;
pub use partners::PartnerService;
pub use rights::SharingRights;
pub use sharing::Sharing;

/// The service's short name (`--service sharing`, health).
pub const SERVICE: &str = "sharing";

/// The service as a `tutela` process hosts it.
pub const HOSTED: &dyn tutela_host::HostedService = &hosted::Hosted;
