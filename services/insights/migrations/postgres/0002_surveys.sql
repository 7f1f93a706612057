-- Survey answers (NPS, CSAT), and how many of each score each day: scores
-- over a range sum the days, never the answers.
CREATE TABLE survey_responses (
    program_id      TEXT     NOT NULL,
    response_id     TEXT     NOT NULL,
    customer_id     TEXT     NOT NULL,
    kind            TEXT     NOT NULL,
    score           INTEGER  NOT NULL,
    comment         TEXT     NOT NULL,
    answered_at_us  BIGINT   NOT NULL,
    PRIMARY KEY (program_id, response_id)
);
CREATE INDEX survey_responses_by_customer ON survey_responses (program_id, customer_id, answered_at_us);

CREATE TABLE survey_days (
    program_id  TEXT     NOT NULL,
    kind        TEXT     NOT NULL,
    day_us      BIGINT   NOT NULL,
    score       INTEGER  NOT NULL,
    responses   BIGINT   NOT NULL,
    PRIMARY KEY (program_id, kind, day_us, score)
);
