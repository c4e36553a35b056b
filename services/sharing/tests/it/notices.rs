//! Notices to recipients (Art. 19): a rectification of fields a partner received, and an
//! erasure, reach the partner as notices it fetches and acknowledges, made by following
//! enrolment's change feed over gRPC; a change to fields it never received does not; the access
//! export names the actual recipients.

use prost_types::FieldMask;
use tonic::Code;
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::{LearnerProfile, UpdateLearnerRequest};
use tutela_proto::privacy::{
    EraseSubjectRequest, ExportSubjectRequest, RecordIdentityVerificationRequest,
    VerificationMethod,
};
use tutela_proto::sharing::webhook_service_client::WebhookServiceClient;
use tutela_proto::sharing::{
    AcknowledgeNoticesRequest, ListNoticesRequest, ListWebhookMessagesRequest, Notice, NoticeKind,
    NoticeState, PullNoticesRequest, SetWebhookEndpointRequest,
};
use tutela_testkit::{Credentials, TestSuite};

use crate::disclosures::{as_partner, disclose, learners, partner_in_force};
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
    let dpo_rights = || Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    suite
        .subject_data(dpo_rights())
        .record_identity_verification(RecordIdentityVerificationRequest {
            subject: subject(&ids[0]),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "front desk note 2026-12-02/1".into(),
        })
        .await
        .unwrap();
    let export = suite
        .subject_data(dpo_rights())
        .export_subject(ExportSubjectRequest {
            subject: subject(&ids[0]),
            services: vec!["sharing".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .exports;
    let doc: serde_json::Value = serde_json::from_slice(&export[0].document).unwrap();
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
