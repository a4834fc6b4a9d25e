//! The soak's load: a fixed number of orders from concurrent clients, each created (directly on a LOMS replica,
//! or through a Checkout cart), then paid, cancelled or left to time out. Calls that fail for a transient reason
//! (a replica being killed) are retried on the next replica, CreateOrder with an idempotency key; every answer is
//! counted by code, and INTERNAL or UNKNOWN are the failures the soak reports.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use minizon_proto::{
    checkout::{AddToCartRequest, PurchaseRequest, checkout_v1_client::CheckoutV1Client},
    loms::{CancelOrderRequest, CreateOrderRequest, Item, OrderPayedRequest, loms_v1_client::LomsV1Client},
};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status, transport::Channel};

use crate::stats::{Recorder, code_name};

/// What happens to an order after it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// OrderPayed right away.
    Pay,
    /// CancelOrder right away.
    Cancel,
    /// Nothing: LOMS cancels it once the payment timeout passes.
    Leave,
}

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Orders in all.
    pub orders: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Orders per second across all clients; `None` sends each client's next order as soon as the last one ends.
    pub rate: Option<f64>,
    /// The skus orders buy (one to `max_lines` distinct ones, one or two units each).
    pub skus: Vec<u32>,
    /// Most lines per order.
    pub max_lines: usize,
    /// Percentages of orders paid and cancelled; the rest are left to time out.
    pub pay_percent: u8,
    /// See `pay_percent`.
    pub cancel_percent: u8,
    /// Percentage of orders created through a Checkout cart rather than on LOMS directly.
    pub checkout_percent: u8,
    /// Attempts per call before the order is given up (transient failures only).
    pub attempts: u32,
    /// Seed of every random choice: the same seed sends the same orders.
    pub seed: u64,
}

/// One order as the clients saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRecord {
    /// LOMS's id, if the creation was answered with one.
    pub order_id: Option<i64>,
    /// What was to happen to it.
    pub intent: Intent,
    /// Whether the payment or cancellation was answered OK (the client was told the change happened).
    pub acknowledged: bool,
}

/// Everything the load counted.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Every order attempted.
    pub orders: Vec<OrderRecord>,
    /// Answered calls (OK and the expected refusals) by operation; transient failures are counted in `retried`.
    pub ops: BTreeMap<&'static str, Recorder>,
    /// Calls that failed for a transient reason (and were retried), by code.
    pub retried: BTreeMap<&'static str, u64>,
    /// Refusals the contract allows (FAILED_PRECONDITION: stock short, order already finished), by operation.
    pub refused: BTreeMap<&'static str, u64>,
    /// INTERNAL and UNKNOWN answers.
    pub internal_or_unknown: u64,
    /// Answers with any other code (INVALID_ARGUMENT, NOT_FOUND…): the driver sends none that deserve them.
    pub unexpected: u64,
    /// A few of the bad answers, for the report.
    pub examples: Vec<String>,
    /// Orders abandoned after `attempts` transient failures of one call.
    pub gave_up: u64,
    /// From the first order to the last answer.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Orders finished (created or refused, and then handled) per second.
    pub fn orders_per_sec(&self) -> f64 {
        crate::stats::throughput(self.orders.len() as u64, self.elapsed)
    }

    /// All answered calls in one histogram.
    pub fn all_calls(&self) -> Recorder {
        let mut all = Recorder::new();
        for recorder in self.ops.values() {
            all.merge(recorder);
        }
        all
    }

    fn merge(&mut self, other: Self) {
        self.orders.extend(other.orders);
        for (op, recorder) in other.ops {
            self.ops.entry(op).or_default().merge(&recorder);
        }
        for (map, other) in [(&mut self.retried, other.retried), (&mut self.refused, other.refused)] {
            for (code, count) in other {
                *map.entry(code).or_default() += count;
            }
        }
        self.internal_or_unknown += other.internal_or_unknown;
        self.unexpected += other.unexpected;
        self.gave_up += other.gave_up;
        let room = EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }
}

