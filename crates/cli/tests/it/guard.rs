//! The guard over real gRPC: every refusal has the documented code and reason, and an authorised
//! call reaches its handler.

use tonic::Code;
use tonic_types::StatusExt;
use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::{DescribeSubjectRequest, EraseSubjectRequest, ExportSubjectRequest};
use tutela_testkit::{Credentials, TestSuite, reason};

const SUBJECT: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";

fn describe(subject: &str) -> DescribeSubjectRequest {
    tutela_store::testing::logs::personal(&[subject]);
    DescribeSubjectRequest {
        subject: Some(SubjectRef {
            subject_id: subject.to_owned(),
        }),
        services: Vec::new(),
    }
}

#[tokio::test]
async fn a_call_without_a_token_is_unauthenticated() {
    let suite = TestSuite::start().await.unwrap();
    let err = suite
        .subject_data(Credentials::none())
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "TOKEN_MISSING");
}

#[tokio::test]
async fn a_forged_token_is_unauthenticated() {
    let suite = TestSuite::start().await.unwrap();
    let good = suite.token("acme", "dpo-1", &["dpo"]);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged = parts.join(".");
    let err = suite
        .subject_data(Credentials::new(&forged, "subject_rights"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "TOKEN_INVALID");
}

#[tokio::test]
async fn a_missing_or_unknown_purpose_is_an_invalid_argument_naming_the_metadata_key() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let err = suite
        .subject_data(Credentials::new(&token, "x").without_purpose())
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "PURPOSE_MISSING");
    let bad = err.get_details_bad_request().unwrap();
    assert_eq!(bad.field_violations[0].field, "x-tutela-purpose");

    let err = suite
        .subject_data(Credentials::new(&token, "curiosity"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "PURPOSE_UNKNOWN");
}

#[tokio::test]
async fn a_role_without_a_grant_is_denied() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "tutor-1", &["tutor"]);
    let err = suite
        .subject_data(Credentials::new(&token, "subject_rights"))
        .export_subject(ExportSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            services: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "ACCESS_DENIED");
    // The refusal says what was refused and why, so that the integrator need not read Cedar.
    let info = err.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata["action"],
        "tutela.privacy.v1.SubjectData/ExportSubject"
    );
    assert_eq!(info.metadata["purpose"], "subject_rights");
    assert_eq!(info.metadata["why"], "no_rule");
    assert!(!err.message().contains(SUBJECT), "{}", err.message());
}

#[tokio::test]
async fn a_refusal_for_the_wrong_purpose_names_the_purposes_that_would_be_allowed() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let err = suite
        .subject_data(Credentials::new(&token, "marketing"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "ACCESS_DENIED");
    assert_eq!(
        info.metadata["action"],
        "tutela.privacy.v1.SubjectData/DescribeSubject"
    );
    assert_eq!(info.metadata["purpose"], "marketing");
    assert_eq!(info.metadata["why"], "purpose_not_allowed");
    let allowed: Vec<&str> = info.metadata["allowed_purposes"].split(',').collect();
    assert!(allowed.contains(&"subject_rights"), "{allowed:?}");
    assert!(!allowed.contains(&"marketing"), "{allowed:?}");
}

