//! The system under test: channels to its servers, readiness, and the stock the scenarios buy from.

use std::time::Duration;

use anyhow::Context as _;
use minizon_proto::loms::{ImportStockRequest, SetStockRequest, loms_admin_v1_client::LomsAdminV1Client};
use tonic::{
    Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Opens channels to one server: `connections` HTTP/2 connections shared round-robin by the clients.
#[derive(Debug, Clone)]
pub struct Channels {
    channels: Vec<Channel>,
}

impl Channels {
    /// Connects `connections` channels (at least one) to `url`, every call bounded by `request_timeout`.
    pub async fn connect(url: &str, connections: usize, request_timeout: Duration) -> anyhow::Result<Self> {
        let endpoint = endpoint(url, request_timeout)?;
        let mut channels = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            channels.push(endpoint.connect().await.with_context(|| format!("connect to {url}"))?);
        }
        Ok(Self { channels })
    }

    /// The channel client number `index` uses.
    pub fn for_client(&self, index: usize) -> Channel {
        self.channels[index % self.channels.len()].clone()
    }
}

/// An endpoint for `url` with the load generator's settings: Nagle off (small request/response messages), a
/// bounded connect and a bounded call.
pub fn endpoint(url: &str, request_timeout: Duration) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid server URL {url:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout))
}

/// Waits until the server at `url` answers the standard health check with SERVING, for at most `limit`.
pub async fn wait_serving(url: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        let answer = async {
            let channel = endpoint(url, Duration::from_secs(2))?.connect().await?;
            let response = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
            anyhow::Ok(response.into_inner().status())
        };
        match answer.await {
            Ok(ServingStatus::Serving) => return Ok(()),
            Ok(status) => last = format!("{status:?}"),
            Err(error) => last = format!("{error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} was not SERVING within {limit:?}: {last}")
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// The header value for `token`; refused when it is not printable ASCII.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let value = format!("Bearer {token}").parse().context("the admin token must be printable ASCII")?;
        Ok(Self(value))
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The LOMS admin client, with its token.
pub type AdminClient = LomsAdminV1Client<InterceptedService<Channel, BearerToken>>;

/// Connects the LOMS admin client.
pub async fn admin_client(loms_url: &str, token: &str) -> anyhow::Result<AdminClient> {
    let channel = endpoint(loms_url, Duration::from_secs(60))?.connect().await.context("connect to LOMS")?;
    Ok(LomsAdminV1Client::with_interceptor(channel, BearerToken::new(token)?))
}

/// A contiguous range of skus the LOMS scenarios buy from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkuRange {
    /// The first sku.
    pub first: u32,
    /// How many skus.
    pub count: u32,
}

impl SkuRange {
    /// Every sku of the range.
    pub fn iter(self) -> impl Iterator<Item = u32> {
        (0..self.count).map(move |offset| self.first + offset)
    }

    /// `n` distinct skus drawn uniformly from the range (all of them, in random order, when `n` ≥ the range).
    pub fn pick(self, rng: &mut fastrand::Rng, n: usize) -> Vec<u32> {
        let n = n.min(self.count as usize);
        let mut picked = Vec::with_capacity(n);
        // Rejection sampling: orders are at most a few hundred lines out of thousands of skus, so repeats are rare.
        while picked.len() < n {
            let sku = self.first + rng.u32(0..self.count);
            if !picked.contains(&sku) {
                picked.push(sku);
            }
        }
        picked
    }

    /// One sku drawn uniformly from the range.
    pub fn one(self, rng: &mut fastrand::Rng) -> u32 {
        self.first + rng.u32(0..self.count)
    }
}

/// Sets `on_hand` units of every sku in every warehouse `1..=warehouses`, through the admin service's ImportStock,
/// in chunks that stay well under gRPC's 4 MiB message limit.
pub async fn seed_stock(
    admin: &mut AdminClient,
    skus: impl IntoIterator<Item = u32>,
    warehouses: u32,
    on_hand: u64,
) -> anyhow::Result<usize> {
    const CHUNK: usize = 5_000;
    let levels: Vec<SetStockRequest> = skus
        .into_iter()
        .flat_map(|sku| {
            (1..=i64::from(warehouses)).map(move |warehouse_id| SetStockRequest { warehouse_id, sku, on_hand })
        })
        .collect();
    for chunk in levels.chunks(CHUNK) {
        admin
            .import_stock(ImportStockRequest { levels: chunk.to_vec() })
            .await
            .context("import stock through LomsAdminV1/ImportStock")?;
    }
    Ok(levels.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_skus_are_distinct_and_within_the_range() {
        let range = SkuRange { first: 1_000, count: 50 };
        let mut rng = fastrand::Rng::with_seed(7);

        for n in [1, 3, 10, 50, 80] {
            let picked = range.pick(&mut rng, n);
            let mut sorted = picked.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), picked.len());
            assert_eq!(picked.len(), n.min(50));
            assert!(picked.iter().all(|sku| (1_000..1_050).contains(sku)));
        }
    }

    #[test]
    fn a_bearer_token_that_is_not_ascii_is_refused() {
        assert!(BearerToken::new("token\n").is_err());
        assert!(BearerToken::new("bench-admin-token").is_ok());
    }
}
