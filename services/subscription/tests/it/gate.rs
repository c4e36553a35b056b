//! The guard's consent gate reading the real ledger: a withdrawal takes effect on the next call in
//! the process that recorded it, and within one second in another process on the same database.
//! Built from the public guard API (no gRPC server), so that each "process" is a guard, a ledger
//! and a consent gate of its own.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tonic::Request;
use tutela_ledger::{ConsentLedgerService, Ledger};
use tutela_policy::access::{AccessRules, DEFAULT_POLICIES, DEFAULT_SCHEMA};
use tutela_policy::audit::{AuditKeys, AuditLog};
use tutela_policy::consent::{RemoteLedger, RemoteLedgerSettings};
use tutela_policy::guard::Outcome;
use tutela_policy::principal::{AuthSettings, TokenRequest, TokenVerifier, issue_hs256};
use tutela_policy::{Authorized, ConsentSource, Guard, MethodTable, Register, Tenant};
use tutela_proto::common::Purpose;
use tutela_proto::consent::consent_ledger_server::ConsentLedger;
use tutela_store::testing::TestDatabase;
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

const SECRET: &str = "a test secret of at least thirty-two bytes";

/// No RPC of the default rules lets marketing read a subject for the `marketing` purpose yet
/// (the subscription RPCs come later), so this test grants the ledger's read for it.
const MARKETING_READS: &str = r#"
@id("test-marketing-reads-the-ledger-for-marketing")
permit (
  principal in Tutela::Role::"marketing",
  action in Tutela::Action::"consent_read",
  resource
) when { context.purpose == "marketing" };
"#;

pub struct Process {
    pub guard: Guard,
    pub ledger: ConsentLedgerService,
}

/// A guard, ledger and consent gate over `db`, with the default rules plus `extra` policies.
pub async fn process(
    db: &sea_orm::DatabaseConnection,
    keyring: Arc<tutela_store::Keyring>,
    extra: &str,
) -> Process {
    process_reading(db, keyring, extra, None).await
}

/// As [`process`], with the gate reading consent from `source` instead of the local ledger.
pub async fn process_reading(
    db: &sea_orm::DatabaseConnection,
    keyring: Arc<tutela_store::Keyring>,
    extra: &str,
    source: Option<Arc<dyn ConsentSource>>,
) -> Process {
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    let register = Arc::new(Register::default_register().unwrap());
    let ledger = match source {
        Some(source) => Ledger::reading(db.clone(), keyring, clock.clone(), source),
        None => Ledger::new(db.clone(), keyring, clock.clone()),
    };
    let gate = ledger.gate();
    let rules = AccessRules::new(DEFAULT_SCHEMA, &format!("{DEFAULT_POLICIES}\n{extra}")).unwrap();
    let verifier = TokenVerifier::new(&AuthSettings {
        issuer: "tutela".into(),
        audience: "tutela".into(),
        hs256_secret: Some(SecretString::from(SECRET)),
        jwks: None,
        leeway_secs: 0,
    })
    .unwrap();
    let guard = Guard::new(
        AuditLog::start(db.clone(), AuditKeys::from_secret(SECRET.as_bytes()), clock),
        verifier,
        register.clone(),
        Arc::new(rules),
        MethodTable::from_pool(tutela_proto::descriptor_pool().unwrap()),
        gate.clone(),
    )
    .unwrap();
    Process {
        guard,
        ledger: ConsentLedgerService::new(&ledger, register),
    }
}

/// Call metadata for a principal of tenant `acme`.
pub fn headers_for(request: &TokenRequest, purpose: &str) -> http::HeaderMap {
    let token = issue_hs256(
        &SecretString::from(SECRET),
        "tutela",
        "tutela",
        request,
        chrono::Utc::now(),
    )
    .unwrap();
    let mut h = http::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h.insert("x-tutela-purpose", purpose.parse().unwrap());
    h
}

