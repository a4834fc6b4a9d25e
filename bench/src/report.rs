//! The benchmark report: every result, the ratios to the same-run baselines, the targets of the quality bars
//! (held here, never in timed tests), as JSON for machines and as Markdown for the docs.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{pgbench, rss::PeakMemory, runner::ScenarioResult, stats::OpSummary, sweep::SweepResult};

/// One complete benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// A label for the run (backend, build).
    pub label: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// Settings that shape the numbers.
    pub settings: Settings,
    /// Results at each client count.
    pub runs: Vec<ClientRun>,
    /// The sweep at scale, when it ran.
    pub sweep: Option<SweepResult>,
    /// Each watched service's peak resident memory over the whole run.
    pub memory: Vec<PeakMemory>,
    /// The quality-bar targets, measured.
    pub targets: Vec<Target>,
}

/// The machine the numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the load generator.
    pub cpus: usize,
    /// Total memory, in GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// PostgreSQL's `version()`, when a database was reachable.
    pub postgres: Option<String>,
}

/// Settings of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Unrecorded seconds before each measured window.
    pub warmup_secs: f64,
    /// Seconds of each measured window.
    pub duration_secs: f64,
    /// HTTP/2 connections the clients share (0: one per client).
    pub connections: usize,
    /// Skus ordered from.
    pub skus: u32,
    /// Warehouses per sku.
    pub warehouses: u32,
}

/// Everything measured at one client count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRun {
    /// Concurrent clients.
    pub clients: usize,
    /// The scenarios, in the order they ran.
    pub results: Vec<ScenarioResult>,
    /// Throughput ratios to the same-run baselines.
    pub ratios: Vec<Ratio>,
}

/// A scenario's throughput as a fraction of a same-run baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// The scenario.
    pub scenario: String,
    /// Its operation compared.
    pub op: String,
    /// The baseline scenario (`pgbench`, `health`, `checkout-health`).
    pub baseline: String,
    /// Operation throughput ÷ baseline throughput.
    pub ratio: f64,
}

/// One quality-bar target and how the run did against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is measured.
    pub target: String,
    /// At which client count, when it depends on one.
    pub clients: Option<usize>,
    /// The measured value, with its unit.
    pub measured: String,
    /// The goal.
    pub goal: String,
    /// Whether the goal was met.
    pub met: bool,
}

/// Which baseline each scenario's throughput is compared with, and on which operation.
fn baseline_of(scenario: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match scenario {
        "create-3" | "create-3-keyed" | "purchase-1" | "purchase-3" | "purchase-10" | "purchase-100" | "churn-3" => {
            Some(("CreateOrder", pgbench::PEAK, pgbench::OP))
        }
        "stocks" => Some(("Stocks", "health", "Health/Check")),
        "listcart" => Some(("ListCart", "checkout-health", "Health/Check")),
        _ => None,
    }
}

/// The ratios of every scenario that has its baseline in the same run. Paced runs are left out: their
/// throughput is what was asked, not what the system can do.
pub fn ratios(results: &[ScenarioResult]) -> Vec<Ratio> {
    let mut ratios = Vec::new();
    for result in results.iter().filter(|result| result.target_rate.is_none()) {
        let Some((op, baseline, baseline_op)) = baseline_of(&result.scenario) else { continue };
        let Some(base) = results.iter().find(|r| r.scenario == baseline).and_then(|r| r.op(baseline_op)) else {
            continue;
        };
        let Some(summary) = result.op(op) else { continue };
        if base.throughput > 0.0 {
            ratios.push(Ratio {
                scenario: result.scenario.clone(),
                op: op.to_owned(),
                baseline: baseline.to_owned(),
                ratio: summary.throughput / base.throughput,
            });
        }
    }
    ratios
}

