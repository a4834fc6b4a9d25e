//! Group commit: write calls queue up for a committer task per store and kind of call (CreateOrder; OrderPayed and
//! CancelOrder), which takes everything queued (up to `max_batch`) and commits it in one transaction, so many calls
//! share one WAL flush (docs/architecture.md, "Group commit"). There is no fixed delay: a lone call is committed at
//! once, and a batch is made of the calls that queued up behind the commit in flight (optionally waiting up to
//! `max_wait` for more). A call is answered only after its batch committed.

use std::{cell::Cell, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{
    Command, CreateOrder, CreateOutcome, LomsError, Order, OrderId, OrderStore, RecordedTransition, Sku, UserId,
    WarehouseId,
};

/// How write calls are gathered into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct BatchConfig {
    /// Most calls of one kind (CreateOrder; OrderPayed and CancelOrder) one transaction commits together. 1 turns
    /// batching off: every call runs its own transaction, concurrently on the pool, as before group commit.
    #[arg(long = "write-batch-max", env = "LOMS_WRITE_BATCH_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_batch: u16,

    /// Longest a batch waits for more calls once it has one, when fewer than the maximum are queued. 0 (the
    /// default): never wait; batches form only from calls queued behind the commit in flight.
    #[arg(long = "write-batch-max-wait", env = "LOMS_WRITE_BATCH_MAX_WAIT", default_value = "0s",
          value_parser = humantime::parse_duration)]
    pub max_wait: Duration,

    /// Batches of one kind in flight at once (PostgreSQL; SQLite has one writer and always runs one). With one,
    /// every call waits behind the commit in flight; with more, the next batch gathers the calls queued meanwhile
    /// and takes its locks while the previous one's COMMIT flushes. On the 2-core benchmark machine two were no
    /// faster than one (docs/benchmarks-history.md, run 9), so one is the default; a database host with cores to spare
    /// may gain.
    #[arg(long = "write-batch-committers", env = "LOMS_WRITE_BATCH_COMMITTERS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    pub committers: u8,

    /// Whether a batch of new orders may be decided on the stock levels this process's last batches committed and
    /// sent as BEGIN, one statement and COMMIT in one round trip (PostgreSQL, with one committer; the statement
    /// checks the levels under its locks and the batch runs again the locking way when they changed). Off: every
    /// batch locks and reads its stock rows first, two round trips.
    #[arg(long = "write-batch-one-flight", env = "LOMS_WRITE_BATCH_ONE_FLIGHT", action = clap::ArgAction::Set,
          default_value_t = true)]
    pub one_flight: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_batch: 64, max_wait: Duration::ZERO, committers: 1, one_flight: true }
    }
}

/// The kinds of call committed in batches, each by its own committer (they lock different rows first: a new order
/// only stock, a command its order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BatchKind {
    /// CreateOrder.
    Create,
    /// OrderPayed and CancelOrder.
    Command,
}

