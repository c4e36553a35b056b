//! The principal model over real gRPC: a token whose kind and roles contradict each other is
//! refused before it reaches any learner (UNAUTHENTICATED, `TOKEN_INCONSISTENT`), a consistent
//! learner token reaches only its own record, and `aud` may be an array naming our audience.

use prost_types::FieldMask;
use serde_json::json;
use tonic::Code;
use tutela_proto::common::{Purpose, SubjectRef};
use tutela_proto::consent::{
    ConsentActor, ConsentEvidence, ConsentMethod, ListConsentHistoryRequest, RecordConsentRequest,
};
use tutela_proto::enrolment::{
    CreateLearnerRequest, GetLearnerRequest, LearnerProfile, UpdateLearnerRequest,
};
use tutela_proto::privacy::DescribeSubjectRequest;
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite, reason};

const GIVEN: &str = "Ottilie";
const FAMILY: &str = "Brandwagen";
const DISABILITY: &str = "dyslexia";
const RENAMED: &str = "Mallory";

fn subject(id: &str) -> Option<SubjectRef> {
    personal(&[id]);
    Some(SubjectRef {
        subject_id: id.to_owned(),
    })
}

/// A learner with special-category data, created by the registrar; their id.
async fn new_learner(suite: &TestSuite) -> String {
    personal(&[GIVEN, FAMILY, DISABILITY, RENAMED]);
    let registrar = suite.token("acme", "registrar-1", &["registrar"]);
    suite
        .learners(Credentials::new(&registrar, "course_administration"))
        .create_learner(CreateLearnerRequest {
            profile: Some(LearnerProfile {
                given_name: GIVEN.into(),
                family_name: FAMILY.into(),
                disabilities: vec![DISABILITY.into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .learner_id
}

fn get(id: &str) -> GetLearnerRequest {
    GetLearnerRequest {
        learner: subject(id),
    }
}

/// The learner's profile as `token` may read it for subject rights.
async fn profile(suite: &TestSuite, token: &str, id: &str) -> LearnerProfile {
    suite
        .learners(Credentials::new(token, "subject_rights"))
        .get_learner(get(id))
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .profile
        .unwrap()
}

fn rename(id: &str) -> UpdateLearnerRequest {
    UpdateLearnerRequest {
        learner: subject(id),
        profile: Some(LearnerProfile {
            given_name: RENAMED.into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["given_name".into()],
        }),
        ..Default::default()
    }
}

fn consent(id: &str) -> RecordConsentRequest {
    personal(&["form-submission-7781"]);
    RecordConsentRequest {
        subject: subject(id),
        purpose: Purpose::Marketing as i32,
        recipient: String::new(),
        evidence: Some(ConsentEvidence {
            method: ConsentMethod::WebForm as i32,
            wording_version: "marketing-2026-03".into(),
            wording_sha256: "a".repeat(64),
            evidence_reference: "form-submission-7781".into(),
            actor: ConsentActor::Subject as i32,
            guardian: None,
        }),
        occurred_at: None,
        idempotency_key: None,
    }
}

fn assert_inconsistent(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    assert_eq!(reason(&err), "TOKEN_INCONSISTENT", "{what}");
}

/// The three shapes that reached every learner (`token issue --role tutor --role learner`,
/// `--role learner --kind staff`, `--role registrar --role guardian --ward X`) and their service
/// twin, signed as an identity provider could sign them, are refused on every learner RPC; the
/// record and the ledger are untouched.
#[tokio::test]
async fn tokens_whose_kind_and_roles_disagree_reach_no_learner() {
    let suite = TestSuite::start().await.unwrap();
    let id = new_learner(&suite).await;
    let shapes = [
        json!({"kind": "staff", "roles": ["tutor", "learner"]}),
        json!({"kind": "staff", "roles": ["learner"]}),
        json!({"kind": "staff", "roles": ["registrar", "guardian"], "wards": [id]}),
        json!({"kind": "service", "roles": ["learner"]}),
    ];
    for mut claims in shapes {
        claims["sub"] = json!(id);
        claims["tenant"] = json!("acme");
        let token = suite.signed(&claims);
        let what = claims.to_string();
        let learners = suite.learners(Credentials::new(&token, "subject_rights"));
        assert_inconsistent(learners.clone().get_learner(get(&id)).await, &what);
        assert_inconsistent(learners.clone().update_learner(rename(&id)).await, &what);
        let ledger = suite.consent_ledger(Credentials::new(&token, "consent_management"));
        assert_inconsistent(ledger.clone().record_consent(consent(&id)).await, &what);
    }

    let dpo = suite.token("acme", "dpo-1", &["dpo"]);
    let record = profile(&suite, &dpo, &id).await;
    assert_eq!(record.given_name, GIVEN);
    let registrar = suite.token("acme", "registrar-1", &["registrar"]);
    // The ledger holds no entry for the learner: it answers NOT_FOUND.
    let history = suite
        .consent_ledger(Credentials::new(&registrar, "consent_management"))
        .list_consent_history(ListConsentHistoryRequest {
            subject: subject(&id),
            ..Default::default()
        })
        .await;
    assert_eq!(history.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_consistent_learner_token_reads_and_rectifies_only_its_own_record() {
    let suite = TestSuite::start().await.unwrap();
    let me = new_learner(&suite).await;
    let other = new_learner(&suite).await;
    let token = suite.token("acme", &me, &["learner"]);
    let learners = suite.learners(Credentials::new(&token, "subject_rights"));

    let own = profile(&suite, &token, &me).await;
    assert_eq!(own.family_name, FAMILY);
    assert_eq!(own.disabilities, [DISABILITY]);
    learners.clone().update_learner(rename(&me)).await.unwrap();

    for result in [
        learners.clone().get_learner(get(&other)).await.map(|_| ()),
        learners
            .clone()
            .update_learner(rename(&other))
            .await
            .map(|_| ()),
    ] {
        assert_eq!(result.unwrap_err().code(), Code::NotFound);
    }
}

/// `aud` as identity providers send it (RFC 7519 §4.1.3): a string or an array, accepted when it
/// names our audience.
#[tokio::test]
async fn aud_may_be_an_array_naming_our_audience() {
    let suite = TestSuite::start().await.unwrap();
    let ours = suite.config().auth.audience.clone();
    let describe = |token: &str| {
        let client = suite.subject_data(Credentials::new(token, "subject_rights"));
        async move {
            client
                .clone()
                .describe_subject(DescribeSubjectRequest {
                    subject: subject("0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77"),
                    services: Vec::new(),
                })
                .await
        }
    };
    let dpo = |aud: serde_json::Value| {
        suite.signed(&json!({
            "sub": "dpo-1", "tenant": "acme", "kind": "staff", "roles": ["dpo"], "aud": aud,
        }))
    };
    for accepted in [json!(ours), json!(["account", ours]), json!([ours])] {
        let reply = describe(&dpo(accepted.clone())).await;
        assert!(reply.is_ok(), "{accepted}: {reply:?}");
    }
    for refused in [json!("account"), json!(["account", "broker"]), json!([])] {
        let err = describe(&dpo(refused.clone())).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{refused}");
        assert_eq!(reason(&err), "TOKEN_INVALID", "{refused}");
    }
}
