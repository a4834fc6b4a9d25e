//! LOMS on PostgreSQL.
//!
//! Concurrency design: every transaction locks rows in one global order — the order row first, then stock rows
//! by `(sku, warehouse_id)` — so concurrent orders, payments, cancellations and the sweep cannot deadlock. The
//! stock check constraint (`reserved <= on_hand`) is the last line of defence against oversell; the allocation
//! reads free units under those row locks, so it never trips in practice.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};

use super::outbox_signal::OutboxSignal;
use crate::{
    domain::{
        Action, CreateOrder, CreateOutcome, IdempotencyKey, LomsError, Order, OrderId, OrderLines, OrderStatus,
        OrderStore, Plan, RecordedTransition, Reservation, Sku, StockLevel, StockRow, StockStore, Transition,
        TransitionReason, UserId, WarehouseId, allocate,
        ids::InvalidInput,
        plan,
        storage::{stored_status, stored_transition},
        unpaid_timeout,
    },
    events,
};

type Tx = Transaction<'static, Postgres>;

/// LOMS storage on a PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Wakes this process's relay after every commit that wrote outbox events.
    outbox_written: OutboxSignal,
}

impl PgStore {
    /// Creates the database if it does not exist, connects, and applies migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        minizon_common::db::ensure_postgres_database(url).await.context("create the LOMS database")?;
        let pool =
            minizon_common::db::connect_postgres(url, max_connections).await.context("connect to the LOMS database")?;
        sqlx::migrate!("../migrations/loms/postgres").run(&pool).await.context("migrate the LOMS database")?;
        Ok(Self { pool, outbox_written: OutboxSignal::default() })
    }

    /// Signalled after every commit that wrote outbox events (a permit is kept if the relay is busy).
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.outbox_written.notify()
    }

    /// The pool, for the parts of LOMS that run their own queries (health, outbox relay).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `attempt` again when PostgreSQL aborted it for a deadlock or serialization conflict.
    async fn with_retry<T, F, Fut>(attempt: F) -> Result<T, LomsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LomsError>>,
    {
        attempt
            .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(5)).with_max_times(4))
            .when(LomsError::is_contention)
            .await
    }

    async fn try_create(&self, request: &CreateOrder) -> Result<CreateOutcome, LomsError> {
        let mut tx = self.pool.begin().await?;
        let (key, hash) = match &request.idempotency {
            Some(idempotency) => (Some(idempotency.key.as_str()), Some(idempotency.request_hash.as_str())),
            None => (None, None),
        };
        // Inserting first makes a concurrent call with the same key wait on the unique index until this
        // transaction ends; it then finds no row returned and replays the winner's result.
        let inserted: Option<i64> = sqlx::query_scalar(
            "insert into orders (user_id, status, idempotency_key, request_hash) values ($1, 0, $2, $3)
             on conflict (user_id, idempotency_key) do nothing
             returning id",
        )
        .bind(request.user.get())
        .bind(key)
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order_id) = inserted else {
            tx.rollback().await?;
            let idempotency = request.idempotency.as_ref().expect("only a keyed insert can conflict");
            return self.replay(request.user, idempotency).await;
        };
        let order_id = OrderId::try_from(order_id).map_err(|e| LomsError::Internal(e.into()))?;

        let skus: Vec<i64> = request.lines.iter().map(|(sku, _)| i64::from(sku.get())).collect();
        let stock = lock_stock(&mut tx, &skus).await?;
        let created = Transition::new(None, OrderStatus::New, TransitionReason::Created);
        let outcome = match allocate(request.lines.iter(), &stock) {
            Ok(reservations) => {
                place(&mut tx, order_id, &request.lines, &reservations, Some(request.payment_timeout)).await?;
                let reserved =
                    Transition::new(Some(OrderStatus::New), OrderStatus::AwaitingPayment, TransitionReason::Reserved);
                record(&mut tx, &[(order_id, request.user, &request.lines, vec![created, reserved])]).await?;
                Ok(CreateOutcome { order_id, replayed: false })
            }
            Err(shortage) => {
                place(&mut tx, order_id, &request.lines, &[], None).await?;
                let failed =
                    Transition::new(Some(OrderStatus::New), OrderStatus::Failed, TransitionReason::InsufficientStock)
                        .with_detail(shortage.to_string());
                record(&mut tx, &[(order_id, request.user, &request.lines, vec![created, failed])]).await?;
                Err(LomsError::InsufficientStock { order_id, detail: shortage.to_string() })
            }
        };
        self.outbox_written.commit(tx).await?;
        outcome
    }

    /// The first call's result for a (user, key) pair.
    async fn replay(&self, user: UserId, idempotency: &IdempotencyKey) -> Result<CreateOutcome, LomsError> {
        let row = sqlx::query(
            "select o.id, o.status, o.request_hash,
                    (select detail from order_status_history h where h.order_id = o.id order by h.id desc limit 1) as detail
             from orders o where o.user_id = $1 and o.idempotency_key = $2",
        )
        .bind(user.get())
        .bind(&idempotency.key)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| LomsError::Internal("an idempotency key conflicted but its order is gone".into()))?;
        idempotency.replay(
            row.get::<Option<String>, _>("request_hash").as_deref(),
            order_id_of(row.get("id"))?,
            status_of(row.get("status"))?,
            row.get::<Option<String>, _>("detail").unwrap_or_default(),
        )
    }

    /// Pays or cancels one order: the shared shape of OrderPayed and CancelOrder.
    async fn try_transition(&self, id: OrderId, action: Action) -> Result<(), LomsError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "select user_id, status, payment_deadline <= now() as overdue from orders where id = $1 for update",
        )
        .bind(id.get())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(LomsError::OrderNotFound(id))?;
        let status = status_of(row.get("status"))?;
        let user = UserId::try_from(row.get::<i64, _>("user_id")).map_err(|e| LomsError::Internal(e.into()))?;
        let overdue = row.get::<Option<bool>, _>("overdue").unwrap_or(false);

        let Some(Plan { transition, reply }) = plan(id, status, action, overdue)? else {
            return Ok(());
        };
        release(&mut tx, &[id], transition.to == OrderStatus::Payed).await?;
        sqlx::query("update orders set status = $2, payment_deadline = null, updated_at = now() where id = $1")
            .bind(id.get())
            .bind(transition.to.code())
            .execute(&mut *tx)
            .await?;
        let lines = order_lines(&mut tx, &[id]).await?.pop().map(|(_, lines)| lines);
        let lines = lines.ok_or_else(|| LomsError::Internal(format!("order {id} has no items").into()))?;
        record(&mut tx, &[(id, user, &lines, vec![transition])]).await?;
        self.outbox_written.commit(tx).await?;
        reply
    }

    async fn try_cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: an order another replica's sweep, a payment or a cancel holds is left to that transaction.
        let due: Vec<(i64, i64)> = sqlx::query_as(
            "select id, user_id from orders
             where status = 1 and payment_deadline <= now()
             order by payment_deadline
             limit $1
             for update skip locked",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(due.len());
        let mut users = Vec::with_capacity(due.len());
        for (id, user) in due {
            ids.push(order_id_of(id)?);
            users.push(UserId::try_from(user).map_err(|e| LomsError::Internal(e.into()))?);
        }
        release(&mut tx, &ids, false).await?;
        let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        sqlx::query("update orders set status = 4, payment_deadline = null, updated_at = now() where id = any($1)")
            .bind(&raw)
            .execute(&mut *tx)
            .await?;
        let lines = order_lines(&mut tx, &ids).await?;
        let expired = unpaid_timeout();
        let batch: Vec<_> = ids
            .iter()
            .zip(&users)
            .zip(&lines)
            .map(|((id, user), (_, lines))| (*id, *user, lines, vec![expired.clone()]))
            .collect();
        record(&mut tx, &batch).await?;
        self.outbox_written.commit(tx).await?;
        Ok(ids)
    }
}

