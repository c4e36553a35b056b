//! The disclosure path end to end: staff disclose learners read through enrolment's API under the
//! agreement in force, the partner pulls them with its own token under its pseudonyms, and the
//! disclosure log names each record's recipient, fields and hash in a chain that shows tampering.

use prost::Message;
use sea_orm::ConnectionTrait;
use sha2::{Digest, Sha256};
use tonic::Code;
use tutela_policy::PrincipalKind;
use tutela_policy::principal::TokenRequest;
use tutela_proto::common::{LegalBasis, Purpose, SubjectRef};
use tutela_proto::enrolment::{EnrolmentStatus, LearnerProfile};
use tutela_proto::sharing::{
    AgreementPurpose, DeliveredRecord, DiscloseRequest, ListDisclosuresRequest,
    PullDeliveriesRequest, TerminateAgreementRequest,
};
use tutela_testkit::{Credentials, TestSuite, sample_profile};

use crate::*;

/// Creates `n` learners of `acme`; their ids.
pub async fn learners(suite: &TestSuite, n: u64) -> Vec<String> {
    suite
        .create_learners("acme", (0..n).map(sample_profile), 1)
        .await
        .unwrap()
}

/// A partner of `acme` in GB with an agreement in force (exam booking: id, names, email, photo
/// id reference; exam results: score, passed, when); the partner's and the agreement's ids.
pub async fn partner_in_force(suite: &TestSuite) -> (String, String) {
    let partner_id = partner(suite, "GB").await;
    let id = suite
        .agreement_in_force("acme", new_agreement(&partner_id))
        .await
        .unwrap();
    (partner_id, id)
}

/// The partner `partner_id`'s own token, for `purpose`.
pub fn as_partner(suite: &TestSuite, partner_id: &str, purpose: &str) -> Credentials {
    let token = suite.token_for(TokenRequest {
        tenant: "acme".into(),
        subject: "partner-portal".into(),
        kind: Some(PrincipalKind::Partner),
        roles: vec!["partner".into()],
        partner: Some(partner_id.into()),
        wards: Vec::new(),
        ttl: chrono::Duration::hours(1),
    });
    Credentials::new(&token, purpose)
}

pub fn disclose(partner_id: &str, ids: &[String]) -> DiscloseRequest {
    DiscloseRequest {
        partner_id: partner_id.into(),
        learner_ids: ids.to_vec(),
        ..Default::default()
    }
}

pub async fn pull(
    suite: &TestSuite,
    credentials: Credentials,
    delivery_id: &str,
) -> Result<Vec<DeliveredRecord>, tonic::Status> {
    let mut stream = suite
        .disclosures(credentials)
        .pull_deliveries(PullDeliveriesRequest {
            delivery_id: delivery_id.into(),
            batch_size: 1,
        })
        .await?
        .into_inner();
    let mut records = Vec::new();
    while let Some(batch) = stream.message().await? {
        records.extend(batch.records);
    }
    Ok(records)
}

