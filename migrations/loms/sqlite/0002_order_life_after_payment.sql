-- The order's life after payment (issue 10): statuses shipped (5) and delivered (6), and the return a refund of a
-- shipped order requests. SQLite cannot change a CHECK constraint in place, so `orders` is rebuilt. sqlx runs every
-- SQLite migration inside a transaction, where `PRAGMA foreign_keys` cannot be switched off; deferring the foreign
-- keys instead lets the child rows point at no parent between the drop and the copy back, and the commit checks
-- that every one of them has its parent again.

PRAGMA defer_foreign_keys = on;

create temporary table orders_before_0002 as select * from orders;

drop table orders;

create table orders (
    id               integer primary key autoincrement,
    user_id          integer not null check (user_id > 0),
    -- 0 new, 1 awaiting payment, 2 failed, 3 payed, 4 cancelled, 5 shipped, 6 delivered (the contract's enum numbers)
    status           integer not null check (status between 0 and 6),
    created_at       integer not null,
    updated_at       integer not null,
    -- set while the order awaits payment; the unpaid-order sweep cancels it once passed
    payment_deadline integer,
    idempotency_key  text,
    -- fingerprint of the request the key first came with: the same key with another request is refused
    request_hash     text,
    -- 0 not refunded, 1 refunded from payed (restocked at once), 2 refunded while shipped: return requested,
    -- 3 return received (restocked); ReceiveReturn moves 2 → 3 in the transaction that restocks
    refund_state     integer not null default 0,
    constraint orders_deadline_only_while_awaiting check ((status = 1) = (payment_deadline is not null)),
    constraint orders_one_per_idempotency_key unique (user_id, idempotency_key),
    constraint orders_return_only_when_cancelled
        check (refund_state between 0 and 3 and (refund_state = 0 or status = 4))
);

insert into orders (id, user_id, status, created_at, updated_at, payment_deadline, idempotency_key, request_hash)
select id, user_id, status, created_at, updated_at, payment_deadline, idempotency_key, request_hash
from orders_before_0002;

drop table orders_before_0002;

create index orders_awaiting_payment_by_deadline on orders (payment_deadline) where status = 1;
