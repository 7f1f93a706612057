-- Vouchers among the reward tasks (kind `voucher`: GrantReward of this
-- reward; `unvoucher`: its CancelRedemption), sent to the rewards service.
ALTER TABLE reward_tasks ADD COLUMN reward_id TEXT NOT NULL DEFAULT '';
