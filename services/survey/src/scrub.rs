//! Scrubbing of free-text answers as they arrive, with `tutela-anonymise`'s scrubber: structured
//! identifiers (email, phone, postcode, NINO, NHS number, card, IBAN, URL, IP, handle) and titles
//! with a name become typed placeholders, and a comment that still looks identifying is held back
//! for review. Only the scrubbed text is ever stored.

use std::sync::Arc;

use tutela_anonymise::{RecogniseError, Scrubber};

/// The scrubber the response service runs over every free-text answer. Cheap to clone.
#[derive(Clone)]
pub struct Scrubbing {
    scrubber: Arc<Scrubber>,
}

impl std::fmt::Debug for Scrubbing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubbing").finish_non_exhaustive()
    }
}

/// A scrubbed answer. Debug never shows the text.
pub(crate) struct Scrubbed {
    /// The text with identifiers replaced.
    pub(crate) text: String,
    /// How many identifiers were replaced.
    pub(crate) replaced: u32,
    /// Whether it still looks identifying.
    pub(crate) needs_review: bool,
}

impl Scrubbing {
    /// The scrubber of structured identifiers and titled names. The names of a course's own
    /// people are not known to it yet: they come through the enrolment service's API, which the
    /// survey service does not call yet.
    pub fn new() -> Result<Self, RecogniseError> {
        Ok(Self {
            scrubber: Arc::new(Scrubber::new(std::iter::empty::<&str>())?),
        })
    }

    pub(crate) fn scrub(&self, text: &str) -> Scrubbed {
        let scrubbed = self.scrubber.scrub(text);
        Scrubbed {
            replaced: u32::try_from(scrubbed.hits.len()).unwrap_or(u32::MAX),
            needs_review: scrubbed.needs_review(),
            text: scrubbed.text,
        }
    }
}
