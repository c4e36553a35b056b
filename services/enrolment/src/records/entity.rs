//! Courses, enrolments and results, and their messages in the contract (here, beside the rows,
//! so that a bulk reader such as StreamLearners needs no more than the tables).

use tutela_policy::validate::timestamp;
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::{AssessmentResult, Enrolment, EnrolmentStatus};

/// A course or programme run (no personal data).
pub mod course {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
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
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
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
