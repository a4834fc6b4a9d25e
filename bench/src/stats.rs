//! Statistics of one operation: an HDR histogram of the latencies of successful calls, failed calls counted by
//! gRPC status code, and throughput over a measurement window.
//!
//! Every client task owns its recorders (no lock on the request path) and the runner merges them at the end.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tonic::Code;

/// Longest latency the histogram resolves (2 minutes); longer ones are recorded as this, and `max` says so.
const HIGHEST_MICROS: u64 = 120_000_000;

/// Significant decimal digits kept per value: 0.1 % resolution at any magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;

/// What one operation did during a measurement window.
#[derive(Debug, Clone)]
pub struct Recorder {
    latencies: Histogram<u64>,
    errors: BTreeMap<&'static str, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // The bounds are constants that a unit test constructs, so this cannot fail at run time.
        let latencies = Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self { latencies, errors: BTreeMap::new() }
    }

    /// Records a successful call that took `latency`.
    pub fn record_ok(&mut self, latency: Duration) {
        // Sub-microsecond calls count as 1 µs: the histogram's lowest discernible value.
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latencies.saturating_record(micros);
    }

    /// Records a failed call by its status code. Failed calls stay out of the latency histogram: a fast refusal
    /// would otherwise make the percentiles look better than the service is.
    pub fn record_error(&mut self, code: Code) {
        *self.errors.entry(code_name(code)).or_default() += 1;
    }

    /// Records the outcome of one call.
    pub fn record(&mut self, latency: Duration, outcome: Result<(), Code>) {
        match outcome {
            Ok(()) => self.record_ok(latency),
            Err(code) => self.record_error(code),
        }
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Self) {
        // Both histograms have the same bounds, so adding cannot fail; saturate rather than lose the rest if it did.
        if self.latencies.add(&other.latencies).is_err() {
            for value in other.latencies.iter_recorded() {
                self.latencies.saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
        for (code, count) in &other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }

    /// Successful calls.
    pub fn ok(&self) -> u64 {
        self.latencies.len()
    }

    /// Failed calls, whatever their code.
    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The summary over a measurement window of length `window`.
    pub fn summary(&self, window: Duration) -> OpSummary {
        let ok = self.ok();
        OpSummary {
            ok,
            errors: self.errors(),
            errors_by_code: self.errors.iter().map(|(code, count)| ((*code).to_owned(), *count)).collect(),
            throughput: throughput(ok, window),
            latency_ms: Latency::of(&self.latencies),
        }
    }
}

/// Calls per second over `window`; zero for an empty window rather than infinity.
pub fn throughput(count: u64, window: Duration) -> f64 {
    if window.is_zero() { 0.0 } else { count as f64 / window.as_secs_f64() }
}

/// Latency percentiles of successful calls, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest call.
    pub max: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds; all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            // The highest value equivalent to the max bucket: never under-reports the slowest call.
            max: ms(histogram.highest_equivalent(histogram.max())),
        }
    }
}

/// Throughput, latency and errors of one operation in one scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    /// Successful calls in the window.
    pub ok: u64,
    /// Failed calls in the window.
    pub errors: u64,
    /// Failed calls by gRPC status code name (`UNAVAILABLE`, …).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Successful calls per second.
    pub throughput: f64,
    /// Latency of successful calls.
    pub latency_ms: Latency,
}

/// The canonical name of a gRPC status code, as the gRPC spec and `grpcurl` spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_of_one_to_a_hundred_milliseconds_are_the_matching_values() {
        let mut recorder = Recorder::new();
        for n in 1..=100 {
            recorder.record_ok(ms(n));
        }

        let latency = recorder.summary(Duration::from_secs(1)).latency_ms;

        // 3 significant digits: every value is exact to within 0.1 %.
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.001;
        assert!(close(latency.p50, 50.0), "p50 {}", latency.p50);
        assert!(close(latency.p90, 90.0), "p90 {}", latency.p90);
        assert!(close(latency.p99, 99.0), "p99 {}", latency.p99);
        assert!(close(latency.max, 100.0), "max {}", latency.max);
        assert!(close(latency.mean, 50.5), "mean {}", latency.mean);
    }

    #[test]
    fn a_single_slow_call_shows_in_the_max_and_not_in_the_median() {
        let mut recorder = Recorder::new();
        for _ in 0..999 {
            recorder.record_ok(ms(1));
        }
        recorder.record_ok(Duration::from_secs(3));

        let latency = recorder.summary(Duration::from_secs(1)).latency_ms;

        assert!(latency.p50 < 1.01);
        assert!(latency.p99 < 1.01);
        assert!(latency.max >= 3000.0);
    }

    #[test]
    fn latencies_beyond_the_histogram_saturate_instead_of_being_lost() {
        let mut recorder = Recorder::new();

        recorder.record_ok(Duration::from_secs(3600));
        recorder.record_ok(Duration::ZERO);

        assert_eq!(recorder.ok(), 2);
        assert!(recorder.summary(Duration::from_secs(1)).latency_ms.max >= HIGHEST_MICROS as f64 / 1000.0);
    }

    #[test]
    fn throughput_is_successful_calls_per_second_of_the_window() {
        let mut recorder = Recorder::new();
        for _ in 0..500 {
            recorder.record_ok(ms(2));
        }
        recorder.record_error(Code::Unavailable);

        let summary = recorder.summary(Duration::from_millis(2500));

        assert_eq!(summary.ok, 500);
        assert!((summary.throughput - 200.0).abs() < 1e-9);
        assert_eq!(throughput(10, Duration::ZERO), 0.0);
    }

    #[test]
    fn errors_are_counted_by_status_code_and_kept_out_of_the_latencies() {
        let mut recorder = Recorder::new();
        recorder.record(ms(1), Ok(()));
        recorder.record(ms(1), Err(Code::FailedPrecondition));
        recorder.record(ms(1), Err(Code::FailedPrecondition));
        recorder.record(ms(1), Err(Code::Unavailable));

        let summary = recorder.summary(Duration::from_secs(1));

        assert_eq!(summary.ok, 1);
        assert_eq!(summary.errors, 3);
        assert_eq!(summary.errors_by_code.get("FAILED_PRECONDITION"), Some(&2));
        assert_eq!(summary.errors_by_code.get("UNAVAILABLE"), Some(&1));
        assert_eq!(summary.errors_by_code.len(), 2);
    }

    #[test]
    fn merging_adds_both_histograms_and_both_error_counts() {
        let mut left = Recorder::new();
        let mut right = Recorder::new();
        for _ in 0..10 {
            left.record_ok(ms(1));
            right.record_ok(ms(100));
        }
        left.record_error(Code::Internal);
        right.record_error(Code::Internal);
        right.record_error(Code::Unknown);

        left.merge(&right);
        let summary = left.summary(Duration::from_secs(1));

        assert_eq!(summary.ok, 20);
        assert_eq!(summary.errors_by_code.get("INTERNAL"), Some(&2));
        assert_eq!(summary.errors_by_code.get("UNKNOWN"), Some(&1));
        assert!(summary.latency_ms.p50 < 1.01);
        assert!(summary.latency_ms.p90 > 99.0);
    }

    #[test]
    fn an_empty_recorder_summarises_to_zeros() {
        let summary = Recorder::new().summary(Duration::from_secs(1));

        assert_eq!(summary.ok, 0);
        assert_eq!(summary.throughput, 0.0);
        assert_eq!(summary.latency_ms, Latency::default());
    }

    #[test]
    fn status_codes_have_their_canonical_names() {
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(Code::from_i32(14)), "UNAVAILABLE");
    }
}
