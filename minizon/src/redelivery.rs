//! The embedded mode's delivery promise across restarts: every committed status change is notified exactly once,
//! however `minizon dev` was stopped (Ctrl-C, SIGKILL, a crash).
//!
//! The embedded broker (librdkafka's mock cluster) keeps its records in memory, so events the relay published and
//! Notifications had not finished are gone when the process ends. The outbox still has them (sent rows are kept
//! for the relay's retention, 7 days), and Notifications records every event it finished (`handled_events`). At
//! start-up, before the relay runs, every sent event Notifications never finished is marked unsent again; the relay
//! publishes it once more, in outbox order per order, and Notifications' per-channel de-duplication turns the ones
//! it had half done (one channel of two) into exactly the missing deliveries.
//!
//! No sent row is pruned before it was handled: the relay prunes only sent rows past the retention, and a row that
//! was sent but not handled when the process stopped is unsent again before the relay's first pruning. While the
//! process runs, Notifications finishes an event (notified, or dead-lettered past the sink outage budget) long
//! before the retention ends.

use std::collections::HashSet;

use anyhow::Context as _;
use loms::outbox::OutboxSource;
use notifications::store::ProcessedEvents;
use uuid::Uuid;

/// Marks unsent every event in `outbox` that `notifications` never finished; returns how many.
pub async fn republish_unhandled(outbox: &OutboxSource, notifications: &ProcessedEvents) -> anyhow::Result<u64> {
    let sent = outbox.sent_events().await.context("read the sent events of the outbox")?;
    // LOMS writes UUIDs; a row that is not one was never an event Notifications could finish.
    let ids: Vec<Uuid> = sent.iter().filter_map(|event| Uuid::parse_str(&event.event_id).ok()).collect();
    let handled: HashSet<Uuid> =
        notifications.handled_among(&ids).await.context("read which events Notifications finished")?;
    let unhandled: Vec<i64> = sent
        .iter()
        .filter(|event| Uuid::parse_str(&event.event_id).map_or(true, |id| !handled.contains(&id)))
        .map(|event| event.id)
        .collect();
    let marked = outbox.mark_unsent(&unhandled).await.context("mark the unfinished events unsent")?;
    if marked > 0 {
        tracing::info!(
            events = marked,
            "events published before the last stop but not notified: publishing them again"
        );
    }
    Ok(marked)
}
