-- The outbox: the service's events (what the webhooks service delivers),
-- written and numbered (`seq`, its own id: SQLite commits one writer at a
-- time) in the transaction that makes the change, purged after a week.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    seq             INTEGER UNIQUE,
    program_id      TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    occurred_at_us  INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    -- The service clock when written: retention counts from it.
    written_at_us   INTEGER NOT NULL
);
