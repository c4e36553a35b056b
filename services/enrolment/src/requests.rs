//! The write requests of the enrolment RPCs (records, outcomes, legal holds), parsed: each parser
//! checks every field at once (INVALID_ARGUMENT naming each bad one, through [`Checks`]) and
//! yields the values in their types, with the write's [`Idempotency`]. A handler starts from a
//! parsed request and so never meets a field that is missing or malformed after the checks.

use chrono::{DateTime, NaiveDate, Utc};
use tutela_policy::Result;
use tutela_policy::idempotency::Idempotency;
use tutela_policy::validate::{Checks, Field};
use tutela_proto::enrolment::{
    AwardKind, ChangeEnrolmentStatusRequest, CreateCourseRequest, EnrolLearnerRequest,
    EnrolmentStatus, FeedbackKind, HoldScope, IssueCertificateRequest, PlaceLegalHoldRequest,
    RecordFeedbackRequest, RecordResultRequest, ReleaseLegalHoldRequest,
};

/// A date as `YYYY-MM-DD` at `field`, required.
fn date(c: &mut Checks, text: &str, field: &str) -> Field<NaiveDate> {
    if text.trim().is_empty() {
        return Err(c.flag(field, "required, as YYYY-MM-DD"));
    }
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| c.flag(field, "must be a date as YYYY-MM-DD"))
}

/// The request as the client sent it, without its key: what tells a retry from a reuse.
macro_rules! idempotency {
    ($key:expr, $rpc:literal, $r:expr) => {
        Idempotency::of_request($key, $rpc, $r, |m| m.idempotency_key = None)
    };
}

/// A parsed `CreateCourse`.
pub(crate) struct NewCourse {
    pub idempotency: Option<Idempotency>,
    pub code: String,
    pub title: String,
    pub programme: String,
    pub awarding_body: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Trimmed, in the order given.
    pub staff_names: Vec<String>,
}

/// The most staff names a course keeps: its tutors and the few others learners meet, not a
/// staff directory (each one is a pattern of the survey scrubber's automaton).
const MAX_STAFF_NAMES: usize = 50;

/// The longest staff name, in characters.
const MAX_STAFF_NAME: usize = 200;

impl TryFrom<&CreateCourseRequest> for NewCourse {
    type Error = tutela_policy::Error;

    fn try_from(r: &CreateCourseRequest) -> Result<Self> {
        let given = r.course.clone().unwrap_or_default();
        let mut c = Checks::new();
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let code = c.required(&given.code, "course.code", 64);
        let title = c.required(&given.title, "course.title", 300);
        let programme = c.optional(&given.programme, "course.programme", 300);
        let body = c.optional(&given.awarding_body, "course.awarding_body", 300);
        let start = date(&mut c, &given.start_date, "course.start_date");
        let end = date(&mut c, &given.end_date, "course.end_date");
        if let (Ok(s), Ok(e)) = (&start, &end) {
            c.ensure(e >= s, "course.end_date", "must not be before start_date");
        }
        let staff = staff_names(&mut c, &given.staff_names);
        let (key, code, title, programme, body, start, end, staff_names) =
            c.parsed((key, code, title, programme, body, start, end, staff))?;
        Ok(Self {
            idempotency: idempotency!(key, "CreateCourse", r),
            code: code.to_owned(),
            title: title.to_owned(),
            programme: programme.to_owned(),
            awarding_body: body.to_owned(),
            start,
            end,
            staff_names,
        })
    }
}

/// A course's staff names at `course.staff_names`: at most [`MAX_STAFF_NAMES`], each given (a
/// blank one names no one) and at most [`MAX_STAFF_NAME`] characters, trimmed.
fn staff_names(c: &mut Checks, given: &[String]) -> Field<Vec<String>> {
    let before = c.len();
    c.ensure(
        given.len() <= MAX_STAFF_NAMES,
        "course.staff_names",
        &format!("at most {MAX_STAFF_NAMES} names"),
    );
    let names: Vec<String> = given
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            c.required_text(name, &format!("course.staff_names[{i}]"), MAX_STAFF_NAME)
                .map(str::to_owned)
        })
        .collect();
    c.clean_since(before, || names)
}

/// A parsed `EnrolLearner`, but for the learner, whom the handler looks up (and checks) next.
pub(crate) struct Enrol {
    pub idempotency: Option<Idempotency>,
    pub course_id: String,
    pub status: EnrolmentStatus,
}

impl TryFrom<&EnrolLearnerRequest> for Enrol {
    type Error = tutela_policy::Error;

