-- Each day a customer ordered with the last day they had ordered before it
-- (-9223372036854775808 for their first), counted: the customers active in
-- any range of days [a, b] are the rows with a <= day_us <= b and
-- previous_us < a, so a period's active members sum rows, never customers.
CREATE TABLE buyer_gaps (
    program_id   TEXT    NOT NULL,
    day_us       BIGINT  NOT NULL,
    previous_us  BIGINT  NOT NULL,
    customers    BIGINT  NOT NULL,
    PRIMARY KEY (program_id, day_us, previous_us)
);
-- What was recorded before, recomputed from buyer_days by the review job.
INSERT INTO kpi_rebuilds (program_id, part) SELECT DISTINCT program_id, 'gaps' FROM buyer_days;
