-- The points ledger. Instants are integer microseconds since the Unix epoch (UTC).

-- Balance projection, updated in the same transaction as the ledger rows.
CREATE TABLE accounts (
    program_id          TEXT    NOT NULL,
    customer_id         TEXT    NOT NULL,
    available           BIGINT  NOT NULL DEFAULT 0,
    pending             BIGINT  NOT NULL DEFAULT 0,
    lifetime_earned     BIGINT  NOT NULL DEFAULT 0,
    spent               BIGINT  NOT NULL DEFAULT 0,
    expired             BIGINT  NOT NULL DEFAULT 0,
    reversed            BIGINT  NOT NULL DEFAULT 0,
    -- Points a reversal took back after they were spent; the next earns repay it.
    debt                BIGINT  NOT NULL DEFAULT 0 CHECK (debt >= 0),
    -- Grows by one with every committed change; versions the balance cache.
    version             BIGINT  NOT NULL DEFAULT 0,
    -- Earliest instant at which a pending lot activates or an active lot expires.
    next_transition_us  BIGINT,
    next_expiry_us      BIGINT,
    next_expiry_points  BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, customer_id),
    CHECK (pending >= 0)
);
CREATE INDEX accounts_due ON accounts (next_transition_us) WHERE next_transition_us IS NOT NULL;

-- What is left of each earn (or positive adjustment), for FIFO spending,
-- expiry and reversal.
CREATE TABLE point_lots (
    lot_id            TEXT    PRIMARY KEY,
    program_id        TEXT    NOT NULL,
    customer_id       TEXT    NOT NULL,
    original          BIGINT  NOT NULL CHECK (original > 0),
    remaining         BIGINT  NOT NULL CHECK (remaining >= 0),
    consumed          BIGINT  NOT NULL DEFAULT 0,
    expired           BIGINT  NOT NULL DEFAULT 0,
    reversed          BIGINT  NOT NULL DEFAULT 0,
    expired_reversed  BIGINT  NOT NULL DEFAULT 0,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'active')),
    pending_until_us  BIGINT,
    expires_at_us     BIGINT,
    earned_at_us      BIGINT  NOT NULL,
    FOREIGN KEY (program_id, customer_id) REFERENCES accounts (program_id, customer_id)
);
CREATE INDEX point_lots_open ON point_lots (program_id, customer_id) WHERE remaining > 0;

-- Append-only. `seq` is the stream position: NULL at insert, handed out
-- after commit by one publisher at a time (an advisory lock serialises
-- them), so positions grow in the order rows become visible and a consumer
-- reading `seq > cursor` can never skip a row that committed late.
CREATE TABLE ledger_entries (
    id                      BIGSERIAL PRIMARY KEY,
    seq                     BIGINT  UNIQUE,
    transaction_id          TEXT    NOT NULL UNIQUE,
    program_id              TEXT    NOT NULL,
    customer_id             TEXT    NOT NULL,
    kind                    TEXT    NOT NULL,
    points                  BIGINT  NOT NULL,
    pending_points          BIGINT  NOT NULL,
    reason                  TEXT    NOT NULL,
    related_transaction_id  TEXT    NOT NULL DEFAULT '',
    created_at_us           BIGINT  NOT NULL,
    pending_until_us        BIGINT,
    expires_at_us           BIGINT
);
CREATE INDEX ledger_entries_account ON ledger_entries (program_id, customer_id, id DESC);
CREATE INDEX ledger_entries_unpublished ON ledger_entries (id) WHERE seq IS NULL;
CREATE SEQUENCE ledger_stream_seq;

-- One row per (program, method, key): the request's hash and the saved result.
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
