//! TLS on the gRPC port (X3): a client trusting the development CA is served; a plaintext client
//! and a client that does not trust the certificate are not; with client certificates required,
//! a client without one fails its handshake and one with it is served, its certificate visible
//! to the server; a renewed certificate is picked up by new connections while calls on open ones
//! go on without a failure; and the process's calls to its own services (the rights coordinator
//! here) go over TLS too.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tutela::tls::ClientCerts;
use tutela_testkit::TestSuite;

/// Development certificates in `dir` (as `tutela dev-certs` writes them).
fn certs(dir: &Path) {
    tutela::devcerts::write(dir, &[], "acme-exam-board", 1).unwrap();
}

async fn suite(dir: &Path, client_certs: ClientCerts) -> TestSuite {
    TestSuite::start_with(|c| {
        c.server.tls.cert_file = dir.join("server.pem");
        c.server.tls.key_file = dir.join("server-key.pem");
        c.server.tls.ca_file = dir.join("ca.pem");
        c.server.tls.reload_interval_secs = 1;
        c.sections.insert(
            "rights".into(),
            serde_json::json!({ "interval_secs": 1, "retry_base_secs": 1 }),
        );
        if client_certs != ClientCerts::None {
            c.server.tls.client_ca_file = dir.join("ca.pem");
            c.server.tls.client_certs = client_certs;
        }
    })
    .await
    .unwrap()
}

async fn serving(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// The connection failed (not the call on it): in the handshake, or at the first request where
/// TLS 1.3 reports a refused client certificate only after the handshake.
fn refused(err: &tonic::Status) {
    let transport =
        err.code() == tonic::Code::Unavailable || err.message().contains("transport error");
    assert!(transport, "{err:?}");
}

fn tls_channel(suite: &TestSuite, ca: &Path, identity: Option<&Path>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(ca.join("ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    if let Some(dir) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join("client.pem")).unwrap(),
            std::fs::read(dir.join("client-key.pem")).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{}", suite.addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

#[tokio::test]
async fn a_tls_port_serves_clients_that_trust_it_and_nothing_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let other = tempfile::tempdir().unwrap();
    certs(other.path());
    let suite = suite(dir.path(), ClientCerts::None).await;
    serving(tls_channel(&suite, dir.path(), None))
        .await
        .unwrap();
    // The testkit's own channel speaks TLS too.
    serving(suite.channel()).await.unwrap();

    let plaintext = Endpoint::from_shared(format!("http://{}", suite.addr()))
        .unwrap()
        .connect_lazy();
    let err = serving(plaintext).await.unwrap_err();
    refused(&err);
    // A certificate of another CA is not trusted.
    let err = serving(tls_channel(&suite, other.path(), None))
        .await
        .unwrap_err();
    refused(&err);
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn required_client_certificates_refuse_a_client_without_one() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let other = tempfile::tempdir().unwrap();
    certs(other.path());
    let suite = suite(dir.path(), ClientCerts::Required).await;
    serving(tls_channel(&suite, dir.path(), Some(dir.path())))
        .await
        .unwrap();
    let err = serving(tls_channel(&suite, dir.path(), None))
        .await
        .unwrap_err();
    refused(&err);
    // A client certificate of another CA is refused too.
    let err = serving(tls_channel(&suite, dir.path(), Some(other.path())))
        .await
        .unwrap_err();
    refused(&err);
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_is_used_for_new_connections_without_a_failed_call() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let renewed = tempfile::tempdir().unwrap();
    certs(renewed.path());
    // The configured files live apart from the CA they came with, as cert-manager's do.
    let live = tempfile::tempdir().unwrap();
    for f in ["server.pem", "server-key.pem"] {
        std::fs::copy(dir.path().join(f), live.path().join(f)).unwrap();
    }
    std::fs::copy(dir.path().join("ca.pem"), live.path().join("ca.pem")).unwrap();
    let suite = suite(live.path(), ClientCerts::None).await;

    // Calls run on an open connection throughout the renewal.
    let open = tls_channel(&suite, dir.path(), None);
    serving(open.clone()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn({
        let (open, stop, calls, failures) =
            (open.clone(), stop.clone(), calls.clone(), failures.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                match serving(open.clone()).await {
                    Ok(()) => calls.fetch_add(1, Ordering::SeqCst),
                    Err(_) => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        }
    });

    // The renewal: the key first, then the certificate, each replaced atomically (a reader
    // between the two sees a mismatched pair, which must not load).
    for f in ["server-key.pem", "server.pem"] {
        let staged = live.path().join(format!(".{f}.new"));
        std::fs::copy(renewed.path().join(f), &staged).unwrap();
        std::fs::rename(&staged, live.path().join(f)).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // New connections get the renewed certificate: a client trusting only the new CA connects
    // (within a few reload intervals), one trusting only the old CA no longer does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while serving(tls_channel(&suite, renewed.path(), None))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let err = serving(tls_channel(&suite, dir.path(), None))
        .await
        .unwrap_err();
    refused(&err);

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(calls.load(Ordering::SeqCst) > 10, "{calls:?}");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "calls failed during the renewal"
    );
    // The open connection still serves.
    serving(open).await.unwrap();
    suite.stop().await.unwrap();
}

#[test]
fn dev_certs_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let err = tutela::devcerts::write(dir.path(), &[], "x", 1).unwrap_err();
    assert!(err.to_string().contains("never overwrites"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("server-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "keys are readable by their owner only");
}

#[tokio::test]
async fn with_tls_the_process_calls_its_own_services_over_it() {
    use tutela_proto::common::SubjectRef;
    use tutela_proto::privacy::VerificationMethod;
    use tutela_proto::rights::{
        GetRightsRequestRequest, Requester, RightsRequestKind, RightsRequestState,
        SubmitRightsRequestRequest, VerifyRequesterIdentityRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let suite = suite(dir.path(), ClientCerts::None).await;
    let me = suite
        .create_learners("acme", [tutela_testkit::sample_profile(7)], 1)
        .await
        .unwrap()
        .remove(0);
    let dpo = || {
        tutela_testkit::Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights")
    };
    let request = suite
        .rights(dpo())
        .submit_rights_request(SubmitRightsRequestRequest {
            subject: Some(SubjectRef { subject_id: me }),
            kind: RightsRequestKind::Access as i32,
            requester: Requester::Subject as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    suite
        .rights(dpo())
        .verify_requester_identity(VerifyRequesterIdentityRequest {
            request_id: request.request_id.clone(),
            method: VerificationMethod::PhotoIdInPerson as i32,
            evidence_reference: "front desk note 7".into(),
        })
        .await
        .unwrap();
    // The coordinator calls every service's SubjectData at this process's own TLS port.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = suite
            .rights(dpo())
            .get_rights_request(GetRightsRequestRequest {
                request_id: request.request_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        if now.state == RightsRequestState::Completed as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not completed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    suite.stop().await.unwrap();
}
