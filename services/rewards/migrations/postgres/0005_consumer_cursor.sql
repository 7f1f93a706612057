-- How far the rewards service has followed the points ledger (it watches
-- reversals that leave a customer in debt while holding unused vouchers).
CREATE TABLE consumer_cursors (
    consumer       TEXT    PRIMARY KEY,
    last_sequence  BIGINT  NOT NULL
);
