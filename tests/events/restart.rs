//! A Notifications worker process SIGKILLed and restarted: the restarted process must take the partitions back
//! and notify what came meanwhile. On tansu 0.6.0 a restarted dynamic member used to be assigned nothing for good
//! (docs/events.md, "Consumer group membership"); the second kill of a run reproduced it. And a worker whose join
//! is never answered must give up on it and join again with a new consumer.

use std::{path::PathBuf, process::Stdio};

use minizon_tests::{
    db::TestDb,
    kafka::TestBroker,
    loms::TestLoms,
    notifications::{SinkStandIn, TELEGRAM_CHAT, TELEGRAM_TOKEN, TestNotifications},
    poll,
};
use tokio::process::{Child, Command};

use crate::support::{LIMIT, assert_one_notification_per_event, order, outbox, start_loms, wait_until_outbox_drained};

/// Set in the environment of the child process that runs the worker.
const CHILD_MARKER: &str = "MINIZON_TEST_NOTIFICATIONS_CHILD";

#[tokio::test]
async fn a_worker_process_killed_and_restarted_twice_notifies_every_event_once() {
    // Arrange: LOMS with its relay, and a worker in a process of its own, joined as one stable replica.
    let broker = TestBroker::start().await;
    let loms = start_loms(TestDb::new().await, &broker).await;
    loms.set_stock(1, 1001, 100).await;
    let sinks = SinkStandIn::start().await;
    let worker = WorkerProcess { db: TestDb::new().await.url, brokers: broker.bootstrap(), sinks: sinks.url() };
    let mut process = worker.spawn("first").await;
    let mut client = loms.client().await;

    // Act: an order per incarnation; each process is SIGKILLed (no leave, no commit) once it notified its order.
    for (user, next) in [(1, Some("second")), (2, Some("third")), (3, None)] {
        client.create_order(order(user, &[(1001, 1)])).await.unwrap();
        // Both sinks: the kill may otherwise land between the webhook call and the Telegram message, and after
        // the last kill no process is left to send what was pending.
        wait_until_both_sinks_have_every_event(&loms, &sinks).await;
        if let Some(next) = next {
            process.kill().await.expect("SIGKILL the worker");
            process = worker.spawn(next).await;
        }
    }
    process.kill().await.expect("SIGKILL the worker");

    // Assert: every event of every order reached the webhook exactly once, in order per order.
    assert_one_notification_per_event(&sinks, &outbox(&loms.db).await);
}

/// Waits until LOMS published every committed event and both the webhook and Telegram have each of them.
async fn wait_until_both_sinks_have_every_event(loms: &TestLoms, sinks: &SinkStandIn) {
    wait_until_outbox_drained(&loms.db).await;
    let committed = outbox(&loms.db).await.len();
    poll::until("the webhook and Telegram to have every committed event", LIMIT, || async {
        (distinct_events(sinks) >= committed && sinks.telegram_calls().len() >= committed).then_some(())
    })
    .await;
}

fn distinct_events(sinks: &SinkStandIn) -> usize {
    let calls = sinks.webhook_calls();
    calls.iter().map(|call| call.body["eventId"].to_string()).collect::<std::collections::HashSet<_>>().len()
}

/// How to start the worker process: the same database, broker, sinks and group instance every time.
struct WorkerProcess {
    db: String,
    brokers: String,
    sinks: String,
}

impl WorkerProcess {
    /// Runs [`worker_process`] of this test binary in a child process, logging to `<tmp>/<name>.log`.
    async fn spawn(&self, name: &str) -> Child {
        let log_path: PathBuf =
            std::env::temp_dir().join(format!("minizon-notifications-{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let log = std::fs::File::create(&log_path).expect("create the worker's log");
        Command::new(std::env::current_exe().expect("the test binary"))
            .args(["restart::worker_process", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_MARKER, "1")
            .env("NOTIFICATIONS_DATABASE_URL", &self.db)
            .env("NOTIFICATIONS_KAFKA_BROKERS", &self.brokers)
            .env("NOTIFICATIONS_SINKS", "webhook,telegram")
            .env("NOTIFICATIONS_TELEGRAM_BASE_URL", &self.sinks)
            .env("NOTIFICATIONS_TELEGRAM_TOKEN", TELEGRAM_TOKEN)
            .env("NOTIFICATIONS_TELEGRAM_CHAT_ID", TELEGRAM_CHAT)
            .env("NOTIFICATIONS_WEBHOOK_URL", format!("{}/webhook", self.sinks))
            .env("NOTIFICATIONS_GROUP_INSTANCE_ID", "notifications-restart-test")
            .env("NOTIFICATIONS_METRICS_ADDR", "off")
            .env("NOTIFICATIONS_RETRY_MIN_DELAY", "20ms")
            .env("NOTIFICATIONS_RETRY_MAX_DELAY", "200ms")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the worker process")
    }
}

/// Not a test: the worker that [`WorkerProcess::spawn`] runs in a child process, configured by its environment,
/// until it is killed.
#[tokio::test]
#[ignore = "the child process of the restart test"]
async fn worker_process() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    // The defaults read the `NOTIFICATIONS_*` environment [`WorkerProcess::spawn`] set.
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let config =
        notifications::Config::for_database(env("NOTIFICATIONS_DATABASE_URL"), env("NOTIFICATIONS_KAFKA_BROKERS"));
    let app = notifications::Application::build(config).await.expect("notifications starts");
    app.run_until_stopped(tokio_util::sync::CancellationToken::new()).await.expect("notifications runs");
}

/// Rejoins so far in this test process, from the process-wide Prometheus recorder (installed here if no one did).
fn rejoins() -> u64 {
    let handle = minizon_common::metrics::recorder().expect("the Prometheus recorder");
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("notifications_consumer_rejoins_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

#[tokio::test]
async fn a_worker_whose_join_goes_unanswered_joins_again_with_a_new_consumer_and_notifies_every_event_once() {
    // Arrange: the broker frozen before the worker starts, so its join is never answered.
    let broker = TestBroker::start().await;
    let loms = start_loms(TestDb::new().await, &broker).await;
    loms.set_stock(1, 1001, 100).await;
    let sinks = SinkStandIn::start().await;
    let before = rejoins();
    broker.pause();
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |config| {
        // Longer than a join takes on tansu (two 3 s pauses), so that the consumer made after the broker is back
        // has time to join before the watch gives up on it too.
        config.rejoin_after = std::time::Duration::from_secs(15);
    })
    .await;

    // Act: the worker gives up on its unanswered join, then the broker is back.
    poll::until("the worker to join again with a new consumer", LIMIT, || async { (rejoins() > before).then_some(()) })
        .await;
    broker.resume();
    let mut client = loms.client().await;
    for user in 1..=3 {
        client.create_order(order(user, &[(1001, 1)])).await.unwrap();
    }
    wait_until_both_sinks_have_every_event(&loms, &sinks).await;

    // Assert
    assert_one_notification_per_event(&sinks, &outbox(&loms.db).await);
    assert!(notifications.is_running());
}
