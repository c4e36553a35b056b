//! What partners send back, end to end over real gRPC: a partner confirms exam bookings and
//! submits results against the pseudonyms it pulled; the sharing service maps each back only if
//! the partner was sent that learner under an agreement in force (under any key version), keeps
//! the bookings, and records the results in the learner's enrolment through enrolment's API,
//! once however often they are retried. Another partner's pseudonym, or one never sent, is
//! refused per item; a malformed request names the field.

use prost_types::Timestamp;
use tonic::Code;
use tutela_proto::common::{IdempotencyKey, SubjectRef};
use tutela_proto::enrolment::{EnrolmentStatus, ListResultsRequest};
use tutela_proto::privacy::EraseSubjectRequest;
use tutela_proto::sharing::inbound_service_client::InboundServiceClient;
use tutela_proto::sharing::{
    BookingConfirmation, ExamResult, ItemOutcome, ListBookingsRequest, RotatePartnerKeyRequest,
    SubmitBookingConfirmationsRequest, SubmitResultsRequest,
};
use tutela_testkit::{Authed, Credentials, TestSuite};

use crate::disclosures::{as_partner, disclose, learners, partner_in_force, pull};
use crate::*;

fn inbound(suite: &TestSuite, credentials: Credentials) -> InboundServiceClient<Authed> {
    InboundServiceClient::with_interceptor(suite.channel(), credentials)
}

fn subject(id: &str) -> Option<SubjectRef> {
    Some(SubjectRef {
        subject_id: id.into(),
    })
}

/// A partner of `acme` in GB with an agreement in force for exam booking only.
async fn booking_partner(suite: &TestSuite) -> String {
    let partner_id = partner(suite, "GB").await;
    let mut request = new_agreement(&partner_id);
    request.purposes.truncate(1);
    suite.agreement_in_force("acme", request).await.unwrap();
    partner_id
}

/// Discloses `ids` to `partner_id` for exam booking and pulls them as the partner: its
/// pseudonyms, in the order of `ids`.
async fn pseudonyms(suite: &TestSuite, partner_id: &str, ids: &[String]) -> Vec<String> {
    let delivery = suite
        .disclosures(staff(suite, "acme", "exam_officer", "exam_booking"))
        .disclose(disclose(partner_id, ids))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    pull(
        suite,
        as_partner(suite, partner_id, "exam_booking"),
        &delivery.delivery_id,
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.pseudonym)
    .collect()
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn booking(pseudonym: &str, reference: &str, course_id: &str) -> BookingConfirmation {
    BookingConfirmation {
        pseudonym: pseudonym.into(),
        booking_reference: reference.into(),
        course_id: course_id.into(),
        starts_at: at(1_800_000_000),
        venue: "Manchester Test Centre, room 4".into(),
    }
}

fn exam_result(pseudonym: &str, reference: &str, course_id: &str, score: f64) -> ExamResult {
    ExamResult {
        pseudonym: pseudonym.into(),
        booking_reference: reference.into(),
        course_id: course_id.into(),
        assessment: "Unit 4 written exam".into(),
        score,
        maximum: 100.0,
        passed: score >= 50.0,
        assessed_at: at(1_790_000_000),
    }
}

fn outcomes(results: &[tutela_proto::sharing::ItemResult]) -> Vec<ItemOutcome> {
    results.iter().map(|r| r.outcome()).collect()
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey { key: k.into() })
}

