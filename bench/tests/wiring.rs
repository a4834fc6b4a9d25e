//! The load generator's scenario wiring, against a real LOMS on a real PostgreSQL for a few seconds: every LOMS
//! scenario sends what it should and gets answers without errors, and a whole `run` produces a consistent report.
//! Speed is not asserted here: the numbers are the benchmark's business.

use std::time::Duration;

use clap::Parser as _;
use minizon_bench::{
    config::{Cli, Command},
    report::Report,
    runner::LoadSpec,
    scenario,
    scenarios::{HealthCheck, OrderFlow, Stocks, loms::AfterCreate},
    target::{Channels, SkuRange, admin_client, seed_stock},
};
use minizon_tests::loms::{ADMIN_TOKEN, TestLoms};

const SKUS: SkuRange = SkuRange { first: 1_000_001, count: 200 };

fn short(clients: usize) -> LoadSpec {
    LoadSpec {
        clients,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(600),
        max_iterations: 100_000,
        rate: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_loms_scenario_gets_answers_without_errors() {
    // Arrange
    let loms = TestLoms::start().await;
    let mut admin = admin_client(&loms.url(), ADMIN_TOKEN).await.unwrap();
    seed_stock(&mut admin, SKUS.iter(), 2, 1_000_000).await.unwrap();
    let channels = Channels::connect(&loms.url(), 2, Duration::from_secs(10)).await.unwrap();
    let orders = |items, then| std::sync::Arc::new(OrderFlow::new(channels.clone(), SKUS, items, then, 1));

    // Act
    let purchase = scenario("purchase-10", orders(10, AfterCreate::Pay), short(2)).await.unwrap();
    let churn = scenario("churn-3", orders(3, AfterCreate::Cancel), short(2)).await.unwrap();
    let create = scenario("create-3", orders(3, AfterCreate::Leave), short(2)).await.unwrap();
    let stocks =
        scenario("stocks", std::sync::Arc::new(Stocks::new(channels.clone(), SKUS, 1)), short(2)).await.unwrap();
    let health =
        scenario("health", std::sync::Arc::new(HealthCheck::new(channels.clone(), "")), short(2)).await.unwrap();

    // Assert: each scenario sent its operations, in order, and every call succeeded.
    let ops =
        |result: &minizon_bench::runner::ScenarioResult| result.ops.iter().map(|op| op.op.clone()).collect::<Vec<_>>();
    assert_eq!(ops(&purchase), ["CreateOrder", "OrderPayed"]);
    assert_eq!(ops(&churn), ["CreateOrder", "CancelOrder"]);
    assert_eq!(ops(&create), ["CreateOrder"]);
    assert_eq!(ops(&stocks), ["Stocks"]);
    assert_eq!(ops(&health), ["Health/Check"]);
    for result in [&purchase, &churn, &create, &stocks, &health] {
        assert_eq!(result.errors(), 0, "{}: {:?}", result.scenario, result.ops);
        assert!(result.iterations.ok > 0, "{} did nothing", result.scenario);
        assert!(result.ops.iter().all(|op| op.summary.ok > 0 && op.summary.throughput > 0.0));
    }
    // A paid order's units left the warehouse; cancelled ones came back: the flows really reached LOMS.
    let levels =
        admin.list_stock(minizon_proto::loms::ListStockRequest { sku: SKUS.first }).await.unwrap().into_inner().levels;
    assert_eq!(levels.len(), 2);
    loms.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_seeds_sweeps_and_writes_a_report_that_reads_back() {
    // Arrange: a LOMS whose sweep runs every second (its default), and a report path of this test's own.
    let loms = TestLoms::start().await;
    let out = std::env::temp_dir().join(format!("minizon-bench-{}", std::process::id()));
    let (json, markdown) = (out.join("report.json"), out.join("report.md"));
    let cli = Cli::try_parse_from([
        "minizon-bench",
        "run",
        "--loms-url",
        &loms.url(),
        "--loms-admin-token",
        ADMIN_TOKEN,
        "--loms-database-url",
        &loms.db.url,
        "--clients",
        "2",
        "--warmup",
        "100ms",
        "--duration",
        "400ms",
        "--sku-count",
        "300",
        "--warehouses",
        "2",
        "--scenarios",
        "create-3,create-3@80%,purchase-1,purchase-100,health,stocks,sweep",
        "--sweep-orders",
        "150",
        "--sweep-create-clients",
        "4",
        "--sweep-light-clients",
        "2",
        "--sweep-light-rate",
        "20",
        "--sweep-baseline",
        "300ms",
        "--sweep-limit",
        "60s",
        "--watch",
        &format!("bench={}", std::process::id()),
        "--json",
        json.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
    ])
    .unwrap();
    let Command::Run(args) = cli.command else { panic!("parsed as run") };

    // Act
    let report = minizon_bench::run(&args).await.unwrap();

    // Assert: the scenarios ran in order, without errors, and the report holds what the docs quote.
    let run = &report.runs[0];
    let names: Vec<&str> = run.results.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(names, ["create-3", "create-3@80%", "purchase-1", "purchase-100", "health", "stocks"]);
    assert!(run.results.iter().all(|r| r.errors() == 0), "{:#?}", run.results);
    let paced = &run.results[1];
    let peak = run.results[0].op("CreateOrder").unwrap().throughput;
    assert!((paced.target_rate.unwrap() - peak * 0.8).abs() < 1e-6);
    assert!(run.ratios.iter().any(|r| r.scenario == "stocks" && r.baseline == "health" && r.ratio > 0.0));
    assert!(run.results.iter().all(|r| r.rss_kib.contains_key("bench")));

    let sweep = report.sweep.as_ref().expect("the sweep ran");
    assert!(sweep.completed, "{sweep:#?}");
    assert_eq!(sweep.orders_due, 150);
    assert_eq!(sweep.create.iterations.ok, 150);
    assert!(sweep.light_during.iterations.ok > 0);
    assert_eq!(sweep.light_during.errors(), 0, "{:#?}", sweep.light_during);

    assert_eq!(report.memory.len(), 1);
    assert!(report.targets.iter().any(|t| t.target.contains("overdue orders swept")));
    // Floats may differ in their last digit after a JSON round trip: compare what the docs quote.
    let written: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(written.runs.len(), report.runs.len());
    assert_eq!(written.runs[0].results.len(), report.runs[0].results.len());
    assert_eq!(written.targets.len(), report.targets.len());
    assert_eq!(written.sweep.map(|s| s.orders_due), Some(150));
    assert!(std::fs::read_to_string(&markdown).unwrap().contains("| create-3 | CreateOrder |"));
    let _ = std::fs::remove_dir_all(&out);
    loms.stop().await;
}