/// Bad answers kept verbatim for the report.
const EXAMPLES: usize = 5;

/// Users of orders created through Checkout start here: one fresh user (so one fresh cart) per order.
const FIRST_CHECKOUT_USER: i64 = 10_000_000;

/// The servers the load talks to.
#[derive(Debug, Clone)]
pub struct Targets {
    /// One channel per LOMS replica.
    pub loms: Vec<Channel>,
    /// Checkout.
    pub checkout: Channel,
}

/// Runs the plan to its end: every order attempted once, each call retried at most `attempts` times.
pub async fn run(plan: &LoadPlan, targets: &Targets) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(!targets.loms.is_empty() && !plan.skus.is_empty(), "the load needs LOMS replicas and skus");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.clients);
    for client in 0..plan.clients {
        let mut driver = Client {
            plan: plan.clone(),
            loms: targets.loms.iter().cloned().map(LomsV1Client::new).collect(),
            checkout: CheckoutV1Client::new(targets.checkout.clone()),
            result: LoadResult::default(),
            client,
        };
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= driver.plan.orders {
                    break;
                }
                if let Some(rate) = driver.plan.rate.filter(|rate| *rate > 0.0) {
                    tokio::time::sleep_until(started + Duration::from_secs_f64(index as f64 / rate)).await;
                }
                let record = driver.order(index).await;
                driver.result.orders.push(record);
            }
            driver.result
        }));
    }
    let mut total = LoadResult::default();
    for task in tasks {
        total.merge(task.await?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// One client's connections and counts.
struct Client {
    plan: LoadPlan,
    loms: Vec<LomsV1Client<Channel>>,
    checkout: CheckoutV1Client<Channel>,
    result: LoadResult,
    client: usize,
}

/// How one call ended, after its retries.
enum Answer<T> {
    Ok(T),
    /// FAILED_PRECONDITION: a refusal the contract allows.
    Refused,
    /// Nothing usable (attempts exhausted, or a code that ends the order).
    Failed,
}

impl Client {
    async fn order(&mut self, index: u64) -> OrderRecord {
        let mut rng = fastrand::Rng::with_seed(self.plan.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let roll = rng.u8(0..100);
        let intent = if roll < self.plan.pay_percent {
            Intent::Pay
        } else if roll < self.plan.pay_percent.saturating_add(self.plan.cancel_percent) {
            Intent::Cancel
        } else {
            Intent::Leave
        };
        let lines = rng.usize(1..=self.plan.max_lines.min(self.plan.skus.len()));
        let mut skus = self.plan.skus.clone();
        rng.shuffle(&mut skus);
        let items: Vec<Item> = skus.into_iter().take(lines).map(|sku| Item { sku, count: rng.u32(1..=2) }).collect();
        let via_checkout = rng.u8(0..100) < self.plan.checkout_percent;
        let replica = (index as usize) % self.loms.len();
        let user = i64::try_from(self.client).unwrap_or(i64::MAX - 1) + 1;

        let order_id = if via_checkout {
            self.purchase(FIRST_CHECKOUT_USER + i64::try_from(index).unwrap_or(0), &items).await
        } else {
            self.create(user, &items, index, replica).await
        };
        let mut record = OrderRecord { order_id, intent, acknowledged: false };
        let Some(order_id) = order_id else { return record };
        record.acknowledged = match intent {
            Intent::Pay => {
                let loms = self.loms.clone();
                let answer = self
                    .call("OrderPayed", replica, |r| {
                        let mut client = loms[r % loms.len()].clone();
                        async move { client.order_payed(OrderPayedRequest { order_id }).await }
                    })
                    .await;
                matches!(answer, Answer::Ok(_))
            }
            Intent::Cancel => {
                let loms = self.loms.clone();
                let answer = self
                    .call("CancelOrder", replica, |r| {
                        let mut client = loms[r % loms.len()].clone();
                        async move { client.cancel_order(CancelOrderRequest { order_id }).await }
                    })
                    .await;
                matches!(answer, Answer::Ok(_))
            }
            Intent::Leave => false,
        };
        record
    }

    /// CreateOrder on LOMS, retried on the next replica with the same idempotency key.
    async fn create(&mut self, user: i64, items: &[Item], index: u64, replica: usize) -> Option<i64> {
        let loms = self.loms.clone();
        let key = format!("soak-{}-{index}", self.plan.seed);
        let answer = self
            .call("CreateOrder", replica, |r| {
                let mut client = loms[r % loms.len()].clone();
                let mut request = Request::new(CreateOrderRequest { user, items: items.to_vec() });
                let key = key.parse().expect("an ASCII key is a valid header value");
                request.metadata_mut().insert("idempotency-key", key);
                async move { client.create_order(request).await }
            })
            .await;
        match answer {
            Answer::Ok(created) => Some(created.order_id),
            Answer::Refused | Answer::Failed => None,
        }
    }

    /// AddToCart of every line, then Purchase, for a fresh user. A Purchase retried after a lost answer may find
    /// the cart already bought (and empty): that order is then unknown to the client and times out unpaid.
    async fn purchase(&mut self, user: i64, items: &[Item]) -> Option<i64> {
        for item in items {
            let checkout = self.checkout.clone();
            let (sku, count) = (item.sku, item.count);
            let added = self
                .call("AddToCart", 0, |_| {
                    let mut client = checkout.clone();
                    async move { client.add_to_cart(AddToCartRequest { user, sku, count }).await }
                })
                .await;
            if !matches!(added, Answer::Ok(_)) {
                return None;
            }
        }
        let checkout = self.checkout.clone();
        let answer = self
            .call("Purchase", 0, |_| {
                let mut client = checkout.clone();
                async move { client.purchase(PurchaseRequest { user }).await }
            })
            .await;
        match answer {
            Answer::Ok(purchased) => Some(purchased.order_id),
            Answer::Refused | Answer::Failed => None,
        }
    }

    /// Sends `call(replica)` until it is answered, moving to the next replica after each transient failure, at
    /// most `attempts` times with a growing pause (bounded in count and in time).
    async fn call<T, F, Fut>(&mut self, op: &'static str, replica: usize, mut call: F) -> Answer<T>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        for attempt in 0..self.plan.attempts {
            let sent = Instant::now();
            let outcome = call(replica + attempt as usize).await;
            let latency = sent.elapsed();
            let status = match outcome {
                Ok(response) => {
                    self.result.ops.entry(op).or_default().record_ok(latency);
                    return Answer::Ok(response.into_inner());
                }
                Err(status) => status,
            };
            match status.code() {
                Code::FailedPrecondition => {
                    self.result.ops.entry(op).or_default().record_ok(latency);
                    *self.result.refused.entry(op).or_default() += 1;
                    return Answer::Refused;
                }
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted => {
                    *self.result.retried.entry(code_name(status.code())).or_default() += 1;
                }
                // No answer at all: the connection died with the process (a replica being killed). tonic reports
                // that as UNKNOWN "transport error"; no server said UNKNOWN, so it is a transient failure.
                Code::Unknown if lost_connection(&status) => {
                    *self.result.retried.entry("connection lost").or_default() += 1;
                }
                Code::Internal | Code::Unknown => {
                    self.result.internal_or_unknown += 1;
                    self.example(op, &status);
                    // Retried all the same: the order goes on, and the next answer tells what happened.
                }
                _ => {
                    self.result.unexpected += 1;
                    self.example(op, &status);
                    return Answer::Failed;
                }
            }
            let pause = Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(2));
            tokio::time::sleep(pause).await;
        }
        self.result.gave_up += 1;
        Answer::Failed
    }

    fn example(&mut self, op: &str, status: &Status) {
        if self.result.examples.len() < EXAMPLES {
            self.result.examples.push(format!("{op}: {} {}", code_name(status.code()), status.message()));
        }
    }
}

/// Whether `status` is tonic's report of a connection that failed mid-call rather than a server's answer.
fn lost_connection(status: &Status) -> bool {
    status.message() == "transport error" && std::error::Error::source(status).is_some()
}
