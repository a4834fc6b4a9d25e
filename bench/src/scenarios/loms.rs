//! LOMS traffic: orders (the purchase path, churn, creation alone) and stock reads.

use minizon_proto::loms::{
    CancelOrderRequest, CreateOrderRequest, Item, OrderPayedRequest, StocksRequest, loms_v1_client::LomsV1Client,
};
use tonic::transport::Channel;

use crate::{
    runner::{Probe, Scenario},
    target::{Channels, SkuRange},
};

/// What an iteration does with the order it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCreate {
    /// OrderPayed: the purchase path (reserved units become sold).
    Pay,
    /// CancelOrder: churn (units return to stock, so it can run for ever on finite stock).
    Cancel,
    /// Nothing: the order stays awaiting payment until the unpaid-order sweep (CreateOrder alone, and the sweep
    /// scenario's backlog).
    Leave,
}

/// CreateOrder with `items` distinct skus (one unit each), then [`AfterCreate`].
#[derive(Debug, Clone)]
pub struct OrderFlow {
    channels: Channels,
    skus: SkuRange,
    items: usize,
    then: AfterCreate,
    seed: u64,
    /// Every CreateOrder carries a new `idempotency-key` starting with this (unique to the flow), as Checkout's
    /// Purchase does; `None`: no key.
    keys: Option<String>,
}

impl OrderFlow {
    /// Orders of `items` skus drawn from `skus`; `seed` makes the draws repeatable run to run.
    pub fn new(channels: Channels, skus: SkuRange, items: usize, then: AfterCreate, seed: u64) -> Self {
        Self { channels, skus, items, then, seed, keys: None }
    }

    /// The same flow, each CreateOrder with an idempotency key never sent before (keys of earlier runs on the same
    /// database would be replayed, not created).
    pub fn with_keys(self) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Self { keys: Some(format!("bench-{nanos:x}")), ..self }
    }
}

/// One order-flow client.
#[derive(Debug)]
pub struct OrderClient {
    client: LomsV1Client<Channel>,
    rng: fastrand::Rng,
    user: i64,
    /// CreateOrder calls sent so far (numbers the keys).
    sent: u64,
}

impl Scenario for OrderFlow {
    type Client = OrderClient;

    async fn connect(&self, index: usize) -> anyhow::Result<OrderClient> {
        Ok(OrderClient {
            client: LomsV1Client::new(self.channels.for_client(index)),
            rng: fastrand::Rng::with_seed(self.seed ^ index as u64),
            user: index as i64 + 1,
            sent: 0,
        })
    }

    async fn iteration(&self, c: &mut OrderClient, probe: &mut Probe) {
        let items = self.skus.pick(&mut c.rng, self.items).into_iter().map(|sku| Item { sku, count: 1 }).collect();
        let mut request = tonic::Request::new(CreateOrderRequest { user: c.user, items });
        if let Some(keys) = &self.keys {
            c.sent += 1;
            let key = format!("{keys}-{}-{}", c.user, c.sent).parse().expect("a key of ASCII letters and digits");
            request.metadata_mut().insert("idempotency-key", key);
        }
        let Ok(created) = probe.call("CreateOrder", c.client.create_order(request)).await else {
            return;
        };
        let order_id = created.order_id;
        match self.then {
            AfterCreate::Pay => {
                let _ = probe.call("OrderPayed", c.client.order_payed(OrderPayedRequest { order_id })).await;
            }
            AfterCreate::Cancel => {
                let _ = probe.call("CancelOrder", c.client.cancel_order(CancelOrderRequest { order_id })).await;
            }
            AfterCreate::Leave => {}
        }
    }
}

/// Stocks of one random sku per call.
#[derive(Debug, Clone)]
pub struct Stocks {
    channels: Channels,
    skus: SkuRange,
    seed: u64,
}

impl Stocks {
    /// Reads of skus drawn from `skus`.
    pub fn new(channels: Channels, skus: SkuRange, seed: u64) -> Self {
        Self { channels, skus, seed }
    }
}

impl Scenario for Stocks {
    type Client = (LomsV1Client<Channel>, fastrand::Rng);

    async fn connect(&self, index: usize) -> anyhow::Result<Self::Client> {
        Ok((LomsV1Client::new(self.channels.for_client(index)), fastrand::Rng::with_seed(self.seed ^ index as u64)))
    }

    async fn iteration(&self, (client, rng): &mut Self::Client, probe: &mut Probe) {
        let sku = self.skus.one(rng);
        let _ = probe.call("Stocks", client.stocks(StocksRequest { sku })).await;
    }
}
