-- Notifications on PostgreSQL: which events each sink has already been given, so that an event delivered twice
-- by Kafka (a redelivery after a crash or a rebalance, or a republish by the LOMS relay) notifies once.

create table processed_events (
    event_id     uuid not null,
    -- the sink that was given the event: log, telegram, webhook
    sink         text not null,
    order_id     bigint not null,
    processed_at timestamptz not null default now(),
    -- one delivery per event and sink; a second consumer handling the same event waits on this key for the first
    -- one's transaction, then sees it done
    primary key (event_id, sink)
);

-- pruning of entries older than the de-duplication window
create index processed_events_by_time on processed_events (processed_at);
