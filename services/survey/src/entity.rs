//! The survey service's tables: surveys with their questions, who was invited to which survey
//! (and whether they answered), and the responses, sealed under the respondent's data key. Every
//! table is tenant-scoped (`tutela_policy::scope`); the invitations and responses of a learner
//! are also subject-scoped, so the rights path reaches exactly theirs.

/// A survey: its course, title, questions and declared respondent attributes.
pub mod survey {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "survey_surveys")]
    pub struct Model {
        /// Row number: the order surveys are listed in (pages resume after one).
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub survey_id: String,
        pub tenant: String,
        pub course_id: String,
        pub title: String,
        /// The questions as JSON (`crate::questions::Stored`), checked when the survey was made.
        pub questions: String,
        /// Short names of the declared respondent attributes, as a JSON list.
        pub attributes: String,
        /// `open` or `closed`.
        pub state: String,
        pub created_at: DateTimeUtc,
        pub closed_at: Option<DateTimeUtc>,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
        /// The privacy budget of differentially private releases: ε in millionths, δ in 10⁻¹².
        pub budget_epsilon: i64,
        pub budget_delta: i64,
        /// What releases spent of it, raised only by a conditional update (never past it).
        pub spent_epsilon: i64,
        pub spent_delta: i64,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// A release of a survey's results: immutable once written, its results (anonymous) kept as
/// they were handed out, with what it was made from and how.
pub mod release {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "survey_releases")]
    pub struct Model {
        /// Row number: the order releases are listed in.
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub release_id: String,
        pub tenant: String,
        pub survey_id: String,
        /// `aggregate`, `microdata` or `differentially_private`.
        pub form: String,
        pub recipient: String,
        pub purpose: String,
        /// The principal's id (staff or service; releases are not made by learners).
        pub requester: String,
        pub created_at: DateTimeUtc,
        /// The parameters applied and the hierarchies used: a `Release` message without its
        /// results, protobuf-encoded.
        pub parameters: Vec<u8>,
        /// The results: the protobuf encoding of the form's results message (what
        /// `output_sha256` is the hash of).
        pub results: Vec<u8>,
        pub input_sha256: String,
        pub output_sha256: String,
        /// What a differentially private release spent (0 otherwise): ε in millionths, δ in
        /// 10⁻¹².
        pub spent_epsilon: i64,
        pub spent_delta: i64,
        /// `laplace`, `gaussian`, or empty for a release that spends nothing.
        pub mechanism: String,
        /// Set when a respondent whose response went into it is erased.
        pub built_from_erased: bool,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant);
}

/// A learner's invitation to a survey and where it stands: `invited`, `declined` or
/// `responded`. The only link from a learner to a survey they answered.
pub mod invitation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "survey_invitations")]
    pub struct Model {
        /// Row number: the order of invitations (reminders page through it).
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub survey_id: String,
        pub subject_id: String,
        /// The cohort the learner's answers are released by; empty for none.
        pub cohort: String,
        /// `invited`, `declined` or `responded`.
        pub state: String,
        pub invited_at: DateTimeUtc,
        /// When the learner declined or responded.
        pub answered_at: Option<DateTimeUtc>,
        /// How many reminders listed the learner.
        pub reminders: i32,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}

/// A response: the answers, sealed under the respondent's data key in the survey service's
/// vault scope (free text already scrubbed). Hand-written Debug: the sealed answers are
/// personal data, however sealed.
pub mod response {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "survey_responses")]
    pub struct Model {
        /// A random UUID (v4): no order to line responses up with invitations by.
        #[sea_orm(primary_key, auto_increment = false)]
        pub response_id: String,
        pub tenant: String,
        pub survey_id: String,
        pub subject_id: String,
        /// The invitation's cohort, copied so that a release groups without the invitations.
        pub cohort: String,
        /// The answers as JSON (`crate::answers::Stored`), sealed.
        pub sealed: Vec<u8>,
        /// How many identifiers scrubbing replaced in the free text.
        pub identifiers_replaced: i32,
        /// Whether a comment still looked identifying after scrubbing: held out of releases
        /// until reviewed.
        pub held_for_review: bool,
        /// Whether the review withheld its comments from every release.
        pub comment_withheld: bool,
        pub submitted_at: DateTimeUtc,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Response")
                .field("response_id", &self.response_id)
                .field("survey_id", &self.survey_id)
                .field("sealed", &"[redacted]")
                .finish_non_exhaustive()
        }
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: SubjectId);
}
