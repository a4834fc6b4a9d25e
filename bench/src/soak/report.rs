//! The soak's table: what it held, what it broke, and what it counted (every count must be zero).

use std::{fmt::Write as _, time::Duration};

use super::{SoakArgs, audit::Counts, faults::FaultLog, load::LoadResult, receiver::Received};
use crate::topology::Layout;

/// One counted guarantee.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is counted.
    pub name: &'static str,
    /// The count (zero passes).
    pub count: u64,
}

/// The outcome of a soak run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The table, in Markdown (it reads as a table in a terminal, and pastes into docs/reliability.md).
    pub markdown: String,
    /// Every guarantee counted.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every count is zero.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.count == 0)
    }

    /// Builds the report of one run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        args: &SoakArgs,
        layout: &Layout,
        load: &LoadResult,
        faults: &FaultLog,
        counts: &Counts,
        received: &Received,
        settled: bool,
        settle: Duration,
    ) -> Self {
        let to_u64 = |n: i64| u64::try_from(n.max(0)).unwrap_or(0);
        let checks = vec![
            Check { name: "units oversold", count: to_u64(counts.oversold_units) },
            Check { name: "stock rows whose on hand ≠ seeded − paid", count: to_u64(counts.stock_rows_off) },
            Check {
                name: "units left reserved by no order awaiting payment",
                count: to_u64(counts.leftover_reserved_units),
            },
            Check { name: "orders not finished after the settle wait", count: to_u64(counts.unfinished_orders) },
            Check { name: "orders not in the status the client was told", count: to_u64(counts.wrong_final_status) },
            Check { name: "status changes without their outbox event", count: to_u64(counts.history_without_event) },
            Check { name: "status changes of no order", count: to_u64(counts.history_of_no_order) },
            Check { name: "committed changes never published", count: to_u64(counts.unsent) },
            Check { name: "committed changes never notified", count: counts.never_notified as u64 },
            Check { name: "committed changes dead-lettered (not notified)", count: counts.dead_lettered as u64 },
            Check { name: "notifications received twice", count: counts.received_twice as u64 },
            Check { name: "notifications of no committed change", count: counts.received_unknown as u64 },
            Check { name: "responses INTERNAL or UNKNOWN", count: load.internal_or_unknown },
            Check { name: "responses with another unexpected code", count: load.unexpected },
            Check { name: "orders given up after every retry", count: load.gave_up },
        ];

        let mut md = String::new();
        let _ = writeln!(
            md,
            "miniZON soak: {} orders from {} clients on {} LOMS replicas (one PostgreSQL database), Checkout, \
             Notifications → webhook; payment timeout {}\n",
            args.orders, args.clients, layout.loms_replicas, args.payment_timeout
        );
        let _ = writeln!(
            md,
            "faults: {} LOMS SIGKILLs, {} Notifications SIGKILLs (each down {}, then restarted), broker SIGSTOP {}, \
             webhook 503 for {}\n",
            faults.loms_kills,
            faults.notifications_kills,
            humantime::format_duration(args.down_for),
            humantime::format_duration(faults.broker_paused),
            humantime::format_duration(faults.receiver_outage),
        );
        let timeline: Vec<String> =
            faults.events.iter().map(|event| format!("{:.0}s {}", event.at.as_secs_f64(), event.what)).collect();
        if !timeline.is_empty() {
            let _ = writeln!(md, "timeline: {}\n", timeline.join("; "));
        }
        md.push_str("| guarantee | count |\n|---|---:|\n");
        for check in &checks {
            let _ = writeln!(md, "| {} | {} |", check.name, check.count);
        }

        let all = load.all_calls().summary(load.elapsed);
        let create = load.ops.get("CreateOrder").map(|r| r.summary(load.elapsed));
        md.push_str("\n| load held | |\n|---|---:|\n");
        let _ = writeln!(
            md,
            "| orders/s (asked: {:.0}) | {:.1} |",
            args.paced_rate().unwrap_or(0.0),
            load.orders_per_sec()
        );
        let _ = writeln!(md, "| p99 of all answered calls, ms | {:.1} |", all.latency_ms.p99);
        if let Some(create) = create {
            let _ = writeln!(
                md,
                "| CreateOrder p50 / p99 / max, ms | {:.1} / {:.1} / {:.1} |",
                create.latency_ms.p50, create.latency_ms.p99, create.latency_ms.max
            );
        }
        let _ = writeln!(md, "| calls answered | {} |", all.ok);
        let refused: u64 = load.refused.values().sum();
        let _ = writeln!(md, "| refused by contract (FAILED_PRECONDITION: stock short, order finished) | {refused} |");
        let retried: Vec<String> = load.retried.iter().map(|(code, n)| format!("{code} {n}")).collect();
        let retried = if retried.is_empty() { "none".to_owned() } else { retried.join(", ") };
        let _ = writeln!(md, "| transient failures retried | {retried} |");
        let statuses: Vec<String> =
            counts.by_status.iter().map(|(status, n)| format!("{} {n}", status_name(*status))).collect();
        let _ = writeln!(md, "| orders by final status | {} |", statuses.join(", "));
        let _ = writeln!(
            md,
            "| events committed / received by the webhook / 503s answered | {} / {} / {} |",
            counts.events,
            received.by_event.len(),
            received.refused
        );
        let _ = writeln!(
            md,
            "| load / settle time | {:.0} s / {:.0} s{} |",
            load.elapsed.as_secs_f64(),
            settle.as_secs_f64(),
            if settled { "" } else { " (timed out)" }
        );
        if !load.examples.is_empty() {
            md.push_str("\nexamples of unexpected answers:\n");
            for example in &load.examples {
                let _ = writeln!(md, "* {example}");
            }
        }
        let passed = checks.iter().all(|check| check.count == 0);
        let _ = writeln!(md, "\n{}", if passed { "PASS: every count is zero" } else { "FAIL: a count is not zero" });
        let _ = writeln!(md, "logs: {}", layout.run_dir.display());
        Self { markdown: md, checks }
    }
}

fn status_name(status: i16) -> &'static str {
    match status {
        0 => "new",
        1 => "awaiting payment",
        2 => "failed",
        3 => "payed",
        4 => "cancelled",
        _ => "other",
    }
}
