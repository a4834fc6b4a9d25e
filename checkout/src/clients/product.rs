//! The ProductService client: the route256 contract (token in every request), one rate limiter shared by every
//! call of the process, timeouts, deadline propagation, and retries (GetProduct only reads, so retrying is safe).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use backon::ExponentialBuilder;
use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use minizon_proto::product::{GetProductRequest, product_service_client::ProductServiceClient};
use secrecy::{ExposeSecret, SecretString};
use tonic::Code;

use super::{Deadline, Failure, TracedChannel, with_retries};
use crate::{
    domain::{Product, Sku},
    error::{Dependency, Error},
};

/// How to reach ProductService and how hard to use it.
#[derive(Debug, Clone)]
pub struct ProductClientSettings {
    /// `http://host:port` of the service.
    pub url: String,
    /// The token every request carries.
    pub token: SecretString,
    /// The longest one call may take.
    pub timeout: Duration,
    /// Requests per second, across every request of this process (the external service's quota).
    pub rate_limit: NonZeroU32,
    /// Requests that may go at once after a quiet period; the long-run rate stays `rate_limit`.
    pub burst: NonZeroU32,
    /// Attempts per call, the first included.
    pub attempts: usize,
}

/// A ProductService client. Cheap to clone; clones share the connection and the rate limiter.
#[derive(Debug, Clone)]
pub struct ProductClient {
    inner: ProductServiceClient<TracedChannel>,
    token: SecretString,
    timeout: Duration,
    limiter: Arc<DefaultDirectRateLimiter>,
    limiter_wait: metrics::Histogram,
    backoff: ExponentialBuilder,
}

impl ProductClient {
    /// A client that connects on first use (and reconnects after failures), so Checkout starts without it.
    pub fn new(settings: &ProductClientSettings) -> Result<Self, tonic::transport::Error> {
        let channel = super::lazy_channel(&settings.url, settings.timeout)?;
        let quota = Quota::per_second(settings.rate_limit).allow_burst(settings.burst);
        Ok(Self {
            inner: ProductServiceClient::new(channel),
            token: settings.token.clone(),
            timeout: settings.timeout,
            limiter: Arc::new(RateLimiter::direct(quota)),
            limiter_wait: metrics::histogram!(crate::series::RATE_LIMITER_WAIT),
            backoff: super::backoff(settings.attempts),
        })
    }

    /// The product's name and price. Every attempt (retries too) waits its turn at the rate limiter.
    pub async fn get_product(&self, sku: Sku, deadline: Deadline) -> Result<Product, Error> {
        with_retries(self.backoff, deadline, "ProductService.GetProduct", || self.attempt(sku, deadline)).await
    }

    async fn attempt(&self, sku: Sku, deadline: Deadline) -> Result<Product, Failure> {
        let dependency = Dependency::ProductService;
        // Polling jitter keeps the waiters of a busy limiter from waking all at once.
        let turn = self.limiter.until_ready_with_jitter(Jitter::up_to(Duration::from_millis(5)));
        let waiting = std::time::Instant::now();
        let waited = tokio::time::timeout(deadline.remaining(), turn).await;
        self.limiter_wait.record(waiting.elapsed().as_secs_f64());
        if waited.is_err() {
            return Err(Failure::permanent(Error::DeadlineExceeded { dependency }));
        }
        let timeout = self.timeout.min(deadline.remaining());
        let mut request =
            tonic::Request::new(GetProductRequest { token: self.token.expose_secret().to_owned(), sku: sku.get() });
        request.set_timeout(timeout);
        let mut client = self.inner.clone();
        let answer = match tokio::time::timeout(timeout, client.get_product(request)).await {
            Ok(answer) => answer,
            Err(_) => return Err(Failure::timed_out(dependency, deadline, timeout)),
        };
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                Ok(Product { name: response.name, price: response.price })
            }
            Err(status) => Err(match status.code() {
                Code::NotFound => Failure::permanent(Error::ProductNotFound(sku)),
                Code::ResourceExhausted => Failure::transient(Error::Unavailable {
                    dependency,
                    detail: format!("its rate limit was exceeded: {}", status.message()),
                }),
                Code::Unauthenticated | Code::PermissionDenied => {
                    tracing::error!(message = status.message(), "ProductService refused Checkout's token");
                    Failure::permanent(Error::Unavailable {
                        dependency,
                        detail: "it refused Checkout's token (the operator must fix CHECKOUT_PRODUCT_TOKEN)".into(),
                    })
                }
                _ => Failure::from_status(dependency, status, deadline),
            }),
        }
    }
}
