//! E4: a learner under the age of consent is created only with a parent's or guardian's
//! consent in the ledger, or recorded in the same call.

use chrono::{Months, Utc};
use tonic::Code;
use tutela_proto::common::{IdempotencyKey, Purpose};
use tutela_proto::consent::{
    ConsentActor, ConsentEvidence, ConsentMethod, GetConsentStateRequest,
    ListConsentHistoryRequest, RecordConsentRequest,
};
use tutela_proto::enrolment::{CreateLearnerRequest, GetLearnerRequest, LearnerProfile};
use tutela_store::testing::logs::personal;

use crate::*;

const GUARDIAN: &str = "Grace Quatermain";
const FORM: &str = "paper form 2026/118";

/// A profile of someone `years` old today (by the server's real clock), living in `country`.
fn aged(years: u32, country: &str) -> LearnerProfile {
    let born = Utc::now()
        .date_naive()
        .checked_sub_months(Months::new(years * 12))
        .unwrap();
    LearnerProfile {
        date_of_birth: born.format("%Y-%m-%d").to_string(),
        country: country.into(),
        ..profile()
    }
}

fn guardian_evidence() -> ConsentEvidence {
    personal(&[GUARDIAN, FORM]);
    ConsentEvidence {
        method: ConsentMethod::Paper as i32,
        wording_version: "enrolment-minors-2026-09".into(),
        wording_sha256: "b".repeat(64),
        evidence_reference: FORM.into(),
        actor: ConsentActor::Guardian as i32,
        guardian: Some(tutela_proto::consent::Guardian {
            guardian_id: String::new(),
            name: GUARDIAN.into(),
            relationship: "mother".into(),
        }),
    }
}

fn get(id: &str) -> GetLearnerRequest {
    GetLearnerRequest {
        learner: subject(id),
    }
}

fn new_id() -> String {
    let id = uuid::Uuid::new_v4().to_string();
    personal(&[&id]);
    id
}

