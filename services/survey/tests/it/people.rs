//! The course's people read through the enrolment service's API: the invitees' and the course's
//! staff's names scrubbed from comments, only the declared respondent attributes sealed with a
//! response, and nothing stored when enrolment cannot be reached.

use tonic::Code;
use tutela_proto::survey::{
    Answer, CreateSurveyRequest, RemindRespondentsRequest, RespondentAttribute,
    SubmitResponseRequest, answer,
};
use tutela_store::testing::logs::personal;
use tutela_testkit::{TestSuite, sample_profile};

use crate::{invite, learner, new_survey, response, tutor, uuid};

/// Creates `n` learners of `acme` from [`sample_profile`] 1..=n (Given1 Family1, ...); their ids.
async fn learners(suite: &TestSuite, n: u64) -> Vec<String> {
    suite
        .create_learners("acme", (1..=n).map(sample_profile), 4)
        .await
        .unwrap()
}

/// Creates a survey declaring `attributes` as the tutor; its id.
async fn survey_declaring(suite: &TestSuite, attributes: &[RespondentAttribute]) -> String {
    let mut request: CreateSurveyRequest = new_survey(&uuid());
    if let Some(s) = request.survey.as_mut() {
        s.attributes = attributes.iter().map(|a| *a as i32).collect();
    }
    suite
        .surveys(tutor(suite))
        .create_survey(request)
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap()
        .survey_id
}

/// Creates a survey of the course `course_id` as the tutor; its id.
async fn survey_about(suite: &TestSuite, course_id: &str) -> String {
    suite
        .surveys(tutor(suite))
        .create_survey(new_survey(course_id))
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap()
        .survey_id
}

