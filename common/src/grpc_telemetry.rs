//! The tower layer around every tonic server and client: Prometheus request counts by service, method and gRPC
//! status code, a latency histogram, and a span per call carrying W3C trace context across the wire.
//!
//! * **Status from the trailers.** gRPC answers HTTP 200 for every outcome; the real code is `grpc-status`, in
//!   the headers of a trailers-only (error) response or in the trailers after the body. The response body is
//!   wrapped so the call is recorded when its trailers pass (or the stream ends, or the caller goes away).
//! * **Parent before the handler.** On a server, the caller's `traceparent` is set as the parent of the call's
//!   span here, before the handler (and its own `#[instrument]` span) runs: setting it on an entered span would do
//!   nothing. On a client, the call's span context is injected into the outgoing metadata.
//! * **Cheap.** Service and method names come from a table built once from the contracts' descriptors, so labels
//!   are `&'static str`s (no per-request strings) and a caller cannot create series by calling made-up paths.
//!   Metric names and labels follow go-grpc-prometheus, so existing gRPC dashboards work.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll, ready},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tracing::{Instrument as _, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::telemetry::propagation;

/// Requests a server finished, by `grpc_type`, `grpc_service`, `grpc_method`, `grpc_code`.
pub const SERVER_HANDLED: &str = "grpc_server_handled_total";
/// Server-side latency from the request's headers to its trailers, by `grpc_type`, `grpc_service`, `grpc_method`.
pub const SERVER_HANDLING: &str = "grpc_server_handling_seconds";
/// Calls a client finished, by `grpc_type`, `grpc_service`, `grpc_method`, `grpc_code`.
pub const CLIENT_HANDLED: &str = "grpc_client_handled_total";
/// Client-side latency of one call (one attempt), by `grpc_type`, `grpc_service`, `grpc_method`.
pub const CLIENT_HANDLING: &str = "grpc_client_handling_seconds";

/// Registers the help texts of the gRPC series.
pub(crate) fn describe() {
    metrics::describe_counter!(SERVER_HANDLED, "gRPC requests completed by the server, by method and status code.");
    metrics::describe_histogram!(
        SERVER_HANDLING,
        metrics::Unit::Seconds,
        "Time a server took to answer a gRPC request, until its trailers."
    );
    metrics::describe_counter!(CLIENT_HANDLED, "gRPC calls completed by a client, by method and status code.");
    metrics::describe_histogram!(
        CLIENT_HANDLING,
        metrics::Unit::Seconds,
        "Time one outgoing gRPC call took, until its trailers."
    );
}

/// Which end of a call the layer sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// The layer; [`GrpcTelemetryLayer::server`] for a server, [`GrpcTelemetryLayer::client`] for a channel.
#[derive(Debug, Clone, Copy)]
pub struct GrpcTelemetryLayer {
    side: Side,
}

impl GrpcTelemetryLayer {
    /// For `tonic::transport::Server::builder().layer(..)`.
    pub fn server() -> Self {
        Self { side: Side::Server }
    }

    /// For a client channel: `tower::ServiceBuilder::new().layer(GrpcTelemetryLayer::client()).service(channel)`.
    pub fn client() -> Self {
        Self { side: Side::Client }
    }
}

impl<S> tower_layer::Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry { inner, side: self.side }
    }
}

/// A client channel with telemetry; what clients of other miniZON services are built on.
pub type TracedChannel = GrpcTelemetry<tonic::transport::Channel>;

/// Wraps `channel` in the client side of the layer.
pub fn traced(channel: tonic::transport::Channel) -> TracedChannel {
    GrpcTelemetry { inner: channel, side: Side::Client }
}

/// The service the layer produces.
#[derive(Debug, Clone)]
pub struct GrpcTelemetry<S> {
    inner: S,
    side: Side,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcTelemetry<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let method = Method::of(request.uri().path());
        let span = match self.side {
            Side::Server => {
                let span = tracing::info_span!(
                    "grpc server",
                    otel.name = method.path,
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    rpc.system = "grpc",
                    rpc.service = method.service,
                    rpc.method = method.method,
                    rpc.grpc.status_code = tracing::field::Empty,
                    trace_id = tracing::field::Empty,
                );
                if request.headers().contains_key(propagation::TRACEPARENT) {
                    let _ = span.set_parent(propagation::extract_headers(request.headers()));
                }
                propagation::record_trace_id(&span);
                span
            }
            Side::Client => {
                let span = tracing::info_span!(
                    "grpc client",
                    otel.name = method.path,
                    otel.kind = "client",
                    otel.status_code = tracing::field::Empty,
                    rpc.system = "grpc",
                    rpc.service = method.service,
                    rpc.method = method.method,
                    rpc.grpc.status_code = tracing::field::Empty,
                );
                if !span.is_disabled() {
                    propagation::inject_headers(&span.context(), request.headers_mut());
                }
                span
            }
        };
        let call = Call { method, side: self.side, start: Instant::now(), span: span.clone() };
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture { inner: inner.instrument(span), call: Some(call) }
    }
}

