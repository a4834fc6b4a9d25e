-- Notifications on PostgreSQL: which events are finished — every channel they are routed to has them, or they are
-- on the dead-letter topic. processed_events says what each channel was given; this table says an event needs
-- nothing more, whatever its routing. The embedded mode republishes, at start-up, the events LOMS published that
-- are not here (its broker keeps nothing across a restart); the fault suite counts from it.

create table handled_events (
    event_id   uuid primary key,
    order_id   bigint not null,
    -- notified: every channel has it; dead-lettered: it went to the dead-letter topic with the reason
    outcome    text not null check (outcome in ('notified', 'dead-lettered')),
    handled_at timestamptz not null default now()
);

-- pruning of entries older than the de-duplication window
create index handled_events_by_time on handled_events (handled_at);
