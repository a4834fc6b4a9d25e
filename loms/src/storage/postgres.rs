//! LOMS on PostgreSQL.
//!
//! Concurrency design: every transaction locks rows in one global order — an existing order's row first, then
//! stock rows by `(sku, warehouse_id)` — so concurrent orders, payments, cancellations and the sweep cannot
//! deadlock. A new order locks only stock rows: its own row is invisible to everyone else until it commits (a
//! call with the same idempotency key waits on the unique index, after it has taken all of its own locks). The
//! stock check constraint (`reserved <= on_hand`) is the last line of defence against oversell; the allocation
//! reads free units under those row locks, so it never trips in practice.
//!
//! Round trips (counted in docs/benchmarks.md): CreateOrder is 4 (BEGIN, lock, one statement that writes everything,
//! COMMIT); OrderPayed, CancelOrder and a sweep batch are 5 (one more lock step).

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};

use super::{after_commit::AfterCommit, stock_cache::StockCache};
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

/// The common table expressions that append transitions to the history and their events to the outbox, from the
/// arrays [`EventRows::bind`] binds as `$1`–`$8`, and the events' trace parents bound last, as `$traceparents`.
/// Every order write ends with them, in its one last statement.
macro_rules! record_ctes {
    ($traceparents:literal) => {
        concat!(
            "history as (
             insert into order_status_history (order_id, from_status, to_status, reason, detail, at)
             select order_id, from_status, to_status, reason, detail, $8
             from unnest($1::bigint[], $2::smallint[], $3::smallint[], $4::smallint[], $5::text[])
                  with ordinality as t(order_id, from_status, to_status, reason, detail, n)
             order by n
         ), events as (
             insert into outbox (event_id, order_id, payload, traceparent, created_at)
             select event_id, order_id, payload, traceparent, $8
             from unnest($6::uuid[], $1::bigint[], $7::text[], ",
            $traceparents,
            "::text[]) with ordinality as e(event_id, order_id, payload, traceparent, n)
             order by n
         )"
        )
    };
}

/// LOMS storage on a PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Wakes this process's relay and drops changed skus from the Stocks cache.
    after_commit: AfterCommit,
}

