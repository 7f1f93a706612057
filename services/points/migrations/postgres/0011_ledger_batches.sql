-- Stream positions without a second write of every entry (BENCHMARKS.md,
-- "Stream positions by the batch").
--
-- Each writing transaction takes one block of entry ids from
-- `ledger_batch_ids` (its first id is the batch's id) and records one small
-- `ledger_batches` row saying how many entries it wrote: entry ids
-- `batch_id .. batch_id + entries - 1`. After commit the publisher numbers
-- whole batches, one at a time under its advisory lock, with contiguous
-- positions: the batch's last entry is at `last_seq`, its entry `id` at
-- `last_seq - entries + 1 + (id - batch_id)`. So positions still grow in
-- the order writes become visible, and the entry rows are written once.
--
-- A block holds up to 262,144 entries (2^18): 2^45 batches fit in a BIGINT,
-- over a century at ten thousand batches a second.
-- No entry may be written or numbered while the ledger changes shape: the
-- publisher's advisory lock first (an old publisher holding it finishes its
-- round; taking the table first could deadlock with it), then the entries
-- against writers. Old replicas cannot write after this commits: stop them
-- before the new ones start (k8s/README.md, "How several replicas behave").
SELECT pg_advisory_xact_lock(30521864600974457);
LOCK TABLE ledger_entries IN EXCLUSIVE MODE;

CREATE TABLE ledger_batches (
    batch_id  BIGINT   PRIMARY KEY,
    entries   INTEGER  NOT NULL CHECK (entries > 0 AND entries <= 262144),
    last_seq  BIGINT   UNIQUE
);
CREATE INDEX ledger_batches_unpublished ON ledger_batches (batch_id) WHERE last_seq IS NULL;

-- Every existing entry becomes a batch of one, keeping its position (or
-- waiting for one, if it was not numbered yet).
INSERT INTO ledger_batches (batch_id, entries, last_seq) SELECT id, 1, seq FROM ledger_entries;

CREATE SEQUENCE ledger_batch_ids INCREMENT BY 262144 MINVALUE 1;
SELECT setval('ledger_batch_ids', (SELECT COALESCE(MAX(id), 0) + 1 FROM ledger_entries), false);

-- Ids now come from the batches' blocks only; an insert without one fails.
ALTER TABLE ledger_entries ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE ledger_entries_id_seq;
-- Positions live on the batches: the column, its unique index, the
-- unpublished index and the old counter go.
ALTER TABLE ledger_entries DROP COLUMN seq;
DROP SEQUENCE ledger_stream_seq;
