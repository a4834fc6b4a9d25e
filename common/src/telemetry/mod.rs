//! Structured logs through `tracing` (human-readable or JSON) and OpenTelemetry traces: every span at INFO and
//! above becomes an OpenTelemetry span, exported over OTLP/gRPC when an endpoint is configured.
//!
//! The tracer provider is installed even when nothing is exported: trace context must still flow (a caller's
//! `traceparent` reaches LOMS, the outbox and the events' headers) so that a process that does export, further
//! down, continues the caller's trace. Without an exporter the finished spans are simply dropped. Only the
//! standard `OTEL_SDK_DISABLED=true` leaves OpenTelemetry out entirely (to measure what it costs).

pub mod propagation;

use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, fmt, layer::SubscriberExt as _, util::SubscriberInitExt,
};

pub use propagation::{current_traceparent, record_trace_id};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Coloured, one event a line, for a person at a terminal.
    #[default]
    Human,
    /// One JSON object a line, for a log pipeline.
    Json,
}

/// Logging and tracing flags every binary accepts.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,loms=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP/gRPC endpoint traces are exported to (an OpenTelemetry Collector, Jaeger or Tempo, e.g.
    /// `http://127.0.0.1:4317`). Unset: no export (trace context is still propagated).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OpenTelemetry off altogether (the standard `OTEL_SDK_DISABLED`): no spans, no trace context taken from
    /// callers or passed on, logs without trace ids. For measuring what tracing costs.
    #[arg(long, env = "OTEL_SDK_DISABLED", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub otel_sdk_disabled: bool,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            otel_sdk_disabled: false,
        }
    }
}

/// The installed tracer provider; [`Telemetry::shutdown`] exports the spans still buffered.
#[derive(Debug, Default)]
#[must_use = "dropping it is fine, but shutdown() at exit exports the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every finished span now (tests: instead of waiting for the batch interval).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "trace export failed");
        }
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "trace exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber and tracer provider for `service` (the `service.name` resource, unless
/// `OTEL_SERVICE_NAME` says otherwise). Must run inside the Tokio runtime when an OTLP endpoint is set. Safe to call
/// more than once (tests start many servers in one process): every call after the first is a no-op.
pub fn init(service: &'static str, args: &LogArgs) -> Telemetry {
    let filter = EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // stderr: stdout belongs to a command's own output (the dev stack's cheat sheet, a CLI's result).
    // Colours only on a terminal: a log redirected to a file or a pipe stays plain text to grep.
    let logs = fmt::layer()
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = match args.log_format {
        LogFormat::Human => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    if args.otel_sdk_disabled {
        let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).try_init();
        return Telemetry::default();
    }
    let (provider, export_error) = tracer_provider(service, args.otlp_endpoint.as_deref());
    let tracer = provider.tracer("minizon");
    // Spans at INFO and above (the request, job and event spans) become OpenTelemetry spans, whatever the log
    // filter, so that quieter logs do not cut traces; warnings and errors are attached to their span as events.
    // The level hint matters: without it the process's maximum level would be TRACE, and every `debug!`/`trace!`
    // (sqlx's statement log among them) would be built only to be dropped. The decision depends on the callsite
    // alone, so it is cached per callsite.
    let otel_filter = filter_fn(|meta| {
        let level = *meta.level();
        if meta.is_span() { level <= tracing::Level::INFO } else { level <= tracing::Level::WARN }
    })
    .with_max_level_hint(tracing::Level::INFO);
    // Per span only what a trace needs, since every request pays for it whether or not anything exports: no busy
    // and idle timings (two clock reads on every poll of an async span), no thread, source-location or target
    // attributes (allocations per span), and no OpenTelemetry context attached on every enter (nothing here reads
    // `opentelemetry::Context::current()`: propagation reads the span's own context). Measured in
    // docs/benchmarks-history.md, run 8, "Instrumentation on and off".
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_context_activation(false)
        .with_filter(otel_filter);
    let installed = tracing_subscriber::registry().with(logs.with_filter(filter)).with(otel).try_init().is_ok();
    if !installed {
        // Another call won: keep its provider, drop this one unused.
        let _ = provider.shutdown();
        return Telemetry::default();
    }
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    match (&args.otlp_endpoint, export_error) {
        (_, Some(error)) => tracing::error!(error = %error, "OTLP trace export is off"),
        (Some(endpoint), None) => tracing::info!(%endpoint, service, "exporting traces over OTLP"),
        (None, None) => {}
    }
    Telemetry { provider: Some(provider) }
}

/// A tracer provider for `service`, exporting in batches to `endpoint` when there is one. An exporter that cannot
/// be built leaves tracing on without export, and says why.
fn tracer_provider(service: &'static str, endpoint: Option<&str>) -> (SdkTracerProvider, Option<String>) {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    let Some(endpoint) = endpoint.filter(|endpoint| !endpoint.is_empty()) else {
        return (builder.build(), None);
    };
    use opentelemetry_otlp::WithExportConfig as _;
    match opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build() {
        Ok(exporter) => (builder.with_batch_exporter(exporter).build(), None),
        Err(error) => (builder.build(), Some(format!("{endpoint}: {error}"))),
    }
}
