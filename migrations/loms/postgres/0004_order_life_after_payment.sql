-- The order's life after payment (issue 10): statuses shipped (5) and delivered (6), and the return a refund of a
-- shipped order requests. A return's units come back on hand exactly once: `refund_state` moves 1 → 2 under the
-- order's row lock, in the transaction that restocks them.

alter table orders drop constraint orders_status_check;
-- 0 new, 1 awaiting payment, 2 failed, 3 payed, 4 cancelled, 5 shipped, 6 delivered (the contract's enum numbers)
alter table orders add constraint orders_status_known check (status between 0 and 6);

-- 0 not refunded, 1 refunded from payed (restocked at once), 2 refunded while shipped: return requested, 3 return received (restocked)
alter table orders add column refund_state smallint not null default 0;
alter table orders add constraint orders_return_only_when_cancelled
    check (refund_state between 0 and 3 and (refund_state = 0 or status = 4));
