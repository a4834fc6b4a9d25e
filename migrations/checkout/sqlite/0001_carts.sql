-- Checkout on SQLite (the embedded mode): the same tables and invariants as on PostgreSQL. One process writes
-- through one connection in `begin immediate` transactions, which serialises every change of every cart (the
-- SQLite counterpart of PostgreSQL's lock on the `carts` row).

-- One row per user who ever had a cart.
create table carts (
    user_id integer primary key check (user_id > 0),
    -- bumped by every change of the cart's lines, by a purchase that cleared the cart and by a purchase whose
    -- reservation failed: the purchase idempotency key is derived from it, so a new attempt gets a new key
    version integer not null default 0 check (version >= 0)
);

create table cart_items (
    user_id integer not null references carts (user_id),
    sku     integer not null check (sku > 0 and sku <= 4294967295),
    -- a cart line holds 1 to 65535 units (the contract's count is a uint16); the line disappears at zero
    count   integer not null check (count between 1 and 65535),
    primary key (user_id, sku)
);
