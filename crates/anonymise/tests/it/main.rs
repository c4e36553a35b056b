//! Integration tests of tutela-anonymise: properties of the recognisers over generated text, and
//! of microdata releases (with pycanon as an oracle).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod microdata;
mod recognise;
mod scrub;
