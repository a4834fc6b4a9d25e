-- Notifications on SQLite (the embedded mode): the same table and rule as on PostgreSQL. Which events are
-- finished — every channel they are routed to has them, or they are on the dead-letter topic. At start-up,
-- `minizon dev` republishes the events LOMS published that are not here: the embedded broker keeps nothing across
-- a restart. Times are Unix milliseconds (UTC); event ids are hyphenated UUID text.

create table handled_events (
    event_id   text primary key,
    order_id   integer not null,
    -- notified: every channel has it; dead-lettered: it went to the dead-letter topic with the reason
    outcome    text not null check (outcome in ('notified', 'dead-lettered')),
    handled_at integer not null
);

-- pruning of entries older than the de-duplication window
create index handled_events_by_time on handled_events (handled_at);
