-- Who caused a points task (the key that cancelled a voucher), passed on to
-- the points ledger as the refund's actor.
ALTER TABLE points_tasks ADD COLUMN actor TEXT NOT NULL DEFAULT '';
