-- Referrals. Instants are integer microseconds since the Unix epoch (UTC).

CREATE TABLE referral_settings (
    program_id     TEXT    PRIMARY KEY,
    body           TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    updated_at_us  BIGINT  NOT NULL,
    updated_by     TEXT    NOT NULL
);

-- One code per customer, unique per program, random (not derived from the id).
CREATE TABLE referral_codes (
    program_id     TEXT    NOT NULL,
    customer_id    TEXT    NOT NULL,
    code           TEXT    NOT NULL,
    enabled        BIGINT  NOT NULL DEFAULT 1,
    created_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (program_id, customer_id),
    UNIQUE (program_id, code)
);

CREATE TABLE referrals (
    referral_seq          BIGSERIAL PRIMARY KEY,
    referral_id           TEXT    NOT NULL UNIQUE,
    program_id            TEXT    NOT NULL,
    code                  TEXT    NOT NULL,
    referrer_customer_id  TEXT    NOT NULL,
    referee_customer_id   TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    created_at_us         BIGINT  NOT NULL,
    completed_at_us       BIGINT,
    reversed_at_us        BIGINT,
    qualifying_order_id   TEXT    NOT NULL DEFAULT '',
    referrer_points       BIGINT  NOT NULL DEFAULT 0,
    -- A friend is referred once per program.
    UNIQUE (program_id, referee_customer_id)
);
CREATE INDEX referrals_by_referrer ON referrals (program_id, referrer_customer_id, created_at_us);

-- Every order seen, once, whichever way it came (ledger stream or RecordPurchase).
CREATE TABLE orders_seen (
    program_id      TEXT    NOT NULL,
    order_id        TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    amount_minor    BIGINT  NOT NULL,
    refunded_minor  BIGINT  NOT NULL DEFAULT 0,
    occurred_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (program_id, order_id)
);
CREATE INDEX orders_seen_by_customer ON orders_seen (program_id, customer_id);

-- Refunds seen, once each (ledger transaction id or the caller's key).
CREATE TABLE refunds_seen (
    program_id  TEXT  NOT NULL,
    refund_key  TEXT  NOT NULL,
    PRIMARY KEY (program_id, refund_key)
);

-- Points calls still to make, written with the state change that needs them
-- and sent (idempotently, by task id) until the points service confirms.
CREATE TABLE reward_tasks (
    task_seq           BIGSERIAL PRIMARY KEY,
    task_id            TEXT    NOT NULL UNIQUE,
    program_id         TEXT    NOT NULL,
    customer_id        TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    points             BIGINT  NOT NULL,
    reason             TEXT    NOT NULL,
    -- For a reversal: the idempotency key of the earn it takes back.
    original_key       TEXT    NOT NULL DEFAULT '',
    done               BIGINT  NOT NULL DEFAULT 0,
    attempts           BIGINT  NOT NULL DEFAULT 0,
    created_at_us      BIGINT  NOT NULL
);
CREATE INDEX reward_tasks_pending ON reward_tasks (task_seq) WHERE done = 0;

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
