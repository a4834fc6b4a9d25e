//! Republishing events already sent: for the embedded mode (`minizon dev`), whose in-memory broker loses at a
//! restart what it held. At start-up, before the relay runs, the events its consumer never finished are marked
//! unsent again, and the relay publishes them once more, each order's in outbox order (its rule of "an order's
//! earliest unsent event first" applies to them as to new ones). Consumers de-duplicate by event id.

use sqlx::Row as _;

use super::OutboxSource;

/// An event the relay marked sent that is still in the outbox (sent rows are kept for the retention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEvent {
    /// The outbox row.
    pub id: i64,
    /// The event id, as published.
    pub event_id: String,
}

impl OutboxSource {
    /// Every sent event still in the outbox, in outbox order.
    pub async fn sent_events(&self) -> Result<Vec<SentEvent>, sqlx::Error> {
        let rows = match self {
            Self::Postgres { pool, .. } => {
                sqlx::query("select id, event_id::text as event_id from outbox where sent_at is not null order by id")
                    .fetch_all(&mut *pool.acquire().await?)
                    .await?
                    .iter()
                    .map(|row| Ok(SentEvent { id: row.try_get("id")?, event_id: row.try_get("event_id")? }))
                    .collect::<Result<_, sqlx::Error>>()?
            }
            Self::Sqlite { pools, .. } => {
                sqlx::query("select id, event_id from outbox where sent_at is not null order by id")
                    .fetch_all(&mut *pools.reader.acquire().await?)
                    .await?
                    .iter()
                    .map(|row| Ok(SentEvent { id: row.try_get("id")?, event_id: row.try_get("event_id")? }))
                    .collect::<Result<_, sqlx::Error>>()?
            }
        };
        Ok(rows)
    }

    /// Marks the rows `ids` unsent, so that the relay publishes them again. Returns how many were sent before.
    pub async fn mark_unsent(&self, ids: &[i64]) -> Result<u64, sqlx::Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        match self {
            Self::Postgres { pool, .. } => {
                Ok(sqlx::query("update outbox set sent_at = null where id = any($1) and sent_at is not null")
                    .bind(ids)
                    .execute(&mut *pool.acquire().await?)
                    .await?
                    .rows_affected())
            }
            Self::Sqlite { pools, .. } => {
                let ids = serde_json::to_string(ids).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
                let mut tx = pools.write().await?;
                let updated = sqlx::query(
                    "update outbox set sent_at = null
                     where id in (select value from json_each(?1)) and sent_at is not null",
                )
                .bind(ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(updated)
            }
        }
    }
}
