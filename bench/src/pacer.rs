//! Waiting for a paced call's scheduled time. tokio's timer wheel ticks once a millisecond and rounds a deadline up
//! to its next tick, so its sleeps end about a millisecond late (on the 2-core benchmark machine: 1.05 ms on
//! average, 2.0 ms at the 99th percentile, with nothing else running). A paced client's interval is a few
//! milliseconds (8 clients at 3,000 calls/s: 2.7 ms), so that lateness alone kept clients behind their schedule,
//! and, timed from the schedule, it counted as the service's latency (docs/benchmarks-history.md, run 19). On Linux a
//! timerfd wakes within tens of microseconds (0.04 ms on average there); elsewhere tokio's timer is what there is.

use tokio::time::Instant;

/// Waits until `due`, as close to it as the platform's timers allow, never returning before it.
pub async fn until(due: Instant) {
    #[cfg(all(target_os = "linux", not(test)))]
    if precisely_until(due).await.is_ok() {
        return;
    }
    // Elsewhere, in the runner's tests (whose paused clock a timerfd would not follow), and if a timerfd could not
    // be had (the process out of file descriptors, say).
    tokio::time::sleep_until(due).await;
}

/// Waits until `due` on a timerfd.
#[cfg(target_os = "linux")]
async fn precisely_until(due: Instant) -> std::io::Result<()> {
    tokio_timerfd::Delay::new(due.into_std())?.await
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_timerfd_wait_never_ends_before_its_deadline() {
        for micros in [0, 50, 300, 2_000] {
            let due = Instant::now() + Duration::from_micros(micros);
            precisely_until(due).await.unwrap();
            assert!(Instant::now() >= due, "woke before a deadline {micros} µs away");
        }
    }

    #[tokio::test]
    async fn a_deadline_already_passed_returns_at_once() {
        let due = Instant::now().checked_sub(Duration::from_millis(2)).expect("the clock has run for 2 ms");
        // Bounded by the test's own timeout, not asserted in time: it must simply come back.
        tokio::time::timeout(Duration::from_secs(5), precisely_until(due)).await.unwrap().unwrap();
    }
}