/// Locks the stock rows of `skus` in the global lock order and returns their free units.
async fn lock_stock(tx: &mut Tx, skus: &[i64]) -> Result<Vec<StockRow>, LomsError> {
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "select sku, warehouse_id, on_hand - reserved from stocks
         where sku = any($1)
         order by sku, warehouse_id
         for update",
    )
    .bind(skus)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|(sku, warehouse, available)| {
            Ok(StockRow {
                sku: Sku::try_from(sku).map_err(|e| LomsError::Internal(e.into()))?,
                warehouse: WarehouseId::try_from(warehouse).map_err(|e| LomsError::Internal(e.into()))?,
                available: u64::try_from(available).unwrap_or(0),
            })
        })
        .collect()
}

/// Stores a new order's items and, in the same statement, either its reservations (units move from free to
/// reserved in rows already locked by [`lock_stock`]; the order awaits payment until `payment_timeout` from now) or,
/// with no reservations and no timeout, its failure. One statement keeps CreateOrder at six round trips.
async fn place(
    tx: &mut Tx,
    order_id: OrderId,
    lines: &OrderLines,
    reservations: &[Reservation],
    payment_timeout: Option<Duration>,
) -> Result<(), LomsError> {
    let item_skus: Vec<i64> = lines.iter().map(|(sku, _)| i64::from(sku.get())).collect();
    let item_counts: Vec<i32> = lines.iter().map(|(_, count)| count.get() as i32).collect();
    let skus: Vec<i64> = reservations.iter().map(|r| i64::from(r.sku.get())).collect();
    let warehouses: Vec<i64> = reservations.iter().map(|r| r.warehouse.get()).collect();
    let counts: Vec<i64> = reservations.iter().map(|r| r.count as i64).collect();
    let (status, timeout) = match payment_timeout {
        Some(timeout) => (OrderStatus::AwaitingPayment, Some(timeout.as_secs_f64())),
        None => (OrderStatus::Failed, None),
    };
    sqlx::query(
        "with items as (
             insert into order_items (order_id, sku, count)
             select $1, * from unnest($2::bigint[], $3::int[])
         ), reserved as (
             insert into reservations (order_id, sku, warehouse_id, count)
             select $1, * from unnest($4::bigint[], $5::bigint[], $6::bigint[])
         ), stock as (
             update stocks s set reserved = s.reserved + r.count
             from unnest($4::bigint[], $5::bigint[], $6::bigint[]) as r(sku, warehouse_id, count)
             where s.sku = r.sku and s.warehouse_id = r.warehouse_id
         )
         update orders set status = $7, payment_deadline = now() + make_interval(secs => $8), updated_at = now()
         where id = $1",
    )
    .bind(order_id.get())
    .bind(&item_skus)
    .bind(&item_counts)
    .bind(&skus)
    .bind(&warehouses)
    .bind(&counts)
    .bind(status.code())
    .bind(timeout)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Frees what `orders` reserved; when `sold`, the units also leave the warehouse (payment).
