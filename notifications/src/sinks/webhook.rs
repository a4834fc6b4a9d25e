//! A generic HTTP webhook: each notification is `POST`ed as JSON.

use reqwest::Url;
use serde::Serialize;

use super::{Notification, SinkError};
use minizon_proto::events::OrderStatusChanged;

/// Posts `{"eventId", "orderId", "audience", "text", "event"}` to one URL, with an `Idempotency-Key` header carrying the event
/// id so that the receiver can de-duplicate as well. Any 2xx is a success.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    http: reqwest::Client,
    url: Url,
}

/// The JSON body of a webhook call.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody<'a> {
    event_id: String,
    order_id: i64,
    /// `customer` or `staff` (added after the first version; receivers that ignore it are unaffected).
    audience: &'static str,
    text: &'a str,
    /// The event in the proto3 JSON mapping, as on the topic.
    event: &'a OrderStatusChanged,
}

impl WebhookSink {
    /// A sink posting to `url`.
    pub fn new(http: reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let url = Url::parse(url).map_err(|error| anyhow::anyhow!("invalid webhook URL {url:?}: {error}"))?;
        Ok(Self { http, url })
    }

    /// Posts one notification.
    pub async fn send(&self, notification: Notification<'_>) -> Result<(), SinkError> {
        let body = WebhookBody {
            event_id: notification.event_id.to_string(),
            order_id: notification.event.order_id,
            audience: notification.audience.as_str(),
            text: notification.text,
            event: notification.event,
        };
        let response = self
            .http
            .post(self.url.clone())
            .header("idempotency-key", notification.event_id.to_string())
            .json(&body)
            .send()
            .await
            .map_err(SinkError::from_transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(SinkError::from_status(status, &text))
    }
}