#[tokio::test]
async fn a_partner_pulls_only_the_agreements_fields_under_its_pseudonyms_and_each_record_is_logged()
{
    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 3).await;
    let (partner_id, agreement_id) = partner_in_force(&suite).await;
    let exam_booking = staff(&suite, "acme", "exam_officer", "exam_booking");

    let unknown = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77".to_owned();
    let asked = vec![ids[0].clone(), ids[1].clone(), unknown.clone()];
    let response = suite
        .disclosures(exam_booking)
        .disclose(disclose(&partner_id, &asked))
        .await
        .unwrap()
        .into_inner();
    let delivery = response.delivery.unwrap();
    assert_eq!(delivery.record_count, 2);
    assert_eq!(delivery.agreement_id, agreement_id);
    assert_eq!(delivery.key_version, 1);
    assert!(delivery.available_until.is_some(), "the agreement's P12M");
    assert_eq!(response.withheld.len(), 1);
    assert_eq!(response.withheld[0].learner_id, unknown);
    assert_eq!(response.withheld[0].reason, "NOT_FOUND");

    // The partner pulls with its own token: minimised records under its pseudonyms.
    let records = pull(
        &suite,
        as_partner(&suite, &partner_id, "exam_booking"),
        &delivery.delivery_id,
    )
    .await
    .unwrap();
    assert_eq!(records.len(), 2);
    for (record, id) in records.iter().zip(&ids) {
        assert_eq!(record.pseudonym.len(), 64);
        assert_ne!(&record.pseudonym, id);
        let learner = record.learner.as_ref().unwrap();
        assert!(learner.learner_id.is_empty(), "the pseudonym stands for it");
        let profile = learner.profile.as_ref().unwrap();
        assert!(profile.given_name.starts_with("Given"));
        assert!(profile.email.ends_with("@example.org"));
        // Not named by the agreement: never read, never delivered.
        assert!(profile.date_of_birth.is_empty());
        assert!(profile.phone.is_empty());
        assert!(profile.ethnicity.is_empty());
        assert!(learner.created_at.is_none());
        let mut unhashed = record.clone();
        unhashed.payload_sha256.clear();
        assert_eq!(
            record.payload_sha256,
            hex::encode(Sha256::digest(unhashed.encode_to_vec()))
        );
    }
    assert_ne!(records[0].pseudonym, records[1].pseudonym);

    // Another partner reaches none of it, whatever it names.
    let (other, _) = partner_in_force(&suite).await;
    let err = pull(
        &suite,
        as_partner(&suite, &other, "exam_booking"),
        &delivery.delivery_id,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        pull(&suite, as_partner(&suite, &other, "exam_booking"), "")
            .await
            .unwrap()
            .is_empty()
    );
    // Staff do not pull; partners do not disclose or read the log.
    let err = pull(&suite, dpo(&suite), &delivery.delivery_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = suite
        .disclosures(as_partner(&suite, &partner_id, "exam_booking"))
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The log names the recipient and the fields of each record, never a value.
    let log = suite
        .disclosures(dpo(&suite))
        .list_disclosures(ListDisclosuresRequest {
            subject: Some(SubjectRef {
                subject_id: ids[0].clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .disclosures;
    assert_eq!(log.len(), 1);
    let entry = &log[0];
    assert_eq!(entry.partner_id, partner_id);
    assert_eq!(entry.recipient, "Example Exam Board Ltd");
    assert_eq!(entry.delivery_id, delivery.delivery_id);
    assert_eq!(entry.channel, "pull");
    assert_eq!(entry.actor, "staff-1");
    assert_eq!(entry.fields, delivery.fields);
    assert_eq!(entry.payload_sha256, records[0].payload_sha256);
    assert!(
        suite
            .disclosures(dpo(&suite))
            .list_disclosures(ListDisclosuresRequest {
                subject: Some(SubjectRef {
                    subject_id: ids[2].clone(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .disclosures
            .is_empty(),
        "a learner not disclosed has no entry"
    );

    // The chain holds, and shows an entry changed afterwards.
    let db = suite.database().connect().await.unwrap();
    assert_eq!(
        tutela_sharing::disclosures::verify_chain(&db, &partner_id).await,
        Ok(2)
    );
    db.execute_unprepared(&format!(
        "UPDATE sharing_disclosure_log SET fields = '[\"learner_id\"]' \
         WHERE partner_id = '{partner_id}' AND position = 2"
    ))
    .await
    .unwrap();
    assert_eq!(
        tutela_sharing::disclosures::verify_chain(&db, &partner_id)
            .await
            .unwrap_err()
            .position,
        2
    );
    // The disclosure and the pulls are audited here; the reads, by enrolment.
    assert_eq!(
        audited(&suite, "tutela.sharing.v1.DisclosureService/Disclose")
            .await
            .len(),
        2,
        "the disclosure, and the partner's refused one"
    );
    assert!(
        !audited(&suite, "tutela.enrolment.v1.LearnerService/StreamLearners")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn nothing_is_disclosed_without_an_agreement_in_force_and_pulls_end_with_it() {
    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 2).await;
    let partner_id = partner(&suite, "GB").await;
    let exam_booking = || staff(&suite, "acme", "exam_officer", "exam_booking");

    // No agreement yet.
    let err = suite
        .disclosures(exam_booking())
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "AGREEMENT_REQUIRED");
    let db = suite.database().connect().await.unwrap();
    assert_eq!(
        tutela_sharing::disclosures::verify_chain(&db, &partner_id).await,
        Ok(0)
    );

    let (partner_id, agreement_id) = partner_in_force(&suite).await;
    // The agreement covers exam booking only: funder reporting is not agreed.
    let err = suite
        .disclosures(staff(&suite, "acme", "dpo", "funder_reporting"))
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "AGREEMENT_REQUIRED");
    // An exam officer discloses to book exams, not to report to funders.
    let err = suite
        .disclosures(staff(&suite, "acme", "exam_officer", "funder_reporting"))
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A retry answers with the same delivery and logs nothing twice.
    let mut keyed = disclose(&partner_id, &ids);
    keyed.idempotency_key = Some(tutela_proto::common::IdempotencyKey {
        key: "disclose-0001".into(),
    });
    let first = suite
        .disclosures(exam_booking())
        .disclose(keyed.clone())
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    let again = suite
        .disclosures(exam_booking())
        .disclose(keyed)
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(first.delivery_id, again.delivery_id);
    assert_eq!(
        tutela_sharing::disclosures::verify_chain(&db, &partner_id).await,
        Ok(2)
    );

    // Once the agreement ends, the partner may no longer pull what it had not pulled.
    suite
        .agreements(dpo(&suite))
        .terminate_agreement(TerminateAgreementRequest { agreement_id })
        .await
        .unwrap();
    let err = pull(
        &suite,
        as_partner(&suite, &partner_id, "exam_booking"),
        &first.delivery_id,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "ACCESS_PERIOD_ENDED");
    let err = suite
        .disclosures(exam_booking())
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "AGREEMENT_REQUIRED");
}

#[tokio::test]
async fn an_exceptional_disclosure_is_the_dpos_logged_with_its_order_and_told_only_when_allowed() {
    use tutela_proto::common::LegalBasis;
    use tutela_proto::privacy::{
        ExportSubjectRequest, RecordIdentityVerificationRequest, VerificationMethod,
    };
    use tutela_proto::sharing::{
        CreatePartnerRequest, DiscloseExceptionallyRequest, Partner, PartnerKind, PartnerRole,
    };

    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 2).await;
    let police = suite
        .partners(dpo(&suite))
        .create_partner(CreatePartnerRequest {
            partner: Some(Partner {
                legal_name: "Metropolitan Police Service".into(),
                kind: PartnerKind::LawEnforcement as i32,
                role: PartnerRole::Controller as i32,
                country: "GB".into(),
                contact_email: CONTACT.into(),
                ..Default::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .partner
        .unwrap()
        .partner_id;
    personal(&["DC Jane Example"]);
    let order = |learner: &str, until: Option<i64>| DiscloseExceptionallyRequest {
        partner_id: police.clone(),
        learner_ids: vec![learner.to_owned()],
        fields: vec!["profile.given_name".into(), "profile.family_name".into()],
        legal_basis: LegalBasis::LegalObligation as i32,
        reference: "Production order 2026/7781".into(),
        requester: "DC Jane Example".into(),
        do_not_tell_until: until.map(|days| prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + days * 86_400,
            nanos: 0,
        }),
        idempotency_key: None,
    };
    // Not an exam officer's, and never to an exam body.
    let err = suite
        .disclosures(staff(&suite, "acme", "exam_officer", "legal_obligation"))
        .disclose_exceptionally(order(&ids[0], None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let (exam_body, _) = partner_in_force(&suite).await;
    let mut to_exam_body = order(&ids[0], None);
    to_exam_body.partner_id = exam_body;
    let err = suite
        .disclosures(dpo(&suite))
        .disclose_exceptionally(to_exam_body)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["partner_id"]);

    // Learner 0 must not be told for 30 days; learner 1 may be told at once.
    let mut api = suite.disclosures(dpo(&suite));
    let hidden = api
        .disclose_exceptionally(order(&ids[0], Some(30)))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(hidden.record_count, 1);
    assert!(hidden.agreement_id.is_empty());
    assert_eq!(hidden.file_sha256.len(), 64);
    api.disclose_exceptionally(order(&ids[1], None))
        .await
        .unwrap();
    let log = api
        .list_disclosures(ListDisclosuresRequest {
            partner_id: police.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .disclosures;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].reference, "Production order 2026/7781");
    assert_eq!(log[0].requester, "DC Jane Example");
    assert!(log[0].do_not_tell_until.is_some());
    assert!(log[1].do_not_tell_until.is_none());
    let db = suite.database().connect().await.unwrap();
    assert_eq!(
        tutela_sharing::disclosures::verify_chain(&db, &police).await,
        Ok(2)
    );

    let rights = || Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    let mut recipients = Vec::new();
    for id in &ids {
        suite
            .subject_data(rights())
            .record_identity_verification(RecordIdentityVerificationRequest {
                subject: Some(SubjectRef {
                    subject_id: id.clone(),
                }),
                method: VerificationMethod::PhotoIdInPerson as i32,
                evidence_reference: "front desk note 2026-12-02/2".into(),
            })
            .await
            .unwrap();
        let export = suite
            .subject_data(rights())
            .export_subject(ExportSubjectRequest {
                subject: Some(SubjectRef {
                    subject_id: id.clone(),
                }),
                services: vec!["sharing".into()],
            })
            .await
            .unwrap()
            .into_inner()
            .exports;
        let doc: serde_json::Value = serde_json::from_slice(&export[0].document).unwrap();
        recipients.push(doc["recipients"].as_array().unwrap().len());
    }
    assert_eq!(recipients, [0, 1], "told only once allowed");
}

/// What the dpo discloses for exam results in `request`, as the partner pulls it.
async fn results_pulled(suite: &TestSuite, request: DiscloseRequest) -> Vec<DeliveredRecord> {
    let partner_id = request.partner_id.clone();
    let delivery = suite
        .disclosures(staff(suite, "acme", "dpo", "exam_results"))
        .disclose(request)
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    let partner = as_partner(suite, &partner_id, "exam_results");
    pull(suite, partner, &delivery.delivery_id).await.unwrap()
}

#[tokio::test]
async fn records_leave_with_only_the_agreements_fields_and_only_of_the_course_asked() {
    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 2).await;
    let (partner_id, _) = partner_in_force(&suite).await;
    let exam = suite.create_course("acme", "EXAM-4").await.unwrap();
    let other = suite.create_course("acme", "ENG-L3").await.unwrap();
    let mut tutor = suite.enrolments(staff(&suite, "acme", "tutor", "course_administration"));
    for (learner, course, score) in [(0, &exam, 71.0), (1, &exam, 45.0), (0, &other, 90.0)] {
        let enrolment = suite
            .enrol("acme", &ids[learner], course, EnrolmentStatus::Started)
            .await
            .unwrap();
        tutor
            .record_result(tutela_testkit::sample_result(&enrolment, score))
            .await
            .unwrap();
    }

    // The exam body gets the results of the exam's course: the agreement's three fields of each,
    // nothing that names or links the learner, and no profile field it does not name.
    let mut request = disclose(&partner_id, &ids);
    request.course_id = exam.clone();
    let records = results_pulled(&suite, request).await;
    let scores: Vec<Vec<f64>> = records
        .iter()
        .map(|r| r.results.iter().map(|x| x.score).collect())
        .collect();
    assert_eq!(scores, [vec![71.0], vec![45.0]]);
    for record in &records {
        let r = &record.results[0];
        assert!(r.assessed_at.is_some());
        assert!(r.result_id.is_empty() && r.enrolment_id.is_empty(), "{r:?}");
        assert!(r.learner.is_none() && r.assessment.is_empty() && r.assessor.is_empty());
        assert!(record.enrolments.is_empty() && record.certificates.is_empty());
        assert_eq!(
            record.learner.clone().unwrap_or_default(),
            Default::default()
        );
        // What was logged is what left.
        let mut unhashed = record.clone();
        unhashed.payload_sha256.clear();
        assert_eq!(
            hex::encode(Sha256::digest(unhashed.encode_to_vec())),
            record.payload_sha256
        );
    }
    assert_eq!(
        (records[0].results[0].passed, records[1].results[0].passed),
        (true, false)
    );

    // Without a course, every course's results go.
    let records = results_pulled(&suite, disclose(&partner_id, &ids[..1])).await;
    let scores: Vec<f64> = records[0].results.iter().map(|x| x.score).collect();
    assert_eq!(scores, [71.0, 90.0]);

    // A course is a choice among records: refused where the agreement names none, and named.
    let mut request = disclose(&partner_id, &ids);
    request.course_id = exam.clone();
    let err = suite
        .disclosures(staff(&suite, "acme", "exam_officer", "exam_booking"))
        .disclose(request)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["course_id".to_owned()])
    );
    let mut request = disclose(&partner_id, &ids);
    request.course_id = "EXAM-4".into();
    let err = suite
        .disclosures(staff(&suite, "acme", "dpo", "exam_results"))
        .disclose(request)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["course_id".to_owned()])
    );
}

/// S2: a partner's own use of contact details needs each learner's consent naming that partner;
/// consent to the purpose as a whole, or naming another partner, is not enough.
#[tokio::test]
async fn contact_details_go_to_a_partner_for_its_own_use_only_with_consent_naming_it() {
    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 4).await;
    let partner_id = partner(&suite, "GB").await;
    let mut request = new_agreement(&partner_id);
    request.purposes.push(terms(
        AgreementPurpose::ThirdPartyDisclosure,
        LegalBasis::Consent,
        &["profile.given_name", "profile.email"],
    ));
    suite.agreement_in_force("acme", request).await.unwrap();
    let purpose = Purpose::ThirdPartyDisclosure;
    suite
        .grant_consent("acme", &ids[0], purpose, &partner_id)
        .await
        .unwrap();
    suite
        .grant_consent("acme", &ids[1], purpose, "")
        .await
        .unwrap();
    suite
        .grant_consent("acme", &ids[2], purpose, "another-partner")
        .await
        .unwrap();

    let mut dpo_discloses =
        suite.disclosures(staff(&suite, "acme", "dpo", "third_party_disclosure"));
    let response = dpo_discloses
        .disclose(disclose(&partner_id, &ids))
        .await
        .unwrap()
        .into_inner();
    let delivery = response.delivery.unwrap();
    assert_eq!(delivery.record_count, 1);
    let mut withheld: Vec<(&str, &str)> = response
        .withheld
        .iter()
        .map(|w| (w.learner_id.as_str(), w.reason.as_str()))
        .collect();
    withheld.sort();
    let mut expected = vec![
        (ids[1].as_str(), "CONSENT_REQUIRED"),
        (ids[2].as_str(), "CONSENT_REQUIRED"),
        (ids[3].as_str(), "CONSENT_REQUIRED"),
    ];
    expected.sort();
    assert_eq!(withheld, expected);
    let records = pull(
        &suite,
        as_partner(&suite, &partner_id, "third_party_disclosure"),
        &delivery.delivery_id,
    )
    .await
    .unwrap();
    let profile = records[0].learner.clone().unwrap().profile.unwrap();
    assert_eq!(
        profile,
        LearnerProfile {
            given_name: profile.given_name.clone(),
            email: profile.email.clone(),
            ..Default::default()
        }
    );
    assert!(!profile.email.is_empty());
    // The log names only the learner who left.
    let logged = suite
        .disclosures(staff(&suite, "acme", "dpo", "legal_obligation"))
        .list_disclosures(ListDisclosuresRequest {
            partner_id: partner_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .disclosures;
    let who: Vec<&str> = logged
        .iter()
        .map(|d| d.subject.as_ref().unwrap().subject_id.as_str())
        .collect();
    assert_eq!(who, [ids[0].as_str()]);
}
