//! Notices to recipients (Art. 19): a rectification of fields a partner received, and an
//! erasure, reach the partner as notices it fetches and acknowledges, made by following
//! enrolment's change feed over gRPC; a change to fields it never received does not; the access
//! export names the actual recipients.

use prost_types::FieldMask;
use tonic::Code;
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::{LearnerProfile, UpdateLearnerRequest};
use tutela_proto::privacy::EraseSubjectRequest;
use tutela_proto::sharing::webhook_service_client::WebhookServiceClient;
use tutela_proto::sharing::{
    AcknowledgeNoticesRequest, ListNoticesRequest, ListWebhookMessagesRequest, Notice, NoticeKind,
    NoticeState, PullNoticesRequest, RecordNoticeNotPossibleRequest, SetWebhookEndpointRequest,
};
use tutela_testkit::{Credentials, TestSuite};

use crate::disclosures::{as_partner, disclose, learners, partner_in_force};
use crate::webhooks::Receiver;
use crate::*;

fn subject(id: &str) -> Option<SubjectRef> {
    Some(SubjectRef {
        subject_id: id.into(),
    })
}

/// The dpo's view of the notices about `learner`, once the follower has made `n` of them.
async fn notices_of(suite: &TestSuite, learner: &str, n: usize) -> Vec<Notice> {
    let dpo = || Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "legal_obligation");
    for _ in 0..200 {
        let notices = suite
            .notices(dpo())
            .list_notices(ListNoticesRequest {
                subject: subject(learner),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .notices;
        if notices.len() >= n {
            return notices;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the follower made no notice about the learner within 10 s");
}

/// The dpo erases `learner` through the rights endpoint (which tells the sharing service at once).
async fn erase(suite: &TestSuite, learner: &str) {
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    suite
        .subject_data(dpo)
        .erase_subject(EraseSubjectRequest {
            subject: subject(learner),
            reason: "learner's erasure request".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn recipients_are_told_of_rectified_fields_they_received_and_of_erasure() {
    let suite = TestSuite::start_with(|c| {
        c.sections.insert(
            "sharing".into(),
            serde_json::json!({ "notice_interval_secs": 1 }),
        );
    })
    .await
    .unwrap();
    let ids = learners(&suite, 3).await;
    let (partner_id, _) = partner_in_force(&suite).await;
    let delivery = suite
        .disclosures(staff(&suite, "acme", "exam_officer", "exam_booking"))
        .disclose(disclose(&partner_id, &ids[..2]))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    let records = crate::disclosures::pull(
        &suite,
        as_partner(&suite, &partner_id, "exam_booking"),
        &delivery.delivery_id,
    )
    .await
    .unwrap();

    let registrar = || staff(&suite, "acme", "registrar", "course_administration");
    let rectify = |id: &str, fields: &[&str]| UpdateLearnerRequest {
        learner: subject(id),
        profile: Some(LearnerProfile {
            email: "moved@example.org".into(),
            phone: "+44 20 7946 0999".into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: fields.iter().map(|f| (*f).to_owned()).collect(),
        }),
        ..Default::default()
    };
    personal(&["moved@example.org", "+44 20 7946 0999"]);
    // The email went to the partner; the phone did not; learner 2 was never disclosed.
    let mut learners_api = suite.learners(registrar());
    learners_api
        .update_learner(rectify(&ids[1], &["phone"]))
        .await
        .unwrap();
    learners_api
        .update_learner(rectify(&ids[2], &["email"]))
        .await
        .unwrap();
    learners_api
        .update_learner(rectify(&ids[0], &["email", "phone"]))
        .await
        .unwrap();

    let notices = notices_of(&suite, &ids[0], 1).await;
    assert_eq!(notices.len(), 1);
    let n = &notices[0];
    assert_eq!(n.partner_id, partner_id);
    assert_eq!(n.kind, NoticeKind::Rectified as i32);
    assert_eq!(
        n.fields,
        ["profile.email"],
        "only what the partner received"
    );
    assert_eq!(n.state, NoticeState::Pending as i32);
    assert_eq!(
        n.pseudonym, records[0].pseudonym,
        "as the partner knows them"
    );

    // The partner fetches its notices (they become sent) without learning who the learner is.
    let partner = || as_partner(&suite, &partner_id, "legal_obligation");
    let pulled = suite
        .notices(partner())
        .pull_notices(PullNoticesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .notices;
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].notice_id, n.notice_id);
    assert!(pulled[0].subject.is_none());
    assert_eq!(pulled[0].state, NoticeState::Sent as i32);
    // Another partner cannot acknowledge it; this one can, once.
    let (other, _) = partner_in_force(&suite).await;
    let err = suite
        .notices(as_partner(&suite, &other, "legal_obligation"))
        .acknowledge_notices(AcknowledgeNoticesRequest {
            notice_ids: vec![n.notice_id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for expected in [1, 0] {
        let done = suite
            .notices(partner())
            .acknowledge_notices(AcknowledgeNoticesRequest {
                notice_ids: vec![n.notice_id.clone()],
            })
            .await
            .unwrap()
            .into_inner()
            .acknowledged;
        assert_eq!(done, expected);
    }
    assert!(
        suite
            .notices(partner())
            .pull_notices(PullNoticesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .notices
            .is_empty()
    );

    // The access export names the actual recipient, the fields and the notice.
    let doc = sharing_export(&suite, &ids[0]).await;
    assert_eq!(doc["recipients"][0]["recipient"], "Example Exam Board Ltd");
    assert_eq!(doc["recipients"][0]["purpose"], "exam_booking");
    assert_eq!(doc["recipients"][0]["fields"][1], "profile.given_name");
    assert_eq!(doc["notices_to_recipients"][0]["state"], "acknowledged");

    // Erasure: the records not yet pulled are deleted, and the recipient is told once, though
    // the sharing service hears of it twice (the rights endpoint and the change feed).
    erase(&suite, &ids[1]).await;
    let notices = notices_of(&suite, &ids[1], 1).await;
    // Give the follower a round to read the feed's erasure too.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let again = notices_of(&suite, &ids[1], 1).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(notices[0].kind, NoticeKind::Erased as i32);
    assert!(notices[0].fields.is_empty());
    let left = crate::disclosures::pull(
        &suite,
        as_partner(&suite, &partner_id, "exam_booking"),
        &delivery.delivery_id,
    )
    .await
    .unwrap();
    assert_eq!(left.len(), 1, "the erased learner's record is gone");
    assert_eq!(left[0].pseudonym, records[0].pseudonym);
}

#[tokio::test]
async fn a_partner_is_asked_once_to_delete_a_delivery_when_its_retention_ends() {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use tutela_sharing::entity::delivery;

    let suite = TestSuite::start_with(|c| {
        c.sections.insert(
            "sharing".into(),
            serde_json::json!({ "notice_interval_secs": 1 }),
        );
    })
    .await
    .unwrap();
    let ids = learners(&suite, 2).await;
    let (partner_id, _) = partner_in_force(&suite).await;
    let disclose_now = || async {
        suite
            .disclosures(staff(&suite, "acme", "exam_officer", "exam_booking"))
            .disclose(disclose(&partner_id, &ids))
            .await
            .unwrap()
            .into_inner()
            .delivery
            .unwrap()
            .delivery_id
    };
    let old = disclose_now().await;
    let recent = disclose_now().await;
    // The agreement's retention is a year: make the first delivery older than that.
    let db = suite.database().connect().await.unwrap();
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::CreatedAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::days(400)),
        )
        .filter(delivery::Column::DeliveryId.eq(old.as_str()))
        .exec(&db)
        .await
        .unwrap();

    let dpo = || Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "legal_obligation");
    let mut requests = Vec::new();
    for _ in 0..200 {
        requests = suite
            .notices(dpo())
            .list_notices(ListNoticesRequest {
                partner_id: partner_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .notices;
        if !requests.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Another round of the job asks nothing more.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let again = suite
        .notices(dpo())
        .list_notices(ListNoticesRequest {
            partner_id: partner_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .notices;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(requests[0].kind, NoticeKind::DeletionRequested as i32);
    assert_eq!(requests[0].delivery_id, old);
    assert_ne!(requests[0].delivery_id, recent);
    assert!(requests[0].pseudonym.is_empty());
    // The partner sees it among its notices.
    let pulled = suite
        .notices(as_partner(&suite, &partner_id, "legal_obligation"))
        .pull_notices(PullNoticesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .notices;
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].delivery_id, old);
}

#[tokio::test]
async fn a_partner_with_a_webhook_endpoint_is_told_of_each_new_notice_once() {
    let suite = TestSuite::start_with(|c| {
        c.sections.insert(
            "sharing".into(),
            serde_json::json!({
                "notice_interval_secs": 1,
                // This test reads the outbox; sending to the closed port only fails attempts.
                "allow_http_webhook_targets": true,
                "allow_private_webhook_targets": true,
            }),
        );
    })
    .await
    .unwrap();
    let ids = learners(&suite, 2).await;
    let (partner_id, _) = partner_in_force(&suite).await;
    let mut hooks = WebhookServiceClient::with_interceptor(suite.channel(), dpo(&suite));
    hooks
        .set_webhook_endpoint(SetWebhookEndpointRequest {
            partner_id: partner_id.clone(),
            url: "http://127.0.0.1:9/hooks".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    suite
        .disclosures(staff(&suite, "acme", "exam_officer", "exam_booking"))
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap();
    let events = |hooks: WebhookServiceClient<_>| {
        let partner_id = partner_id.clone();
        async move {
            let mut hooks = hooks;
            let mut events: Vec<String> = hooks
                .list_webhook_messages(ListWebhookMessagesRequest {
                    partner_id,
                    page: None,
                })
                .await
                .unwrap()
                .into_inner()
                .messages
                .into_iter()
                .map(|m| m.event_type)
                .collect();
            events.sort();
            events
        }
    };
    assert_eq!(events(hooks.clone()).await, ["delivery.ready"]);

    // The erasure is heard twice (the rights endpoint, then the change feed): one notice, one
    // announcement of it.
    erase(&suite, &ids[0]).await;
    notices_of(&suite, &ids[0], 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        events(hooks.clone()).await,
        ["delivery.ready", "notice.ready"]
    );
}

/// The notices of `state` the dpo sees, oldest first.
async fn notices_in(suite: &TestSuite, state: NoticeState) -> Vec<Notice> {
    suite
        .notices(dpo(suite))
        .list_notices(ListNoticesRequest {
            state: state as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .notices
}

/// The sharing service's part of `learner`'s access export, after the dpo verifies the request.
pub async fn sharing_export(suite: &TestSuite, learner: &str) -> serde_json::Value {
    suite
        .service_export("acme", learner, "sharing")
        .await
        .unwrap()
}

fn not_possible(notice_id: &str, reason: &str) -> RecordNoticeNotPossibleRequest {
    RecordNoticeNotPossibleRequest {
        notice_id: notice_id.into(),
        reason: reason.into(),
    }
}

/// A notice whose `notice.ready` event the partner's endpoint never took (every attempt of the
/// schedule failed, or it answered 410 Gone) is failed, with the reason, and still reaches the
/// partner when it pulls; the dpo records a notice it cannot give as not possible, once, and
/// never one the partner acknowledged.
#[tokio::test]
async fn a_notice_the_webhook_never_delivered_fails_and_the_dpo_may_record_it_not_possible() {
    let suite = crate::webhooks::suite(true).await;
    let ids = learners(&suite, 3).await;
    let (partner_id, _) = partner_in_force(&suite).await;
    let failing = Receiver::start(&[503; 100]).await;
    let mut hooks = WebhookServiceClient::with_interceptor(suite.channel(), dpo(&suite));
    let endpoint = |url: String| SetWebhookEndpointRequest {
        partner_id: partner_id.clone(),
        url,
        idempotency_key: None,
    };
    hooks
        .set_webhook_endpoint(endpoint(failing.url()))
        .await
        .unwrap();
    suite
        .disclosures(staff(&suite, "acme", "exam_officer", "exam_booking"))
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap();
    erase(&suite, &ids[0]).await;
    erase(&suite, &ids[1]).await;
    assert_eq!(notices_in(&suite, NoticeState::Pending).await.len(), 2);

    // Three messages (the delivery's and two notices'), eight attempts each, one attempt per run
    // for an endpoint that fails; each run half a day on, past the schedule's longest wait.
    let (worker, _db) = crate::webhooks::worker(&suite, crate::webhooks::DEV).await;
    let mut now = chrono::Utc::now();
    for _ in 0..30 {
        worker.deliver_due(now).await.unwrap();
        now += chrono::Duration::hours(12);
    }
    assert_eq!(failing.received().len(), 24);
    let failed = notices_in(&suite, NoticeState::Failed).await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    for n in &failed {
        assert!(
            n.reason.contains("every attempt") && n.reason.contains("HTTP status 503"),
            "{n:?}"
        );
    }
    assert!(notices_in(&suite, NoticeState::Pending).await.is_empty());

    // The dpo decides the first cannot be given; a second decision keeps the first reason.
    let mut notices = suite.notices(dpo(&suite));
    let recorded = notices
        .record_notice_not_possible(not_possible(
            &failed[0].notice_id,
            "the partner's portal was closed on 2026-11-30",
        ))
        .await
        .unwrap()
        .into_inner()
        .notice
        .unwrap();
    assert_eq!(recorded.state, NoticeState::NotPossible as i32);
    assert_eq!(
        recorded.reason,
        "the partner's portal was closed on 2026-11-30"
    );
    assert!(recorded.subject.is_some(), "the dpo sees the learner");
    let again = notices
        .record_notice_not_possible(not_possible(&failed[0].notice_id, "another reason"))
        .await
        .unwrap()
        .into_inner()
        .notice
        .unwrap();
    assert_eq!(again.reason, recorded.reason);
    // The learner's export says which recipient could not be told, and why.
    let doc = sharing_export(&suite, &ids[0]).await;
    let told = &doc["notices_to_recipients"];
    assert_eq!(told.as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(
        (told[0]["state"].as_str(), told[0]["reason"].as_str()),
        (Some("not_possible"), Some(recorded.reason.as_str()))
    );

    // The partner still gets the other failed notice (now sent, its reason gone), not the one
    // that is not possible.
    let partner = || as_partner(&suite, &partner_id, "legal_obligation");
    let pulled = suite
        .notices(partner())
        .pull_notices(PullNoticesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .notices;
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert_eq!(pulled[0].notice_id, failed[1].notice_id);
    assert_eq!(pulled[0].state, NoticeState::Sent as i32);
    assert!(pulled[0].reason.is_empty());
    suite
        .notices(partner())
        .acknowledge_notices(AcknowledgeNoticesRequest {
            notice_ids: vec![failed[1].notice_id.clone()],
        })
        .await
        .unwrap();
    let err = notices
        .record_notice_not_possible(not_possible(&failed[1].notice_id, "too late"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "NOTICE_ACKNOWLEDGED")
    );

    // Bad requests name their fields; an unknown notice is not found; a partner may not decide.
    for (request, field) in [
        (not_possible("not-a-uuid", "closed"), "notice_id"),
        (not_possible(&failed[0].notice_id, "  "), "reason"),
    ] {
        let err = notices
            .record_notice_not_possible(request)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), fields(&err)),
            (Code::InvalidArgument, vec![field.to_owned()])
        );
    }
    let err = notices
        .record_notice_not_possible(not_possible(
            "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77",
            "unknown",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = suite
        .notices(partner())
        .record_notice_not_possible(not_possible(&failed[0].notice_id, "mine"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // An endpoint that answers 410 Gone is disabled, and the notice waiting on it fails.
    let gone = Receiver::start(&[410]).await;
    hooks
        .set_webhook_endpoint(endpoint(gone.url()))
        .await
        .unwrap();
    erase(&suite, &ids[2]).await;
    worker.deliver_due(now).await.unwrap();
    assert_eq!(gone.received().len(), 1);
    let failed = notices_in(&suite, NoticeState::Failed).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].subject, subject(&ids[2]));
    assert!(failed[0].reason.contains("410"), "{:?}", failed[0]);
}
