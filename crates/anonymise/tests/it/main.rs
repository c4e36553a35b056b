//! Integration tests of tutela-anonymise: properties of the recognisers over generated text, and of the
//! aggregate releases' suppression (checked by the auditor) over generated tables and responses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod aggregate;
mod dp;
mod recognise;
