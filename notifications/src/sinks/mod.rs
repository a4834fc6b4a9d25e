//! Where notifications go. Each sink says whether a failure is worth retrying (the endpoint is down or
//! overloaded) or not (it refused the request as such), so the worker retries only what can succeed later.

mod log;
mod telegram;
mod webhook;

use std::time::Duration;

use minizon_proto::events::OrderStatusChanged;
use secrecy::ExposeSecret;
use uuid::Uuid;

pub use self::{log::LogSink, telegram::TelegramSink, webhook::WebhookSink};
use crate::config::{Config, SinkKind};

/// One notification: the event and the text rendered for it.
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    /// The event id; sinks that call out pass it on so that the receiver can de-duplicate too.
    pub event_id: Uuid,
    /// The event.
    pub event: &'a OrderStatusChanged,
    /// The human-readable message.
    pub text: &'a str,
}

/// Why a sink did not take a notification.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The endpoint is unreachable, slow, overloaded or failing: the same call may succeed later.
    #[error("{0}")]
    Transient(String),
    /// The endpoint refused the notification itself: retrying the same call cannot help.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    /// True when retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// Classifies an HTTP response status that is not a success: 408, 429 and 5xx are worth retrying.
    fn from_status(status: reqwest::StatusCode, body: &str) -> Self {
        let message = format!("HTTP {status}: {}", body.chars().take(300).collect::<String>());
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            Self::Transient(message)
        } else {
            Self::Permanent(message)
        }
    }

    /// Classifies a transport error. The URL is left out: the Telegram URL carries the bot token.
    fn from_transport(error: reqwest::Error) -> Self {
        let error = error.without_url();
        if error.is_builder() {
            Self::Permanent(format!("invalid request: {error}"))
        } else {
            Self::Transient(format!("transport: {error}"))
        }
    }
}

/// A configured sink.
#[derive(Debug, Clone)]
pub enum Sink {
    /// See [`LogSink`].
    Log(LogSink),
    /// See [`TelegramSink`].
    Telegram(TelegramSink),
    /// See [`WebhookSink`].
    Webhook(WebhookSink),
}

impl Sink {
    /// The sinks the configuration asks for, each once, in the order given.
    pub fn from_config(config: &Config) -> anyhow::Result<Vec<Self>> {
        let http = reqwest::Client::builder()
            .timeout(config.sink_timeout)
            .connect_timeout(config.sink_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("minizon-notifications/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut sinks = Vec::new();
        let mut seen = Vec::new();
        for kind in &config.sinks {
            if seen.contains(kind) {
                continue;
            }
            seen.push(*kind);
            sinks.push(match kind {
                SinkKind::Log => Self::Log(LogSink),
                SinkKind::Telegram => {
                    let token = config
                        .telegram_token
                        .as_ref()
                        .filter(|token| !token.expose_secret().is_empty())
                        .ok_or_else(|| anyhow::anyhow!("the telegram sink needs --telegram-token"))?;
                    let chat_id = config
                        .telegram_chat_id
                        .clone()
                        .filter(|chat| !chat.is_empty())
                        .ok_or_else(|| anyhow::anyhow!("the telegram sink needs --telegram-chat-id"))?;
                    Self::Telegram(TelegramSink::new(http.clone(), &config.telegram_base_url, token, chat_id)?)
                }
                SinkKind::Webhook => {
                    let url = config
                        .webhook_url
                        .as_deref()
                        .ok_or_else(|| anyhow::anyhow!("the webhook sink needs --webhook-url"))?;
                    Self::Webhook(WebhookSink::new(http.clone(), url)?)
                }
            });
        }
        anyhow::ensure!(!sinks.is_empty(), "at least one sink is needed");
        Ok(sinks)
    }

    /// The sink's name, as stored in the de-duplication table and named in dead-letter headers.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Log(_) => "log",
            Self::Telegram(_) => "telegram",
            Self::Webhook(_) => "webhook",
        }
    }

    /// Hands one notification to the sink, once (retries are the caller's).
    pub async fn send(&self, notification: Notification<'_>) -> Result<(), SinkError> {
        match self {
            Self::Log(sink) => {
                sink.send(notification);
                Ok(())
            }
            Self::Telegram(sink) => sink.send(notification).await,
            Self::Webhook(sink) => sink.send(notification).await,
        }
    }
}
