//! Group commit: write calls queue up for one committer task per store, which takes everything queued (up to
//! `max_batch`) and commits it in one transaction, so many calls share one WAL flush (docs/architecture.md, "Group
//! commit"). There is no fixed delay: a lone call is committed at once, and a batch is made of the calls that
//! queued up behind the commit in flight (optionally waiting up to `max_wait` for more). A call is answered only
//! after its batch committed.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{
    Command, CreateOrder, CreateOutcome, LomsError, Order, OrderId, OrderStore, RecordedTransition, Sku, UserId,
    WarehouseId,
};

/// How write calls are gathered into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct BatchConfig {
    /// Most CreateOrder calls one transaction commits together. 1 turns batching off: every call runs its own
    /// transaction, concurrently on the pool, as before group commit.
    #[arg(long = "write-batch-max", env = "LOMS_WRITE_BATCH_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_batch: u16,

    /// Longest a batch waits for more calls once it has one, when fewer than the maximum are queued. 0 (the
    /// default): never wait; batches form only from calls queued behind the commit in flight.
    #[arg(long = "write-batch-max-wait", env = "LOMS_WRITE_BATCH_MAX_WAIT", default_value = "0s",
          value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_batch: 64, max_wait: Duration::ZERO }
    }
}

/// A queue of calls in front of one committer task. `Req` is a call, `Resp` its answer.
#[derive(Debug)]
pub(super) struct Batcher<Req, Resp> {
    queue: mpsc::UnboundedSender<(Req, oneshot::Sender<Resp>)>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the committer: `commit` runs one batch and returns one answer per call, in the calls' order. The task
    /// ends when the batcher is dropped, after the batches already queued.
    pub(super) fn spawn<F, Fut>(config: BatchConfig, mut commit: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (queue, mut calls) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(batch) = gather(&mut calls, config).await {
                let size = batch.len();
                let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = batch.into_iter().unzip();
                let answers = commit(requests).await;
                debug_assert_eq!(answers.len(), size, "a batch answers every call");
                tracing::debug!(size, "write batch committed");
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that went away (its client cancelled) is not waiting: its call committed anyway.
                    let _ = reply.send(answer);
                }
            }
        });
        Self { queue }
    }

    /// Queues `request`; the receiver gets its answer once its batch committed.
    pub(super) fn enqueue(&self, request: Req) -> oneshot::Receiver<Resp> {
        let (reply, answer) = oneshot::channel();
        // The committer only stops when the batcher is dropped; if it died, the dropped reply says so.
        let _ = self.queue.send((request, reply));
        answer
    }
}

/// Waits for one call, then takes every call already queued up to `max_batch` (waiting up to `max_wait` for more
/// when fewer are queued); `None` when the queue is closed and empty.
async fn gather<T>(calls: &mut mpsc::UnboundedReceiver<T>, config: BatchConfig) -> Option<Vec<T>> {
    let first = calls.recv().await?;
    let max_batch = usize::from(config.max_batch);
    let mut batch = Vec::with_capacity(max_batch.min(64));
    batch.push(first);
    while batch.len() < max_batch {
        match calls.try_recv() {
            Ok(call) => batch.push(call),
            Err(_) => break,
        }
    }
    if !config.max_wait.is_zero() {
        let deadline = tokio::time::Instant::now() + config.max_wait;
        while batch.len() < max_batch {
            match tokio::time::timeout_at(deadline, calls.recv()).await {
                Ok(Some(call)) => batch.push(call),
                _ => break,
            }
        }
    }
    Some(batch)
}

/// For each call of a batch, the earlier call of the same batch with the same (user, idempotency key), if any: that
/// call's order is the answer to this one (the replay of a key used inside its own batch).
pub(super) fn first_with_same_key(calls: &[CreateOrder]) -> Vec<Option<usize>> {
    let mut first: std::collections::HashMap<(UserId, &str), usize> = std::collections::HashMap::new();
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let idempotency = call.idempotency.as_ref()?;
            let earlier = *first.entry((call.user, idempotency.key.as_str())).or_insert(index);
            (earlier != index).then_some(earlier)
        })
        .collect()
}

/// A backend that commits many CreateOrder calls in one transaction, answering each as if it had run alone in the
/// batch's order.
#[async_trait]
pub(super) trait CreateBatch: OrderStore {
    /// The batch in one transaction, one answer per call in the calls' order. `Err` only when nothing was
    /// committed.
    async fn try_create_batch(&self, calls: &[CreateOrder]) -> Result<Vec<CreateAnswer>, LomsError>;

    /// The batch in one transaction or, when that fails before its commit, its calls one by one on the per-call
    /// path, so a call that cannot be written fails alone.
    async fn create_batch(&self, calls: Vec<CreateOrder>) -> Vec<CreateAnswer> {
        match self.try_create_batch(&calls).await {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(%error, calls = calls.len(), "a CreateOrder batch failed; running its calls one by one");
                let mut answers = Vec::with_capacity(calls.len());
                for call in calls {
                    answers.push(self.create_order(call).await);
                }
                answers
            }
        }
    }
}

