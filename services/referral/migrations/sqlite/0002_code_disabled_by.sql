-- Who disabled a code (an API key id) and when: disabling is an admin action.
ALTER TABLE referral_codes ADD COLUMN disabled_by TEXT NOT NULL DEFAULT '';
ALTER TABLE referral_codes ADD COLUMN disabled_at_us BIGINT;
