//! LOMS on SQLite, for the embedded mode.
//!
//! Concurrency design: every write runs in a `BEGIN IMMEDIATE` transaction on the single writer connection, so
//! write transactions are serialised — the SQLite way to get what PostgreSQL's row locks give: no oversell, one
//! winner per order, one order per idempotency key. Reads go through reader connections (WAL). Statements cost no
//! network round trips here, but each still costs a hop to the connection's worker thread while the one writer is
//! held, so an order's items and reservations are written one statement each (`json_each`), whatever their number.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use minizon_common::db::SqlitePools;
use sqlx::{Row, Sqlite, SqliteConnection, Transaction, sqlite::SqliteRow};
use tokio::sync::Notify;

use super::{after_commit::AfterCommit, stock_cache::StockCache};
use crate::{
    domain::{
        Action, Count, CreateOrder, CreateOutcome, IdempotencyKey, LomsError, Order, OrderId, OrderLines, OrderStatus,
        OrderStore, Plan, RecordedTransition, Reservation, Sku, StockLevel, StockRow, StockStore, Transition,
        TransitionReason, UserId, WarehouseId, allocate,
        ids::InvalidInput,
        plan,
        storage::{stored_status, stored_transition},
        unpaid_timeout,
    },
    events,
};

type Tx = Transaction<'static, Sqlite>;

/// Most orders one sweep transaction cancels on SQLite. The sweep holds the one writer for its transaction, so a
/// short one lets requests' writes in between (500 at once made CreateOrder wait over a second: docs/benchmarks.md).
const SWEEP_CHUNK: u32 = 50;

