-- Entries are now numbered when they are written (their transaction's id
-- shifted left by 20 bits, plus their place in it), far above any number
-- the old publisher handed out from `ledger_stream_seq`. A binary from
-- before this change, still running during a rolling deploy, must not
-- number its rows from that sequence any more: consumers already past those
-- numbers would skip them. Capping the sequence at its current value makes
-- its publisher fail (and retry, harmlessly); this version's publisher
-- numbers those rows the new way instead.
DO $$
DECLARE
    last BIGINT := nextval('ledger_stream_seq'); -- taken here, given to no row
BEGIN
    EXECUTE format('ALTER SEQUENCE ledger_stream_seq NO CYCLE MINVALUE 0 MAXVALUE %s', last);
END
$$;