pub fn staff(role: &str) -> TokenRequest {
    TokenRequest {
        tenant: "acme".into(),
        subject: "staff-1".into(),
        kind: None,
        roles: vec![role.into()],
        partner: None,
        wards: Vec::new(),
        ttl: chrono::Duration::hours(1),
    }
}

fn headers(role: &str, purpose: &str) -> http::HeaderMap {
    headers_for(&staff(role), purpose)
}

fn authorize(p: &Process, rpc: &str, role: &str, purpose: &str) -> Authorized {
    match p.guard.check(
        &format!("/tutela.consent.v1.ConsentLedger/{rpc}"),
        &headers(role, purpose),
    ) {
        Ok(Outcome::Authorized(a, _)) => a,
        other => panic!("{rpc} as {role} for {purpose}: {other:?}"),
    }
}

pub fn with<T>(body: T, authorized: Authorized) -> Request<T> {
    let mut r = Request::new(body);
    r.extensions_mut().insert(authorized);
    r
}

/// What the guard says about processing the subject for marketing in process `p`.
async fn marketing(p: &Process) -> Result<(), String> {
    let call = authorize(p, "GetConsentState", "marketing", "marketing");
    call.subject(SUBJECT)
        .await
        .map(|_| ())
        .map_err(|e| e.reason().to_owned())
}

async fn record(p: &Process, granted: bool) {
    let call = authorize(p, "RecordConsent", "registrar", "consent_management");
    if granted {
        p.ledger
            .record_consent(with(grant(SUBJECT, Purpose::Marketing, ""), call))
            .await
            .unwrap();
    } else {
        p.ledger
            .withdraw_consent(with(withdraw(SUBJECT, Purpose::Marketing, ""), call))
            .await
            .unwrap();
    }
}

/// A fresh database with the audit and subscription tables, and a keyring.
pub async fn migrated() -> (
    TestDatabase,
    sea_orm::DatabaseConnection,
    Arc<tutela_store::Keyring>,
) {
    let database = TestDatabase::create().await.unwrap();
    let db = database.connect().await.unwrap();
    let mut sets = vec![tutela_store::migrations_of::<
        tutela_policy::audit::migration::AuditMigrator,
    >("audit")];
    sets.extend(tutela_host::HostedService::migrations(
        tutela_subscription::HOSTED,
    ));
    tutela_store::migrate(&db, &sets).await.unwrap();
    let kek = tutela_store::Keyring::generate_base64().unwrap();
    let keyring = Arc::new(tutela_store::Keyring::from_base64([("k1", &kek)]).unwrap());
    (database, db, keyring)
}

#[tokio::test]
async fn a_withdrawal_takes_effect_at_once_here_and_within_a_second_elsewhere() {
    let (_database, db, keyring) = migrated().await;
    let here = process(&db, keyring.clone(), MARKETING_READS).await;
    let elsewhere = process(&db, keyring, MARKETING_READS).await;

    // No entry yet: consent-based processing is refused in both.
    assert_eq!(marketing(&here).await.unwrap_err(), "CONSENT_REQUIRED");
    assert_eq!(marketing(&elsewhere).await.unwrap_err(), "CONSENT_REQUIRED");

    // A grant recorded here is seen here on the very next call, although "no consent" was cached.
    record(&here, true).await;
    marketing(&here).await.unwrap();
    // Elsewhere the cached refusal may last up to a second, never longer.
    tokio::time::sleep(tutela_policy::consent::MAX_TTL).await;
    marketing(&elsewhere).await.unwrap();

    // Both now hold a fresh "granted" in their caches. A withdrawal here applies here at once...
    marketing(&here).await.unwrap();
    record(&here, false).await;
    assert_eq!(marketing(&here).await.unwrap_err(), "CONSENT_REQUIRED");
    // ...and elsewhere once the cache's bound has passed.
    tokio::time::sleep(tutela_policy::consent::MAX_TTL + Duration::from_millis(10)).await;
    assert_eq!(marketing(&elsewhere).await.unwrap_err(), "CONSENT_REQUIRED");
}

