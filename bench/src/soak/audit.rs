//! What the soak counts once the system has settled: from LOMS's database (stock, reservations, orders, the
//! outbox), from the dead-letter topic, and from the webhook receiver.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use sqlx::{PgPool, Row as _};
use tokio_util::sync::CancellationToken;

use super::load::{Intent, OrderRecord};

/// The contract's status numbers the audit reads.
const AWAITING_PAYMENT: i16 = 1;
const PAYED: i16 = 3;
const CANCELLED: i16 = 4;

/// Event ids found on the dead-letter topic so far, filled by a background reader.
#[derive(Debug, Clone, Default)]
pub struct DeadLettered(Arc<Mutex<HashSet<String>>>);

impl DeadLettered {
    /// The ids read so far.
    pub fn ids(&self) -> HashSet<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Reads `topic` from its beginning until `stop`, collecting the event id of every record (its `event-id`
/// header, or the payload's `eventId`).
pub async fn read_dead_letters(brokers: &str, topic: &str, stop: CancellationToken) -> anyhow::Result<DeadLettered> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Partitions are assigned by hand, never committed: the group id only satisfies librdkafka.
        .set("group.id", format!("soak-dead-letter-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("reconnect.backoff.max.ms", "2000")
        .create()
        .context("create the dead-letter reader")?;
    let metadata = {
        let consumer = &consumer;
        let topic = topic.to_owned();
        tokio::task::block_in_place(|| consumer.fetch_metadata(Some(&topic), Duration::from_secs(30)))
            .context("dead-letter topic metadata")?
    };
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    anyhow::ensure!(partitions > 0, "the dead-letter topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let partition = i32::try_from(partition).context("partition number")?;
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let found = DeadLettered::default();
    let ids = found.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = consumer.recv() => message,
            };
            match message {
                Ok(message) => {
                    let id = minizon_common::kafka::header_str(&message, minizon_common::kafka::HEADER_EVENT_ID)
                        .map(str::to_owned)
                        .or_else(|| {
                            let json: serde_json::Value = serde_json::from_slice(message.payload()?).ok()?;
                            json.get("eventId")?.as_str().map(str::to_owned)
                        })
                        .unwrap_or_else(|| format!("<no id at offset {}>", message.offset()));
                    ids.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id);
                }
                Err(error) => {
                    tracing::debug!(%error, "dead-letter reader");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // Closing a librdkafka consumer blocks on the broker: not on an async thread.
        tokio::task::spawn_blocking(move || drop(consumer));
    });
    Ok(found)
}

/// How far the system is from settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Orders still awaiting payment (the sweep has yet to time them out).
    pub awaiting: i64,
    /// Outbox events not yet acknowledged by the broker.
    pub unsent: i64,
    /// Outbox events neither received nor dead-lettered.
    pub unnotified: usize,
}

impl Progress {
    /// Whether nothing is left to happen.
    pub fn settled(&self) -> bool {
        self.awaiting == 0 && self.unsent == 0 && self.unnotified == 0
    }
}

/// The counts of the final table.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Units paid beyond the stock that was ever there.
    pub oversold_units: i64,
    /// (warehouse, sku) rows whose units on hand are not what was seeded less what was paid from them.
    pub stock_rows_off: i64,
    /// Units still reserved that no order awaiting payment holds.
    pub leftover_reserved_units: i64,
    /// Orders still awaiting payment (or new) after the settle wait.
    pub unfinished_orders: i64,
    /// Orders whose status is not what the client was told (a paid order not `payed`, a cancellation or an
    /// unpaid order not `cancelled`).
    pub wrong_final_status: i64,
    /// History rows without their outbox event, or the reverse.
    pub history_without_event: i64,
    /// History rows of an order that is not in the database (no foreign key holds this on PostgreSQL).
    pub history_of_no_order: i64,
    /// Events committed to the outbox.
    pub events: usize,
    /// Outbox events the broker never acknowledged.
    pub unsent: i64,
    /// Events neither received by the webhook nor dead-lettered.
    pub never_notified: usize,
    /// Events on the dead-letter topic (delivered to nobody).
    pub dead_lettered: usize,
    /// Events received more than once.
    pub received_twice: usize,
    /// Received notifications of no committed change.
    pub received_unknown: usize,
    /// Orders by final status, for the table's context line.
    pub by_status: BTreeMap<i16, i64>,
}

/// Connects to LOMS's database.
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .with_context(|| format!("connect to {database_url}"))
}

/// One look at how far from settled the system is.
pub async fn progress(
    pool: &PgPool,
    received: &HashMap<String, u32>,
    dead: &HashSet<String>,
) -> anyhow::Result<Progress> {
    let row = sqlx::query(
        "select (select count(*) from orders where status in (0, 1)) as awaiting,
                (select count(*) from outbox where sent_at is null) as unsent",
    )
    .fetch_one(pool)
    .await?;
    let unnotified =
        outbox_ids(pool).await?.iter().filter(|id| !received.contains_key(*id) && !dead.contains(*id)).count();
    Ok(Progress { awaiting: row.get("awaiting"), unsent: row.get("unsent"), unnotified })
}