#[tokio::test]
async fn the_dpo_reaches_the_rights_endpoint_for_subject_rights() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let reply = suite
        .subject_data(Credentials::new(&token, "subject_rights"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap()
        .into_inner();
    // Every hosted service answers for itself: none holds anything for an unknown subject.
    let services: Vec<&str> = reply.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        ["enrolment", "sharing", "survey", "subscription", "rights"]
    );
    assert!(reply.services.iter().all(|s| s.categories.is_empty()));

    // The same dpo, for marketing, is denied.
    let err = suite
        .subject_data(Credentials::new(&token, "marketing"))
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_learner_reaches_only_their_own_data() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", SUBJECT, &["learner"]);
    let client = suite.subject_data(Credentials::new(&token, "subject_rights"));
    client
        .clone()
        .describe_subject(describe(SUBJECT))
        .await
        .unwrap();
    let other = "5d0c1f8e-2b3a-4c4d-8e9f-a0b1c2d3e4f5";
    let err = client
        .clone()
        .describe_subject(describe(other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // And may not erase, even themselves: erasure goes through the dpo.
    let err = client
        .clone()
        .erase_subject(EraseSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            reason: "art17".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let client = suite.subject_data(Credentials::new(&token, "subject_rights"));
    let err = client
        .clone()
        .describe_subject(describe("not-a-uuid"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "subject.subject_id"
    );

    let err = client
        .clone()
        .describe_subject(DescribeSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            services: vec!["nope".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "services[0]"
    );

    let err = client
        .clone()
        .erase_subject(EraseSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: SUBJECT.into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "reason"
    );
}

/// A unary call with no token to `path`, whatever it is.
async fn anonymous_call(suite: &TestSuite, path: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(suite.channel());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(
        tonic::Request::new(()),
        path,
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .unwrap_err()
}

async fn audited_rpcs(suite: &TestSuite) -> Vec<(String, String)> {
    use sea_orm::{ConnectionTrait, Statement};
    let conn = suite.database().connect().await.unwrap();
    conn.query_all_raw(Statement::from_string(
        conn.get_database_backend(),
        "SELECT rpc, reason FROM tutela_audit_log ORDER BY seq",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get("", "rpc").unwrap(),
            r.try_get("", "reason").unwrap(),
        )
    })
    .collect()
}

#[tokio::test]
async fn an_unknown_path_is_audited_and_logged_as_unknown_never_as_sent() {
    use tutela_store::testing::logs;
    let email = "jane.doe.unknown-path@example.org";
    let ssn = "078-05-1120";
    // Declared personal: the whole binary's capture (spans included, which name an unknown path
    // `unknown`) is scanned for them at the end of the run.
    logs::personal(&[email, ssn]);
    let suite = TestSuite::start().await.unwrap();
    let path = format!("/{}/{email}/{ssn}/Method", "x".repeat(8 * 1024));
    let err = anonymous_call(&suite, &path).await;
    assert_eq!(err.code(), Code::Unauthenticated);

    let rows = audited_rpcs(&suite).await;
    assert_eq!(
        rows,
        [("unknown".to_owned(), "TOKEN_MISSING".to_owned())],
        "one refusal, under the fixed label"
    );
    if logs::capture_is_active() {
        let text = logs::capture().text();
        assert!(
            text.lines()
                .any(|l| l.contains("tutela_policy::guard: call refused")
                    && l.contains("rpc=\"unknown\"")),
            "the refusal is logged under the label"
        );
        // Neither the guard's events nor the span around them carry any of the path.
        for value in [email, ssn, &"x".repeat(64)] {
            assert!(!text.contains(value), "the path reached the log or a span");
        }
    }
}

#[tokio::test]
async fn anonymous_refusals_past_the_budget_are_counted_into_one_summary() {
    use tutela_policy::guard::{ANONYMOUS_BUDGET, ANONYMOUS_WINDOW, OVER_BUDGET};
    let suite = TestSuite::start().await.unwrap();
    let calls = 3 * ANONYMOUS_BUDGET as usize;
    let burst = std::time::Instant::now();
    let refused: Vec<_> = (0..calls)
        .map(|i| {
            let suite_channel = suite.channel();
            tokio::spawn(async move {
                let mut client = tutela_proto::privacy::subject_data_client::SubjectDataClient::new(
                    suite_channel,
                );
                let subject = format!("0b9e8a4c-7f1d-4e55-9a51-{i:012}");
                client
                    .describe_subject(describe(&subject))
                    .await
                    .unwrap_err()
                    .code()
            })
        })
        .collect();
    for r in refused {
        assert_eq!(r.await.unwrap(), Code::Unauthenticated);
    }
    // How many budget windows the burst can have touched: on a loaded machine it may outlast one,
    // and then each window's share may stay within the budget.
    let elapsed = burst.elapsed();
    let windows = usize::try_from(elapsed.as_millis() / ANONYMOUS_WINDOW.as_millis()).unwrap() + 2;
    // The window's summary is written when it ends: wait for it (a loaded machine may take a
    // while to write it), up to a bound past which a missing one is a failure.
    tokio::time::sleep(ANONYMOUS_WINDOW).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (rows, one_by_one, summarised) = loop {
        let rows = audited_rpcs(&suite).await;
        let one_by_one = rows.iter().filter(|(_, r)| r == "TOKEN_MISSING").count();
        let summarised: usize = rows
            .iter()
            .filter_map(|(_, r)| r.strip_prefix(OVER_BUDGET))
            .map(|n| n.parse::<usize>().unwrap())
            .sum();
        if one_by_one + summarised >= calls || std::time::Instant::now() > deadline {
            break (rows, one_by_one, summarised);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let summaries = rows
        .iter()
        .filter(|(_, r)| r.starts_with(OVER_BUDGET))
        .count();
    assert!(
        one_by_one <= windows * ANONYMOUS_BUDGET as usize,
        "{one_by_one} refusals audited one by one in {windows} windows"
    );
    if elapsed < ANONYMOUS_WINDOW {
        // Three budgets' worth within one window's time: at least one window overflowed.
        assert!((1..=2).contains(&summaries), "{summaries} summaries");
    } else {
        assert!(
            summaries <= windows,
            "{summaries} summaries in {windows} windows"
        );
    }
    assert_eq!(
        one_by_one + summarised,
        calls,
        "every refusal is audited or counted"
    );
    assert_eq!(rows.len(), one_by_one + summaries);
}

#[tokio::test]
async fn a_request_refused_before_its_handler_is_audited_as_a_deny_with_its_reason() {
    use sea_orm::{ConnectionTrait, Statement};
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let err = suite
        .subject_data(Credentials::new(&token, "subject_rights"))
        .describe_subject(DescribeSubjectRequest {
            subject: Some(SubjectRef {
                subject_id: "not-a-uuid".to_owned(),
            }),
            services: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let conn = suite.database().connect().await.unwrap();
    let rows: Vec<(String, String, String)> = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT rpc, decision, reason FROM tutela_audit_log ORDER BY seq",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get("", "rpc").unwrap(),
                r.try_get("", "decision").unwrap(),
                r.try_get("", "reason").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [(
            "tutela.privacy.v1.SubjectData/DescribeSubject".to_owned(),
            "deny".to_owned(),
            "INVALID_ARGUMENT".to_owned()
        )],
        "one record: the guard's refusal, with its reason"
    );
}

#[tokio::test]
async fn a_refusal_by_a_forbid_rule_names_the_rule() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", SUBJECT, &["learner"]);
    let err = suite
        .learners(Credentials::new(&token, "course_administration"))
        .create_learner(tutela_proto::enrolment::CreateLearnerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "ACCESS_DENIED");
    assert_eq!(
        info.metadata["action"],
        "tutela.enrolment.v1.LearnerService/CreateLearner"
    );
    assert_eq!(info.metadata["why"], "forbidden");
    assert!(
        info.metadata["policies"].contains("learners-and-guardians-never-list-or-create-learners"),
        "{:?}",
        info.metadata
    );
    // The learner's id is in the token, never in the refusal.
    assert!(!format!("{info:?}").contains(SUBJECT));
    assert!(!err.message().contains(SUBJECT));
}
