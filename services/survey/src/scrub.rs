//! Scrubbing of free-text answers as they arrive, with `tutela-anonymise`'s scrubber: the names
//! of the survey's invitees (the course's learners taking part) and of its course's staff (both
//! read through enrolment's API, see [`crate::people`]) and structured identifiers (email,
//! phone, postcode, NINO, NHS number, card, IBAN, URL, IP, handle) and titles with a name become
//! typed placeholders, and a comment that still looks identifying is held back for review. Only
//! the scrubbed text is ever stored.
//!
//! Building a scrubber compiles an automaton over every name, so one is kept per survey and
//! reused while the survey has the same number of invitations (an invitation is never deleted
//! while the survey lives, so a new invitee changes the count) and for at most [`TTL`], so a
//! rectified name is picked up soon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tutela_anonymise::Scrubber;
use tutela_policy::{Error, Result};

use crate::people::People;

/// How long a survey's scrubber is reused at most.
const TTL: Duration = Duration::from_secs(300);

/// The most surveys whose scrubbers are kept; past it, expired ones go, then all.
const MAX_CACHED: usize = 256;

/// Which survey a scrubber is for.
type Key = (String, String);

/// A survey's scrubber, with the invitation count and time it was built at.
struct Cached {
    invitations: u64,
    built: Instant,
    scrubber: Arc<Scrubber>,
}

/// The scrubbers the response service runs over free-text answers, one per survey. Cheap to
/// clone; Debug shows no name.
#[derive(Clone)]
pub struct Scrubbing {
    people: People,
    cache: Arc<Mutex<HashMap<Key, Cached>>>,
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

/// The scrubber of one survey's free text.
pub(crate) struct SurveyScrubber(Arc<Scrubber>);

impl SurveyScrubber {
    pub(crate) fn scrub(&self, text: &str) -> Scrubbed {
        let scrubbed = self.0.scrub(text);
        Scrubbed {
            replaced: u32::try_from(scrubbed.hits.len()).unwrap_or(u32::MAX),
            needs_review: scrubbed.needs_review(),
            text: scrubbed.text,
        }
    }
}

impl Scrubbing {
    /// Scrubbers knowing the names `people` reads.
    pub fn new(people: People) -> Self {
        Self {
            people,
            cache: Arc::default(),
        }
    }

    /// The scrubber of the survey `survey` (its id and its course's id) of `tenant`, which has
    /// `invitations` invitations: the one kept, or one built over the names of the learners
    /// `invitees` returns and the course's staff names. A failed read of either fails the call
    /// (UNAVAILABLE, retryable): a comment is never scrubbed without them.
    pub(crate) async fn for_survey<F, Fut>(
        &self,
        tenant: &str,
        survey: (&str, &str),
        invitations: u64,
        invitees: F,
    ) -> Result<SurveyScrubber>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>>>,
    {
        let (survey_id, course_id) = survey;
        let key = (tenant.to_owned(), survey_id.to_owned());
        if let Some(kept) = self.kept(&key, invitations) {
            return Ok(SurveyScrubber(kept));
        }
        let ids = invitees().await?;
        let mut names = self.people.names(tenant, &ids).await?;
        names.extend(self.people.staff_names(tenant, course_id).await?);
        let scrubber = Arc::new(
            Scrubber::new(&names).map_err(|_| Error::internal("the scrubber did not build"))?,
        );
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.built.elapsed() < TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                invitations,
                built: Instant::now(),
                scrubber: scrubber.clone(),
            },
        );
        Ok(SurveyScrubber(scrubber))
    }

    fn kept(&self, key: &Key, invitations: u64) -> Option<Arc<Scrubber>> {
        self.lock()
            .get(key)
            .filter(|c| c.invitations == invitations && c.built.elapsed() < TTL)
            .map(|c| c.scrubber.clone())
    }

    /// The cache; a panic elsewhere while it was held leaves whole entries only, so a poisoned
    /// lock is taken as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
