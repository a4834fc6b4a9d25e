//! Group commit of CreateOrder on PostgreSQL: one transaction for a whole batch of calls (docs/architecture.md,
//! "Group commit"), sorted and answered by [`NewOrders`], on a pipelining connection ([`super::pipelined`]).
//!
//! * **In one flight**, when this process knows the levels of every sku of the batch
//!   ([`KnownLevels`](crate::storage::known_levels), what its last batches committed): the new orders are placed
//!   over a [`Ledger`] of those levels, with ids taken ahead ([`super::order_ids`]), and BEGIN, one statement and
//!   COMMIT go out together. The statement first locks every stock row of the batch's skus in the global order and
//!   stops, writing nothing, unless their free units are those the batch was decided on; the batch then runs the
//!   locking way. An idempotency key is taken as new (a key repeated inside the batch is answered from its first use, as
//!   either way does); when one is stored already, the orders' unique key refuses the statement, nothing is
//!   written, and the batch runs the locking way, which looks the stored keys up. One round trip for the batch.
//! * **The locking way**: it takes an order id for every new order and locks the union of the batch's stock rows
//!   in the global order in one statement sent with BEGIN, places the new orders over one [`Ledger`] of what it
//!   read, and writes every order in one statement sent with COMMIT: two round trips (three when a call carries an
//!   idempotency key, whose stored order is looked up first).
//!
//! Either way the levels the batch committed are remembered for the next one. A deadlock or serialization failure
//! runs the batch again the locking way; any other failure before COMMIT runs the calls one by one on the per-call
//! path, so a call that cannot be written fails alone.

use chrono::Utc;

use super::{
    ONE_ORDER_PER_IDEMPOTENCY_KEY, PgStore, Tx, delta_params,
    pipelined::{Committed, Param},
    record_params,
};
use crate::{
    domain::{CreateOrder, Ledger, LomsError, OrderId, Sku, StockLevel},
    storage::{
        batch::{BatchKind, CreateAnswer, CreateBatch},
        decode::{stored_level, stored_order_id, stored_status, stored_user},
        new_orders::{NewOrders, StoredKey, StoredKeys},
        records::EventRows,
    },
};

#[async_trait::async_trait]
impl CreateBatch for PgStore {
    async fn try_create_batch(&self, calls: &[CreateOrder]) -> Result<Vec<CreateAnswer>, LomsError> {
        if let Some(answers) = self.in_one_flight(calls).await? {
            return Ok(answers);
        }
        Self::with_retry(|| self.attempt_batch(calls)).await
    }
}

impl PgStore {
    /// The batch in one flight, decided on the known levels; `None` when that does not apply (a sku whose levels
    /// are not known, more than one batch of new orders in flight) or when nothing was written: the stock rows were
    /// not as known, or an idempotency key of the batch is stored already. The batch is then run the locking way.
    async fn in_one_flight(&self, calls: &[CreateOrder]) -> Result<Option<Vec<CreateAnswer>>, LomsError> {
        if !self.one_flight {
            return Ok(None);
        }
        let mut batch = NewOrders::new(calls);
        let new = batch.sort(StoredKeys::new());
        let skus = batch.skus();
        let Some(known) = self.after_commit.known.of(skus.iter().copied()) else {
            return Ok(None);
        };
        let ids = self.order_ids.take(&self.pool, new).await?;
        let mut ledger = Ledger::new(known.iter().copied());
        batch.place(ids, &mut ledger);
        let columns = NewOrderColumns::of(&batch, &ledger)?;
        let read = LevelColumns::of(&known);
        let mut params = columns.params();
        params.extend(read.params());
        let committed = self.pipelined.write_alone(WRITE_NEW_ORDERS_ON_KNOWN_STOCK, &params).await;
        match &committed {
            Committed::No(LomsError::Contention) => {
                metrics::counter!(crate::series::STOCK_NOT_AS_KNOWN).increment(1);
                self.after_commit.known.forget(skus);
                return Ok(None);
            }
            // A retried call's key, or one a concurrent call on another replica committed first: the locking way
            // reads the stored order and answers from it. The known levels still hold (nothing was written).
            Committed::Duplicate(constraint, _) if constraint == ONE_ORDER_PER_IDEMPOTENCY_KEY => return Ok(None),
            Committed::Yes => metrics::counter!(crate::series::ONE_FLIGHT).increment(1),
            _ => {}
        }
        self.new_orders_ended(committed, batch, &ledger).map(Some)
    }

    /// The answers of a batch of new orders whose write ended `committed` (see [`PgStore::batch_ended`]); once
    /// committed, the levels of its skus are remembered whole for the next batch (its ledger holds every warehouse
    /// row of them: what allocation reads).
    fn new_orders_ended(
        &self,
        committed: Committed,
        batch: NewOrders<'_>,
        ledger: &Ledger,
    ) -> Result<Vec<CreateAnswer>, LomsError> {
        let skus: Vec<Sku> = batch.skus().into_iter().collect();
        self.batch_ended(committed, BatchKind::Create, batch.call_count(), (ledger, &skus), || batch.answers())
    }

