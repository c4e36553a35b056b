//! The data path's cost, counted on the database itself (sea-orm's metric callback on a
//! connection of the test's own to the suite's database): a read of a learner is one statement,
//! a create one transaction of four that reads no consent ledger. And reading less often never
//! lets a data key outlive its shredding.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::Code;
use tonic::codegen::http::HeaderMap;
use tutela_enrolment::{LearnerService, Learners};
use tutela_policy::audit::AuditLog;
use tutela_policy::guard::Outcome;
use tutela_policy::{Authorized, CategorySet, ConsentGate, Guard};
use tutela_proto::enrolment::learner_service_server::LearnerService as _;
use tutela_proto::enrolment::{CreateLearnerRequest, GetLearnerRequest};
use tutela_store::KeyVault;
use tutela_testkit::TestSuite;

use crate::*;

const GET: &str = "/tutela.enrolment.v1.LearnerService/GetLearner";
const CREATE: &str = "/tutela.enrolment.v1.LearnerService/CreateLearner";

/// The enrolment service's storage beside a running suite, over a connection of its own to the
/// suite's database that counts the statements it runs, with a guard of the suite's
/// configuration that has no consent ledger: a call that needs the ledger fails (UNAVAILABLE),
/// so one that passes read none.
struct Counted {
    learners: Learners,
    guard: Guard,
    statements: Arc<AtomicUsize>,
}

impl Counted {
    async fn beside(suite: &TestSuite) -> Self {
        let config = suite.config();
        let mut db = suite.database().connect().await.unwrap();
        let statements = Arc::new(AtomicUsize::new(0));
        let counter = statements.clone();
        db.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let keys = tutela::keys::load_audit_keys(config).unwrap();
        let learners = Learners::new(
            db,
            Arc::new(tutela::keys::load_keyring(config).unwrap()),
            keys.clone(),
            Arc::new(tutela_store::SystemClock),
        );
        let guard = tutela::guard::build(
            config,
            AuditLog::detached(keys),
            Arc::new(tutela::guard::load_register(config).unwrap()),
            Arc::new(ConsentGate::without_ledger()),
        )
        .unwrap();
        Self {
            learners,
            guard,
            statements,
        }
    }

    /// The guard's authorisation of a call of `path` with `token` for `purpose`.
    fn authorize(&self, path: &str, token: &str, purpose: &str) -> Authorized {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers.insert("x-tutela-purpose", purpose.parse().unwrap());
        match self.guard.check(path, &headers) {
            Ok(Outcome::Authorized(authorized, _)) => authorized,
            other => panic!("not authorised: {other:?}"),
        }
    }

    fn statements(&self) -> usize {
        self.statements.load(Ordering::SeqCst)
    }
}

async fn create_as_registrar(suite: &TestSuite) -> String {
    suite
        .learners(staff(suite, "registrar", "course_administration"))
        .create_learner(CreateLearnerRequest {
            profile: Some(profile()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .learner_id
}

#[tokio::test]
async fn reading_a_learner_reads_their_row_parts_and_key_in_one_statement() {
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await;
    let counted = Counted::beside(&suite).await;
    // The learner's own access request: a purpose that needs no consent ledger.
    let own = suite.token("acme", &id, &["learner"]);
    let call = counted.authorize(GET, &own, "subject_rights");
    let access = call.subject(&id).await.unwrap();

    let before = counted.statements();
    let learner = counted
        .learners
        .learner(&access, call.readable())
        .await
        .unwrap();
    assert_eq!(counted.statements() - before, 1);
    let p = learner.profile.unwrap();
    assert_eq!((p.email.as_str(), p.date_of_birth.as_str()), (EMAIL, DOB));
    assert_eq!(p.disabilities, [DISABILITY]);

    // Nothing of a category not asked for is opened; the row alone still reads as one.
    let before = counted.statements();
    let bare = counted
        .learners
        .learner(&access, CategorySet::EMPTY)
        .await
        .unwrap();
    assert_eq!(counted.statements() - before, 1);
    assert_eq!(bare.profile.unwrap(), Default::default());
    assert_eq!(bare.created_at, learner.created_at);
}

#[tokio::test]
async fn creating_a_learner_is_one_transaction_of_four_statements_without_the_ledger() {
    let suite = TestSuite::start().await.unwrap();
    let counted = Counted::beside(&suite).await;
    let service = LearnerService::new(
        counted.learners.clone(),
        Arc::new(tutela::guard::load_register(suite.config()).unwrap()),
    );
    let registrar = suite.token("acme", "registrar-1", &["registrar"]);
    let call = counted.authorize(CREATE, &registrar, "course_administration");
    let mut request = tonic::Request::new(CreateLearnerRequest {
        profile: Some(profile()),
        ..Default::default()
    });
    request.extensions_mut().insert(call);

    let before = counted.statements();
    let created = service
        .create_learner(request)
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap();
    // The audit record (staged in the outbox), the data key, the learner's row, and their
    // parts in one insert: no look-up of the key first, and no consent ledger read for an id
    // that no ledger entry can name yet (this guard has no ledger and would refuse the call).
    assert_eq!(counted.statements() - before, 4);

    // The suite, with its own vault, reads what was written.
    let read = suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .get_learner(GetLearnerRequest {
            learner: subject(&created.learner_id),
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .profile
        .unwrap();
    assert_eq!(
        (read.email.as_str(), read.family_name.as_str()),
        (EMAIL, FAMILY)
    );
}

#[tokio::test]
async fn a_shredded_key_leaves_the_learner_unreadable_at_once() {
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await;
    let mut registrar = suite.learners(staff(&suite, "registrar", "course_administration"));
    let get = || GetLearnerRequest {
        learner: subject(&id),
    };
    registrar.get_learner(get()).await.unwrap();

    // The key destroyed as another replica's erasure destroys it, its rows not yet deleted:
    // the very next read finds nothing it can open, whatever this process read before.
    let db = suite.database().connect().await.unwrap();
    let vault = KeyVault::new(
        db,
        Arc::new(tutela::keys::load_keyring(suite.config()).unwrap()),
        tutela_enrolment::SERVICE,
        Arc::new(tutela_store::SystemClock),
    );
    assert!(vault.shred("acme", &id).await.unwrap());
    let err = registrar.get_learner(get()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SUBJECT_ERASED");
}