impl BatchKind {
    /// The name logs and the batch-size histogram give the kind.
    fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Command => "command",
        }
    }

    /// What a call of this kind writes, for its callers' messages.
    fn writes(self) -> &'static str {
        match self {
            Self::Create => "the order",
            Self::Command => "the order's change",
        }
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
    pub(super) fn spawn<F, Fut>(config: BatchConfig, kind: BatchKind, commit: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (queue, calls) = mpsc::unbounded_channel();
        // The committers take turns at the queue: one holds it from gathering its batch until that batch sends
        // its COMMIT ([`committing`]), then the next gathers the calls queued meanwhile and takes its locks while
        // the first one's COMMIT flushes. Handing the queue over earlier (right after gathering) would split the
        // calls into smaller batches, one WAL flush each, for no overlap the locks allow anyway.
        let calls = Arc::new(tokio::sync::Mutex::new(calls));
        for _ in 0..config.committers.max(1) {
            let (calls, mut commit) = (calls.clone(), commit.clone());
            tokio::spawn(async move {
                loop {
                    let mut queue = calls.lock().await;
                    let Some(batch) = gather(&mut queue, config).await else { break };
                    let (handoff, committing) = oneshot::channel();
                    let committed = COMMITTING.scope(Cell::new(Some(handoff)), commit_batch(kind, batch, &mut commit));
                    tokio::pin!(committed);
                    tokio::select! {
                        () = &mut committed => continue,
                        // Sent, or dropped by a batch that ended without a COMMIT of its own.
                        _ = committing => {}
                    }
                    drop(queue);
                    committed.await;
                }
            });
        }
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

impl<Req: Send + 'static, T: Send + 'static> Batcher<Req, Result<T, LomsError>> {
    /// Queues `request` and waits for its answer.
    pub(super) async fn call(&self, request: Req) -> Result<T, LomsError> {
        self.enqueue(request).await.map_err(|_| LomsError::Internal("the write batch committer stopped".into()))?
    }
}

tokio::task_local! {
    /// The committer's handoff of its queue, while it runs a batch.
    static COMMITTING: Cell<Option<oneshot::Sender<()>>>;
}

/// Tells the committer running this task's batch, if any, that the batch is sending its COMMIT: the next committer
/// may gather its own batch now (see [`Batcher::spawn`]). A store calls it right before every COMMIT; outside a
/// batch, or after the first COMMIT of a batch, it does nothing.
pub(super) fn committing() {
    let _ = COMMITTING.try_with(|handoff| {
        if let Some(handoff) = handoff.take() {
            let _ = handoff.send(());
        }
    });
}

/// Commits one gathered batch and answers each of its calls.
async fn commit_batch<Req, Resp, F, Fut>(kind: BatchKind, batch: Vec<(Req, oneshot::Sender<Resp>)>, commit: &mut F)
where
    F: FnMut(Vec<Req>) -> Fut,
    Fut: Future<Output = Vec<Resp>>,
{
    let size = batch.len();
    let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = batch.into_iter().unzip();
    let answers = commit(requests).await;
    debug_assert_eq!(answers.len(), size, "a batch answers every call");
    tracing::debug!(size, kind = kind.name(), "write batch committed");
    metrics::histogram!(crate::series::WRITE_BATCH_SIZE, "kind" => kind.name()).record(size as f64);
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A caller that went away (its client cancelled) is not waiting: its call committed anyway.
        let _ = reply.send(answer);
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

/// The answers to a batch of `calls` calls whose COMMIT failed: its outcome is unknown, so every call is told so,
/// and none is run again (a call without an idempotency key could be stored twice; a payment could be answered
/// as refused although it went through).
pub(super) fn commit_failed<T>(kind: BatchKind, calls: usize, error: &LomsError) -> Vec<Result<T, LomsError>> {
    tracing::error!(%error, calls, kind = kind.name(), "the COMMIT of a write batch failed");
    let message = format!("the commit of {} failed: {error}", kind.writes());
    (0..calls).map(|_| Err(LomsError::Unavailable(message.clone()))).collect()
}

/// One CreateOrder call's answer.
pub(super) type CreateAnswer = Result<CreateOutcome, LomsError>;

/// One OrderPayed or CancelOrder call: the command and the order it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CommandCall {
    pub(super) order: OrderId,
    pub(super) command: Command,
    /// The W3C trace context of the request, for its events: the committer's task, which writes them, is not in
    /// the request's span.
    pub(super) traceparent: Option<String>,
}

impl CommandCall {
    /// `command` on `order`, in the trace of the current span (the caller's task, before it queues the call).
    fn new(order: OrderId, command: Command) -> Self {
        Self { order, command, traceparent: minizon_common::telemetry::current_traceparent() }
    }
}

/// One command call's answer.
pub(super) type CommandAnswer = Result<(), LomsError>;

/// The rounds a batch of commands runs in, as indexes into `calls`: round k holds the k-th call on each order, in
/// the batch's order. Calls on different orders commute (a command decides on its own order alone and settles only
/// that order's reservations), so running the rounds one after another answers every call as running the batch's
/// calls one by one would (a payment and a cancellation of one order racing into one batch: the first wins); and
/// no round names an order twice, so a backend locks, decides and writes each order once per round.
pub(super) fn rounds(calls: &[CommandCall]) -> Vec<Vec<usize>> {
    let mut seen: std::collections::HashMap<OrderId, usize> = std::collections::HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let round = seen.entry(call.order).or_insert(0);
        if *round == rounds.len() {
            rounds.push(Vec::new());
        }
        rounds[*round].push(index);
        *round += 1;
    }
    rounds
}

/// A backend that commits many commands on distinct orders in one transaction, answering each as if it had run
/// alone.
#[async_trait]
pub(super) trait CommandBatch: OrderStore {
    /// Commands on distinct orders in one transaction, one answer per call in the calls' order: an unknown order,
    /// a refused step or a repeated one is that call's answer alone. `Err` only when nothing was committed.
    async fn try_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError>;

    /// One call on the per-call path (its own transaction), its events in the call's trace.
    async fn command_alone(&self, call: &CommandCall) -> CommandAnswer;

