-- Points that paid for part of an order (ApplyCheckoutPoints), once per
-- order: the spend's transaction, the order's amount before the discount,
-- and what refunds of the order have given back so far.
CREATE TABLE checkout_spends (
    program_id       TEXT    NOT NULL,
    order_id         TEXT    NOT NULL,
    customer_id      TEXT    NOT NULL,
    transaction_id   TEXT    NOT NULL,
    amount_minor     BIGINT  NOT NULL,
    currency         TEXT    NOT NULL,
    points           BIGINT  NOT NULL,
    discount_minor   BIGINT  NOT NULL,
    refunded_minor   BIGINT  NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    restored_points  BIGINT  NOT NULL DEFAULT 0 CHECK (restored_points >= 0),
    created_at_us    BIGINT  NOT NULL,
    PRIMARY KEY (program_id, order_id),
    CHECK (refunded_minor <= amount_minor),
    CHECK (restored_points <= points)
);
