-- The order an earn or refund entry belongs to, so that consumers of the
-- stream (referral: first qualifying order, clawback) know the amounts.
ALTER TABLE ledger_entries ADD COLUMN order_id TEXT NOT NULL DEFAULT '';
ALTER TABLE ledger_entries ADD COLUMN order_amount_minor BIGINT NOT NULL DEFAULT 0;
