//! Learners: create, read through role views, rectify, list by blind index, refuse prohibited
//! identifiers and data the purpose does not need, keep values only as ciphertext, and erase.

use prost_types::FieldMask;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tonic::Code;
use tutela_proto::common::{IdempotencyKey, PageRequest};
use tutela_proto::enrolment::{
    CreateLearnerRequest, GetLearnerRequest, Learner, LearnerProfile, ListLearnersRequest,
    UpdateLearnerRequest,
};
use tutela_proto::privacy::{EraseSubjectRequest, ExportSubjectRequest};
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

fn create(profile: LearnerProfile) -> CreateLearnerRequest {
    CreateLearnerRequest {
        profile: Some(profile),
        ..Default::default()
    }
}

fn get(id: &str) -> GetLearnerRequest {
    GetLearnerRequest {
        learner: subject(id),
    }
}

async fn create_as_registrar(suite: &TestSuite) -> Learner {
    suite
        .learners(staff(suite, "registrar", "course_administration"))
        .create_learner(create(profile()))
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
}

async fn count_learners(suite: &TestSuite) -> usize {
    suite
        .learners(staff(suite, "registrar", "course_administration"))
        .list_learners(ListLearnersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .learners
        .len()
}

/// Whether `value` is stored in readable form anywhere: the SQLite file, its WAL and journal
/// (raw bytes), or on PostgreSQL any learner table's row.
pub async fn stored_in_plaintext(suite: &TestSuite, value: &str) -> bool {
    if let Some(path) = suite.database().sqlite_path() {
        let mut found = false;
        for suffix in ["", "-wal", "-journal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if let Ok(bytes) = std::fs::read(&file) {
                found |= bytes.windows(value.len()).any(|w| w == value.as_bytes());
            }
        }
        return found;
    }
    let db = suite.database().connect().await.unwrap();
    let mut found = false;
    for table in ["learners", "learner_data", "enrolment_idempotency"] {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "SELECT count(*) AS n FROM {table} t WHERE position(convert_to($1, 'UTF8') in convert_to(t::text, 'UTF8')) > 0"
                ),
                [value.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        found |= row.try_get::<i64>("", "n").unwrap() > 0;
    }
    found
}

#[tokio::test]
async fn a_registrar_creates_and_reads_a_learner_without_the_categories_their_role_may_not_read() {
    let suite = TestSuite::start().await.unwrap();
    let learner = create_as_registrar(&suite).await;
    let p = learner.profile.unwrap();
    assert_eq!(p.email, EMAIL);
    assert_eq!(p.date_of_birth, DOB);
    assert_eq!(p.organisation, ORGANISATION);
    // The registrar's role reads no special-category or identity-document data.
    assert!(p.ethnicity.is_empty() && p.disabilities.is_empty() && p.support_needed.is_empty());
    assert!(p.photo_id_reference.is_empty());

    let reply = suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .get_learner(get(&learner.learner_id))
        .await
        .unwrap();
    assert_eq!(
        reply
            .metadata()
            .get("x-tutela-withheld-categories")
            .unwrap(),
        "special_category,identity_document"
    );
    let p = reply.into_inner().learner.unwrap().profile.unwrap();
    assert_eq!(
        (p.given_name.as_str(), p.family_name.as_str()),
        (GIVEN, FAMILY)
    );
    assert_eq!(p.previous_qualifications, [QUALIFICATION]);
    assert!(p.support_needed.is_empty());
}

#[tokio::test]
async fn a_read_with_categories_withheld_keeps_the_real_created_and_updated_times() {
    let suite = TestSuite::start().await.unwrap();
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let id = create_as_registrar(&suite).await.learner_id;
    let after = chrono::Utc::now() + chrono::Duration::seconds(5);
    let reply = suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .get_learner(get(&id))
        .await
        .unwrap();
    // The registrar's view withholds categories, so the response went through redaction.
    assert!(
        reply
            .metadata()
            .get("x-tutela-withheld-categories")
            .is_some()
    );
    let learner = reply.into_inner().learner.unwrap();
    for (name, at) in [
        ("created_at", learner.created_at),
        ("updated_at", learner.updated_at),
    ] {
        let at = at.unwrap_or_else(|| panic!("{name} missing"));
        let at =
            chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap()).unwrap();
        assert!(before <= at && at <= after, "{name} reads {at}");
    }
}

