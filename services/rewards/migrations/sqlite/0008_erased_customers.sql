-- Customers erased at their request, by a hash of program and id (never the
-- id itself): a gift to an erased customer is refused.
CREATE TABLE erased_customers (
    program_id     TEXT    NOT NULL,
    customer_hash  TEXT    NOT NULL,
    erased_at_us   BIGINT  NOT NULL,
    PRIMARY KEY (program_id, customer_hash)
);
