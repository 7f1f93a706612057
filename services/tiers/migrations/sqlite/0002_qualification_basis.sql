-- Every qualification measure of a ledger entry, so that a ladder can
-- qualify on any of them and switch without replaying the ledger: all earned
-- points (`points`), order points with bonuses, order base points, and spend
-- in minor units. Events recorded before this migration count only under
-- the all-earned basis. A reversal names the earn it reverses.
ALTER TABLE qualifying_events ADD COLUMN order_points BIGINT NOT NULL DEFAULT 0;
ALTER TABLE qualifying_events ADD COLUMN base_points BIGINT NOT NULL DEFAULT 0;
ALTER TABLE qualifying_events ADD COLUMN spend_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE qualifying_events ADD COLUMN reverses TEXT;
CREATE INDEX qualifying_events_by_reversed_earn ON qualifying_events (reverses) WHERE reverses IS NOT NULL;
