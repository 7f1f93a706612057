-- Who ordered in which ISO week (Monday, UTC), and how many customers each
-- week: a whole week's active members, read instead of summed.
CREATE TABLE buyer_weeks (
    program_id   TEXT    NOT NULL,
    week_us      BIGINT  NOT NULL,
    customer_id  TEXT    NOT NULL,
    PRIMARY KEY (program_id, week_us, customer_id)
);

CREATE TABLE week_buyers (
    program_id  TEXT    NOT NULL,
    week_us     BIGINT  NOT NULL,
    customers   BIGINT  NOT NULL,
    PRIMARY KEY (program_id, week_us)
);

-- What was recorded before, recomputed from buyer_days by the review job.
INSERT INTO kpi_rebuilds (program_id, part) SELECT DISTINCT program_id, 'weeks' FROM buyer_days;
