-- Checkout on PostgreSQL: users' carts. The database holds the invariants the code relies on.

-- One row per user who ever had a cart. Every writer locks this row first (then the user's lines), so concurrent
-- changes of one cart are serialised and always lock in the same order: no deadlocks.
create table carts (
    user_id bigint primary key check (user_id > 0),
    -- bumped by every change of the cart's lines, by a purchase that cleared the cart and by a purchase whose
    -- reservation failed: the purchase idempotency key is derived from it, so a new attempt gets a new key
    version bigint not null default 0 check (version >= 0)
);

create table cart_items (
    user_id bigint not null references carts (user_id),
    sku     bigint not null check (sku > 0 and sku <= 4294967295),
    -- a cart line holds 1 to 65535 units (the contract's count is a uint16); the line disappears at zero
    count   integer not null check (count between 1 and 65535),
    primary key (user_id, sku)
);
