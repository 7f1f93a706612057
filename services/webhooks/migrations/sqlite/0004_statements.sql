-- The monthly statement (`points.statement`): how far each program's
-- statement for a month (`YYYY-MM`) has gone through its accounts, in
-- customer id order, so a restarted job resumes where it stopped. Each
-- statement is recorded once per customer and month as an event.
CREATE TABLE statement_runs (
    program_id      TEXT    NOT NULL,
    period          TEXT    NOT NULL,
    after_customer  TEXT    NOT NULL,
    done            BIGINT  NOT NULL,
    PRIMARY KEY (program_id, period)
);