/// Measures the quality-bar targets the run has data for.
pub fn targets(runs: &[ClientRun], sweep: Option<&SweepResult>, memory: &[PeakMemory]) -> Vec<Target> {
    let mut targets = Vec::new();
    for run in runs {
        let clients = Some(run.clients);
        // CreateOrder ≥ pgbench (issue 13's group commit), purchase-3 ≥ 60 % of it at 32 clients, Stocks ≥ half of
        // a no-op call.
        let goals = [("create-3", "pgbench", 1.0), ("purchase-3", "pgbench", 0.6), ("stocks", "health", 0.5)];
        for (scenario, baseline, goal) in goals {
            if scenario == "purchase-3" && run.clients != 32 {
                continue;
            }
            if let Some(ratio) = run.ratios.iter().find(|r| r.scenario == scenario && r.baseline == baseline) {
                targets.push(Target {
                    target: format!("{} {scenario} ÷ {baseline} throughput", ratio.op),
                    clients,
                    measured: format!("{:.0} %", ratio.ratio * 100.0),
                    goal: format!("≥ {:.0} %", goal * 100.0),
                    met: ratio.ratio >= goal,
                });
            }
        }
        let paced = run.results.iter().find(|r| r.scenario == "create-3@80%");
        if let Some((paced, create)) = paced.and_then(|paced| Some((paced, paced.op("CreateOrder")?))) {
            // The database's own tail at 80 % of its own peak, in the same run: what the machine gives the
            // simplest paced write, for reading the target against.
            let baseline = run.results.iter().find(|r| r.scenario == pgbench::PACED).and_then(pgbench::summary);
            let measured = match baseline {
                Some(base) => {
                    format!("{:.1} ms ({} {:.1} ms)", create.latency_ms.p99, pgbench::PACED, base.latency_ms.p99)
                }
                None => format!("{:.1} ms", create.latency_ms.p99),
            };
            targets.push(Target {
                target: format!("CreateOrder p99 at 80 % of peak ({:.0}/s)", paced.target_rate.unwrap_or(0.0)),
                clients,
                measured,
                goal: "< 25 ms".into(),
                met: create.latency_ms.p99 < 25.0 && create.errors == 0,
            });
        }
        if let Some(growth) = cost_growth(&run.results) {
            targets.push(Target {
                target: "cost per order, 100 items ÷ 1 item (mean purchase latency)".into(),
                clients,
                measured: format!("{growth:.1}×"),
                goal: "≤ 100× (linear)".into(),
                met: growth <= 100.0,
            });
        }
    }
    for peak in memory {
        targets.push(Target {
            target: format!("{} peak RSS", peak.service),
            clients: None,
            measured: format!("{:.1} MiB", peak.peak_kib as f64 / 1024.0),
            goal: "< 100 MiB".into(),
            met: peak.peak_kib < 100 * 1024,
        });
    }
    if let Some(sweep) = sweep {
        targets.push(Target {
            target: format!("{} overdue orders swept", sweep.orders_due),
            clients: None,
            measured: format!("{:.1} s", sweep.sweep_secs),
            goal: "< 60 s".into(),
            met: sweep.completed && sweep.sweep_secs < 60.0,
        });
        let p99 = worst_p99(&sweep.light_during);
        targets.push(Target {
            target: "request p99 of the light load during the sweep".into(),
            clients: Some(sweep.light_during.clients),
            measured: format!("{p99:.1} ms"),
            goal: "< 100 ms".into(),
            met: p99 < 100.0 && sweep.light_during.errors() == 0,
        });
    }
    targets
}

/// Mean purchase latency with 100 items over that with 1 item: how the cost of an order grows with its size.
fn cost_growth(results: &[ScenarioResult]) -> Option<f64> {
    let mean = |name: &str| {
        results.iter().find(|r| r.scenario == name).map(|r| r.iterations.latency_ms.mean).filter(|mean| *mean > 0.0)
    };
    Some(mean("purchase-100")? / mean("purchase-1")?)
}

/// The highest p99 among a scenario's operations.
fn worst_p99(result: &ScenarioResult) -> f64 {
    result.ops.iter().map(|op| op.summary.latency_ms.p99).fold(0.0, f64::max)
}

