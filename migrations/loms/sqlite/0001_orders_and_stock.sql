-- LOMS on SQLite (the embedded mode): the same tables and invariants as on PostgreSQL. Times are Unix
-- milliseconds (UTC). One process writes through one connection, which serialises every write transaction.

create table stocks (
    warehouse_id integer not null check (warehouse_id > 0),
    sku          integer not null check (sku > 0 and sku <= 4294967295),
    -- units physically in the warehouse; sold units have left it
    on_hand      integer not null,
    -- units held by orders awaiting payment
    reserved     integer not null default 0,
    primary key (sku, warehouse_id),
    constraint stocks_on_hand_not_negative check (on_hand >= 0),
    constraint stocks_reserved_not_negative check (reserved >= 0),
    -- no oversell: nothing can be reserved that is not on hand
    constraint stocks_reserved_within_on_hand check (reserved <= on_hand)
);

create table orders (
    id               integer primary key autoincrement,
    user_id          integer not null check (user_id > 0),
    -- 0 new, 1 awaiting payment, 2 failed, 3 payed, 4 cancelled (the contract's enum numbers)
    status           integer not null check (status between 0 and 4),
    created_at       integer not null,
    updated_at       integer not null,
    -- set while the order awaits payment; the unpaid-order sweep cancels it once passed
    payment_deadline integer,
    idempotency_key  text,
    -- fingerprint of the request the key first came with: the same key with another request is refused
    request_hash     text,
    constraint orders_deadline_only_while_awaiting check ((status = 1) = (payment_deadline is not null)),
    constraint orders_one_per_idempotency_key unique (user_id, idempotency_key)
);

create index orders_awaiting_payment_by_deadline on orders (payment_deadline) where status = 1;

create table order_items (
    order_id integer not null references orders (id),
    sku      integer not null check (sku > 0),
    count    integer not null check (count between 1 and 65535),
    primary key (order_id, sku)
);

-- exactly what an order holds in each warehouse, so payment and cancellation touch only that
create table reservations (
    order_id     integer not null references orders (id),
    sku          integer not null,
    warehouse_id integer not null,
    count        integer not null check (count > 0),
    primary key (order_id, sku, warehouse_id),
    foreign key (sku, warehouse_id) references stocks (sku, warehouse_id)
);

create table order_status_history (
    id          integer primary key autoincrement,
    order_id    integer not null references orders (id),
    -- null for the order's creation
    from_status integer,
    to_status   integer not null,
    -- 1 created, 2 reserved, 3 insufficient stock, 4 payment, 5 user cancel, 6 unpaid timeout
    reason      integer not null,
    detail      text not null default '',
    at          integer not null
);

create index order_status_history_by_order on order_status_history (order_id, id);

-- transactional outbox: written in the transaction of the change it describes, published by the relay
create table outbox (
    id          integer primary key autoincrement,
    event_id    text not null unique,
    order_id    integer not null,
    payload     text not null,
    traceparent text,
    created_at  integer not null,
    -- set only after the broker acknowledged the event
    sent_at     integer
);

create index outbox_unsent on outbox (id) where sent_at is null;
create index outbox_unsent_by_order on outbox (order_id, id) where sent_at is null;
