-- An event the broker refuses for good (too large, say) is set aside instead of blocking the relay: it stays
-- unsent, with when (Unix milliseconds) and why. A parked event is not claimed; the later events of its order wait
-- behind it (order per order), events of other orders keep flowing. `loms outbox republish` clears the mark.
alter table outbox add column parked_at integer;
alter table outbox add column park_reason text;

create index outbox_parked on outbox (id) where parked_at is not null;
