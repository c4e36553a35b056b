//! What services use: appends the gate sees at once, the tenant's marketing exclusions, the
//! subject's history and the ledger's part of an erasure.

use std::sync::Arc;

use tutela_ledger::{Append, Ledger};
use tutela_policy::Tenant;
use tutela_policy::audit::StageAudit;
use tutela_proto::common::Purpose;
use tutela_proto::consent::{ConsentActor, ConsentEvidence, ConsentMethod};
use tutela_store::testing::TestDatabase;

fn tenant() -> Tenant {
    Tenant::named("acme")
}
const SUBJECT: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";

/// Stages nothing: the audit records of appends are tested with the RPCs that make them.
struct NoRecord;

#[async_trait::async_trait]
impl StageAudit for NoRecord {
    async fn stage_in(
        &self,
        _txn: &sea_orm::DatabaseTransaction,
        _categories: tutela_policy::CategorySet,
    ) -> tutela_policy::Result<()> {
        Ok(())
    }
}

async fn ledger() -> (TestDatabase, Ledger) {
    let database = TestDatabase::create().await.unwrap();
    let db = database.connect().await.unwrap();
    tutela_store::migrate(&db, &[tutela_ledger::migration::migrations()])
        .await
        .unwrap();
    let kek = tutela_store::Keyring::generate_base64().unwrap();
    let keyring = Arc::new(tutela_store::Keyring::from_base64([("k1", &kek)]).unwrap());
    let clock: tutela_store::SharedClock = Arc::new(tutela_store::SystemClock);
    (database, Ledger::new(db, keyring, clock))
}

fn marketing(granted: bool) -> Append {
    Append {
        subject: SUBJECT.to_owned(),
        purpose: Purpose::Marketing,
        recipient: String::new(),
        granted,
        evidence: ConsentEvidence {
            method: ConsentMethod::WebForm as i32,
            wording_version: "marketing-2026-03".into(),
            wording_sha256: "a".repeat(64),
            evidence_reference: "form-submission-7781".into(),
            actor: ConsentActor::Subject as i32,
            guardian: None,
        },
        occurred_at: None,
        idempotency: None,
    }
}

async fn permits_marketing(ledger: &Ledger) -> bool {
    ledger
        .gate()
        .snapshot(&tenant(), SUBJECT)
        .await
        .unwrap()
        .permits(Purpose::Marketing, None)
}

#[tokio::test]
async fn appends_reach_the_gate_at_once_and_an_erasure_keeps_only_the_bare_facts() {
    let (_database, ledger) = ledger().await;
    // "No consent" is cached now; only the ledger's own invalidation lets the next read see
    // the grant within the cache's second.
    assert!(!permits_marketing(&ledger).await);
    assert!(!ledger.has_entries(&tenant(), SUBJECT).await.unwrap());
    ledger
        .append(&tenant(), &marketing(true), "registrar-1", &NoRecord)
        .await
        .unwrap();
    assert!(permits_marketing(&ledger).await);
    assert!(
        ledger
            .marketing_exclusions(&tenant())
            .await
            .unwrap()
            .is_empty()
    );

    ledger
        .append(&tenant(), &marketing(false), "registrar-1", &NoRecord)
        .await
        .unwrap();
    assert!(!permits_marketing(&ledger).await);
    let excluded = ledger.marketing_exclusions(&tenant()).await.unwrap();
    assert!(excluded.contains(SUBJECT), "{excluded:?}");

    let history = ledger.history(&tenant(), SUBJECT).await.unwrap();
    assert_eq!(history.len(), 2);
    let reference = |h: &[tutela_proto::consent::ConsentEntry]| {
        h.iter()
            .map(|e| e.evidence.as_ref().unwrap().evidence_reference.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(reference(&history), ["form-submission-7781"; 2]);

    // Erased: the key is shredded, the evidence references are gone, the facts stay as proof.
    assert!(ledger.erase(&tenant(), SUBJECT).await.unwrap());
    let history = ledger.history(&tenant(), SUBJECT).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(reference(&history), ["", ""]);
    assert!(ledger.has_entries(&tenant(), SUBJECT).await.unwrap());
    assert!(!ledger.erase(&tenant(), SUBJECT).await.unwrap());
}
