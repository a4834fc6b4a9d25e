//! The closed-loop driver: N client tasks, each sending its next iteration as soon as the previous one answered
//! (or, when paced, at its next scheduled time), for a warm-up and then a measured window.
//!
//! Every loop is bounded twice: by time (warm-up + duration, and a per-request timeout on every channel) and by
//! count (`max_iterations` measured iterations across all clients).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status};

use crate::stats::{OpSummary, Recorder};

/// How much load a scenario run puts on the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSpec {
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Time the clients run before anything is recorded (connections, caches and plans warm up).
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// Most measured iterations across all clients; the run ends at whichever bound comes first.
    pub max_iterations: u64,
    /// Iterations per second across all clients, when paced; `None` runs each client as fast as it is answered.
    pub rate: Option<f64>,
}

/// One kind of traffic: how a client connects and what one iteration sends.
pub trait Scenario: Send + Sync + 'static {
    /// A client's state (its channel, its random sku picker, its user id).
    type Client: Send + 'static;

    /// Connects client number `index` (0-based) and prepares whatever it needs before the warm-up starts.
    fn connect(&self, index: usize) -> impl Future<Output = anyhow::Result<Self::Client>> + Send;

    /// Sends one iteration's calls through `probe`, which times and counts them.
    fn iteration(&self, client: &mut Self::Client, probe: &mut Probe) -> impl Future<Output = ()> + Send;
}

/// Times the calls of one client and records them while the measured window is open.
#[derive(Debug, Default)]
pub struct Probe {
    ops: Vec<(&'static str, Recorder)>,
    iterations: Recorder,
    recording: bool,
    /// When the iteration was due (paced runs): its first call is timed from then, so time spent queued behind a
    /// slow previous iteration counts (no coordinated omission).
    scheduled: Option<Instant>,
    iteration_started: Option<Instant>,
    iteration_error: Option<tonic::Code>,
    /// Paced runs: how late the pacer woke clients that were on schedule (the load generator's own error).
    pacer_lateness: Recorder,
}

impl Probe {
    /// Sends one call, timing it and recording its outcome under `op`; returns the response message.
    pub async fn call<T>(
        &mut self,
        op: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        let started = self.scheduled.take().unwrap_or_else(Instant::now);
        let outcome = call.await;
        if self.recording {
            let code = outcome.as_ref().err().map(Status::code);
            self.recorder(op).record(started.elapsed(), code.map_or(Ok(()), Err));
            if self.iteration_error.is_none() {
                self.iteration_error = code;
            }
        }
        outcome.map(Response::into_inner)
    }

    fn recorder(&mut self, op: &'static str) -> &mut Recorder {
        // A scenario has one to three operations: a linear scan beats hashing here.
        let index = match self.ops.iter().position(|(name, _)| *name == op) {
            Some(index) => index,
            None => {
                self.ops.push((op, Recorder::new()));
                self.ops.len() - 1
            }
        };
        &mut self.ops[index].1
    }

    fn begin(&mut self, recording: bool, scheduled: Option<Instant>) {
        self.recording = recording;
        self.scheduled = scheduled;
        self.iteration_started = Some(scheduled.unwrap_or_else(Instant::now));
        self.iteration_error = None;
    }

    fn end(&mut self) {
        if let (true, Some(started)) = (self.recording, self.iteration_started.take()) {
            let outcome = self.iteration_error.take().map_or(Ok(()), Err);
            self.iterations.record(started.elapsed(), outcome);
        }
        self.scheduled = None;
    }

    fn merge(&mut self, other: &Self) {
        self.iterations.merge(&other.iterations);
        self.pacer_lateness.merge(&other.pacer_lateness);
        for (op, recorder) in &other.ops {
            self.recorder(op).merge(recorder);
        }
    }
}

/// The outcome of one scenario at one client count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario name, e.g. `purchase-3`.
    pub scenario: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Iterations per second asked for, when paced.
    pub target_rate: Option<f64>,
    /// Length of the measured window, in seconds.
    pub window_secs: f64,
    /// Whole iterations (every call of one iteration; the first timed from its schedule when paced).
    pub iterations: OpSummary,
    /// Each operation, in the order the scenario first sent them.
    pub ops: Vec<OpResult>,
    /// Resident memory of each watched service right after the run, in KiB.
    #[serde(default)]
    pub rss_kib: BTreeMap<String, u64>,
    /// The write batches LOMS committed during the scenario, by kind of call (with `--loms-metrics-url`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batches: BTreeMap<String, crate::batches::BatchStat>,
    /// Paced runs: how late the load generator woke its clients for their scheduled calls, when they were on
    /// schedule. Timed from the schedule, this lateness counts in the calls' latency although no service caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacer_lateness_ms: Option<crate::stats::Latency>,
}

