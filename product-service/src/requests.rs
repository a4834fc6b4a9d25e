//! Counts the requests the service receives and remembers when the most recent ones arrived, so that a test (or
//! an operator) can check the rate a client imposes on it, as the real external service would see it.

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
    // Bounded, so that a long-running server does not grow without limit.
    recent: Mutex<VecDeque<Instant>>,
}

impl RequestLog {
    /// How many arrival times are kept.
    pub const KEPT_ARRIVALS: usize = 10_000;

    /// Notes one request arriving now.
    pub fn record(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == Self::KEPT_ARRIVALS {
            recent.pop_front();
        }
        recent.push_back(Instant::now());
    }

    /// Requests received since the server started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Arrival times of the most recent requests (at most [`Self::KEPT_ARRIVALS`]), oldest first.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recent_arrivals_are_kept_but_all_are_counted() {
        let log = RequestLog::default();
        for _ in 0..RequestLog::KEPT_ARRIVALS + 5 {
            log.record();
        }
        assert_eq!(log.total(), (RequestLog::KEPT_ARRIVALS + 5) as u64);
        let arrivals = log.arrivals();
        assert_eq!(arrivals.len(), RequestLog::KEPT_ARRIVALS);
        assert!(arrivals.windows(2).all(|pair| pair[0] <= pair[1]));
    }
}