impl PgStore {
    /// Creates the database if it does not exist, connects, and applies migrations.
    pub async fn connect(url: &str, max_connections: u32, stock_cache: StockCache) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        minizon_common::db::ensure_postgres_database(url).await.context("create the LOMS database")?;
        let pool =
            minizon_common::db::connect_postgres(url, max_connections).await.context("connect to the LOMS database")?;
        sqlx::migrate!("../migrations/loms/postgres").run(&pool).await.context("migrate the LOMS database")?;
        Ok(Self { pool, after_commit: AfterCommit::new(stock_cache) })
    }

    /// Signalled after every commit that wrote outbox events (a permit is kept if the relay is busy).
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.after_commit.outbox_written()
    }

    /// The Stocks cache this store keeps exact for its own writes.
    pub fn stock_cache(&self) -> &StockCache {
        &self.after_commit.stock
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
        let skus: Vec<i64> = request.lines.iter().map(|(sku, _)| i64::from(sku.get())).collect();
        let (order_id, stock) = lock_stock_for_new_order(&mut tx, &skus).await?;
        let created = Transition::new(None, OrderStatus::New, TransitionReason::Created);
        let (placed, outcome) = match allocate(request.lines.iter(), &stock) {
            Ok(reservations) => {
                let reserved =
                    Transition::new(Some(OrderStatus::New), OrderStatus::AwaitingPayment, TransitionReason::Reserved);
                let placed = Placement {
                    reservations,
                    payment_timeout: Some(request.payment_timeout),
                    transitions: vec![created, reserved],
                };
                (placed, Ok(CreateOutcome { order_id, replayed: false }))
            }
            Err(shortage) => {
                let failed =
                    Transition::new(Some(OrderStatus::New), OrderStatus::Failed, TransitionReason::InsufficientStock)
                        .with_detail(shortage.to_string());
                let placed =
                    Placement { reservations: Vec::new(), payment_timeout: None, transitions: vec![created, failed] };
                (placed, Err(LomsError::InsufficientStock { order_id, detail: shortage.to_string() }))
            }
        };
        match place(&mut tx, order_id, request, placed).await {
            // A concurrent call with the same key waited on the unique index until the first one ended: its
            // statement wrote nothing, and the first call's result is the answer.
            Err(error) if conflicts_on_idempotency_key(&error) => {
                tx.rollback().await?;
                let idempotency = request.idempotency.as_ref().expect("only a keyed insert can conflict");
                return self.replay(request.user, idempotency).await;
            }
            placed => placed?,
        }
        self.after_commit.commit(tx, request.lines.iter().map(|(sku, _)| sku)).await?;
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
            "select o.user_id, o.status, o.payment_deadline <= now() as overdue,
                    array(select sku from order_items i where i.order_id = o.id order by sku) as skus,
                    array(select count from order_items i where i.order_id = o.id order by sku) as counts
             from orders o where o.id = $1 for update",
        )
        .bind(id.get())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(LomsError::OrderNotFound(id))?;
        let status = status_of(row.get("status"))?;
        let user = UserId::try_from(row.get::<i64, _>("user_id")).map_err(|e| LomsError::Internal(e.into()))?;
        let overdue = row.get::<Option<bool>, _>("overdue").unwrap_or(false);
        let lines = lines_of(row.get("skus"), row.get("counts"))?;

        let Some(Plan { transition, reply }) = plan(id, status, action, overdue)? else {
            return Ok(());
        };
        let to = transition.to;
        settle(&mut tx, &[id], to, to == OrderStatus::Payed, &[(id, user, &lines, vec![transition])]).await?;
        self.after_commit.commit(tx, lines.iter().map(|(sku, _)| sku)).await?;
        reply
    }

    async fn try_cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: an order another replica's sweep, a payment or a cancel holds is left to that transaction.
        // The items are read outside the locking query, so they are read only for the orders it claimed.
        let due: Vec<(i64, i64, Vec<i64>, Vec<i32>)> = sqlx::query_as(
            "with due as (
                 select id, user_id from orders
                 where status = 1 and payment_deadline <= now()
                 order by payment_deadline
                 limit $1
                 for update skip locked
             )
             select d.id, d.user_id,
                    array(select sku from order_items i where i.order_id = d.id order by sku),
                    array(select count from order_items i where i.order_id = d.id order by sku)
             from due d",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let expired = unpaid_timeout();
        let mut orders = Vec::with_capacity(due.len());
        for (id, user, skus, counts) in due {
            let user = UserId::try_from(user).map_err(|e| LomsError::Internal(e.into()))?;
            orders.push((order_id_of(id)?, user, lines_of(skus, counts)?));
        }
        let ids: Vec<OrderId> = orders.iter().map(|(id, _, _)| *id).collect();
        let batch: Vec<_> = orders.iter().map(|(id, user, lines)| (*id, *user, lines, vec![expired.clone()])).collect();
        settle(&mut tx, &ids, OrderStatus::Cancelled, false, &batch).await?;
        let skus = orders.iter().flat_map(|(_, _, lines)| lines.iter().map(|(sku, _)| sku));
        self.after_commit.commit(tx, skus).await?;
        Ok(ids)
    }
}

