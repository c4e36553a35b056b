//! The learner's rights over what the survey service holds: their invitations and their own
//! responses exported (the comment as stored: scrubbed), and erased with their key; and their
//! objection to surveys (Art. 21), which keeps them out of invitations until it is lifted.

use tutela_proto::common::{Purpose, SubjectRef};
use tutela_proto::privacy::{
    DescribeSubjectRequest, EraseSubjectRequest, ObjectToProcessingRequest,
};
use tutela_proto::survey::{InviteRespondentsRequest, Invitee};
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite};

use crate::{fields, invite, learner, reason, response, survey, tutor, uuid};

#[tokio::test]
async fn a_learner_exports_their_own_responses_and_erasure_removes_them_and_their_key() {
    let suite = TestSuite::start().await.unwrap();
    let s = survey(&suite).await;
    let (me, other) = (uuid(), uuid());
    invite(&suite, &s.survey_id, &[&me, &other], "2027-spring").await;
    let email = "erase.me.survey@example.org";
    personal(&[email]);
    suite
        .responses(learner(&suite, &me))
        .submit_response(response(
            &s.survey_id,
            &me,
            4,
            &format!("Write to {email} please"),
        ))
        .await
        .unwrap();
    suite
        .responses(learner(&suite, &other))
        .submit_response(response(&s.survey_id, &other, 2, "Too fast"))
        .await
        .unwrap();

    let doc = suite.service_export("acme", &me, "survey").await.unwrap();
    let responses = doc["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 1, "{doc}");
    assert_eq!(responses[0]["survey"], s.title.as_str());
    let answers = responses[0]["answers"].as_array().unwrap();
    assert_eq!(answers[0]["q"], "overall");
    assert_eq!(answers[0]["rating"], 4);
    assert_eq!(answers[1]["text"], "Write to [EMAIL] please");
    let invitations = doc["invitations"].as_array().unwrap();
    assert_eq!(invitations[0]["state"], "responded");
    assert_eq!(invitations[0]["cohort"], "2027-spring");

    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    let erased = suite
        .subject_data(dpo)
        .erase_subject(EraseSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: me.clone(),
            }),
            reason: "learner's erasure request".into(),
            services: vec!["survey".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let survey_part = erased
        .services
        .iter()
        .find(|e| e.service == "survey")
        .unwrap();
    assert_eq!(survey_part.records_erased, 2);
    let doc = suite.service_export("acme", &me, "survey").await.unwrap();
    assert_eq!(doc["responses"].as_array().unwrap().len(), 0, "{doc}");
    assert_eq!(doc["invitations"].as_array().unwrap().len(), 0, "{doc}");
    // The key is gone for good: invited again, the learner's new answers cannot be sealed.
    invite(&suite, &s.survey_id, &[&me], "").await;
    let err = suite
        .responses(learner(&suite, &me))
        .submit_response(response(&s.survey_id, &me, 3, "again"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SUBJECT_ERASED");
    // The other learner's response stays.
    let doc = suite
        .service_export("acme", &other, "survey")
        .await
        .unwrap();
    assert_eq!(doc["responses"].as_array().unwrap().len(), 1);
    suite.stop().await.unwrap();
}

/// SubjectData/ObjectToProcessing as a dpo of `acme` calls it.
fn objection(subject: &str, purposes: &[Purpose], objected: bool) -> ObjectToProcessingRequest {
    ObjectToProcessingRequest {
        subject: Some(SubjectRef {
            subject_id: subject.into(),
        }),
        services: vec!["survey".into()],
        purposes: purposes.iter().map(|p| *p as i32).collect(),
        objected,
        reason: "art21 request 2026-031".into(),
    }
}

#[tokio::test]
async fn an_objection_to_quality_assurance_keeps_the_learner_out_of_surveys_until_it_is_lifted() {
    let suite = TestSuite::start().await.unwrap();
    let dpo = || Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "subject_rights");
    let s = survey(&suite).await;
    let (me, other) = (uuid(), uuid());

    // Only purposes open to objection: not contract, not legal obligation, not another
    // consent-based purpose (withdrawn instead); none twice; at least one.
    let err = suite
        .subject_data(dpo())
        .object_to_processing(objection(
            &me,
            &[
                Purpose::CourseAdministration,
                Purpose::FunderReporting,
                Purpose::SubjectRights,
                Purpose::QualityAssurance,
                Purpose::QualityAssurance,
            ],
            true,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        ["purposes[0]", "purposes[1]", "purposes[2]", "purposes[4]"]
    );
    let err = suite
        .subject_data(dpo())
        .object_to_processing(objection(&me, &[], true))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["purposes"]);

    let objected = suite
        .subject_data(dpo())
        .object_to_processing(objection(&me, &[Purpose::QualityAssurance], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        objected.services[0].objected_to,
        [Purpose::QualityAssurance as i32]
    );

    // The learner is not invited; nobody is, as with any refusal of an invitee; the purpose is
    // named.
    let err = suite
        .responses(tutor(&suite))
        .invite_respondents(InviteRespondentsRequest {
            survey_id: s.survey_id.clone(),
            invitees: [&me, &other]
                .iter()
                .map(|l| Invitee {
                    learner_id: (*l).clone(),
                    cohort: String::new(),
                })
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&err), "PROCESSING_OBJECTED");
    let info = tonic_types::StatusExt::get_details_error_info(&err).unwrap();
    assert_eq!(info.metadata["purpose"], "quality_assurance");
    // The objection is to surveys only: the learner's rights are still handled.
    let described = suite
        .subject_data(dpo())
        .describe_subject(DescribeSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: me.clone(),
            }),
            services: vec!["survey".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.services[0].objected_to,
        [Purpose::QualityAssurance as i32]
    );
    // Others are invited as before.
    invite(&suite, &s.survey_id, &[&other], "").await;

    // Recording it again changes nothing; lifting it lets the learner be invited.
    suite
        .subject_data(dpo())
        .object_to_processing(objection(&me, &[Purpose::QualityAssurance], true))
        .await
        .unwrap();
    let lifted = suite
        .subject_data(dpo())
        .object_to_processing(objection(&me, &[Purpose::QualityAssurance], false))
        .await
        .unwrap()
        .into_inner();
    assert!(lifted.services[0].objected_to.is_empty());
    invite(&suite, &s.survey_id, &[&me], "").await;
}
