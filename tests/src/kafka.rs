//! A real Kafka-protocol broker per test: a tansu process on a free port, with its own storage in a temporary
//! directory, that a test can pause (SIGSTOP), resume, kill and restart on the same storage; plus a plain
//! consumer that reads a topic back exactly, and a plain producer.
//!
//! The binary is `$TANSU_BIN`, or `~/.cache/minizon/tansu/bin/tansu` where `make kafka-install` puts it. A
//! missing binary fails the test with instructions: CI installs it, and a skipped event test would prove nothing.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use tokio::process::{Child, Command};

/// The topic LOMS publishes order events to, by default.
pub const EVENTS_TOPIC: &str = "loms.order-status-changed";
/// The dead-letter topic of Notifications, by default.
pub const DEAD_LETTER_TOPIC: &str = "loms.order-status-changed.dead-letter";

/// Where the tansu binary is: `$TANSU_BIN`, else the cache `make kafka-install` fills.
pub fn tansu_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/minizon/tansu/bin/tansu")
}

/// A tansu broker process owned by the test.
#[derive(Debug)]
pub struct TestBroker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TestBroker {
    /// Starts a broker on a free port with empty storage and the two order-event topics (3 partitions each).
    pub async fn start() -> Self {
        init_logs();
        let bin = tansu_bin();
        assert!(
            bin.is_file(),
            "the tansu broker is not installed at {}: run `make kafka-install` (or set TANSU_BIN) — the event \
             tests need a real Kafka-protocol broker",
            bin.display()
        );
        let dir = std::env::temp_dir().join(format!("minizon-tansu-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).expect("create the broker's directory");
        let port = free_port();
        let mut broker = Self { bin, dir, port, child: None };
        broker.spawn().await;
        broker.create_topic(EVENTS_TOPIC, 3).await;
        broker.create_topic(DEAD_LETTER_TOPIC, 3).await;
        broker.create_header_index().await;
        broker
    }

    /// `127.0.0.1:port`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("open the broker log");
        let child = Command::new(&self.bin)
            .arg("broker")
            .args(["--listener-url", &self.url(), "--advertised-listener-url", &self.url()])
            .args(["--storage-engine", "sqlite://data/tansu.db"])
            .current_dir(&self.dir)
            // Not the tests' RUST_LOG: at info tansu logs every span of every request and slows itself down.
            .env("RUST_LOG", std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", self.bin.display()));
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        crate::poll::until("the broker to accept connections", Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
    }

    /// The index `scripts/kafka.sh` adds to tansu's storage (its header table has none, and a fetch of many records
    /// then stalls the broker: docs/events.md, "A fetch that stalled the broker"), so that tests run the broker as
    /// users do.
    async fn create_header_index(&self) {
        use sqlx::{ConnectOptions as _, Executor as _};
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.dir.join("data/tansu.db"))
            .busy_timeout(Duration::from_secs(10));
        let mut conn = options.connect().await.expect("open the broker's storage");
        conn.execute("create index if not exists minizon_header_record on header (topition, offset_id)")
            .await
            .expect("create the broker's header index");
    }

    /// Creates a topic.
    pub async fn create_topic(&self, name: &str, partitions: u32) {
        let output = Command::new(&self.bin)
            .args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker", &self.url()])
            .current_dir(&self.dir)
            .output()
            .await
            .expect("run tansu topic create");
        assert!(output.status.success(), "create topic {name}: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("the broker is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing answers, like a hung or partitioned broker.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the broker (SIGKILL): connections are refused until [`TestBroker::restart`].
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill the broker");
        }
    }

    /// Starts the broker again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Number of records in `topic` (sum over partitions of high minus low watermark).
    pub async fn count(&self, topic: &str) -> i64 {
        let (bootstrap, topic) = (self.bootstrap(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer = plain_consumer(&bootstrap);
            watermarks(&consumer, &topic).iter().map(|(_, low, high)| high - low).sum()
        })
        .await
        .expect("count task")
    }

    /// Every record of `topic`, by partition and offset: a plain consumer reads each partition from its low to
    /// its high watermark (taken at the call), so the result is exact, not "whatever arrived in time".
    pub async fn read_all(&self, topic: &str) -> Vec<Record> {
        let (bootstrap, topic) = (self.bootstrap(), topic.to_owned());
        tokio::task::spawn_blocking(move || read_all_blocking(&bootstrap, &topic)).await.expect("read task")
    }

    /// Offsets consumer group `group` has committed on `topic`, by partition (absent: nothing committed).
    pub async fn committed(&self, group: &str, topic: &str) -> Vec<(i32, Option<i64>)> {
        let (bootstrap, group, topic) = (self.bootstrap(), group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .expect("create a consumer");
            let mut partitions = TopicPartitionList::new();
            for (partition, _, _) in watermarks(&consumer, &topic) {
                partitions.add_partition(&topic, partition);
            }
            // Reads the group's offsets without joining it.
            let committed = consumer.committed_offsets(partitions, Duration::from_secs(10)).expect("committed offsets");
            committed
                .elements()
                .iter()
                .map(|element| match element.offset() {
                    Offset::Offset(offset) => (element.partition(), Some(offset)),
                    _ => (element.partition(), None),
                })
                .collect()
        })
        .await
        .expect("committed task")
    }

    /// Waits (bounded) until consumer group `group` has committed every record now in `topic`: from then on,
    /// everything it will ever do with those records is done, so counts taken after it are final.
    pub async fn wait_until_consumed(&self, group: &str, topic: &str, limit: Duration) {
        let (bootstrap, owned_topic) = (self.bootstrap(), topic.to_owned());
        let ends: Vec<(i32, i64, i64)> =
            tokio::task::spawn_blocking(move || watermarks(&plain_consumer(&bootstrap), &owned_topic))
                .await
                .expect("watermarks task");
        crate::poll::until(&format!("group {group} to consume all of {topic}"), limit, || async {
            let committed = self.committed(group, topic).await;
            ends.iter()
                .all(|&(partition, low, high)| {
                    high == low
                        || committed.iter().any(|&(p, offset)| p == partition && offset.is_some_and(|o| o >= high))
                })
                .then_some(())
        })
        .await;
    }

    /// Produces one record, waiting for the acknowledgement.
    pub async fn produce(&self, topic: &str, key: &str, payload: &[u8], headers: &[(&str, &str)]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("message.timeout.ms", "20000")
            .create()
            .expect("create a producer");
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header { key: name, value: Some(*value) });
        }
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload).headers(owned),
                Timeout::After(Duration::from_secs(20)),
            )
            .await
            .map_err(|(error, _)| error)
            .expect("produce a record");
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // A paused broker cannot act on SIGKILL until it is continued; kill_on_drop sends SIGKILL after this.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status();
            }
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!("broker log kept: {}", self.dir.join("broker.log").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition it was read from.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// The key, as text.
    pub key: Option<String>,
    /// The value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    /// The value decoded as an order event (proto3 JSON); panics if it is not one.
    pub fn event(&self) -> minizon_proto::events::OrderStatusChanged {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|error| panic!("record {}/{} is not an event: {error}", self.partition, self.offset))
    }
}

