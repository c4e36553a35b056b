//! Finding and removing identifiers in free text. `recognise` finds them (kind and byte span);
//! the guard refuses text holding a prohibited one, and the survey service's anonymiser replaces
//! them (`scrub`), the US SSN with the same recogniser, so what is refused and what is scrubbed
//! cannot drift.

pub mod aggregate;
pub mod dp;
pub mod microdata;
pub mod recognise;
pub mod scrub;

#[doc(hidden)]
pub mod corpus;

pub use recognise::{Finding, Pack, RecogniseError, Recogniser};
pub use scrub::{EntityKind, Hit, Risk, Scrubbed, Scrubber};
