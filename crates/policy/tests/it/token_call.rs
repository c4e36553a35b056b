//! Calls a token in their message authorises are audited by the guard itself, so that a handler
//! that ignores the guard's [`TokenCall`] (or fails) cannot leave such a call unaudited.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};
use tutela_policy::audit::AuditLog;
use tutela_policy::principal::{AuthSettings, TokenVerifier};
use tutela_policy::{AccessRules, ConsentGate, Guard, GuardLayer, MethodTable, Register};

const UNSUBSCRIBE: &str = "/tutela.subscription.v1.SubscriptionService/Unsubscribe";

fn guard(log: AuditLog) -> Arc<Guard> {
    let verifier = TokenVerifier::new(&AuthSettings {
        issuer: "t".into(),
        audience: "t".into(),
        hs256_secret: Some("0123456789abcdef0123456789abcdef".into()),
        jwks: None,
        leeway_secs: 0,
    })
    .unwrap();
    Arc::new(
        Guard::new(
            log,
            verifier,
            Arc::new(Register::default_register().unwrap()),
            Arc::new(AccessRules::default_rules().unwrap()),
            MethodTable::from_pool(tutela_proto::descriptor_pool().unwrap()),
            Arc::new(ConsentGate::without_ledger()),
        )
        .unwrap(),
    )
}

/// A gRPC call of `path` with an empty request message and no credential at all.
fn empty_call(path: &str) -> http::Request<Body> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(http_body_util::Full::new(Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ]))))
        .unwrap()
}

async fn token_holder_records(conn: &DatabaseConnection) -> Vec<(String, String, String)> {
    conn.query_all_raw(Statement::from_string(
        conn.get_database_backend(),
        "SELECT rpc, decision, reason FROM tutela_audit_log \
         WHERE principal_kind = 'token-holder' ORDER BY seq"
            .to_owned(),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get("", "rpc").unwrap(),
            r.try_get("", "decision").unwrap(),
            r.try_get("", "reason").unwrap(),
        )
    })
    .collect()
}

#[tokio::test]
async fn a_token_call_whose_handler_ignores_the_audit_is_audited_by_the_guard() {
    let (_db, conn, log, _keys) = crate::audit::setup().await;
    let guard = guard(log);
    // Handlers that never look at the guard's TokenCall: one answers, one refuses.
    let answers = tower::service_fn(|_req: http::Request<Body>| async {
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(Body::empty())
                .unwrap(),
        )
    });
    let refuses = tower::service_fn(|_req: http::Request<Body>| async {
        Ok::<_, Infallible>(tonic::Status::not_found("no such subscription").into_http())
    });

    let mut svc = GuardLayer::new(guard.clone()).layer(answers);
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(empty_call(UNSUBSCRIBE))
        .await
        .unwrap();
    assert!(!response.headers().contains_key("grpc-status"));
    let mut svc = GuardLayer::new(guard).layer(refuses);
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(empty_call(UNSUBSCRIBE))
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "5");

    let rpc = UNSUBSCRIBE.trim_start_matches('/');
    assert_eq!(
        token_holder_records(&conn).await,
        [
            (rpc.to_owned(), "allow".to_owned(), String::new()),
            (rpc.to_owned(), "deny".to_owned(), "NOT_FOUND".to_owned()),
        ]
    );
}
