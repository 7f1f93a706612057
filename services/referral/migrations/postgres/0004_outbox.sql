-- The outbox: the service's events (what the webhooks service delivers),
-- written in the transaction that makes the change, numbered by the
-- publisher after commit in commit order (`seq`), purged after a week.
CREATE SEQUENCE outbox_seq;
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    seq             BIGINT UNIQUE,
    program_id      TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    occurred_at_us  BIGINT  NOT NULL,
    data            TEXT    NOT NULL,
    -- The service clock when written: retention counts from it.
    written_at_us   BIGINT  NOT NULL
);
-- What the publisher numbers next.
CREATE INDEX outbox_unnumbered ON outbox (id) WHERE seq IS NULL;
