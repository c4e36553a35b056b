//! A service that is away: its task is retried with backoff and shows as stuck; the coordinator
//! restarts meanwhile; the service comes back in a process of its own (its own database, the
//! consent ledger reached remotely) and the request completes, with nothing done twice. And a
//! service away for good: the request is partially completed, says which part is missing, and
//! runs again on RetryRightsRequest.

use tutela_proto::rights::{
    ApproveRightsRequestRequest, ListRightsRequestsRequest, RetryRightsRequestRequest,
    RightsRequestKind, RightsRequestState, TaskState,
};
use tutela_testkit::TestSuite;

use crate::{download, dpo, file, finished, learner, submit, suite_with, verify, wait_until};

/// A loopback port nothing listens on (yet).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The survey service in a process of its own on `port`, reading the consent ledger and the
/// enrolment service of `suite` remotely.
async fn survey_on_its_own(suite: &TestSuite, port: u16) -> TestSuite {
    let ledger = format!("http://{}", suite.addr());
    TestSuite::start_with(|c| {
        c.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        c.server.services = vec!["survey".into()];
        c.consent.ledger_endpoint = ledger.clone();
        c.sections.insert(
            "survey".into(),
            serde_json::json!({ "enrolment_endpoint": ledger }),
        );
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_service_away_is_retried_and_the_erasure_completes_once_it_and_the_coordinator_are_back()
{
    let port = free_port();
    let suite = suite_with(serde_json::json!({
        "survey_endpoint": format!("http://127.0.0.1:{port}"),
    }))
    .await;
    let (me, _) = learner(&suite, 81).await;
    let request = submit(&suite, &me, RightsRequestKind::Erasure).await;
    verify(&suite, dpo(&suite), &request.request_id)
        .await
        .unwrap();
    suite
        .rights(dpo(&suite))
        .approve_rights_request(ApproveRightsRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap();

    // Everything but the survey service is done; the survey task fails and waits, and after
    // three failures in a row the request says it is stuck.
    let stuck = wait_until(&suite, &request.request_id, "stuck", |r| r.stuck).await;
    assert_eq!(stuck.state, RightsRequestState::InProgress as i32);
    let survey = stuck.tasks.iter().find(|t| t.service == "survey").unwrap();
    assert_eq!(survey.state, TaskState::Pending as i32);
    assert!(survey.attempts >= 3, "{survey:?}");
    assert!(survey.last_error.starts_with("Unavailable"), "{survey:?}");
    assert!(survey.next_attempt_at.is_some());
    let enrolment = stuck
        .tasks
        .iter()
        .find(|t| t.service == "enrolment")
        .unwrap();
    assert_eq!(enrolment.state, TaskState::Done as i32);
    let listed = suite
        .rights(dpo(&suite))
        .list_rights_requests(ListRightsRequestsRequest {
            stuck_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.requests.len(), 1);
    assert_eq!(listed.requests[0].request_id, request.request_id);

    // The coordinator's process restarts: the request is where it was.
    let suite = suite.restart().await.unwrap();
    let after = crate::get(&suite, &request.request_id).await;
    assert_eq!(after.state, RightsRequestState::InProgress as i32);

    // The survey service comes up in a process of its own, on the address configured.
    let survey_process = survey_on_its_own(&suite, port).await;

    let done = finished(&suite, &request.request_id).await;
    assert_eq!(done.state, RightsRequestState::Completed as i32, "{done:?}");
    assert!(!done.stuck);
    for t in &done.tasks {
        assert_eq!(t.state, TaskState::Done as i32, "{t:?}");
        assert_eq!(t.last_error, "", "{t:?}");
        // Nothing ran twice: only the survey task needed more than one attempt.
        if t.service != "survey" {
            assert_eq!(t.attempts, 1, "{t:?}");
        }
    }
    let enrolment_after = done
        .tasks
        .iter()
        .find(|t| t.service == "enrolment")
        .unwrap();
    assert_eq!(enrolment_after.outcome, enrolment.outcome);
    survey_process.stop().await.unwrap();
}

#[tokio::test]
async fn a_service_away_for_good_leaves_the_request_partially_completed_and_retry_runs_it_again() {
    let port = free_port();
    let suite = suite_with(serde_json::json!({
        "sharing_endpoint": format!("http://127.0.0.1:{port}"),
        "max_attempts": 2,
    }))
    .await;
    let (me, _) = learner(&suite, 82).await;
    let request = submit(&suite, &me, RightsRequestKind::Access).await;
    verify(&suite, dpo(&suite), &request.request_id)
        .await
        .unwrap();
    let partial = finished(&suite, &request.request_id).await;
    assert_eq!(
        partial.state,
        RightsRequestState::PartiallyCompleted as i32,
        "{partial:?}"
    );
    let sharing = partial
        .tasks
        .iter()
        .find(|t| t.service == "sharing")
        .unwrap();
    assert_eq!(sharing.state, TaskState::Failed as i32);
    assert_eq!(sharing.attempts, 2);

    // What was collected can be handed out, saying what is missing.
    let archive = download(&suite, &request.request_id).await.unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&file(&archive, "manifest.json")).unwrap();
    assert_eq!(
        manifest["incomplete"][0]["service"], "sharing",
        "{manifest}"
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    assert!(zip.by_name("services/sharing.json").is_err());
    assert!(zip.by_name("services/enrolment.json").is_ok());

    // Run again: the failed task only, from its first attempt.
    let retried = suite
        .rights(dpo(&suite))
        .retry_rights_request(RetryRightsRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(retried.state, RightsRequestState::InProgress as i32);
    let sharing = retried
        .tasks
        .iter()
        .find(|t| t.service == "sharing")
        .unwrap();
    assert_eq!(sharing.state, TaskState::Pending as i32);
    assert_eq!(sharing.attempts, 0);
    let again = finished(&suite, &request.request_id).await;
    assert_eq!(again.state, RightsRequestState::PartiallyCompleted as i32);
    let enrolment = again
        .tasks
        .iter()
        .find(|t| t.service == "enrolment")
        .unwrap();
    assert_eq!(enrolment.attempts, 1, "a done task is not run again");
}

#[tokio::test]
async fn an_objection_is_carried_out_in_a_service_of_its_own_whose_guard_then_refuses_the_purpose()
{
    use tutela_proto::common::{Purpose, SubjectRef};
    use tutela_proto::rights::{Requester, SubmitRightsRequestRequest};
    use tutela_proto::survey::{
        CreateSurveyRequest, InviteRespondentsRequest, Invitee, Question, QuestionKind, Survey,
    };

    let port = free_port();
    let suite = suite_with(serde_json::json!({
        "survey_endpoint": format!("http://127.0.0.1:{port}"),
    }))
    .await;
    // The survey service in a process of its own, reading the consent ledger remotely.
    let survey_process = survey_on_its_own(&suite, port).await;
    let (me, _) = learner(&suite, 83).await;
    let objection = |kind: RightsRequestKind, purposes: &[Purpose]| SubmitRightsRequestRequest {
        subject: Some(SubjectRef {
            subject_id: me.clone(),
        }),
        kind: kind as i32,
        requester: Requester::Subject as i32,
        purposes: purposes.iter().map(|p| *p as i32).collect(),
        ..Default::default()
    };

    // What the request may name is checked when it is recorded.
    for (kind, purposes, named) in [
        (
            RightsRequestKind::Objection,
            &[Purpose::CourseAdministration, Purpose::Marketing][..],
            &["purposes[0]"][..],
        ),
        (RightsRequestKind::Objection, &[][..], &["purposes"][..]),
        (
            RightsRequestKind::Access,
            &[Purpose::Marketing][..],
            &["purposes"][..],
        ),
    ] {
        let err = suite
            .rights(dpo(&suite))
            .submit_rights_request(objection(kind, purposes))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(crate::fields(&err), named);
    }

    let request = suite
        .rights(dpo(&suite))
        .submit_rights_request(objection(
            RightsRequestKind::Objection,
            &[Purpose::Marketing, Purpose::QualityAssurance],
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let both = [Purpose::QualityAssurance as i32, Purpose::Marketing as i32];
    assert_eq!(request.purposes, both);
    verify(&suite, dpo(&suite), &request.request_id)
        .await
        .unwrap();
    // An objection waits for the dpo, who may find grounds that override it.
    let waiting = crate::get(&suite, &request.request_id).await;
    assert_eq!(waiting.state, RightsRequestState::IdentityVerified as i32);
    suite
        .rights(dpo(&suite))
        .approve_rights_request(ApproveRightsRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap();
    let done = finished(&suite, &request.request_id).await;
    assert_eq!(done.state, RightsRequestState::Completed as i32, "{done:?}");
    for t in &done.tasks {
        assert_eq!(t.outcome.as_ref().unwrap().objected_to, both, "{t:?}");
    }

    // The survey process's guard reads the objection from the remote ledger.
    let tutor = tutela_testkit::Credentials::new(
        &survey_process.token("acme", "tutor-1", &["tutor"]),
        "quality_assurance",
    );
    let survey = survey_process
        .surveys(tutor.clone())
        .create_survey(CreateSurveyRequest {
            survey: Some(Survey {
                course_id: uuid::Uuid::new_v4().to_string(),
                title: "End of course survey".into(),
                questions: vec![Question {
                    question_id: "overall".into(),
                    text: "Overall".into(),
                    kind: QuestionKind::Rating as i32,
                    scale_points: 5,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    let invite = |learner: &str| InviteRespondentsRequest {
        survey_id: survey.survey_id.clone(),
        invitees: vec![Invitee {
            learner_id: learner.into(),
            cohort: String::new(),
        }],
    };
    let err = survey_process
        .responses(tutor.clone())
        .invite_respondents(invite(&me))
        .await
        .unwrap_err();
    assert_eq!(crate::reason(&err), "PROCESSING_OBJECTED");
    survey_process
        .responses(tutor)
        .invite_respondents(invite(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    survey_process.stop().await.unwrap();
}
