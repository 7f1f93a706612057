-- The program's numbers per UTC day, kept as the ledger's entries arrive:
-- KPIs over a range sum days, never entries.
CREATE TABLE kpi_days (
    program_id       TEXT    NOT NULL,
    day_us           BIGINT  NOT NULL,
    new_members      BIGINT  NOT NULL DEFAULT 0,
    orders           BIGINT  NOT NULL DEFAULT 0,
    revenue_minor    BIGINT  NOT NULL DEFAULT 0,
    refunded_minor   BIGINT  NOT NULL DEFAULT 0,
    points_issued    BIGINT  NOT NULL DEFAULT 0,
    points_redeemed  BIGINT  NOT NULL DEFAULT 0,
    points_expired   BIGINT  NOT NULL DEFAULT 0,
    points_reversed  BIGINT  NOT NULL DEFAULT 0,
    -- Σ (available + pending) changes: the outstanding points at a day's end sum these.
    points_change    BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day_us)
);

-- Everyone the ledger has named, from the day first seen.
CREATE TABLE members (
    program_id     TEXT    NOT NULL,
    customer_id    TEXT    NOT NULL,
    first_seen_us  BIGINT  NOT NULL,
    PRIMARY KEY (program_id, customer_id)
);