    /// The batch, [`rounds`] one after another, each in one transaction or, when that fails before its commit,
    /// its calls one by one on the per-call path, so a call that cannot be written fails alone.
    async fn command_batch(&self, calls: Vec<CommandCall>) -> Vec<CommandAnswer> {
        let mut answers: Vec<Option<CommandAnswer>> = (0..calls.len()).map(|_| None).collect();
        for round in rounds(&calls) {
            let round_calls: Vec<CommandCall> = round.iter().map(|&index| calls[index].clone()).collect();
            let round_answers = match self.try_command_batch(&round_calls).await {
                Ok(answers) => answers,
                Err(error) => {
                    tracing::warn!(%error, calls = round_calls.len(), "a command batch failed; running its calls one by one");
                    let mut answers = Vec::with_capacity(round_calls.len());
                    for call in &round_calls {
                        answers.push(self.command_alone(call).await);
                    }
                    answers
                }
            };
            for (index, answer) in round.into_iter().zip(round_answers) {
                answers[index] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(LomsError::Internal("a batch left a call unanswered".into()))))
            .collect()
    }
}

/// An [`OrderStore`] whose CreateOrder calls go through one [`Batcher`] and whose OrderPayed and CancelOrder calls
/// go through another; every other call goes straight to the store (ship, deliver, refund, change and the return
/// are rare next to a purchase, and the sweep batches itself).
#[derive(Debug)]
pub(super) struct BatchedOrders {
    store: Arc<dyn OrderStore>,
    /// `None` when batching is off (`max_batch` 1), as for `commands`.
    creates: Option<Batcher<CreateOrder, CreateAnswer>>,
    commands: Option<Batcher<CommandCall, CommandAnswer>>,
}

impl BatchedOrders {
    /// Batches the CreateOrder, OrderPayed and CancelOrder calls of `backend` (which is also `store`) as `config`
    /// says.
    pub(super) fn new<B: CreateBatch + CommandBatch>(backend: Arc<B>, config: BatchConfig) -> Self {
        let store: Arc<dyn OrderStore> = backend.clone();
        if config.max_batch <= 1 {
            return Self { store, creates: None, commands: None };
        }
        let creator = backend.clone();
        let creates = Batcher::spawn(config, BatchKind::Create, move |calls| {
            let backend = creator.clone();
            async move { backend.create_batch(calls).await }
        });
        let commands = Batcher::spawn(config, BatchKind::Command, move |calls| {
            let backend = backend.clone();
            async move { backend.command_batch(calls).await }
        });
        Self { store, creates: Some(creates), commands: Some(commands) }
    }
}