    fn try_from(r: &EnrolLearnerRequest) -> Result<Self> {
        let mut c = Checks::new();
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let course_id = c.required(&r.course_id, "course_id", 64);
        let status = match EnrolmentStatus::try_from(r.status) {
            Ok(EnrolmentStatus::Unspecified) => Ok(EnrolmentStatus::Applied),
            Ok(s @ (EnrolmentStatus::Applied | EnrolmentStatus::Enrolled)) => Ok(s),
            _ => Err(c.flag("status", "APPLIED or ENROLLED (or unset for APPLIED)")),
        };
        let (key, course_id, status) = c.parsed((key, course_id, status))?;
        Ok(Self {
            idempotency: idempotency!(key, "EnrolLearner", r),
            course_id: course_id.to_owned(),
            status,
        })
    }
}

/// A parsed `ChangeEnrolmentStatus`.
pub(crate) struct StatusChange {
    pub enrolment_id: String,
    pub to: EnrolmentStatus,
}

impl TryFrom<&ChangeEnrolmentStatusRequest> for StatusChange {
    type Error = tutela_policy::Error;

    fn try_from(r: &ChangeEnrolmentStatusRequest) -> Result<Self> {
        let mut c = Checks::new();
        let id = c.required(&r.enrolment_id, "enrolment_id", 64);
        let to = EnrolmentStatus::try_from(r.status)
            .ok()
            .filter(|s| *s != EnrolmentStatus::Unspecified);
        let to = c.parse(to, "status", "required: the new status");
        let (id, to) = c.parsed((id, to))?;
        Ok(Self {
            enrolment_id: id.to_owned(),
            to,
        })
    }
}

/// The enrolment a result is for.
pub(crate) enum ResultFor {
    /// Named by its id.
    Enrolment(String),
    /// The learner's enrolment on the course.
    OnCourse { learner: String, course: String },
}

/// A parsed `RecordResult`.
pub(crate) struct NewResult {
    pub idempotency: Option<Idempotency>,
    pub enrolment: ResultFor,
    pub assessment: String,
    pub assessor: String,
    pub score: f64,
    pub maximum: f64,
    pub passed: bool,
    pub assessed_at: DateTime<Utc>,
}

impl NewResult {
    /// Parses `r`; an assessment may not lie more than a minute after `now`.
    pub fn parse(r: &RecordResultRequest, now: DateTime<Utc>) -> Result<Self> {
        let given = r.result.clone().unwrap_or_default();
        let mut c = Checks::new();
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let enrolment = match (
            given.enrolment_id.trim(),
            r.learner.is_some() || !r.course_id.trim().is_empty(),
        ) {
            (_, true) => {
                c.ensure(
                    given.enrolment_id.trim().is_empty(),
                    "result.enrolment_id",
                    "give either result.enrolment_id, or learner and course_id",
                );
                let learner = c.subject(r.learner.as_ref(), "learner");
                let course = c.uuid(&r.course_id, "course_id");
                learner.and_then(|learner| {
                    Ok(ResultFor::OnCourse {
                        learner,
                        course: course?,
                    })
                })
            }
            (_, false) => c
                .required(&given.enrolment_id, "result.enrolment_id", 64)
                .map(|id| ResultFor::Enrolment(id.to_owned())),
        };
        let assessment = c.required(&given.assessment, "result.assessment", 300);
        let assessor = c.optional(&given.assessor, "result.assessor", 200);
        c.ensure(
            given.maximum.is_finite() && given.maximum > 0.0,
            "result.maximum",
            "required: a positive number",
        );
        c.ensure(
            given.score.is_finite() && given.score >= 0.0 && given.score <= given.maximum,
            "result.score",
            "from 0 to maximum",
        );
        let assessed_at = given
            .assessed_at
            .as_ref()
            .and_then(tutela_policy::validate::time_of);
        let assessed_at = match c.parse(
            assessed_at,
            "result.assessed_at",
            "required: a valid timestamp",
        ) {
            Ok(at) if at > now + chrono::Duration::seconds(60) => {
                Err(c.flag("result.assessed_at", "must not be in the future"))
            }
            parsed => parsed,
        };
        let (key, enrolment, assessment, assessor, assessed_at) =
            c.parsed((key, enrolment, assessment, assessor, assessed_at))?;
        Ok(Self {
            idempotency: idempotency!(key, "RecordResult", r),
            enrolment,
            assessment: assessment.to_owned(),
            assessor: assessor.to_owned(),
            score: given.score,
            maximum: given.maximum,
            passed: given.passed,
            assessed_at,
        })
    }
}

