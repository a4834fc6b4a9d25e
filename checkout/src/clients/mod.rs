//! Reusable clients of the services Checkout depends on. Each call carries a [`Deadline`] (the caller's, propagated
//! as `grpc-timeout`), is bounded by the client's own timeout, and is retried with backoff when that is safe.

pub mod loms;
pub mod product;

use std::time::Duration;

use backon::ExponentialBuilder;
use tokio::time::Instant;
use tonic::{Code, Status, metadata::MetadataMap, transport::Endpoint};

pub use loms::LomsClient;
pub use minizon_common::grpc_telemetry::TracedChannel;
pub use product::ProductClient;

use crate::error::{Dependency, Error};

/// The moment a request must be answered by; every downstream call of the request shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// The caller's deadline from its `grpc-timeout` header, capped at `limit` (which also applies when the caller
    /// set none).
    pub fn from_metadata(metadata: &MetadataMap, limit: Duration) -> Self {
        Self::after(minizon_common::deadline::downstream_timeout(metadata, limit))
    }

    /// Time left; zero once passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// A channel that connects on first use and reconnects after failures, so that Checkout starts (and keeps
/// running) while a dependency is down, and recovers by itself when it is back. Every call through it is counted
/// and timed, and carries the current trace context.
pub(crate) fn lazy_channel(url: &str, connect_timeout: Duration) -> Result<TracedChannel, tonic::transport::Error> {
    Ok(minizon_common::grpc_telemetry::traced(
        Endpoint::from_shared(url.to_owned())?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // Pings notice a peer that vanished without closing the connection.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy(),
    ))
}

/// How a client retries: a few attempts with jittered exponential backoff, never past the deadline.
pub(crate) fn backoff(attempts: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500))
        .with_max_times(attempts.saturating_sub(1))
        .with_jitter()
}

/// One failed attempt, and whether trying again may succeed and is safe.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) retry: bool,
}

impl Failure {
    /// A failure worth another attempt.
    pub(crate) fn transient(error: Error) -> Self {
        Self { error, retry: true }
    }

    /// A failure another attempt would repeat.
    pub(crate) fn permanent(error: Error) -> Self {
        Self { error, retry: false }
    }

    /// Classifies what every dependency may answer, so that every status maps to a clear one of Checkout's:
    /// unreachable, overloaded or conflicting (transient: retried, then UNAVAILABLE), out of time (final), a
    /// refusal of what was sent (FAILED_PRECONDITION with the dependency's message), and a dependency that failed
    /// or refuses Checkout itself (UNAVAILABLE, naming the code, logged: an operator has to look).
    pub(crate) fn from_status(dependency: Dependency, status: Status, deadline: Deadline) -> Self {
        let code = status.code();
        match code {
            // tonic reports its own client-side timeout as CANCELLED.
            Code::DeadlineExceeded | Code::Cancelled if deadline.has_passed() => {
                Self::permanent(Error::DeadlineExceeded { dependency })
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted | Code::ResourceExhausted => {
                Self::transient(Error::Unavailable { dependency, detail: status.message().to_owned() })
            }
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::NotFound
            | Code::AlreadyExists => {
                Self::permanent(Error::Refused { dependency, message: status.message().to_owned() })
            }
            Code::Internal
            | Code::Unknown
            | Code::DataLoss
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::Ok => {
                tracing::error!(%dependency, ?code, message = status.message(), "unexpected answer");
                Self::permanent(Error::Unavailable {
                    dependency,
                    detail: format!("it answered {code:?} ({})", status.message()),
                })
            }
        }
    }

    /// The attempt's own timeout fired: out of time if the request's deadline passed, else a slow dependency.
    pub(crate) fn timed_out(dependency: Dependency, deadline: Deadline, after: Duration) -> Self {
        if deadline.has_passed() {
            Self::permanent(Error::DeadlineExceeded { dependency })
        } else {
            Self::transient(Error::Unavailable { dependency, detail: format!("no answer within {after:?}") })
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, runs out of attempts, or the next try would start after the
/// deadline.
pub(crate) async fn with_retries<T, F, Fut>(
    backoff: ExponentialBuilder,
    deadline: Deadline,
    what: &'static str,
    attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    use backon::Retryable;

    attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|failure: &Failure| failure.retry)
        .adjust(move |_, delay| delay.filter(|delay| *delay < deadline.remaining()))
        .notify(|failure: &Failure, delay| {
            tracing::debug!(call = what, error = %failure.error, ?delay, "retrying");
        })
        .await
        .map_err(|failure| failure.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_status_a_dependency_answers_becomes_internal() {
        let deadline = Deadline::after(Duration::from_secs(60));
        for number in 0..=16 {
            let code = Code::from_i32(number);
            let failure = Failure::from_status(Dependency::Loms, Status::new(code, "why"), deadline);
            assert!(!matches!(failure.error, Error::Internal(_)), "{code:?} became internal");
            let answered = Status::from(failure.error);
            assert_ne!(answered.code(), Code::Internal, "{code:?}");
            assert!(answered.message().contains("LOMS"), "{code:?}: {}", answered.message());
        }
    }

    #[test]
    fn a_refusal_keeps_the_dependency_message_and_overload_is_retried() {
        let deadline = Deadline::after(Duration::from_secs(60));
        let refused = Failure::from_status(Dependency::Loms, Status::invalid_argument("too many skus"), deadline);
        assert!(!refused.retry);
        assert_eq!(Status::from(refused.error).message(), "LOMS refused the request: too many skus");
        let busy = Failure::from_status(Dependency::Loms, Status::resource_exhausted("busy"), deadline);
        assert!(busy.retry);
    }
}