#[async_trait]
impl OrderStore for BatchedOrders {
    async fn create_order(&self, order: CreateOrder) -> Result<CreateOutcome, LomsError> {
        match &self.creates {
            Some(batcher) => batcher.call(order).await,
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
        match &self.commands {
            Some(batcher) => batcher.call(CommandCall::new(id, Command::Pay)).await,
            None => self.store.pay(id).await,
        }
    }

    async fn cancel(&self, id: OrderId) -> Result<(), LomsError> {
        match &self.commands {
            Some(batcher) => batcher.call(CommandCall::new(id, Command::Cancel)).await,
            None => self.store.cancel(id).await,
        }
    }

    async fn run(&self, id: OrderId, command: Command) -> Result<(), LomsError> {
        match (&self.commands, command) {
            (Some(batcher), command @ (Command::Pay | Command::Cancel)) => {
                batcher.call(CommandCall::new(id, command)).await
            }
            (_, command) => self.store.run(id, command).await,
        }
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

    /// A batcher whose commits record their sizes, send their COMMIT at once and wait for a permit of `gate` each
    /// for it to complete.
    fn gated(max_batch: u16) -> (Batcher<u32, u32>, Sizes, Arc<Semaphore>) {
        gated_with(max_batch, 1)
    }

    /// [`gated`] with `committers` batches in flight at most.
    fn gated_with(max_batch: u16, committers: u8) -> (Batcher<u32, u32>, Sizes, Arc<Semaphore>) {
        let (batcher, sizes, writes, gate) = gated_writes(max_batch, committers);
        writes.add_permits(Semaphore::MAX_PERMITS);
        (batcher, sizes, gate)
    }

    /// [`gated_with`], its batches also waiting for a permit of the first semaphore before their COMMIT (their
    /// locks and writes); the second is the COMMIT's own gate.
    fn gated_writes(max_batch: u16, committers: u8) -> (Batcher<u32, u32>, Sizes, Arc<Semaphore>, Arc<Semaphore>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (writes, gate) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
        let (seen, written, permits) = (sizes.clone(), writes.clone(), gate.clone());
        let config = BatchConfig { max_batch, max_wait: Duration::ZERO, committers, ..BatchConfig::default() };
        let batcher = Batcher::spawn(config, BatchKind::Create, move |calls: Vec<u32>| {
            let (seen, written, permits) = (seen.clone(), written.clone(), permits.clone());
            async move {
                seen.lock().unwrap().push(calls.len());
                written.acquire().await.unwrap().forget();
                committing();
                permits.acquire().await.unwrap().forget();
                calls.into_iter().map(|call| call * 10).collect()
            }
        });
        (batcher, sizes, writes, gate)
    }

    #[tokio::test]
    async fn a_lone_call_commits_at_once() {
        let (batcher, sizes, gate) = gated(64);
        gate.add_permits(1);
        assert_eq!(batcher.enqueue(7).await.unwrap(), 70);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn a_second_committer_takes_the_next_call_while_the_first_batch_is_still_committing() {
        let (batcher, sizes, gate) = gated_with(64, 2);
        let first = batcher.enqueue(1);
        until(|| sizes.lock().unwrap().len() == 1).await;
        let second = batcher.enqueue(2);
        // No permit yet: the first commit still holds its committer, so only the other one can have taken it.
        until(|| sizes.lock().unwrap().len() == 2).await;
        let third = batcher.enqueue(3);
        gate.add_permits(3);
        assert_eq!((first.await.unwrap(), second.await.unwrap(), third.await.unwrap()), (10, 20, 30));
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1, 1]);
    }

    #[tokio::test]
    async fn the_next_committer_gathers_only_once_the_batch_before_sends_its_commit() {
        let (batcher, sizes, writes, gate) = gated_writes(64, 2);
        let first = batcher.enqueue(1);
        until(|| sizes.lock().unwrap().len() == 1).await;
        // The first batch is still taking its locks and writing: calls queued now wait for its COMMIT...
        let (second, third) = (batcher.enqueue(2), batcher.enqueue(3));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1], "no second batch before the first one's COMMIT");
        // ...and form one batch, which runs while the first COMMIT is still in flight.
        writes.add_permits(1);
        until(|| sizes.lock().unwrap().len() == 2).await;
        assert_eq!(*sizes.lock().unwrap(), vec![1, 2]);
        writes.add_permits(1);
        gate.add_permits(2);
        assert_eq!((first.await.unwrap(), second.await.unwrap(), third.await.unwrap()), (10, 20, 30));
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

    fn command(order: i64, command: Command) -> CommandCall {
        CommandCall { order: OrderId::try_from(order).unwrap(), command, traceparent: None }
    }

    #[test]
    fn each_round_names_an_order_once_and_keeps_the_batch_order() {
        use Command::{Cancel, Pay};
        let calls = [command(1, Pay), command(2, Pay), command(1, Cancel), command(3, Cancel), command(1, Pay)];
        assert_eq!(rounds(&calls), vec![vec![0, 1, 3], vec![2], vec![4]]);
        assert_eq!(rounds(&[]), Vec::<Vec<usize>>::new());
    }

    /// A backend of orders in memory, deciding with [`crate::domain::decide`] as the real ones do; its batches can
    /// be made to fail before their commit.
    #[derive(Debug)]
    struct Memory {
        orders: Mutex<std::collections::HashMap<OrderId, crate::domain::OrderState>>,
        batches: Mutex<Vec<Vec<CommandCall>>>,
        batches_fail: bool,
    }

    impl Memory {
        /// Orders 1–3 awaiting payment, 4 cancelled.
        fn new(batches_fail: bool) -> Self {
            use crate::domain::OrderStatus::{AwaitingPayment, Cancelled};
            let orders = [(1, AwaitingPayment), (2, AwaitingPayment), (3, AwaitingPayment), (4, Cancelled)]
                .into_iter()
                .map(|(id, status)| {
                    let order = crate::domain::OrderState {
                        id: OrderId::try_from(id).unwrap(),
                        user: UserId::try_from(1).unwrap(),
                        status,
                        lines: call(1, None).lines,
                        overdue: false,
                        refund: crate::domain::RefundState::None,
                    };
                    (order.id, order)
                })
                .collect();
            Self { orders: Mutex::new(orders), batches: Mutex::default(), batches_fail }
        }

