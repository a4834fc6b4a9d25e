//! Prometheus metrics: the process-wide recorder behind the `metrics` facade, and the `/metrics` endpoint that
//! serves it in the Prometheus text format.
//!
//! The recorder is installed when a process first serves an endpoint; until then every `metrics::counter!` and
//! friend is a no-op, so a process (or test) that serves no endpoint pays nothing. Histograms are exported as
//! Prometheus histograms (fixed buckets), not summaries, so that they aggregate across replicas.

use std::{fmt, io, net::SocketAddr, str::FromStr, sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Buckets of every `*_seconds` histogram: 0.5 ms to 10 s, dense where gRPC calls and transactions land.
const SECONDS_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets of every `*_batch_size` histogram: calls per batch, up to the largest batch allowed.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// How often histogram state is compacted (the recorder's upkeep).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Where `/metrics` is served: an address (port 0 picks a free port) or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(Option<SocketAddr>);

impl MetricsAddr {
    /// No endpoint.
    pub const OFF: Self = Self(None);

    /// An endpoint at `addr`.
    pub fn at(addr: SocketAddr) -> Self {
        Self(Some(addr))
    }

    /// The address to bind, `None` when off.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.0
    }
}

impl FromStr for MetricsAddr {
    type Err = std::net::AddrParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "" | "off" | "none" => Ok(Self::OFF),
            addr => addr.parse().map(Self::at),
        }
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use. `None` when another recorder was installed
/// first (an embedder's own): then this process's metrics go there.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_batch_size".to_owned()), BATCH_SIZE_BUCKETS)
                })
                .and_then(|builder| builder.install_recorder());
            match installed {
                Ok(handle) => {
                    crate::grpc_telemetry::describe();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "the Prometheus recorder is not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Puts each unlabelled counter of `names` on the endpoint at 0, so that it is scraped from the process's start:
/// a counter of rare events (failures, retries) that first appears at its first increment reads as "no data" until
/// then, and `rate()` or `increase()` over a window holding its first increment misses that increment.
pub fn counters_from_zero(names: &[&'static str]) {
    for name in names {
        metrics::counter!(*name).increment(0);
    }
}

/// A bound `/metrics` endpoint that has not started serving yet.
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Installs the recorder and binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        recorder();
        Ok(Self { listener, local_addr })
    }

    /// Binds `addr` when it is not off.
    pub async fn bind_if(addr: MetricsAddr) -> io::Result<Option<Self>> {
        match addr.addr() {
            Some(addr) => Self::bind(addr).await.map(Some),
            None => Ok(None),
        }
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `GET /metrics` until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> io::Result<()> {
        use axum::{http::header, routing::get};
        let handle = recorder().cloned();
        // Its own token: the endpoint failing must not stop the service it reports on.
        let stop = shutdown.child_token();
        let upkeep = handle.clone().map(|handle| tokio::spawn(upkeep(handle, stop.clone())));
        let router = axum::Router::new().route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    let body = handle.map(|handle| handle.render()).unwrap_or_default();
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
                }
            }),
        );
        tracing::info!(addr = %self.local_addr, "metrics endpoint listening on /metrics");
        let served = axum::serve(self.listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        stop.cancel();
        if let Some(upkeep) = upkeep {
            let _ = upkeep.await;
        }
        served
    }

    /// Serves in a task of its own until `shutdown`; errors are logged.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(error) = self.serve(shutdown).await {
                tracing::error!(%error, "the metrics endpoint stopped");
            }
        })
    }
}

async fn upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_and_addresses_parse() {
        assert_eq!("off".parse::<MetricsAddr>().unwrap(), MetricsAddr::OFF);
        assert_eq!("127.0.0.1:0".parse::<MetricsAddr>().unwrap().addr(), Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert!("nowhere".parse::<MetricsAddr>().is_err());
    }
}
