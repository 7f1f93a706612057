-- Churn, reactivation and retention by first-order cohort, kept as orders
-- arrive. A customer churns `churned_days` (the program's setting) after
-- the last day they ordered, counted on that day, unless they order before
-- it; one who orders on or after it is reactivated that day. Churn days
-- after today are projections until they come.
ALTER TABLE kpi_days ADD COLUMN churned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE kpi_days ADD COLUMN reactivated BIGINT NOT NULL DEFAULT 0;

-- Who ordered in which calendar month (UTC), and for each first-order
-- month (cohort) how many of its customers ordered in each month since.
CREATE TABLE buyer_months (
    program_id   TEXT    NOT NULL,
    month_us     BIGINT  NOT NULL,
    customer_id  TEXT    NOT NULL,
    PRIMARY KEY (program_id, month_us, customer_id)
);

CREATE TABLE cohort_months (
    program_id  TEXT    NOT NULL,
    cohort_us   BIGINT  NOT NULL,
    month_us    BIGINT  NOT NULL,
    customers   BIGINT  NOT NULL,
    PRIMARY KEY (program_id, cohort_us, month_us)
);

-- The first instant of each calendar month the rebuilds below need, filled
-- by the service (SQL has no portable month arithmetic).
CREATE TABLE calendar_months (
    month_us  BIGINT  PRIMARY KEY
);

-- Aggregates to recompute from buyer_days, per program: `churn` after a
-- change of churned_days, `cohorts` once for what was recorded before this
-- migration. The review job does it, in the ledger consumer's turn.
CREATE TABLE kpi_rebuilds (
    program_id  TEXT  NOT NULL,
    part        TEXT  NOT NULL,
    PRIMARY KEY (program_id, part)
);
INSERT INTO kpi_rebuilds (program_id, part) SELECT DISTINCT program_id, 'churn' FROM buyer_days;
INSERT INTO kpi_rebuilds (program_id, part) SELECT DISTINCT program_id, 'cohorts' FROM buyer_days;
-- Customers' rows are read by program and customer for their days.
CREATE INDEX buyer_days_by_customer ON buyer_days (program_id, customer_id, day_us);
