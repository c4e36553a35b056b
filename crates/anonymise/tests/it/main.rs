//! Integration tests of tutela-anonymise: properties of the recognisers and the scrubber over
//! generated text, of microdata releases (with pycanon as an oracle), and of the aggregate
//! releases' suppression (checked by the auditor) over generated tables and responses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod aggregate;
mod dp;
mod microdata;
mod recognise;
mod scrub;
