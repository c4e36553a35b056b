//! The survey service: voluntary end-of-course surveys (V1–V3). Surveys per course with their
//! questions ([`questions`]) and declared respondent attributes; invitations that a learner
//! answers, declines or ignores, with reminders only for those who did neither; and responses
//! ([`answers`]) sealed under the respondent's own data key, their free text scrubbed of
//! identifying details before anything is stored ([`scrub`], over `tutela-anonymise`), with the
//! invitees' names and the declared attributes read through enrolment's API ([`people`]). No RPC
//! returns a response to staff: the respondent reaches their own through the rights path
//! ([`rights`]).
//!
//! Staff see releases only ([`releases`]): aggregates with small cells suppressed, k-anonymous
//! microdata, or differentially private figures under the survey's privacy budget, each recorded
//! immutably with how it was made.
//!
//! The modules: [`entity`] and [`migration`] (the tables), [`surveys`], [`responses`] and
//! [`releases`] (the three gRPC services).

pub mod answers;
pub mod entity;
mod hosted;
pub mod migration;
pub mod people;
pub mod questions;
pub mod releases;
pub mod responses;
pub mod rights;
pub mod scrub;
pub mod surveys;

pub use migration::SurveyMigrator;
pub use releases::ReleaseService;
pub use responses::ResponseService;
pub use rights::SurveyRights;
pub use surveys::{SurveyService, Surveys};

/// The service's short name (`--service survey`, health, the vault scope of respondents' keys).
pub const SERVICE: &str = "survey";

/// The fields `c` found violated, in order (empty when none), for the parsers' unit tests.
#[cfg(test)]
pub(crate) fn violated_fields(c: tutela_policy::validate::Checks) -> Vec<String> {
    match c.finish() {
        Ok(()) => Vec::new(),
        Err(tutela_policy::Error::InvalidArgument(v)) => {
            v.iter().map(|v| v.field.clone()).collect()
        }
        Err(other) => vec![other.to_string()],
    }
}

/// The service as a `tutela` process hosts it.
pub const HOSTED: &dyn tutela_host::HostedService = &hosted::Hosted;
