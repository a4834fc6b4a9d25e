//! The LOMS client: the stock query AddToCart needs and the CreateOrder Purchase needs, with timeouts, deadline
//! propagation and retries. Stocks only reads; CreateOrder is retried only because it always carries an
//! idempotency key (LOMS answers a repeated key with the first call's result), so a retry cannot create a second
//! order.

use std::time::Duration;

use backon::ExponentialBuilder;
use minizon_common::grpc::metadata::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAY};
use minizon_proto::loms::{
    CreateOrderRequest, Item, ListOrderRequest, OrderStatus, StocksRequest, loms_v1_client::LomsV1Client,
};
use tonic::{Code, metadata::MetadataValue};

use super::{Deadline, Failure, TracedChannel, with_retries};
use crate::{
    domain::{CartLine, OrderId, Sku, UserId},
    error::{Dependency, Error},
};

/// The order a CreateOrder answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedOrder {
    pub order_id: OrderId,
    /// An earlier call with the same key created it (it may have been paid or cancelled since).
    pub replayed: bool,
}

/// Where an order LOMS holds stands, as far as a purchase cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStanding {
    /// Reserved, waiting for payment: what a purchase hands out.
    AwaitingPayment,
    /// Cancelled or failed: its reservation is gone.
    Ended,
    /// Paid (and maybe shipped or delivered since): the cart it came from was bought.
    Bought { status: &'static str },
}

/// How to reach LOMS.
#[derive(Debug, Clone)]
pub struct LomsClientSettings {
    /// `http://host:port` of LOMS.
    pub url: String,
    /// The longest one call may take.
    pub timeout: Duration,
    /// Attempts per call, the first included.
    pub attempts: usize,
}

/// A LOMS client. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct LomsClient {
    inner: LomsV1Client<TracedChannel>,
    timeout: Duration,
    backoff: ExponentialBuilder,
}

impl LomsClient {
    /// A client that connects on first use (and reconnects after failures), so Checkout starts without LOMS.
    pub fn new(settings: &LomsClientSettings) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            inner: LomsV1Client::new(super::lazy_channel(&settings.url, settings.timeout)?),
            timeout: settings.timeout,
            backoff: super::backoff(settings.attempts),
        })
    }

    /// Units of `sku` that can still be bought, summed over every warehouse.
    pub async fn available(&self, sku: Sku, deadline: Deadline) -> Result<u64, Error> {
        with_retries(self.backoff, deadline, "LOMS.Stocks", || async move {
            let (timeout, request) = self.request(StocksRequest { sku: sku.get() }, deadline)?;
            let mut client = self.inner.clone();
            let response = call(timeout, deadline, client.stocks(request), |_| None).await?;
            Ok(response.stocks.iter().fold(0u64, |total, stock| total.saturating_add(stock.count)))
        })
        .await
    }

    /// Creates the order of `lines` for `user`, reserving every unit; `idempotency_key` makes repeats of the call
    /// (ours or the caller's) return the same order, marked as a replay. A short stock is
    /// [`Error::ReservationFailed`].
    pub async fn create_order(
        &self,
        user: UserId,
        lines: &[CartLine],
        idempotency_key: &str,
        deadline: Deadline,
    ) -> Result<CreatedOrder, Error> {
        let key = MetadataValue::try_from(idempotency_key).map_err(Error::internal)?;
        let items: Vec<Item> = lines.iter().map(|line| Item { sku: line.sku.get(), count: line.count.get() }).collect();
        with_retries(self.backoff, deadline, "LOMS.CreateOrder", || {
            let items = items.clone();
            let key = key.clone();
            async move {
                let (timeout, mut request) = self.request(CreateOrderRequest { user: user.get(), items }, deadline)?;
                request.metadata_mut().insert(IDEMPOTENCY_KEY, key);
                let mut client = self.inner.clone();
                let response = call_with_metadata(timeout, deadline, client.create_order(request), |status| {
                    // LOMS kept the order as `failed` and names the short sku and the order in its message.
                    (status.code() == Code::FailedPrecondition)
                        .then(|| Error::ReservationFailed(status.message().to_owned()))
                })
                .await?;
                let replayed = response.metadata().get(IDEMPOTENT_REPLAY).is_some_and(|value| value == "true");
                let order_id = OrderId::try_from(response.into_inner().order_id)
                    .map_err(|error| Failure::permanent(Error::internal(error)))?;
                Ok(CreatedOrder { order_id, replayed })
            }
        })
        .await
    }

    /// Where `order_id` stands now.
    pub async fn order_standing(&self, order_id: OrderId, deadline: Deadline) -> Result<OrderStanding, Error> {
        with_retries(self.backoff, deadline, "LOMS.ListOrder", || async move {
            let (timeout, request) = self.request(ListOrderRequest { order_id: order_id.get() }, deadline)?;
            let mut client = self.inner.clone();
            let order = call(timeout, deadline, client.list_order(request), |_| None).await?;
            Ok(match order.status() {
                OrderStatus::New | OrderStatus::AwaitingPayment => OrderStanding::AwaitingPayment,
                OrderStatus::Failed | OrderStatus::Cancelled => OrderStanding::Ended,
                OrderStatus::Payed => OrderStanding::Bought { status: "payed" },
                OrderStatus::Shipped => OrderStanding::Bought { status: "shipped" },
                OrderStatus::Delivered => OrderStanding::Bought { status: "delivered" },
            })
        })
        .await
    }

    /// A request bounded by the client's timeout and what is left of the deadline, which it carries to LOMS.
    fn request<T>(&self, message: T, deadline: Deadline) -> Result<(Duration, tonic::Request<T>), Failure> {
        if deadline.has_passed() {
            return Err(Failure::permanent(Error::DeadlineExceeded { dependency: Dependency::Loms }));
        }
        let timeout = self.timeout.min(deadline.remaining());
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        Ok((timeout, request))
    }
}

/// Awaits one call, bounded by `timeout` even when LOMS never answers, and classifies its failure: `expected`
/// turns the statuses this call answers by design into their error; the rest are classified for every call alike.
async fn call<T>(
    timeout: Duration,
    deadline: Deadline,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    expected: impl FnOnce(&tonic::Status) -> Option<Error>,
) -> Result<T, Failure> {
    call_with_metadata(timeout, deadline, call, expected).await.map(tonic::Response::into_inner)
}

/// [`call`], keeping the response's metadata.
async fn call_with_metadata<T>(
    timeout: Duration,
    deadline: Deadline,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    expected: impl FnOnce(&tonic::Status) -> Option<Error>,
) -> Result<tonic::Response<T>, Failure> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(status)) => Err(match expected(&status) {
            Some(error) => Failure::permanent(error),
            None => Failure::from_status(Dependency::Loms, status, deadline),
        }),
        Err(_) => Err(Failure::timed_out(Dependency::Loms, deadline, timeout)),
    }
}
