-- How many customers ordered each day (each once, however many orders):
-- a day's active members, read with the day instead of summed from
-- buyer_gaps.
ALTER TABLE kpi_days ADD COLUMN day_buyers BIGINT NOT NULL DEFAULT 0;

INSERT INTO kpi_days (program_id, day_us, day_buyers)
SELECT program_id, day_us, COUNT(*) FROM buyer_days WHERE 1 = 1 GROUP BY program_id, day_us
ON CONFLICT (program_id, day_us) DO UPDATE SET day_buyers = excluded.day_buyers;
