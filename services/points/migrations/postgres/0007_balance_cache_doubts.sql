-- Accounts whose balance, after a commit, could not be written to Redis:
-- Redis may still hold an older one. Written only on that failure path, read
-- by every replica, so the doubt survives a restart and reaches the others.
-- `version` is the committed version that failed to reach Redis.
CREATE TABLE balance_cache_doubts (
    program_id   TEXT    NOT NULL,
    customer_id  TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    PRIMARY KEY (program_id, customer_id)
);