        fn apply(&self, call: &CommandCall) -> CommandAnswer {
            let mut orders = self.orders.lock().unwrap();
            let order = orders.get_mut(&call.order).ok_or(LomsError::OrderNotFound(call.order))?;
            match crate::domain::decide(order, &call.command)? {
                Some(plan) => {
                    order.status = plan.status;
                    plan.reply
                }
                None => Ok(()),
            }
        }
    }

    #[async_trait]
    impl CommandBatch for Memory {
        async fn try_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError> {
            self.batches.lock().unwrap().push(calls.to_vec());
            if self.batches_fail {
                return Err(LomsError::Internal("the batch failed".into()));
            }
            Ok(calls.iter().map(|call| self.apply(call)).collect())
        }

        async fn command_alone(&self, call: &CommandCall) -> CommandAnswer {
            self.apply(call)
        }
    }

    #[async_trait]
    impl OrderStore for Memory {
        async fn create_order(&self, _: CreateOrder) -> Result<CreateOutcome, LomsError> {
            unreachable!("not a command")
        }
        async fn order(&self, _: OrderId) -> Result<Order, LomsError> {
            unreachable!("not a command")
        }
        async fn history(&self, _: OrderId) -> Result<Vec<RecordedTransition>, LomsError> {
            unreachable!("not a command")
        }
        async fn pay(&self, id: OrderId) -> Result<(), LomsError> {
            self.run(id, Command::Pay).await
        }
        async fn cancel(&self, id: OrderId) -> Result<(), LomsError> {
            self.run(id, Command::Cancel).await
        }
        async fn run(&self, id: OrderId, command: Command) -> Result<(), LomsError> {
            self.apply(&CommandCall { order: id, command, traceparent: None })
        }
        async fn cancel_overdue(&self, _: u32) -> Result<Vec<OrderId>, LomsError> {
            unreachable!("not a command")
        }
        async fn available_stock(&self, _: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
            unreachable!("not a command")
        }
    }

    /// A batch racing pay and cancel on order 1 (pay first), cancel and pay on 2 (cancel first), paying 3 twice,
    /// paying the cancelled 4 and an unknown 9.
    fn racing() -> Vec<CommandCall> {
        use Command::{Cancel, Pay};
        vec![
            command(1, Pay),
            command(2, Cancel),
            command(1, Cancel),
            command(9, Pay),
            command(3, Pay),
            command(2, Pay),
            command(4, Pay),
            command(3, Pay),
            command(1, Pay),
        ]
    }

    /// Each answer, as its variant's name (the errors are not comparable).
    fn kinds(answers: &[CommandAnswer]) -> Vec<String> {
        answers
            .iter()
            .map(|answer| match answer {
                Ok(()) => "ok".into(),
                Err(error) => format!("{error:?}").split(['(', ' ', '{']).next().unwrap().to_owned(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_command_batch_answers_as_its_calls_one_by_one_would() {
        let one_by_one = Memory::new(false);
        let mut expected = Vec::new();
        for call in racing() {
            expected.push(one_by_one.run(call.order, call.command).await);
        }
        let expected = kinds(&expected);
        assert_eq!(
            expected,
            [
                "ok",
                "ok",
                "IllegalTransition",
                "OrderNotFound",
                "ok",
                "IllegalTransition",
                "IllegalTransition",
                "ok",
                "ok"
            ]
        );

        let batched = Memory::new(false);
        assert_eq!(kinds(&batched.command_batch(racing()).await), expected);
        let orders_of = |batch: &Vec<CommandCall>| batch.iter().map(|call| call.order.get()).collect::<Vec<_>>();
        let batches: Vec<Vec<i64>> = batched.batches.lock().unwrap().iter().map(orders_of).collect();
        assert_eq!(batches, vec![vec![1, 2, 9, 3, 4], vec![1, 2, 3], vec![1]], "no transaction sees an order twice");
    }

    #[tokio::test]
    async fn a_failed_command_batch_runs_its_calls_one_by_one() {
        let failing = Memory::new(true);
        let answers = kinds(&failing.command_batch(racing()).await);
        let one_by_one = Memory::new(false);
        let mut expected = Vec::new();
        for call in racing() {
            expected.push(one_by_one.run(call.order, call.command).await);
        }
        assert_eq!(answers, kinds(&expected));
        assert_eq!(failing.batches.lock().unwrap().len(), 3, "each round was tried as a batch first");
    }

    #[test]
    fn a_failed_commit_answers_every_call_unavailable() {
        let answers: Vec<CommandAnswer> = commit_failed(BatchKind::Command, 3, &LomsError::Contention);
        assert_eq!(kinds(&answers), ["Unavailable"; 3]);
    }
}
