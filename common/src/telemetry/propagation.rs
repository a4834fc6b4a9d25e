//! W3C trace context (`traceparent`, `tracestate`) in and out of gRPC metadata, Kafka headers and outbox rows.
//!
//! The W3C propagator is used directly rather than through the global one: it is what the contract says travels
//! (SPEC §4), and it costs no look-up per request.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (gRPC metadata entry, Kafka header) that carries the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";

/// The trace context extracted from HTTP/2 headers (gRPC metadata); an empty context when there is none.
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `context` into HTTP/2 headers (gRPC metadata), replacing what was there.
pub fn inject_headers(context: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// The trace context a `traceparent` value (an outbox row's, a Kafka header's) names; an empty context when the
/// value is not a valid trace parent.
pub fn context_from_traceparent(traceparent: &str) -> Context {
    TraceContextPropagator::new().extract(&SingleExtractor(traceparent))
}

/// The `traceparent` of `context`, `None` when it holds no valid span.
pub fn traceparent_of(context: &Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = SingleInjector(None);
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.0
}

/// The `traceparent` of the current span (what an outbox row written now should carry), `None` outside any
/// traced span.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current().context())
}

/// Records the span's trace id in its `trace_id` field, so that every log line inside it names its trace. Call it
/// after any `set_parent`: it starts the OpenTelemetry span.
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::try_from(value))
        {
            self.0.insert(name, value);
        }
    }
}

/// A carrier holding only a `traceparent`.
struct SingleExtractor<'a>(&'a str);

impl Extractor for SingleExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Keeps only the `traceparent` the propagator writes.
struct SingleInjector(Option<String>);

impl Injector for SingleInjector {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_survives_the_round_trip_through_a_context() {
        assert_eq!(traceparent_of(&context_from_traceparent(PARENT)).as_deref(), Some(PARENT));
    }

    #[test]
    fn a_malformed_traceparent_yields_no_context() {
        assert_eq!(traceparent_of(&context_from_traceparent("00-nonsense")), None);
    }

    #[test]
    fn headers_carry_the_context_both_ways() {
        let mut headers = http::HeaderMap::new();
        inject_headers(&context_from_traceparent(PARENT), &mut headers);
        assert_eq!(headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()), Some(PARENT));
        assert_eq!(traceparent_of(&extract_headers(&headers)).as_deref(), Some(PARENT));
    }
}
