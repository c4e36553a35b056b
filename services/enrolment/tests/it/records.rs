//! Courses, the enrolment lifecycle and assessment results, and their place in exports and
//! erasure.

use tonic::Code;
use tutela_proto::enrolment::{
    ChangeEnrolmentStatusRequest, Course, CreateCourseRequest, CreateLearnerRequest,
    EnrolLearnerRequest, EnrolmentStatus, GetCourseRequest, ListCoursesRequest,
    ListEnrolmentsRequest, ListResultsRequest,
};
use tutela_proto::privacy::{EraseSubjectRequest, ExportSubjectRequest};
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

fn course(code: &str) -> Course {
    Course {
        course_id: String::new(),
        code: code.into(),
        title: "Engineering Level 3".into(),
        programme: "Engineering".into(),
        awarding_body: "Pearson".into(),
        start_date: "2026-09-01".into(),
        end_date: "2027-06-30".into(),
        staff_names: Vec::new(),
    }
}

pub async fn new_course(suite: &TestSuite, code: &str) -> String {
    suite
        .courses(staff(suite, "registrar", "course_administration"))
        .create_course(CreateCourseRequest {
            course: Some(course(code)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .course
        .unwrap()
        .course_id
}

pub async fn new_learner(suite: &TestSuite) -> String {
    suite
        .learners(staff(suite, "registrar", "course_administration"))
        .create_learner(CreateLearnerRequest {
            profile: Some(profile()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .learner_id
}

pub async fn enrol(suite: &TestSuite, learner: &str, course_id: &str) -> String {
    suite
        .enrolments(staff(suite, "registrar", "course_administration"))
        .enrol_learner(EnrolLearnerRequest {
            learner: subject(learner),
            course_id: course_id.into(),
            status: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .enrolment
        .unwrap()
        .enrolment_id
}

pub async fn move_to(
    suite: &TestSuite,
    enrolment: &str,
    status: EnrolmentStatus,
) -> Result<EnrolmentStatus, tonic::Status> {
    suite
        .enrolments(staff(suite, "registrar", "course_administration"))
        .change_enrolment_status(ChangeEnrolmentStatusRequest {
            enrolment_id: enrolment.into(),
            status: status as i32,
        })
        .await
        .map(|r| r.into_inner().enrolment.unwrap().status())
}

#[tokio::test]
async fn courses_are_checked_unique_by_code_and_invisible_to_other_tenants() {
    let suite = TestSuite::start().await.unwrap();
    let id = new_course(&suite, "ENG-L3-2027").await;
    let mut registrar = suite.courses(staff(&suite, "registrar", "course_administration"));
    let err = registrar
        .create_course(CreateCourseRequest {
            course: Some(course("ENG-L3-2027")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let mut bad = course("X");
    bad.end_date = "2026-01-01".into();
    bad.title = String::new();
    let err = registrar
        .create_course(CreateCourseRequest {
            course: Some(bad),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["course.title", "course.end_date"]);

    let other = Credentials::new(
        &suite.token("globex", "registrar-9", &["registrar"]),
        "course_administration",
    );
    let err = suite
        .courses(other)
        .get_course(GetCourseRequest { course_id: id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_course_keeps_its_staff_names_and_refuses_too_many_or_too_long() {
    let suite = TestSuite::start().await.unwrap();
    personal(&["Ada Lovelace", "Sam Patel"]);
    let mut registrar = suite.courses(staff(&suite, "registrar", "course_administration"));
    let mut named = course("ENG-STAFF");
    named.staff_names = vec![" Dr Ada Lovelace ".into(), "Sam Patel".into()];
    let created = registrar
        .create_course(CreateCourseRequest {
            course: Some(named),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .course
        .unwrap();
    let kept = ["Dr Ada Lovelace", "Sam Patel"];
    assert_eq!(created.staff_names, kept);
    let read = registrar
        .get_course(GetCourseRequest {
            course_id: created.course_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .course
        .unwrap();
    assert_eq!(read.staff_names, kept);
    let plain = new_course(&suite, "ENG-PLAIN").await;
    let listed = registrar
        .list_courses(ListCoursesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .courses;
    let staff_of = |id: &str| {
        listed
            .iter()
            .find(|c| c.course_id == id)
            .map(|c| c.staff_names.clone())
            .unwrap()
    };
    assert_eq!(staff_of(&created.course_id), kept);
    assert!(staff_of(&plain).is_empty());

    // The survey service reads them, one course by its id, for quality assurance.
    let survey_service = Credentials::new(
        &suite.token("acme", "survey", &["service"]),
        "quality_assurance",
    );
    let read = suite
        .courses(survey_service)
        .get_course(GetCourseRequest {
            course_id: created.course_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .course
        .unwrap();
    assert_eq!(read.staff_names, kept);
    // Identity data: the dpo reads the catalogue for course administration, but no identity for
    // it, so the course comes without its staff, and the guard says what it withheld.
    let answer = suite
        .courses(staff(&suite, "dpo", "course_administration"))
        .get_course(GetCourseRequest {
            course_id: created.course_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        answer
            .metadata()
            .get("x-tutela-withheld-categories")
            .and_then(|v| v.to_str().ok()),
        Some("identity")
    );
    let without_staff = answer.into_inner().course.unwrap();
    assert_eq!(without_staff.code, "ENG-STAFF");
    assert!(without_staff.staff_names.is_empty());

    // At most 50, each one line of at most 200 characters, none blank: refused whole, nothing
    // stored.
    let mut too_many = course("ENG-MANY");
    too_many.staff_names = (0..51).map(|i| format!("Tutor {i}")).collect();
    let mut too_long = course("ENG-LONG");
    too_long.staff_names = vec![
        "Ada Lovelace".into(),
        "Sam Patel".into(),
        "Grace Hopper".into(),
        "A".repeat(201),
    ];
    let mut blank = course("ENG-BLANK");
    blank.staff_names = vec!["Ada Lovelace".into(), "  ".into()];
    for (bad, field) in [
        (too_many, "course.staff_names"),
        (too_long, "course.staff_names[3]"),
        (blank, "course.staff_names[1]"),
    ] {
        let err = registrar
            .create_course(CreateCourseRequest {
                course: Some(bad),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(fields(&err), [field]);
    }
    let codes: Vec<String> = registrar
        .list_courses(ListCoursesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .courses
        .into_iter()
        .map(|c| c.code)
        .collect();
    assert_eq!(codes, ["ENG-STAFF", "ENG-PLAIN"]);
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn an_enrolment_follows_its_lifecycle_and_refuses_any_other_move() {
    let suite = TestSuite::start().await.unwrap();
    let course_id = new_course(&suite, "ENG-L3-2027").await;
    let learner = new_learner(&suite).await;
    let enrolment = enrol(&suite, &learner, &course_id).await;

    let err = move_to(&suite, &enrolment, EnrolmentStatus::Started)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "INVALID_TRANSITION");
    for next in [
        EnrolmentStatus::Enrolled,
        EnrolmentStatus::Started,
        EnrolmentStatus::Completed,
    ] {
        assert_eq!(move_to(&suite, &enrolment, next).await.unwrap(), next);
    }
    let err = move_to(&suite, &enrolment, EnrolmentStatus::Withdrawn)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_TRANSITION");

    // One open enrolment per learner and course; unknown learners and courses are NOT_FOUND.
    let mut registrar = suite.enrolments(staff(&suite, "registrar", "course_administration"));
    let again = registrar
        .enrol_learner(EnrolLearnerRequest {
            learner: subject(&learner),
            course_id: course_id.clone(),
            status: EnrolmentStatus::Enrolled as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let unknown = registrar
        .enrol_learner(EnrolLearnerRequest {
            learner: subject("5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
            course_id: course_id.clone(),
            status: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let listed = registrar
        .list_enrolments(ListEnrolmentsRequest {
            learner: None,
            course_id,
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .enrolments;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status(), EnrolmentStatus::Completed);
}

#[tokio::test]
async fn results_are_recorded_for_started_enrolments_and_learners_see_only_their_own() {
    let suite = TestSuite::start().await.unwrap();
    let course_id = new_course(&suite, "ENG-L3-2027").await;
    let learner = new_learner(&suite).await;
    let enrolment = enrol(&suite, &learner, &course_id).await;
    let mut tutor = suite.enrolments(staff(&suite, "tutor", "course_administration"));
    let err = tutor
        .record_result(tutela_testkit::sample_result(&enrolment, 71.0))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "ENROLMENT_NOT_STARTED");
    move_to(&suite, &enrolment, EnrolmentStatus::Enrolled)
        .await
        .unwrap();
    move_to(&suite, &enrolment, EnrolmentStatus::Started)
        .await
        .unwrap();
    let err = tutor
        .record_result(tutela_testkit::sample_result(&enrolment, 130.0))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["result.score"]);
    let recorded = tutor
        .record_result(tutela_testkit::sample_result(&enrolment, 71.0))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(recorded.passed);
    assert_eq!(recorded.learner.unwrap().subject_id, learner);

    // Named by the learner and the course instead of the enrolment: the same enrolment.
    let on_course = |learner: &str, course_id: &str, score: f64| {
        let mut r = tutela_testkit::sample_result("", score);
        r.learner = subject(learner);
        r.course_id = course_id.into();
        r
    };
    let by_course = tutor
        .record_result(on_course(&learner, &course_id, 64.0))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(by_course.enrolment_id, enrolment);
    let elsewhere = new_course(&suite, "ENG-L2-2027").await;
    let err = tutor
        .record_result(on_course(&learner, &elsewhere, 64.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut both = on_course(&learner, &course_id, 64.0);
    if let Some(r) = both.result.as_mut() {
        r.enrolment_id = enrolment.clone();
    }
    let err = tutor.record_result(both).await.unwrap_err();
    assert_eq!(fields(&err), ["result.enrolment_id"]);

    let own = Credentials::new(
        &suite.token("acme", &learner, &["learner"]),
        "subject_rights",
    );
    let mine = suite
        .enrolments(own.clone())
        .list_results(ListResultsRequest {
            learner: subject(&learner),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let scores: Vec<f64> = mine.iter().map(|r| r.score).collect();
    assert_eq!(scores, [71.0, 64.0]);
    let other = new_learner(&suite).await;
    let err = suite
        .enrolments(own)
        .list_results(ListResultsRequest {
            learner: subject(&other),
            page: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn an_export_carries_enrolments_and_results_and_erasure_removes_them() {
    let suite = TestSuite::start().await.unwrap();
    let course_id = new_course(&suite, "ENG-L3-2027").await;
    let learner = new_learner(&suite).await;
    let enrolment = enrol(&suite, &learner, &course_id).await;
    move_to(&suite, &enrolment, EnrolmentStatus::Enrolled)
        .await
        .unwrap();
    move_to(&suite, &enrolment, EnrolmentStatus::Started)
        .await
        .unwrap();
    suite
        .enrolments(staff(&suite, "tutor", "course_administration"))
        .record_result(tutela_testkit::sample_result(&enrolment, 64.0))
        .await
        .unwrap();
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    verify_identity(&suite, &learner).await;
    let export = suite
        .subject_data(dpo.clone())
        .export_subject(ExportSubjectRequest {
            subject: subject(&learner),
            services: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let document: serde_json::Value = serde_json::from_slice(&export.exports[0].document).unwrap();
    assert_eq!(
        document["enrolments"][0]["status"],
        "ENROLMENT_STATUS_STARTED"
    );
    assert_eq!(document["enrolments"][0]["course_id"], course_id.as_str());
    assert_eq!(document["results"][0]["score"], 64.0);
    assert_eq!(
        document["results"][0]["assessed_at"],
        "2026-09-21T14:13:20+00:00"
    );

    let erased = suite
        .subject_data(dpo)
        .erase_subject(EraseSubjectRequest {
            subject: subject(&learner),
            services: Vec::new(),
            reason: "erasure request".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The learner row, their profile parts, the enrolment and the result.
    assert!(erased.services[0].records_erased >= 4);
    let err = suite
        .enrolments(staff(&suite, "registrar", "course_administration"))
        .list_enrolments(ListEnrolmentsRequest {
            learner: subject(&learner),
            course_id: String::new(),
            page: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
