//! The default sink: one structured log line per notification.

use super::Notification;

/// Writes each notification to the log, at `info`, with target `notifications::sink`.
#[derive(Debug, Clone, Copy)]
pub struct LogSink;

impl LogSink {
    /// Logs the notification; a log line cannot fail.
    pub fn send(&self, notification: Notification<'_>) {
        tracing::info!(
            target: "notifications::sink",
            event_id = %notification.event_id,
            order_id = notification.event.order_id,
            user = notification.event.user,
            audience = notification.audience.as_str(),
            "{}",
            notification.text
        );
    }
}
