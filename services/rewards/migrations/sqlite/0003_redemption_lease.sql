-- Who is working on a PENDING redemption, and until when: another replica
-- settles it only once the lease has run out. Rows from before this
-- migration have no lease and are settled at the next recovery pass.
ALTER TABLE redemptions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE redemptions ADD COLUMN lease_until_us BIGINT NOT NULL DEFAULT 0;
CREATE INDEX redemptions_leased ON redemptions (lease_until_us) WHERE status = 'pending';