/// Takes the id of a new order from its sequence and locks the stock rows of `skus` in the global lock order,
/// returning their free units: one round trip. The new order row needs no lock (nobody else can see it yet).
async fn lock_stock_for_new_order(tx: &mut Tx, skus: &[i64]) -> Result<(OrderId, Vec<StockRow>), LomsError> {
    // The order id, then one stock row (sku, warehouse, free units) per row; none when no sku is stocked at all.
    type LockedRow = (i64, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<LockedRow> = sqlx::query_as(
        "with new_order as (select nextval('orders_id_seq') as id),
              locked as (
                  select sku, warehouse_id, on_hand - reserved as available from stocks
                  where sku = any($1)
                  order by sku, warehouse_id
                  for update
              )
         select n.id, l.sku, l.warehouse_id, l.available
         from new_order n left join locked l on true
         order by l.sku, l.warehouse_id",
    )
    .bind(skus)
    .fetch_all(&mut **tx)
    .await?;
    let order_id = order_id_of(rows.first().map_or(0, |(id, ..)| *id))?;
    let stock = rows
        .into_iter()
        .filter_map(|(_, sku, warehouse, available)| Some((sku?, warehouse?, available?)))
        .map(|(sku, warehouse, available)| {
            Ok(StockRow {
                sku: Sku::try_from(sku).map_err(|e| LomsError::Internal(e.into()))?,
                warehouse: WarehouseId::try_from(warehouse).map_err(|e| LomsError::Internal(e.into()))?,
                available: u64::try_from(available).unwrap_or(0),
            })
        })
        .collect::<Result<_, LomsError>>()?;
    Ok((order_id, stock))
}

/// How a new order ends its CreateOrder: reserved (and awaiting payment until `payment_timeout` from now), or failed
/// (no reservations, no timeout); and the transitions that got it there.
struct Placement {
    reservations: Vec<Reservation>,
    payment_timeout: Option<Duration>,
    transitions: Vec<Transition>,
}

/// Writes a new order in one statement: the order row with its final status, its items, its reservations (units
/// move from free to reserved in rows already locked by [`lock_stock_for_new_order`]), its history and its events.
/// A second order with the same (user, idempotency key) makes the whole statement fail and write nothing.
async fn place(tx: &mut Tx, order_id: OrderId, request: &CreateOrder, placed: Placement) -> Result<(), sqlx::Error> {
    let Placement { reservations, payment_timeout, transitions } = placed;
    let status = transitions.last().map_or(OrderStatus::New, |transition| transition.to);
    let lines = &request.lines;
    let item_skus: Vec<i64> = lines.iter().map(|(sku, _)| i64::from(sku.get())).collect();
    let item_counts: Vec<i32> = lines.iter().map(|(_, count)| count.get() as i32).collect();
    let skus: Vec<i64> = reservations.iter().map(|r| i64::from(r.sku.get())).collect();
    let warehouses: Vec<i64> = reservations.iter().map(|r| r.warehouse.get()).collect();
    let counts: Vec<i64> = reservations.iter().map(|r| r.count as i64).collect();
    let (key, hash) = match &request.idempotency {
        Some(idempotency) => (Some(idempotency.key.as_str()), Some(idempotency.request_hash.as_str())),
        None => (None, None),
    };
    let mut events = EventRows::of(&[(order_id, request.user, lines, transitions)]);
    let traceparents = std::mem::take(&mut events.traceparents);
    events
        .bind(sqlx::query(concat!(
            "with ",
            record_ctes!("$20"),
            ", new_order as (
                 insert into orders (id, user_id, status, payment_deadline, idempotency_key, request_hash)
                 values ($9, $10, $11, now() + make_interval(secs => $12), $13, $14)
             ), items as (
                 insert into order_items (order_id, sku, count)
                 select $9, * from unnest($15::bigint[], $16::int[])
             ), reserved as (
                 insert into reservations (order_id, sku, warehouse_id, count)
                 select $9, * from unnest($17::bigint[], $18::bigint[], $19::bigint[])
             )
             update stocks s set reserved = s.reserved + r.count
             from unnest($17::bigint[], $18::bigint[], $19::bigint[]) as r(sku, warehouse_id, count)
             where s.sku = r.sku and s.warehouse_id = r.warehouse_id"
        )))
        .bind(order_id.get())
        .bind(request.user.get())
        .bind(status.code())
        .bind(payment_timeout.map(|timeout| timeout.as_secs_f64()))
        .bind(key)
        .bind(hash)
        .bind(&item_skus)
        .bind(&item_counts)
        .bind(&skus)
        .bind(&warehouses)
        .bind(&counts)
        .bind(traceparents)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether a statement failed because another order already holds its (user, idempotency key).
fn conflicts_on_idempotency_key(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.constraint() == Some("orders_one_per_idempotency_key"))
}

