-- The points ledger. Instants are integer microseconds since the Unix epoch (UTC).
-- Same shape as the PostgreSQL schema; SQLite serialises writers, so the
-- stream position `seq` is handed out inside the writing transaction.

CREATE TABLE accounts (
    program_id          TEXT    NOT NULL,
    customer_id         TEXT    NOT NULL,
    available           BIGINT  NOT NULL DEFAULT 0,
    pending             BIGINT  NOT NULL DEFAULT 0,
    lifetime_earned     BIGINT  NOT NULL DEFAULT 0,
    spent               BIGINT  NOT NULL DEFAULT 0,
    expired             BIGINT  NOT NULL DEFAULT 0,
    reversed            BIGINT  NOT NULL DEFAULT 0,
    debt                BIGINT  NOT NULL DEFAULT 0 CHECK (debt >= 0),
    version             BIGINT  NOT NULL DEFAULT 0,
    next_transition_us  BIGINT,
    next_expiry_us      BIGINT,
    next_expiry_points  BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, customer_id),
    CHECK (pending >= 0)
);
CREATE INDEX accounts_due ON accounts (next_transition_us) WHERE next_transition_us IS NOT NULL;

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

CREATE TABLE ledger_entries (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
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
