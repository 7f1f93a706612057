-- What the program's customers do, as learnt from the points ledger.
-- Instants are integer microseconds since the Unix epoch (UTC).

-- Every order once (an order id earns once), with what was refunded of it.
CREATE TABLE orders (
    program_id      TEXT    NOT NULL,
    order_id        TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    amount_minor    BIGINT  NOT NULL,
    refunded_minor  BIGINT  NOT NULL DEFAULT 0,
    occurred_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (program_id, order_id)
);
CREATE INDEX orders_by_customer ON orders (program_id, customer_id, occurred_at_us);

-- One row per customer with an order: the orders not refunded in full add
-- up to these numbers; `segment` holds until `review_at_us`, when time alone
-- may change it.
CREATE TABLE customers (
    program_id      TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    first_order_us  BIGINT,
    last_order_us   BIGINT,
    order_count     BIGINT  NOT NULL,
    spend_minor     BIGINT  NOT NULL,
    segment         TEXT    NOT NULL,
    review_at_us    BIGINT,
    PRIMARY KEY (program_id, customer_id)
);
-- ListCustomers (by spend, by recency, within a segment) and the RFM ranks.
CREATE INDEX customers_by_spend ON customers (program_id, spend_minor, customer_id);
CREATE INDEX customers_by_recency ON customers (program_id, last_order_us, customer_id);
CREATE INDEX customers_by_segment ON customers (program_id, segment, spend_minor, customer_id);
-- The review job: segments that time alone is about to change.
CREATE INDEX customers_due ON customers (review_at_us) WHERE review_at_us IS NOT NULL;

-- A program's thresholds, validated by the service, stored as JSON.
CREATE TABLE insight_settings (
    program_id     TEXT    PRIMARY KEY,
    body           TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    updated_at_us  BIGINT  NOT NULL,
    updated_by     TEXT    NOT NULL
);

-- Where the ledger consumer stands, written in the same transaction as the
-- orders and customers it changed.
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
