-- The webhooks service's data: the shops' endpoints, the events recorded for
-- them, one delivery per event and endpoint, and every attempt made.
-- Instants are integer microseconds since the Unix epoch (UTC).

-- An endpoint of one program. `event_types`: the types it wants, each
-- between commas (`,points.earned,points.spent,`), or empty for every type.
-- `enabled` 0: disabled by the shop, 1: enabled, 2: disabled by us after
-- failing for days. The secrets sign deliveries, so they are kept as they
-- are (they cannot be hashed); `previous_secret` still signs until
-- `previous_until_us` after a rotation.
CREATE TABLE subscriptions (
    subscription_id    TEXT    PRIMARY KEY,
    program_id         TEXT    NOT NULL,
    url                TEXT    NOT NULL,
    event_types        TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    ordered            BIGINT  NOT NULL,
    enabled            BIGINT  NOT NULL,
    secret             TEXT    NOT NULL,
    previous_secret    TEXT,
    previous_until_us  BIGINT,
    failing_since_us   BIGINT,
    version            BIGINT  NOT NULL,
    created_at_us      BIGINT  NOT NULL
);
-- ListSubscriptions, and the fan-out of a program's events.
CREATE INDEX subscriptions_by_program ON subscriptions (program_id, subscription_id);

-- Every event once, with the exact body that is signed and sent. `source`
-- and `source_position` name what it came from (the points ledger's
-- sequence), so nothing is recorded twice.
CREATE TABLE events (
    event_id         TEXT    PRIMARY KEY,
    program_id       TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    customer_id      TEXT    NOT NULL,
    source           TEXT    NOT NULL,
    source_position  TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    occurred_at_us   BIGINT  NOT NULL,
    UNIQUE (source, source_position)
);

-- One event for one subscription. `state`: pending, delivered or failed.
-- A pending delivery is due at `next_attempt_us`; a worker that takes it
-- moves that instant past its attempt (a lease), so another worker only
-- takes it again when the first died without saying how it went.
CREATE TABLE deliveries (
    delivery_seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      TEXT    NOT NULL UNIQUE,
    subscription_id  TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    customer_id      TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         BIGINT  NOT NULL,
    next_attempt_us  BIGINT,
    created_at_us    BIGINT  NOT NULL
);
-- The dispatcher: what is due.
CREATE INDEX deliveries_due ON deliveries (next_attempt_us) WHERE state = 'pending';
-- Ordered subscriptions: a customer's earlier delivery still pending.
CREATE INDEX deliveries_pending_by_customer ON deliveries (subscription_id, customer_id, delivery_seq)
    WHERE state = 'pending';
-- ListDeliveries, newest first, and by event.
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, delivery_seq);
CREATE INDEX deliveries_by_event ON deliveries (event_id);

-- Every attempt of a delivery.
CREATE TABLE attempts (
    delivery_seq     BIGINT  NOT NULL,
    attempt          BIGINT  NOT NULL,
    attempted_at_us  BIGINT  NOT NULL,
    status_code      BIGINT  NOT NULL,
    latency_ms       BIGINT  NOT NULL,
    response         TEXT    NOT NULL,
    error            TEXT    NOT NULL,
    PRIMARY KEY (delivery_seq, attempt)
);

-- Write RPCs' idempotency keys and saved answers.
CREATE TABLE idempotency_keys (
    program_id       TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,
    response         TEXT,
    transaction_id   TEXT,
    created_at_us    BIGINT  NOT NULL,
    PRIMARY KEY (program_id, method, idempotency_key)
);

-- Where each followed stream stands.
CREATE TABLE consumer_cursors (
    consumer       TEXT    PRIMARY KEY,
    last_sequence  BIGINT  NOT NULL
);
