-- The idempotency key of the spend a task gives back: the points service
-- restores that spend (each point to the lot it came from). Empty for tasks
-- written before, which are sent as an adjustment as they were.
ALTER TABLE points_tasks ADD COLUMN spend_key TEXT NOT NULL DEFAULT '';