async fn outbox_ids(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar("select event_id::text from outbox").fetch_all(pool).await?)
}

/// Everything the table reports, `seeded` being the units put on hand per (warehouse, sku) at the start.
pub async fn count(
    pool: &PgPool,
    seeded: &HashMap<(i64, i64), i64>,
    orders: &[OrderRecord],
    received: &HashMap<String, u32>,
    dead: &HashSet<String>,
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();

    // Oversell, from what orders bought (not from the stock columns, which the database's checks keep in range).
    let paid: Vec<(i64, i64)> = sqlx::query_as(
        "select i.sku, sum(i.count)::bigint from order_items i join orders o on o.id = i.order_id
         where o.status = $1 group by i.sku",
    )
    .bind(PAYED)
    .fetch_all(pool)
    .await?;
    let mut seeded_by_sku: HashMap<i64, i64> = HashMap::new();
    for ((_, sku), units) in seeded {
        *seeded_by_sku.entry(*sku).or_default() += units;
    }
    counts.oversold_units =
        paid.iter().map(|(sku, units)| (units - seeded_by_sku.get(sku).copied().unwrap_or(0)).max(0)).sum();

    // Every stock row: on hand = seeded − sold from it; reserved = what orders awaiting payment hold there.
    let rows = sqlx::query(
        "select s.warehouse_id, s.sku, s.on_hand, s.reserved,
                coalesce(sum(r.count) filter (where o.status = $1), 0)::bigint as sold,
                coalesce(sum(r.count) filter (where o.status = $2), 0)::bigint as held
         from stocks s
         left join reservations r on r.sku = s.sku and r.warehouse_id = s.warehouse_id
         left join orders o on o.id = r.order_id
         group by s.warehouse_id, s.sku, s.on_hand, s.reserved",
    )
    .bind(PAYED)
    .bind(AWAITING_PAYMENT)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let key = (row.get::<i64, _>("warehouse_id"), row.get::<i64, _>("sku"));
        let (on_hand, reserved): (i64, i64) = (row.get("on_hand"), row.get("reserved"));
        let (sold, held): (i64, i64) = (row.get("sold"), row.get("held"));
        if on_hand != seeded.get(&key).copied().unwrap_or(0) - sold {
            counts.stock_rows_off += 1;
        }
        counts.leftover_reserved_units += (reserved - held).abs();
    }

    let statuses: Vec<(i16, i64)> =
        sqlx::query_as("select status, count(*) from orders group by status").fetch_all(pool).await?;
    counts.by_status = statuses.into_iter().collect();
    counts.unfinished_orders = counts.by_status.range(0..=AWAITING_PAYMENT).map(|(_, n)| n).sum();

    // What the clients were told against what the database holds.
    let ids: Vec<i64> = orders.iter().filter_map(|o| o.order_id).collect();
    let status_of: HashMap<i64, i16> = sqlx::query_as("select id, status from orders where id = any($1)")
        .bind(&ids)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    counts.wrong_final_status = orders
        .iter()
        .filter_map(|order| {
            let status = status_of.get(&order.order_id?).copied();
            let expected = match (order.intent, order.acknowledged) {
                (Intent::Pay, true) => PAYED,
                (Intent::Cancel, true) | (Intent::Leave, _) => CANCELLED,
                // Not acknowledged: either outcome is one the client may see.
                (Intent::Pay | Intent::Cancel, false) => return None,
            };
            Some(status != Some(expected))
        })
        .filter(|wrong| *wrong)
        .count() as i64;

    let row = sqlx::query(
        "select (select count(*) from order_status_history) as history,
                (select count(*) from order_status_history h
                 where not exists (select 1 from orders o where o.id = h.order_id)) as history_of_no_order,
                (select count(*) from outbox) as events,
                (select count(*) from outbox where sent_at is null) as unsent",
    )
    .fetch_one(pool)
    .await?;
    counts.history_without_event = (row.get::<i64, _>("history") - row.get::<i64, _>("events")).abs();
    counts.history_of_no_order = row.get("history_of_no_order");
    counts.unsent = row.get("unsent");

    let events: HashSet<String> = outbox_ids(pool).await?.into_iter().collect();
    counts.events = events.len();
    counts.never_notified = events.iter().filter(|id| !received.contains_key(*id) && !dead.contains(*id)).count();
    counts.dead_lettered = events.iter().filter(|id| dead.contains(*id)).count();
    counts.received_twice = received.values().filter(|n| **n > 1).count();
    counts.received_unknown = received.keys().filter(|id| !events.contains(*id)).count();
    Ok(counts)
}