#[tokio::test]
async fn a_minor_without_a_guardians_consent_is_refused_and_nothing_is_stored() {
    let suite = TestSuite::start().await.unwrap();
    let mut learners = suite.learners(staff(&suite, "registrar", "course_administration"));
    let id = new_id();
    let err = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(14, "GB")),
            learner_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "GUARDIAN_CONSENT_REQUIRED");
    let missing = learners.get_learner(get(&id)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // The learner's own say-so is no guardian's consent: the ledger refuses it for a purpose that
    // does not rest on consent, and the creation is still refused.
    let mut ledger = suite.consent_ledger(staff(&suite, "registrar", "consent_management"));
    let own = ConsentEvidence {
        actor: ConsentActor::Subject as i32,
        guardian: None,
        ..guardian_evidence()
    };
    let err = ledger
        .record_consent(RecordConsentRequest {
            subject: subject(&id),
            purpose: Purpose::CourseAdministration as i32,
            evidence: Some(own),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["purpose"]);

    // Turning 16 today is old enough.
    learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(16, "GB")),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_guardians_consent_sent_with_the_call_is_recorded_in_the_ledger_once() {
    let suite = TestSuite::start().await.unwrap();
    let mut learners = suite.learners(staff(&suite, "registrar", "course_administration"));
    let request = CreateLearnerRequest {
        profile: Some(aged(14, "GB")),
        guardian_consent: Some(guardian_evidence()),
        idempotency_key: Some(IdempotencyKey {
            key: "minor-create-0001".into(),
        }),
        ..Default::default()
    };
    let first = learners
        .create_learner(request.clone())
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap();
    personal(&[&first.learner_id]);
    let retry = learners
        .create_learner(request)
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap();
    assert_eq!(retry.learner_id, first.learner_id);

    let mut ledger = suite.consent_ledger(staff(&suite, "dpo", "consent_management"));
    let state = ledger
        .get_consent_state(GetConsentStateRequest {
            subject: subject(&first.learner_id),
            purpose: Purpose::CourseAdministration as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.states.len(), 1, "{state:?}");
    assert!(state.states[0].granted);
    assert_eq!(state.states[0].actor, ConsentActor::Guardian as i32);
    let history = ledger
        .list_consent_history(ListConsentHistoryRequest {
            subject: subject(&first.learner_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 1, "a retry appends nothing");
    let evidence = history.entries[0].evidence.as_ref().unwrap();
    assert_eq!(evidence.guardian.as_ref().unwrap().name, GUARDIAN);
    assert_eq!(history.entries[0].recorded_by, "registrar-1");
}

#[tokio::test]
async fn a_guardians_consent_recorded_beforehand_admits_the_learner_it_names() {
    let suite = TestSuite::start().await.unwrap();
    let id = new_id();
    let mut learners = suite.learners(staff(&suite, "registrar", "course_administration"));
    let mut ledger = suite.consent_ledger(staff(&suite, "registrar", "consent_management"));
    let record = |purpose: Purpose| RecordConsentRequest {
        subject: subject(&id),
        purpose: purpose as i32,
        evidence: Some(guardian_evidence()),
        ..Default::default()
    };
    // Consent for another purpose does not admit the learner for this one.
    ledger
        .record_consent(record(Purpose::ExamBooking))
        .await
        .unwrap();
    let err = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(14, "GB")),
            learner_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "GUARDIAN_CONSENT_REQUIRED", "{err:?}");
    ledger
        .record_consent(record(Purpose::CourseAdministration))
        .await
        .unwrap();

    let created = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(14, "GB")),
            learner_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap();
    assert_eq!(created.learner_id, id);
    learners.get_learner(get(&id)).await.unwrap();

    // The id is taken now.
    let err = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(profile()),
            learner_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // A withdrawal by the guardian stops the next minor's creation under that consent.
    let other = new_id();
    ledger
        .record_consent(RecordConsentRequest {
            subject: subject(&other),
            purpose: Purpose::CourseAdministration as i32,
            evidence: Some(guardian_evidence()),
            ..Default::default()
        })
        .await
        .unwrap();
    ledger
        .withdraw_consent(tutela_proto::consent::WithdrawConsentRequest {
            subject: subject(&other),
            purpose: Purpose::CourseAdministration as i32,
            evidence: Some(guardian_evidence()),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(15, "GB")),
            learner_id: other,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "GUARDIAN_CONSENT_REQUIRED");
}

#[tokio::test]
async fn guardian_consent_is_refused_for_an_adult_or_a_non_guardian_actor() {
    let suite = TestSuite::start().await.unwrap();
    let mut learners = suite.learners(staff(&suite, "registrar", "course_administration"));
    let err = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(30, "GB")),
            guardian_consent: Some(guardian_evidence()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["guardian_consent"]);

    let non_guardian = |learner_id: &str| CreateLearnerRequest {
        profile: Some(aged(14, "GB")),
        guardian_consent: Some(ConsentEvidence {
            actor: ConsentActor::Subject as i32,
            guardian: None,
            ..guardian_evidence()
        }),
        learner_id: learner_id.into(),
        ..Default::default()
    };
    // A learner id that is no UUID is refused by the guard's contract check, before the handler.
    let err = learners
        .create_learner(non_guardian("not-a-uuid"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["learner_id"]);
    let err = learners
        .create_learner(non_guardian("0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a78"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["guardian_consent.actor"]);
}

#[tokio::test]
async fn the_registers_country_override_decides_who_is_a_minor() {
    let register = tutela_policy::register::DEFAULT_REGISTER
        .replace("by_country = {}", "by_country = { FR = 13 }");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("register.toml");
    std::fs::write(&file, register).unwrap();
    let suite = TestSuite::start_with(|config| config.register.file = file)
        .await
        .unwrap();
    let mut learners = suite.learners(staff(&suite, "registrar", "course_administration"));
    learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(14, "FR")),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(14, "DE")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "GUARDIAN_CONSENT_REQUIRED");
}

#[tokio::test]
async fn rectifying_a_date_of_birth_into_a_minor_needs_a_guardians_consent() {
    let suite = TestSuite::start().await.unwrap();
    let mut learners = suite.learners(staff(&suite, "registrar", "course_administration"));
    let id = learners
        .create_learner(CreateLearnerRequest {
            profile: Some(aged(30, "GB")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .learner_id;
    personal(&[&id]);
    let young = aged(14, "GB");
    let rectify = tutela_proto::enrolment::UpdateLearnerRequest {
        learner: subject(&id),
        profile: Some(young.clone()),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["date_of_birth".into()],
        }),
        idempotency_key: None,
    };
    let err = learners.update_learner(rectify.clone()).await.unwrap_err();
    assert_eq!(reason(&err), "GUARDIAN_CONSENT_REQUIRED", "{err:?}");
    let stored = learners.get_learner(get(&id)).await.unwrap().into_inner();
    assert_eq!(
        stored.learner.unwrap().profile.unwrap().date_of_birth,
        aged(30, "GB").date_of_birth,
        "nothing changed"
    );

    suite
        .consent_ledger(staff(&suite, "registrar", "consent_management"))
        .record_consent(RecordConsentRequest {
            subject: subject(&id),
            purpose: Purpose::CourseAdministration as i32,
            evidence: Some(guardian_evidence()),
            ..Default::default()
        })
        .await
        .unwrap();
    let updated = learners.update_learner(rectify).await.unwrap().into_inner();
    assert_eq!(
        updated.learner.unwrap().profile.unwrap().date_of_birth,
        young.date_of_birth
    );
}
