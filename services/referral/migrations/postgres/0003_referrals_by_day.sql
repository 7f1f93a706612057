-- The program's referrals by when the friend signed up: GetReferralFunnel
-- counts a range of them.
CREATE INDEX referrals_by_created ON referrals (program_id, created_at_us);
