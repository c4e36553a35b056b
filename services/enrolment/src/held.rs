//! What the legal holds in force protect of one learner: a value with no storage, so that erasure
//! (`records`) can ask it and the hold service (`holds`) can fill it without either module
//! depending on the other.

use std::collections::HashSet;

use tutela_proto::enrolment::HoldScope;

/// What holds in force protect of one learner.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// Everything of the learner, the profile included.
    pub whole: bool,
    /// Enrolment ids held.
    pub enrolments: HashSet<String>,
    /// Result ids held.
    pub results: HashSet<String>,
    /// The reasons of the holds, for erasure reports.
    pub reasons: Vec<String>,
}

impl Held {
    /// Whether any hold is in force.
    pub fn any(&self) -> bool {
        self.whole || !self.enrolments.is_empty() || !self.results.is_empty()
    }

    /// Whether an enrolment is protected.
    pub fn enrolment(&self, id: &str) -> bool {
        self.whole || self.enrolments.contains(id)
    }

    /// Whether a result is protected.
    pub fn result(&self, id: &str) -> bool {
        self.whole || self.results.contains(id)
    }

    /// Adds one hold in force: its scope's proto name, the record it names and its reason.
    pub(crate) fn protect(&mut self, scope: &str, record_id: &str, reason: &str) {
        match HoldScope::from_str_name(scope) {
            Some(HoldScope::Enrolment) => {
                self.enrolments.insert(record_id.to_owned());
            }
            Some(HoldScope::Result) => {
                self.results.insert(record_id.to_owned());
            }
            // A scope this build does not know holds everything: keeping too much is the
            // recoverable mistake.
            _ => self.whole = true,
        }
        self.reasons.push(reason.to_owned());
    }
}
