//! The unpaid-order timeout: a tokio-cron-scheduler job that cancels every order whose payment deadline has
//! passed. Deadlines live in the database, so orders that fell due while LOMS was down are cancelled on the first
//! sweep after start, and any number of replicas can sweep at once (rows are claimed with SKIP LOCKED).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::domain::OrderStore;

/// The running sweep schedule; dropping it does not stop it, [`UnpaidTimeoutJob::shutdown`] does.
pub struct UnpaidTimeoutJob {
    scheduler: JobScheduler,
}

impl std::fmt::Debug for UnpaidTimeoutJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnpaidTimeoutJob").finish_non_exhaustive()
    }
}

impl UnpaidTimeoutJob {
    /// Starts sweeping on `schedule` (cron with seconds), `batch` orders per transaction.
    pub async fn start(store: Arc<dyn OrderStore>, schedule: &str, batch: u32) -> anyhow::Result<Self> {
        let scheduler = JobScheduler::new().await.context("create the job scheduler")?;
        // A sweep slower than the schedule must not overlap with the next one: ticks that find it busy skip.
        let running = Arc::new(Mutex::new(()));
        let job = Job::new_async(schedule, move |_, _| {
            let store = store.clone();
            let running = running.clone();
            Box::pin(async move {
                let Ok(_guard) = running.try_lock() else {
                    return;
                };
                sweep(store.as_ref(), batch).await;
            })
        })
        .with_context(|| format!("invalid sweep schedule {schedule:?}"))?;
        scheduler.add(job).await.context("schedule the unpaid-order sweep")?;
        scheduler.start().await.context("start the job scheduler")?;
        Ok(Self { scheduler })
    }

    /// Stops scheduling sweeps.
    pub async fn shutdown(mut self) {
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(%error, "job scheduler did not shut down cleanly");
        }
    }
}

/// Cancels overdue orders, batch after batch, until none are due. Returns how many it cancelled. Each sweep is a
/// trace of its own (the root of the cancellations' events).
#[tracing::instrument(skip_all, parent = None, fields(trace_id = tracing::field::Empty))]
pub async fn sweep(store: &dyn OrderStore, batch: u32) -> usize {
    minizon_common::telemetry::record_trace_id(&tracing::Span::current());
    let started = std::time::Instant::now();
    let mut cancelled = 0;
    loop {
        match store.cancel_overdue(batch).await {
            Ok(ids) if ids.is_empty() => break,
            Ok(ids) => {
                cancelled += ids.len();
                // A backend may cancel fewer than `batch` per transaction (SQLite keeps its writer's turns short), so
                // only an empty batch means the sweep is done.
                tracing::info!(count = ids.len(), first = %ids[0], "cancelled unpaid orders past their deadline");
            }
            Err(error) => {
                tracing::warn!(%error, "unpaid-order sweep failed; the next tick retries");
                metrics::counter!(crate::series::SWEEP_FAILURES).increment(1);
                break;
            }
        }
    }
    metrics::counter!(crate::series::SWEEP_CANCELLED).increment(cancelled as u64);
    metrics::histogram!(crate::series::SWEEP_DURATION).record(started.elapsed().as_secs_f64());
    cancelled
}