    /// One attempt at the batch. `Err` only when nothing was committed; a failed COMMIT (whose outcome is unknown)
    /// answers every call with the failure instead, so no call is run twice.
    async fn attempt_batch(&self, calls: &[CreateOrder]) -> Result<Vec<CreateAnswer>, LomsError> {
        let mut batch = NewOrders::new(calls);
        let keys = batch.keys_to_look_up();
        let (tx, new, locked) = if keys.is_empty() {
            // No stored order to look up: every call places a new order, and the lock goes out with BEGIN.
            let new = batch.sort(StoredKeys::new());
            let (skus, count) = lock_params(&batch, new)?;
            let (tx, locked) = self.pipelined.begin_with(LOCK_STOCK_FOR_NEW_ORDERS, &[&skus, &count]).await?;
            (tx, new, locked)
        } else {
            let (users, keys): (Vec<i64>, Vec<&str>) = keys.into_iter().unzip();
            let (tx, stored) = self.pipelined.begin_with(STORED_KEYS, &[&users, &keys]).await?;
            let new = batch.sort(stored_keys(stored)?);
            if new == 0 {
                tx.rollback().await?;
                return Ok(batch.answers());
            }
            let (skus, count) = lock_params(&batch, new)?;
            let locked = tx.query(LOCK_STOCK_FOR_NEW_ORDERS, &[&skus, &count]).await?;
            (tx, new, locked)
        };
        let (ids, stock) = new_ids_and_stock(locked.iter().map(locked_row).collect::<Result<_, _>>()?, new)?;
        let mut ledger = Ledger::new(stock);
        batch.place(ids, &mut ledger);
        let columns = NewOrderColumns::of(&batch, &ledger)?;
        let committed = tx.write_and_commit(WRITE_NEW_ORDERS, &columns.params()).await;
        self.new_orders_ended(committed, batch, &ledger)
    }
}

/// The stored orders of (user, key) pairs, with the last detail of each one's history (for its replay), from
/// `$1` (users) and `$2` (keys). A key stored concurrently by another replica after this read makes the batch's
/// write fail on the unique index, and its calls run one by one.
const STORED_KEYS: &str = "select o.user_id, o.idempotency_key, o.id, o.status, o.request_hash,
        (select detail from order_status_history h where h.order_id = o.id order by h.id desc limit 1) as detail
 from orders o join unnest($1::bigint[], $2::text[]) as k(user_id, key)
   on o.user_id = k.user_id and o.idempotency_key = k.key";