/// A process that does not host the ledger reads it over gRPC from one that does (as a service
/// deployed on its own would), with a service token of the tenant from the token directory.
#[tokio::test]
async fn a_process_without_the_ledger_reads_it_remotely_and_fails_closed_without_it() {
    let suite = TestSuite::start().await.unwrap();
    let tokens = tempfile::tempdir().unwrap();
    let service = suite.token_for(TokenRequest {
        roles: vec!["service".into()],
        subject: "enrolment-service".into(),
        ..staff("service")
    });
    std::fs::write(tokens.path().join("acme"), format!("{service}\n")).unwrap();
    let remote = RemoteLedger::new(&RemoteLedgerSettings {
        endpoint: format!("http://{}", suite.addr()),
        ca_file: None,
        token_dir: tokens.path().to_owned(),
    })
    .unwrap();
    let (_database, db, keyring) = migrated().await;
    let elsewhere = process_reading(&db, keyring, MARKETING_READS, Some(Arc::new(remote))).await;

    // The ledger has nothing for the subject: no consent.
    assert_eq!(marketing(&elsewhere).await.unwrap_err(), "CONSENT_REQUIRED");

    let registrar = suite.token_for(staff("registrar"));
    let mut ledger = suite.consent_ledger(Credentials::new(&registrar, "consent_management"));
    ledger
        .record_consent(grant(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();
    tokio::time::sleep(tutela_policy::consent::MAX_TTL).await;
    marketing(&elsewhere).await.unwrap();

    // A grant for one named recipient only must not read as a grant of the whole purpose.
    ledger
        .record_consent(grant(OTHER_SUBJECT, Purpose::Marketing, "acme-exams"))
        .await
        .unwrap();
    let call = authorize(&elsewhere, "GetConsentState", "marketing", "marketing");
    assert_eq!(
        call.subject(OTHER_SUBJECT)
            .await
            .map(|_| ())
            .unwrap_err()
            .reason(),
        "CONSENT_REQUIRED"
    );

    ledger
        .withdraw_consent(withdraw(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();
    tokio::time::sleep(tutela_policy::consent::MAX_TTL + Duration::from_millis(10)).await;
    assert_eq!(marketing(&elsewhere).await.unwrap_err(), "CONSENT_REQUIRED");

    // A restriction recorded through the remote ledger is what the remote snapshot then says.
    let remote = RemoteLedger::new(&RemoteLedgerSettings {
        endpoint: format!("http://{}", suite.addr()),
        ca_file: None,
        token_dir: tokens.path().to_owned(),
    })
    .unwrap();
    remote
        .verify_identity(&tutela_policy::consent::IdentityVerification {
            tenant: &Tenant::named("acme"),
            subject: SUBJECT,
            method: tutela_proto::privacy::VerificationMethod::PhotoIdInPerson,
            evidence_reference: "front desk note 7",
            verified_by: "dpo-1",
            audit: &AuditedByTheLedger,
        })
        .await
        .unwrap();
    assert!(
        remote
            .snapshot(&Tenant::named("acme"), SUBJECT)
            .await
            .unwrap()
            .identity_verified_at
            .is_some()
    );
    for restricted in [true, false] {
        remote
            .restrict(&tutela_policy::consent::Restriction {
                tenant: &Tenant::named("acme"),
                subject: SUBJECT,
                restricted,
                reason: "accuracy contested",
                recorded_by: "dpo-1",
                audit: &AuditedByTheLedger,
            })
            .await
            .unwrap();
        assert_eq!(
            remote
                .snapshot(&Tenant::named("acme"), SUBJECT)
                .await
                .unwrap()
                .restricted,
            restricted
        );
    }

    // A guardian's consent recorded remotely (as the enrolment service does for a minor) reads
    // back as a guardian's grant, and a retry with its key appends nothing.
    let guardian = evidence(ConsentActor::Guardian);
    for _ in 0..2 {
        remote
            .record_guardian_consent(&tutela_policy::consent::GuardianGrant {
                tenant: &Tenant::named("acme"),
                subject: OTHER_SUBJECT,
                purpose: Purpose::CourseAdministration,
                evidence: &guardian,
                recorded_by: "registrar-1",
                idempotency_key: Some("guardian-remote-0001"),
                audit: &AuditedByTheLedger,
            })
            .await
            .unwrap();
    }
    let snapshot = remote
        .snapshot(&Tenant::named("acme"), OTHER_SUBJECT)
        .await
        .unwrap();
    assert!(snapshot.guardian_permits(Purpose::CourseAdministration));
    assert!(!snapshot.guardian_permits(Purpose::Marketing));
    let history = ledger
        .list_consent_history(tutela_proto::consent::ListConsentHistoryRequest {
            subject: subject(OTHER_SUBJECT),
            purpose: Purpose::CourseAdministration as i32,
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 1);

    // Without a token for the tenant, or with the ledger gone, consent cannot be checked: the
    // call fails closed rather than proceeding.
    std::fs::remove_file(tokens.path().join("acme")).unwrap();
    tokio::time::sleep(tutela_policy::consent::MAX_TTL).await;
    assert_eq!(marketing(&elsewhere).await.unwrap_err(), "UNAVAILABLE");
    std::fs::write(tokens.path().join("acme"), &service).unwrap();
    suite.stop().await.unwrap();
    assert_eq!(marketing(&elsewhere).await.unwrap_err(), "UNAVAILABLE");
}

/// Where the operator's rules withhold recipients from the service's token, the remote source
/// cannot tell a recipient's grant from a whole-purpose one, so it refuses to decide.
#[tokio::test]
async fn a_remote_answer_with_withheld_recipients_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.cedar");
    std::fs::write(
        &policies,
        format!(
            "{}\n@id(\"test-services-never-read-employment\")\nforbid (principal in Tutela::Role::\"service\", action == Tutela::Action::\"read::employment\", resource);\n",
            tutela_policy::access::DEFAULT_POLICIES
        ),
    )
    .unwrap();
    let suite = TestSuite::start_with(|c| c.access.policies_file = policies.clone())
        .await
        .unwrap();
    let registrar = suite.token_for(staff("registrar"));
    suite
        .consent_ledger(Credentials::new(&registrar, "consent_management"))
        .record_consent(grant(SUBJECT, Purpose::Marketing, "acme-exams"))
        .await
        .unwrap();

    let service = suite.token_for(staff("service"));
    let answer = suite
        .consent_ledger(Credentials::new(&service, "consent_management"))
        .get_consent_state(tutela_proto::consent::GetConsentStateRequest {
            subject: subject(SUBJECT),
            purpose: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        answer
            .metadata()
            .get("x-tutela-withheld-categories")
            .unwrap(),
        "employment"
    );
    assert_eq!(answer.get_ref().states[0].recipient, "", "redacted");

    let tokens = tempfile::tempdir().unwrap();
    std::fs::write(tokens.path().join("acme"), &service).unwrap();
    let remote = RemoteLedger::new(&RemoteLedgerSettings {
        endpoint: format!("http://{}", suite.addr()),
        ca_file: None,
        token_dir: tokens.path().to_owned(),
    })
    .unwrap();
    let err = remote
        .snapshot(&Tenant::named("acme"), SUBJECT)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "UNAVAILABLE");
}

/// A remote ledger stages nothing here: the ledger service's own guard audits the write. What a
/// caller of the remote ledger passes.
struct AuditedByTheLedger;

#[async_trait::async_trait]
impl tutela_policy::audit::StageAudit for AuditedByTheLedger {
    async fn stage_in(
        &self,
        _txn: &sea_orm::DatabaseTransaction,
        _categories: tutela_policy::CategorySet,
    ) -> tutela_policy::Result<()> {
        Ok(())
    }
}
