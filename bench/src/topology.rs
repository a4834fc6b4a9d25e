//! The production topology as processes on this machine: the tansu broker (through `scripts/kafka.sh`), LOMS
//! replicas, ProductService, Checkout and Notifications, each in its own process group with its log and pid file
//! in one run directory. `make up` starts it and leaves it running, `make down` stops exactly what the pid files
//! name, and the soak starts the same thing and keeps the handles to kill and restart its parts.

use std::{
    fs::OpenOptions,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

use crate::target;

/// How long a service may take to become ready (the broker creates its topics, LOMS migrates its database).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long `down` waits for a service to stop after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The line `scripts/kafka.sh start` logs once the broker listens and the topics exist.
const BROKER_READY_LINE: &str = "kafka.sh: ready";

/// Where the production topology runs: one flag (and variable) per setting.
#[derive(Debug, Clone, clap::Args)]
pub struct TopologyArgs {
    /// Directory of the built binaries.
    #[arg(long, env = "UP_BIN_DIR", default_value = "target/debug")]
    pub bin_dir: PathBuf,

    /// Logs, pid files and the broker's data.
    #[arg(long, env = "UP_RUN_DIR", default_value = "data/up")]
    pub run_dir: PathBuf,

    /// The broker's start script.
    #[arg(long, env = "UP_KAFKA_SCRIPT", default_value = "scripts/kafka.sh")]
    pub kafka_script: PathBuf,

    /// The broker's address.
    #[arg(long, env = "KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    pub kafka_listen: SocketAddr,

    /// PostgreSQL server, without a database name.
    #[arg(long, env = "UP_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres_url: String,

    /// Prefix of the database names (`<prefix>loms`, `<prefix>checkout`, `<prefix>notifications`).
    #[arg(long, env = "UP_DATABASE_PREFIX", default_value = "")]
    pub database_prefix: String,

    /// LOMS replicas on one database, on consecutive ports from `--loms-port`.
    #[arg(long, env = "LOMS_REPLICAS", default_value_t = 1)]
    pub loms_replicas: u16,

    /// Port of the first LOMS replica.
    #[arg(long, env = "UP_LOMS_PORT", default_value_t = 50061)]
    pub loms_port: u16,

    /// Checkout's port.
    #[arg(long, env = "UP_CHECKOUT_PORT", default_value_t = 50052)]
    pub checkout_port: u16,

    /// ProductService's port.
    #[arg(long, env = "UP_PRODUCT_PORT", default_value_t = 50053)]
    pub product_port: u16,

    /// LOMS admin token.
    #[arg(long, env = "LOMS_ADMIN_TOKEN", default_value = "dev-admin-token", hide_env_values = true)]
    pub admin_token: String,

    /// Log filter of the services (their `RUST_LOG`).
    #[arg(long, env = "UP_SERVICE_LOG", default_value = "info")]
    pub service_log: String,
}

impl TopologyArgs {
    /// The layout these flags describe, with absolute paths (pid files name the programs they started).
    pub fn layout(&self) -> anyhow::Result<Layout> {
        let absolute = |path: &std::path::Path| std::path::absolute(path);
        Ok(Layout {
            bin_dir: absolute(&self.bin_dir)?,
            run_dir: absolute(&self.run_dir)?,
            kafka_script: absolute(&self.kafka_script)?,
            kafka_listen: self.kafka_listen,
            postgres: self.postgres_url.clone(),
            database_prefix: self.database_prefix.clone(),
            loms_replicas: self.loms_replicas,
            loms_port: self.loms_port,
            checkout_port: self.checkout_port,
            product_port: self.product_port,
            admin_token: self.admin_token.clone(),
            loms_env: Vec::new(),
            checkout_env: Vec::new(),
            notifications_env: Vec::new(),
            log_filter: self.service_log.clone(),
        })
    }
}

/// Where everything listens and what it runs on.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Directory of the built binaries (`target/debug`).
    pub bin_dir: PathBuf,
    /// Logs, pid files and the broker's data.
    pub run_dir: PathBuf,
    /// `scripts/kafka.sh`.
    pub kafka_script: PathBuf,
    /// The broker's address.
    pub kafka_listen: SocketAddr,
    /// PostgreSQL server URL without a database, e.g. `postgres://postgres@127.0.0.1:5432`.
    pub postgres: String,
    /// Prefix of the three database names (`loms`, `checkout`, `notifications`); empty for the services' defaults.
    pub database_prefix: String,
    /// LOMS replicas, on consecutive ports from `loms_port`.
    pub loms_replicas: u16,
    /// Port of the first LOMS replica.
    pub loms_port: u16,
    /// Checkout's port.
    pub checkout_port: u16,
    /// ProductService's port.
    pub product_port: u16,
    /// LOMS admin token.
    pub admin_token: String,
    /// Extra settings of every LOMS replica (`LOMS_PAYMENT_TIMEOUT=5s`, …).
    pub loms_env: Vec<(String, String)>,
    /// Extra settings of Checkout.
    pub checkout_env: Vec<(String, String)>,
    /// Extra settings of Notifications (its sinks).
    pub notifications_env: Vec<(String, String)>,
    /// `RUST_LOG` of the services.
    pub log_filter: String,
}

