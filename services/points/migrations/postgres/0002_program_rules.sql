-- Earning rules: program settings, campaigns, their audit log, and what
-- orders and activities earned (for refunds and caps).

-- Settings are validated by the service and stored as one JSON document.
CREATE TABLE program_settings (
    program_id     TEXT    PRIMARY KEY,
    settings       TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    updated_at_us  BIGINT  NOT NULL,
    updated_by     TEXT    NOT NULL
);

CREATE TABLE campaigns (
    campaign_id    TEXT    PRIMARY KEY,
    program_id     TEXT    NOT NULL,
    body           TEXT    NOT NULL,
    starts_at_us   BIGINT  NOT NULL,
    ends_at_us     BIGINT  NOT NULL,
    updated_at_us  BIGINT  NOT NULL
);
CREATE INDEX campaigns_by_end ON campaigns (program_id, ends_at_us);

CREATE TABLE audit_entries (
    audit_id       BIGSERIAL PRIMARY KEY,
    program_id     TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    changed_at_us  BIGINT  NOT NULL,
    entity         TEXT    NOT NULL,
    entity_id      TEXT    NOT NULL,
    old_value      TEXT    NOT NULL,
    new_value      TEXT    NOT NULL
);
CREATE INDEX audit_entries_by_program ON audit_entries (program_id, audit_id DESC);

CREATE TABLE orders (
    program_id       TEXT    NOT NULL,
    order_id         TEXT    NOT NULL,
    customer_id      TEXT    NOT NULL,
    amount_minor     BIGINT  NOT NULL,
    currency         TEXT    NOT NULL,
    points           BIGINT  NOT NULL,
    -- The earn's transaction id; empty when the order earned nothing.
    transaction_id   TEXT    NOT NULL,
    refunded_minor   BIGINT  NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    reversed_points  BIGINT  NOT NULL DEFAULT 0,
    created_at_us    BIGINT  NOT NULL,
    PRIMARY KEY (program_id, order_id),
    CHECK (refunded_minor <= amount_minor)
);

CREATE TABLE activity_awards (
    program_id      TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    activity_type   TEXT    NOT NULL,
    activity_ref    TEXT    NOT NULL,
    transaction_id  TEXT    NOT NULL,
    awarded_at_us   BIGINT  NOT NULL,
    PRIMARY KEY (program_id, transaction_id)
);
CREATE INDEX activity_awards_by_customer ON activity_awards (program_id, customer_id, activity_type, awarded_at_us);