pin_project_lite::pin_project! {
    /// The response of a call with telemetry, until its headers arrive.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only response (every error tonic returns) has its status in the headers already.
                let (call, code) = match status_of(response.headers()) {
                    Some(code) => (None, Some((call, code))),
                    None => (call, None),
                };
                if let Some((Some(call), code)) = code {
                    call.finish(code);
                }
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(error) => {
                // The connection failed before any answer: what a tonic client reports as UNAVAILABLE.
                if let Some(call) = call {
                    call.finish(Code::Unavailable);
                }
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the trailers pass.
    #[derive(Debug)]
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its trailers: the caller went away (or the server reset the stream).
            if let Some(call) = this.project().call.take() {
                call.finish(Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(|trailers| status_of(trailers).unwrap_or(Code::Unknown)),
            Some(Err(_)) => Some(Code::Unknown),
            None => Some(Code::Unknown),
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
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

/// One call in flight.
#[derive(Debug)]
struct Call {
    method: &'static Method,
    side: Side,
    start: Instant,
    span: tracing::Span,
}

impl Call {
    /// Records the finished call: its series, and its status on the span (which ends when the last clone drops).
    fn finish(self, code: Code) {
        let seconds = self.start.elapsed().as_secs_f64();
        let Method { kind, service, method, .. } = *self.method;
        let code_name = code_name(code);
        let (handled, handling) = match self.side {
            Side::Server => (SERVER_HANDLED, SERVER_HANDLING),
            Side::Client => (CLIENT_HANDLED, CLIENT_HANDLING),
        };
        metrics::counter!(handled, "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method,
            "grpc_code" => code_name)
        .increment(1);
        metrics::histogram!(handling, "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method)
            .record(seconds);
        self.span.record("rpc.grpc.status_code", code as i32);
        // OpenTelemetry's rule for RPC spans: a server marks only its own faults as errors, a client every non-OK.
        let error = match self.side {
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            Side::Client => code != Code::Ok,
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

/// The `grpc-status` of headers or trailers.
fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(|value| Code::from_bytes(value.as_bytes()))
}

/// The code's name as Go's `codes.Code.String()` writes it (go-grpc-prometheus's `grpc_code` label).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A method the layer knows by name.
#[derive(Debug)]
struct Method {
    /// `/package.Service/Method`, without the leading slash.
    path: &'static str,
    /// `package.Service`.
    service: &'static str,
    /// `Method`.
    method: &'static str,
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    kind: &'static str,
}

/// What a path no contract declares is recorded as: a fixed label, so made-up paths cannot add series.
static UNKNOWN: Method = Method { path: "unknown", service: "unknown", method: "unknown", kind: "unknown" };

impl Method {
    /// The method a request path names.
    fn of(path: &str) -> &'static Method {
        methods().get(path).copied().unwrap_or(&UNKNOWN)
    }
}

/// Every method of the miniZON contracts, health and reflection, by request path; built once (a bounded set, so
/// leaking its strings is a one-off).
fn methods() -> &'static HashMap<&'static str, &'static Method> {
    static METHODS: OnceLock<HashMap<&'static str, &'static Method>> = OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message as _;
        let sets = [
            minizon_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for file in &set.file {
                for service in &file.service {
                    let service_name: &'static str = leak(format!("{}.{}", file.package(), service.name()));
                    for method in &service.method {
                        let path = leak(format!("/{service_name}/{}", method.name()));
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        let entry = Method {
                            path: &path[1..],
                            service: service_name,
                            method: leak(method.name().to_owned()),
                            kind,
                        };
                        methods.insert(path, &*Box::leak(Box::new(entry)));
                    }
                }
            }
        }
        methods
    })
}

fn leak(value: String) -> &'static str {
    Box::leak(value.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_methods_are_known_and_made_up_paths_are_not() {
        let create = Method::of("/loms_v1.LomsV1/CreateOrder");
        assert_eq!((create.service, create.method, create.kind), ("loms_v1.LomsV1", "CreateOrder", "unary"));
        assert_eq!(Method::of("/grpc.health.v1.Health/Watch").kind, "server_stream");
        assert_eq!(Method::of("/x.Y/Z").service, "unknown");
    }

    #[test]
    fn the_status_comes_from_grpc_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("9"));
        assert_eq!(status_of(&headers), Some(Code::FailedPrecondition));
        assert_eq!(code_name(Code::FailedPrecondition), "FailedPrecondition");
    }
}
