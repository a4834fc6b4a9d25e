//! `notifications dead-letter replay`: dead letters back onto the event topic, once the cause is fixed.
//!
//! The replay reads the dead-letter topic as a consumer group of its own (`--replay-group-id`), from where the
//! previous replay stopped up to the end the topic had when it began, publishes each record to the event topic
//! with its original key, value and headers (the `dead-letter-*` ones dropped, `dead-letter-replayed-from` added),
//! waits for every acknowledgement, and only then commits how far it got. A replay that fails part-way commits
//! nothing and can simply be run again: the worker de-duplicates per event and channel, so channels that already
//! had an event skip it and only the ones that refused it are tried again.
//!
//! A replayed event comes after the newer events of its order that went through meanwhile: the notification of an
//! old step arrives late, which is what replaying means.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use minizon_common::kafka::{
    HEADER_DEAD_LETTER_REASON, HEADER_DEAD_LETTER_SINK, HEADER_DEAD_LETTER_SOURCE, header_str,
    idempotent_producer_config,
};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::{Header, Headers, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};

use crate::config::{Config, ReplayArgs};

/// Header naming the dead letter a replayed record came from (`topic/partition/offset`).
pub const HEADER_REPLAYED_FROM: &str = "dead-letter-replayed-from";

/// How long the broker may take to answer a metadata, offset or fetch request, and to acknowledge a record.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters published back to the event topic (or, on a dry run, that would be).
    pub replayed: usize,
    /// One line per dead letter: where it was, its key and the reason it was dead-lettered.
    pub letters: Vec<String>,
}

/// Replays every dead letter the replay group has not replayed yet; see the module documentation.
pub async fn replay(config: &Config, args: &ReplayArgs) -> anyhow::Result<ReplaySummary> {
    let (brokers, topic, group) =
        (config.kafka_brokers.clone(), config.dead_letter_topic.clone(), args.replay_group_id.clone());
    let (consumer, letters) = tokio::task::spawn_blocking(move || read_pending(&brokers, &topic, &group))
        .await
        .context("the dead-letter reader panicked")??;
    let summary = ReplaySummary { replayed: letters.len(), letters: letters.iter().map(describe).collect() };
    if args.dry_run || letters.is_empty() {
        return Ok(summary);
    }

    let producer: FutureProducer =
        idempotent_producer_config(&config.kafka_brokers, "notifications-dead-letter-replay", BROKER_TIMEOUT)
            .create()
            .context("create the replay producer")?;
    // Enqueue everything, then wait: the acknowledgements of one replay come back in a few round trips.
    let mut deliveries = Vec::with_capacity(letters.len());
    for letter in &letters {
        let headers = replay_headers(letter);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&config.topic).headers(headers);
        if let Some(key) = letter.key() {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload() {
            record = record.payload(payload);
        }
        deliveries.push(producer.send(record, Timeout::After(BROKER_TIMEOUT)));
    }
    for delivery in deliveries {
        delivery.await.map_err(|(error, _)| error).context("publish a dead letter back to the event topic")?;
    }

    // The position after the last letter of each partition.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for letter in &letters {
        let position = next.entry(letter.partition()).or_default();
        *position = (*position).max(letter.offset() + 1);
    }
    let mut done = TopicPartitionList::new();
    for (partition, offset) in next {
        done.add_partition_offset(&config.dead_letter_topic, partition, Offset::Offset(offset))?;
    }
    tokio::task::spawn_blocking(move || consumer.commit(&done, CommitMode::Sync))
        .await
        .context("the commit panicked")?
        .context("remember how far the replay got")?;
    Ok(summary)
}

/// The dead letters from the group's committed position (or the start) to the end the topic has now, by
/// partition and offset; and the consumer, to commit with.
fn read_pending(brokers: &str, topic: &str, group: &str) -> anyhow::Result<(BaseConsumer, Vec<OwnedMessage>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("client.id", "notifications-dead-letter-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("create the dead-letter reader")?;
    let metadata = consumer.fetch_metadata(Some(topic), BROKER_TIMEOUT).context("read the topic's metadata")?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    anyhow::ensure!(!partitions.is_empty(), "the dead-letter topic {topic} does not exist");

    let mut wanted = TopicPartitionList::new();
    for partition in &partitions {
        wanted.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(wanted, BROKER_TIMEOUT).context("read the replay's position")?;
    let mut assignment = TopicPartitionList::new();
    let mut pending: Vec<(i32, i64)> = Vec::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, BROKER_TIMEOUT).context("read the watermarks")?;
        let from = match committed.find_partition(topic, partition).map(|element| element.offset()) {
            Some(Offset::Offset(offset)) => offset.max(low),
            _ => low,
        };
        if from < high {
            assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
            pending.push((partition, high));
        }
    }
    let mut letters = Vec::new();
    if pending.is_empty() {
        return Ok((consumer, letters));
    }
    consumer.assign(&assignment).context("assign the dead-letter partitions")?;
    let deadline = std::time::Instant::now() + BROKER_TIMEOUT;
    while !pending.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the broker did not deliver the dead letters within {BROKER_TIMEOUT:?}; still waiting for {pending:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.context("read a dead letter")?;
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&(_, high)) = pending.iter().find(|(p, _)| *p == partition) else { continue };
        if offset < high {
            letters.push(message.detach());
        }
        if offset + 1 >= high {
            pending.retain(|(p, _)| *p != partition);
        }
    }
    letters.sort_by_key(|letter| (letter.partition(), letter.offset()));
    Ok((consumer, letters))
}

/// The letter's headers without the dead-letter ones, plus where it came from.
fn replay_headers(letter: &OwnedMessage) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = letter.headers() {
        for header in original.iter() {
            let dead_letter = [HEADER_DEAD_LETTER_REASON, HEADER_DEAD_LETTER_SINK, HEADER_DEAD_LETTER_SOURCE];
            if !dead_letter.contains(&header.key) && header.key != HEADER_REPLAYED_FROM {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
    }
    let from = format!("{}/{}/{}", letter.topic(), letter.partition(), letter.offset());
    headers.insert(Header { key: HEADER_REPLAYED_FROM, value: Some(&from) })
}

/// `loms.order-status-changed.dead-letter/0/3 key 42: webhook: HTTP 400 …`.
fn describe(letter: &OwnedMessage) -> String {
    let key = letter.key().map(String::from_utf8_lossy).unwrap_or_default();
    let reason = header_str(letter, HEADER_DEAD_LETTER_REASON).unwrap_or("no reason recorded");
    format!("{}/{}/{} key {key}: {reason}", letter.topic(), letter.partition(), letter.offset())
}