/// The rows of [`STORED_KEYS`], by (user, key).
fn stored_keys(rows: Vec<tokio_postgres::Row>) -> Result<StoredKeys, LomsError> {
    rows.iter()
        .map(|row| {
            let user = stored_user(row.try_get("user_id")?)?;
            Ok((
                (user, row.try_get::<_, String>("idempotency_key")?),
                StoredKey {
                    order_id: stored_order_id(row.try_get("id")?)?,
                    status: stored_status(row.try_get::<_, i16>("status")?.into())?,
                    request_hash: row.try_get("request_hash")?,
                    last_detail: row.try_get::<_, Option<String>>("detail")?.unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// Takes `$2` new order ids and locks the stock rows of the skus `$1` in the global lock order, reading their
/// levels: one statement. The new order rows need no lock (nobody else can see them yet).
pub(super) const LOCK_STOCK_FOR_NEW_ORDERS: &str =
    "with new_orders as (select array(select nextval('orders_id_seq') from generate_series(1, $2)) as ids),
          locked as (
              select sku, warehouse_id, on_hand, reserved from stocks
              where sku = any($1)
              order by sku, warehouse_id
              for update
          )
     select n.ids, l.warehouse_id, l.sku, l.on_hand, l.reserved
     from new_orders n left join locked l on true
     order by l.sku, l.warehouse_id";

/// A row of [`LOCK_STOCK_FOR_NEW_ORDERS`]: the new ids (on every row), then a stock row's warehouse, sku, on hand
/// and reserved (none when no sku has stock).
pub(super) type LockedRow = (Vec<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

fn locked_row(row: &tokio_postgres::Row) -> Result<LockedRow, LomsError> {
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?))
}

/// The skus (`$1`) and the count of ids (`$2`) of [`LOCK_STOCK_FOR_NEW_ORDERS`] for a batch of `new` new orders.
fn lock_params(batch: &NewOrders<'_>, new: usize) -> Result<(Vec<i64>, i32), LomsError> {
    let skus = batch.skus().into_iter().map(|sku| i64::from(sku.get())).collect();
    Ok((skus, int4(new)?))
}

/// The `count` new ids and the locked levels from the rows of [`LOCK_STOCK_FOR_NEW_ORDERS`].
pub(super) fn new_ids_and_stock(
    rows: Vec<LockedRow>,
    count: usize,
) -> Result<(Vec<OrderId>, Vec<StockLevel>), LomsError> {
    let ids = rows.first().map(|(ids, ..)| ids.clone()).unwrap_or_default();
    if ids.len() != count {
        return Err(LomsError::Internal("the order id sequence gave too few ids".into()));
    }
    let ids = ids.into_iter().map(stored_order_id).collect::<Result<_, _>>()?;
    let stock = rows
        .into_iter()
        .filter_map(|(_, warehouse, sku, on_hand, reserved)| Some((warehouse?, sku?, on_hand?, reserved?)))
        .map(|(warehouse, sku, on_hand, reserved)| stored_level(warehouse, sku, on_hand, reserved))
        .collect::<Result<_, _>>()?;
    Ok((ids, stock))
}

/// Takes `count` new order ids and locks the stock rows of `skus` ([`LOCK_STOCK_FOR_NEW_ORDERS`]) in a transaction
/// of the sqlx pool: a lone CreateOrder (batching off, or a failed batch's calls one by one) with 1.
pub(super) async fn lock_stock_for_new_orders(
    tx: &mut Tx,
    skus: &[i64],
    count: usize,
) -> Result<(Vec<OrderId>, Vec<StockLevel>), LomsError> {
    let rows: Vec<LockedRow> =
        sqlx::query_as(LOCK_STOCK_FOR_NEW_ORDERS).bind(skus).bind(int4(count)?).fetch_all(&mut **tx).await?;
    new_ids_and_stock(rows, count)
}

/// The main statement of [`WRITE_NEW_ORDERS`]: the order rows, each with its run of the flat arrays.
macro_rules! insert_new_orders {
    () => {
        " insert into orders (id, user_id, status, payment_deadline, idempotency_key, request_hash,
                          item_skus, item_counts, held_skus, held_warehouses, held_counts)
     select o.id, o.user_id, o.status, now() + make_interval(secs => o.timeout), o.key, o.hash,
            ($14::bigint[])[o.items_from:o.items_to], ($15::int[])[o.items_from:o.items_to],
            ($16::bigint[])[o.held_from:o.held_to], ($17::bigint[])[o.held_from:o.held_to],
            ($18::bigint[])[o.held_from:o.held_to]
     from unnest($19::bigint[], $20::bigint[], $21::smallint[], $22::float8[], $23::text[], $24::text[],
                 $25::int[], $26::int[], $27::int[], $28::int[])
          as o(id, user_id, status, timeout, key, hash, items_from, items_to, held_from, held_to)"
    };
}

/// Writes a batch's new orders in one statement: the order rows with their final statuses, their items and their
/// reservations (each order's run of the flat arrays of the whole batch, cut out by its bounds), the ledger's stock
/// deltas (on rows locked by [`LOCK_STOCK_FOR_NEW_ORDERS`]), history and events; its parameters are
/// [`NewOrderColumns`]. Slicing costs no grouping: an order's lines are already one run of the flat arrays, in order.
pub(super) const WRITE_NEW_ORDERS: &str = concat!("with ", record_ctes!(), ", ", stock_cte!(), insert_new_orders!());

/// [`WRITE_NEW_ORDERS`] for a batch decided on known levels, sent with BEGIN and COMMIT. It first locks every stock
/// row of the batch's skus (`$14`, the new orders' items; the rows allocation reads) in the global order, and
/// unless they are exactly the rows `$29`–`$31` (sku, warehouse, free units) the batch was decided on, stops with a
/// serialization failure (`loms_stock_changed_since_read`, migration 0008) before anything is written: the stock
/// update and the order rows wait for that check. Free units (on hand − reserved) are all that allocation reads,
/// and the stock update adds deltas, so rows whose free units are as known give the same decision and the same
/// rows as rows read afresh (a sale in between moved on hand and reserved alike). The history and outbox rows
/// written meanwhile go with the statement.
const WRITE_NEW_ORDERS_ON_KNOWN_STOCK: &str = concat!(
    "with ",
    record_ctes!(),
    ", locked as materialized (
         select sku, warehouse_id, on_hand, reserved from stocks
         where sku = any($14::bigint[])
         order by sku, warehouse_id
         for update
     ), as_known as (
         select case
             when (select count(*) from locked) = cardinality($29::bigint[])
              and (select count(*)
                   from locked l
                   join unnest($29::bigint[], $30::bigint[], $31::bigint[]) as k(sku, warehouse_id, free)
                     on k.sku = l.sku and k.warehouse_id = l.warehouse_id
                    and k.free = l.on_hand - l.reserved) = cardinality($29::bigint[])
             then true
             else loms_stock_changed_since_read()
         end as held
     ), ",
    stock_cte!(" and (select held from as_known)"),
    insert_new_orders!(),
    " where (select held from as_known)"
);

/// The levels a batch was decided on, as `$29`–`$31` of [`WRITE_NEW_ORDERS_ON_KNOWN_STOCK`]: skus, warehouses and
/// free units.
struct LevelColumns([Vec<i64>; 3]);

impl LevelColumns {
    fn of(levels: &[StockLevel]) -> Self {
        let mut columns: [Vec<i64>; 3] = Default::default();
        for level in levels {
            columns[0].push(i64::from(level.sku.get()));
            columns[1].push(level.warehouse.get());
            // A stored level is within 0..=i64::MAX with reserved ≤ on hand (the stock rule), so this fits.
            columns[2].push(level.available() as i64);
        }
        Self(columns)
    }

    fn params(&self) -> impl Iterator<Item = Param<'_>> {
        self.0.iter().map(|column| column as Param<'_>)
    }
}

/// The parameters of [`WRITE_NEW_ORDERS`] for a placed batch: its history and events, the ledger's deltas, the new
/// orders' items and holds as flat arrays, and the orders' rows with the bounds of their runs in those arrays.
struct NewOrderColumns<'a> {
    events: EventRows,
    deltas: [Vec<i64>; 4],
    item_skus: Vec<i64>,
    item_counts: Vec<i32>,
    /// Skus, warehouses and counts.
    held: [Vec<i64>; 3],
    ids: Vec<i64>,
    users: Vec<i64>,
    statuses: Vec<i16>,
    timeouts: Vec<Option<f64>>,
    keys: Vec<Option<&'a str>>,
    hashes: Vec<Option<&'a str>>,
    /// Each order's run of the items, then of the holds: first and last position, 1-based (an empty run ends
    /// before it starts, and its slice is empty).
    bounds: [Vec<i32>; 4],
}

impl<'a> NewOrderColumns<'a> {
    fn of(batch: &NewOrders<'a>, ledger: &Ledger) -> Result<Self, LomsError> {
        let (mut item_skus, mut item_counts) = (Vec::new(), Vec::new());
        let mut held: [Vec<i64>; 3] = Default::default();
        let mut bounds: [Vec<i32>; 4] = Default::default();
        let (mut ids, mut users, mut statuses, mut timeouts, mut keys, mut hashes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (call, order_id, placement) in batch.placed() {
            let [items_from, items_to, held_from, held_to] = &mut bounds;
            items_from.push(int4(item_skus.len() + 1)?);
            for (sku, count) in call.lines.iter() {
                item_skus.push(i64::from(sku.get()));
                // A count is at most 65,535 (`Count`).
                item_counts.push(count.get() as i32);
            }
            items_to.push(int4(item_skus.len())?);
            let [skus, warehouses, counts] = &mut held;
            held_from.push(int4(skus.len() + 1)?);
            for r in &placement.reservations {
                skus.push(i64::from(r.sku.get()));
                warehouses.push(r.warehouse.get());
                // Reserved units are counts of one order line, far below i64::MAX.
                counts.push(r.count as i64);
            }
            held_to.push(int4(skus.len())?);
            ids.push(order_id.get());
            users.push(call.user.get());
            statuses.push(placement.status.code());
            timeouts.push(placement.payment_timeout.map(|timeout| timeout.as_secs_f64()));
            keys.push(call.idempotency.as_ref().map(|key| key.key.as_str()));
            hashes.push(call.idempotency.as_ref().map(|key| key.request_hash.as_str()));
        }
        let events = EventRows::of_requests(
            batch.placed().map(|(call, order_id, placement)| (order_id, call, placement.steps.as_slice())),
            Utc::now(),
        );
        let deltas = delta_params(&ledger.deltas());
        Ok(Self { events, deltas, item_skus, item_counts, held, ids, users, statuses, timeouts, keys, hashes, bounds })
    }

    /// `$1`–`$28`, in order.
    fn params(&self) -> Vec<Param<'_>> {
        let mut params = record_params(&self.events, &self.deltas);
        params.extend([&self.item_skus as Param<'_>, &self.item_counts]);
        params.extend(self.held.iter().map(|column| column as Param<'_>));
        params.extend([&self.ids as Param<'_>, &self.users, &self.statuses, &self.timeouts, &self.keys, &self.hashes]);
        params.extend(self.bounds.iter().map(|column| column as Param<'_>));
        params
    }
}

/// A count of a batch's orders, or a 1-based position in its flat arrays, as PostgreSQL's `int` takes it.
fn int4(n: usize) -> Result<i32, LomsError> {
    i32::try_from(n).map_err(|_| LomsError::Internal("a batch too large".into()))
}