/// How a started service shows it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Its gRPC health check answers SERVING.
    Grpc(String),
    /// Its log gains this line.
    LogLine(&'static str),
    /// It is still running a moment after the start (a consumer with no port of its own).
    Running,
}

/// One process of the topology.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Name, also of its log and pid files: `broker`, `loms-1`, `checkout`, …
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its settings (on top of the caller's environment).
    pub env: Vec<(String, String)>,
    /// Where it listens, for people (`127.0.0.1:50061`), if it listens.
    pub listens: Option<String>,
    /// How to tell it is ready.
    pub ready: Ready,
}

impl Layout {
    /// The database URL of `service` (`loms`, `checkout`, `notifications`).
    pub fn database_url(&self, service: &str) -> String {
        format!("{}/{}{service}", self.postgres.trim_end_matches('/'), self.database_prefix)
    }

    /// gRPC URL of LOMS replica `replica` (1-based).
    pub fn loms_url(&self, replica: u16) -> String {
        format!("http://127.0.0.1:{}", self.loms_port + replica - 1)
    }

    /// gRPC URL of Checkout.
    pub fn checkout_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.checkout_port)
    }

    /// gRPC URL of ProductService.
    pub fn product_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.product_port)
    }

    /// Refuses layouts whose ports overlap or overflow.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=16).contains(&self.loms_replicas), "LOMS replicas must be 1..=16");
        let last = self.loms_port.checked_add(self.loms_replicas - 1).context("LOMS ports overflow")?;
        let loms = self.loms_port..=last;
        for (name, port) in [("Checkout", self.checkout_port), ("ProductService", self.product_port)] {
            anyhow::ensure!(!loms.contains(&port), "{name}'s port {port} is one of the LOMS replicas' ({loms:?})");
        }
        anyhow::ensure!(self.checkout_port != self.product_port, "Checkout and ProductService share a port");
        Ok(())
    }

    /// Every process, in start order: the broker, LOMS replicas, ProductService, Checkout, Notifications.
    pub fn services(&self) -> Vec<ServiceSpec> {
        // Every service's metrics endpoint on a free port: the replicas share a host, and so may two topologies.
        let metrics = [
            ("LOMS_METRICS_ADDR", "127.0.0.1:0"),
            ("CHECKOUT_METRICS_ADDR", "127.0.0.1:0"),
            ("PRODUCT_SERVICE_METRICS_ADDR", "127.0.0.1:0"),
            ("NOTIFICATIONS_METRICS_ADDR", "127.0.0.1:0"),
        ];
        let common: Vec<(String, String)> = std::iter::once(("RUST_LOG".to_owned(), self.log_filter.clone()))
            .chain(metrics.iter().map(|&(name, addr)| (name.to_owned(), addr.to_owned())))
            .collect();
        let kafka = self.kafka_listen.to_string();
        let mut services = vec![ServiceSpec {
            name: "broker".into(),
            program: self.kafka_script.clone(),
            args: vec!["start".into()],
            env: vec![
                ("KAFKA_LISTEN".into(), kafka.clone()),
                ("KAFKA_DATA_DIR".into(), self.run_dir.join("kafka").display().to_string()),
            ],
            listens: Some(kafka.clone()),
            ready: Ready::LogLine(BROKER_READY_LINE),
        }];
        for replica in 1..=self.loms_replicas {
            let listen = format!("127.0.0.1:{}", self.loms_port + replica - 1);
            let mut env = vec![
                ("LOMS_LISTEN".into(), listen.clone()),
                ("LOMS_DATABASE_URL".into(), self.database_url("loms")),
                ("LOMS_ADMIN_TOKEN".into(), self.admin_token.clone()),
                ("LOMS_KAFKA_BROKERS".into(), kafka.clone()),
                ("LOMS_OUTBOX_RELAY".into(), "true".into()),
            ];
            env.extend(self.loms_env.iter().cloned());
            services.push(ServiceSpec {
                name: format!("loms-{replica}"),
                program: self.bin_dir.join("loms"),
                args: vec!["serve".into()],
                env,
                listens: Some(listen),
                ready: Ready::Grpc(self.loms_url(replica)),
            });
        }
        let product_listen = format!("127.0.0.1:{}", self.product_port);
        services.push(ServiceSpec {
            name: "product-service".into(),
            program: self.bin_dir.join("product-service"),
            args: Vec::new(),
            env: vec![("PRODUCT_SERVICE_LISTEN".into(), product_listen.clone())],
            listens: Some(product_listen),
            ready: Ready::Grpc(self.product_url()),
        });
        let checkout_listen = format!("127.0.0.1:{}", self.checkout_port);
        services.push(ServiceSpec {
            name: "checkout".into(),
            program: self.bin_dir.join("checkout"),
            args: Vec::new(),
            env: vec![
                ("CHECKOUT_LISTEN".into(), checkout_listen.clone()),
                ("CHECKOUT_DATABASE_URL".into(), self.database_url("checkout")),
                ("CHECKOUT_LOMS_URL".into(), self.loms_url(1)),
                ("CHECKOUT_PRODUCT_URL".into(), self.product_url()),
            ]
            .into_iter()
            .chain(self.checkout_env.iter().cloned())
            .collect(),
            listens: Some(checkout_listen),
            ready: Ready::Grpc(self.checkout_url()),
        });
        let mut env = vec![
            ("NOTIFICATIONS_KAFKA_BROKERS".into(), kafka),
            ("NOTIFICATIONS_DATABASE_URL".into(), self.database_url("notifications")),
        ];
        env.extend(self.notifications_env.iter().cloned());
        services.push(ServiceSpec {
            name: "notifications".into(),
            program: self.bin_dir.join("notifications"),
            args: Vec::new(),
            env,
            listens: None,
            ready: Ready::Running,
        });
        for service in &mut services {
            service.env.splice(0..0, common.iter().cloned());
        }
        services
    }
}

