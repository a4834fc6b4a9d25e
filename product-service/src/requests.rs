//! Counts the requests the service receives, remembers when the most recent ones arrived and how many ran at once,
//! so that a test (or an operator) can check the rate and concurrency a client imposes on it, as the real external
//! service would see them.

use std::{
    collections::VecDeque,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

/// Every request received, and the arrival times of the most recent ones.
#[derive(Debug, Default)]
pub struct RequestLog {
    total: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    // Bounded, so that a long-running server does not grow without limit.
    recent: Mutex<VecDeque<Instant>>,
}

impl RequestLog {
    /// How many arrival times are kept.
    pub const KEPT_ARRIVALS: usize = 10_000;

    /// Notes one request arriving now; it counts as in flight until the returned guard is dropped.
    pub fn record(&self) -> InFlight<'_> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now_in_flight, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == Self::KEPT_ARRIVALS {
            recent.pop_front();
        }
        recent.push_back(Instant::now());
        InFlight(self)
    }

    /// Requests received since the server started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Arrival times of the most recent requests (at most [`Self::KEPT_ARRIVALS`]), oldest first.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }
}

/// A request being handled; dropping it ends it.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while this guard lives"]
pub struct InFlight<'a>(&'a RequestLog);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recent_arrivals_are_kept_but_all_are_counted() {
        let log = RequestLog::default();
        for _ in 0..RequestLog::KEPT_ARRIVALS + 5 {
            drop(log.record());
        }
        assert_eq!(log.total(), (RequestLog::KEPT_ARRIVALS + 5) as u64);
        let arrivals = log.arrivals();
        assert_eq!(arrivals.len(), RequestLog::KEPT_ARRIVALS);
        assert!(arrivals.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn the_most_requests_at_once_are_remembered() {
        let log = RequestLog::default();
        let first = log.record();
        let second = log.record();
        drop((first, second));
        drop(log.record());
        assert_eq!(log.max_in_flight(), 2);
    }
}
