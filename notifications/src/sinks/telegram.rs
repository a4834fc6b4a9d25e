//! Telegram, through the Bot API's `sendMessage` (<https://core.telegram.org/bots/api#sendmessage>).

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{Notification, SinkError};

/// Sends each notification as a text message to one chat.
#[derive(Clone)]
pub struct TelegramSink {
    http: reqwest::Client,
    /// `{base}/bot{token}/sendMessage`: holds the token, so it is never logged.
    endpoint: Url,
    chat_id: String,
}

impl std::fmt::Debug for TelegramSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSink").field("endpoint", &"[redacted]").field("chat_id", &self.chat_id).finish()
    }
}

#[derive(Serialize)]
struct SendMessage<'a> {
    chat_id: &'a str,
    text: &'a str,
}

/// The part of the Bot API's answer that says whether the call worked.
#[derive(serde::Deserialize)]
struct BotResponse {
    ok: bool,
    #[serde(default)]
    description: Option<String>,
}

impl TelegramSink {
    /// A sink posting to `{base_url}/bot{token}/sendMessage`.
    pub fn new(http: reqwest::Client, base_url: &str, token: &SecretString, chat_id: String) -> anyhow::Result<Self> {
        let endpoint = format!("{}/bot{}/sendMessage", base_url.trim_end_matches('/'), token.expose_secret());
        // The error would echo the URL, token included: say only what is wrong.
        let endpoint = Url::parse(&endpoint).map_err(|error| anyhow::anyhow!("invalid Telegram base URL: {error}"))?;
        Ok(Self { http, endpoint, chat_id })
    }

    /// Sends one message.
    pub async fn send(&self, notification: Notification<'_>) -> Result<(), SinkError> {
        let response = self
            .http
            .post(self.endpoint.clone())
            .json(&SendMessage { chat_id: &self.chat_id, text: notification.text })
            .send()
            .await
            .map_err(SinkError::from_transport)?;
        let status = response.status();
        let body = response.text().await.map_err(SinkError::from_transport)?;
        if !status.is_success() {
            return Err(SinkError::from_status(status, &body));
        }
        match serde_json::from_str::<BotResponse>(&body) {
            Ok(answer) if answer.ok => Ok(()),
            Ok(answer) => Err(SinkError::Permanent(format!(
                "Telegram refused the message: {}",
                answer.description.unwrap_or_default()
            ))),
            // A 2xx that is not the Bot API's answer: a proxy in the way, most likely; it may pass later.
            Err(error) => Err(SinkError::Transient(format!("unexpected answer from Telegram: {error}"))),
        }
    }
}
