//! The same-run gRPC baseline: `grpc.health.v1.Health/Check` on the server under test, a real tonic call through
//! the same stack (HTTP/2, codec, routing) that touches no database.

use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    runner::{Probe, Scenario},
    target::Channels,
};

/// Health checks of one server.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    channels: Channels,
    service: String,
}

impl HealthCheck {
    /// Checks `service` (empty: the whole server) over `channels`.
    pub fn new(channels: Channels, service: impl Into<String>) -> Self {
        Self { channels, service: service.into() }
    }
}

impl Scenario for HealthCheck {
    type Client = HealthClient<Channel>;

    async fn connect(&self, index: usize) -> anyhow::Result<Self::Client> {
        Ok(HealthClient::new(self.channels.for_client(index)))
    }

    async fn iteration(&self, client: &mut Self::Client, probe: &mut Probe) {
        let request = HealthCheckRequest { service: self.service.clone() };
        let _ = probe.call("Health/Check", client.check(request)).await;
    }
}
