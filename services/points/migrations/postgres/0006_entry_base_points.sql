-- An order earn's points before tier and campaign bonuses, so that the tiers
-- service can qualify members on base order points.
ALTER TABLE ledger_entries ADD COLUMN base_points BIGINT NOT NULL DEFAULT 0;
