//! The `route256.product.ProductService` handlers: count the request, apply the quota, check the token, answer from
//! the catalog — in that order, as a quota-protected external service does.

use std::{sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use minizon_proto::product::{
    GetProductRequest, GetProductResponse, ListSkusRequest, ListSkusResponse, product_service_server::ProductService,
};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

use crate::{catalog::Catalog, config::Config, requests::RequestLog};

/// Serves the catalog over the ProductService contract.
#[derive(Debug)]
pub struct ProductServiceHandler {
    catalog: Arc<Catalog>,
    token: SecretString,
    latency: Duration,
    limiter: Option<DefaultDirectRateLimiter>,
    requests: Arc<RequestLog>,
}

impl ProductServiceHandler {
    /// A handler serving `catalog` with the token, latency and quota of `config`, noting requests in `requests`.
    pub fn new(config: &Config, catalog: Arc<Catalog>, requests: Arc<RequestLog>) -> Self {
        Self {
            catalog,
            token: config.token.clone(),
            latency: config.latency,
            limiter: config.rate_limit.map(|per_second| RateLimiter::direct(Quota::per_second(per_second))),
            requests,
        }
    }

    /// Checks the quota and the token, then waits the configured latency.
    async fn admit(&self, token: &str) -> Result<(), Status> {
        if self.limiter.as_ref().is_some_and(|limiter| limiter.check().is_err()) {
            return Err(Status::resource_exhausted("ProductService rate limit exceeded; slow down and retry"));
        }
        if token.is_empty() {
            return Err(Status::unauthenticated("missing token: every request needs the `token` field"));
        }
        if !constant_time_eq(token.as_bytes(), self.token.expose_secret().as_bytes()) {
            return Err(Status::unauthenticated("invalid token"));
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ProductService for ProductServiceHandler {
    #[tracing::instrument(skip_all, fields(sku = request.get_ref().sku))]
    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        let _in_flight = self.requests.record();
        let request = request.into_inner();
        self.admit(&request.token).await?;
        if request.sku == 0 {
            return Err(Status::invalid_argument("sku must not be 0"));
        }
        let product =
            self.catalog.get(request.sku).ok_or_else(|| Status::not_found(format!("sku {} not found", request.sku)))?;
        Ok(Response::new(GetProductResponse { name: product.name.clone(), price: product.price }))
    }

    #[tracing::instrument(skip_all, fields(start_after_sku = request.get_ref().start_after_sku, count = request.get_ref().count))]
    async fn list_skus(&self, request: Request<ListSkusRequest>) -> Result<Response<ListSkusResponse>, Status> {
        let _in_flight = self.requests.record();
        let request = request.into_inner();
        self.admit(&request.token).await?;
        // No server-side page cap: a short page means "the end" to clients, so it must never be a truncated one.
        // The catalog's size bounds the answer.
        let count = usize::try_from(request.count).unwrap_or(usize::MAX);
        Ok(Response::new(ListSkusResponse { skus: self.catalog.skus_after(request.start_after_sku, count) }))
    }
}

/// Compares secrets in time independent of where they differ, so the token cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }
}
