//! Integration tests of tutela-anonymise: properties of the recognisers over generated text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod recognise;
mod scrub;
