//! The same-run database baseline: PostgreSQL's own `pgbench` (TPC-B-like, prepared statements) on the same
//! server with the same client count, its latencies read from its per-transaction log into the same kind of
//! histogram as the gRPC scenarios.
//!
//! The scratch database must have been initialised (`pgbench -i -s <scale>`) beforehand; `scripts/bench.sh` does it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tokio::process::Command;

use crate::{
    runner::{OpResult, ScenarioResult},
    stats::{OpSummary, Recorder},
};

/// The name pgbench's transactions are reported under.
pub const OP: &str = "TPC-B transaction";

/// The baseline run as fast as pgbench goes.
pub const PEAK: &str = "pgbench";

/// The baseline of the paced scenarios' latency: pgbench at 80 % of the rate [`PEAK`] measured, with each
/// transaction timed from its scheduled start (pgbench's `--rate`), as a paced CreateOrder is.
pub const PACED: &str = "pgbench@80%";

/// The most clients (connections) pgbench is run with.
pub const MAX_CLIENTS: usize = 64;

/// How to run pgbench.
#[derive(Debug, Clone)]
pub struct Pgbench {
    /// The `pgbench` executable.
    pub binary: PathBuf,
    /// Connection URI of the initialised scratch database.
    pub database_url: String,
    /// Where the per-transaction logs go (a fresh subfolder per run).
    pub log_dir: PathBuf,
}

/// What pgbench printed at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    /// Transactions per second, without the initial connection time.
    pub tps: f64,
    /// Transactions that completed.
    pub processed: u64,
    /// Transactions that failed (serialization or deadlock failures, PostgreSQL 15's pgbench).
    pub failed: u64,
}

impl Pgbench {
    /// Runs `clients` clients (one thread each) for a warm-up and then `duration`, both in whole seconds (pgbench's
    /// unit), and summarises the measured run as `scenario`: as fast as pgbench goes, or at `rate` transactions a
    /// second in all (warm-up included). A paced transaction's latency counts from its scheduled start, so time
    /// spent behind schedule counts. pgbench schedules each client's transactions as a Poisson process, burstier
    /// than the load generator's evenly spaced calls: if anything, its tail is the harder one to keep short.
    /// At most [`MAX_CLIENTS`]: each pgbench client is a server connection, and PostgreSQL's default
    /// `max_connections` (100) must leave room for the service under test.
    pub async fn run(
        &self,
        scenario: &str,
        clients: usize,
        warmup: Duration,
        duration: Duration,
        rate: Option<f64>,
    ) -> anyhow::Result<ScenarioResult> {
        if clients > MAX_CLIENTS {
            tracing::warn!(
                asked = clients,
                run = MAX_CLIENTS,
                "pgbench runs with fewer clients than asked (max_connections)"
            );
        }
        let clients = clients.min(MAX_CLIENTS);
        let paced = if rate.is_some() { "-paced" } else { "" };
        let logs = self.log_dir.join(format!("c{clients}{paced}-{}", std::process::id()));
        if logs.exists() {
            std::fs::remove_dir_all(&logs).with_context(|| format!("clear {}", logs.display()))?;
        }
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let window = Duration::from_secs(whole_seconds(duration));
        let summary = match rate {
            None => {
                if !warmup.is_zero() {
                    self.invoke(clients, whole_seconds(warmup), None, None).await.context("pgbench warm-up")?;
                }
                let totals = self.invoke(clients, window.as_secs(), None, Some(&logs)).await?;
                let mut summary = read_logs(&logs, Duration::ZERO)?.summary(window);
                // pgbench's own TPS leaves out connection time, which the log-based count cannot.
                summary.throughput = totals.tps;
                summary.errors = totals.failed;
                summary
            }
            Some(rate) => {
                // One run, its warm-up left out of the log by when each transaction ended: a paced schedule starts
                // as pgbench starts, so a run of its own would count pgbench's start-up (its vacuum, connecting
                // every client) as lag of the first transactions.
                let warmup = Duration::from_secs(if warmup.is_zero() { 0 } else { whole_seconds(warmup) });
                self.invoke(clients, (warmup + window).as_secs(), Some(rate), Some(&logs)).await?;
                read_logs(&logs, warmup)?.summary(window)
            }
        };
        let summary = OpSummary { errors_by_code: failed_transactions(summary.errors), ..summary };
        Ok(ScenarioResult {
            scenario: scenario.into(),
            clients,
            target_rate: rate,
            window_secs: window.as_secs_f64(),
            iterations: summary.clone(),
            ops: vec![OpResult { op: OP.into(), summary }],
            rss_kib: BTreeMap::new(),
            batches: BTreeMap::new(),
            pacer_lateness_ms: None,
        })
    }

