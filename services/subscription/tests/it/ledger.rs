//! The consent ledger over real gRPC.

use sea_orm::ConnectionTrait;
use tonic::Code;
use tutela_policy::principal::TokenRequest;
use tutela_proto::common::Purpose;
use tutela_proto::consent::{
    ConsentAction, ConsentActor, GetConsentStateRequest, ListConsentHistoryRequest,
};
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

const CM: &str = "consent_management";

fn registrar(suite: &TestSuite) -> Credentials {
    Credentials::new(&suite.token("acme", "staff-1", &["registrar"]), CM)
}

fn state(id: &str) -> GetConsentStateRequest {
    GetConsentStateRequest {
        subject: subject(id),
        purpose: 0,
    }
}

#[tokio::test]
async fn grants_and_withdrawals_fold_into_the_current_state_and_the_history_keeps_both() {
    let suite = TestSuite::start().await.unwrap();
    let mut ledger = suite.consent_ledger(registrar(&suite));
    let granted = ledger
        .record_consent(grant(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(granted.action, ConsentAction::Granted as i32);
    assert_eq!(granted.recorded_by, "staff-1");
    let evidence = granted.evidence.unwrap();
    assert_eq!(evidence.evidence_reference, EVIDENCE_REF);
    ledger
        .record_consent(grant(
            SUBJECT,
            Purpose::ThirdPartyDisclosure,
            "acme-employer",
        ))
        .await
        .unwrap();
    ledger
        .withdraw_consent(withdraw(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();

    let states = ledger
        .get_consent_state(state(SUBJECT))
        .await
        .unwrap()
        .into_inner()
        .states;
    let summary: Vec<(i32, &str, bool)> = states
        .iter()
        .map(|s| (s.purpose, s.recipient.as_str(), s.granted))
        .collect();
    assert_eq!(
        summary,
        [
            (Purpose::Marketing as i32, "", false),
            (Purpose::ThirdPartyDisclosure as i32, "acme-employer", true),
        ]
    );

    // Paged history, oldest first, both the grant and the withdrawal kept.
    let mut actions = Vec::new();
    let mut token = String::new();
    loop {
        let page = ledger
            .list_consent_history(ListConsentHistoryRequest {
                subject: subject(SUBJECT),
                purpose: 0,
                page: Some(tutela_proto::common::PageRequest {
                    page_size: 2,
                    page_token: token.clone(),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        actions.extend(page.entries.iter().map(|e| (e.purpose, e.action)));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        actions,
        [
            (Purpose::Marketing as i32, ConsentAction::Granted as i32),
            (
                Purpose::ThirdPartyDisclosure as i32,
                ConsentAction::Granted as i32
            ),
            (Purpose::Marketing as i32, ConsentAction::Withdrawn as i32),
        ]
    );
}

#[tokio::test]
async fn bad_input_names_every_field_and_stores_nothing() {
    let suite = TestSuite::start().await.unwrap();
    let mut ledger = suite.consent_ledger(registrar(&suite));
    let bad = |subject: &str| {
        let mut request = grant(subject, Purpose::CourseAdministration, "");
        let e = request.evidence.as_mut().unwrap();
        e.wording_sha256 = "XYZ".into();
        e.method = 0;
        // A guardian named for a decision the subject made (and the subject's own consent cannot
        // name a purpose that does not rest on consent).
        e.guardian = evidence(ConsentActor::Guardian).guardian;
        request
    };
    // A subject id that is no UUID is refused by the guard's contract check, before the handler.
    let err = ledger.record_consent(bad("not-a-uuid")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["subject.subject_id"]);
    let err = ledger
        .record_consent(bad("0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a70"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "purpose",
            "evidence.method",
            "evidence.wording_sha256",
            "evidence.guardian",
        ]
    );
    // A purpose not based on consent is refused: no pretend consent for contract processing.
    let err = ledger
        .record_consent(grant(SUBJECT, Purpose::CourseAdministration, ""))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["purpose"]);
    let err = ledger.get_consent_state(state(SUBJECT)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "nothing was stored");
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_appends_once() {
    let suite = TestSuite::start().await.unwrap();
    let mut ledger = suite.consent_ledger(registrar(&suite));
    let request = keyed(grant(SUBJECT, Purpose::Marketing, ""), "retry-key-0001");
    let first = ledger.record_consent(request.clone()).await.unwrap();
    let second = ledger.record_consent(request).await.unwrap();
    assert_eq!(
        first.into_inner().entry.unwrap().entry_id,
        second.into_inner().entry.unwrap().entry_id
    );
    let reused = keyed(
        grant(SUBJECT, Purpose::FunderReporting, ""),
        "retry-key-0001",
    );
    let err = ledger.record_consent(reused).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let history = ledger
        .list_consent_history(ListConsentHistoryRequest {
            subject: subject(SUBJECT),
            purpose: 0,
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 1);
}

/// RecordConsent and WithdrawConsent share their fields and their table: a withdrawal that reuses
/// a grant's key with the same fields is another request (ALREADY_EXISTS), never a "retry" that
/// answers with the grant and leaves consent given.
#[tokio::test]
async fn a_withdrawal_reusing_a_grants_idempotency_key_is_refused_and_withdraws_nothing() {
    let suite = TestSuite::start().await.unwrap();
    let mut ledger = suite.consent_ledger(registrar(&suite));
    let key = Some(tutela_proto::common::IdempotencyKey {
        key: "grant-key-0001".into(),
    });
    let mut record = grant(SUBJECT, Purpose::Marketing, "");
    record.idempotency_key = key.clone();
    ledger.record_consent(record).await.unwrap();
    let mut withdrawal = withdraw(SUBJECT, Purpose::Marketing, "");
    withdrawal.idempotency_key = key;
    let err = ledger.withdraw_consent(withdrawal).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let states = ledger
        .get_consent_state(state(SUBJECT))
        .await
        .unwrap()
        .into_inner()
        .states;
    assert_eq!(states.len(), 1);
    assert!(states[0].granted, "the grant stands: nothing was withdrawn");
}

#[tokio::test]
async fn the_database_itself_refuses_to_change_or_delete_an_entry() {
    let suite = TestSuite::start().await.unwrap();
    let mut ledger = suite.consent_ledger(registrar(&suite));
    ledger
        .record_consent(grant(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();
    let db = suite.database().connect().await.unwrap();
    for sql in [
        "UPDATE consent_entries SET granted = false",
        "DELETE FROM consent_entries",
    ] {
        let err = db.execute_unprepared(sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let states = ledger
        .get_consent_state(state(SUBJECT))
        .await
        .unwrap()
        .into_inner()
        .states;
    assert!(states[0].granted);
}

#[tokio::test]
async fn another_tenants_subject_is_not_found_and_a_learner_reaches_only_themselves() {
    let suite = TestSuite::start().await.unwrap();
    suite
        .consent_ledger(registrar(&suite))
        .record_consent(grant(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();
    let other_tenant = Credentials::new(&suite.token("globex", "staff-9", &["registrar"]), CM);
    let err = suite
        .consent_ledger(other_tenant)
        .get_consent_state(state(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A learner records and reads their own consent; another learner's is NOT_FOUND.
    let me = Credentials::new(&suite.token("acme", SUBJECT, &["learner"]), CM);
    let mut mine = suite.consent_ledger(me);
    mine.withdraw_consent(withdraw(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();
    let err = mine
        .record_consent(grant(OTHER_SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // ...and cannot pretend to be a guardian.
    let mut as_guardian = grant(SUBJECT, Purpose::Marketing, "");
    as_guardian.evidence = Some(evidence(ConsentActor::Guardian));
    let err = mine.record_consent(as_guardian).await.unwrap_err();
    assert_eq!(fields(&err), ["evidence.actor"]);
}

#[tokio::test]
async fn a_guardian_decides_for_a_ward_under_their_own_identity() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token_for(TokenRequest {
        tenant: "acme".into(),
        subject: "guardian-42".into(),
        kind: None,
        roles: vec!["guardian".into()],
        partner: None,
        wards: vec![SUBJECT.into()],
        ttl: chrono::Duration::hours(1),
    });
    let mut ledger = suite.consent_ledger(Credentials::new(&token, CM));
    let mut request = grant(SUBJECT, Purpose::Marketing, "");
    request.evidence = Some(evidence(ConsentActor::Guardian));
    let entry = ledger
        .record_consent(request)
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    let guardian = entry.evidence.unwrap().guardian.unwrap();
    assert_eq!(guardian.guardian_id, "guardian-42");
    assert_eq!(guardian.name, GUARDIAN_NAME);
    // Not a ward: out of reach.
    let mut request = grant(OTHER_SUBJECT, Purpose::Marketing, "");
    request.evidence = Some(evidence(ConsentActor::Guardian));
    assert_eq!(
        ledger.record_consent(request).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn partners_and_tutors_have_no_access_to_the_ledger() {
    let suite = TestSuite::start().await.unwrap();
    for role in ["partner", "tutor", "exam_officer"] {
        // A partner token names its partner (one without is refused as inconsistent).
        let token = suite.token_for(TokenRequest {
            partner: (role == "partner").then(|| "exam-board-1".into()),
            ..crate::gate::staff(role)
        });
        let creds = Credentials::new(&token, CM);
        let err = suite
            .consent_ledger(creds)
            .record_consent(grant(SUBJECT, Purpose::Marketing, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
        assert_eq!(reason(&err), "ACCESS_DENIED");
    }
}

/// The request as clients built it before `method` became an enum: free text in field 2.
#[derive(Clone, PartialEq, prost::Message)]
struct FreeTextVerification {
    #[prost(message, optional, tag = "1")]
    subject: Option<tutela_proto::common::SubjectRef>,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(string, tag = "3")]
    evidence_reference: String,
}

#[tokio::test]
async fn a_verification_method_is_the_closed_enum_stored_by_short_name_and_no_request_value_is_logged()
 {
    use prost::Message as _;
    use tutela_proto::VERIFICATION_METHOD_NAMES;
    use tutela_proto::consent::RecordIdentityVerificationRequest;
    use tutela_proto::privacy::VerificationMethod;
    use tutela_store::testing::logs::{capture, personal_value};
    let capture = capture();
    let suite = TestSuite::start().await.unwrap();
    let dpo = suite.token("acme", "dpo-1", &["dpo"]);
    let mut ledger = suite.consent_ledger(Credentials::new(&dpo, CM));
    let reference = personal_value("ID check note 8812, desk 3");
    let verified_by = personal_value("front-desk-clerk-77");
    let ssn = personal_value("SSN 078-05-1120");
    let request = |id: &str, method: i32| RecordIdentityVerificationRequest {
        subject: subject(id),
        method,
        evidence_reference: reference.clone(),
        verified_by: verified_by.clone(),
    };
    let db = suite.database().connect().await.unwrap();
    let backend = db.get_database_backend();
    let mut ids = Vec::new();
    for (method, short) in VERIFICATION_METHOD_NAMES {
        let id = uuid::Uuid::new_v4().to_string();
        ledger
            .record_identity_verification(request(&id, method as i32))
            .await
            .unwrap();
        let row = db
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                tutela_store::placeholders(
                    backend,
                    "SELECT method FROM identity_verifications WHERE subject_id = $1",
                ),
                [id.as_str().into()],
            ))
            .await
            .unwrap()
            .unwrap();
        let stored: String = row.try_get("", "method").unwrap();
        assert_eq!(stored, short);
        assert_eq!(VerificationMethod::from_short_name(&stored), Some(method));
        ids.push(id);
    }

    // Unset, unknown, or sent as free text by an old client: refused, naming the field.
    let old = FreeTextVerification {
        subject: subject(&ids[0]),
        method: ssn.clone(),
        evidence_reference: reference.clone(),
    };
    let from_old =
        RecordIdentityVerificationRequest::decode(old.encode_to_vec().as_slice()).unwrap();
    for bad in [request(&ids[0], 0), request(&ids[0], 99), from_old] {
        let err = ledger.record_identity_verification(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(fields(&err), ["method"]);
    }
    let err = suite
        .subject_data(Credentials::new(&dpo, "subject_rights"))
        .record_identity_verification(tutela_proto::privacy::RecordIdentityVerificationRequest {
            subject: subject(&ids[0]),
            method: 0,
            evidence_reference: reference.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["method"]);
    suite.stop().await.unwrap();

    let text = capture.text();
    assert!(
        text.contains("identity verification recorded"),
        "the capture works"
    );
    let mut sent = vec![reference, verified_by, ssn];
    sent.extend(ids);
    sent.extend(
        VERIFICATION_METHOD_NAMES
            .iter()
            .flat_map(|(m, short)| [m.as_str_name().to_owned(), (*short).to_owned()]),
    );
    for value in sent {
        assert!(!text.contains(&value), "a log or span carries {value:?}");
    }
}