async fn release(tx: &mut Tx, orders: &[OrderId], sold: bool) -> Result<(), LomsError> {
    let ids: Vec<i64> = orders.iter().map(|id| id.get()).collect();
    // Lock first, in the global order: an UPDATE … FROM join would lock rows in whatever order the plan visits.
    sqlx::query(
        "select 1 from reservations r
         join stocks s on s.sku = r.sku and s.warehouse_id = r.warehouse_id
         where r.order_id = any($1)
         order by s.sku, s.warehouse_id
         for update of s",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "update stocks s
         set reserved = s.reserved - r.count,
             on_hand = s.on_hand - case when $2 then r.count else 0 end
         from (select sku, warehouse_id, sum(count)::bigint as count from reservations
               where order_id = any($1) group by sku, warehouse_id) r
         where s.sku = r.sku and s.warehouse_id = r.warehouse_id",
    )
    .bind(&ids)
    .bind(sold)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The items of each order, in the order of `orders`.
async fn order_lines(tx: &mut Tx, orders: &[OrderId]) -> Result<Vec<(OrderId, OrderLines)>, LomsError> {
    let ids: Vec<i64> = orders.iter().map(|id| id.get()).collect();
    let rows: Vec<(i64, i64, i32)> =
        sqlx::query_as("select order_id, sku, count from order_items where order_id = any($1) order by order_id, sku")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    orders
        .iter()
        .map(|id| {
            let lines = rows
                .iter()
                .filter(|(order, _, _)| *order == id.get())
                .map(|(_, sku, count)| Ok((Sku::try_from(*sku)?, crate::domain::Count::try_from(i64::from(*count))?)))
                .collect::<Result<Vec<_>, InvalidInput>>()
                .and_then(OrderLines::new)
                .map_err(|e| LomsError::Internal(e.into()))?;
            Ok((*id, lines))
        })
        .collect()
}

/// Appends transitions to each order's history and their events to the outbox, in one statement.
async fn record(tx: &mut Tx, batch: &[(OrderId, UserId, &OrderLines, Vec<Transition>)]) -> Result<(), LomsError> {
    let now: DateTime<Utc> = Utc::now();
    let mut order_ids = Vec::new();
    let mut from = Vec::new();
    let mut to = Vec::new();
    let mut reasons = Vec::new();
    let mut details = Vec::new();
    let mut event_ids = Vec::new();
    let mut payloads = Vec::new();
    for (order_id, user, lines, transitions) in batch {
        for transition in transitions {
            let event = events::order_status_changed(*order_id, *user, lines, transition, now);
            order_ids.push(order_id.get());
            from.push(transition.from.map(OrderStatus::code));
            to.push(transition.to.code());
            reasons.push(transition.reason.code());
            details.push(transition.detail.clone());
            event_ids.push(event.event_id);
            payloads.push(event.payload);
        }
    }
    sqlx::query(
        "with history as (
             insert into order_status_history (order_id, from_status, to_status, reason, detail, at)
             select order_id, from_status, to_status, reason, detail, $8
             from unnest($1::bigint[], $2::smallint[], $3::smallint[], $4::smallint[], $5::text[])
                  with ordinality as t(order_id, from_status, to_status, reason, detail, n)
             order by n
         )
         insert into outbox (event_id, order_id, payload, created_at)
         select event_id, order_id, payload, $8
         from unnest($6::uuid[], $1::bigint[], $7::text[]) with ordinality as e(event_id, order_id, payload, n)
         order by n",
    )
    .bind(&order_ids)
    .bind(&from)
    .bind(&to)
    .bind(&reasons)
    .bind(&details)
    .bind(&event_ids)
    .bind(&payloads)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn order_id_of(raw: i64) -> Result<OrderId, LomsError> {
    OrderId::try_from(raw).map_err(|e| LomsError::Internal(e.into()))
}

fn status_of(code: i16) -> Result<OrderStatus, LomsError> {
    stored_status(i64::from(code))
}

fn stock_level(row: &PgRow) -> Result<StockLevel, LomsError> {
    StockLevel::from_stored(row.get("warehouse_id"), row.get("sku"), row.get("on_hand"), row.get("reserved"))
}

#[async_trait]
impl OrderStore for PgStore {
    async fn create_order(&self, order: CreateOrder) -> Result<CreateOutcome, LomsError> {
        Self::with_retry(|| self.try_create(&order)).await
    }

    async fn order(&self, id: OrderId) -> Result<Order, LomsError> {
        let rows = sqlx::query(
            "select o.user_id, o.status, i.sku, i.count
             from orders o join order_items i on i.order_id = o.id
             where o.id = $1 order by i.sku",
        )
        .bind(id.get())
        .fetch_all(&self.pool)
        .await?;
        let first = rows.first().ok_or(LomsError::OrderNotFound(id))?;
        let user = UserId::try_from(first.get::<i64, _>("user_id")).map_err(|e| LomsError::Internal(e.into()))?;
        let status = status_of(first.get("status"))?;
        let lines = rows
            .iter()
            .map(|row| {
                Ok((
                    Sku::try_from(row.get::<i64, _>("sku"))?,
                    crate::domain::Count::try_from(i64::from(row.get::<i32, _>("count")))?,
                ))
            })
            .collect::<Result<Vec<_>, InvalidInput>>()
            .and_then(OrderLines::new)
            .map_err(|e| LomsError::Internal(e.into()))?;
        Ok(Order { id, user, status, lines })
    }

    async fn history(&self, id: OrderId) -> Result<Vec<RecordedTransition>, LomsError> {
        let rows: Vec<(Option<i16>, i16, i16, String, DateTime<Utc>)> = sqlx::query_as(
            "select from_status, to_status, reason, detail, at from order_status_history where order_id = $1 order by id",
        )
        .bind(id.get())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(LomsError::OrderNotFound(id));
        }
        rows.into_iter()
            .map(|(from, to, reason, detail, at)| {
                stored_transition(from.map(i64::from), i64::from(to), i64::from(reason), detail, at)
            })
            .collect()
    }

    async fn pay(&self, id: OrderId) -> Result<(), LomsError> {
        Self::with_retry(|| self.try_transition(id, Action::Pay)).await
    }

    async fn cancel(&self, id: OrderId) -> Result<(), LomsError> {
        Self::with_retry(|| self.try_transition(id, Action::Cancel)).await
    }

    async fn cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        Self::with_retry(|| self.try_cancel_overdue(limit)).await
    }

    async fn available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "select warehouse_id, on_hand - reserved from stocks
             where sku = $1 and on_hand > reserved order by warehouse_id",
        )
        .bind(i64::from(sku.get()))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(warehouse, available)| {
                Ok((WarehouseId::try_from(warehouse).map_err(|e| LomsError::Internal(e.into()))?, available as u64))
            })
            .collect()
    }
}

