//! The referral service as a consumer of the points ledger: order earns are
//! purchases that may qualify a referral, order reversals are refunds that
//! may claw its rewards back; the dispatcher (`service`) pays what follows.

use loyalty_common::clock::from_timestamp;
use loyalty_common::db::Database;
use loyalty_common::follow::{BoxError, LedgerConsumer};
use loyalty_proto::points::v1 as points;

use crate::service::Referrals;
use crate::store::OrderEvent;

impl LedgerConsumer for Referrals {
    const NAME: &'static str = "referral";
    const LOCK_KEY: i64 = 0x0072_6566_6572_0001;

    fn database(&self) -> &Database {
        self.store.database()
    }

    async fn cursor(&self) -> Result<i64, BoxError> {
        Ok(self.store.cursor().await?)
    }

    async fn apply(&self, entries: Vec<points::LedgerEntry>, last_sequence: i64) -> Result<(), BoxError> {
        let events: Vec<(i64, OrderEvent)> = entries.into_iter().filter_map(order_event).collect();
        if self.store.apply_batch(&events, last_sequence).await? > 0 {
            self.tasks_added.notify_one();
        }
        Ok(())
    }
}

/// Order earns are purchases and order reversals are refunds; everything
/// else on the ledger (including our own rewards) is not about orders.
fn order_event(entry: points::LedgerEntry) -> Option<(i64, OrderEvent)> {
    if entry.order_id.is_empty() {
        return None;
    }
    let at = entry.created_at.as_ref().and_then(from_timestamp).unwrap_or_default();
    let event = match points::EntryKind::try_from(entry.kind).ok()? {
        points::EntryKind::Earn => OrderEvent::Purchase {
            program_id: entry.program_id,
            customer_id: entry.customer_id,
            order_id: entry.order_id,
            amount_minor: entry.order_amount_minor,
            at,
        },
        points::EntryKind::Reverse => OrderEvent::Refund {
            program_id: entry.program_id,
            order_id: entry.order_id,
            refund_key: format!("ledger:{}", entry.transaction_id),
            amount_minor: entry.order_amount_minor,
            at,
        },
        _ => return None,
    };
    Some((entry.sequence, event))
}
