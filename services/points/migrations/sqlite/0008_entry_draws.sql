-- The lots a spend drew from (JSON [{lot_id, points}]), so that giving the
-- spend back returns each point to its own lot, with that lot's expiry.
ALTER TABLE ledger_entries ADD COLUMN draws TEXT NOT NULL DEFAULT '';