impl ScenarioResult {
    /// The summary of operation `op`, if the scenario sent it.
    pub fn op(&self, op: &str) -> Option<&OpSummary> {
        self.ops.iter().find(|result| result.op == op).map(|result| &result.summary)
    }

    /// Failed calls across every operation.
    pub fn errors(&self) -> u64 {
        self.ops.iter().map(|result| result.summary.errors).sum()
    }
}

/// One operation's summary within a scenario result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// The RPC (or pgbench transaction) name.
    pub op: String,
    /// Its statistics.
    #[serde(flatten)]
    pub summary: OpSummary,
}

/// Runs `scenario` under `spec` and summarises the measured window. `stop` ends the run early (between
/// iterations); the window then ends when the last client stopped.
pub async fn run<S: Scenario>(
    name: &str,
    scenario: Arc<S>,
    spec: LoadSpec,
    stop: CancellationToken,
) -> anyhow::Result<ScenarioResult> {
    anyhow::ensure!(spec.clients > 0, "a scenario needs at least one client");
    // Connect everyone before the clock starts: connection set-up is not what is measured.
    let clients = futures::future::try_join_all((0..spec.clients).map(|index| scenario.connect(index))).await?;

    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let until = measure_from + spec.duration;
    let claimed = Arc::new(AtomicU64::new(0));
    // Paced clients are staggered evenly over one interval so that they do not fire in bursts.
    let interval = spec.rate.filter(|rate| *rate > 0.0).map(|rate| Duration::from_secs_f64(spec.clients as f64 / rate));

    let mut tasks = Vec::with_capacity(spec.clients);
    for (index, mut client) in clients.into_iter().enumerate() {
        let scenario = scenario.clone();
        let claimed = claimed.clone();
        let stop = stop.clone();
        let offset = interval.map(|every| every.mul_f64(index as f64 / spec.clients as f64));
        tasks.push(tokio::spawn(async move {
            let mut probe = Probe::default();
            let mut next = offset.map(|offset| start + offset);
            while !stop.is_cancelled() {
                // How late the pacer woke a client that was waiting for its time (none for a client already
                // behind its schedule: its delay is the previous call's, and counts in that call's latency).
                let mut woke_late = None;
                let scheduled = match (next, interval) {
                    (Some(due), Some(every)) => {
                        if due >= until {
                            break;
                        }
                        let waits = Instant::now() < due;
                        tokio::select! {
                            () = crate::pacer::until(due) => {}
                            () = stop.cancelled() => break,
                        }
                        woke_late = waits.then(|| due.elapsed());
                        next = Some(due + every);
                        Some(due)
                    }
                    _ => None,
                };
                let begins = scheduled.unwrap_or_else(Instant::now);
                if begins >= until {
                    break;
                }
                let recording = begins >= measure_from;
                if recording && claimed.fetch_add(1, Ordering::Relaxed) >= spec.max_iterations {
                    break;
                }
                if let (true, Some(late)) = (recording, woke_late) {
                    probe.pacer_lateness.record_ok(late);
                }
                probe.begin(recording, scheduled);
                scenario.iteration(&mut client, &mut probe).await;
                probe.end();
            }
            (probe, Instant::now())
        }));
    }

    let mut total = Probe::default();
    let mut last_finish = measure_from;
    for task in tasks {
        let (probe, finished) = task.await?;
        total.merge(&probe);
        last_finish = last_finish.max(finished);
    }
    let window = last_finish.min(until).saturating_duration_since(measure_from);
    Ok(ScenarioResult {
        scenario: name.to_owned(),
        clients: spec.clients,
        target_rate: spec.rate,
        window_secs: window.as_secs_f64(),
        iterations: total.iterations.summary(window),
        ops: total
            .ops
            .iter()
            .map(|(op, recorder)| OpResult { op: (*op).to_owned(), summary: recorder.summary(window) })
            .collect(),
        rss_kib: BTreeMap::new(),
        batches: BTreeMap::new(),
        pacer_lateness_ms: (total.pacer_lateness.ok() > 0).then(|| total.pacer_lateness.summary(window).latency_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scenario that answers after a fixed delay, failing every `fail_every`-th call.
    #[derive(Debug)]
    struct Sleeper {
        delay: Duration,
        fail_every: u64,
    }

    impl Scenario for Sleeper {
        /// Calls until the next failure.
        type Client = u64;

        async fn connect(&self, _index: usize) -> anyhow::Result<u64> {
            Ok(self.fail_every)
        }

        async fn iteration(&self, until_failure: &mut u64, probe: &mut Probe) {
            let fail = self.fail_every > 0 && *until_failure == 1;
            *until_failure = if fail { self.fail_every } else { until_failure.saturating_sub(1) };
            let delay = self.delay;
            let _ = probe
                .call("Sleep", async move {
                    tokio::time::sleep(delay).await;
                    if fail { Err(Status::unavailable("down")) } else { Ok(Response::new(())) }
                })
                .await;
        }
    }

    fn spec(clients: usize, duration: Duration) -> LoadSpec {
        LoadSpec { clients, warmup: Duration::ZERO, duration, max_iterations: u64::MAX, rate: None }
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_clients_send_one_call_per_delay_each() {
        let scenario = Arc::new(Sleeper { delay: Duration::from_millis(10), fail_every: 0 });

        let result = run("sleep", scenario, spec(4, Duration::from_secs(1)), CancellationToken::new()).await.unwrap();

        // 4 clients × 100 calls of 10 ms in a 1 s window (the paused clock makes this exact).
        let op = result.op("Sleep").unwrap();
        assert_eq!(op.ok, 400);
        assert!((op.throughput - 400.0).abs() < 1.0, "throughput {}", op.throughput);
        assert_eq!(result.iterations.ok, 400);
        assert_eq!(result.pacer_lateness_ms, None, "nothing is scheduled in a closed loop");
    }

    #[tokio::test(start_paused = true)]
    async fn the_warm_up_is_not_recorded() {
        let scenario = Arc::new(Sleeper { delay: Duration::from_millis(10), fail_every: 0 });
        let mut spec = spec(1, Duration::from_millis(500));
        spec.warmup = Duration::from_millis(500);

        let result = run("sleep", scenario, spec, CancellationToken::new()).await.unwrap();

        assert_eq!(result.op("Sleep").unwrap().ok, 50);
        assert!((result.window_secs - 0.5).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_iteration_bound_ends_the_run_and_shortens_the_window() {
        let scenario = Arc::new(Sleeper { delay: Duration::from_millis(10), fail_every: 0 });
        let mut spec = spec(2, Duration::from_secs(60));
        spec.max_iterations = 20;

        let result = run("sleep", scenario, spec, CancellationToken::new()).await.unwrap();

        assert_eq!(result.iterations.ok, 20);
        assert!((result.window_secs - 0.1).abs() < 0.011, "window {}", result.window_secs);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_counted_by_code_per_op_and_per_iteration() {
        let scenario = Arc::new(Sleeper { delay: Duration::from_millis(10), fail_every: 4 });

        let result = run("sleep", scenario, spec(1, Duration::from_secs(1)), CancellationToken::new()).await.unwrap();

        let op = result.op("Sleep").unwrap();
        assert_eq!(op.ok, 75);
        assert_eq!(op.errors_by_code.get("UNAVAILABLE"), Some(&25));
        assert_eq!(result.iterations.errors, 25);
        assert_eq!(result.errors(), 25);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_run_sends_the_asked_rate_and_times_calls_from_their_schedule() {
        let scenario = Arc::new(Sleeper { delay: Duration::from_millis(2), fail_every: 0 });
        let mut spec = spec(2, Duration::from_secs(2));
        spec.rate = Some(100.0);

        let result = run("sleep", scenario, spec, CancellationToken::new()).await.unwrap();

        let op = result.op("Sleep").unwrap();
        assert!((op.throughput - 100.0).abs() <= 1.0, "throughput {}", op.throughput);
        assert!(op.latency_ms.p50 >= 2.0 && op.latency_ms.p50 < 2.1, "p50 {}", op.latency_ms.p50);
        // Every call found its client on schedule, and the paused clock wakes it exactly on time.
        let late = result.pacer_lateness_ms.expect("a paced run reports how late it sent");
        assert!(late.max < 0.01, "sent late by {} ms", late.max);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_run_that_falls_behind_counts_the_queueing_delay() {
        // 10 ms calls asked at 200/s from one client: each call waits longer than the last.
        let scenario = Arc::new(Sleeper { delay: Duration::from_millis(10), fail_every: 0 });
        let mut spec = spec(1, Duration::from_secs(1));
        spec.rate = Some(200.0);

        let result = run("sleep", scenario, spec, CancellationToken::new()).await.unwrap();

        let op = result.op("Sleep").unwrap();
        assert!(op.latency_ms.max > 400.0, "max {}", op.latency_ms.max);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_the_clients_and_ends_the_window() {
        let scenario = Arc::new(Sleeper { delay: Duration::from_millis(10), fail_every: 0 });
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.cancel();
        });

        let result = run("sleep", scenario, spec(3, Duration::from_secs(60)), stop).await.unwrap();

        assert!((result.window_secs - 0.3).abs() < 0.011, "window {}", result.window_secs);
        assert_eq!(result.op("Sleep").unwrap().ok, 90);
    }
}
