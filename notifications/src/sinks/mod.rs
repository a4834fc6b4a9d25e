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
use crate::{
    config::{Config, SinkKind},
    message::Audience,
};

/// One notification: the event and the text rendered for it.
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    /// The event id; sinks that call out pass it on so that the receiver can de-duplicate too.
    pub event_id: Uuid,
    /// The event.
    pub event: &'a OrderStatusChanged,
    /// The human-readable message.
    pub text: &'a str,
    /// Whom it is for.
    pub audience: Audience,
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

/// A sink serving one audience: the unit of delivery, de-duplication and dead-lettering.
#[derive(Debug, Clone)]
pub struct Channel {
    audience: Audience,
    name: &'static str,
    sink: Sink,
}

/// The settings one audience's sinks are built from.
struct AudienceSettings<'a> {
    audience: Audience,
    kinds: &'a [SinkKind],
    telegram_chat_id: Option<&'a str>,
    webhook_url: Option<&'a str>,
    /// How the settings are spelled on the command line, for error messages.
    flag_prefix: &'static str,
}

impl Channel {
    /// The channels the configuration asks for: the customers' sinks, then the staff's, each kind once per
    /// audience, in the order given.
    pub fn from_config(config: &Config) -> anyhow::Result<Vec<Self>> {
        let http = reqwest::Client::builder()
            .timeout(config.sink_timeout)
            .connect_timeout(config.sink_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("minizon-notifications/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let customer = AudienceSettings {
            audience: Audience::Customer,
            kinds: &config.sinks,
            telegram_chat_id: config.telegram_chat_id.as_deref(),
            webhook_url: config.webhook_url.as_deref(),
            flag_prefix: "",
        };
        let staff = AudienceSettings {
            audience: Audience::Staff,
            kinds: &config.staff_sinks,
            telegram_chat_id: config.staff_telegram_chat_id.as_deref(),
            webhook_url: config.staff_webhook_url.as_deref(),
            flag_prefix: "staff-",
        };
        let mut channels = Vec::new();
        for settings in [customer, staff] {
            let mut seen = Vec::new();
            for kind in settings.kinds {
                if seen.contains(kind) {
                    continue;
                }
                seen.push(*kind);
                let sink = build_sink(*kind, &settings, config, &http)?;
                channels.push(Self { audience: settings.audience, name: channel_name(settings.audience, *kind), sink });
            }
        }
        anyhow::ensure!(channels.iter().any(|c| c.audience == Audience::Customer), "at least one sink is needed");
        Ok(channels)
    }

    /// The channel's name, as stored in the de-duplication table and named in dead-letter headers: the sink's
    /// kind for the customers (`log`, `telegram`, `webhook`), prefixed with `staff-` for the staff.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whom the channel tells.
    pub fn audience(&self) -> Audience {
        self.audience
    }

    /// Hands one notification to the channel's sink, once (retries are the caller's).
    pub async fn send(&self, notification: Notification<'_>) -> Result<(), SinkError> {
        self.sink.send(notification).await
    }
}

fn channel_name(audience: Audience, kind: SinkKind) -> &'static str {
    match (audience, kind) {
        (Audience::Customer, SinkKind::Log) => "log",
        (Audience::Customer, SinkKind::Telegram) => "telegram",
        (Audience::Customer, SinkKind::Webhook) => "webhook",
        (Audience::Staff, SinkKind::Log) => "staff-log",
        (Audience::Staff, SinkKind::Telegram) => "staff-telegram",
        (Audience::Staff, SinkKind::Webhook) => "staff-webhook",
    }
}

fn build_sink(
    kind: SinkKind,
    settings: &AudienceSettings<'_>,
    config: &Config,
    http: &reqwest::Client,
) -> anyhow::Result<Sink> {
    let prefix = settings.flag_prefix;
    Ok(match kind {
        SinkKind::Log => Sink::Log(LogSink),
        SinkKind::Telegram => {
            let token = config
                .telegram_token
                .as_ref()
                .filter(|token| !token.expose_secret().is_empty())
                .ok_or_else(|| anyhow::anyhow!("the {prefix}telegram sink needs --telegram-token"))?;
            let chat_id = settings
                .telegram_chat_id
                .filter(|chat| !chat.is_empty())
                .ok_or_else(|| anyhow::anyhow!("the {prefix}telegram sink needs --{prefix}telegram-chat-id"))?;
            Sink::Telegram(TelegramSink::new(http.clone(), &config.telegram_base_url, token, chat_id.to_owned())?)
        }
        SinkKind::Webhook => {
            let url = settings
                .webhook_url
                .filter(|url| !url.is_empty())
                .ok_or_else(|| anyhow::anyhow!("the {prefix}webhook sink needs --{prefix}webhook-url"))?;
            Sink::Webhook(WebhookSink::new(http.clone(), url)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sinks: &[SinkKind], staff: &[SinkKind]) -> Config {
        let mut config = Config::for_database("sqlite::memory:", "127.0.0.1:9092");
        config.sinks = sinks.to_vec();
        config.staff_sinks = staff.to_vec();
        config.telegram_token = Some("1:t".to_owned().into());
        config.telegram_chat_id = Some("1".into());
        config.staff_telegram_chat_id = Some("2".into());
        config.webhook_url = Some("http://127.0.0.1:1/customer".into());
        config.staff_webhook_url = Some("http://127.0.0.1:1/staff".into());
        config
    }

    fn names(channels: &[Channel]) -> Vec<(&'static str, Audience)> {
        channels.iter().map(|c| (c.name(), c.audience())).collect()
    }

    #[test]
    fn each_audience_gets_its_own_channels_with_names_of_their_own() {
        let channels = Channel::from_config(&config(
            &[SinkKind::Log, SinkKind::Webhook, SinkKind::Log],
            &[SinkKind::Telegram, SinkKind::Webhook],
        ))
        .unwrap();

        assert_eq!(
            names(&channels),
            [
                ("log", Audience::Customer),
                ("webhook", Audience::Customer),
                ("staff-telegram", Audience::Staff),
                ("staff-webhook", Audience::Staff),
            ]
        );
    }

    #[test]
    fn a_staff_sink_without_its_destination_is_refused_at_start() {
        let mut missing = config(&[SinkKind::Log], &[SinkKind::Webhook]);
        missing.staff_webhook_url = None;

        let refused = Channel::from_config(&missing).unwrap_err().to_string();

        assert!(refused.contains("--staff-webhook-url"), "{refused}");
    }

    #[test]
    fn the_staff_channel_is_off_by_default() {
        let channels = Channel::from_config(&Config::for_database("sqlite::memory:", "x")).unwrap();

        assert_eq!(names(&channels), [("log", Audience::Customer)]);
    }
}