/// The one response in `learner_id`'s survey export.
async fn exported(suite: &TestSuite, learner_id: &str) -> serde_json::Value {
    let doc = suite
        .service_export("acme", learner_id, "survey")
        .await
        .unwrap();
    let responses = doc["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 1, "{doc}");
    responses[0].clone()
}

#[tokio::test]
async fn a_comment_naming_an_invitee_is_stored_with_the_name_scrubbed() {
    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 4).await;
    let survey_id = survey_declaring(&suite, &[]).await;
    invite(&suite, &survey_id, &[&ids[0], &ids[1], &ids[2]], "").await;

    let answered = suite
        .responses(learner(&suite, &ids[0]))
        .submit_response(response(
            &survey_id,
            &ids[0],
            5,
            "Thanks to Given2 Family2, and GIVEN3 FAMILY3 too",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.identifiers_replaced, 2);
    let stored = exported(&suite, &ids[0]).await;
    assert_eq!(
        stored["answers"][1]["text"], "Thanks to [NAME], and [NAME] too",
        "{stored}"
    );

    // A learner invited after the survey's scrubber was built is known to the next one.
    invite(&suite, &survey_id, &[&ids[3]], "").await;
    suite
        .responses(learner(&suite, &ids[1]))
        .submit_response(response(&survey_id, &ids[1], 4, "Given4 helped a lot"))
        .await
        .unwrap();
    let stored = exported(&suite, &ids[1]).await;
    assert_eq!(
        stored["answers"][1]["text"], "[NAME] helped a lot",
        "{stored}"
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn a_comment_naming_the_courses_staff_is_stored_with_their_names_scrubbed() {
    let suite = TestSuite::start().await.unwrap();
    personal(&["Ada Lovelace", "Lovelace", "SAM PATEL"]);
    let ids = learners(&suite, 2).await;
    let course_id = suite
        .create_course_with_staff("acme", "ENG-L3-2027", &["Dr Ada Lovelace", "Sam Patel"])
        .await
        .unwrap();
    let staffed = survey_about(&suite, &course_id).await;
    // A survey's course is the caller's label: one that enrolment does not have names no staff,
    // and its survey is answered all the same.
    let unknown = survey_about(&suite, &uuid()).await;
    invite(&suite, &staffed, &[&ids[0]], "").await;
    invite(&suite, &unknown, &[&ids[1]], "").await;
    let comment = "Thanks to Dr Lovelace and SAM PATEL";

    let answered = suite
        .responses(learner(&suite, &ids[0]))
        .submit_response(response(&staffed, &ids[0], 5, comment))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.identifiers_replaced, 2);
    // The staff name's title is no name part: the scrubber's title rule keeps it.
    let stored = exported(&suite, &ids[0]).await;
    assert_eq!(
        stored["answers"][1]["text"], "Thanks to Dr [NAME] and [NAME]",
        "{stored}"
    );

    // Without the staff names only the titled name goes (by the title rule alone): it is the
    // course's staff that made "SAM PATEL" a name above.
    let answered = suite
        .responses(learner(&suite, &ids[1]))
        .submit_response(response(&unknown, &ids[1], 5, comment))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.identifiers_replaced, 1);
    let stored = exported(&suite, &ids[1]).await;
    assert_eq!(
        stored["answers"][1]["text"], "Thanks to Dr [NAME] and SAM PATEL",
        "{stored}"
    );
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn only_the_declared_attributes_are_read_and_sealed_the_age_as_a_band() {
    let suite = TestSuite::start().await.unwrap();
    let ids = learners(&suite, 2).await;
    let declaring = survey_declaring(
        &suite,
        &[RespondentAttribute::AgeBand, RespondentAttribute::Country],
    )
    .await;
    let silent = survey_declaring(&suite, &[]).await;
    invite(&suite, &declaring, &[&ids[0]], "").await;
    invite(&suite, &silent, &[&ids[1]], "").await;
    for (survey_id, who) in [(&declaring, &ids[0]), (&silent, &ids[1])] {
        suite
            .responses(learner(&suite, who))
            .submit_response(response(survey_id, who, 4, "Fine"))
            .await
            .unwrap();
    }

    let stored = exported(&suite, &ids[0]).await;
    // sample_profile: born 1990-01-01 in GB, working at Initech.
    assert_eq!(
        stored["attributes"],
        serde_json::json!({ "age_band": "35-44", "country": "GB" }),
        "{stored}"
    );
    let text = stored.to_string();
    assert!(
        !text.contains("1990"),
        "the date of birth is never stored: {text}"
    );
    assert!(
        !text.contains("Initech"),
        "an undeclared attribute is read: {text}"
    );
    let stored = exported(&suite, &ids[1]).await;
    assert_eq!(stored["attributes"], serde_json::json!({}), "{stored}");
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn without_enrolment_nothing_is_stored_and_the_call_is_unavailable_to_retry() {
    let suite = TestSuite::start_with(|c| {
        // Nothing listens on port 1: every read through enrolment fails to connect.
        c.sections.insert(
            "survey".into(),
            serde_json::json!({ "enrolment_endpoint": "http://127.0.0.1:1" }),
        );
    })
    .await
    .unwrap();
    let ids = learners(&suite, 2).await;
    let survey_id = survey_declaring(&suite, &[]).await;
    invite(&suite, &survey_id, &[&ids[0], &ids[1]], "").await;

    // Free text is not scrubbed without the invitees' names: refused, not stored.
    let err = suite
        .responses(learner(&suite, &ids[0]))
        .submit_response(response(&survey_id, &ids[0], 5, "Thanks to Given2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let doc = suite
        .service_export("acme", &ids[0], "survey")
        .await
        .unwrap();
    assert_eq!(doc["responses"].as_array().unwrap().len(), 0, "{doc}");
    // The invitation still waits, so the learner may retry (and is reminded).
    let mut waiting = suite
        .responses(tutor(&suite))
        .remind_respondents(RemindRespondentsRequest {
            survey_id: survey_id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .learner_ids;
    waiting.sort();
    let mut both = ids.clone();
    both.sort();
    assert_eq!(waiting, both);

    // A response without free text to a survey declaring no attributes needs no enrolment.
    suite
        .responses(learner(&suite, &ids[1]))
        .submit_response(SubmitResponseRequest {
            survey_id: survey_id.clone(),
            learner_id: ids[1].clone(),
            answers: vec![Answer {
                question_id: "overall".into(),
                value: Some(answer::Value::Rating(3)),
            }],
        })
        .await
        .unwrap();

    // A survey declaring attributes cannot be answered without them either.
    let declaring = survey_declaring(&suite, &[RespondentAttribute::Gender]).await;
    invite(&suite, &declaring, &[&ids[1]], "").await;
    let err = suite
        .responses(learner(&suite, &ids[1]))
        .submit_response(SubmitResponseRequest {
            survey_id: declaring,
            learner_id: ids[1].clone(),
            answers: vec![Answer {
                question_id: "overall".into(),
                value: Some(answer::Value::Rating(3)),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    suite.stop().await.unwrap();
}
