-- Notifications on SQLite (the embedded mode): the same table and rule as on PostgreSQL. Times are Unix
-- milliseconds (UTC); event ids are UUIDs in their hyphenated text form, as in LOMS's outbox. One process writes
-- through one connection in `begin immediate` transactions, which serialises every claim.

create table processed_events (
    event_id     text not null,
    -- the sink that was given the event: log, telegram, webhook
    sink         text not null,
    order_id     integer not null,
    processed_at integer not null,
    -- one delivery per event and sink; a second consumer handling the same event waits for the first one's write
    -- transaction to end (the single writer connection, or the database's write lock), then sees it done
    primary key (event_id, sink)
);

-- pruning of entries older than the de-duplication window
create index processed_events_by_time on processed_events (processed_at);