/// A parsed `IssueCertificate`.
pub(crate) struct NewCertificate {
    pub idempotency: Option<Idempotency>,
    pub enrolment_id: String,
    /// Empty for the course's title.
    pub title: String,
    pub kind: AwardKind,
}

impl TryFrom<&IssueCertificateRequest> for NewCertificate {
    type Error = tutela_policy::Error;

    fn try_from(r: &IssueCertificateRequest) -> Result<Self> {
        let mut c = Checks::new();
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let enrolment_id = c.required(&r.enrolment_id, "enrolment_id", 64);
        let title = c.optional(&r.title, "title", 300);
        let kind = AwardKind::try_from(r.kind)
            .ok()
            .filter(|k| *k != AwardKind::Unspecified);
        let kind = c.parse(kind, "kind", "required: certificate or badge");
        let (key, enrolment_id, title, kind) = c.parsed((key, enrolment_id, title, kind))?;
        Ok(Self {
            idempotency: idempotency!(key, "IssueCertificate", r),
            enrolment_id: enrolment_id.to_owned(),
            title: title.to_owned(),
            kind,
        })
    }
}

/// A parsed `RecordFeedback`, but for the learner, whom the handler looks up (and checks) next.
pub(crate) struct NewFeedback {
    pub idempotency: Option<Idempotency>,
    pub text: String,
    /// Empty when the feedback is about no course.
    pub course_id: String,
    pub kind: FeedbackKind,
}

impl TryFrom<&RecordFeedbackRequest> for NewFeedback {
    type Error = tutela_policy::Error;

    fn try_from(r: &RecordFeedbackRequest) -> Result<Self> {
        let given = r.feedback.clone().unwrap_or_default();
        let mut c = Checks::new();
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let text = c.required(&given.text, "feedback.text", 10_000);
        let course_id = c.optional(&given.course_id, "feedback.course_id", 64);
        let kind = FeedbackKind::try_from(given.kind)
            .ok()
            .filter(|k| *k != FeedbackKind::Unspecified);
        let kind = c.parse(kind, "feedback.kind", "required");
        let (key, text, course_id, kind) = c.parsed((key, text, course_id, kind))?;
        Ok(Self {
            idempotency: idempotency!(key, "RecordFeedback", r),
            text: text.to_owned(),
            course_id: course_id.to_owned(),
            kind,
        })
    }
}

/// A parsed `PlaceLegalHold`, but for the learner, whom the handler looks up (and checks) next.
pub(crate) struct NewHold {
    pub reason: String,
    pub scope: HoldScope,
    /// The held enrolment or result; empty for a hold on the whole learner.
    pub record_id: String,
}

impl TryFrom<&PlaceLegalHoldRequest> for NewHold {
    type Error = tutela_policy::Error;

    fn try_from(r: &PlaceLegalHoldRequest) -> Result<Self> {
        let mut c = Checks::new();
        let reason = c.required(&r.reason, "reason", 500);
        let scope = HoldScope::try_from(r.scope)
            .ok()
            .filter(|s| *s != HoldScope::Unspecified);
        let scope = c.parse(scope, "scope", "required: what to hold");
        let record_id = r.record_id.trim().to_owned();
        match scope {
            Ok(HoldScope::Learner) => {
                c.ensure(
                    record_id.is_empty(),
                    "record_id",
                    "must be empty for HOLD_SCOPE_LEARNER",
                );
            }
            Ok(_) => c.ensure(
                !record_id.is_empty(),
                "record_id",
                "required for this scope",
            ),
            Err(_) => {}
        }
        let (reason, scope) = c.parsed((reason, scope))?;
        Ok(Self {
            reason: reason.to_owned(),
            scope,
            record_id,
        })
    }
}

/// A parsed `ReleaseLegalHold`.
pub(crate) struct Release {
    pub hold_id: String,
    pub reason: String,
}

impl TryFrom<&ReleaseLegalHoldRequest> for Release {
    type Error = tutela_policy::Error;

