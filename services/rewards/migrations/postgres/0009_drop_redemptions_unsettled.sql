-- Nothing searches or sorts redemptions by updated_at_us: the unsettled
-- (pending) redemptions are found through redemptions_leased, whose rows are
-- the same. One index entry less for every redemption staged, renewed or
-- taken over.
DROP INDEX IF EXISTS redemptions_unsettled;