fn errors_cell(summary: &OpSummary) -> String {
    if summary.errors == 0 {
        return "0".into();
    }
    let codes: Vec<String> = summary.errors_by_code.iter().map(|(code, n)| format!("{code} {n}")).collect();
    format!("{} ({})", summary.errors, codes.join(", "))
}

fn scenario_label(result: &ScenarioResult) -> String {
    match (result.target_rate, result.pacer_lateness_ms) {
        (Some(rate), Some(late)) => {
            format!("{} (paced {rate:.0}/s; sent late by {:.2} ms at p99)", result.scenario, late.p99)
        }
        (Some(rate), None) => format!("{} (paced {rate:.0}/s)", result.scenario),
        (None, _) => result.scenario.clone(),
    }
}

/// Rows of the scenario table: one per operation.
fn scenario_rows(out: &mut String, results: &[ScenarioResult], ratios: &[Ratio]) {
    out.push_str(
        "| scenario | operation | ok/s | p50 ms | p90 ms | p99 ms | max ms | errors | vs same-run baseline |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---|---|\n");
    for result in results {
        for op in &result.ops {
            let s = &op.summary;
            let ratio = ratios
                .iter()
                .find(|r| r.scenario == result.scenario && r.op == op.op)
                // Small ratios keep a significant digit: 0.004× is not 0.00×.
                .map(|r| {
                    if r.ratio < 0.1 {
                        format!("{:.3}× {}", r.ratio, r.baseline)
                    } else {
                        format!("{:.2}× {}", r.ratio, r.baseline)
                    }
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} |",
                scenario_label(result),
                op.op,
                s.throughput,
                s.latency_ms.p50,
                s.latency_ms.p90,
                s.latency_ms.p99,
                s.latency_ms.max,
                errors_cell(s),
                ratio
            );
        }
    }
}

/// The write batches LOMS committed in each scenario (with `--loms-metrics-url`): calls per commit, by kind.
fn batch_lines(out: &mut String, results: &[ScenarioResult]) {
    let lines: Vec<String> = results
        .iter()
        .filter(|result| !result.batches.is_empty())
        .map(|result| {
            let kinds: Vec<String> = result
                .batches
                .iter()
                .map(|(kind, stat)| format!("{kind} {:.1} calls/commit ({} commits)", stat.mean(), stat.batches))
                .collect();
            format!("{}: {}", scenario_label(result), kinds.join(", "))
        })
        .collect();
    if !lines.is_empty() {
        let _ = writeln!(out, "Write batches: {}.\n", lines.join("; "));
    }
}

/// CreateOrder (create-3) across the client counts of the run: where batching starts to pay, where the machine
/// saturates.
fn scaling_rows(out: &mut String, runs: &[ClientRun]) {
    let rows: Vec<_> = runs
        .iter()
        .filter_map(|run| {
            let create = run.results.iter().find(|r| r.scenario == "create-3")?;
            let summary = create.op("CreateOrder")?;
            let ratio = run.ratios.iter().find(|r| r.scenario == "create-3").map(|r| r.ratio);
            let pgbench = run.results.iter().find(|r| r.scenario == "pgbench").and_then(|r| r.op(pgbench::OP));
            Some((run.clients, summary, pgbench.map(|p| p.throughput), ratio, create.batches.get("create").copied()))
        })
        .collect();
    if rows.len() < 2 {
        return;
    }
    out.push_str("### CreateOrder by clients (create-3)\n\n");
    out.push_str("| clients | CreateOrder ok/s | p99 ms | pgbench TPS | ÷ pgbench | calls per commit |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|\n");
    for (clients, summary, pgbench, ratio, batches) in rows {
        let _ = writeln!(
            out,
            "| {clients} | {:.0} | {:.2} | {} | {} | {} |",
            summary.throughput,
            summary.latency_ms.p99,
            pgbench.map(|tps| format!("{tps:.0}")).unwrap_or_default(),
            ratio.map(|r| format!("{:.2}×", r)).unwrap_or_default(),
            batches.map(|b| format!("{:.1}", b.mean())).unwrap_or_default(),
        );
    }
    out.push('\n');
}