/// The results enrolment holds for `learner`, as an exam officer reads them.
async fn results_of(suite: &TestSuite, learner: &str) -> Vec<(f64, String)> {
    suite
        .enrolments(staff(suite, "acme", "exam_officer", "exam_results"))
        .list_results(ListResultsRequest {
            learner: subject(learner),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| (r.score, r.assessment))
        .collect()
}

#[tokio::test]
async fn a_partner_books_and_submits_results_by_pseudonym_and_enrolment_records_each_once() {
    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 3).await;
    let course_id = suite.create_course("acme", "ENG-L3-2027").await.unwrap();
    let other_course = suite.create_course("acme", "ENG-L2-2027").await.unwrap();
    use EnrolmentStatus::{Applied, Started};
    suite
        .enrol("acme", &ids[0], &course_id, Started)
        .await
        .unwrap();
    // Applied only: may be booked, but has no result to record yet.
    suite
        .enrol("acme", &ids[1], &course_id, Applied)
        .await
        .unwrap();
    let (a, _) = partner_in_force(&suite).await;
    let (b, _) = partner_in_force(&suite).await;
    let pa = pseudonyms(&suite, &a, &ids[..2]).await;
    let pb = pseudonyms(&suite, &b, &[ids[0].clone(), ids[2].clone()]).await;
    let never_sent = "ab".repeat(32);

    // Bookings: the partner's own pseudonyms map back; another partner's pseudonym of the same
    // learner, or one never sent, is unknown; a course that does not exist is invalid.
    let booked = inbound(&suite, as_partner(&suite, &a, "exam_booking"))
        .submit_booking_confirmations(SubmitBookingConfirmationsRequest {
            items: vec![
                booking(&pa[0], "R-1", &course_id),
                booking(&pa[1], "R-2", &course_id),
                booking(&pb[0], "R-3", &course_id),
                booking(&never_sent, "R-4", &course_id),
                booking(&pa[0], "R-5", "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77"),
            ],
            idempotency_key: key("bookings-0001"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        outcomes(&booked.results),
        [
            ItemOutcome::Accepted,
            ItemOutcome::Accepted,
            ItemOutcome::UnknownPseudonym,
            ItemOutcome::UnknownPseudonym,
            ItemOutcome::Invalid,
        ]
    );
    assert_eq!(booked.accepted, 2);

    // The exam officer sees the bookings with the learners' ids, not the pseudonyms.
    let listed = inbound(
        &suite,
        staff(&suite, "acme", "exam_officer", "exam_booking"),
    )
    .list_bookings(ListBookingsRequest {
        course_id: course_id.clone(),
        page: None,
    })
    .await
    .unwrap()
    .into_inner()
    .bookings;
    let mut learners_booked: Vec<String> = listed
        .iter()
        .map(|b| b.subject.as_ref().unwrap().subject_id.clone())
        .collect();
    learners_booked.sort();
    let mut expected = ids[..2].to_vec();
    expected.sort();
    assert_eq!(learners_booked, expected);
    assert!(
        listed
            .iter()
            .all(|b| b.partner_id == a && b.venue.starts_with("Manchester"))
    );
    let none = inbound(
        &suite,
        staff(&suite, "acme", "exam_officer", "exam_booking"),
    )
    .list_bookings(ListBookingsRequest {
        course_id: other_course.clone(),
        page: None,
    })
    .await
    .unwrap()
    .into_inner()
    .bookings;
    assert!(none.is_empty());
    // A partner cannot list the tenant's bookings.
    let err = inbound(&suite, as_partner(&suite, &b, "exam_booking"))
        .list_bookings(ListBookingsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Results: by booking reference or course; recorded in enrolment.
    let request = SubmitResultsRequest {
        items: vec![
            exam_result(&pa[0], "R-1", "", 72.0),
            exam_result(&pa[1], "", &course_id, 40.0),
            exam_result(&pb[1], "", &course_id, 90.0),
            exam_result(&pb[0], "", &course_id, 90.0),
            // Not enrolled on that course; and a reference that is no booking of theirs.
            exam_result(&pa[0], "", &other_course, 90.0),
            exam_result(&pa[0], "R-2", "", 90.0),
        ],
        idempotency_key: key("results-0001"),
    };
    let mut results_client = inbound(&suite, as_partner(&suite, &a, "exam_results"));
    let first = results_client
        .submit_results(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        outcomes(&first.results),
        [
            ItemOutcome::Accepted,
            // Applied, not started: enrolment records no result yet.
            ItemOutcome::NotEnrolled,
            ItemOutcome::UnknownPseudonym,
            ItemOutcome::UnknownPseudonym,
            ItemOutcome::NotEnrolled,
            ItemOutcome::NotEnrolled,
        ]
    );
    assert_eq!(first.accepted, 1);
    assert_eq!(
        results_of(&suite, &ids[0]).await,
        [(72.0, "Unit 4 written exam".to_owned())]
    );
    assert!(results_of(&suite, &ids[1]).await.is_empty());
    assert!(results_of(&suite, &ids[2]).await.is_empty());

    // A retry under the same key answers the same; a resubmission without it records nothing
    // twice either (the item's own key in enrolment).
    let again = results_client
        .submit_results(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    let mut unkeyed = request.clone();
    unkeyed.idempotency_key = None;
    let resent = results_client
        .submit_results(unkeyed)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&resent.results)[0], ItemOutcome::Accepted);
    assert_eq!(results_of(&suite, &ids[0]).await.len(), 1);
    // The same key with another request is refused.
    let mut other = request.clone();
    other.items.truncate(1);
    let err = results_client.submit_results(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // After a key rotation the old pseudonyms still map back (the retired key is kept).
    suite
        .partners(dpo(&suite))
        .rotate_partner_key(RotatePartnerKeyRequest {
            partner_id: a.clone(),
        })
        .await
        .unwrap();
    let mut later = exam_result(&pa[0], "", &course_id, 81.0);
    later.assessment = "Unit 5 practical".into();
    let rotated = results_client
        .submit_results(SubmitResultsRequest {
            items: vec![later],
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&rotated.results), [ItemOutcome::Accepted]);
    assert_eq!(results_of(&suite, &ids[0]).await.len(), 2);

    // The learner's export lists their bookings; erasure deletes them.
    let doc = crate::notices::sharing_export(&suite, &ids[0]).await;
    let bookings = doc["exam_bookings"].as_array().unwrap();
    assert_eq!(bookings.len(), 1, "{doc}");
    assert_eq!(bookings[0]["booking_reference"], "R-1");
    assert_eq!(bookings[0]["course_id"], course_id.as_str());
    assert_eq!(bookings[0]["partner"], "Example Exam Board Ltd");
    suite
        .subject_data(Credentials::new(
            &suite.token("acme", "dpo-1", &["dpo"]),
            "subject_rights",
        ))
        .erase_subject(EraseSubjectRequest {
            subject: subject(&ids[1]),
            reason: "learner's erasure request".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let left = inbound(
        &suite,
        Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "legal_obligation"),
    )
    .list_bookings(ListBookingsRequest::default())
    .await
    .unwrap()
    .into_inner()
    .bookings;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].subject.as_ref().unwrap().subject_id, ids[0]);
}

#[tokio::test]
async fn a_malformed_submission_names_its_fields_and_a_purpose_without_agreement_is_refused() {
    let suite = TestSuite::start().await.unwrap();
    let course_id = suite.create_course("acme", "ENG-L3-2027").await.unwrap();
    let partner_id = booking_partner(&suite).await;
    let pseudonym = "cd".repeat(32);

    // The reference named twice, no start, no venue: every field named at once.
    let mut bad = booking(&pseudonym, "R-1", &course_id);
    bad.starts_at = None;
    bad.venue = String::new();
    let err = inbound(&suite, as_partner(&suite, &partner_id, "exam_booking"))
        .submit_booking_confirmations(SubmitBookingConfirmationsRequest {
            items: vec![booking(&pseudonym, "R-1", &course_id), bad],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "items[1].booking_reference",
            "items[1].starts_at",
            "items[1].venue",
        ]
    );
    // A course id that is no UUID (refused by the contract's text rule before the handler).
    let err = inbound(&suite, as_partner(&suite, &partner_id, "exam_booking"))
        .submit_booking_confirmations(SubmitBookingConfirmationsRequest {
            items: vec![booking(&pseudonym, "R-1", "not-a-course")],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["items[0].course_id"]);
    let err = inbound(&suite, as_partner(&suite, &partner_id, "exam_booking"))
        .submit_booking_confirmations(SubmitBookingConfirmationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["items"]);

    let mut both = exam_result(&pseudonym, "R-1", &course_id, 50.0);
    both.score = 120.0;
    let err = inbound(&suite, as_partner(&suite, &partner_id, "exam_results"))
        .submit_results(SubmitResultsRequest {
            items: vec![both],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["items[0].course_id", "items[0].score"]);

    // The partner's agreement does not cover exam results.
    let err = inbound(&suite, as_partner(&suite, &partner_id, "exam_results"))
        .submit_results(SubmitResultsRequest {
            items: vec![exam_result(&pseudonym, "", &course_id, 50.0)],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "AGREEMENT_REQUIRED");
    // Staff do not submit as a partner.
    let err = inbound(
        &suite,
        staff(&suite, "acme", "exam_officer", "exam_results"),
    )
    .submit_results(SubmitResultsRequest {
        items: vec![exam_result(&pseudonym, "", &course_id, 50.0)],
        idempotency_key: None,
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