impl ServiceSpec {
    /// Its log file in `run_dir`.
    pub fn log_path(&self, run_dir: &Path) -> PathBuf {
        run_dir.join(format!("{}.log", self.name))
    }

    fn pid_path(&self, run_dir: &Path) -> PathBuf {
        pid_path(run_dir, &self.name)
    }
}

fn pid_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.pid"))
}

/// A service this process started.
#[derive(Debug)]
pub struct Running {
    /// What it runs.
    pub spec: ServiceSpec,
    child: Child,
    pid: Pid,
}

impl Running {
    /// Its process id, which is also its process group's.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `signal` to its whole process group (the broker's script and the broker itself, say).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        rustix::process::kill_process_group(self.pid, signal)
            .with_context(|| format!("signal {signal:?} to {} (process group {:?})", self.spec.name, self.pid))
    }

    /// SIGKILLs its process group and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        // Already gone (it crashed): nothing to signal; reap it below all the same.
        let _ = rustix::process::kill_process_group(self.pid, Signal::KILL);
        self.child.wait().await.with_context(|| format!("reap {}", self.spec.name))?;
        Ok(())
    }

    /// Stops it the polite way (SIGTERM to its group), SIGKILL after [`STOP_TIMEOUT`]; removes its pid file.
    pub async fn stop(&mut self, run_dir: &Path) {
        // A stopped (SIGSTOP) process cannot handle SIGTERM until it continues.
        let _ = rustix::process::kill_process_group(self.pid, Signal::CONT);
        let _ = rustix::process::kill_process_group(self.pid, Signal::TERM);
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_err() {
            tracing::warn!(service = %self.spec.name, "did not stop within {STOP_TIMEOUT:?}: SIGKILL");
            let _ = self.kill().await;
        }
        let _ = std::fs::remove_file(self.spec.pid_path(run_dir));
    }

    /// Whether it has exited, with how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Starts `spec` in its own process group, its output appended to its log, and waits until it is ready.
