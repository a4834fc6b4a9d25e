-- The outbox trigger of 0002 made every commit that wrote events take PostgreSQL's global NOTIFY queue lock, which
-- serialised all order transactions at commit (measured: ~78 % of LOMS sessions waiting on it under load; see
-- docs/benchmarks.md). The relay is now woken in-process by the commits of its own LOMS process — every replica
-- runs a relay — and polls for events written by processes without one.

drop trigger outbox_notify on outbox;
drop function outbox_notify();