/// The answers to a batch whose COMMIT failed: its outcome is unknown, so every call is told so, and none is run
/// again (a call without an idempotency key could be stored twice).
pub(super) fn commit_failed(calls: &[CreateOrder], error: &LomsError) -> Vec<CreateAnswer> {
    tracing::error!(%error, calls = calls.len(), "the COMMIT of a CreateOrder batch failed");
    let message = format!("the commit of the order failed: {error}");
    calls.iter().map(|_| Err(LomsError::Unavailable(message.clone()))).collect()
}

/// One CreateOrder call's answer.
pub(super) type CreateAnswer = Result<CreateOutcome, LomsError>;

/// An [`OrderStore`] whose CreateOrder calls go through a [`Batcher`]; every other call goes straight to the store.
#[derive(Debug)]
pub(super) struct BatchedOrders {
    store: Arc<dyn OrderStore>,
    /// `None` when batching is off (`max_batch` 1).
    creates: Option<Batcher<CreateOrder, CreateAnswer>>,
}

impl BatchedOrders {
    /// Batches the CreateOrder calls of `backend` (which is also `store`) as `config` says.
    pub(super) fn new<B: CreateBatch + OrderStore>(backend: Arc<B>, config: BatchConfig) -> Self {
        let store: Arc<dyn OrderStore> = backend.clone();
        let creates = (config.max_batch > 1).then(|| {
            Batcher::spawn(config, move |calls| {
                let backend = backend.clone();
                async move { backend.create_batch(calls).await }
            })
        });
        Self { store, creates }
    }
}

#[async_trait]
impl OrderStore for BatchedOrders {
    async fn create_order(&self, order: CreateOrder) -> Result<CreateOutcome, LomsError> {
        match &self.creates {
            Some(batcher) => batcher
                .enqueue(order)
                .await
                .map_err(|_| LomsError::Internal("the write batch committer stopped".into()))?,
            None => self.store.create_order(order).await,
        }
    }

    async fn order(&self, id: OrderId) -> Result<Order, LomsError> {
        self.store.order(id).await
    }

    async fn history(&self, id: OrderId) -> Result<Vec<RecordedTransition>, LomsError> {
        self.store.history(id).await
    }

    async fn pay(&self, id: OrderId) -> Result<(), LomsError> {
        self.store.pay(id).await
    }

    async fn cancel(&self, id: OrderId) -> Result<(), LomsError> {
        self.store.cancel(id).await
    }

    async fn run(&self, id: OrderId, command: Command) -> Result<(), LomsError> {
        self.store.run(id, command).await
    }

    async fn cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        self.store.cancel_overdue(limit).await
    }

    async fn available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        self.store.available_stock(sku).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::domain::{Count, IdempotencyKey, OrderLines};

    /// The sizes of the batches committed so far.
    type Sizes = Arc<Mutex<Vec<usize>>>;

    /// A batcher whose commits record their sizes and wait for a permit of `gate` each.
    fn gated(max_batch: u16) -> (Batcher<u32, u32>, Sizes, Arc<Semaphore>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (seen, permits) = (sizes.clone(), gate.clone());
        let batcher = Batcher::spawn(BatchConfig { max_batch, max_wait: Duration::ZERO }, move |calls: Vec<u32>| {
            let (seen, permits) = (seen.clone(), permits.clone());
            async move {
                seen.lock().unwrap().push(calls.len());
                permits.acquire().await.unwrap().forget();
                calls.into_iter().map(|call| call * 10).collect()
            }
        });
        (batcher, sizes, gate)
    }

    #[tokio::test]
    async fn a_lone_call_commits_at_once() {
        let (batcher, sizes, gate) = gated(64);
        gate.add_permits(1);
        assert_eq!(batcher.enqueue(7).await.unwrap(), 70);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn calls_queued_behind_a_commit_are_gathered_up_to_the_maximum() {
        let (batcher, sizes, gate) = gated(4);
        let first = batcher.enqueue(0);
        // Wait until the first call's commit is in flight (it holds the committer at the gate).
        until(|| sizes.lock().unwrap().len() == 1).await;
        let queued: Vec<_> = (1..=6).map(|call| batcher.enqueue(call)).collect();
        gate.add_permits(3);
        assert_eq!(first.await.unwrap(), 0);
        let mut answers = Vec::new();
        for answer in queued {
            answers.push(answer.await.unwrap());
        }
        assert_eq!(answers, vec![10, 20, 30, 40, 50, 60], "every call gets its own answer, in order");
        assert_eq!(*sizes.lock().unwrap(), vec![1, 4, 2]);
    }

    /// Yields to the runtime until `done` holds (bounded).
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the condition never held");
    }

    fn call(user: i64, key: Option<&str>) -> CreateOrder {
        CreateOrder {
            user: UserId::try_from(user).unwrap(),
            lines: OrderLines::new([(Sku::try_from(1u32).unwrap(), Count::try_from(1u32).unwrap())]).unwrap(),
            idempotency: key.map(|key| IdempotencyKey { key: key.into(), request_hash: "h".into() }),
            payment_timeout: Duration::from_secs(60),
            traceparent: None,
        }
    }

    #[test]
    fn a_key_repeated_by_the_same_user_in_a_batch_points_at_its_first_use() {
        let calls = [call(1, Some("a")), call(2, Some("a")), call(1, None), call(1, Some("a")), call(2, Some("a"))];
        assert_eq!(first_with_same_key(&calls), vec![None, None, None, Some(0), Some(1)]);
    }
}
