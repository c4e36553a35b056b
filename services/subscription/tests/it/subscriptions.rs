//! Subscription management end to end over real gRPC (and real HTTP for RFC 8058), on SQLite
//! and, with `TEST_DATABASE_URL`, PostgreSQL.

use tonic::Code;
use tutela_proto::common::Purpose;
use tutela_proto::consent::{
    ConsentActor, GetConsentStateRequest, RecordObjectionRequest, RecordRestrictionRequest,
};
use tutela_proto::privacy::{
    EraseSubjectRequest, ExportSubjectRequest, RecordIdentityVerificationRequest,
    VerificationMethod,
};
use tutela_proto::subscription::{
    Channel, ConfirmSubscriptionRequest, DeliveryEvent, EventKind, ListSubscriptionsRequest,
    OptInEvidence, OptOutKind, OptOutRequest, PutTopicRequest, Recipient, RecordEventsRequest,
    ResolveAudienceRequest, SubscribeRequest, SubscribeResponse, SubscriptionState, Topic,
    UnsubscribeRequest,
};
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

const TENANT: &str = "acme";

fn opt_in(source: &str) -> Option<OptInEvidence> {
    Some(OptInEvidence {
        source: source.into(),
        wording_version: "news-2026-09".into(),
        wording_sha256: "b".repeat(64),
    })
}

struct Clients {
    tenant: String,
    staff: Credentials,
    marketing: Credentials,
}

fn clients(suite: &TestSuite, tenant: &str) -> Clients {
    Clients {
        tenant: tenant.to_owned(),
        staff: Credentials::new(
            &suite.token(tenant, "platform", &["service"]),
            "consent_management",
        ),
        marketing: Credentials::new(&suite.token(tenant, "mkt", &["marketing"]), "marketing"),
    }
}

async fn topic(suite: &TestSuite, c: &Clients, id: &str) {
    let editor = Credentials::new(
        &suite.token(&c.tenant, "editor", &["marketing"]),
        "consent_management",
    );
    suite
        .subscriptions(editor)
        .put_topic(PutTopicRequest {
            topic: Some(Topic {
                topic_id: id.into(),
                description: format!("news about {id}"),
            }),
        })
        .await
        .unwrap_or_else(|s| panic!("put topic: {s:?}"));
}

fn sign_up(channel: Channel, topic: &str, address: &str) -> SubscribeRequest {
    personal(&[address]);
    SubscribeRequest {
        contact: None,
        channel: channel as i32,
        topic: topic.into(),
        address: address.into(),
        date_of_birth: String::new(),
        country: String::new(),
        evidence: opt_in("signup-form-3"),
    }
}

async fn subscribe(suite: &TestSuite, c: &Clients, r: SubscribeRequest) -> SubscribeResponse {
    suite
        .subscriptions(c.staff.clone())
        .subscribe(r)
        .await
        .unwrap_or_else(|s| panic!("subscribe: {s:?}"))
        .into_inner()
}

async fn confirm_token(suite: &TestSuite, token: &str) -> Result<SubscriptionState, tonic::Status> {
    suite
        .subscriptions(Credentials::none())
        .confirm_subscription(ConfirmSubscriptionRequest {
            token: token.into(),
            evidence: opt_in("confirm-page"),
            ..Default::default()
        })
        .await
        .map(|r| SubscriptionState::try_from(r.into_inner().state).unwrap())
}

async fn audience(suite: &TestSuite, c: &Clients, topic: &str, channel: Channel) -> Vec<Recipient> {
    let mut stream = suite
        .subscriptions(c.marketing.clone())
        .resolve_audience(ResolveAudienceRequest {
            topic: topic.into(),
            channel: channel as i32,
            batch_size: 2,
        })
        .await
        .unwrap_or_else(|s| panic!("audience: {s:?}"))
        .into_inner();
    let mut out = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        assert!(batch.recipients.len() <= 2, "batches respect batch_size");
        out.extend(batch.recipients);
    }
    out
}

async fn confirmed(
    suite: &TestSuite,
    c: &Clients,
    channel: Channel,
    topic: &str,
    address: &str,
) -> SubscribeResponse {
    let r = subscribe(suite, c, sign_up(channel, topic, address)).await;
    assert_eq!(
        confirm_token(suite, &r.confirmation_token).await.unwrap(),
        SubscriptionState::Confirmed
    );
    r
}

