-- An order's items and reservations move into its own row, as arrays (issue 13, docs/benchmarks.md run 10). They are
-- written once, with the order, and replaced whole by a change of lines; nothing reads them but by their order. As
-- tables they cost every new order 6 more heap tuples, 6 index entries and 9 foreign-key checks (each a query of
-- its own) for 3 lines: about half of the PostgreSQL time of a CreateOrder batch. `order_items` and `reservations`
-- stay readable, as views of the same rows and columns.
--
-- Line i of the order is (item_skus[i], item_counts[i]); what it holds is (held_skus[j], held_warehouses[j],
-- held_counts[j]): at most one entry per (sku, warehouse), decided by the domain's allocation over locked stock rows.

alter table orders
    add column item_skus       bigint[]  not null default '{}',
    add column item_counts     integer[] not null default '{}',
    add column held_skus       bigint[]  not null default '{}',
    add column held_warehouses bigint[]  not null default '{}',
    add column held_counts     bigint[]  not null default '{}';

update orders o
set item_skus = i.skus, item_counts = i.counts
from (
    select order_id, array_agg(sku order by sku) as skus, array_agg(count order by sku) as counts
    from order_items group by order_id
) i
where i.order_id = o.id;

update orders o
set held_skus = r.skus, held_warehouses = r.warehouses, held_counts = r.counts
from (
    select order_id,
           array_agg(sku order by sku, warehouse_id) as skus,
           array_agg(warehouse_id order by sku, warehouse_id) as warehouses,
           array_agg(count order by sku, warehouse_id) as counts
    from reservations group by order_id
) r
where r.order_id = o.id;

drop table reservations;
drop table order_items;

-- What the tables' own constraints said, on the arrays (the tables' keys, one row per sku and per (sku, warehouse),
-- hold by construction: the domain's lines are a map, and allocation takes each stock row once).
alter table orders
    add constraint orders_items_line_up check (
        cardinality(item_skus) = cardinality(item_counts)
        and 0 < all (item_skus) and 1 <= all (item_counts) and 65535 >= all (item_counts)),
    add constraint orders_holds_line_up check (
        cardinality(held_skus) = cardinality(held_warehouses)
        and cardinality(held_skus) = cardinality(held_counts)
        and 0 < all (held_counts));

create view order_items as
select o.id as order_id, i.sku, i.count
from orders o cross join lateral unnest(o.item_skus, o.item_counts) as i(sku, count);

create view reservations as
select o.id as order_id, r.sku, r.warehouse_id, r.count
from orders o cross join lateral unnest(o.held_skus, o.held_warehouses, o.held_counts) as r(sku, warehouse_id, count);
