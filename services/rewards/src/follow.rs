//! Vouchers bought with points that were taken back.
//!
//! The policy: when a reversal (a refunded order, a referral clawback)
//! leaves a customer in debt, the customer's unused vouchers are cancelled,
//! newest first, until their points cover the debt; only what they cannot
//! cover stays a debt, which the next earns repay. A cancelled voucher gives
//! its spend back like any cancel (`RestoreSpend`: the points return to
//! their lots), so a customer never keeps both the voucher and points that
//! were not theirs.
//!
//! The rewards service follows the points ledger for this (the shared
//! follower: a durable cursor, one replica at a time), asking only for
//! reversals, at most once a second. For each account a
//! reversal took points from, it reads the balance, counts the points
//! already on their way back (refund tasks not yet confirmed, read first so
//! that a task confirmed in between is counted at most twice, never
//! missed), and cancels while a debt remains. Applying a batch twice after a
//! crash finds the debt already covered and cancels nothing more.

use loyalty_common::db::Database;
use loyalty_common::follow::{BoxError, LedgerConsumer};
use loyalty_proto::points::v1 as points;

use crate::error::Error;
use crate::service::Rewards;

/// The refund reason's explanation, and the actor on the ledger.
const WHY: &str = "its points were taken back";
const ACTOR: &str = "service:rewards";

impl LedgerConsumer for Rewards {
    const NAME: &'static str = "rewards";
    const LOCK_KEY: i64 = 0x0072_6577_6172_0001;
    // Reversals only, once a second: a debt may wait that long, and the
    // points service is spared a read per commit (BENCHMARKS.md).
    const KINDS: &'static [points::EntryKind] = &[points::EntryKind::Reverse];
    const INTERVAL_MS: i32 = 1_000;

    fn database(&self) -> &Database {
        self.store().database()
    }

    async fn cursor(&self) -> Result<i64, BoxError> {
        Ok(self.store().cursor().await?)
    }

    async fn apply(&self, entries: Vec<points::LedgerEntry>, last_sequence: i64) -> Result<(), BoxError> {
        let mut accounts: Vec<(String, String)> = entries
            .into_iter()
            .filter(|e| e.kind == points::EntryKind::Reverse as i32 && e.points < 0)
            .map(|e| (e.program_id, e.customer_id))
            .collect();
        accounts.sort();
        accounts.dedup();
        let mut cancelled = 0;
        for (program_id, customer_id) in &accounts {
            cancelled += self.cover_debt(program_id, customer_id).await?;
        }
        self.store().save_cursor(last_sequence).await?;
        if cancelled > 0 {
            self.send_refunds().await?;
        }
        Ok(())
    }
}

impl Rewards {
    /// Cancels the customer's unused vouchers, newest first, while the
    /// account is in debt; returns how many.
    pub async fn cover_debt(&self, program_id: &str, customer_id: &str) -> Result<usize, Error> {
        let in_flight = self.store().points_in_flight(program_id, customer_id).await?;
        let available = self.points_available(program_id, customer_id).await?;
        let mut debt = -(available + in_flight);
        let mut cancelled = 0;
        if debt <= 0 {
            return Ok(0);
        }
        for voucher in self.store().unused_vouchers(program_id, customer_id).await? {
            if debt <= 0 {
                break;
            }
            match self.store().cancel(program_id, &voucher.redemption_id, ACTOR, WHY).await {
                Ok(_) => {
                    tracing::info!(redemption = %voucher.redemption_id, points = voucher.points, "voucher cancelled to cover a debt");
                    debt -= voucher.points;
                    cancelled += 1;
                }
                // Used or expired meanwhile: it covers nothing.
                Err(Error::VoucherUsed | Error::VoucherExpired | Error::RedemptionNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(cancelled)
    }
}
