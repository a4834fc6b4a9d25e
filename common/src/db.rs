//! Database helpers shared by the PostgreSQL storage modules.

use std::time::Duration;

use sqlx::{
    ConnectOptions, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

/// Opens a PostgreSQL pool. `url` may carry `?options=-csearch_path%3D…` to pin a schema (tests use one schema
/// each).
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.log_statements(tracing::log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// True when the error means "the database cannot be reached now" (worth an UNAVAILABLE and a retry), as opposed to
/// a bug or a rule the database enforced.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // 57P01..57P03: admin shutdown / crash shutdown / cannot connect now; 08xxx: connection exceptions.
            db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}

/// True for transient conflicts PostgreSQL resolves by aborting one side (serialization failure, deadlock):
/// the whole transaction is safe to run again.
pub fn is_retryable_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// Pings the database every `every` and reports the result through the health service until `shutdown`.
pub fn watch_health(
    pool: PgPool,
    reporter: HealthReporter,
    services: &'static [&'static str],
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut was_serving = None;
        loop {
            let serving = tokio::time::timeout(every, sqlx::query("select 1").execute(&pool))
                .await
                .is_ok_and(|result| result.is_ok());
            if was_serving != Some(serving) {
                if serving {
                    tracing::info!("database reachable: SERVING");
                } else {
                    tracing::warn!("database unreachable: NOT_SERVING");
                }
                crate::grpc::set_health(&reporter, services, serving).await;
                was_serving = Some(serving);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}
