//! The span of every incoming request, after the OpenTelemetry semantic conventions:
//!
//! - an RPC of the contract: span name `package.Service/Method`, `rpc.system=grpc`,
//!   `rpc.service`, `rpc.method`, and `rpc.grpc.status_code` (the numeric code, from a
//!   trailers-only response's headers or from the trailers at the end of the body); the span
//!   status is Error for the codes the conventions count as server errors (UNKNOWN,
//!   DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) and unset otherwise. A
//!   call the server gives up on (timeout) or the client abandons is CANCELLED;
//! - an HTTP route: span name `METHOD /template/{param}`, `http.request.method`, `http.route` (the
//!   template, never the values in the path: an unsubscribe token is a credential) and
//!   `http.response.status_code`; status Error for 5xx;
//! - anything else: span name [`UNKNOWN_ROUTE`], with `rpc.system` for gRPC or
//!   `http.request.method` otherwise, and the status as above. The path is never recorded.
//!
//! The span is the parent of everything the request does (the guard, the handler, the audit
//! write) and ends when the response body has been sent.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::HeaderExtractor;

/// The span name of a request that is neither an RPC of the contract nor a known HTTP route.
pub const UNKNOWN_ROUTE: &str = "unknown";

/// gRPC codes the RPC conventions count as server errors (span status Error).
const SERVER_ERROR_CODES: [i64; 6] = [2, 4, 12, 13, 14, 15];
const CANCELLED: i64 = 1;

/// What the server serves, by name: the span of a request may carry these names and no other.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// `/package.Service/Method` paths.
    rpcs: HashSet<String>,
    templates: Vec<Template>,
}

#[derive(Debug, Clone)]
struct Template {
    text: String,
    /// A literal segment, or `None` for a `{parameter}`.
    segments: Vec<Option<String>>,
}

impl Template {
    fn new(text: &str) -> Self {
        let segments = text
            .split('/')
            .map(|s| {
                let parameter = s.starts_with('{') && s.ends_with('}');
                (!parameter).then(|| s.to_owned())
            })
            .collect();
        Self {
            text: text.to_owned(),
            segments,
        }
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        self.segments
            .iter()
            .all(|segment| match (segment, parts.next()) {
                (Some(literal), Some(part)) => literal == part,
                (None, Some(part)) => !part.is_empty(),
                (_, None) => false,
            })
            && parts.next().is_none()
    }
}

/// How a request is named, decided once from its path.
enum Route<'a> {
    Rpc(&'a str),
    Http(&'a str),
    Unknown,
}

impl Routes {
    /// Adds RPCs by their full names (`package.Service/Method`).
    pub fn with_rpcs(mut self, rpcs: impl IntoIterator<Item = String>) -> Self {
        self.rpcs
            .extend(rpcs.into_iter().map(|rpc| format!("/{rpc}")));
        self
    }

    /// Adds an HTTP route by its template, `/literal/{parameter}` (one path segment each).
    pub fn with_http_route(mut self, template: &str) -> Self {
        self.templates.push(Template::new(template));
        self
    }

    fn route(&self, path: &str) -> Route<'_> {
        if let Some(rpc) = self.rpcs.get(path) {
            return Route::Rpc(&rpc[1..]);
        }
        match self.templates.iter().find(|t| t.matches(path)) {
            Some(template) => Route::Http(&template.text),
            None => Route::Unknown,
        }
    }

    /// The span of one incoming request (see the module documentation), a child of the caller's
    /// W3C trace context when the request carries one.
    pub fn server_span<B>(&self, request: &http::Request<B>) -> tracing::Span {
        let span = match self.route(request.uri().path()) {
            Route::Rpc(rpc) => {
                let (service, method) = rpc.split_once('/').unwrap_or((rpc, ""));
                tracing::info_span!(
                    "grpc.server",
                    otel.name = %rpc,
                    otel.kind = "server",
                    otel.status_code = Empty,
                    rpc.system = "grpc",
                    rpc.service = %service,
                    rpc.method = %method,
                    rpc.grpc.status_code = Empty,
                )
            }
            Route::Http(template) => {
                let method = standard_method(request.method());
                // The conventions name a request with a non-standard method `HTTP`.
                let name = if method == OTHER_METHOD {
                    "HTTP"
                } else {
                    method
                };
                tracing::info_span!(
                    "http.server",
                    otel.name = %format_args!("{name} {template}"),
                    otel.kind = "server",
                    otel.status_code = Empty,
                    http.request.method = method,
                    http.route = %template,
                    http.response.status_code = Empty,
                )
            }
            Route::Unknown if is_grpc(request) => tracing::info_span!(
                "grpc.server",
                otel.name = UNKNOWN_ROUTE,
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.grpc.status_code = Empty,
            ),
            Route::Unknown => tracing::info_span!(
                "http.server",
                otel.name = UNKNOWN_ROUTE,
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = standard_method(request.method()),
                http.response.status_code = Empty,
            ),
        };
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(request.headers()))
        });
        // Without an OpenTelemetry layer there is nothing to attach to; that is fine.
        let _ = span.set_parent(parent);
        span
    }
}