    async fn invoke(
        &self,
        clients: usize,
        seconds: u64,
        rate: Option<f64>,
        logs: Option<&Path>,
    ) -> anyhow::Result<Totals> {
        let mut command = Command::new(&self.binary);
        // pgbench's own pre-run vacuum of its tables stays on: it is the standard baseline, and it keeps
        // pgbench's tables as fresh as the `VACUUM (ANALYZE)` the load generator gives LOMS's.
        command
            .args(["--protocol", "prepared"])
            .args(["--client", &clients.to_string()])
            .args(["--jobs", &clients.to_string()])
            .args(["--time", &seconds.to_string()]);
        if let Some(rate) = rate {
            command.args(["--rate", &format!("{rate:.1}")]);
        }
        if let Some(logs) = logs {
            command.arg("--log").arg(format!("--log-prefix={}", logs.join("tx").display()));
        }
        command.arg(&self.database_url).kill_on_drop(true);
        let output = command.output().await.with_context(|| format!("run {}", self.binary.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        parse_totals(&stdout).with_context(|| format!("unexpected pgbench output:\n{stdout}"))
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

/// Reads pgbench's end-of-run report.
pub fn parse_totals(stdout: &str) -> anyhow::Result<Totals> {
    let mut tps = None;
    let mut processed = None;
    let mut failed = 0;
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("tps = ") {
            // pgbench 13+ prints one tps line, "without initial connection time"; older ones printed two.
            if tps.is_none() || line.contains("without") {
                tps = Some(first_number(rest)?);
            }
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            processed = Some(first_number(rest)? as u64);
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            failed = first_number(rest)? as u64;
        }
    }
    Ok(Totals {
        tps: tps.context("no `tps = ` line")?,
        processed: processed.context("no `number of transactions actually processed` line")?,
        failed,
    })
}

fn first_number(text: &str) -> anyhow::Result<f64> {
    let token = text.split_whitespace().next().context("no number")?;
    // "12345/12345" when pgbench ran a fixed number of transactions.
    let token = token.split('/').next().unwrap_or(token);
    token.parse().with_context(|| format!("{token:?} is not a number"))
}

/// The errors of a run by code: pgbench's failed transactions (serialization or deadlock failures).
fn failed_transactions(failed: u64) -> BTreeMap<String, u64> {
    if failed == 0 { BTreeMap::new() } else { BTreeMap::from([("FAILED_TRANSACTION".to_owned(), failed)]) }
}

/// Reads every per-transaction log file in `dir` (one per pgbench thread) into a histogram, leaving out what
/// ended in the first `skip` of the run (from the first transaction that ended).
fn read_logs(dir: &Path, skip: Duration) -> anyhow::Result<Recorder> {
    let mut logged = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        logged.extend(parse_log(&text));
    }
    Ok(record(&logged, skip))
}

/// One transaction of a pgbench log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Logged {
    /// When it ended.
    pub ended: SystemTime,
    /// Its latency; `None` when it failed or was skipped.
    pub latency: Option<Duration>,
}

/// The lines of a pgbench transaction log: `client_id transaction_no time script_no time_epoch time_us
/// [schedule_lag]`, where `time` is the latency in microseconds (from the scheduled start under `--rate`, so the
/// schedule lag is in it), or `failed` / `skipped` for a transaction that did not complete, and `time_epoch
/// time_us` is when it ended.
pub fn parse_log(text: &str) -> impl Iterator<Item = Logged> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let secs = fields.get(4)?.parse::<u64>().ok()?;
        let micros = fields.get(5)?.parse::<u64>().ok()?;
        Some(Logged {
            ended: SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
            latency: fields.get(2)?.parse::<u64>().ok().map(Duration::from_micros),
        })
    })
}

/// A histogram of the transactions that ended `skip` or later after the first one did: latencies of the completed
/// ones, an error for each failed one.
pub fn record(logged: &[Logged], skip: Duration) -> Recorder {
    let mut recorder = Recorder::new();
    let Some(first) = logged.iter().map(|t| t.ended).min() else { return recorder };
    for transaction in logged.iter().filter(|t| t.ended >= first + skip) {
        match transaction.latency {
            Some(latency) => recorder.record_ok(latency),
            None => recorder.record_error(tonic::Code::Aborted),
        }
    }
    recorder
}

/// Summary of pgbench's transactions, for ratios.
pub fn summary(result: &ScenarioResult) -> Option<&OpSummary> {
    result.op(OP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PGBENCH_15_OUTPUT: &str = "\
pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 8
query mode: prepared
number of clients: 8
number of threads: 8
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 23456
number of failed transactions: 3 (0.013%)
latency average = 3.409 ms
initial connection time = 12.345 ms
tps = 2345.678901 (without initial connection time)
";

    #[test]
    fn totals_are_read_from_pgbench_15_output() {
        let totals = parse_totals(PGBENCH_15_OUTPUT).unwrap();

        assert_eq!(totals, Totals { tps: 2345.678901, processed: 23456, failed: 3 });
    }

    #[test]
    fn output_without_a_tps_line_is_an_error() {
        assert!(parse_totals("pgbench: error: connection to server failed\n").is_err());
    }

    #[test]
    fn transaction_logs_give_latencies_and_count_failures() {
        let log = "0 1 1500 0 1700000000 100\n0 2 2500 0 1700000000 200\n1 1 failed 0 1700000000 300\n\n";

        let summary = record(&parse_log(log).collect::<Vec<_>>(), Duration::ZERO).summary(Duration::from_secs(1));

        assert_eq!(summary.ok, 2);
        assert_eq!(summary.errors, 1);
        assert!((summary.latency_ms.max - 2.5).abs() < 0.01);
    }

    #[test]
    fn transactions_that_ended_in_the_warm_up_are_left_out() {
        // A paced run's log has the schedule lag last. The run's first transaction ended at 1700000000.5; with a
        // one-second warm-up the 90 ms one, which ended a microsecond before 1700000001.5, is not counted.
        let log = "0 1 3000 0 1700000000 500000 100\n\
                   0 2 90000 0 1700000001 499999 85000\n\
                   0 3 1500 0 1700000001 500000 200\n\
                   1 1 2500 0 1700000002 5 300\n";

        let summary =
            record(&parse_log(log).collect::<Vec<_>>(), Duration::from_secs(1)).summary(Duration::from_secs(1));

        assert_eq!(summary.ok, 2);
        assert!((summary.latency_ms.max - 2.5).abs() < 0.01, "the warm-up's 90 ms transaction is not counted");
    }
}
