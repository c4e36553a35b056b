//! The audience property: for any sequence of subscribe, confirm, unsubscribe, bounce and erase
//! calls, the audience of a topic and channel is exactly the addresses whose latest act was a
//! confirmed opt-in to that topic, and never someone who unsubscribed, bounced or was erased.
//! Every case runs against the real server (gRPC over a socket, SQLite or PostgreSQL) in a
//! tenant of its own; a failing case shrinks to the shortest sequence that breaks it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::Code;
use tutela_proto::privacy::{
    EraseSubjectRequest, RecordIdentityVerificationRequest, VerificationMethod,
};
use tutela_proto::subscription::{
    Channel, ConfirmSubscriptionRequest, DeliveryEvent, EventKind, OptInEvidence, PutTopicRequest,
    RecordEventsRequest, ResolveAudienceRequest, SubscribeRequest, Topic, UnsubscribeRequest,
};
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

const ADDRESSES: [&str; 3] = [
    "prop-one@example.org",
    "prop-two@example.org",
    "prop-three@example.org",
];
const TOPICS: [&str; 2] = ["courses", "products"];

#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize, usize),
    Confirm(usize, usize),
    Unsubscribe(usize, usize),
    Bounce(usize),
    Erase(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let a = 0..ADDRESSES.len();
    let t = 0..TOPICS.len();
    prop_oneof![
        3 => (a.clone(), t.clone()).prop_map(|(a, t)| Op::Subscribe(a, t)),
        3 => (a.clone(), t.clone()).prop_map(|(a, t)| Op::Confirm(a, t)),
        2 => (a.clone(), t).prop_map(|(a, t)| Op::Unsubscribe(a, t)),
        1 => a.clone().prop_map(Op::Bounce),
        1 => a.prop_map(Op::Erase),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Pending,
    Confirmed,
    Unsubscribed,
}

/// What the client knows of one address and topic.
#[derive(Default)]
struct Known {
    subscription_id: String,
    confirmation_token: String,
    unsubscribe_token: String,
}

fn evidence(source: &str) -> Option<OptInEvidence> {
    Some(OptInEvidence {
        source: source.into(),
        wording_version: "prop-1".into(),
        wording_sha256: "c".repeat(64),
    })
}

async fn audience(
    suite: &TestSuite,
    marketing: &Credentials,
    topic: &str,
) -> BTreeMap<String, String> {
    let mut stream = suite
        .subscriptions(marketing.clone())
        .resolve_audience(ResolveAudienceRequest {
            topic: topic.into(),
            channel: Channel::Email as i32,
            batch_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = BTreeMap::new();
    while let Some(batch) = stream.message().await.unwrap() {
        for r in batch.recipients {
            assert!(
                out.insert(r.address, r.unsubscribe_token).is_none(),
                "no one twice"
            );
        }
    }
    out
}

async fn run_case(suite: &TestSuite, case: usize, ops: &[Op]) {
    // A tenant per run, so that shrinking runs never share one with an earlier run.
    let tenant = format!(
        "prop-{case}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let staff = Credentials::new(
        &suite.token(&tenant, "platform", &["service"]),
        "consent_management",
    );
    let marketing = Credentials::new(&suite.token(&tenant, "mkt", &["marketing"]), "marketing");
    let editor = Credentials::new(
        &suite.token(&tenant, "mkt", &["marketing"]),
        "consent_management",
    );
    let dpo = Credentials::new(&suite.token(&tenant, "dpo", &["dpo"]), "subject_rights");
    for topic in TOPICS {
        suite
            .subscriptions(editor.clone())
            .put_topic(PutTopicRequest {
                topic: Some(Topic {
                    topic_id: topic.into(),
                    description: "news".into(),
                }),
            })
            .await
            .unwrap();
    }
    let mut model: HashMap<(usize, usize), Model> = HashMap::new();
    let mut suppressed: BTreeSet<usize> = BTreeSet::new();
    let mut known: HashMap<(usize, usize), Known> = HashMap::new();
    let mut contacts: HashMap<usize, String> = HashMap::new();
    let mut erased: BTreeSet<usize> = BTreeSet::new();
    let mut client = suite.subscriptions(staff.clone());
    let mut anonymous = suite.subscriptions(Credentials::none());
    for op in ops {
        match *op {
            Op::Subscribe(a, t) => {
                let r = client
                    .subscribe(SubscribeRequest {
                        channel: Channel::Email as i32,
                        topic: TOPICS[t].into(),
                        address: ADDRESSES[a].into(),
                        evidence: evidence("prop-form"),
                        ..Default::default()
                    })
                    .await;
                if suppressed.contains(&a) {
                    let err = r.unwrap_err();
                    assert_eq!(reason(&err), "ADDRESS_SUPPRESSED", "{op:?}");
                    continue;
                }
                let r = r.unwrap().into_inner();
                let sub = r.subscription.unwrap();
                contacts.insert(a, sub.contact.unwrap().subject_id);
                let k = known.entry((a, t)).or_default();
                k.subscription_id = sub.subscription_id;
                if model.get(&(a, t)) != Some(&Model::Confirmed) {
                    k.confirmation_token = r.confirmation_token;
                    model.insert((a, t), Model::Pending);
                }
            }
            Op::Confirm(a, t) => {
                let Some(k) = known.get(&(a, t)) else {
                    continue;
                };
                if k.confirmation_token.is_empty() {
                    continue;
                }
                let r = anonymous
                    .confirm_subscription(ConfirmSubscriptionRequest {
                        token: k.confirmation_token.clone(),
                        evidence: evidence("prop-confirm"),
                        ..Default::default()
                    })
                    .await;
                match model.get(&(a, t)) {
                    Some(Model::Pending) | Some(Model::Confirmed) if !suppressed.contains(&a) => {
                        r.unwrap();
                        model.insert((a, t), Model::Confirmed);
                    }
                    // Unsubscribed, suppressed or erased since the token was issued: refused.
                    _ => {
                        let err = r.unwrap_err();
                        assert!(
                            matches!(err.code(), Code::FailedPrecondition | Code::NotFound),
                            "{op:?}: {err:?}"
                        );
                    }
                }
            }
            Op::Unsubscribe(a, t) => {
                let Some(k) = known.get(&(a, t)) else {
                    continue;
                };
                if k.unsubscribe_token.is_empty() {
                    continue;
                }
                let r = anonymous
                    .unsubscribe(UnsubscribeRequest {
                        token: k.unsubscribe_token.clone(),
                    })
                    .await;
                match model.get(&(a, t)) {
                    None => assert_eq!(r.unwrap_err().code(), Code::NotFound, "{op:?}"),
                    Some(_) => {
                        r.unwrap();
                        if !suppressed.contains(&a) {
                            model.insert((a, t), Model::Unsubscribed);
                        }
                    }
                }
            }
            Op::Bounce(a) => {
                let events: Vec<DeliveryEvent> = (0..TOPICS.len())
                    .filter(|t| model.contains_key(&(a, *t)))
                    .filter_map(|t| known.get(&(a, t)))
                    .map(|k| DeliveryEvent {
                        subscription_id: k.subscription_id.clone(),
                        message_id: "prop-msg".into(),
                        kind: EventKind::HardBounce as i32,
                        occurred_at: None,
                    })
                    .take(1)
                    .collect();
                if events.is_empty() {
                    continue;
                }
                suite
                    .subscriptions(marketing.clone())
                    .record_events(RecordEventsRequest { events })
                    .await
                    .unwrap();
                suppressed.insert(a);
            }
            Op::Erase(a) => {
                let Some(contact) = contacts.get(&a) else {
                    continue;
                };
                let mut rights = suite.subject_data(dpo.clone());
                let verified = rights
                    .record_identity_verification(RecordIdentityVerificationRequest {
                        subject: subject(contact),
                        method: VerificationMethod::PhotoIdInPerson as i32,
                        evidence_reference: "prop-check".into(),
                    })
                    .await;
                // Recorded for an erased contact too: they may still ask what is kept.
                verified.unwrap();
                if erased.contains(&a) {
                    continue;
                }
                erased.insert(a);
                rights
                    .erase_subject(EraseSubjectRequest {
                        subject: subject(contact),
                        services: vec!["subscription".into()],
                        reason: "prop erasure".into(),
                        idempotency_key: None,
                    })
                    .await
                    .unwrap();
                for t in 0..TOPICS.len() {
                    model.remove(&(a, t));
                }
                if known.keys().any(|(ka, _)| *ka == a) {
                    suppressed.insert(a);
                }
            }
        }
        for (t, topic) in TOPICS.iter().enumerate() {
            let got = audience(suite, &marketing, topic).await;
            let expected: BTreeSet<&str> = (0..ADDRESSES.len())
                .filter(|a| {
                    !suppressed.contains(a) && model.get(&(*a, t)) == Some(&Model::Confirmed)
                })
                .map(|a| ADDRESSES[a])
                .collect();
            let addresses: BTreeSet<&str> = got.keys().map(String::as_str).collect();
            assert_eq!(addresses, expected, "after {op:?} in {ops:?}");
            for (a, address) in ADDRESSES.iter().enumerate() {
                if let Some(token) = got.get(*address) {
                    known.entry((a, t)).or_default().unsubscribe_token = token.clone();
                }
            }
        }
    }
}

#[test]
fn no_one_is_in_an_audience_without_a_confirmed_opt_in() {
    personal(&ADDRESSES);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let suite = rt.block_on(TestSuite::start()).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&proptest::collection::vec(op(), 1..16), |ops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(run_case(&suite, n, &ops));
            Ok(())
        })
        .unwrap();
    rt.block_on(suite.stop()).unwrap();
}
