//! Partner webhooks end to end: the dpo sets an endpoint (a loopback receiver, which only the
//! `allow_private_webhook_targets` setting lets through), the outbox is written in a transaction
//! as the disclosure path will write it, and the delivery worker POSTs to a real HTTP server
//! that checks every signature with its own implementation of the Standard Webhooks rules.
//! Scheduled sweeps are off in these suites, so each test drives the worker with its own `now`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use sea_orm::{DatabaseConnection, EntityTrait};
use sha2::Sha256;
use tonic::Code;
use tutela_policy::scope::Tenant;
use tutela_proto::common::{IdempotencyKey, PageRequest};
use tutela_proto::sharing::webhook_service_client::WebhookServiceClient;
use tutela_proto::sharing::{
    GetWebhookEndpointRequest, ListWebhookMessagesRequest, SetWebhookEndpointRequest,
    WebhookMessage, WebhookMessageState,
};
use tutela_sharing::PartnerKeys;
use tutela_sharing::entity::partner;
use tutela_sharing::webhooks::{Delivered, TargetRules, Webhooks, enqueue};
use tutela_testkit::Authed;

use crate::*;

/// What the tests' settings allow: plain http to loopback.
pub(crate) const DEV: TargetRules = TargetRules {
    allow_http: true,
    allow_private: true,
};

/// A suite that accepts loopback endpoints (or not), with scheduled sweeps off.
pub(crate) async fn suite(allow_private: bool) -> TestSuite {
    TestSuite::start_with(|c| {
        c.sections.insert(
            "sharing".into(),
            serde_json::json!({
                "allow_http_webhook_targets": true,
                "allow_private_webhook_targets": allow_private,
                // With the retention sweeps, which are off: the tests run the worker.
                "webhook_interval_secs": 0,
            }),
        );
        c.retention.sweep_interval_secs = 0;
    })
    .await
    .unwrap()
}

