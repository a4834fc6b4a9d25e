//! The webhook receiver Notifications posts to during the soak: counts every notification by event id, and
//! answers 503 while an outage is switched on.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use axum::{Router, body::Bytes, http::StatusCode, routing::post};
use tokio::task::JoinHandle;

/// What the receiver has been sent.
#[derive(Debug, Default)]
struct State {
    /// Successful deliveries per event id.
    received: Mutex<HashMap<String, u32>>,
    /// Whether to refuse every call with 503 (the outage).
    failing: AtomicBool,
    /// Calls refused during outages.
    refused: AtomicU64,
    /// Calls whose body had no event id (they are answered 400, a permanent refusal).
    malformed: AtomicU64,
}

/// A running receiver on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

/// The receiver's counts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Deliveries per event id.
    pub by_event: HashMap<String, u32>,
    /// Calls answered 503 during outages.
    pub refused: u64,
    /// Calls without an event id.
    pub malformed: u64,
}

impl Receiver {
    /// Starts the receiver on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(State::default());
        let handler_state = state.clone();
        let app = Router::new().route(
            "/webhook",
            post(move |body: Bytes| {
                let state = handler_state.clone();
                async move { answer(&state, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the webhook receiver")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the webhook receiver stopped");
            }
        });
        Ok(Self { addr, state, server })
    }

    /// The URL Notifications posts to.
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Starts (`true`) or ends (`false`) an outage: every call is answered 503 meanwhile.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// What it has received so far.
    pub fn snapshot(&self) -> Received {
        let by_event = self.state.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Received {
            by_event,
            refused: self.state.refused.load(Ordering::Relaxed),
            malformed: self.state.malformed.load(Ordering::Relaxed),
        }
    }

    /// Distinct events received so far.
    pub fn distinct(&self) -> usize {
        self.state.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(state: &State, body: &[u8]) -> StatusCode {
    if state.failing.load(Ordering::SeqCst) {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let event_id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("eventId")?.as_str().map(str::to_owned));
    let Some(event_id) = event_id else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    let mut received = state.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *received.entry(event_id).or_default() += 1;
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_counted_by_event_and_refused_during_an_outage() {
        let state = State::default();
        let body = |id: &str| serde_json::json!({"eventId": id, "orderId": 1, "text": "t"}).to_string();

        assert_eq!(answer(&state, body("a").as_bytes()), StatusCode::NO_CONTENT);
        assert_eq!(answer(&state, body("a").as_bytes()), StatusCode::NO_CONTENT);
        state.failing.store(true, Ordering::SeqCst);
        assert_eq!(answer(&state, body("b").as_bytes()), StatusCode::SERVICE_UNAVAILABLE);
        state.failing.store(false, Ordering::SeqCst);
        assert_eq!(answer(&state, b"{}"), StatusCode::BAD_REQUEST);

        let received = state.received.lock().unwrap().clone();
        assert_eq!(received.get("a"), Some(&2));
        assert_eq!(received.get("b"), None);
        assert_eq!(state.refused.load(Ordering::Relaxed), 1);
        assert_eq!(state.malformed.load(Ordering::Relaxed), 1);
    }
}
