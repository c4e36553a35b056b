//! Finding and removing identifiers in free text. `recognise` finds them (kind and byte span);
//! the guard refuses text holding a prohibited one, and the survey service's anonymiser will
//! replace them, with the same recognisers, so what is refused and what is scrubbed cannot drift.

pub mod aggregate;
pub mod dp;
pub mod recognise;

pub use recognise::{Finding, Pack, RecogniseError, Recogniser};