    fn try_from(r: &ReleaseLegalHoldRequest) -> Result<Self> {
        let mut c = Checks::new();
        let hold_id = c.required(&r.hold_id, "hold_id", 64);
        let reason = c.required(&r.reason, "reason", 500);
        let (hold_id, reason) = c.parsed((hold_id, reason))?;
        Ok(Self {
            hold_id: hold_id.to_owned(),
            reason: reason.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutela_policy::Error;
    use tutela_proto::common::{IdempotencyKey, SubjectRef};
    use tutela_proto::enrolment::{AssessmentResult, Course};

    fn violations<T>(parsed: Result<T>) -> Vec<String> {
        match parsed {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("expected INVALID_ARGUMENT, got {other:?}"),
            Ok(_) => panic!("expected INVALID_ARGUMENT"),
        }
    }

    #[test]
    fn a_course_comes_out_trimmed_with_the_fingerprint_of_the_request_without_its_key() {
        let request = CreateCourseRequest {
            course: Some(Course {
                code: " ENG-1 ".into(),
                title: "Engineering".into(),
                start_date: "2026-09-01".into(),
                end_date: "2027-06-30".into(),
                ..Default::default()
            }),
            idempotency_key: Some(IdempotencyKey {
                key: "course-key-0001".into(),
            }),
        };
        let course = NewCourse::try_from(&request).unwrap();
        assert_eq!(course.code, "ENG-1");
        let idempotency = course.idempotency.unwrap();
        let mut unkeyed = request.clone();
        unkeyed.idempotency_key = None;
        let expected = Idempotency::new(Some("x".into()), "CreateCourse", &unkeyed).unwrap();
        assert_eq!(idempotency.key(), "course-key-0001");
        assert_eq!(idempotency.fingerprint(), expected.fingerprint());
    }

    #[test]
    fn a_bad_course_names_every_field_once_in_request_order() {
        let request = CreateCourseRequest {
            course: Some(Course {
                start_date: "2027-01-01".into(),
                end_date: "2026-01-01".into(),
                ..Default::default()
            }),
            idempotency_key: Some(IdempotencyKey {
                key: "short".into(),
            }),
        };
        assert_eq!(
            violations(NewCourse::try_from(&request)),
            [
                "idempotency_key.key",
                "course.code",
                "course.title",
                "course.end_date"
            ]
        );
    }

    #[test]
    fn a_result_needs_a_time_not_in_the_future_and_a_score_within_its_maximum() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let request = |seconds: i64, score: f64| RecordResultRequest {
            result: Some(AssessmentResult {
                enrolment_id: "e-1".into(),
                assessment: "Unit 4".into(),
                score,
                maximum: 100.0,
                assessed_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let parsed = NewResult::parse(&request(1_790_000_000, 71.0), now).unwrap();
        assert_eq!((parsed.score, parsed.idempotency), (71.0, None));
        assert!(matches!(parsed.enrolment, ResultFor::Enrolment(id) if id == "e-1"));
        assert_eq!(
            violations(NewResult::parse(&request(1_800_000_061, 171.0), now)),
            ["result.score", "result.assessed_at"]
        );

        // The enrolment named by the learner and the course instead of its id: both, and not
        // beside an id.
        let learner = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";
        let course = "1c0f9b5d-8e2a-4f66-8b62-4d3e1eaf2b88";
        let mut on_course = request(1_790_000_000, 71.0);
        on_course.learner = Some(SubjectRef {
            subject_id: learner.into(),
        });
        on_course.course_id = course.into();
        let both = on_course.clone();
        if let Some(r) = on_course.result.as_mut() {
            r.enrolment_id.clear();
        }
        let parsed = NewResult::parse(&on_course, now).unwrap();
        assert!(matches!(
            parsed.enrolment,
            ResultFor::OnCourse { learner: l, course: c } if l == learner && c == course
        ));
        assert_eq!(
            violations(NewResult::parse(&both, now)),
            ["result.enrolment_id"]
        );
        let mut course_alone = on_course.clone();
        course_alone.learner = None;
        assert_eq!(
            violations(NewResult::parse(&course_alone, now)),
            ["learner.subject_id"]
        );
    }

    #[test]
    fn a_hold_on_a_record_names_it_and_a_hold_on_the_learner_names_none() {
        let hold = |scope: HoldScope, record_id: &str| PlaceLegalHoldRequest {
            reason: "appeal".into(),
            scope: scope as i32,
            record_id: record_id.into(),
            ..Default::default()
        };
        assert_eq!(
            NewHold::try_from(&hold(HoldScope::Result, " r-1 "))
                .unwrap()
                .record_id,
            "r-1"
        );
        assert_eq!(
            violations(NewHold::try_from(&hold(HoldScope::Result, ""))),
            ["record_id"]
        );
        assert_eq!(
            violations(NewHold::try_from(&hold(HoldScope::Learner, "r-1"))),
            ["record_id"]
        );
        assert_eq!(
            violations(NewHold::try_from(&hold(HoldScope::Unspecified, ""))),
            ["scope"]
        );
    }
}
