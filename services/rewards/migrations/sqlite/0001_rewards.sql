-- Rewards catalog, redemptions and vouchers. Instants are integer
-- microseconds since the Unix epoch (UTC).

CREATE TABLE rewards (
    reward_id        TEXT    PRIMARY KEY,
    program_id       TEXT    NOT NULL,
    -- The validated reward as JSON; stock lives in its own columns.
    body             TEXT    NOT NULL,
    total_stock      BIGINT,
    remaining_stock  BIGINT  CHECK (remaining_stock >= 0),
    archived         BIGINT  NOT NULL DEFAULT 0,
    created_at_us    BIGINT  NOT NULL
);
CREATE INDEX rewards_by_program ON rewards (program_id);

-- A redemption is a small saga: PENDING while points are spent, then ACTIVE
-- (voucher usable) or FAILED (points given back). The voucher code is
-- reserved at the start and only valid once ACTIVE.
CREATE TABLE redemptions (
    redemption_seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    redemption_id         TEXT    NOT NULL UNIQUE,
    program_id            TEXT    NOT NULL,
    customer_id           TEXT    NOT NULL,
    reward_id             TEXT    NOT NULL,
    reward_name           TEXT    NOT NULL,
    points                BIGINT  NOT NULL,
    status                TEXT    NOT NULL,
    voucher_code          TEXT    NOT NULL,
    voucher_expires_at_us BIGINT  NOT NULL,
    consumed_order_id     TEXT    NOT NULL DEFAULT '',
    idempotency_key       TEXT    NOT NULL,
    request_hash          TEXT    NOT NULL,
    -- Set when the spend's outcome is unknown and must be undone.
    compensate            BIGINT  NOT NULL DEFAULT 0,
    created_at_us         BIGINT  NOT NULL,
    updated_at_us         BIGINT  NOT NULL,
    UNIQUE (program_id, voucher_code),
    UNIQUE (program_id, idempotency_key)
);
CREATE INDEX redemptions_by_customer ON redemptions (program_id, customer_id, redemption_seq DESC);
CREATE INDEX redemptions_by_reward ON redemptions (reward_id, customer_id, created_at_us);
CREATE INDEX redemptions_unsettled ON redemptions (updated_at_us) WHERE status = 'pending';
CREATE INDEX redemptions_expiring ON redemptions (voucher_expires_at_us) WHERE status = 'active';

-- Points given back (cancel, failed spend, expiry policy), written with the
-- state change and sent until the points service confirms.
CREATE TABLE points_tasks (
    task_seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id        TEXT    NOT NULL UNIQUE,
    program_id     TEXT    NOT NULL,
    customer_id    TEXT    NOT NULL,
    points         BIGINT  NOT NULL,
    reason         TEXT    NOT NULL,
    done           BIGINT  NOT NULL DEFAULT 0,
    created_at_us  BIGINT  NOT NULL
);
CREATE INDEX points_tasks_pending ON points_tasks (task_seq) WHERE done = 0;

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