impl Report {
    /// The report as Markdown: the tables docs/benchmarks.md quotes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "## {} — {}\n", self.label, self.started_at);
        let _ = writeln!(
            out,
            "Machine: {} CPUs, {:.0} GiB, Linux {}{}. Warm-up {:.1} s, measured window {:.1} s per scenario, {}, {} skus × {} warehouses.\n",
            m.cpus,
            m.memory_gib,
            m.kernel,
            m.postgres.as_deref().map(|v| format!(", {}", v.split(" on ").next().unwrap_or(v))).unwrap_or_default(),
            self.settings.warmup_secs,
            self.settings.duration_secs,
            if self.settings.connections == 0 {
                "one HTTP/2 connection per client".to_owned()
            } else {
                format!("{} HTTP/2 connections shared", self.settings.connections)
            },
            self.settings.skus,
            self.settings.warehouses,
        );
        for run in &self.runs {
            let _ = writeln!(out, "### {} clients\n", run.clients);
            scenario_rows(&mut out, &run.results, &run.ratios);
            out.push('\n');
            batch_lines(&mut out, &run.results);
        }
        scaling_rows(&mut out, &self.runs);
        if !self.targets.is_empty() {
            out.push_str("### Targets\n\n| target | clients | measured | goal | met |\n|---|---:|---:|---|---|\n");
            for t in &self.targets {
                let clients = t.clients.map(|c| c.to_string()).unwrap_or_else(|| "—".into());
                let met = if t.met { "yes" } else { "**no**" };
                let _ = writeln!(out, "| {} | {clients} | {} | {} | {met} |", t.target, t.measured, t.goal);
            }
            out.push('\n');
        }
        if let Some(sweep) = &self.sweep {
            let _ = writeln!(out, "### Sweep at scale\n");
            let _ = writeln!(
                out,
                "{} unpaid orders of {} item(s), created in {:.1} s ({:.0} CreateOrder/s, {} errors), made due at once \
                 ({:.2} s for the statement); {} in {:.1} s ({:.0} orders/s){}.\n",
                sweep.orders_due,
                sweep.items,
                sweep.create.window_secs,
                sweep.create.iterations.throughput,
                sweep.create.errors(),
                sweep.make_due_secs,
                if sweep.completed { "all cancelled" } else { "NOT all cancelled" },
                sweep.sweep_secs,
                sweep.cancelled_per_sec,
                if sweep.completed { String::new() } else { format!(", {} left", sweep.left_awaiting) },
            );
            out.push_str("Light load (purchase-3, paced), before and during the sweep:\n\n");
            scenario_rows(&mut out, &[sweep.light_before.clone(), sweep.light_during.clone()], &[]);
            out.push('\n');
        }
        if !self.memory.is_empty() {
            out.push_str(
                "### Memory\n\n| service | peak RSS (VmHWM) | RSS after each scenario, max |\n|---|---:|---:|\n",
            );
            for peak in &self.memory {
                let after = self
                    .runs
                    .iter()
                    .flat_map(|run| &run.results)
                    .filter_map(|r| r.rss_kib.get(&peak.service))
                    .max()
                    .copied()
                    .unwrap_or(0);
                let _ = writeln!(
                    out,
                    "| {} | {:.1} MiB | {:.1} MiB |",
                    peak.service,
                    peak.peak_kib as f64 / 1024.0,
                    after as f64 / 1024.0
                );
            }
            out.push('\n');
        }
        out
    }
}

