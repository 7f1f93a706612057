-- Every change of a customer's segment (their first one included, from
-- ''), numbered in commit order: writers take turns on segment_log's row
-- to draw numbers just before they commit, so a reader paging by
-- `sequence` never misses a change that commits after it read.
CREATE TABLE segment_changes (
    sequence       BIGINT  PRIMARY KEY,
    program_id     TEXT    NOT NULL,
    customer_id    TEXT    NOT NULL,
    from_segment   TEXT    NOT NULL,
    to_segment     TEXT    NOT NULL,
    changed_at_us  BIGINT  NOT NULL
);
CREATE INDEX segment_changes_by_program ON segment_changes (program_id, sequence);

CREATE TABLE segment_log (
    id             INTEGER  PRIMARY KEY,
    last_sequence  BIGINT   NOT NULL
);
INSERT INTO segment_log (id, last_sequence) VALUES (1, 0);