#[async_trait]
impl StockStore for PgStore {
    async fn set_stock(&self, warehouse: WarehouseId, sku: Sku, on_hand: u64) -> Result<StockLevel, LomsError> {
        let on_hand = i64::try_from(on_hand).map_err(|_| InvalidInput(format!("on_hand {on_hand} is too large")))?;
        let result = sqlx::query(
            "insert into stocks (warehouse_id, sku, on_hand) values ($1, $2, $3)
             on conflict (sku, warehouse_id) do update set on_hand = excluded.on_hand
             returning warehouse_id, sku, on_hand, reserved",
        )
        .bind(warehouse.get())
        .bind(i64::from(sku.get()))
        .bind(on_hand)
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(row) => stock_level(&row),
            Err(error) if violates_stock_rule(&error) => Err(self.refusal(warehouse, sku, i128::from(on_hand)).await),
            Err(error) => Err(error.into()),
        }
    }

    async fn add_stock(&self, warehouse: WarehouseId, sku: Sku, delta: i64) -> Result<StockLevel, LomsError> {
        // PostgreSQL checks an INSERT's proposed row before ON CONFLICT, so removals are a plain UPDATE: removing
        // from a shelf that was never stocked finds no row and is refused below.
        let result = if delta >= 0 {
            sqlx::query(
                "insert into stocks (warehouse_id, sku, on_hand) values ($1, $2, $3)
                 on conflict (sku, warehouse_id) do update set on_hand = stocks.on_hand + excluded.on_hand
                 returning warehouse_id, sku, on_hand, reserved",
            )
            .bind(warehouse.get())
            .bind(i64::from(sku.get()))
            .bind(delta)
            .fetch_one(&self.pool)
            .await
        } else {
            sqlx::query(
                "update stocks set on_hand = on_hand + $3 where warehouse_id = $1 and sku = $2
                 returning warehouse_id, sku, on_hand, reserved",
            )
            .bind(warehouse.get())
            .bind(i64::from(sku.get()))
            .bind(delta)
            .fetch_optional(&self.pool)
            .await
            .and_then(|row| row.ok_or(sqlx::Error::RowNotFound))
        };
        match result {
            Ok(row) => stock_level(&row),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("22003") => {
                Err(InvalidInput(format!("adding {delta} units overflows the stock count")).into())
            }
            Err(error) if matches!(error, sqlx::Error::RowNotFound) || violates_stock_rule(&error) => {
                let current = self.level(warehouse, sku).await?;
                let on_hand = current.map_or(0, |level| i128::from(level.on_hand));
                Err(self.refusal(warehouse, sku, on_hand + i128::from(delta)).await)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn import_stock(&self, levels: &[(WarehouseId, Sku, u64)]) -> Result<usize, LomsError> {
        let mut warehouses = Vec::with_capacity(levels.len());
        let mut skus = Vec::with_capacity(levels.len());
        let mut counts = Vec::with_capacity(levels.len());
        for (warehouse, sku, on_hand) in levels {
            warehouses.push(warehouse.get());
            skus.push(i64::from(sku.get()));
            counts.push(i64::try_from(*on_hand).map_err(|_| InvalidInput(format!("on_hand {on_hand} is too large")))?);
        }
        let mut tx = self.pool.begin().await?;
        // Lock existing rows in the global order first, then refuse the whole import if any level would fall
        // below its reservations, naming the first such row.
        let below: Option<PgRow> = sqlx::query(
            "select s.warehouse_id, s.sku, s.reserved, n.on_hand
             from stocks s join unnest($1::bigint[], $2::bigint[], $3::bigint[]) as n(warehouse_id, sku, on_hand)
               on s.warehouse_id = n.warehouse_id and s.sku = n.sku
             order by s.sku, s.warehouse_id
             for update of s",
        )
        .bind(&warehouses)
        .bind(&skus)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .find(|row| row.get::<i64, _>("on_hand") < row.get::<i64, _>("reserved"));
        if let Some(row) = below {
            return Err(LomsError::StockBelowReserved {
                warehouse: WarehouseId::try_from(row.get::<i64, _>("warehouse_id"))
                    .map_err(|e| LomsError::Internal(e.into()))?,
                sku: Sku::try_from(row.get::<i64, _>("sku")).map_err(|e| LomsError::Internal(e.into()))?,
                on_hand: i128::from(row.get::<i64, _>("on_hand")),
                reserved: row.get::<i64, _>("reserved") as u64,
            });
        }
        sqlx::query(
            "insert into stocks (warehouse_id, sku, on_hand)
             select * from unnest($1::bigint[], $2::bigint[], $3::bigint[])
             on conflict (sku, warehouse_id) do update set on_hand = excluded.on_hand",
        )
        .bind(&warehouses)
        .bind(&skus)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(levels.len())
    }

    async fn stock_levels(&self, sku: Sku) -> Result<Vec<StockLevel>, LomsError> {
        let rows =
            sqlx::query("select warehouse_id, sku, on_hand, reserved from stocks where sku = $1 order by warehouse_id")
                .bind(i64::from(sku.get()))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(stock_level).collect()
    }
}

impl PgStore {
    /// The level of one (warehouse, sku), if it was ever stocked.
    async fn level(&self, warehouse: WarehouseId, sku: Sku) -> Result<Option<StockLevel>, LomsError> {
        Ok(self.stock_levels(sku).await?.into_iter().find(|level| level.warehouse == warehouse))
    }

    /// The error for a stock change that would leave `attempted_on_hand` units, fewer than reserved or than zero.
    async fn refusal(&self, warehouse: WarehouseId, sku: Sku, attempted_on_hand: i128) -> LomsError {
        match self.level(warehouse, sku).await {
            Ok(level) => LomsError::StockBelowReserved {
                warehouse,
                sku,
                on_hand: attempted_on_hand,
                reserved: level.map_or(0, |level| level.reserved),
            },
            Err(error) => error,
        }
    }
}

/// Whether a stock write was stopped by one of the stock check constraints.
fn violates_stock_rule(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.constraint(), Some("stocks_reserved_within_on_hand" | "stocks_on_hand_not_negative")))
}
