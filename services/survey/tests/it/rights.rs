//! The learner's rights over what the survey service holds: their invitations and their own
//! responses exported (the comment as stored: scrubbed), and erased with their key.

use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::EraseSubjectRequest;
use tutela_store::testing::logs::personal;
use tutela_testkit::{Credentials, TestSuite};

use crate::{invite, learner, reason, response, survey, uuid};

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
