-- Buyers: who ordered on which day (a period's active members count these),
-- and each day's first-time and repeat buyers (a customer's first and second
-- order), for the repeat purchase rate.
ALTER TABLE kpi_days ADD COLUMN first_buyers BIGINT NOT NULL DEFAULT 0;
ALTER TABLE kpi_days ADD COLUMN repeat_buyers BIGINT NOT NULL DEFAULT 0;

CREATE TABLE buyer_days (
    program_id   TEXT    NOT NULL,
    day_us       BIGINT  NOT NULL,
    customer_id  TEXT    NOT NULL,
    PRIMARY KEY (program_id, day_us, customer_id)
);

-- What the orders recorded so far say.
INSERT INTO buyer_days (program_id, day_us, customer_id)
SELECT DISTINCT program_id, occurred_at_us - (occurred_at_us % 86400000000), customer_id FROM orders;

INSERT INTO kpi_days (program_id, day_us, first_buyers, repeat_buyers)
SELECT program_id, day_us, SUM(CASE WHEN n = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN n = 2 THEN 1 ELSE 0 END)
FROM (
    SELECT program_id, occurred_at_us - (occurred_at_us % 86400000000) AS day_us,
           ROW_NUMBER() OVER (PARTITION BY program_id, customer_id ORDER BY occurred_at_us, order_id) AS n
    FROM orders
) AS numbered
WHERE n <= 2
GROUP BY program_id, day_us
ON CONFLICT (program_id, day_us) DO UPDATE SET first_buyers = excluded.first_buyers, repeat_buyers = excluded.repeat_buyers;