#[tokio::test]
async fn role_views_a_tutor_never_sees_special_category_data_an_exam_officer_sees_the_photo_id() {
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await.learner_id;

    let tutor = suite
        .learners(staff(&suite, "tutor", "course_administration"))
        .get_learner(get(&id))
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .profile
        .unwrap();
    assert_eq!(tutor.family_name, FAMILY);
    assert_eq!(tutor.previous_qualifications, [QUALIFICATION]);
    for withheld in [
        &tutor.ethnicity,
        &tutor.support_needed,
        &tutor.email,
        &tutor.date_of_birth,
        &tutor.photo_id_reference,
    ] {
        assert!(withheld.is_empty(), "a tutor read {withheld:?}");
    }
    assert!(tutor.disabilities.is_empty());

    let mut officer = suite.learners(staff(&suite, "exam_officer", "exam_booking"));
    officer
        .update_learner(UpdateLearnerRequest {
            learner: subject(&id),
            profile: Some(LearnerProfile {
                photo_id_reference: PHOTO_ID.into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["photo_id_reference".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let officer = officer
        .get_learner(get(&id))
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .profile
        .unwrap();
    assert_eq!(officer.photo_id_reference, PHOTO_ID);
    // Access arrangements are read for exam bookings...
    assert_eq!(officer.support_needed, SUPPORT);
    // ...but not the employer or qualifications, which exam booking does not need.
    assert!(officer.organisation.is_empty() && officer.previous_qualifications.is_empty());

    // A tutor may not write, and nobody may list for a purpose the rules do not grant.
    let err = suite
        .learners(staff(&suite, "tutor", "course_administration"))
        .create_learner(create(profile()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_social_security_number_anywhere_is_refused_and_nothing_is_stored() {
    let suite = TestSuite::start().await.unwrap();
    let mut client = suite.learners(staff(&suite, "registrar", "course_administration"));
    let mut p = profile();
    p.support_needed = "Needs a reader. SSN 078-05-1120 for the funder".into();
    p.previous_qualifications.push("cert no 219 09 9999".into());
    let err = client.create_learner(create(p)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "PROHIBITED_IDENTIFIER");
    assert_eq!(
        fields(&err),
        [
            "profile.previous_qualifications[1]",
            "profile.support_needed"
        ]
    );
    assert!(!err.message().contains("078"));
    assert_eq!(count_learners(&suite).await, 0);
    assert!(!stored_in_plaintext(&suite, FAMILY).await);

    // The same on rectification: the stored value stays as it was.
    let id = create_as_registrar(&suite).await.learner_id;
    let err = client
        .update_learner(UpdateLearnerRequest {
            learner: subject(&id),
            profile: Some(LearnerProfile {
                // Nine digits in a row are an SSN only beside a word that says so.
                phone: "SSN 078051120".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["phone".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["profile.phone"]);
    let p = client.get_learner(get(&id)).await.unwrap().into_inner();
    assert_eq!(p.learner.unwrap().profile.unwrap().phone, PHONE);
}

#[tokio::test]
async fn a_write_may_carry_only_what_its_purpose_needs() {
    let suite = TestSuite::start().await.unwrap();
    // Exam booking needs identity, contact, demographic, the photo ID and access arrangements;
    // not the employer or previous qualifications.
    let mut officer = suite.learners(staff(&suite, "exam_officer", "exam_booking"));
    let mut p = profile();
    p.photo_id_reference = PHOTO_ID.into();
    let err = officer.create_learner(create(p)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "CATEGORY_NOT_FOR_PURPOSE");
    assert_eq!(
        fields(&err),
        ["profile.organisation", "profile.previous_qualifications"]
    );
    assert_eq!(count_learners(&suite).await, 0);

    let mut p = profile();
    p.photo_id_reference = PHOTO_ID.into();
    p.organisation.clear();
    p.previous_qualifications.clear();
    officer.create_learner(create(p)).await.unwrap();
    // The registrar, for course administration, may not add the photo ID.
    let mut p = profile();
    p.photo_id_reference = PHOTO_ID.into();
    let err = suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .create_learner(create(p))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["profile.photo_id_reference"]);
    assert_eq!(count_learners(&suite).await, 1);
}

#[tokio::test]
async fn personal_values_are_stored_only_as_ciphertext_and_found_through_blind_indexes() {
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await.learner_id;
    for value in [EMAIL, GIVEN, FAMILY, DOB, ETHNICITY, PHOTO_ID, ORGANISATION] {
        assert!(
            !stored_in_plaintext(&suite, value).await,
            "{value:?} is stored readable"
        );
    }
    let mut client = suite.learners(staff(&suite, "registrar", "course_administration"));
    let by_email = client
        .list_learners(ListLearnersRequest {
            email: " ADA.Quatermain@Example.org ".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learners;
    assert_eq!(by_email.len(), 1);
    assert_eq!(by_email[0].learner_id, id);
    let by_name = client
        .list_learners(ListLearnersRequest {
            family_name: "quatermain-lovelace".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learners;
    assert_eq!(by_name.len(), 1);
    let nobody = client
        .list_learners(ListLearnersRequest {
            email: "someone.else@example.org".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learners;
    assert!(nobody.is_empty());
}

#[tokio::test]
async fn rectification_writes_only_the_masked_fields_and_moves_the_index() {
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await.learner_id;
    let mut client = suite.learners(staff(&suite, "registrar", "course_administration"));
    let new_email = "ada@newmail.example";
    crate::personal(&[new_email]);
    let updated = client
        .update_learner(UpdateLearnerRequest {
            learner: subject(&id),
            profile: Some(LearnerProfile {
                email: new_email.into(),
                given_name: "ignored, not in the mask".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["email".into(), "phone".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .profile
        .unwrap();
    assert_eq!(updated.email, new_email);
    assert!(updated.phone.is_empty(), "masked and empty: cleared");
    assert_eq!(updated.given_name, GIVEN);
    assert_eq!(
        updated.postcode, POSTCODE,
        "same category, not masked: kept"
    );
    for (email, expected) in [(EMAIL, 0), (new_email, 1)] {
        let found = client
            .list_learners(ListLearnersRequest {
                email: email.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .learners;
        assert_eq!(found.len(), expected, "{email}");
    }

    let err = client
        .update_learner(UpdateLearnerRequest {
            learner: subject(&id),
            profile: Some(LearnerProfile::default()),
            update_mask: Some(FieldMask {
                paths: vec!["shoe_size".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["update_mask.paths[0]"]);
    let err = client
        .update_learner(UpdateLearnerRequest {
            learner: subject(&id),
            profile: Some(LearnerProfile {
                date_of_birth: "10/12/1990".into(),
                email: "not-an-email".into(),
                country: "gb".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["date_of_birth".into(), "email".into(), "country".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        ["profile.email", "profile.date_of_birth", "profile.country"]
    );
}

#[tokio::test]
async fn a_retried_create_returns_the_same_learner_and_a_reused_key_is_refused() {
    let suite = TestSuite::start().await.unwrap();
    let mut client = suite.learners(staff(&suite, "registrar", "course_administration"));
    let keyed = |p: LearnerProfile| CreateLearnerRequest {
        profile: Some(p),
        idempotency_key: Some(IdempotencyKey {
            key: "create-ada-0001".into(),
        }),
        ..Default::default()
    };
    let first = client.create_learner(keyed(profile())).await.unwrap();
    let again = client.create_learner(keyed(profile())).await.unwrap();
    assert_eq!(
        first.into_inner().learner.unwrap().learner_id,
        again.into_inner().learner.unwrap().learner_id
    );
    assert_eq!(count_learners(&suite).await, 1);
    let mut other = profile();
    other.given_name = "Grace".into();
    let err = client.create_learner(keyed(other)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn another_tenant_or_another_learner_sees_nothing() {
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await.learner_id;
    let elsewhere = Credentials::new(
        &suite.token("globex", "registrar-9", &["registrar"]),
        "course_administration",
    );
    let err = suite
        .learners(elsewhere.clone())
        .get_learner(get(&id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = suite
        .learners(elsewhere)
        .list_learners(ListLearnersRequest {
            page: Some(PageRequest {
                page_size: 10,
                page_token: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .learners;
    assert!(listed.is_empty());

    // The learner reads their own record for subject rights, and nobody else's.
    let own = Credentials::new(&suite.token("acme", &id, &["learner"]), "subject_rights");
    let mine = suite
        .learners(own.clone())
        .get_learner(get(&id))
        .await
        .unwrap()
        .into_inner()
        .learner
        .unwrap()
        .profile
        .unwrap();
    assert_eq!(mine.ethnicity, ETHNICITY, "their own special-category data");
    let other = create_as_registrar(&suite).await.learner_id;
    let err = suite
        .learners(own.clone())
        .get_learner(get(&other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = suite
        .learners(own)
        .list_learners(ListLearnersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn export_then_erasure_leaves_no_readable_trace() {
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await.learner_id;
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    // An access request is released only once staff recorded the requester's identity check.
    let err = suite
        .subject_data(dpo.clone())
        .export_subject(ExportSubjectRequest {
            subject: subject(&id),
            services: vec!["enrolment".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "IDENTITY_NOT_VERIFIED");
    verify_identity(&suite, &id).await;
    let export = suite
        .subject_data(dpo.clone())
        .export_subject(ExportSubjectRequest {
            subject: subject(&id),
            services: vec!["enrolment".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let document: serde_json::Value = serde_json::from_slice(&export.exports[0].document).unwrap();
    let learner = &document["learner"]["profile"];
    assert_eq!(learner["email"], EMAIL);
    assert_eq!(learner["ethnicity"], ETHNICITY);
    assert_eq!(learner["disabilities"][0], DISABILITY);
    assert!(
        document["audit_pseudonym"]
            .as_str()
            .unwrap()
            .starts_with("p_")
    );

    let erased = suite
        .subject_data(dpo)
        .erase_subject(EraseSubjectRequest {
            subject: subject(&id),
            services: Vec::new(),
            reason: "learner's erasure request of 2026-11-24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(erased.services[0].records_erased >= 1);
    let err = suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .get_learner(get(&id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for value in [EMAIL, GIVEN, FAMILY, DOB] {
        assert!(!stored_in_plaintext(&suite, value).await, "{value:?}");
    }
}

#[tokio::test]
async fn a_restricted_learner_is_only_stored_and_handled_for_their_rights() {
    use tutela_proto::privacy::{DescribeSubjectRequest, RestrictSubjectRequest};
    let suite = TestSuite::start().await.unwrap();
    let id = create_as_registrar(&suite).await.learner_id;
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    let restrict = |restricted: bool| RestrictSubjectRequest {
        subject: subject(&id),
        services: Vec::new(),
        restricted,
        reason: "accuracy contested, request of 2026-11-24".into(),
    };
    let reply = suite
        .subject_data(dpo.clone())
        .restrict_subject(restrict(true))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.services[0].restricted);

    let mut registrar = suite.learners(staff(&suite, "registrar", "course_administration"));
    let err = registrar.get_learner(get(&id)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "PROCESSING_RESTRICTED");
    // Still there for the learner's rights, and described as restricted.
    let own = Credentials::new(&suite.token("acme", &id, &["learner"]), "subject_rights");
    suite.learners(own).get_learner(get(&id)).await.unwrap();
    let described = suite
        .subject_data(dpo.clone())
        .describe_subject(DescribeSubjectRequest {
            subject: subject(&id),
            services: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(described.services[0].restricted);

    suite
        .subject_data(dpo)
        .restrict_subject(restrict(false))
        .await
        .unwrap();
    registrar.get_learner(get(&id)).await.unwrap();
}
