//! The enrolment records service: learners' profiles, each value sealed under the learner's own
//! data key in one part per data category, with keyed blind indexes for exact look-ups; and the
//! service's part in data-subject rights; courses, enrolments with their lifecycle, and assessment
//! results; certificates and badges (Open Badges 3.0); feedback, compliments and complaints.

mod held;
pub mod holds;
mod hosted;
pub mod learners;
pub mod migration;
pub mod outcomes;
pub mod records;
mod requests;
pub mod retention;
pub mod rights;

pub use holds::{Holds, LegalHoldService};
pub use learners::{CHANGES_KEPT_DAYS, LearnerService, Learners};
pub use migration::EnrolmentMigrator;
pub use outcomes::{CertificateService, FeedbackService, Outcomes};
pub use records::{CourseService, EnrolmentService, Records};
pub use retention::{SweepReport, Sweeper};
pub use rights::EnrolmentRights;

/// The service's short name (`--service enrolment`, health, key-vault scope).
pub const SERVICE: &str = "enrolment";

/// The service as a `tutela` process hosts it.
pub const HOSTED: &dyn tutela_host::HostedService = &hosted::Enrolment;
