//! Tracing for every tutela process: a terminal or JSON log, OpenTelemetry export switched on by
//! the standard `OTEL_EXPORTER_OTLP_*` variables, and W3C trace context carried across gRPC calls.
//!
//! Spans and log lines carry ids and pseudonyms only. The server span ([`ServerTraceLayer`])
//! follows the OpenTelemetry RPC conventions and names only what the contract or a route
//! template names: never a path's own text (an unsubscribe token is a credential; an unknown
//! path is anyone's text), and nothing of the request. Handlers use
//! `#[instrument(skip_all, fields(..))]` with ids.

mod server;

pub use server::{Routes, ServerTrace, ServerTraceLayer, TracedBody, UNKNOWN_ROUTE};

use std::fmt;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter did not parse.
    #[error("invalid log filter: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built from the `OTEL_EXPORTER_OTLP_*` settings.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("telemetry was already initialised")]
    AlreadyInitialised,
}

/// Keeps the exporter alive; dropping it (or calling [`Telemetry::shutdown`]) flushes spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes pending spans and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("tutela: flushing traces failed: {err}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Whether the environment asks for OTLP export (the standard variables, as the OpenTelemetry
/// specification names them). `OTEL_SDK_DISABLED=true` turns it off.
pub fn otlp_requested(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The resource spans are exported with: `service.name` from `OTEL_SERVICE_NAME`, else from
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `default_service_name`; the other
/// attributes of `OTEL_RESOURCE_ATTRIBUTES` (`key=value` pairs, comma-separated, values
/// percent-encoded); and the SDK's `telemetry.sdk.*`. An `OTEL_RESOURCE_ATTRIBUTES` that does not
/// parse is ignored whole, as the specification says, with a warning.
pub fn resource(
    default_service_name: &str,
    env: impl Fn(&str) -> Option<String>,
) -> opentelemetry_sdk::Resource {
    use opentelemetry::KeyValue;
    let listed = env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let parsed: Option<Vec<KeyValue>> = listed
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (key, value) = entry.split_once('=')?;
            let key = key.trim();
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .ok()?;
            (!key.is_empty()).then(|| KeyValue::new(key.to_owned(), value.into_owned()))
        })
        .collect();
    let attributes = parsed.unwrap_or_else(|| {
        eprintln!("tutela: OTEL_RESOURCE_ATTRIBUTES is not a list of key=value pairs; ignored");
        Vec::new()
    });
    let name = env("OTEL_SERVICE_NAME")
        .filter(|n| !n.trim().is_empty())
        .or_else(|| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == "service.name")
                .map(|kv| kv.value.to_string())
        })
        .unwrap_or_else(|| default_service_name.to_owned());
    opentelemetry_sdk::Resource::builder_empty()
        .with_detector(Box::new(
            opentelemetry_sdk::resource::TelemetryResourceDetector,
        ))
        .with_attributes(attributes)
        .with_service_name(name)
        .build()
}

/// Installs the global subscriber: `filter` (overridden by `RUST_LOG`) to standard error in
/// `format`, plus OTLP export of spans when the environment asks for it, as `service_name` unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` name the service (see [`resource`]). Call
/// once, from `main`.
pub fn init(
    service_name: &str,
    format: LogFormat,
    filter: &str,
) -> Result<Telemetry, TelemetryError> {
    init_to(service_name, format, filter, std::io::stderr)
}

/// [`init`] with the logs written to `writer` instead of standard error: a benchmark passes
/// `std::io::sink` to pay for the server's logging as `tutela serve` does without printing it.
pub fn init_to<W>(
    service_name: &str,
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<Telemetry, TelemetryError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(filter),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let provider = if otlp_requested(|k| std::env::var(k).ok()) {
        // The builder reads OTEL_EXPORTER_OTLP_{,TRACES_}{ENDPOINT,HEADERS,TIMEOUT} itself.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = resource(service_name, |k| std::env::var(k).ok());
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("tutela")));

    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(writer),
            )
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(Telemetry { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's trace context into outgoing call metadata (`traceparent`,
/// `tracestate`), so that the next service's spans join the same trace.
pub fn inject_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// A client interceptor that propagates the trace context on every outgoing call.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateContext;

impl tonic::service::Interceptor for PropagateContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_context(request.metadata_mut());
        Ok(request)
    }
}

/// The W3C trace id of the current span, when tracing is exported (for audit records, which tie
/// an access to its trace).
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let id = span.span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn otlp_is_on_only_when_an_endpoint_is_configured() {
        assert!(!otlp_requested(env(&[])));
        assert!(otlp_requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://c:4317"
        )])));
        assert!(otlp_requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4317"
        )])));
        assert!(!otlp_requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true")
        ])));
    }

    fn service_name(resource: &opentelemetry_sdk::Resource) -> String {
        resource
            .get(&opentelemetry::Key::new("service.name"))
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_service_is_named_by_the_environment_before_the_default() {
        assert_eq!(service_name(&resource("tutela", env(&[]))), "tutela");
        assert_eq!(
            service_name(&resource(
                "tutela",
                env(&[("OTEL_SERVICE_NAME", "tutela-enrolment")])
            )),
            "tutela-enrolment"
        );
        assert_eq!(
            service_name(&resource(
                "tutela",
                env(&[(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=from-attributes,deployment.environment=prod"
                )])
            )),
            "from-attributes"
        );
        // OTEL_SERVICE_NAME wins over the attribute list, as the specification says.
        let both = resource(
            "tutela",
            env(&[
                ("OTEL_SERVICE_NAME", "named"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=listed,service.namespace=learning%20platform",
                ),
            ]),
        );
        assert_eq!(service_name(&both), "named");
        assert_eq!(
            both.get(&opentelemetry::Key::new("service.namespace"))
                .map(|v| v.to_string()),
            Some("learning platform".to_owned())
        );
        assert!(
            both.get(&opentelemetry::Key::new("telemetry.sdk.name"))
                .is_some()
        );
        // Blank counts as unset; a list that does not parse is ignored whole.
        assert_eq!(
            service_name(&resource("tutela", env(&[("OTEL_SERVICE_NAME", " ")]))),
            "tutela"
        );
        let bad = resource(
            "tutela",
            env(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=x,garbage")]),
        );
        assert_eq!(service_name(&bad), "tutela");
    }

    #[test]
    fn an_incoming_trace_context_is_continued_on_outgoing_calls() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
            let request = http::Request::builder()
                .uri("/tutela.privacy.v1.SubjectData/ExportSubject")
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
                .body(())
                .unwrap();
            let span = Routes::default()
                .with_rpcs(["tutela.privacy.v1.SubjectData/ExportSubject".to_owned()])
                .server_span(&request);
            let _entered = span.enter();

            let mut outgoing = tonic::metadata::MetadataMap::new();
            inject_context(&mut outgoing);
            let traceparent = outgoing.get("traceparent").unwrap().to_str().unwrap();
            assert!(
                traceparent.starts_with(&format!("00-{trace_id}-")),
                "{traceparent}"
            );
            // A new span id: this process's span, not the caller's.
            assert!(!traceparent.contains("00f067aa0ba902b7"));
        });
    }
}