fn contact_of(r: &SubscribeResponse) -> String {
    r.subscription
        .as_ref()
        .unwrap()
        .contact
        .as_ref()
        .unwrap()
        .subject_id
        .clone()
}

#[tokio::test]
async fn double_opt_in_by_email_puts_only_confirmed_addresses_in_the_audience() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    let pending = subscribe(
        &suite,
        &c,
        sign_up(Channel::Email, "courses", "Ann@Example.org"),
    )
    .await;
    let sub = pending.subscription.clone().unwrap();
    assert_eq!(sub.state, SubscriptionState::Pending as i32);
    assert!(!pending.confirmation_token.is_empty() && pending.confirmation_code.is_empty());
    // Opt-in only: nothing pending is ever sent to.
    assert!(
        audience(&suite, &c, "courses", Channel::Email)
            .await
            .is_empty()
    );

    // The person confirms from the email, with no credential but the token.
    assert_eq!(
        confirm_token(&suite, &pending.confirmation_token)
            .await
            .unwrap(),
        SubscriptionState::Confirmed
    );
    // Idempotent.
    assert_eq!(
        confirm_token(&suite, &pending.confirmation_token)
            .await
            .unwrap(),
        SubscriptionState::Confirmed
    );
    // A forged token is refused.
    let mut forged = pending.confirmation_token.clone();
    forged.replace_range(0..1, if forged.starts_with('A') { "B" } else { "A" });
    let err = confirm_token(&suite, &forged).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "TOKEN_INVALID");

    let recipients = audience(&suite, &c, "courses", Channel::Email).await;
    assert_eq!(recipients.len(), 1);
    let r = &recipients[0];
    assert_eq!(r.address, "Ann@Example.org");
    assert_eq!(r.subscription_id, sub.subscription_id);
    assert_eq!(r.list_unsubscribe_post, "List-Unsubscribe=One-Click");
    assert_eq!(
        r.list_unsubscribe,
        format!(
            "<http://127.0.0.1:50051/unsubscribe/{}>",
            r.unsubscribe_token
        )
    );
    // Another topic or channel has its own audience.
    assert!(
        audience(&suite, &c, "courses", Channel::Sms)
            .await
            .is_empty()
    );

    // Signing up again answers with the confirmed subscription and no new token.
    let again = subscribe(
        &suite,
        &c,
        sign_up(Channel::Email, "courses", "ann@example.org "),
    )
    .await;
    assert_eq!(
        again.subscription.unwrap().state,
        SubscriptionState::Confirmed as i32
    );
    assert!(again.confirmation_token.is_empty());

    // The confirmation is a marketing grant in the consent ledger.
    let state = suite
        .consent_ledger(c.staff.clone())
        .get_consent_state(GetConsentStateRequest {
            subject: subject(&contact_of(&pending)),
            purpose: Purpose::Marketing as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        state
            .states
            .iter()
            .any(|s| s.purpose == Purpose::Marketing as i32 && s.granted),
        "{state:?}"
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn sms_codes_confirm_and_five_wrong_codes_void_the_code() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "recruitment").await;
    let client = suite.subscriptions(Credentials::none());
    let confirm = |id: String, code: String| {
        let mut client = client.clone();
        async move {
            client
                .confirm_subscription(ConfirmSubscriptionRequest {
                    subscription_id: id,
                    code,
                    evidence: opt_in("sms-page"),
                    ..Default::default()
                })
                .await
        }
    };
    let a = subscribe(
        &suite,
        &c,
        sign_up(Channel::Sms, "recruitment", "+44 7700 900123"),
    )
    .await;
    assert_eq!(a.confirmation_code.len(), 6);
    assert!(a.confirmation_token.is_empty());
    let id = a.subscription.unwrap().subscription_id;
    let wrong = if a.confirmation_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let err = confirm(id.clone(), wrong.into()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    confirm(id.clone(), a.confirmation_code.clone())
        .await
        .unwrap();
    let recipients = audience(&suite, &c, "recruitment", Channel::Sms).await;
    assert_eq!(recipients.len(), 1);
    assert_eq!(recipients[0].address, "+44 7700 900123");
    assert!(
        recipients[0].list_unsubscribe.is_empty(),
        "headers are for email only"
    );

    let b = subscribe(
        &suite,
        &c,
        sign_up(Channel::Phone, "recruitment", "020 7946 0000"),
    )
    .await;
    let id = b.subscription.unwrap().subscription_id;
    for _ in 0..5 {
        let wrong = if b.confirmation_code == "000000" {
            "111111"
        } else {
            "000000"
        };
        confirm(id.clone(), wrong.into()).await.unwrap_err();
    }
    let err = confirm(id, b.confirmation_code).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "five wrong codes void the right one"
    );
    assert!(
        audience(&suite, &c, "recruitment", Channel::Phone)
            .await
            .is_empty()
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn one_click_unsubscribe_over_grpc_and_rfc_8058_http() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "products").await;
    confirmed(&suite, &c, Channel::Email, "products", "bo@example.org").await;
    confirmed(&suite, &c, Channel::Email, "products", "cy@example.org").await;
    let recipients = audience(&suite, &c, "products", Channel::Email).await;
    assert_eq!(recipients.len(), 2);

    // gRPC, with only the token.
    let mut client = suite.subscriptions(Credentials::none());
    let first = client
        .unsubscribe(UnsubscribeRequest {
            token: recipients[0].unsubscribe_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.changed);
    assert_eq!(first.state, SubscriptionState::Unsubscribed as i32);
    let again = client
        .unsubscribe(UnsubscribeRequest {
            token: recipients[0].unsubscribe_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed, "idempotent");
    let err = client
        .unsubscribe(UnsubscribeRequest {
            token: "bm90IGEgdG9rZW4".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // RFC 8058 from a real HTTP client, at the List-Unsubscribe URL's path on this port.
    let path = recipients[1]
        .list_unsubscribe
        .trim_start_matches("<http://127.0.0.1:50051")
        .trim_end_matches('>')
        .to_owned();
    let url = format!("http://{}{path}", suite.addr());
    // Async: the server runs on this test's runtime thread.
    async fn curl(args: &[&str]) -> String {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .args(args)
            .output()
            .await
            .expect("curl runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
    // A GET (a mail scanner prefetching the link) shows a button and unsubscribes no one.
    let page = curl(&[&url]).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<form method=\"post\""), "{page}");
    assert_eq!(
        audience(&suite, &c, "products", Channel::Email).await.len(),
        1
    );
    let response = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data",
        "List-Unsubscribe=One-Click",
        &url,
    ])
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        !response.to_ascii_lowercase().contains("set-cookie"),
        "{response}"
    );
    assert!(
        audience(&suite, &c, "products", Channel::Email)
            .await
            .is_empty()
    );
    // Again: still 200, nothing changes.
    let response = curl(&["-X", "POST", "--data", "List-Unsubscribe=One-Click", &url]).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // A forged token is a 404, not an error page that reveals anything.
    let forged = curl(&[
        "-X",
        "POST",
        "--data",
        "List-Unsubscribe=One-Click",
        &format!("http://{}/unsubscribe/AAAA", suite.addr()),
    ])
    .await;
    assert!(forged.starts_with("HTTP/1.1 404"), "{forged}");
    // gRPC still works on the same port, over HTTP/2.
    assert!(
        suite
            .subscriptions(c.staff.clone())
            .list_topics(tutela_proto::subscription::ListTopicsRequest {})
            .await
            .is_ok()
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn a_minor_is_confirmed_only_with_a_guardians_consent() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "future_courses").await;
    let twelve = (chrono::Utc::now().date_naive() - chrono::Duration::days(365 * 12))
        .format("%Y-%m-%d")
        .to_string();
    personal(&[&twelve]);
    let mut r = sign_up(Channel::Email, "future_courses", "kid@example.org");
    r.date_of_birth = twelve;
    r.country = "GB".into();
    let pending = subscribe(&suite, &c, r).await;
    let err = confirm_token(&suite, &pending.confirmation_token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "GUARDIAN_CONSENT_REQUIRED");
    assert!(
        audience(&suite, &c, "future_courses", Channel::Email)
            .await
            .is_empty()
    );

    let contact = contact_of(&pending);
    let mut grant = grant(&contact, Purpose::Marketing, "");
    grant.evidence = Some(evidence(ConsentActor::Guardian));
    suite
        .consent_ledger(c.staff.clone())
        .record_consent(grant)
        .await
        .unwrap();
    assert_eq!(
        confirm_token(&suite, &pending.confirmation_token)
            .await
            .unwrap(),
        SubscriptionState::Confirmed
    );
    assert_eq!(
        audience(&suite, &c, "future_courses", Channel::Email)
            .await
            .len(),
        1
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn the_three_opt_outs() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    topic(&suite, &c, "products").await;
    let a = confirmed(&suite, &c, Channel::Email, "courses", "dee@example.org").await;
    let contact = contact_of(&a);
    let mut r = sign_up(Channel::Email, "products", "dee@example.org");
    r.contact = subject(&contact);
    let b = subscribe(&suite, &c, r).await;
    confirm_token(&suite, &b.confirmation_token).await.unwrap();
    let mut client = suite.subscriptions(c.staff.clone());
    let opt_out = |kind: OptOutKind| OptOutRequest {
        contact: subject(&contact),
        kind: kind as i32,
        evidence: Some(evidence(ConsentActor::Subject)),
        ..Default::default()
    };

    // 1. From communications, one topic.
    let mut one = opt_out(OptOutKind::Communications);
    one.topic = "products".into();
    let done = client.opt_out(one).await.unwrap().into_inner();
    assert_eq!(done.subscriptions_unsubscribed, 1);
    assert!(done.withdrawal.is_none());
    assert!(
        audience(&suite, &c, "products", Channel::Email)
            .await
            .is_empty()
    );
    assert_eq!(
        audience(&suite, &c, "courses", Channel::Email).await.len(),
        1
    );

    // 2. From disclosure to third parties: withdrawn in the ledger.
    let done = client
        .opt_out(opt_out(OptOutKind::ThirdPartyDisclosure))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.withdrawal.unwrap().purpose,
        Purpose::ThirdPartyDisclosure as i32
    );

    // 3. Another purpose's consent; a purpose not based on consent is refused.
    let mut purpose = opt_out(OptOutKind::Purpose);
    purpose.purpose = Purpose::FunderReporting as i32;
    assert!(
        client
            .opt_out(purpose.clone())
            .await
            .unwrap()
            .into_inner()
            .withdrawal
            .is_some()
    );
    purpose.purpose = Purpose::CourseAdministration as i32;
    let err = client.opt_out(purpose).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["purpose"]);

    // All communications: every subscription and the marketing consent.
    let done = client
        .opt_out(opt_out(OptOutKind::Communications))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.subscriptions_unsubscribed, 1);
    assert_eq!(done.withdrawal.unwrap().purpose, Purpose::Marketing as i32);
    assert!(
        audience(&suite, &c, "courses", Channel::Email)
            .await
            .is_empty()
    );
    let listed = client
        .list_subscriptions(ListSubscriptionsRequest {
            contact: subject(&contact),
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|s| s.state == SubscriptionState::Unsubscribed as i32)
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn the_audience_leaves_out_withdrawn_restricted_objecting_and_suppressed_contacts_and_is_audited()
 {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    let withdrawn = confirmed(&suite, &c, Channel::Email, "courses", "w@example.org").await;
    let restricted = confirmed(&suite, &c, Channel::Email, "courses", "r@example.org").await;
    let objecting = confirmed(&suite, &c, Channel::Email, "courses", "o@example.org").await;
    let bounced = confirmed(&suite, &c, Channel::Email, "courses", "b@example.org").await;
    let kept = confirmed(&suite, &c, Channel::Email, "courses", "k@example.org").await;
    assert_eq!(
        audience(&suite, &c, "courses", Channel::Email).await.len(),
        5
    );

    let mut ledger = suite.consent_ledger(c.staff.clone());
    ledger
        .withdraw_consent(withdraw(&contact_of(&withdrawn), Purpose::Marketing, ""))
        .await
        .unwrap();
    let dpo = Credentials::new(
        &suite.token(TENANT, "dpo-1", &["dpo"]),
        "consent_management",
    );
    suite
        .consent_ledger(dpo.clone())
        .record_restriction(RecordRestrictionRequest {
            subject: subject(&contact_of(&restricted)),
            restricted: true,
            reason: "art18 accuracy contested".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // An objection to direct marketing (Art. 21(2)) leaves the contact out whatever they
    // consented to; the ledger says it stands.
    let objected = suite
        .consent_ledger(dpo.clone())
        .record_objection(RecordObjectionRequest {
            subject: subject(&contact_of(&objecting)),
            purposes: vec![Purpose::Marketing as i32],
            objected: true,
            reason: "art21 request 2026-031".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(objected.objected_to, [Purpose::Marketing as i32]);
    let state = suite
        .consent_ledger(dpo.clone())
        .get_consent_state(GetConsentStateRequest {
            subject: subject(&contact_of(&objecting)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.objected_to, [Purpose::Marketing as i32]);
    // Not an objection to the record of consent itself.
    let err = suite
        .consent_ledger(dpo.clone())
        .record_objection(RecordObjectionRequest {
            subject: subject(&contact_of(&objecting)),
            purposes: vec![Purpose::ConsentManagement as i32],
            objected: true,
            reason: "art21 request 2026-031".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["purposes[0]"]);
    let events = suite
        .subscriptions(c.marketing.clone())
        .record_events(RecordEventsRequest {
            events: vec![
                DeliveryEvent {
                    subscription_id: kept.subscription.clone().unwrap().subscription_id,
                    message_id: "msg-1".into(),
                    kind: EventKind::Opened as i32,
                    occurred_at: None,
                },
                DeliveryEvent {
                    subscription_id: bounced.subscription.clone().unwrap().subscription_id,
                    message_id: "msg-2".into(),
                    kind: EventKind::HardBounce as i32,
                    occurred_at: None,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((events.recorded, events.suppressed), (2, 1));
    let left = audience(&suite, &c, "courses", Channel::Email).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].address, "k@example.org");
    // A suppressed address cannot be signed up again.
    let err = suite
        .subscriptions(c.staff.clone())
        .subscribe(sign_up(Channel::Email, "courses", "B@example.org"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "ADDRESS_SUPPRESSED");

    // Only marketing, for marketing.
    let registrar = Credentials::new(&suite.token(TENANT, "reg", &["registrar"]), "marketing");
    let err = suite
        .subscriptions(registrar)
        .resolve_audience(ResolveAudienceRequest {
            topic: "courses".into(),
            channel: Channel::Email as i32,
            batch_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // One summary record per resolution, with its count.
    let db = suite.database().connect().await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT reason FROM tutela_audit_log WHERE rpc = 'tutela.subscription.v1.SubscriptionService/ResolveAudience' AND kind = 'access'".to_owned(),
        ))
        .await
        .unwrap();
    let reasons: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("", "reason").unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.ends_with("5 recipients")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.ends_with("1 recipients")),
        "{reasons:?}"
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_the_fields_named() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    let mut client = suite.subscriptions(c.staff.clone());
    let mut r = sign_up(Channel::Unspecified, "Not A Topic", "no-at-sign-here");
    r.evidence = None;
    let err = client.subscribe(r).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut named = fields(&err);
    named.sort();
    assert_eq!(named, ["channel", "evidence", "topic"]);
    let err = client
        .subscribe(sign_up(Channel::Email, "courses", "not-an-email"))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["address"]);
    assert!(
        !err.message().contains("not-an-email"),
        "errors never repeat the value"
    );
    let err = client
        .subscribe(sign_up(Channel::Email, "nope", "a@example.org"))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["topic"]);
    let err = suite
        .subscriptions(Credentials::none())
        .confirm_subscription(ConfirmSubscriptionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Calls other than the two token calls need a bearer token.
    let err = suite
        .subscriptions(Credentials::none())
        .list_topics(tutela_proto::subscription::ListTopicsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn export_and_erasure_keep_only_a_keyed_hash_on_the_suppression_list() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    let a = confirmed(&suite, &c, Channel::Email, "courses", "eve@example.org").await;
    let contact = contact_of(&a);
    let dpo = Credentials::new(&suite.token(TENANT, "dpo-1", &["dpo"]), "subject_rights");
    let mut rights = suite.subject_data(dpo);
    rights
        .record_identity_verification(RecordIdentityVerificationRequest {
            subject: subject(&contact),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: EVIDENCE_REF.into(),
        })
        .await
        .unwrap();
    let export = rights
        .export_subject(ExportSubjectRequest {
            subject: subject(&contact),
            services: vec!["subscription".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let doc: serde_json::Value = serde_json::from_slice(&export.exports[0].document).unwrap();
    assert_eq!(doc["subscriptions"][0]["address"], "eve@example.org");
    // The topic is named beside its id, for the person reading the export.
    assert_eq!(doc["subscriptions"][0]["topic_title"], "news about courses");
    assert_eq!(
        doc["subscription_evidence"].as_array().unwrap().len(),
        2,
        "{doc}"
    );
    assert!(
        doc["consent_history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["purpose"] == "PURPOSE_MARKETING"),
        "{doc}"
    );
    assert!(doc["erasure"].as_str().unwrap().contains("keyed hash"));

    let erased = rights
        .erase_subject(EraseSubjectRequest {
            subject: subject(&contact),
            services: vec!["subscription".into()],
            reason: "art17 request".into(),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(erased.services[0].records_erased >= 2);
    assert!(
        audience(&suite, &c, "courses", Channel::Email)
            .await
            .is_empty()
    );
    // An import cannot add them again.
    let err = suite
        .subscriptions(c.staff.clone())
        .subscribe(sign_up(Channel::Email, "courses", "eve@example.org"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "ADDRESS_SUPPRESSED");
    // Nothing readable is left in the subscription tables.
    let db = suite.database().connect().await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    for table in ["subscriptions", "contacts", "delivery_events"] {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT * FROM {table}"),
            ))
            .await
            .unwrap();
        assert!(rows.is_empty(), "{table} still has rows");
    }
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn delivery_events_are_swept_after_the_registers_retention() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    let a = confirmed(&suite, &c, Channel::Email, "courses", "ev@example.org").await;
    let id = a.subscription.unwrap().subscription_id;
    let now = chrono::Utc::now();
    let at = |days: i64| {
        Some(tutela_policy::validate::timestamp(
            now - chrono::Duration::days(days),
        ))
    };
    let recorded = suite
        .subscriptions(c.marketing.clone())
        .record_events(RecordEventsRequest {
            events: vec![
                DeliveryEvent {
                    subscription_id: id.clone(),
                    message_id: "old".into(),
                    kind: EventKind::Delivered as i32,
                    occurred_at: at(91),
                },
                DeliveryEvent {
                    subscription_id: id,
                    message_id: "recent".into(),
                    kind: EventKind::Clicked as i32,
                    occurred_at: at(89),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recorded.recorded, 2);

    // The sweep `serve` runs on schedule (and `tutela retention sweep` once), here on the same
    // database from outside the server.
    let db = suite.database().connect().await.unwrap();
    let register = tutela_policy::Register::default_register().unwrap();
    let sweep = |dry| tutela_subscription::sweep_events(&db, &register, now, dry);
    assert_eq!(sweep(true).await.unwrap(), 1, "a dry run counts");
    assert_eq!(sweep(false).await.unwrap(), 1);
    assert_eq!(sweep(false).await.unwrap(), 0);
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT message_id FROM delivery_events".to_owned(),
        ))
        .await
        .unwrap();
    let left: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("", "message_id").unwrap())
        .collect();
    assert_eq!(left, ["recent"]);
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_sign_ups_and_confirmations_all_succeed() {
    use futures::StreamExt;
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    // Many writers at once: on SQLite a transaction that read before writing would fail with
    // SQLITE_BUSY_SNAPSHOT here, which no busy timeout waits out.
    let addresses: Vec<String> = (0..48).map(|i| format!("busy{i}@example.org")).collect();
    for a in &addresses {
        personal(&[a]);
    }
    let suite_ref = &suite;
    let c_ref = &c;
    futures::stream::iter(addresses.iter())
        .map(|a| async move {
            confirmed(suite_ref, c_ref, Channel::Email, "courses", a).await;
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(
        audience(&suite, &c, "courses", Channel::Email).await.len(),
        addresses.len()
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn a_subscription_pointing_at_another_contacts_key_fails_instead_of_opening_it() {
    // The audience reaches each contact's key by the number the subscription keeps. Should that
    // number ever point at another contact's key row (a bad restore, a hand edit), the
    // resolution must stop with an error, never decrypt with the wrong key or send anything.
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "courses").await;
    let a = confirmed(&suite, &c, Channel::Email, "courses", "a@example.org").await;
    let b = confirmed(&suite, &c, Channel::Email, "courses", "b@example.org").await;
    assert_eq!(
        audience(&suite, &c, "courses", Channel::Email).await.len(),
        2
    );
    let id_of = |r: &SubscribeResponse| r.subscription.as_ref().unwrap().subscription_id.clone();
    let db = suite.database().connect().await.unwrap();
    use sea_orm::{ConnectionTrait, Statement, Value};
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        tutela_store::placeholders(
            backend,
            "UPDATE subscriptions SET key_seq = (SELECT key_seq FROM subscriptions \
             WHERE subscription_id = $1) WHERE subscription_id = $2",
        ),
        [Value::from(id_of(&b)), Value::from(id_of(&a))],
    ))
    .await
    .unwrap();

    let mut stream = suite
        .subscriptions(c.marketing.clone())
        .resolve_audience(ResolveAudienceRequest {
            topic: "courses".into(),
            channel: Channel::Email as i32,
            batch_size: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let mut sent = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(batch)) => sent.extend(batch.recipients),
            Ok(None) => panic!(
                "the resolution ended normally with {} recipients",
                sent.len()
            ),
            Err(status) => break status,
        }
    };
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        sent.iter()
            .all(|r| r.address != "b@example.org" || r.subscription_id == id_of(&b)),
        "b's address went out under a's subscription"
    );
    assert!(!err.message().contains("example.org"));
}

/// The two token calls are audited by the guard, not by their handlers: every call, allowed or
/// refused (a forged token, a bad request, an RFC 8058 POST), leaves one record naming the RPC,
/// the token holder, the outcome and, once the token resolved, the contact by pseudonym.
#[tokio::test]
async fn every_token_call_leaves_one_audit_record_with_its_outcome() {
    let suite = TestSuite::start().await.unwrap();
    let c = clients(&suite, TENANT);
    topic(&suite, &c, "news").await;
    confirmed(&suite, &c, Channel::Email, "news", "dee@example.org").await;
    let forged = confirm_token(&suite, "bm90IGEgdG9rZW4").await.unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    let bad = suite
        .subscriptions(Credentials::none())
        .confirm_subscription(ConfirmSubscriptionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let recipients = audience(&suite, &c, "news", Channel::Email).await;
    let token = recipients[0].unsubscribe_token.clone();
    let mut client = suite.subscriptions(Credentials::none());
    for _ in 0..2 {
        client
            .unsubscribe(UnsubscribeRequest {
                token: token.clone(),
            })
            .await
            .unwrap();
    }
    let status = curl_post(&format!("http://{}/unsubscribe/AAAA", suite.addr())).await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    let db = suite.database().connect().await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT rpc, kind, decision, reason, purpose, subject FROM tutela_audit_log \
             WHERE principal_kind = 'token-holder' ORDER BY seq"
                .to_owned(),
        ))
        .await
        .unwrap();
    let records: Vec<(String, String, String, String, String, bool)> = rows
        .iter()
        .map(|r| {
            let rpc: String = r.try_get("", "rpc").unwrap();
            let subject: Option<String> = r.try_get("", "subject").unwrap();
            (
                rpc.rsplit('/').next().unwrap().to_owned(),
                r.try_get("", "kind").unwrap(),
                r.try_get("", "decision").unwrap(),
                r.try_get("", "reason").unwrap(),
                r.try_get("", "purpose").unwrap(),
                subject.is_some_and(|s| !s.is_empty()),
            )
        })
        .collect();
    let expected = [
        ("ConfirmSubscription", "access", "allow", "confirmed", true),
        (
            "ConfirmSubscription",
            "decision",
            "deny",
            "TOKEN_INVALID",
            false,
        ),
        (
            "ConfirmSubscription",
            "decision",
            "deny",
            "INVALID_ARGUMENT",
            false,
        ),
        ("Unsubscribe", "access", "allow", "unsubscribed", true),
        (
            "Unsubscribe",
            "access",
            "allow",
            "already unsubscribed",
            true,
        ),
        ("Unsubscribe", "decision", "deny", "TOKEN_INVALID", false),
    ];
    let got: Vec<_> = records
        .iter()
        .map(|(m, k, d, r, _, s)| (m.as_str(), k.as_str(), d.as_str(), r.as_str(), *s))
        .collect();
    assert_eq!(got, expected);
    // The purpose the handlers declare, refusals included.
    assert!(
        records.iter().all(|r| r.4 == "consent_management"),
        "{records:?}"
    );
    suite.stop().await.unwrap();
}

/// `curl -X POST` with the RFC 8058 body; the status line and headers.
async fn curl_post(url: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-X", "POST", "--data"])
        .args(["List-Unsubscribe=One-Click", url])
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
