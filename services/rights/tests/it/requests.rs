//! A request's life as staff and the coordinator move it: access carried out in every service
//! and its bundle, erasure after a dpo's approval (once per service), restriction, refusal, the
//! one extension, and what the contract refuses.

use tutela_proto::common::{IdempotencyKey, SubjectRef};
use tutela_proto::privacy::VerificationMethod;
use tutela_proto::rights::{
    ApproveRightsRequestRequest, DownloadAccessBundleRequest, ExtendRightsRequestDeadlineRequest,
    ListRightsRequestsRequest, RefuseRightsRequestRequest, Requester, RightsRequestKind,
    RightsRequestState, SubmitRightsRequestRequest, TaskState, VerifyRequesterIdentityRequest,
};

use crate::{
    download, dpo, fields, file, finished, get, learner, reason, registrar, submit, suite_with,
    verify,
};

const SERVICES: [&str; 5] = ["enrolment", "sharing", "survey", "subscription", "rights"];

#[tokio::test]
async fn an_access_request_is_carried_out_in_every_service_and_its_bundle_is_one_a_person_can_read()
{
    let suite = suite_with(serde_json::json!({})).await;
    let (me, course) = learner(&suite, 71).await;
    let request = submit(&suite, &me, RightsRequestKind::Access).await;
    assert_eq!(request.state, RightsRequestState::Received as i32);
    assert!(request.tasks.is_empty());
    let received = request.received_at.unwrap().seconds;
    let deadline = request.deadline.unwrap().seconds;
    // One calendar month: 28 to 31 days.
    assert!((28 * 86_400..=31 * 86_400).contains(&(deadline - received)));

    // Nothing to download before the work is done.
    let err = download(&suite, &request.request_id).await.unwrap_err();
    assert_eq!(reason(&err), "RIGHTS_REQUEST_NOT_PENDING");

    // Access needs no dpo approval by the default register: verified, it is under way.
    let verified = verify(&suite, registrar(&suite), &request.request_id)
        .await
        .unwrap();
    assert_eq!(verified.state, RightsRequestState::InProgress as i32);
    assert_eq!(verified.approved_by, "register");
    let services: Vec<&str> = verified.tasks.iter().map(|t| t.service.as_str()).collect();
    assert_eq!(services, SERVICES);

    let done = finished(&suite, &request.request_id).await;
    assert_eq!(done.state, RightsRequestState::Completed as i32, "{done:?}");
    assert!(done.finished_at.is_some());
    for t in &done.tasks {
        assert_eq!(t.state, TaskState::Done as i32, "{t:?}");
        assert_eq!(t.attempts, 1);
    }
    let enrolment = done
        .tasks
        .iter()
        .find(|t| t.service == "enrolment")
        .unwrap();
    assert!(!enrolment.outcome.as_ref().unwrap().categories.is_empty());

    let archive = download(&suite, &request.request_id).await.unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&file(&archive, "manifest.json")).unwrap();
    assert_eq!(manifest["request_id"], request.request_id.as_str());
    let enrolment: serde_json::Value =
        serde_json::from_str(&file(&archive, "services/enrolment.json")).unwrap();
    assert_eq!(enrolment["schema"], "tutela.rights.bundle/v1");
    assert_eq!(
        enrolment["data"]["learner"]["profile"]["given_name"],
        "Given71"
    );
    assert_eq!(
        enrolment["data"]["enrolments"][0]["course_id"],
        course.as_str()
    );
    let title = enrolment["data"]["enrolments"][0]["course_title"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(title.starts_with("Course RIGHTS-71"), "{title}");
    let index = file(&archive, "index.html");
    assert!(index.contains("Given71"), "the profile is shown");
    // Ids are shown with the names of what they name.
    assert!(index.contains(&title), "the course is named");
    assert!(index.contains("course_administration") || index.contains("Course administration"));
    // The rights service's own part lists this very request.
    let own: serde_json::Value =
        serde_json::from_str(&file(&archive, "services/rights.json")).unwrap();
    assert_eq!(
        own["data"]["rights_requests"][0]["request_id"],
        request.request_id.as_str()
    );

    // A registrar follows requests but does not hand out bundles.
    let err = suite
        .rights(registrar(&suite))
        .download_access_bundle(DownloadAccessBundleRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn an_erasure_waits_for_a_dpo_then_erases_in_every_service_once() {
    let suite = suite_with(serde_json::json!({})).await;
    let (me, _) = learner(&suite, 72).await;
    let (other, _) = learner(&suite, 73).await;
    let request = submit(&suite, &me, RightsRequestKind::Erasure).await;
    let verified = verify(&suite, registrar(&suite), &request.request_id)
        .await
        .unwrap();
    // Erasure waits for the dpo (the register's `[rights] dpo_approval`).
    assert_eq!(verified.state, RightsRequestState::IdentityVerified as i32);
    assert!(verified.tasks.is_empty());
    let err = suite
        .rights(registrar(&suite))
        .approve_rights_request(ApproveRightsRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let approved = suite
        .rights(dpo(&suite))
        .approve_rights_request(ApproveRightsRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(approved.state, RightsRequestState::InProgress as i32);
    assert_eq!(approved.approved_by, "dpo-1");
    // Approving twice is refused: the request has moved on.
    let err = suite
        .rights(dpo(&suite))
        .approve_rights_request(ApproveRightsRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RIGHTS_REQUEST_NOT_PENDING");

    let done = finished(&suite, &request.request_id).await;
    assert_eq!(done.state, RightsRequestState::Completed as i32, "{done:?}");
    let enrolment = done
        .tasks
        .iter()
        .find(|t| t.service == "enrolment")
        .unwrap();
    let erasure = enrolment
        .outcome
        .as_ref()
        .unwrap()
        .erasure
        .as_ref()
        .unwrap();
    // The profile and the enrolment at least.
    assert!(erasure.records_erased >= 2, "{erasure:?}");
    let own = done.tasks.iter().find(|t| t.service == "rights").unwrap();
    let kept = &own
        .outcome
        .as_ref()
        .unwrap()
        .erasure
        .as_ref()
        .unwrap()
        .retained;
    assert_eq!(kept[0].record_type, "rights_request");

    // Erased in enrolment: the learner's export holds nothing; the other learner is intact.
    let doc = suite
        .service_export("acme", &me, "enrolment")
        .await
        .unwrap();
    assert!(doc["learner"].is_null(), "{doc}");
    let doc = suite
        .service_export("acme", &other, "enrolment")
        .await
        .unwrap();
    assert_eq!(doc["learner"]["profile"]["given_name"], "Given73");

    // An erasure request has no bundle.
    let err = download(&suite, &request.request_id).await.unwrap_err();
    assert_eq!(reason(&err), "RIGHTS_REQUEST_NOT_PENDING");
}

#[tokio::test]
async fn a_restriction_is_recorded_for_every_service_and_refusal_and_extension_follow_the_rules() {
    let suite = suite_with(serde_json::json!({})).await;
    let (me, _) = learner(&suite, 74).await;
    let request = submit(&suite, &me, RightsRequestKind::Restriction).await;
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
    let done = finished(&suite, &request.request_id).await;
    assert_eq!(done.state, RightsRequestState::Completed as i32, "{done:?}");
    assert!(
        done.tasks
            .iter()
            .all(|t| t.outcome.as_ref().unwrap().restricted)
    );

    // Extension: once, with a reason, two months more.
    let before = get(&suite, &request.request_id).await;
    let err = suite
        .rights(dpo(&suite))
        .extend_rights_request_deadline(ExtendRightsRequestDeadlineRequest {
            request_id: request.request_id.clone(),
            reason: "complex".into(),
        })
        .await
        .unwrap_err();
    // A completed request owes nothing more.
    assert_eq!(reason(&err), "RIGHTS_REQUEST_NOT_PENDING");
    assert_eq!(before.extension_reason, "");

    let open = submit(&suite, &me, RightsRequestKind::Access).await;
    let extended = suite
        .rights(dpo(&suite))
        .extend_rights_request_deadline(ExtendRightsRequestDeadlineRequest {
            request_id: open.request_id.clone(),
            reason: "many requests at once".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let months = extended.deadline.unwrap().seconds - open.deadline.unwrap().seconds;
    assert!((59 * 86_400..=62 * 86_400).contains(&months), "{months}");
    assert_eq!(extended.extension_reason, "many requests at once");
    let err = suite
        .rights(dpo(&suite))
        .extend_rights_request_deadline(ExtendRightsRequestDeadlineRequest {
            request_id: open.request_id.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RIGHTS_REQUEST_ALREADY_EXTENDED");

    // Refusal: before the work starts, with a reason; final.
    let refused = suite
        .rights(dpo(&suite))
        .refuse_rights_request(RefuseRightsRequestRequest {
            request_id: open.request_id.clone(),
            reason: "manifestly excessive: the same request weekly".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(refused.state, RightsRequestState::Refused as i32);
    let err = verify(&suite, dpo(&suite), &open.request_id)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RIGHTS_REQUEST_NOT_PENDING");

    // Filters: by state and by subject.
    let listed = suite
        .rights(dpo(&suite))
        .list_rights_requests(ListRightsRequestsRequest {
            state: RightsRequestState::Refused as i32,
            subject: Some(SubjectRef {
                subject_id: me.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed
        .requests
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, [open.request_id.as_str()]);
    // Nothing is overdue or stuck here.
    let listed = suite
        .rights(dpo(&suite))
        .list_rights_requests(ListRightsRequestsRequest {
            overdue_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.requests.is_empty());
}

#[tokio::test]
async fn bad_requests_name_their_fields_and_a_retried_submission_is_one_request() {
    let suite = suite_with(serde_json::json!({})).await;
    let err = suite
        .rights(dpo(&suite))
        .submit_rights_request(SubmitRightsRequestRequest {
            subject: Some(SubjectRef {
                subject_id: "not-a-uuid".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(fields(&err), ["subject.subject_id"]);
    let err = suite
        .rights(dpo(&suite))
        .submit_rights_request(SubmitRightsRequestRequest {
            subject: Some(SubjectRef {
                subject_id: uuid::Uuid::new_v4().to_string(),
            }),
            received_at: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 86_400,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(fields(&err), ["kind", "requester", "received_at"]);
    let err = suite
        .rights(dpo(&suite))
        .verify_requester_identity(VerifyRequesterIdentityRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            method: VerificationMethod::Unspecified as i32,
            evidence_reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["evidence_reference", "method"]);
    let err = verify(&suite, dpo(&suite), &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let me = uuid::Uuid::new_v4().to_string();
    let submit = |key: &str, kind: RightsRequestKind| SubmitRightsRequestRequest {
        subject: Some(SubjectRef {
            subject_id: me.clone(),
        }),
        kind: kind as i32,
        requester: Requester::Guardian as i32,
        idempotency_key: Some(IdempotencyKey { key: key.into() }),
        ..Default::default()
    };
    let first = suite
        .rights(dpo(&suite))
        .submit_rights_request(submit("rights-key-0001", RightsRequestKind::Access))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let again = suite
        .rights(dpo(&suite))
        .submit_rights_request(submit("rights-key-0001", RightsRequestKind::Access))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(first.request_id, again.request_id);
    let err = suite
        .rights(dpo(&suite))
        .submit_rights_request(submit("rights-key-0001", RightsRequestKind::Erasure))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    // A learner or partner cannot record requests through this API.
    let learner =
        tutela_testkit::Credentials::new(&suite.token("acme", &me, &["learner"]), "subject_rights");
    let err = suite
        .rights(learner)
        .submit_rights_request(submit("rights-key-0002", RightsRequestKind::Access))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_rectification_is_applied_where_the_field_is_held_and_reported_where_it_is_not() {
    use tutela_proto::enrolment::{GetLearnerRequest, LearnerProfile};
    use tutela_proto::rights::Correction;
    let suite = suite_with(serde_json::json!({})).await;
    let (me, _) = learner(&suite, 75).await;
    let correction = |field: &str| Correction {
        profile: Some(LearnerProfile {
            family_name: "Corrected-Name".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![field.into()],
        }),
    };
    let submit =
        |kind: RightsRequestKind, correction: Option<Correction>| SubmitRightsRequestRequest {
            subject: Some(SubjectRef {
                subject_id: me.clone(),
            }),
            kind: kind as i32,
            requester: Requester::Subject as i32,
            correction,
            ..Default::default()
        };

    // What the contract refuses: a correction of a field the profile does not have, a
    // correction on another kind, and a rectification without one.
    let err = suite
        .rights(dpo(&suite))
        .submit_rights_request(submit(
            RightsRequestKind::Rectification,
            Some(correction("shoe_size")),
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["correction.update_mask.paths[0]"], "{err:?}");
    let err = suite
        .rights(dpo(&suite))
        .submit_rights_request(submit(
            RightsRequestKind::Access,
            Some(correction("family_name")),
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["correction"]);
    let err = suite
        .rights(dpo(&suite))
        .submit_rights_request(submit(RightsRequestKind::Rectification, None))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["correction"]);

    let request = suite
        .rights(dpo(&suite))
        .submit_rights_request(submit(
            RightsRequestKind::Rectification,
            Some(correction("family_name")),
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    // The fields are named, never their values.
    assert_eq!(request.corrected_fields, ["family_name"]);
    assert!(!format!("{request:?}").contains("Corrected-Name"));
    let verified = verify(&suite, dpo(&suite), &request.request_id)
        .await
        .unwrap();
    assert_eq!(verified.state, RightsRequestState::IdentityVerified as i32);
    suite
        .rights(dpo(&suite))
        .approve_rights_request(ApproveRightsRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await
        .unwrap();
    let done = finished(&suite, &request.request_id).await;
    assert_eq!(done.state, RightsRequestState::Completed as i32, "{done:?}");
    let outcome = |service: &str| {
        done.tasks
            .iter()
            .find(|t| t.service == service)
            .unwrap()
            .outcome
            .clone()
            .unwrap()
            .rectification
            .unwrap()
    };
    assert_eq!(outcome("enrolment").rectified, ["family_name"]);
    assert_eq!(outcome("survey").not_held, ["family_name"]);
    assert!(outcome("survey").rectified.is_empty());

    let registrar = tutela_testkit::Credentials::new(
        &suite.token("acme", "registrar-1", &["registrar"]),
        "course_administration",
    );
    let learner = suite
        .learners(registrar)
        .get_learner(GetLearnerRequest {
            learner: Some(SubjectRef {
                subject_id: me.clone(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap();
    let profile = learner.profile.unwrap();
    assert_eq!(profile.family_name, "Corrected-Name");
    assert_eq!(
        profile.given_name, "Given75",
        "only the field named changes"
    );

    // The correction is in the change feed the sharing service follows to tell recipients
    // (Art. 19): the field's name, never its value.
    let platform = tutela_testkit::Credentials::new(
        &suite.token("acme", "sharing", &["service"]),
        "legal_obligation",
    );
    let changes = suite
        .learners(platform)
        .list_learner_changes(tutela_proto::enrolment::ListLearnerChangesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert!(
        changes
            .iter()
            .any(|c| c.learner_id == me && c.fields == ["family_name"]),
        "{changes:?}"
    );
}