/// LOMS storage on an SQLite file (or in memory).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pools: SqlitePools,
    /// Wakes this process's relay and drops changed skus from the Stocks cache.
    after_commit: AfterCommit,
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LomsError {
    LomsError::Internal(error.into())
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database.
    pub async fn connect(url: &str, stock_cache: StockCache) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let pools = minizon_common::db::connect_sqlite(url, 4).await.context("open the LOMS SQLite database")?;
        sqlx::migrate!("../migrations/loms/sqlite").run(&pools.writer).await.context("migrate the LOMS database")?;
        Ok(Self { pools, after_commit: AfterCommit::new(stock_cache) })
    }

    /// Signalled after every commit that wrote outbox events (a permit is kept if the relay is busy).
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.after_commit.outbox_written()
    }

    /// The Stocks cache this store keeps exact for its own writes.
    pub fn stock_cache(&self) -> &StockCache {
        &self.after_commit.stock
    }

    /// The pools, for the parts of LOMS that run their own queries (health, outbox relay).
    pub fn pools(&self) -> &SqlitePools {
        &self.pools
    }

    async fn write(&self) -> Result<Tx, LomsError> {
        Ok(self.pools.write().await?)
    }

    async fn try_create(&self, request: &CreateOrder) -> Result<CreateOutcome, LomsError> {
        let mut tx = self.write().await?;
        if let Some(idempotency) = &request.idempotency
            && let Some(outcome) = replay(&mut tx, request.user, idempotency).await?
        {
            return outcome;
        }
        let now = Utc::now();
        let (key, hash) = match &request.idempotency {
            Some(idempotency) => (Some(idempotency.key.as_str()), Some(idempotency.request_hash.as_str())),
            None => (None, None),
        };
        let order_id: i64 = sqlx::query_scalar(
            "insert into orders (user_id, status, created_at, updated_at, idempotency_key, request_hash)
             values (?1, 0, ?2, ?2, ?3, ?4) returning id",
        )
        .bind(request.user.get())
        .bind(millis(now))
        .bind(key)
        .bind(hash)
        .fetch_one(&mut *tx)
        .await?;
        let order_id = OrderId::try_from(order_id).map_err(internal)?;
        let items: Vec<(u32, u32)> = request.lines.iter().map(|(sku, count)| (sku.get(), count.get())).collect();
        sqlx::query(
            "insert into order_items (order_id, sku, count)
             select ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]') from json_each(?2)",
        )
        .bind(order_id.get())
        .bind(json(&items)?)
        .execute(&mut *tx)
        .await?;
        let stock = free_stock(&mut tx, &request.lines).await?;
        let created = Transition::new(None, OrderStatus::New, TransitionReason::Created);
        let outcome = match allocate(request.lines.iter(), &stock) {
            Ok(reservations) => {
                reserve(&mut tx, order_id, &reservations).await?;
                let deadline = now + chrono::Duration::from_std(request.payment_timeout).map_err(internal)?;
                set_status(&mut tx, order_id, OrderStatus::AwaitingPayment, Some(deadline), now).await?;
                let reserved =
                    Transition::new(Some(OrderStatus::New), OrderStatus::AwaitingPayment, TransitionReason::Reserved);
                record(&mut tx, order_id, request.user, &request.lines, &[created, reserved], now).await?;
                Ok(CreateOutcome { order_id, replayed: false })
            }
            Err(shortage) => {
                set_status(&mut tx, order_id, OrderStatus::Failed, None, now).await?;
                let failed =
                    Transition::new(Some(OrderStatus::New), OrderStatus::Failed, TransitionReason::InsufficientStock)
                        .with_detail(shortage.to_string());
                record(&mut tx, order_id, request.user, &request.lines, &[created, failed], now).await?;
                Err(LomsError::InsufficientStock { order_id, detail: shortage.to_string() })
            }
        };
        self.after_commit.commit(tx, request.lines.iter().map(|(sku, _)| sku)).await?;
        outcome
    }

    async fn try_transition(&self, id: OrderId, action: Action) -> Result<(), LomsError> {
        let mut tx = self.write().await?;
        let now = Utc::now();
        let row = sqlx::query("select user_id, status, payment_deadline from orders where id = ?1")
            .bind(id.get())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(LomsError::OrderNotFound(id))?;
        let user = UserId::try_from(row.get::<i64, _>("user_id")).map_err(internal)?;
        let status = status_of(row.get("status"))?;
        let overdue = row.get::<Option<i64>, _>("payment_deadline").is_some_and(|deadline| deadline <= millis(now));
        let Some(Plan { transition, reply }) = plan(id, status, action, overdue)? else {
            return Ok(());
        };
        release(&mut tx, id, transition.to == OrderStatus::Payed).await?;
        set_status(&mut tx, id, transition.to, None, now).await?;
        let lines = order_lines(&mut tx, id).await?;
        record(&mut tx, id, user, &lines, &[transition], now).await?;
        self.after_commit.commit(tx, lines.iter().map(|(sku, _)| sku)).await?;
        reply
    }

    async fn try_cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        let mut tx = self.write().await?;
        let now = Utc::now();
        let due: Vec<(i64, i64)> = sqlx::query_as(
            "select id, user_id from orders where status = 1 and payment_deadline <= ?1
             order by payment_deadline limit ?2",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut cancelled = Vec::with_capacity(due.len());
        let mut skus = Vec::new();
        for (id, user) in due {
            let id = OrderId::try_from(id).map_err(internal)?;
            let user = UserId::try_from(user).map_err(internal)?;
            release(&mut tx, id, false).await?;
            set_status(&mut tx, id, OrderStatus::Cancelled, None, now).await?;
            let lines = order_lines(&mut tx, id).await?;
            record(&mut tx, id, user, &lines, &[unpaid_timeout()], now).await?;
            skus.extend(lines.iter().map(|(sku, _)| sku));
            cancelled.push(id);
        }
        if cancelled.is_empty() {
            tx.rollback().await?;
        } else {
            self.after_commit.commit(tx, skus).await?;
        }
        Ok(cancelled)
    }

    async fn load_available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "select warehouse_id, on_hand - reserved from stocks
             where sku = ?1 and on_hand > reserved order by warehouse_id",
        )
        .bind(i64::from(sku.get()))
        .fetch_all(&self.pools.reader)
        .await?;
        rows.into_iter()
            .map(|(warehouse, available)| Ok((WarehouseId::try_from(warehouse).map_err(internal)?, available as u64)))
            .collect()
    }

    /// The level of one (warehouse, sku) inside a write transaction, if it was ever stocked.
    async fn level_in(
        tx: &mut SqliteConnection,
        warehouse: WarehouseId,
        sku: Sku,
    ) -> Result<Option<StockLevel>, LomsError> {
        sqlx::query("select warehouse_id, sku, on_hand, reserved from stocks where warehouse_id = ?1 and sku = ?2")
            .bind(warehouse.get())
            .bind(i64::from(sku.get()))
            .fetch_optional(tx)
            .await?
            .as_ref()
            .map(stock_level)
            .transpose()
    }

    /// Sets one level after checking it against the reservations; the caller commits.
    async fn put_level(tx: &mut Tx, warehouse: WarehouseId, sku: Sku, on_hand: i128) -> Result<StockLevel, LomsError> {
        if on_hand > i128::from(i64::MAX) {
            // The same refusal PostgreSQL's bigint gives: a request beyond the stored range, not a stock rule.
            return Err(InvalidInput(format!(
                "on_hand {on_hand} is too large: the stock count overflows its limit of {}",
                i64::MAX
            ))
            .into());
        }
        let reserved = Self::level_in(tx, warehouse, sku).await?.map_or(0, |level| level.reserved);
        let Some(stored) = i64::try_from(on_hand).ok().filter(|n| *n >= 0 && *n as u64 >= reserved) else {
            return Err(LomsError::StockBelowReserved { warehouse, sku, on_hand, reserved });
        };
        sqlx::query(
            "insert into stocks (warehouse_id, sku, on_hand) values (?1, ?2, ?3)
             on conflict (sku, warehouse_id) do update set on_hand = excluded.on_hand",
        )
        .bind(warehouse.get())
        .bind(i64::from(sku.get()))
        .bind(stored)
        .execute(&mut **tx)
        .await?;
        Ok(StockLevel { warehouse, sku, on_hand: stored as u64, reserved })
    }
}