pub async fn start(spec: &ServiceSpec, run_dir: &Path) -> anyhow::Result<Running> {
    let log_path = spec.log_path(run_dir);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: a Ctrl-C in the terminal that started it does not reach it, and a signal to the group
        // reaches every process of the service (the broker is a script and its child).
        .process_group(0);
    let child = command.spawn().with_context(|| format!("start {} ({})", spec.name, spec.program.display()))?;
    let raw = child.id().and_then(|id| i32::try_from(id).ok()).context("a started child has a pid")?;
    let pid = Pid::from_raw(raw).context("a started child has a positive pid")?;
    let mut running = Running { spec: spec.clone(), child, pid };
    let pid_file = format!("{raw}\n{}\n", spec.program.display());
    std::fs::write(spec.pid_path(run_dir), pid_file).context("write the pid file")?;
    if let Err(error) = wait_ready(&mut running, &log_path, log_start).await {
        running.stop(run_dir).await;
        return Err(error.context(format!("{} did not start; its log: {}", spec.name, log_path.display())));
    }
    Ok(running)
}

async fn wait_ready(running: &mut Running, log_path: &Path, log_start: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let ready = running.spec.ready.clone();
    if let Ready::Running = ready {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    loop {
        if let Some(status) = running.exited() {
            anyhow::bail!("it exited ({status})");
        }
        let is_ready = match &ready {
            Ready::Grpc(url) => target::wait_serving(url, Duration::from_millis(500)).await.is_ok(),
            Ready::LogLine(line) => {
                let text = std::fs::read(log_path).unwrap_or_default();
                let new = text.get(usize::try_from(log_start).unwrap_or(usize::MAX)..).unwrap_or_default();
                String::from_utf8_lossy(new).contains(line)
            }
            Ready::Running => true,
        };
        if is_ready {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not ready within {READY_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts every service of `layout` in order; on a failure stops those already started.
pub async fn start_all(layout: &Layout) -> anyhow::Result<Vec<Running>> {
    layout.validate()?;
    std::fs::create_dir_all(&layout.run_dir).with_context(|| format!("create {}", layout.run_dir.display()))?;
    let specs = layout.services();
    if let Some(alive) = specs.iter().find(|spec| recorded_pid(&layout.run_dir, &spec.name).is_some()) {
        anyhow::bail!(
            "{} of an earlier start is still running (pid file {}): `make down` first",
            alive.name,
            alive.pid_path(&layout.run_dir).display()
        );
    }
    let mut started: Vec<Running> = Vec::new();
    for spec in &specs {
        tracing::info!(service = %spec.name, "starting");
        match start(spec, &layout.run_dir).await {
            Ok(running) => started.push(running),
            Err(error) => {
                stop_all(&mut started, &layout.run_dir).await;
                return Err(error);
            }
        }
    }
    Ok(started)
}

/// Stops `services` in reverse start order (Notifications first, the broker last).
pub async fn stop_all(services: &mut [Running], run_dir: &Path) {
    for service in services.iter_mut().rev() {
        service.stop(run_dir).await;
    }
}

/// The pid recorded in the pid file of `name`, if that process still runs the recorded program (a pid reused by
/// another process after a reboot is not ours to signal).
fn recorded_pid(run_dir: &Path, name: &str) -> Option<Pid> {
    let text = std::fs::read_to_string(pid_path(run_dir, name)).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let program = lines.next()?.trim().to_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // A script runs as `bash <script> …`: the program is one of the first two arguments.
    let runs_program = cmdline.split(|byte| *byte == 0).take(2).any(|arg| arg == program.as_bytes());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true);
    (runs_program && !zombie).then(|| Pid::from_raw(pid)).flatten()
}

/// `make down`: stops every process the pid files of `run_dir` name — whatever replica counts started them —
/// Notifications first and the broker last: SIGTERM to its group, SIGKILL after [`STOP_TIMEOUT`]. Returns the
/// names of those it stopped.
pub async fn down(run_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".pid").map(str::to_owned))
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error).with_context(|| format!("read {}", run_dir.display())),
    };
    names.sort_by_key(|name| (stop_rank(name), name.clone()));
    let mut stopped = Vec::new();
    for name in names {
        let Some(pid) = recorded_pid(run_dir, &name) else {
            let _ = std::fs::remove_file(pid_path(run_dir, &name));
            continue;
        };
        let _ = rustix::process::kill_process_group(pid, Signal::CONT);
        rustix::process::kill_process_group(pid, Signal::TERM)
            .with_context(|| format!("SIGTERM to {name} (process group {pid:?})"))?;
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while recorded_pid(run_dir, &name).is_some() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(service = %name, "did not stop within {STOP_TIMEOUT:?}: SIGKILL");
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = std::fs::remove_file(pid_path(run_dir, &name));
        stopped.push(name);
    }
    Ok(stopped)
}

