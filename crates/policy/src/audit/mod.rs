//! The audit log: every guard decision and every access to a subject's data, appended to an
//! append-only, hash-chained log (X1, X2). Records carry ids, pseudonyms and category names,
//! never personal values, so the log does not become a second copy of the data.
//!
//! Each record's hash is a keyed HMAC over its content and the previous record's hash, so an
//! edited, removed or reordered record breaks the chain, and without the audit key nobody can
//! forge a consistent replacement; a head row with the last hash catches a truncated tail.
//!
//! Records are written by one task per process in batches (group commit): callers queue a record
//! and wait until the batch holding it has committed, so a call never succeeds before its record
//! is durable, and auditing costs one transaction per batch rather than one per call. Across
//! processes (PostgreSQL), the head row is locked for the length of a batch, which keeps the
//! chain linear.
//!
//! The parts, each readable on its own:
//! - [`keys`]: the keys derived from the audit secret (chain, pseudonyms, blind indexes, tokens);
//! - [`event`]: the typed events callers audit, each of which becomes one record;
//! - [`record`]: what one record says, as chained and stored;
//! - [`writer`]: the handle callers append through and the task that chains batches;
//! - [`outbox`]: records staged within a write's own transaction, and their recovery;
//! - [`verify`]: checking the chain end to end;
//! - [`query`]: the breach question and the dpo's resolution of pseudonyms.

pub mod entity;
pub mod event;
pub mod keys;
pub mod migration;
pub mod outbox;
pub mod query;
pub mod record;
pub mod service;
pub mod verify;
pub mod writer;

pub use event::{AuditEvent, Caller, Change, Subject, TOKEN_HOLDER, TokenCall, principal_ref};
pub use keys::{AuditKeys, TokenSigner};
pub use outbox::{RECOVERED, RECOVERY_INTERVAL, StageAudit, StagedRecord, TokenCallAudit, recover};
pub use query::{AccessSummary, accessed_by, resolve_pseudonyms};
pub use record::{EventKind, Outcome};
pub use verify::{Verification, verify};
pub use writer::AuditLog;

/// The hash before the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
