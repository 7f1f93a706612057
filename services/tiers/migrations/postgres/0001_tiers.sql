-- Tier ladders and memberships. Instants are integer microseconds since the Unix epoch (UTC).

-- One ladder per program, validated by the service, stored as JSON.
CREATE TABLE ladders (
    program_id     TEXT    PRIMARY KEY,
    body           TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    updated_at_us  BIGINT  NOT NULL,
    updated_by     TEXT    NOT NULL
);

-- Qualifying points as they came from the points ledger: earns count,
-- reversals count negative at the time of the earn they reverse.
CREATE TABLE qualifying_events (
    transaction_id  TEXT    PRIMARY KEY,
    program_id      TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    points          BIGINT  NOT NULL,
    occurred_at_us  BIGINT  NOT NULL,
    sequence        BIGINT  NOT NULL
);
CREATE INDEX qualifying_events_by_customer ON qualifying_events (program_id, customer_id, occurred_at_us);

CREATE TABLE memberships (
    program_id         TEXT    NOT NULL,
    customer_id        TEXT    NOT NULL,
    tier_id            TEXT    NOT NULL DEFAULT '',
    since_us           BIGINT  NOT NULL,
    qualifying         BIGINT  NOT NULL DEFAULT 0,
    assigned_tier_id   TEXT,
    assigned_until_us  BIGINT,
    grace_until_us     BIGINT,
    next_review_us     BIGINT,
    version            BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, customer_id)
);
CREATE INDEX memberships_due ON memberships (next_review_us) WHERE next_review_us IS NOT NULL;

CREATE TABLE membership_history (
    change_id      BIGSERIAL PRIMARY KEY,
    program_id     TEXT    NOT NULL,
    customer_id    TEXT    NOT NULL,
    from_tier_id   TEXT    NOT NULL,
    to_tier_id     TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    changed_at_us  BIGINT  NOT NULL
);
CREATE INDEX membership_history_by_customer ON membership_history (program_id, customer_id, change_id DESC);

-- Where the ledger consumer stands, written in the same transaction as the
-- memberships it changed.
CREATE TABLE consumer_cursors (
    consumer       TEXT    PRIMARY KEY,
    last_sequence  BIGINT  NOT NULL
);

CREATE TABLE idempotency_keys (
    program_id       TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,
    transaction_id   TEXT,
    response         TEXT,
    created_at_us    BIGINT  NOT NULL,
    PRIMARY KEY (program_id, method, idempotency_key)
);
