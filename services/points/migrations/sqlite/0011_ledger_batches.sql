-- PostgreSQL only: numbering by batch (see postgres/0011). SQLite has one
-- writer at a time, so its entries keep being numbered as they are written.
SELECT 1;
