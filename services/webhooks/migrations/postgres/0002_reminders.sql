-- Points that will expire, learnt from the ledger's earns, for the
-- `points.expiring_soon` reminder: one row per customer and expiry instant
-- (a lot, or the lots that expire at that same instant), kept only for
-- programs with a subscription to that event when the points were earned.
-- A row is deleted when its reminder is recorded, or once the instant has
-- passed.
CREATE TABLE reminders (
    program_id     TEXT    NOT NULL,
    customer_id    TEXT    NOT NULL,
    expires_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (program_id, customer_id, expires_at_us)
);
-- The reminder job: a program's rows expiring before its horizon.
CREATE INDEX reminders_due ON reminders (program_id, expires_at_us);