/// Ends the reservations of `orders`, locked rows first: they move to `to` (`sold`: the reserved units leave the
/// warehouse, as on payment; otherwise they become free again), with their history and events. Two round trips.
async fn settle(
    tx: &mut Tx,
    orders: &[OrderId],
    to: OrderStatus,
    sold: bool,
    batch: &[(OrderId, UserId, &OrderLines, Vec<Transition>)],
) -> Result<(), LomsError> {
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
    let mut events = EventRows::of(batch);
    let traceparents = std::mem::take(&mut events.traceparents);
    events
        .bind(sqlx::query(concat!(
            "with ",
            record_ctes!("$12"),
            ", stock as (
                 update stocks s
                 set reserved = s.reserved - r.count,
                     on_hand = s.on_hand - case when $10 then r.count else 0 end
                 from (select sku, warehouse_id, sum(count)::bigint as count from reservations
                       where order_id = any($9) group by sku, warehouse_id) r
                 where s.sku = r.sku and s.warehouse_id = r.warehouse_id
             )
             update orders set status = $11, payment_deadline = null, updated_at = now() where id = any($9)"
        )))
        .bind(&ids)
        .bind(sold)
        .bind(to.code())
        .bind(traceparents)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An order's items from the parallel arrays a query aggregated them into.
fn lines_of(skus: Vec<i64>, counts: Vec<i32>) -> Result<OrderLines, LomsError> {
    skus.into_iter()
        .zip(counts)
        .map(|(sku, count)| Ok((Sku::try_from(sku)?, crate::domain::Count::try_from(i64::from(count))?)))
        .collect::<Result<Vec<_>, InvalidInput>>()
        .and_then(OrderLines::new)
        .map_err(|e| LomsError::Internal(e.into()))
}

/// Transitions of a batch of orders as the columns of their history rows and outbox events.
struct EventRows {
    order_ids: Vec<i64>,
    from: Vec<Option<i16>>,
    to: Vec<i16>,
    reasons: Vec<i16>,
    details: Vec<String>,
    event_ids: Vec<uuid::Uuid>,
    payloads: Vec<String>,
    /// Bound by the statement itself, after its own parameters (see [`record_ctes`]).
    traceparents: Vec<Option<String>>,
    at: DateTime<Utc>,
}

impl EventRows {
    /// The rows of each order's transitions, stamped with one time; the events carry the order's items.
    fn of(batch: &[(OrderId, UserId, &OrderLines, Vec<Transition>)]) -> Self {
        let at = Utc::now();
        let mut rows = Self {
            order_ids: Vec::new(),
            from: Vec::new(),
            to: Vec::new(),
            reasons: Vec::new(),
            details: Vec::new(),
            event_ids: Vec::new(),
            payloads: Vec::new(),
            traceparents: Vec::new(),
            at,
        };
        for (order_id, user, lines, transitions) in batch {
            for transition in transitions {
                let event = events::order_status_changed(*order_id, *user, lines, transition, at);
                rows.order_ids.push(order_id.get());
                rows.from.push(transition.from.map(OrderStatus::code));
                rows.to.push(transition.to.code());
                rows.reasons.push(transition.reason.code());
                rows.details.push(transition.detail.clone());
                rows.event_ids.push(event.event_id);
                rows.payloads.push(event.payload);
                rows.traceparents.push(event.traceparent);
            }
        }
        rows
    }

    /// Binds `$1`–`$8` of [`record_ctes`]; the statement's own parameters follow from `$9`.
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.order_ids)
            .bind(self.from)
            .bind(self.to)
            .bind(self.reasons)
            .bind(self.details)
            .bind(self.event_ids)
            .bind(self.payloads)
            .bind(self.at)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

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
        self.after_commit.stock.read_through(sku, || self.load_available_stock(sku)).await
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
    async fn load_available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
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
