//! A real Prometheus (`/usr/bin/prometheus`, `promtool`; Debian's `prometheus` package) against LOMS's `/metrics`.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use minizon_proto::loms::{CreateOrderRequest, Item};
use minizon_tests::{db::TestDb, kafka::free_port, loms::TestLoms, poll};
use tokio::process::Command;

/// Bound for anything that waits on Prometheus (start, scrapes, rule evaluation).
const LIMIT: Duration = Duration::from_secs(60);

/// `GET url`, as text.
async fn get(url: &str) -> Option<String> {
    let response = reqwest::get(url).await.ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// Runs `promtool check metrics` on an exposition; its verdict and what it said.
async fn promtool_check(exposition: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(exposition.as_bytes()).await.expect("write to promtool");
    drop(stdin);
    let output = child.wait_with_output().await.expect("promtool runs");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// A Prometheus server scraping `target` every second, on a free port, with its data in `dir`.
async fn start_prometheus(target: SocketAddr, dir: &Path) -> (tokio::process::Child, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: loms\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("write the Prometheus config");
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus is installed (apt-get install prometheus)");
    (child, format!("http://{listen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_loms_and_sees_the_create_order_rate() {
    let loms = TestLoms::start_with(TestDb::new().await, |config| {
        config.metrics_addr = minizon_common::metrics::MetricsAddr::at(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let metrics = loms.metrics.expect("LOMS serves /metrics");
    loms.set_stock(1, 7, 1_000_000).await;
    let mut client = loms.client().await;
    let order = || CreateOrderRequest { user: 1, items: vec![Item { sku: 7, count: 1 }] };
    client.create_order(order()).await.expect("an order");

    // The exposition is valid Prometheus text, and it has the request just made.
    let exposition = get(&format!("http://{metrics}/metrics")).await.expect("scrape /metrics");
    let (valid, said) = promtool_check(&exposition).await;
    assert!(valid, "promtool rejects the exposition: {said}\n{exposition}");
    assert!(
        exposition.lines().any(|line| line.starts_with("grpc_server_handled_total{")
            && line.contains(r#"grpc_method="CreateOrder""#)
            && line.contains(r#"grpc_code="OK""#)),
        "no CreateOrder OK count in:\n{exposition}"
    );
    assert!(exposition.contains("grpc_server_handling_seconds_bucket{"), "the latency is a histogram");
    // Counters of rare events are scraped before their first one, so that an alert on their increase sees it.
    for rare in ["loms_outbox_publish_failures_total", "loms_unpaid_sweep_failures_total"] {
        assert!(
            exposition.lines().any(|line| line.split_whitespace().next() == Some(rare)),
            "{rare} is not on the endpoint before its first increment:\n{exposition}"
        );
    }
    // The order's transaction waited for a pool connection (if only for nanoseconds), and the wait was counted.
    assert!(
        exposition.lines().any(|line| line.starts_with("db_pool_acquire_wait_seconds_count{") && !line.ends_with(" 0")),
        "no pool waits counted in:\n{exposition}"
    );
    assert!(exposition.contains("db_pool_waiters{"), "no pool waiters gauge in:\n{exposition}");
    if loms.db.is_postgres() {
        // The order was committed by a write batch, on a connection of the batches' own (pipelining) pool.
        assert!(
            exposition.lines().any(|line| line.starts_with("db_pool_acquire_wait_seconds_count{")
                && line.contains(r#"-write-batches""#)
                && !line.ends_with(" 0")),
            "no wait for a write-batch connection counted in:\n{exposition}"
        );
        assert!(
            exposition
                .lines()
                .any(|line| line.starts_with("db_pool_max_connections{") && line.contains("-write-batches")),
            "no write-batch pool size in:\n{exposition}"
        );
    }

    let dir = std::env::temp_dir().join(format!("minizon-prometheus-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let (_prometheus, prometheus) = start_prometheus(metrics, &dir).await;
    // Orders keep coming while Prometheus scrapes, so that the rate over its window is above zero.
    let load = tokio::spawn(async move {
        loop {
            let _ = client.create_order(order()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    poll::until("Prometheus to report the LOMS target up", LIMIT, || async {
        let targets = get(&format!("{prometheus}/api/v1/targets")).await?;
        let targets: serde_json::Value = serde_json::from_str(&targets).ok()?;
        targets["data"]["activeTargets"].as_array()?.iter().any(|target| target["health"] == "up").then_some(())
    })
    .await;
    let query = r#"sum(rate(grpc_server_handled_total{grpc_service="loms_v1.LomsV1",grpc_method="CreateOrder",grpc_code="OK"}[5s]))"#;
    let rate: f64 = poll::until("Prometheus to return a CreateOrder rate", LIMIT, || async {
        let url = reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), [("query", query)]).ok()?;
        let answer: serde_json::Value = serde_json::from_str(&get(url.as_str()).await?).ok()?;
        let value = answer["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
        (value > 0.0).then_some(value)
    })
    .await;
    load.abort();
    assert!(rate > 0.0 && rate.is_finite(), "rate {rate}");
    let _ = std::fs::remove_dir_all(&dir);
}