const OTHER_METHOD: &str = "_OTHER";

/// The method's name if it is one of HTTP's own, else `_OTHER`: an extension method is the
/// client's text.
fn standard_method(method: &http::Method) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or(OTHER_METHOD)
}

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether the span follows the RPC or the HTTP conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http,
}

/// Where a request's outcome stands, for its span.
#[derive(Debug)]
struct Outcome {
    span: tracing::Span,
    protocol: Protocol,
    recorded: bool,
}

impl Outcome {
    fn grpc_status(&mut self, headers: &http::HeaderMap) {
        let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        else {
            return;
        };
        self.grpc_code(code);
    }

    fn grpc_code(&mut self, code: i64) {
        self.recorded = true;
        self.span.record("rpc.grpc.status_code", code);
        if SERVER_ERROR_CODES.contains(&code) {
            self.span.record("otel.status_code", "error");
        }
    }

    fn http_status(&mut self, status: http::StatusCode) {
        self.recorded = true;
        self.span
            .record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            self.span.record("otel.status_code", "error");
        }
    }

    fn response<B>(&mut self, response: &http::Response<B>) {
        match self.protocol {
            // A trailers-only response (an error) carries its status in the headers.
            Protocol::Grpc => self.grpc_status(response.headers()),
            Protocol::Http => self.http_status(response.status()),
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        // The call ended before its status was sent: the server's deadline passed (tonic answers
        // CANCELLED) or the client went away.
        if !self.recorded && self.protocol == Protocol::Grpc {
            self.grpc_code(CANCELLED);
        }
    }
}

/// The tower layer that puts every request in its server span (see the module documentation).
#[derive(Debug, Clone)]
pub struct ServerTraceLayer {
    routes: Arc<Routes>,
}

impl ServerTraceLayer {
    /// Spans named after `routes`.
    pub fn new(routes: Routes) -> Self {
        Self {
            routes: Arc::new(routes),
        }
    }
}

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// See [`ServerTraceLayer`].
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
    routes: Arc<Routes>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ServerTrace<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body + Unpin,
{
    type Response = http::Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let span = self.routes.server_span(&request);
        let protocol = match self.routes.route(request.uri().path()) {
            Route::Rpc(_) => Protocol::Grpc,
            Route::Http(_) => Protocol::Http,
            Route::Unknown if is_grpc(&request) => Protocol::Grpc,
            Route::Unknown => Protocol::Http,
        };
        // Entered while the inner services decide synchronously, so that their log lines and
        // audit records carry this trace.
        let inner = span.in_scope(|| Box::pin(self.inner.call(request)));
        TracedFuture {
            inner,
            outcome: Some(Outcome {
                span,
                protocol,
                recorded: false,
            }),
        }
    }
}

/// The response future of [`ServerTrace`].
pub struct TracedFuture<F> {
    inner: Pin<Box<F>>,
    outcome: Option<Outcome>,
}

impl<F> std::fmt::Debug for TracedFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<TracedBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = {
            let _entered = this.outcome.as_ref().map(|o| o.span.enter());
            ready!(this.inner.as_mut().poll(cx))
        };
        let Some(mut outcome) = this.outcome.take() else {
            return Poll::Pending;
        };
        Poll::Ready(match result {
            Ok(response) => {
                outcome.response(&response);
                Ok(response.map(|inner| TracedBody { inner, outcome }))
            }
            Err(err) => {
                // The server turns a service error into a failed call or a reset stream.
                outcome.recorded = true;
                outcome.span.record("otel.status_code", "error");
                Err(err)
            }
        })
    }
}

/// A response body that records the gRPC status of its trailers on the request's span, which
/// ends when the body is dropped.
#[derive(Debug)]
pub struct TracedBody<B> {
    inner: B,
    outcome: Outcome,
}

impl<B: Body + Unpin> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = {
            let _entered = this.outcome.span.enter();
            ready!(Pin::new(&mut this.inner).poll_frame(cx))
        };
        if let Some(Ok(frame)) = &frame
            && let Some(trailers) = frame.trailers_ref()
            && this.outcome.protocol == Protocol::Grpc
        {
            this.outcome.grpc_status(trailers);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_segment_per_parameter() {
        let routes = Routes::default()
            .with_rpcs(["a.v1.S/M".to_owned()])
            .with_http_route("/unsubscribe/{token}");
        assert!(matches!(routes.route("/a.v1.S/M"), Route::Rpc("a.v1.S/M")));
        assert!(matches!(
            routes.route("/unsubscribe/abc"),
            Route::Http("/unsubscribe/{token}")
        ));
        for other in [
            "/unsubscribe/",
            "/unsubscribe",
            "/unsubscribe/a/b",
            "/a.v1.S/N",
            "/",
            "",
        ] {
            assert!(matches!(routes.route(other), Route::Unknown), "{other}");
        }
    }
}
