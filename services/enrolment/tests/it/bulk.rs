//! StreamLearners: a service reads learners in bulk for a disclosure purpose, in batches it can
//! resume, redacted to the purpose and to its read mask, with the learners it may not process
//! listed as withheld, and every batch audited before it leaves.

use prost_types::FieldMask;
use sea_orm::{ConnectionTrait, Statement};
use tokio_stream::StreamExt;
use tonic::Code;
use tutela_proto::enrolment::{
    AwardKind, ChangeEnrolmentStatusRequest, ConsentCheck, CreateLearnerRequest, EnrolmentStatus,
    IssueCertificateRequest, RecordKind, StreamLearnersRequest, StreamLearnersResponse,
};
use tutela_proto::privacy::RestrictSubjectRequest;
use tutela_testkit::{Credentials, TestSuite};

use crate::*;

fn service(suite: &TestSuite, purpose: &str) -> Credentials {
    Credentials::new(&suite.token("acme", "sharing", &["service"]), purpose)
}

async fn create_learners(suite: &TestSuite, n: usize) -> Vec<String> {
    let mut client = suite.learners(staff(suite, "registrar", "course_administration"));
    let mut ids = Vec::new();
    for _ in 0..n {
        let learner = client
            .create_learner(CreateLearnerRequest {
                profile: Some(profile()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .learner
            .unwrap();
        ids.push(learner.learner_id);
    }
    ids
}

async fn stream(
    suite: &TestSuite,
    credentials: Credentials,
    request: StreamLearnersRequest,
) -> Result<Vec<StreamLearnersResponse>, tonic::Status> {
    let mut stream = suite
        .learners(credentials)
        .stream_learners(request)
        .await?
        .into_inner();
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    Ok(batches)
}

/// How many audit records say a learner batch was streamed.
async fn streamed_records(suite: &TestSuite) -> i64 {
    let db = suite.database().connect().await.unwrap();
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT count(*) AS n FROM tutela_audit_log \
             WHERE rpc = 'tutela.enrolment.v1.LearnerService/StreamLearners' \
             AND reason LIKE 'learners streamed%'",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test]
async fn a_service_streams_every_learner_in_resumable_batches_with_only_the_fields_it_asked_for() {
    let suite = TestSuite::start().await.unwrap();
    let ids = create_learners(&suite, 5).await;
    let request = StreamLearnersRequest {
        read_mask: mask(&["given_name", "email", "support_needed"]),
        batch_size: 2,
        ..Default::default()
    };
    let batches = stream(&suite, service(&suite, "exam_booking"), request.clone())
        .await
        .unwrap();
    let sizes: Vec<usize> = batches.iter().map(|b| b.learners.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let streamed: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.learners.iter().map(|l| l.learner_id.as_str()))
        .collect();
    assert_eq!(streamed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for learner in batches.iter().flat_map(|b| &b.learners) {
        let p = learner.profile.as_ref().unwrap();
        assert_eq!(p.given_name, GIVEN);
        assert_eq!(p.email, EMAIL);
        // Special-category data is readable for exam booking (access arrangements).
        assert_eq!(p.support_needed, SUPPORT);
        // Readable for the purpose, but not asked for.
        assert!(p.family_name.is_empty() && p.phone.is_empty() && p.date_of_birth.is_empty());
        assert!(learner.created_at.is_some());
    }
    assert!(batches.iter().all(|b| b.withheld.is_empty()));
    assert_eq!(streamed_records(&suite).await, 3, "one record per batch");

    // Resuming after the first batch gives the rest.
    let resumed = stream(
        &suite,
        service(&suite, "exam_booking"),
        StreamLearnersRequest {
            resume_token: batches[0].resume_token.clone(),
            ..request
        },
    )
    .await
    .unwrap();
    let rest: Vec<&str> = resumed
        .iter()
        .flat_map(|b| b.learners.iter().map(|l| l.learner_id.as_str()))
        .collect();
    assert_eq!(
        rest,
        ids[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Exam results may not touch contact data: the email stays cleared even though asked for.
    let results = stream(
        &suite,
        service(&suite, "exam_results"),
        StreamLearnersRequest {
            read_mask: mask(&["given_name", "email"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = results[0].learners[0].profile.as_ref().unwrap();
    assert_eq!(first.given_name, GIVEN);
    assert!(first.email.is_empty());
}

#[tokio::test]
async fn named_learners_come_in_creation_order_and_the_unknown_and_restricted_are_withheld() {
    let suite = TestSuite::start().await.unwrap();
    let ids = create_learners(&suite, 3).await;
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    suite
        .subject_data(dpo)
        .restrict_subject(RestrictSubjectRequest {
            subject: subject(&ids[1]),
            services: Vec::new(),
            restricted: true,
            reason: "accuracy contested".into(),
        })
        .await
        .unwrap();
    let unknown = "00000000-0000-4000-8000-000000000001".to_owned();
    let batches = stream(
        &suite,
        service(&suite, "exam_booking"),
        StreamLearnersRequest {
            learner_ids: vec![
                ids[2].clone(),
                unknown.clone(),
                ids[1].clone(),
                ids[0].to_uppercase(),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(batches.len(), 1);
    let got: Vec<&str> = batches[0]
        .learners
        .iter()
        .map(|l| l.learner_id.as_str())
        .collect();
    assert_eq!(got, [ids[0].as_str(), ids[2].as_str()]);
    let mut withheld: Vec<(String, String)> = batches[0]
        .withheld
        .iter()
        .map(|w| (w.learner_id.clone(), w.reason.clone()))
        .collect();
    withheld.sort();
    let mut expected = vec![
        (unknown, "NOT_FOUND".to_owned()),
        (ids[1].clone(), "PROCESSING_RESTRICTED".to_owned()),
    ];
    expected.sort();
    assert_eq!(withheld, expected);
    assert!(batches[0].resume_token.is_empty());
}

#[tokio::test]
async fn only_services_stream_and_bad_requests_name_their_fields() {
    let suite = TestSuite::start().await.unwrap();
    create_learners(&suite, 1).await;
    for credentials in [
        staff(&suite, "registrar", "course_administration"),
        service(&suite, "marketing"),
    ] {
        let err = stream(&suite, credentials, StreamLearnersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    // The guard checks the text rules of the proto before the handler runs.
    let err = stream(
        &suite,
        service(&suite, "exam_booking"),
        StreamLearnersRequest {
            learner_ids: vec!["not-a-uuid".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["learner_ids[0]"]);
    let err = stream(
        &suite,
        service(&suite, "exam_booking"),
        StreamLearnersRequest {
            learner_ids: vec!["00000000-0000-4000-8000-000000000001".into()],
            read_mask: mask(&["given_name", "shoe_size"]),
            resume_token: "r1".into(),
            batch_size: 5000,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut named = fields(&err);
    named.sort();
    assert_eq!(named, ["batch_size", "read_mask.paths[1]", "resume_token"]);
    let err = stream(
        &suite,
        service(&suite, "exam_booking"),
        StreamLearnersRequest {
            resume_token: "nonsense".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["resume_token"]);
    assert_eq!(streamed_records(&suite).await, 0);
}

async fn changes(
    suite: &TestSuite,
    tenant: &str,
    cursor: &str,
) -> Result<tutela_proto::enrolment::ListLearnerChangesResponse, tonic::Status> {
    use tutela_proto::enrolment::ListLearnerChangesRequest;
    suite
        .learners(Credentials::new(
            &suite.token(tenant, "sharing", &["service"]),
            "legal_obligation",
        ))
        .list_learner_changes(ListLearnerChangesRequest {
            cursor: cursor.to_owned(),
            page_size: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn rectifications_and_erasures_reach_the_change_feed_in_commit_order_without_values() {
    use tutela_proto::enrolment::{LearnerChangeKind, LearnerProfile, UpdateLearnerRequest};
    use tutela_proto::privacy::EraseSubjectRequest;
    let suite = TestSuite::start().await.unwrap();
    let ids = create_learners(&suite, 2).await;
    let start = changes(&suite, "acme", "").await.unwrap();
    assert!(
        start.changes.is_empty(),
        "creating a learner is not a change"
    );

    let new_email = "ada@moved.example";
    crate::personal(&[new_email]);
    suite
        .learners(staff(&suite, "registrar", "course_administration"))
        .update_learner(UpdateLearnerRequest {
            learner: subject(&ids[1]),
            profile: Some(LearnerProfile {
                email: new_email.into(),
                ..Default::default()
            }),
            update_mask: mask(&["phone", "email"]),
            ..Default::default()
        })
        .await
        .unwrap();
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    suite
        .subject_data(dpo)
        .erase_subject(EraseSubjectRequest {
            subject: subject(&ids[0]),
            reason: "learner's erasure request".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let page = changes(&suite, "acme", &start.next_cursor).await.unwrap();
    let seen: Vec<(String, i32, Vec<String>)> = page
        .changes
        .iter()
        .map(|c| (c.learner_id.clone(), c.kind, c.fields.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                ids[1].clone(),
                LearnerChangeKind::Rectified as i32,
                vec!["email".to_owned(), "phone".to_owned()]
            ),
            (ids[0].clone(), LearnerChangeKind::Erased as i32, Vec::new()),
        ]
    );
    assert!(page.changes.iter().all(|c| c.changed_at.is_some()));
    // Nothing new: the same cursor back, and no change twice.
    let again = changes(&suite, "acme", &page.next_cursor).await.unwrap();
    assert!(again.changes.is_empty());
    assert_eq!(again.next_cursor, page.next_cursor);
    // Another tenant's follower sees none of it.
    assert!(
        changes(&suite, "globex", "")
            .await
            .unwrap()
            .changes
            .is_empty()
    );
    // A bad cursor names the field; staff do not follow the feed.
    let err = changes(&suite, "acme", "x9").await.unwrap_err();
    assert_eq!(fields(&err), ["cursor"]);
    let err = suite
        .learners(staff(&suite, "registrar", "legal_obligation"))
        .list_learner_changes(tutela_proto::enrolment::ListLearnerChangesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The retention sweep removes changes once they are older than the feed keeps them.
    let learners = tutela_enrolment::Learners::new(
        suite.database().connect().await.unwrap(),
        std::sync::Arc::new(tutela::keys::load_keyring(suite.config()).unwrap()),
        tutela::keys::load_audit_keys(suite.config()).unwrap(),
        std::sync::Arc::new(tutela_store::SystemClock),
    );
    let later =
        chrono::Utc::now() + chrono::Duration::days(tutela_enrolment::CHANGES_KEPT_DAYS + 1);
    assert_eq!(
        learners
            .sweep_changes(chrono::Utc::now(), false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(learners.sweep_changes(later, true).await.unwrap(), 2);
    assert_eq!(learners.sweep_changes(later, false).await.unwrap(), 2);
    assert!(
        changes(&suite, "acme", "")
            .await
            .unwrap()
            .changes
            .is_empty()
    );
}

#[tokio::test]
async fn a_service_streams_the_records_it_asks_for_of_one_course_redacted_to_the_purpose() {
    let suite = TestSuite::start().await.unwrap();
    let ids = create_learners(&suite, 2).await;
    let exam = suite.create_course("acme", "EXAM-4").await.unwrap();
    let other = suite.create_course("acme", "ENG-L3").await.unwrap();
    let started = EnrolmentStatus::Started;
    let enrolment = suite.enrol("acme", &ids[0], &exam, started).await.unwrap();
    let elsewhere = suite.enrol("acme", &ids[0], &other, started).await.unwrap();
    let mut tutor = suite.enrolments(staff(&suite, "tutor", "course_administration"));
    for (e, score) in [(&enrolment, 71.0), (&elsewhere, 90.0)] {
        tutor
            .record_result(tutela_testkit::sample_result(e, score))
            .await
            .unwrap();
    }
    suite
        .enrolments(staff(&suite, "registrar", "course_administration"))
        .change_enrolment_status(ChangeEnrolmentStatusRequest {
            enrolment_id: enrolment.clone(),
            status: EnrolmentStatus::Completed as i32,
        })
        .await
        .unwrap();
    suite
        .certificates(staff(&suite, "registrar", "certification"))
        .issue_certificate(IssueCertificateRequest {
            enrolment_id: enrolment.clone(),
            kind: AwardKind::Certificate as i32,
            ..Default::default()
        })
        .await
        .unwrap();

    let kinds = [
        RecordKind::Enrolments,
        RecordKind::Results,
        RecordKind::Certificates,
    ];
    let request = StreamLearnersRequest {
        learner_ids: ids.clone(),
        read_mask: mask(&["given_name"]),
        records: kinds.iter().map(|k| *k as i32).collect(),
        course_id: exam.clone(),
        ..Default::default()
    };
    let batches = stream(&suite, service(&suite, "exam_results"), request.clone())
        .await
        .unwrap();
    let records = &batches[0].records;
    let of: Vec<&str> = records.iter().map(|r| r.learner_id.as_str()).collect();
    assert_eq!(
        of,
        [ids[0].as_str(), ids[1].as_str()],
        "one entry per learner, in order"
    );
    // The exam's course only: one of each, the other course's result left out.
    let first = &records[0];
    assert_eq!(
        (
            first.enrolments.len(),
            first.results.len(),
            first.certificates.len()
        ),
        (1, 1, 1)
    );
    // Exam results may read assessments: the result is whole, its learner too...
    let r = &first.results[0];
    assert_eq!(
        (r.score, r.assessment.as_str()),
        (71.0, "Unit 4 written exam")
    );
    assert_eq!(r.learner.as_ref().unwrap().subject_id, ids[0]);
    // ...but not education data: the guard clears the enrolment's and certificate's fields.
    assert!(r.enrolment_id.is_empty(), "{r:?}");
    let e = &first.enrolments[0];
    assert!(
        e.enrolment_id.is_empty() && e.course_id.is_empty() && e.status == 0,
        "{e:?}"
    );
    let c = &first.certificates[0];
    assert!(c.certificate_id.is_empty() && c.title.is_empty() && c.issued_at.is_none());
    let second = &records[1];
    assert!(second.enrolments.is_empty() && second.results.is_empty());

    // Every course's records without `course_id`; none at all without `records`.
    let mut every = request.clone();
    every.course_id.clear();
    let batches = stream(&suite, service(&suite, "exam_results"), every)
        .await
        .unwrap();
    let scores: Vec<f64> = batches[0].records[0]
        .results
        .iter()
        .map(|r| r.score)
        .collect();
    assert_eq!(scores, [71.0, 90.0]);
    let mut none = request.clone();
    none.records.clear();
    none.course_id.clear();
    let batches = stream(&suite, service(&suite, "exam_results"), none)
        .await
        .unwrap();
    assert!(batches[0].records.is_empty());

    // Bad requests name their fields.
    let mut twice = request.clone();
    twice.records = vec![RecordKind::Results as i32, RecordKind::Results as i32];
    let mut unknown = request.clone();
    unknown.records = vec![0];
    let mut course_alone = request.clone();
    course_alone.records.clear();
    for (bad, field) in [
        (twice, "records[1]"),
        (unknown, "records[0]"),
        (course_alone, "course_id"),
    ] {
        let err = stream(&suite, service(&suite, "exam_results"), bad)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), fields(&err)),
            (Code::InvalidArgument, vec![field.to_owned()])
        );
    }
}

#[tokio::test]
async fn a_stream_may_ask_for_more_consent_than_the_register_never_less() {
    let suite = TestSuite::start().await.unwrap();
    let ids = create_learners(&suite, 3).await;
    let purpose = tutela_proto::common::Purpose::ThirdPartyDisclosure;
    suite
        .grant_consent("acme", &ids[0], purpose, "")
        .await
        .unwrap();
    suite
        .grant_consent("acme", &ids[1], purpose, "partner-7")
        .await
        .unwrap();
    let read = |check: ConsentCheck| StreamLearnersRequest {
        learner_ids: ids.clone(),
        recipient: "partner-7".into(),
        consent_check: check as i32,
        ..Default::default()
    };
    let streamed = |batches: Vec<StreamLearnersResponse>| -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| b.learners.iter().map(|l| l.learner_id.clone()))
            .collect()
    };
    let as_sharing = || service(&suite, "third_party_disclosure");
    // The register asks for consent to the purpose, for the recipient or as a whole; so does
    // ALWAYS (which differs only where the register's purpose names consent without requiring
    // it), and never less.
    for check in [ConsentCheck::Unspecified, ConsentCheck::Always] {
        let consented = stream(&suite, as_sharing(), read(check)).await.unwrap();
        assert_eq!(consented[0].withheld[0].learner_id, ids[2]);
        assert_eq!(consented[0].withheld[0].reason, "CONSENT_REQUIRED");
        assert_eq!(streamed(consented), [ids[0].clone(), ids[1].clone()]);
    }
    // Named: only the grant that names the recipient counts.
    let named = stream(&suite, as_sharing(), read(ConsentCheck::NamedRecipient))
        .await
        .unwrap();
    assert_eq!(streamed(named), [ids[1].clone()]);

    let mut nameless = read(ConsentCheck::NamedRecipient);
    nameless.recipient.clear();
    let mut unknown = read(ConsentCheck::Always);
    unknown.consent_check = 9;
    for (bad, field) in [(nameless, "recipient"), (unknown, "consent_check")] {
        let err = stream(&suite, as_sharing(), bad).await.unwrap_err();
        assert_eq!(
            (err.code(), fields(&err)),
            (Code::InvalidArgument, vec![field.to_owned()])
        );
    }
}