/// Stop order: the consumers of others first, the broker (which everyone talks to) last.
fn stop_rank(name: &str) -> u8 {
    match name {
        "notifications" => 0,
        "checkout" => 1,
        "product-service" => 2,
        "broker" => 4,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(replicas: u16) -> Layout {
        Layout {
            bin_dir: "target/debug".into(),
            run_dir: "data/up".into(),
            kafka_script: "scripts/kafka.sh".into(),
            kafka_listen: "127.0.0.1:9092".parse().unwrap(),
            postgres: "postgres://postgres@127.0.0.1:5432/".into(),
            database_prefix: "soak_".into(),
            loms_replicas: replicas,
            loms_port: 50061,
            checkout_port: 50052,
            product_port: 50053,
            admin_token: "token".into(),
            loms_env: vec![("LOMS_PAYMENT_TIMEOUT".into(), "5s".into())],
            checkout_env: Vec::new(),
            notifications_env: Vec::new(),
            log_filter: "info".into(),
        }
    }

    #[test]
    fn replicas_listen_on_consecutive_ports_and_share_one_database() {
        let services = layout(3).services();
        let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["broker", "loms-1", "loms-2", "loms-3", "product-service", "checkout", "notifications"]);
        let loms: Vec<_> = services.iter().filter(|s| s.name.starts_with("loms")).collect();
        let env = |spec: &ServiceSpec, key: &str| spec.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(env(loms[2], "LOMS_LISTEN").as_deref(), Some("127.0.0.1:50063"));
        assert!(loms.iter().all(|s| env(s, "LOMS_DATABASE_URL").as_deref()
            == Some("postgres://postgres@127.0.0.1:5432/soak_loms")));
        assert!(loms.iter().all(|s| env(s, "LOMS_PAYMENT_TIMEOUT").as_deref() == Some("5s")));
    }

    #[test]
    fn overlapping_ports_are_refused() {
        let mut overlapping = layout(3);
        overlapping.loms_port = 50051;
        assert!(overlapping.validate().is_err(), "LOMS 50051..=50053 covers Checkout's 50052");
        assert!(layout(3).validate().is_ok());
        assert!(layout(0).validate().is_err());
    }

    #[test]
    fn a_pid_file_of_a_process_that_is_gone_names_nothing() {
        let dir = std::env::temp_dir().join(format!("minizon-topology-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The pid of this test process, but another program: not ours to signal.
        std::fs::write(pid_path(&dir, "loms-1"), format!("{}\n/nonexistent/loms\n", std::process::id())).unwrap();
        assert_eq!(recorded_pid(&dir, "loms-1"), None);
        assert_eq!(recorded_pid(&dir, "checkout"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
