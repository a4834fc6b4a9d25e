//! A Notifications worker run in-process on its own schema, and an HTTP stand-in for its sinks (the Telegram Bot
//! API and a webhook) that records what it was sent and can be told to fail.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    http::{StatusCode, Uri},
    response::IntoResponse,
};
use notifications::{Application, Config, SinkKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::TestDb;

/// The bot token the stand-in expects in Telegram paths.
pub const TELEGRAM_TOKEN: &str = "123456:test-token";
/// The chat the test workers send to.
pub const TELEGRAM_CHAT: &str = "-100200300";

/// A running worker.
#[derive(Debug)]
pub struct TestNotifications {
    /// Its settings.
    pub config: Config,
    /// Its database schema.
    pub db: TestDb,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestNotifications {
    /// A worker on a fresh database of the suite's backend, consuming from `brokers`, sending to the log and both
    /// HTTP sinks of `sinks`, with quick retries; `configure` adjusts the rest.
    pub async fn start(brokers: &str, sinks: &SinkStandIn, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_database(TestDb::new().await.url, brokers);
        config.sinks = vec![SinkKind::Log, SinkKind::Telegram, SinkKind::Webhook];
        config.telegram_base_url = sinks.url();
        config.telegram_token = Some(TELEGRAM_TOKEN.to_owned().into());
        config.telegram_chat_id = Some(TELEGRAM_CHAT.to_owned());
        config.webhook_url = Some(format!("{}/webhook", sinks.url()));
        config.retry_min_delay = std::time::Duration::from_millis(20);
        config.retry_max_delay = std::time::Duration::from_millis(200);
        // A replica of its own: workers of one test share the host (and the broker), so not its name.
        config.group_instance_id = Some(format!("notifications-{}", uuid::Uuid::new_v4().simple()));
        configure(&mut config);
        Self::launch(config).await
    }

    async fn launch(config: Config) -> Self {
        let db = TestDb { url: config.database_url.clone(), schema: name_of(&config.database_url) };
        let app = Application::build(config.clone()).await.expect("notifications starts");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { config, db, shutdown, task }
    }

    /// True while the worker runs (it has not stopped or crashed).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the worker gracefully (it finishes the event in hand and commits) and waits for it.
    pub async fn stop(self) -> Config {
        self.shutdown.cancel();
        self.task.await.expect("notifications task").expect("notifications stops cleanly");
        self.config
    }
}

/// The schema (PostgreSQL) or file stem (SQLite) a test database URL names.
fn name_of(url: &str) -> String {
    match url.split_once("search_path%3D") {
        Some((_, schema)) => schema.to_owned(),
        None => url.rsplit('/').next().unwrap_or_default().trim_end_matches(".db").to_owned(),
    }
}

/// One request the stand-in answered with success.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path, e.g. `/webhook` or `/bot<token>/sendMessage`.
    pub path: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    failed_attempts: usize,
    /// Requests whose body contains this text are answered with the status (503 unless told otherwise).
    fail_matching: Option<(String, StatusCode)>,
    /// Every request is answered 503: the receiver is down.
    down: bool,
}

/// An HTTP server on `127.0.0.1:0` standing in for the Telegram Bot API and a webhook receiver.
#[derive(Debug, Clone)]
pub struct SinkStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SinkStandIn {
    /// Starts the server.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let handler_state = state.clone();
        let app = Router::new().fallback(move |uri: Uri, body: Bytes| {
            let state = handler_state.clone();
            async move { answer(&state, uri, &body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the sink stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, _server: Arc::new(AbortOnDrop(server)) }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, answer 503 to every request whose body contains `needle`.
    pub fn fail_requests_containing(&self, needle: &str) {
        self.refuse_requests_containing(needle, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// From now on, answer `status` (with a Bot-API-style JSON refusal) to every request whose body contains
    /// `needle`.
    pub fn refuse_requests_containing(&self, needle: &str, status: StatusCode) {
        self.lock().fail_matching = Some((needle.to_owned(), status));
    }

    /// Answer every request normally again.
    pub fn stop_refusing(&self) {
        self.lock().fail_matching = None;
    }

    /// From now on, answer 503 to every request (an outage), until [`SinkStandIn::recover`].
    pub fn go_down(&self) {
        self.lock().down = true;
    }

    /// Ends the outage.
    pub fn recover(&self) {
        self.lock().down = false;
    }

    /// Calls to `path` answered with success, in arrival order.
    pub fn calls_to(&self, path: &str) -> Vec<Received> {
        self.lock().received.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Webhook calls answered with success, in arrival order.
    pub fn webhook_calls(&self) -> Vec<Received> {
        self.lock().received.iter().filter(|r| r.path == "/webhook").cloned().collect()
    }

    /// Telegram `sendMessage` calls answered with success, in arrival order.
    pub fn telegram_calls(&self) -> Vec<Received> {
        let path = format!("/bot{TELEGRAM_TOKEN}/sendMessage");
        self.lock().received.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Requests answered with a failure.
    pub fn failed_attempts(&self) -> usize {
        self.lock().failed_attempts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn answer(state: &Mutex<State>, uri: Uri, body: &[u8]) -> axum::response::Response {
    let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = String::from_utf8_lossy(body);
    if state.down {
        state.failed_attempts += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "down on purpose").into_response();
    }
    if let Some((_, status)) = state.fail_matching.as_ref().filter(|(needle, _)| text.contains(needle.as_str())) {
        let status = *status;
        state.failed_attempts += 1;
        let refusal = serde_json::json!({
            "ok": false,
            "error_code": status.as_u16(),
            "description": format!("refused on purpose with {status}"),
        });
        return (status, Json(refusal)).into_response();
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let path = uri.path().to_owned();
    if path.starts_with("/bot") {
        let token_ok = path == format!("/bot{TELEGRAM_TOKEN}/sendMessage");
        if !token_ok {
            let refusal = serde_json::json!({"ok": false, "error_code": 401, "description": "Unauthorized"});
            return (StatusCode::UNAUTHORIZED, Json(refusal)).into_response();
        }
        state.received.push(Received { path, body: json });
        return Json(serde_json::json!({"ok": true, "result": {"message_id": state.received.len()}})).into_response();
    }
    state.received.push(Received { path, body: json });
    StatusCode::NO_CONTENT.into_response()
}