/// The first call's result for a repeated (user, key), or `None` when the key is new.
async fn replay(
    tx: &mut Tx,
    user: UserId,
    idempotency: &IdempotencyKey,
) -> Result<Option<Result<CreateOutcome, LomsError>>, LomsError> {
    let Some(row) = sqlx::query(
        "select o.id, o.status, o.request_hash,
                (select detail from order_status_history h where h.order_id = o.id order by h.id desc limit 1) as detail
         from orders o where o.user_id = ?1 and o.idempotency_key = ?2",
    )
    .bind(user.get())
    .bind(&idempotency.key)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(idempotency.replay(
        row.get::<Option<String>, _>("request_hash").as_deref(),
        OrderId::try_from(row.get::<i64, _>("id")).map_err(internal)?,
        status_of(row.get("status"))?,
        row.get::<Option<String>, _>("detail").unwrap_or_default(),
    )))
}

/// Free units of the order's skus, per warehouse.
async fn free_stock(tx: &mut Tx, lines: &OrderLines) -> Result<Vec<StockRow>, LomsError> {
    let skus = json(&lines.iter().map(|(sku, _)| sku.get()).collect::<Vec<_>>())?;
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "select sku, warehouse_id, on_hand - reserved from stocks
         where sku in (select value from json_each(?1)) order by sku, warehouse_id",
    )
    .bind(skus)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|(sku, warehouse, available)| {
            Ok(StockRow {
                sku: Sku::try_from(sku).map_err(internal)?,
                warehouse: WarehouseId::try_from(warehouse).map_err(internal)?,
                available: u64::try_from(available).unwrap_or(0),
            })
        })
        .collect()
}