/// Two runs side by side (e.g. LOMS on PostgreSQL and on SQLite): each scenario's throughput and p99 in both, and
/// the slowdown of `other` on the purchase path, whose target is "within 2×".
pub fn compare(base: &Report, other: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## A: {} — B: {}\n", base.label, other.label);
    out.push_str(
        "| clients | scenario | operation | A ok/s | B ok/s | A ÷ B | A p99 ms | B p99 ms | B within 2× of A |\n",
    );
    out.push_str("|---:|---|---|---:|---:|---:|---:|---:|---|\n");
    for run in &base.runs {
        let Some(other_run) = other.runs.iter().find(|r| r.clients == run.clients) else { continue };
        for result in run.results.iter().filter(|r| r.scenario != "pgbench") {
            let Some(other_result) = other_run.results.iter().find(|r| r.scenario == result.scenario) else { continue };
            for op in &result.ops {
                let Some(theirs) = other_result.op(&op.op) else { continue };
                let ours = &op.summary;
                let slowdown =
                    if theirs.throughput > 0.0 { ours.throughput / theirs.throughput } else { f64::INFINITY };
                let verdict = match (result.scenario.starts_with("purchase-"), slowdown <= 2.0) {
                    (false, _) => "",
                    (true, true) => "yes",
                    (true, false) => "**no**",
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {:.0} | {slowdown:.2} | {:.2} | {:.2} | {verdict} |",
                    run.clients,
                    scenario_label(result),
                    op.op,
                    ours.throughput,
                    theirs.throughput,
                    ours.latency_ms.p99,
                    theirs.latency_ms.p99,
                );
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        runner::OpResult,
        stats::{Latency, OpSummary},
    };

    fn summary(throughput: f64, p99: f64, mean: f64) -> OpSummary {
        OpSummary {
            ok: throughput as u64,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            throughput,
            latency_ms: Latency { mean, p50: mean, p90: p99, p99, max: p99 },
        }
    }

    fn result(scenario: &str, op: &str, throughput: f64, rate: Option<f64>) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.into(),
            clients: 8,
            target_rate: rate,
            window_secs: 1.0,
            iterations: summary(throughput, 10.0, 8.0 / throughput * 1000.0),
            ops: vec![OpResult { op: op.into(), summary: summary(throughput, 10.0, 1.0) }],
            rss_kib: BTreeMap::new(),
            batches: BTreeMap::new(),
            pacer_lateness_ms: None,
        }
    }

    #[test]
    fn ratios_compare_each_scenario_with_its_own_baseline_and_skip_paced_runs() {
        let results = vec![
            result("pgbench", pgbench::OP, 2000.0, None),
            result("create-3", "CreateOrder", 1500.0, None),
            result("create-3@80%", "CreateOrder", 1200.0, Some(1200.0)),
            result("health", "Health/Check", 10000.0, None),
            result("stocks", "Stocks", 4000.0, None),
        ];

        let ratios = ratios(&results);

        assert_eq!(ratios.len(), 2);
        assert_eq!((ratios[0].scenario.as_str(), ratios[0].baseline.as_str()), ("create-3", "pgbench"));
        assert!((ratios[0].ratio - 0.75).abs() < 1e-9);
        assert!((ratios[1].ratio - 0.4).abs() < 1e-9);
    }

    #[test]
    fn targets_report_misses_as_well_as_hits() {
        let results = vec![
            result("pgbench", pgbench::OP, 2000.0, None),
            result("create-3", "CreateOrder", 2500.0, None),
            result("health", "Health/Check", 10000.0, None),
            result("stocks", "Stocks", 4000.0, None),
        ];
        let run = ClientRun { clients: 8, ratios: ratios(&results), results };
        let memory = vec![PeakMemory { service: "loms".into(), pid: 1, peak_kib: 150 * 1024 }];

        let targets = targets(&[run], None, &memory);

        let met: Vec<(bool, &str)> = targets.iter().map(|t| (t.met, t.measured.as_str())).collect();
        assert_eq!(met, vec![(true, "125 %"), (false, "40 %"), (false, "150.0 MiB")]);
    }

    #[test]
    fn the_paced_target_reads_beside_the_paced_pgbench_tail() {
        let paced = |scenario: &str, op: &str, rate: f64, p99: f64| ScenarioResult {
            ops: vec![OpResult { op: op.into(), summary: summary(rate, p99, 1.0) }],
            ..result(scenario, op, rate, Some(rate))
        };
        let results = vec![
            result("pgbench", pgbench::OP, 2000.0, None),
            paced(pgbench::PACED, pgbench::OP, 1600.0, 31.5),
            result("create-3", "CreateOrder", 2500.0, None),
            paced("create-3@80%", "CreateOrder", 2000.0, 12.3),
        ];
        let run = ClientRun { clients: 32, ratios: ratios(&results), results };

        let targets = targets(&[run], None, &[]);

        let p99 = targets.iter().find(|t| t.target.starts_with("CreateOrder p99")).expect("the paced target");
        assert_eq!(p99.measured, "12.3 ms (pgbench@80% 31.5 ms)");
        assert!(p99.met);
        // The paced pgbench is nobody's throughput baseline: create-3 is still read against the peak.
        let create = targets.iter().find(|t| t.target.contains("create-3")).expect("the create-3 ratio");
        assert_eq!(create.measured, "125 %");
    }

    #[test]
    fn a_comparison_flags_a_purchase_path_more_than_twice_as_slow() {
        let report = |label: &str, purchase: f64| Report {
            label: label.into(),
            started_at: "now".into(),
            machine: Machine { cpus: 2, memory_gib: 24.0, kernel: "6".into(), postgres: None },
            settings: Settings { warmup_secs: 1.0, duration_secs: 1.0, connections: 0, skus: 100, warehouses: 4 },
            runs: vec![ClientRun {
                clients: 8,
                results: vec![
                    result("purchase-3", "CreateOrder", purchase, None),
                    result("stocks", "Stocks", 10.0, None),
                ],
                ratios: vec![],
            }],
            sweep: None,
            memory: vec![],
            targets: vec![],
        };

        let fine = compare(&report("pg", 1000.0), &report("sqlite", 600.0));
        let slow = compare(&report("pg", 1000.0), &report("sqlite", 400.0));

        assert!(fine.contains("| 8 | purchase-3 | CreateOrder | 1000 | 600 | 1.67 |"), "{fine}");
        assert!(fine.contains("| yes |"), "{fine}");
        assert!(slow.contains("| 2.50 |") && slow.contains("| **no** |"), "{slow}");
        assert!(fine.contains("| 8 | stocks | Stocks | 10 | 10 | 1.00 | 10.00 | 10.00 |  |"), "{fine}");
    }

    #[test]
    fn the_markdown_has_a_row_per_operation_with_its_ratio() {
        let mut results = vec![
            result("pgbench", pgbench::OP, 2000.0, None),
            result("create-3", "CreateOrder", 1000.0, None),
            result("create-3@80%", "CreateOrder", 800.0, Some(800.0)),
        ];
        results[1].batches.insert("create".into(), crate::batches::BatchStat { batches: 10, calls: 40 });
        results[2].pacer_lateness_ms = Some(Latency { mean: 0.05, p50: 0.04, p90: 0.08, p99: 0.23, max: 3.6 });
        let run = ClientRun { clients: 8, ratios: ratios(&results), results };
        let report = Report {
            label: "test".into(),
            started_at: "now".into(),
            machine: Machine { cpus: 2, memory_gib: 24.0, kernel: "6".into(), postgres: None },
            settings: Settings { warmup_secs: 1.0, duration_secs: 1.0, connections: 0, skus: 100, warehouses: 4 },
            targets: targets(std::slice::from_ref(&run), None, &[]),
            runs: vec![run],
            sweep: None,
            memory: vec![],
        };

        let markdown = report.markdown();

        assert!(markdown.contains("| create-3 | CreateOrder | 1000 |"), "{markdown}");
        assert!(markdown.contains("0.50× pgbench"), "{markdown}");
        assert!(markdown.contains("| 8 | 50 % | ≥ 100 % | **no** |"), "{markdown}");
        assert!(markdown.contains("create-3: create 4.0 calls/commit (10 commits)"), "{markdown}");
        // A paced run says how late the load generator itself sent, which its latencies include.
        assert!(
            markdown.contains("| create-3@80% (paced 800/s; sent late by 0.23 ms at p99) | CreateOrder | 800 |"),
            "{markdown}"
        );
    }
}
