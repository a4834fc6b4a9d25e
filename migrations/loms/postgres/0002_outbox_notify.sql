-- Wakes the outbox relay as soon as a transaction that wrote events commits, instead of on its next poll.
-- NOTIFY is delivered at commit (never for a rolled-back transaction) and PostgreSQL folds identical
-- notifications of one transaction into one, so a statement-level trigger costs one notification per commit.
-- The payload is the schema, so that relays of other schemas in the same database can ignore it.

create function outbox_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('loms_outbox', current_schema());
    return null;
end;
$$;

create trigger outbox_notify
    after insert on outbox
    for each statement
    execute function outbox_notify();
