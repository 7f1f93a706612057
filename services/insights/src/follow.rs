//! The insights service as a consumer of the points ledger: every entry
//! counts in its day (members, points issued, redeemed, expired, reversed,
//! the balance change); an order earn is also a purchase and an order
//! reversal a refund of the amount it names.

use loyalty_common::clock::from_timestamp;
use loyalty_common::db::Database;
use loyalty_common::follow::{BoxError, LedgerConsumer};
use loyalty_proto::points::v1 as points;

use crate::domain::DayCounts;
use crate::service::Insights;
use crate::store::{LedgerFact, OrderEvent};

impl LedgerConsumer for Insights {
    const NAME: &'static str = "insights";
    const LOCK_KEY: i64 = 0x0069_6e73_6967_0001;

    fn database(&self) -> &Database {
        self.store().database()
    }

    async fn cursor(&self) -> Result<i64, BoxError> {
        Ok(self.store().cursor().await?)
    }

    async fn apply(&self, entries: Vec<points::LedgerEntry>, last_sequence: i64) -> Result<(), BoxError> {
        let facts: Vec<(i64, LedgerFact)> = entries.into_iter().map(fact).collect();
        self.store().apply_batch(&facts, last_sequence).await?;
        Ok(())
    }
}

fn fact(entry: points::LedgerEntry) -> (i64, LedgerFact) {
    use points::EntryKind::{Earn, Expire, Restore, Reverse, Spend};
    let kind = points::EntryKind::try_from(entry.kind).ok();
    let mut counts = DayCounts { points_change: entry.points + entry.pending_points, ..DayCounts::default() };
    match kind {
        Some(Earn) => counts.points_issued = entry.amount,
        Some(Spend) => counts.points_redeemed = entry.amount,
        // A spend given back is no longer redeemed.
        Some(Restore) => counts.points_redeemed = -entry.amount,
        Some(Expire) => counts.points_expired = entry.amount,
        Some(Reverse) => counts.points_reversed = entry.amount,
        _ => {}
    }
    let order = match kind {
        _ if entry.order_id.is_empty() => None,
        Some(Earn) => Some(OrderEvent::Purchase { order_id: entry.order_id, amount_minor: entry.order_amount_minor }),
        Some(Reverse) => Some(OrderEvent::Refund { order_id: entry.order_id, amount_minor: entry.order_amount_minor }),
        _ => None,
    };
    let at = entry.created_at.as_ref().and_then(from_timestamp).unwrap_or_default();
    (entry.sequence, LedgerFact { program_id: entry.program_id, customer_id: entry.customer_id, at, counts, order })
}
