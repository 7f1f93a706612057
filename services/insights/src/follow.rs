//! The insights service as a consumer of the points ledger: an order earn
//! is a purchase, an order reversal a refund of the amount it names; every
//! other entry is not about orders. Only those two kinds are asked for.

use loyalty_common::clock::from_timestamp;
use loyalty_common::db::Database;
use loyalty_common::follow::{BoxError, LedgerConsumer};
use loyalty_proto::points::v1 as points;

use crate::service::Insights;
use crate::store::OrderEvent;

impl LedgerConsumer for Insights {
    const NAME: &'static str = "insights";
    const LOCK_KEY: i64 = 0x0069_6e73_6967_0001;
    const KINDS: &'static [points::EntryKind] = &[points::EntryKind::Earn, points::EntryKind::Reverse];

    fn database(&self) -> &Database {
        self.store().database()
    }

    async fn cursor(&self) -> Result<i64, BoxError> {
        Ok(self.store().cursor().await?)
    }

    async fn apply(&self, entries: Vec<points::LedgerEntry>, last_sequence: i64) -> Result<(), BoxError> {
        let events: Vec<(i64, OrderEvent)> = entries.into_iter().filter_map(order_event).collect();
        self.store().apply_batch(&events, last_sequence).await?;
        Ok(())
    }
}

fn order_event(entry: points::LedgerEntry) -> Option<(i64, OrderEvent)> {
    if entry.order_id.is_empty() {
        return None;
    }
    let event = match points::EntryKind::try_from(entry.kind).ok()? {
        points::EntryKind::Earn => OrderEvent::Purchase {
            at: entry.created_at.as_ref().and_then(from_timestamp).unwrap_or_default(),
            program_id: entry.program_id,
            customer_id: entry.customer_id,
            order_id: entry.order_id,
            amount_minor: entry.order_amount_minor,
        },
        points::EntryKind::Reverse => OrderEvent::Refund {
            program_id: entry.program_id,
            order_id: entry.order_id,
            amount_minor: entry.order_amount_minor,
        },
        _ => return None,
    };
    Some((entry.sequence, event))
}
