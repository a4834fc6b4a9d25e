//! `minizon dev` as a user runs it: a child process, on free ports, talked to over gRPC.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use minizon_proto::{
    checkout::{AddToCartRequest, ListCartRequest, PurchaseRequest, checkout_v1_client::CheckoutV1Client},
    loms::{
        CreateOrderRequest, Item, ListOrderHistoryRequest, ListOrderRequest, OrderPayedRequest, OrderStatus,
        StocksRequest, loms_v1_client::LomsV1Client,
    },
};
use sqlx::{SqlitePool, sqlite::SqliteConnectOptions};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A sku of the bundled catalog that the sample stock holds.
const SKU: u32 = 1016;

struct Dev {
    child: Child,
    loms: String,
    checkout: String,
    /// The one `/metrics` URL of the stack.
    metrics: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    /// Starts `minizon dev` on `data_dir` with every address on a free port, and reads the addresses it prints.
    async fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_minizon"))
            .arg("dev")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--loms-listen", "127.0.0.1:0", "--checkout-listen", "127.0.0.1:0"])
            .args(["--product-listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start minizon dev");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut loms, mut checkout, mut metrics) = (None, None, None);
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("LOMS"), Some(addr)) => loms = Some(format!("http://{addr}")),
                    (Some("Checkout"), Some(addr)) => checkout = Some(format!("http://{addr}")),
                    (Some("Metrics"), Some(url)) => metrics = Some(url.to_owned()),
                    _ => {}
                }
                if line.starts_with("Ctrl-C") {
                    break;
                }
            }
        };
        let printed = tokio::time::timeout(Duration::from_secs(60), read).await;
        let logs = stderr.lock().unwrap().join("\n");
        assert!(printed.is_ok(), "minizon dev printed no cheat sheet within 60 s; its log:\n{logs}");
        let (Some(loms), Some(checkout), Some(metrics)) = (loms, checkout, metrics) else {
            panic!("the cheat sheet names no LOMS / Checkout / Metrics address; its log:\n{logs}");
        };
        Self { child, loms, checkout, metrics, stderr }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("minizon dev stops within 30 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "minizon dev exits cleanly: {status:?}\n{}", self.stderr.lock().unwrap().join("\n"));
    }

    /// SIGKILL: no flush, no commit, no goodbye.
    async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL minizon dev");
    }

    async fn wait_for_log(&self, needle: &str) {
        let seen = || async { self.stderr.lock().unwrap().iter().any(|line| line.contains(needle)).then_some(()) };
        minizon_tests::poll::until(&format!("a log line with {needle:?}"), Duration::from_secs(30), seen).await;
    }
}

fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minizon-dev-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_dev_stack_serves_the_purchase_path_and_prints_its_notifications() {
    let dir = data_dir();
    let dev = Dev::start(&dir).await;
    let mut checkout = CheckoutV1Client::connect(dev.checkout.clone()).await.unwrap();
    let mut loms = LomsV1Client::connect(dev.loms.clone()).await.unwrap();

    checkout.add_to_cart(AddToCartRequest { user: 1, sku: SKU, count: 2 }).await.unwrap();
    let cart = checkout.list_cart(ListCartRequest { user: 1 }).await.unwrap().into_inner();
    let order_id = checkout.purchase(PurchaseRequest { user: 1 }).await.unwrap().into_inner().order_id;
    loms.order_payed(OrderPayedRequest { order_id }).await.unwrap();

    assert_eq!(cart.items.len(), 1);
    assert!(!cart.items[0].name.is_empty() && cart.total_price == cart.items[0].price * 2);
    let order = loms.list_order(ListOrderRequest { order_id }).await.unwrap().into_inner();
    assert_eq!(order.status(), OrderStatus::Payed);
    dev.wait_for_log(&format!("Order #{order_id} is paid")).await;
    // One endpoint for the whole stack: Checkout's Purchase and its call to LOMS are both there.
    let exposition = reqwest::get(&dev.metrics).await.unwrap().text().await.unwrap();
    let counted = |series: &str, method: &str| {
        exposition.lines().any(|line| {
            line.starts_with(series)
                && line.contains(&format!(r#"grpc_method="{method}""#))
                && line.contains(r#"grpc_code="OK""#)
        })
    };
    assert!(counted("grpc_server_handled_total{", "Purchase"), "no Purchase in:\n{exposition}");
    assert!(counted("grpc_client_handled_total{", "CreateOrder"), "no CreateOrder call in:\n{exposition}");
    dev.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_restart_on_the_same_data_directory_keeps_orders_carts_and_stock() {
    let dir = data_dir();
    let dev = Dev::start(&dir).await;
    let mut checkout = CheckoutV1Client::connect(dev.checkout.clone()).await.unwrap();
    let mut loms = LomsV1Client::connect(dev.loms.clone()).await.unwrap();
    checkout.add_to_cart(AddToCartRequest { user: 1, sku: SKU, count: 3 }).await.unwrap();
    let order_id = checkout.purchase(PurchaseRequest { user: 1 }).await.unwrap().into_inner().order_id;
    checkout.add_to_cart(AddToCartRequest { user: 2, sku: SKU, count: 1 }).await.unwrap();
    let stock_before: u64 =
        loms.stocks(StocksRequest { sku: SKU }).await.unwrap().into_inner().stocks.iter().map(|s| s.count).sum();
    dev.stop().await;

    let dev = Dev::start(&dir).await;

    let mut checkout = CheckoutV1Client::connect(dev.checkout.clone()).await.unwrap();
    let mut loms = LomsV1Client::connect(dev.loms.clone()).await.unwrap();
    let order = loms.list_order(ListOrderRequest { order_id }).await.unwrap().into_inner();
    assert_eq!(order.status(), OrderStatus::AwaitingPayment);
    let cart = checkout.list_cart(ListCartRequest { user: 2 }).await.unwrap().into_inner();
    assert_eq!(cart.items.iter().map(|i| (i.sku, i.count)).collect::<Vec<_>>(), vec![(SKU, 1)]);
    let stock_after: u64 =
        loms.stocks(StocksRequest { sku: SKU }).await.unwrap().into_inner().stocks.iter().map(|s| s.count).sum();
    assert_eq!(stock_after, stock_before, "the sample stock is not loaded twice, and the reservation stands");
    dev.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A read-only view of one of the stack's SQLite files (WAL lets it read while the stack writes).
async fn open_read_only(dir: &Path, name: &str) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(dir.join(format!("{name}.db"))).read_only(true);
    SqlitePool::connect_with(options).await.expect("open the SQLite file")
}

/// Event ids the relay marked sent.
async fn sent_events(loms: &SqlitePool) -> BTreeSet<String> {
    let ids: Vec<String> = sqlx::query_scalar("select event_id from outbox where sent_at is not null")
        .fetch_all(loms)
        .await
        .expect("read the outbox");
    ids.into_iter().collect()
}

/// Event ids Notifications finished.
async fn handled_events(notifications: &SqlitePool) -> BTreeSet<String> {
    let ids: Vec<String> =
        sqlx::query_scalar("select event_id from handled_events").fetch_all(notifications).await.unwrap_or_default();
    ids.into_iter().collect()
}

/// Per order, the event ids the customer's log channel was given (`processed_events`: one row per event and
/// channel, so a second notification would be a second event id, never a second row).
async fn notified_per_order(notifications: &SqlitePool) -> BTreeMap<i64, Vec<String>> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("select order_id, event_id from processed_events where sink = 'log' order by order_id")
            .fetch_all(notifications)
            .await
            .expect("read the processed events");
    let mut by_order: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (order_id, event_id) in rows {
        by_order.entry(order_id).or_default().push(event_id);
    }
    by_order
}

#[tokio::test]
async fn every_committed_change_is_notified_exactly_once_across_a_sigkill() {
    // Arrange: orders placed (and some paid) until the stack holds events it published but has not notified —
    // the ones its in-memory broker loses when the process dies.
    let dir = data_dir();
    let dev = Dev::start(&dir).await;
    let mut loms = LomsV1Client::connect(dev.loms.clone()).await.unwrap();
    let (loms_db, notifications_db) = (open_read_only(&dir, "loms").await, open_read_only(&dir, "notifications").await);
    let mut orders = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let in_flight = loop {
        for i in 0..10 {
            let request = CreateOrderRequest { user: 1, items: vec![Item { sku: SKU, count: 1 }] };
            let order_id = loms.create_order(request).await.unwrap().into_inner().order_id;
            if i % 2 == 0 {
                // A sold-out sku fails the order instead: paying it is refused, and that is fine here.
                let _ = loms.order_payed(OrderPayedRequest { order_id }).await;
            }
            orders.push(order_id);
        }
        let (sent, handled) = (sent_events(&loms_db).await, handled_events(&notifications_db).await);
        let in_flight = sent.difference(&handled).count();
        if in_flight > 0 {
            break in_flight;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event was ever published and not yet notified");
    };

    // Act: SIGKILL, then a start on the same data directory.
    dev.kill().await;
    let dev = Dev::start(&dir).await;

    // Assert: every transition of every order has exactly one notification, those lost with the broker included.
    let mut loms = LomsV1Client::connect(dev.loms.clone()).await.unwrap();
    let mut expected: BTreeMap<i64, usize> = BTreeMap::new();
    for &order_id in &orders {
        let history = loms.list_order_history(ListOrderHistoryRequest { order_id }).await.unwrap().into_inner();
        expected.insert(order_id, history.transitions.len());
    }
    let outbox: Vec<(i64, String)> = sqlx::query_as("select order_id, event_id from outbox order by id")
        .fetch_all(&loms_db)
        .await
        .expect("read the outbox");
    let notified = minizon_tests::poll::until("every transition to be notified", Duration::from_secs(60), || async {
        let notified = notified_per_order(&notifications_db).await;
        let counts: BTreeMap<i64, usize> =
            orders.iter().map(|id| (*id, notified.get(id).map_or(0, Vec::len))).collect();
        (counts == expected).then_some(notified)
    })
    .await;
    for (order_id, event_id) in &outbox {
        let times = notified.get(order_id).map_or(0, |ids| ids.iter().filter(|id| *id == event_id).count());
        assert_eq!(times, 1, "event {event_id} of order {order_id} notified once ({in_flight} were in flight)");
    }
    let outbox_ids: BTreeSet<&String> = outbox.iter().map(|(_, id)| id).collect();
    assert!(notified.values().flatten().all(|id| outbox_ids.contains(id)), "nothing notified that LOMS did not commit");
    dev.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
