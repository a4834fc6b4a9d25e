//! Telegram, through the Bot API's `sendMessage` (<https://core.telegram.org/bots/api#sendmessage>).

use std::borrow::Cow;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{Notification, SinkError};

/// The longest text `sendMessage` accepts, in UTF-16 code units (how the Bot API counts a message's length).
const MAX_MESSAGE_LEN: usize = 4096;

/// What ends a shortened message.
const ELLIPSIS: char = '…';

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
            .json(&SendMessage { chat_id: &self.chat_id, text: &shorten(notification.text, MAX_MESSAGE_LEN) })
            .send()
            .await
            .map_err(SinkError::from_transport)?;
        let status = response.status();
        let body = response.text().await.map_err(SinkError::from_transport)?;
        if !status.is_success() {
            return Err(SinkError::from_status(status, &body));
        }
        // An answer of 2xx with `ok: false` is not documented, but says the Bot API looked at the message and
        // refused it: retrying the same call cannot help.
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

/// `text` cut to at most `max` UTF-16 code units, ending with an ellipsis when it was cut: a notification too long
/// for Telegram (a change of a thousand lines) is shortened rather than refused.
fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    if text.encode_utf16().count() <= max {
        return Cow::Borrowed(text);
    }
    let budget = max.saturating_sub(ELLIPSIS.len_utf16());
    let mut used = 0;
    let mut end = 0;
    for (index, character) in text.char_indices() {
        if used + character.len_utf16() > budget {
            break;
        }
        used += character.len_utf16();
        end = index + character.len_utf8();
    }
    let mut shortened = text[..end].to_owned();
    shortened.push(ELLIPSIS);
    Cow::Owned(shortened)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16_len(text: &str) -> usize {
        text.encode_utf16().count()
    }

    #[test]
    fn a_message_within_the_limit_is_sent_as_it_is() {
        let text = "x".repeat(MAX_MESSAGE_LEN);
        assert!(matches!(shorten(&text, MAX_MESSAGE_LEN), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn a_longer_message_is_cut_to_the_limit_and_ends_with_an_ellipsis() {
        let text = "Order #1 was changed: ".to_owned() + &"2 × sku 1001, ".repeat(1000);

        let shortened = shorten(&text, MAX_MESSAGE_LEN);

        assert_eq!(utf16_len(&shortened), MAX_MESSAGE_LEN);
        assert!(shortened.ends_with('…'));
        assert!(text.starts_with(shortened.trim_end_matches('…')));
    }

    #[test]
    fn characters_outside_the_basic_plane_count_twice_and_are_never_split() {
        // Each 🚚 is two UTF-16 code units: 2 500 of them are 5 000 units.
        let text = "🚚".repeat(2500);

        let shortened = shorten(&text, MAX_MESSAGE_LEN);

        assert!(utf16_len(&shortened) <= MAX_MESSAGE_LEN);
        assert_eq!(shortened.chars().filter(|c| *c == '🚚').count(), (MAX_MESSAGE_LEN - 1) / 2);
    }
}
