use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
use tutela_testkit::TestSuite;

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

fn service_names(response: ServerReflectionResponse) -> Vec<String> {
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

/// The error details every refusal carries are described by reflection too, so that grpcurl
/// decodes `ErrorInfo` and `BadRequest` instead of printing base64.
#[tokio::test]
async fn reflection_describes_the_google_rpc_error_details() {
    use prost::Message as _;
    let suite = TestSuite::start().await.unwrap();
    for symbol in ["google.rpc.ErrorInfo", "google.rpc.BadRequest"] {
        let mut replies = suite
            .reflection()
            .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
            }]))
            .await
            .unwrap()
            .into_inner();
        let files = match replies.next().await.unwrap().unwrap().message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => files.file_descriptor_proto,
            other => panic!("{symbol}: unexpected reflection response {other:?}"),
        };
        let files: Vec<prost_types::FileDescriptorProto> = files
            .iter()
            .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()).unwrap())
            .collect();
        let details = files
            .iter()
            .find(|f| f.name() == "google/rpc/error_details.proto")
            .unwrap_or_else(|| {
                panic!(
                    "{symbol}: {:?}",
                    files.iter().map(|f| f.name()).collect::<Vec<_>>()
                )
            });
        // Its import is served too (a client asks for it by file name), so a client needs
        // nothing else to decode it.
        assert!(
            details
                .dependency
                .contains(&"google/protobuf/duration.proto".to_owned())
        );
        let mut replies = suite
            .reflection()
            .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileByFilename(
                    "google/protobuf/duration.proto".into(),
                )),
            }]))
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            replies.next().await.unwrap().unwrap().message_response,
            Some(MessageResponse::FileDescriptorResponse(_))
        ));
        let name = symbol.trim_start_matches("google.rpc.");
        assert!(
            details.message_type.iter().any(|m| m.name() == name),
            "{symbol}"
        );
    }
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn the_suite_reports_serving_and_lists_its_services_by_reflection() {
    let suite = TestSuite::start().await.unwrap();

    let status = suite
        .health()
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut replies = suite
        .reflection()
        .server_reflection_info(tokio_stream::iter([list_services()]))
        .await
        .unwrap()
        .into_inner();
    let names = service_names(replies.next().await.unwrap().unwrap());
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "tutela.audit.v1.AuditService",
            "tutela.consent.v1.ConsentLedger",
            "tutela.enrolment.v1.CertificateService",
            "tutela.enrolment.v1.CourseService",
            "tutela.enrolment.v1.EnrolmentService",
            "tutela.enrolment.v1.FeedbackService",
            "tutela.enrolment.v1.LearnerService",
            "tutela.enrolment.v1.LegalHoldService",
            "tutela.privacy.v1.SubjectData",
            "tutela.rights.v1.RightsRequestService",
            "tutela.sharing.v1.AgreementService",
            "tutela.sharing.v1.DisclosureService",
            "tutela.sharing.v1.InboundService",
            "tutela.sharing.v1.NoticeService",
            "tutela.sharing.v1.PartnerService",
            "tutela.sharing.v1.WebhookService",
            "tutela.subscription.v1.SubscriptionService",
            "tutela.survey.v1.ReleaseService",
            "tutela.survey.v1.ResponseService",
            "tutela.survey.v1.SurveyService",
        ]
    );
    for service in [
        "subscription",
        "enrolment",
        "sharing",
        "survey",
        "rights",
        "tutela.rights.v1.RightsRequestService",
        "tutela.sharing.v1.PartnerService",
        "tutela.survey.v1.SurveyService",
        "tutela.consent.v1.ConsentLedger",
        "tutela.enrolment.v1.LearnerService",
        "tutela.subscription.v1.SubscriptionService",
    ] {
        let status = suite
            .health()
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    suite.stop().await.unwrap();
}

#[tokio::test]
async fn health_of_an_unknown_service_is_not_found() {
    let suite = TestSuite::start().await.unwrap();
    let err = suite
        .health()
        .check(HealthCheckRequest {
            service: "tutela.nope.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_can_be_switched_off_for_production() {
    let suite = TestSuite::start_with(|c| c.server.reflection = false)
        .await
        .unwrap();
    let err = suite
        .reflection()
        .server_reflection_info(tokio_stream::iter([list_services()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused() {
    let suite = TestSuite::start_with(|c| c.server.max_message_bytes = 2048)
        .await
        .unwrap();
    let big = HealthCheckRequest {
        service: "x".repeat(4096),
    };
    let err = suite.health().check(big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // The server is still fine afterwards.
    assert!(
        suite
            .health()
            .check(HealthCheckRequest::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_call_in_flight_when_shutdown_begins_completes_and_the_server_then_exits() {
    let mut suite = TestSuite::start().await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(list_services()).await.unwrap();
    let mut replies = suite
        .reflection()
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(!service_names(replies.next().await.unwrap().unwrap()).is_empty());

    // A second connection watches health, to see it turn NOT_SERVING.
    let mut watch = suite
        .health()
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    suite.begin_shutdown();
    let turned = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(
        turned.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    drop(watch);

    // The stream that was in flight still gets its answer after shutdown began.
    tx.send(list_services()).await.unwrap();
    assert!(!service_names(replies.next().await.unwrap().unwrap()).is_empty());
    drop(tx);
    assert!(replies.next().await.is_none());

    tokio::time::timeout(Duration::from_secs(5), suite.stop())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn serving_twice_on_one_database_reapplies_no_migration() {
    // Two processes (as two pods) share one database: the second start must find it migrated.
    let first = TestSuite::start().await.unwrap();
    first
        .health()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let url = first.database().url().to_owned();
    let second = TestSuite::start_with(move |c| c.database.url = url)
        .await
        .unwrap();
    second
        .health()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}