/// With `TEST_LOG` set (an `EnvFilter`, e.g. `info,loms=debug`), the services' logs go to the test output: the
/// event tests cross processes and threads, and their logs are how a failure is understood.
fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = minizon_common::telemetry::init(
            "minizon-tests",
            &minizon_common::telemetry::LogArgs { log_filter: filter, ..Default::default() },
        );
    }
}

/// A port nothing listens on now (for a child process that must be told its port).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|listener| listener.local_addr()).expect("a free port").port()
}

fn plain_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Assigned partitions, not a subscription: the group id is required by the client but never joined.
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a consumer")
}

fn watermarks(consumer: &BaseConsumer, topic: &str) -> Vec<(i32, i64, i64)> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).expect("topic metadata");
    let partitions: Vec<i32> =
        metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    partitions
        .into_iter()
        .map(|partition| {
            let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).expect("watermarks");
            (partition, low, high)
        })
        .collect()
}

fn read_all_blocking(bootstrap: &str, topic: &str) -> Vec<Record> {
    let consumer = plain_consumer(bootstrap);
    let mut pending: Vec<(i32, i64)> = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for (partition, low, high) in watermarks(&consumer, topic) {
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low)).expect("assign");
            pending.push((partition, high));
        }
    }
    let mut records = Vec::new();
    if pending.is_empty() {
        return records;
    }
    consumer.assign(&assignment).expect("assign the partitions");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !pending.is_empty() {
        assert!(std::time::Instant::now() < deadline, "timed out reading {topic}; still waiting for {pending:?}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("read a record");
        let headers = message
            .headers()
            .map(|headers| {
                headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
            })
            .unwrap_or_default();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        });
        let (partition, offset) = (message.partition(), message.offset());
        pending.retain(|&(p, high)| !(p == partition && offset + 1 >= high));
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    records
}