/// Holds the reserved units: the order's reservations and the stock they take, one statement each whatever the
/// number of lines (statements, not rows, are what the single writer pays for).
async fn reserve(tx: &mut Tx, order_id: OrderId, reservations: &[Reservation]) -> Result<(), LomsError> {
    let rows: Vec<(u32, i64, u64)> = reservations.iter().map(|r| (r.sku.get(), r.warehouse.get(), r.count)).collect();
    let rows = json(&rows)?;
    sqlx::query(
        "insert into reservations (order_id, sku, warehouse_id, count)
         select ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
         from json_each(?2)",
    )
    .bind(order_id.get())
    .bind(&rows)
    .execute(&mut **tx)
    .await?;
    // One reservation per (sku, warehouse) of an order (the primary key), so no stock row is matched twice.
    sqlx::query(
        "update stocks set reserved = reserved + r.count
         from (select json_extract(value, '$[0]') as sku, json_extract(value, '$[1]') as warehouse_id,
                      json_extract(value, '$[2]') as count
               from json_each(?1)) as r
         where stocks.sku = r.sku and stocks.warehouse_id = r.warehouse_id",
    )
    .bind(&rows)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rows as a JSON array of arrays, for `json_each`.
fn json(rows: &impl serde::Serialize) -> Result<String, LomsError> {
    serde_json::to_string(rows).map_err(internal)
}

/// Frees what the order reserved; when `sold`, the units also leave the warehouse (payment).
async fn release(tx: &mut Tx, order_id: OrderId, sold: bool) -> Result<(), LomsError> {
    sqlx::query(
        "update stocks set
             reserved = reserved - r.count,
             on_hand = on_hand - case when ?2 then r.count else 0 end
         from (select sku, warehouse_id, count from reservations where order_id = ?1) as r
         where stocks.sku = r.sku and stocks.warehouse_id = r.warehouse_id",
    )
    .bind(order_id.get())
    .bind(sold)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_status(
    tx: &mut Tx,
    order_id: OrderId,
    status: OrderStatus,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), LomsError> {
    sqlx::query("update orders set status = ?2, payment_deadline = ?3, updated_at = ?4 where id = ?1")
        .bind(order_id.get())
        .bind(status.code())
        .bind(deadline.map(millis))
        .bind(millis(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn order_lines(tx: &mut Tx, order_id: OrderId) -> Result<OrderLines, LomsError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("select sku, count from order_items where order_id = ?1 order by sku")
        .bind(order_id.get())
        .fetch_all(&mut **tx)
        .await?;
    lines_of(rows)
}

fn lines_of(rows: Vec<(i64, i64)>) -> Result<OrderLines, LomsError> {
    rows.into_iter()
        .map(|(sku, count)| Ok((Sku::try_from(sku)?, Count::try_from(count)?)))
        .collect::<Result<Vec<_>, InvalidInput>>()
        .and_then(OrderLines::new)
        .map_err(internal)
}

/// Appends the transitions to the order's history and their events to the outbox.
async fn record(
    tx: &mut Tx,
    order_id: OrderId,
    user: UserId,
    lines: &OrderLines,
    transitions: &[Transition],
    now: DateTime<Utc>,
) -> Result<(), LomsError> {
    for transition in transitions {
        let event = events::order_status_changed(order_id, user, lines, transition, now);
        sqlx::query(
            "insert into order_status_history (order_id, from_status, to_status, reason, detail, at)
             values (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(order_id.get())
        .bind(transition.from.map(OrderStatus::code))
        .bind(transition.to.code())
        .bind(transition.reason.code())
        .bind(&transition.detail)
        .bind(millis(now))
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "insert into outbox (event_id, order_id, payload, created_at, traceparent) values (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(event.event_id.to_string())
        .bind(order_id.get())
        .bind(event.payload)
        .bind(millis(now))
        .bind(event.traceparent)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn status_of(code: i64) -> Result<OrderStatus, LomsError> {
    stored_status(code)
}

fn stock_level(row: &SqliteRow) -> Result<StockLevel, LomsError> {
    StockLevel::from_stored(row.get("warehouse_id"), row.get("sku"), row.get("on_hand"), row.get("reserved"))
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn create_order(&self, order: CreateOrder) -> Result<CreateOutcome, LomsError> {
        self.try_create(&order).await
    }

    async fn order(&self, id: OrderId) -> Result<Order, LomsError> {
        let mut conn = self.pools.reader.acquire().await?;
        let head: Option<(i64, i64)> = sqlx::query_as("select user_id, status from orders where id = ?1")
            .bind(id.get())
            .fetch_optional(&mut *conn)
            .await?;
        let (user, status) = head.ok_or(LomsError::OrderNotFound(id))?;
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("select sku, count from order_items where order_id = ?1 order by sku")
                .bind(id.get())
                .fetch_all(&mut *conn)
                .await?;
        Ok(Order {
            id,
            user: UserId::try_from(user).map_err(internal)?,
            status: status_of(status)?,
            lines: lines_of(rows)?,
        })
    }

    async fn history(&self, id: OrderId) -> Result<Vec<RecordedTransition>, LomsError> {
        let rows: Vec<(Option<i64>, i64, i64, String, i64)> = sqlx::query_as(
            "select from_status, to_status, reason, detail, at from order_status_history where order_id = ?1 order by id",
        )
        .bind(id.get())
        .fetch_all(&self.pools.reader)
        .await?;
        if rows.is_empty() {
            return Err(LomsError::OrderNotFound(id));
        }
        rows.into_iter()
            .map(|(from, to, reason, detail, at)| {
                let at = DateTime::from_timestamp_millis(at).ok_or_else(|| internal("history time out of range"))?;
                stored_transition(from, to, reason, detail, at)
            })
            .collect()
    }

    async fn pay(&self, id: OrderId) -> Result<(), LomsError> {
        self.try_transition(id, Action::Pay).await
    }

    async fn cancel(&self, id: OrderId) -> Result<(), LomsError> {
        self.try_transition(id, Action::Cancel).await
    }

    async fn cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        self.try_cancel_overdue(limit.min(SWEEP_CHUNK)).await
    }

    async fn available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        self.after_commit.stock.read_through(sku, || self.load_available_stock(sku)).await
    }
}

#[async_trait]
impl StockStore for SqliteStore {
    async fn set_stock(&self, warehouse: WarehouseId, sku: Sku, on_hand: u64) -> Result<StockLevel, LomsError> {
        let mut tx = self.write().await?;
        let level = Self::put_level(&mut tx, warehouse, sku, i128::from(on_hand)).await?;
        tx.commit().await?;
        Ok(level)
    }

    async fn add_stock(&self, warehouse: WarehouseId, sku: Sku, delta: i64) -> Result<StockLevel, LomsError> {
        let mut tx = self.write().await?;
        let current = Self::level_in(&mut tx, warehouse, sku).await?.map_or(0, |level| level.on_hand);
        let level = Self::put_level(&mut tx, warehouse, sku, i128::from(current) + i128::from(delta)).await?;
        tx.commit().await?;
        Ok(level)
    }

    async fn import_stock(&self, levels: &[(WarehouseId, Sku, u64)]) -> Result<usize, LomsError> {
        let mut tx = self.write().await?;
        for (warehouse, sku, on_hand) in levels {
            Self::put_level(&mut tx, *warehouse, *sku, i128::from(*on_hand)).await?;
        }
        tx.commit().await?;
        Ok(levels.len())
    }

    async fn stock_levels(&self, sku: Sku) -> Result<Vec<StockLevel>, LomsError> {
        let rows =
            sqlx::query("select warehouse_id, sku, on_hand, reserved from stocks where sku = ?1 order by warehouse_id")
                .bind(i64::from(sku.get()))
                .fetch_all(&self.pools.reader)
                .await?;
        rows.iter().map(stock_level).collect()
    }
}