fn webhooks(suite: &TestSuite, credentials: Credentials) -> WebhookServiceClient<Authed> {
    WebhookServiceClient::with_interceptor(suite.channel(), credentials)
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

/// An HTTP/1.1 server on loopback that answers with `statuses` in turn (200 once they run out)
/// and keeps what it was sent.
pub(crate) struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub(crate) async fn start(statuses: &[u16]) -> Self {
        Self::serve(statuses, None).await
    }

    /// The same over TLS with `acceptor`'s certificate.
    async fn start_tls(statuses: &[u16], acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::serve(statuses, Some(acceptor)).await
    }

    async fn serve(statuses: &[u16], tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<_>>(),
        ));
        let (kept, answers) = (received.clone(), statuses.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (kept, answers) = (kept.clone(), answers.clone());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (kept, answers) = (kept.clone(), answers.clone());
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (id, timestamp, signature, content_type) = (
                            header("webhook-id"),
                            header("webhook-timestamp"),
                            header("webhook-signature"),
                            header("content-type"),
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                        kept.lock().unwrap().push(Received {
                            id,
                            timestamp,
                            signature,
                            content_type,
                            body,
                        });
                        let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    // A connection's own failure is the client's to see, not the receiver's.
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        Self { addr, received }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks/tutela?token=partner-side", self.addr)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// The Standard Webhooks rules, written here again rather than taken from the service: the
/// secret is the base64 after `whsec_`; the signed content is `id.timestamp.body`; the header is
/// a space-separated list of `v1,<base64 HMAC-SHA256>`; the timestamp is within five minutes.
fn verifies(secret: &str, r: &Received) -> bool {
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    let sent: i64 = r.timestamp.parse().unwrap();
    (Utc::now().timestamp() - sent).abs() <= 300 && r.signature.split(' ').any(|s| s == expected)
}

/// The delivery worker over the suite's database, with the suite's keys.
pub(crate) async fn worker(
    suite: &TestSuite,
    rules: TargetRules,
) -> (Webhooks, DatabaseConnection) {
    let db = suite.database().connect().await.unwrap();
    let keys = PartnerKeys::new(
        db.clone(),
        Arc::new(tutela::keys::load_keyring(suite.config()).unwrap()),
        Arc::new(tutela_store::SystemClock),
    );
    (Webhooks::new(db.clone(), keys, rules).unwrap(), db)
}

/// Enqueues a `delivery.ready` for `partner_id` in a transaction of its own, as the disclosure
/// path will within its own; the message id, if the partner has an enabled endpoint.
async fn announce(db: &DatabaseConnection, partner_id: &str, delivery_id: &str) -> Option<String> {
    let row = partner::Entity::find_by_id(partner_id.to_owned())
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let txn = tutela_store::begin(db).await.unwrap();
    let id = enqueue(
        &txn,
        &Tenant::of_row(&row).unwrap(),
        partner_id,
        "delivery.ready",
        &serde_json::json!({ "delivery_id": delivery_id }),
        Utc::now(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    id
}

async fn messages(suite: &TestSuite, partner_id: &str) -> Vec<WebhookMessage> {
    webhooks(suite, dpo(suite))
        .list_webhook_messages(ListWebhookMessagesRequest {
            partner_id: partner_id.into(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .messages
}

fn set(partner_id: &str, url: &str) -> SetWebhookEndpointRequest {
    SetWebhookEndpointRequest {
        partner_id: partner_id.into(),
        url: url.into(),
        idempotency_key: None,
    }
}

const DELIVERY: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";

#[tokio::test]
async fn a_partner_receives_signed_notifications_of_ids_only_and_its_secret_is_shown_once() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let receiver = Receiver::start(&[]).await;
    let (worker, db) = worker(&suite, DEV).await;
    let mut api = webhooks(&suite, dpo(&suite));

    let response = api
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap()
        .into_inner();
    let secret = response.signing_secret.clone();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // Neither the secret nor the URL's query ever reaches a log or span (scanned when the
    // suite's database is dropped).
    tutela_store::testing::logs::personal(&[&secret, &secret["whsec_".len()..], "partner-side"]);
    assert_eq!(B64.decode(&secret["whsec_".len()..]).unwrap().len(), 32);
    let endpoint = response.endpoint.unwrap();
    assert!(endpoint.enabled);
    assert_eq!(endpoint.url, receiver.url());

    // Reading the endpoint never returns the secret, in any field.
    let got = api
        .get_webhook_endpoint(GetWebhookEndpointRequest {
            partner_id: partner_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.endpoint.as_ref(), Some(&endpoint));
    let encoded = got.encode_to_vec();
    let b64 = &secret["whsec_".len()..];
    assert!(!String::from_utf8_lossy(&encoded).contains(b64));
    // Setting the endpoint is recorded as a change, naming the partner only.
    let rpc = "tutela.sharing.v1.WebhookService/SetWebhookEndpoint";
    let reasons = audited(&suite, rpc).await;
    let change = format!("webhook_endpoint_set partner={partner_id}");
    assert!(reasons.contains(&change), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| !r.contains("partner-side") && !r.contains(b64))
    );

    let message_id = announce(&db, &partner_id, DELIVERY).await.unwrap();
    let report = worker.deliver_due(Utc::now()).await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.id, message_id);
    assert_eq!(r.content_type, "application/json");
    assert!(verifies(&secret, r), "{r:?}");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "delivery.ready",
            "partner_id": partner_id,
            "delivery_id": DELIVERY,
        })
    );
    // Another secret does not verify it.
    let other = api
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap()
        .into_inner()
        .signing_secret;
    assert_ne!(other, secret);
    assert!(!verifies(&other, r));

    let listed = messages(&suite, &partner_id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].message_id, message_id);
    assert_eq!(listed[0].state, WebhookMessageState::Delivered as i32);
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[0].last_status, 200);
    assert_eq!(listed[0].event_type, "delivery.ready");

    // Nothing is due any more.
    assert_eq!(
        worker.deliver_due(Utc::now()).await.unwrap(),
        Delivered::default()
    );
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_same_secret() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let mut api = webhooks(&suite, dpo(&suite));
    let keyed = |url: &str| SetWebhookEndpointRequest {
        idempotency_key: Some(IdempotencyKey {
            key: "set-endpoint-0001".into(),
        }),
        ..set(&partner_id, url)
    };
    let first = api
        .set_webhook_endpoint(keyed("http://127.0.0.1:9/a"))
        .await
        .unwrap()
        .into_inner();
    let again = api
        .set_webhook_endpoint(keyed("http://127.0.0.1:9/a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let err = api
        .set_webhook_endpoint(keyed("http://127.0.0.1:9/b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_gives_up_its_pending_messages() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let receiver = Receiver::start(&[410]).await;
    let (worker, db) = worker(&suite, DEV).await;
    let mut api = webhooks(&suite, dpo(&suite));
    api.set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap();
    announce(&db, &partner_id, DELIVERY).await.unwrap();
    announce(&db, &partner_id, "delivery-2").await.unwrap();

    let report = worker.deliver_due(Utc::now()).await.unwrap();
    assert_eq!(report.endpoint_disabled, 2, "{report:?}");
    assert_eq!(receiver.received().len(), 1, "the second is never sent");

    let endpoint = api
        .get_webhook_endpoint(GetWebhookEndpointRequest {
            partner_id: partner_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert!(!endpoint.enabled);
    assert!(endpoint.disabled_reason.contains("410"), "{endpoint:?}");
    let listed = messages(&suite, &partner_id).await;
    assert!(
        listed
            .iter()
            .all(|m| m.state == WebhookMessageState::EndpointDisabled as i32),
        "{listed:?}"
    );
    assert_eq!(listed[0].last_status, 410);

    // A disabled endpoint gets nothing new; setting it again enables it.
    assert_eq!(announce(&db, &partner_id, "delivery-3").await, None);
    let set_again = api
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert!(set_again.enabled && set_again.disabled_reason.is_empty());
    assert!(announce(&db, &partner_id, "delivery-4").await.is_some());
    assert_eq!(worker.deliver_due(Utc::now()).await.unwrap().delivered, 1);
}

#[tokio::test]
async fn a_500_is_retried_on_the_schedule_with_the_same_id_until_a_200() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let receiver = Receiver::start(&[500]).await;
    let (worker, db) = worker(&suite, DEV).await;
    let secret = webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap()
        .into_inner()
        .signing_secret;
    let message_id = announce(&db, &partner_id, DELIVERY).await.unwrap();

    let now = Utc::now();
    assert_eq!(worker.deliver_due(now).await.unwrap().retrying, 1);
    let listed = messages(&suite, &partner_id).await;
    assert_eq!(listed[0].state, WebhookMessageState::Pending as i32);
    assert_eq!((listed[0].attempts, listed[0].last_status), (1, 500));
    assert_eq!(listed[0].last_error, "HTTP status 500");
    // Due again 5 s later (plus at most half a second of jitter), not before.
    let due = to_utc(listed[0].next_attempt_at.as_ref().unwrap());
    assert!(due >= now + Duration::seconds(5) && due <= now + Duration::milliseconds(5500));
    assert_eq!(
        worker
            .deliver_due(now + Duration::seconds(1))
            .await
            .unwrap(),
        Delivered::default()
    );
    assert_eq!(
        worker
            .deliver_due(now + Duration::seconds(6))
            .await
            .unwrap()
            .delivered,
        1
    );

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.id == message_id));
    assert!(received.iter().all(|r| verifies(&secret, r)));
    let listed = messages(&suite, &partner_id).await;
    assert_eq!(listed[0].state, WebhookMessageState::Delivered as i32);
    assert_eq!((listed[0].attempts, listed[0].last_status), (2, 200));
    assert!(listed[0].last_error.is_empty());
}

#[tokio::test]
async fn a_message_fails_after_the_last_attempt_of_the_schedule() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let receiver = Receiver::start(&[503; 20]).await;
    let (worker, db) = worker(&suite, DEV).await;
    webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap();
    announce(&db, &partner_id, DELIVERY).await.unwrap();
    let mut now = Utc::now();
    let mut runs = Vec::new();
    for _ in 0..10 {
        runs.push(worker.deliver_due(now).await.unwrap());
        // Longer than the longest wait of the schedule (10 h plus jitter).
        now += Duration::hours(12);
    }
    assert!(runs[..7].iter().all(|r| r.retrying == 1), "{runs:?}");
    assert_eq!(runs[7].failed, 1, "{runs:?}");
    assert!(runs[8..].iter().all(|r| *r == Delivered::default()));
    assert_eq!(receiver.received().len(), 8);
    let listed = messages(&suite, &partner_id).await;
    assert_eq!(listed[0].state, WebhookMessageState::Failed as i32);
    assert_eq!((listed[0].attempts, listed[0].last_status), (8, 503));
}

#[tokio::test]
async fn private_targets_are_refused_without_the_setting_at_registration_and_at_delivery() {
    let strict = suite(false).await;
    let partner_id = partner(&strict, "GB").await;
    let mut api = webhooks(&strict, dpo(&strict));
    for url in [
        "http://127.0.0.1:8080/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:10.0.0.1]/hook",
        "https://localhost/hook",
        "https://user:password@hooks.example.org/",
        "ftp://hooks.example.org/",
        "not a url",
    ] {
        let err = api
            .set_webhook_endpoint(set(&partner_id, url))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}");
        assert_eq!(fields(&err), ["url"], "{url}");
        // The refusal never repeats the URL.
        assert!(!err.message().contains("169.254"), "{}", err.message());
    }
    let err = api.set_webhook_endpoint(set("", "")).await.unwrap_err();
    assert_eq!(fields(&err), ["partner_id", "url"]);
    let err = api
        .set_webhook_endpoint(set(&uuid_of_nobody(), "https://hooks.example.org/"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A public https endpoint is accepted as it is.
    api.set_webhook_endpoint(set(&partner_id, "https://hooks.example.org/tutela"))
        .await
        .unwrap();
    let other = partner(&strict, "GB").await;
    let err = api
        .get_webhook_endpoint(GetWebhookEndpointRequest { partner_id: other })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Registered where it was allowed, then delivered by a worker that does not allow it: the
    // resolved address is checked again, and nothing is sent.
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let receiver = Receiver::start(&[]).await;
    webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap();
    let (public_only, db) = worker(
        &suite,
        TargetRules {
            allow_http: true,
            allow_private: false,
        },
    )
    .await;
    announce(&db, &partner_id, DELIVERY).await.unwrap();
    assert_eq!(
        public_only.deliver_due(Utc::now()).await.unwrap().retrying,
        1
    );
    assert!(receiver.received().is_empty());
    let listed = messages(&suite, &partner_id).await;
    assert!(listed[0].last_error.contains("not public"), "{listed:?}");
    assert!(!listed[0].last_error.contains("127.0.0.1"));
    assert_eq!(listed[0].last_status, 0);
}

#[tokio::test]
async fn only_the_dpo_of_the_partners_tenant_manages_its_webhooks() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let officer = staff(&suite, "acme", "exam_officer", "exam_booking");
    let err = webhooks(&suite, officer)
        .get_webhook_endpoint(GetWebhookEndpointRequest {
            partner_id: partner_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let globex = Credentials::new(
        &suite.token("globex", "dpo-9", &["dpo"]),
        "legal_obligation",
    );
    let mut theirs = webhooks(&suite, globex);
    let err = theirs
        .set_webhook_endpoint(set(&partner_id, "http://127.0.0.1:9/"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = theirs
        .list_webhook_messages(ListWebhookMessagesRequest {
            partner_id: partner_id.clone(),
            page: Some(PageRequest {
                page_size: 10,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

fn to_utc(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

#[tokio::test]
async fn a_rolled_back_change_announces_nothing_and_messages_list_a_page_at_a_time() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let (_, db) = worker(&suite, DEV).await;
    webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, "http://127.0.0.1:9/hook"))
        .await
        .unwrap();
    let row = partner::Entity::find_by_id(partner_id.clone())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    let txn = tutela_store::begin(&db).await.unwrap();
    let ids = serde_json::json!({ "delivery_id": DELIVERY });
    let tenant = Tenant::of_row(&row).unwrap();
    let written = enqueue(
        &txn,
        &tenant,
        &partner_id,
        "delivery.ready",
        &ids,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(written.is_some());
    txn.rollback().await.unwrap();
    assert!(messages(&suite, &partner_id).await.is_empty());

    // Only ids go into a webhook: anything else is refused before it is written.
    let txn = tutela_store::begin(&db).await.unwrap();
    for bad in [
        serde_json::json!({ "email": "ada@example.org" }),
        serde_json::json!({ "name": "Ada Lovelace" }),
        serde_json::json!({ "nested": { "id": "x" } }),
        serde_json::json!(["not", "an", "object"]),
    ] {
        assert!(
            enqueue(
                &txn,
                &tenant,
                &partner_id,
                "delivery.ready",
                &bad,
                Utc::now()
            )
            .await
            .is_err(),
            "{bad}"
        );
    }
    txn.rollback().await.unwrap();

    let mut written = Vec::new();
    for n in 0..3 {
        written.push(
            announce(&db, &partner_id, &format!("delivery-{n}"))
                .await
                .unwrap(),
        );
    }
    let mut api = webhooks(&suite, dpo(&suite));
    let page = |token: &str| ListWebhookMessagesRequest {
        partner_id: partner_id.clone(),
        page: Some(PageRequest {
            page_size: 2,
            page_token: token.into(),
        }),
    };
    let first = api
        .list_webhook_messages(page(""))
        .await
        .unwrap()
        .into_inner();
    let token = first.page.unwrap().next_page_token;
    let rest = api
        .list_webhook_messages(page(&token))
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<String> = first
        .messages
        .iter()
        .chain(&rest.messages)
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(listed, written);
    assert!(rest.page.unwrap().next_page_token.is_empty());
    let err = api.list_webhook_messages(page("forged")).await.unwrap_err();
    assert_eq!(fields(&err), ["page.page_token"]);
}

#[tokio::test]
async fn serve_delivers_on_its_own_schedule_as_the_webhook_deliveries_job() {
    let suite = TestSuite::start_with(|c| {
        c.sections.insert(
            "sharing".into(),
            serde_json::json!({
                "allow_http_webhook_targets": true,
                "allow_private_webhook_targets": true,
            }),
        );
        c.retention.sweep_interval_secs = 1;
    })
    .await
    .unwrap();
    let partner_id = partner(&suite, "GB").await;
    let receiver = Receiver::start(&[]).await;
    let secret = webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap()
        .into_inner()
        .signing_secret;
    let db = suite.database().connect().await.unwrap();
    let message_id = announce(&db, &partner_id, DELIVERY).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while receiver.received().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 1, "serve sent nothing within 20 s");
    assert_eq!(received[0].id, message_id);
    assert!(verifies(&secret, &received[0]));
}

/// A self-signed certificate for `localhost`, and an acceptor serving it.
fn localhost_tls() -> (
    tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    tokio_rustls::TlsAcceptor,
) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    (cert, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn https_endpoints_get_the_post_over_verified_tls_and_an_untrusted_certificate_gets_nothing()
{
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let (cert, acceptor) = localhost_tls();
    let receiver = Receiver::start_tls(&[], acceptor).await;
    let url = format!("https://localhost:{}/hooks/tutela", receiver.addr.port());
    let secret = webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, &url))
        .await
        .unwrap()
        .into_inner()
        .signing_secret;
    let (webpki_only, db) = worker(&suite, DEV).await;
    announce(&db, &partner_id, DELIVERY).await.unwrap();

    // The Mozilla roots do not vouch for a self-signed certificate: nothing is sent.
    let now = Utc::now();
    assert_eq!(webpki_only.deliver_due(now).await.unwrap().retrying, 1);
    assert!(receiver.received().is_empty());
    let listed = messages(&suite, &partner_id).await;
    assert_eq!(listed[0].last_error, "the TLS handshake failed");

    // Trusting it, the retry goes through, checked against the name `localhost`.
    let keys = PartnerKeys::new(
        db.clone(),
        Arc::new(tutela::keys::load_keyring(suite.config()).unwrap()),
        Arc::new(tutela_store::SystemClock),
    );
    let trusting = Webhooks::trusting(db.clone(), keys, DEV, vec![cert]).unwrap();
    let report = trusting
        .deliver_due(now + Duration::seconds(6))
        .await
        .unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(verifies(&secret, &received[0]));
}

fn uuid_of_nobody() -> String {
    "0b9e8a4c-0000-4e55-9a51-3c2f0d9e1a77".to_owned()
}

#[tokio::test]
async fn an_endpoint_that_just_failed_gets_no_more_attempts_in_the_same_run() {
    let suite = suite(true).await;
    let partner_id = partner(&suite, "GB").await;
    let receiver = Receiver::start(&[500]).await;
    let (worker, db) = worker(&suite, DEV).await;
    webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap();
    let first = announce(&db, &partner_id, DELIVERY).await.unwrap();
    let second = announce(&db, &partner_id, "delivery-2").await.unwrap();

    let now = Utc::now();
    let report = worker.deliver_due(now).await.unwrap();
    assert_eq!(report.total(), 1, "{report:?}");
    assert_eq!(receiver.received().len(), 1);
    let listed = messages(&suite, &partner_id).await;
    assert_eq!(listed[0].message_id, first);
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[1].message_id, second);
    assert_eq!((listed[1].attempts, listed[1].last_status), (0, 0));

    // The next run tries the second (still due), which the endpoint now takes.
    assert_eq!(worker.deliver_due(now).await.unwrap().delivered, 1);
    assert_eq!(receiver.received()[1].id, second);
}

#[tokio::test]
async fn a_disclosure_for_pulling_announces_itself_to_the_partners_endpoint() {
    let suite = suite(true).await;
    let ids = crate::disclosures::learners(&suite, 1).await;
    let (partner_id, _) = crate::disclosures::partner_in_force(&suite).await;
    let receiver = Receiver::start(&[]).await;
    let (worker, _db) = worker(&suite, DEV).await;
    let secret = webhooks(&suite, dpo(&suite))
        .set_webhook_endpoint(set(&partner_id, &receiver.url()))
        .await
        .unwrap()
        .into_inner()
        .signing_secret;
    tutela_store::testing::logs::personal(&[&secret, &secret["whsec_".len()..]]);
    let delivery = suite
        .disclosures(crate::staff(&suite, "acme", "exam_officer", "exam_booking"))
        .disclose(crate::disclosures::disclose(&partner_id, &ids))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    let report = worker.deliver_due(Utc::now()).await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");
    let received = receiver.received();
    assert!(verifies(&secret, &received[0]));
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "delivery.ready",
            "partner_id": partner_id,
            "delivery_id": delivery.delivery_id,
        })
    );
}
