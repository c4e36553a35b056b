//! Courses, enrolments and results, and their messages in the contract (here, beside the rows,
//! so that a bulk reader such as StreamLearners needs no more than the tables).

use tutela_policy::validate::timestamp;
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::{AssessmentResult, Enrolment, EnrolmentStatus};

/// A course or programme run (no learner's data; its staff's names).
pub mod course {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "courses")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub course_id: String,
        pub code: String,
        pub title: String,
        pub programme: String,
        pub awarding_body: String,
        pub start_date: Date,
        pub end_date: Date,
        pub created_at: DateTimeUtc,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
        /// The names of the course's staff, a JSON array of strings (see
        /// [`super::staff_names_of`]).
        pub staff_names: String,
    }

    impl std::fmt::Debug for Model {
        // Staff names are personal data: never in logs.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Course")
                .field("course_id", &self.course_id)
                .field("code", &self.code)
                .field("staff_names", &"[redacted]")
                .finish_non_exhaustive()
        }
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// The staff names a course row keeps, as stored: a JSON array of strings.
pub(crate) fn staff_names_column(names: &[String]) -> String {
    serde_json::Value::from(names).to_string()
}

/// The staff names of a course row; none when the column holds anything but an array of
/// strings (it is only ever written by [`staff_names_column`]).
pub(crate) fn staff_names_of(row: &course::Model) -> Vec<String> {
    serde_json::from_str(&row.staff_names).unwrap_or_default()
}

/// A learner's enrolment on a course.
pub mod enrolment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrolments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub enrolment_id: String,
        pub learner_id: String,
        pub course_id: String,
        /// The status's short name (`applied`, `enrolled`, ...).
        pub status: String,
        pub created_at: DateTimeUtc,
        pub status_changed_at: DateTimeUtc,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);
}

/// An assessment result.
pub mod result {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "results")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub result_id: String,
        pub enrolment_id: String,
        pub learner_id: String,
        pub assessment: String,
        pub score: f64,
        pub maximum: f64,
        pub passed: bool,
        pub assessed_at: DateTimeUtc,
        pub assessor: String,
        pub recorded_at: DateTimeUtc,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);
}

pub(crate) fn status_of(row: &enrolment::Model) -> EnrolmentStatus {
    EnrolmentStatus::from_str_name(&row.status).unwrap_or(EnrolmentStatus::Unspecified)
}

pub(crate) fn to_enrolment(row: &enrolment::Model) -> Enrolment {
    Enrolment {
        enrolment_id: row.enrolment_id.clone(),
        learner: Some(SubjectRef {
            subject_id: row.learner_id.clone(),
        }),
        course_id: row.course_id.clone(),
        status: status_of(row) as i32,
        created_at: Some(timestamp(row.created_at)),
        status_changed_at: Some(timestamp(row.status_changed_at)),
    }
}

pub(crate) fn to_result(row: &result::Model) -> AssessmentResult {
    AssessmentResult {
        result_id: row.result_id.clone(),
        enrolment_id: row.enrolment_id.clone(),
        learner: Some(SubjectRef {
            subject_id: row.learner_id.clone(),
        }),
        assessment: row.assessment.clone(),
        score: row.score,
        maximum: row.maximum,
        passed: row.passed,
        assessed_at: Some(timestamp(row.assessed_at)),
        assessor: row.assessor.clone(),
    }
}
