-- Gifts (GrantReward) and campaign codes (IssueCodeBatch): vouchers given
-- without points, with who gave them and why; a campaign code belongs to a
-- batch and to no customer until one uses it.
ALTER TABLE redemptions ADD COLUMN granted_by TEXT NOT NULL DEFAULT '';
ALTER TABLE redemptions ADD COLUMN grant_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE redemptions ADD COLUMN batch_id TEXT NOT NULL DEFAULT '';

-- Each batch as it was asked for: the audit of campaign codes.
CREATE TABLE code_batches (
    batch_id        TEXT    PRIMARY KEY,
    program_id      TEXT    NOT NULL,
    reward_id       TEXT    NOT NULL,
    code_count      INTEGER  NOT NULL,
    prefix          TEXT    NOT NULL,
    valid_until_us  INTEGER  NOT NULL,
    reason          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    created_at_us   INTEGER  NOT NULL
);
-- A batch's codes, for the answer to a replayed IssueCodeBatch.
CREATE INDEX redemptions_by_batch ON redemptions (batch_id) WHERE batch_id <> '';
