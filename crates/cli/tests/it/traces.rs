//! Server spans as the OpenTelemetry SDK records them (its in-memory exporter), from calls to the
//! real server over a real socket: names and attributes after the RPC conventions, the status
//! code of every outcome, and no path text that is not the contract's or a route template's.

use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::DescribeSubjectRequest;
use tutela_testkit::{Credentials, TestSuite};

const SUBJECT: &str = "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77";

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::new(key.to_owned()))
        .map(|kv| kv.value.clone())
}

fn text(value: &str) -> Option<Value> {
    Some(Value::from(value.to_owned()))
}

/// The finished server span named `name`, waiting for it: a span ends when the server has sent
/// the response's last frame, which can be just after the client has it.
async fn server_span(exporter: &InMemorySpanExporter, name: &str) -> SpanData {
    for _ in 0..250 {
        let spans = exporter.get_finished_spans().unwrap();
        if let Some(span) = spans
            .into_iter()
            .find(|s| s.name == name && s.span_kind == SpanKind::Server)
        {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names: Vec<_> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    panic!("no server span {name:?}; spans: {names:?}");
}

fn assert_nowhere(spans: &[SpanData], secret: &str) {
    for span in spans {
        assert!(!span.name.contains(secret), "span name {:?}", span.name);
        for kv in &span.attributes {
            assert!(
                !kv.value.as_str().contains(secret),
                "{} = {:?} in span {:?}",
                kv.key,
                kv.value,
                span.name
            );
        }
    }
}

async fn raw_grpc(suite: &TestSuite, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(suite.channel());
    grpc.ready().await.unwrap();
    grpc.unary::<_, tonic_health::pb::HealthCheckResponse, _>(
        tonic::Request::new(tonic_health::pb::HealthCheckRequest::default()),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

// Current-thread: the server's tasks run on this thread, under this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn server_spans_follow_the_rpc_conventions_and_never_carry_path_text() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // Server spans only. The test binary's global subscriber (the log capture) stays the default
    // on other threads; a span of this subscriber with a parent, dropped on such a thread (the
    // SQLite driver's worker), would be closed through the wrong subscriber.
    let subscriber = tracing_subscriber::registry()
        .with(Targets::new().with_target("tutela_telemetry", Level::INFO))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
    let suite = TestSuite::start().await.unwrap();

    // OK.
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let request = DescribeSubjectRequest {
        subject: Some(SubjectRef {
            subject_id: SUBJECT.into(),
        }),
        services: Vec::new(),
    };
    suite
        .subject_data(Credentials::new(&token, "subject_rights"))
        .describe_subject(request.clone())
        .await
        .unwrap();
    let ok = server_span(&exporter, "tutela.privacy.v1.SubjectData/DescribeSubject").await;
    assert_eq!(attribute(&ok, "rpc.system"), text("grpc"));
    assert_eq!(
        attribute(&ok, "rpc.service"),
        text("tutela.privacy.v1.SubjectData")
    );
    assert_eq!(attribute(&ok, "rpc.method"), text("DescribeSubject"));
    assert_eq!(attribute(&ok, "rpc.grpc.status_code"), Some(Value::I64(0)));
    assert_eq!(ok.status, Status::Unset);
    exporter.reset();

    // Refused by the guard: a client error, so the status stays unset.
    let refused = suite
        .subject_data(Credentials::none())
        .describe_subject(request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let span = server_span(&exporter, "tutela.privacy.v1.SubjectData/DescribeSubject").await;
    assert_eq!(
        attribute(&span, "rpc.grpc.status_code"),
        Some(Value::I64(16))
    );
    assert_eq!(span.status, Status::Unset);
    exporter.reset();

    // No such method: UNIMPLEMENTED is a server error; the method's name is not the contract's,
    // so it is not recorded.
    let unknown = raw_grpc(&suite, "/grpc.health.v1.Health/NoSuchMethod").await;
    assert_eq!(unknown.code(), Code::Unimplemented);
    let span = server_span(&exporter, tutela_telemetry::UNKNOWN_ROUTE).await;
    assert_eq!(attribute(&span, "rpc.system"), text("grpc"));
    assert_eq!(
        attribute(&span, "rpc.grpc.status_code"),
        Some(Value::I64(12))
    );
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_nowhere(&exporter.get_finished_spans().unwrap(), "NoSuchMethod");
    exporter.reset();

    // A path holding personal data is named by the fixed label only.
    let refused = raw_grpc(
        &suite,
        "/tutela.privacy.v1.SubjectData/jane.doe@example.org",
    )
    .await;
    assert_eq!(refused.code(), Code::Unauthenticated);
    server_span(&exporter, tutela_telemetry::UNKNOWN_ROUTE).await;
    assert_nowhere(&exporter.get_finished_spans().unwrap(), "jane.doe");
    exporter.reset();

    // One-click unsubscribe: the route's template, never the token.
    let secret = "c2VjcmV0LXVuc3Vic2NyaWJlLXRva2Vu";
    let mut stream = tokio::net::TcpStream::connect(suite.addr()).await.unwrap();
    let body = "List-Unsubscribe=One-Click";
    let post = format!(
        "POST /unsubscribe/{secret} HTTP/1.1\r\nHost: tutela\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(post.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let span = server_span(&exporter, "POST /unsubscribe/{token}").await;
    assert_eq!(attribute(&span, "http.route"), text("/unsubscribe/{token}"));
    assert_eq!(attribute(&span, "http.request.method"), text("POST"));
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(Value::I64(404))
    );
    assert_eq!(span.status, Status::Unset);
    assert_nowhere(&exporter.get_finished_spans().unwrap(), secret);
}
