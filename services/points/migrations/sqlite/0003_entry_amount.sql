-- The points each entry concerned, whatever it did to the balances (a
-- reversal of expired points moves no balance but still reverses them).
ALTER TABLE ledger_entries ADD COLUMN amount BIGINT NOT NULL DEFAULT 0;
