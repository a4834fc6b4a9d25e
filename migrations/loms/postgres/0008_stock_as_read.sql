-- A batch of new orders may be decided on the stock levels LOMS last committed, before it locks anything, and
-- written in one flight (BEGIN, one statement, COMMIT). Its statement locks the stock rows it read and, when they
-- are not what LOMS decided on (another replica or an operator changed them), stops with this function's error: a
-- serialization failure, on which LOMS runs the batch again the locking way. Nothing of the statement is written.
create function loms_stock_changed_since_read() returns boolean
    language plpgsql volatile
as $$
begin
    raise exception 'the stock rows changed since LOMS last read them'
        using errcode = 'serialization_failure';
end
$$;
