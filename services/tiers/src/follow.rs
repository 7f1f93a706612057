//! The tiers service as a consumer of the points ledger: earns qualify (by
//! every measure a ladder's basis may count), reversals take back their
//! share; spends, expiry, adjustments and activations leave qualification
//! alone.

use loyalty_common::clock::from_timestamp;
use loyalty_common::db::Database;
use loyalty_common::follow::{BoxError, LedgerConsumer};
use loyalty_proto::points::v1 as points;

use crate::domain::Measures;
use crate::service::Tiers;
use crate::store::{QualifyingChange, QualifyingEntry};

impl LedgerConsumer for Tiers {
    const NAME: &'static str = "tiers";
    const LOCK_KEY: i64 = 0x0074_6965_7273_0001;

    fn database(&self) -> &Database {
        self.store().database()
    }

    async fn cursor(&self) -> Result<i64, BoxError> {
        Ok(self.store().cursor().await?)
    }

    async fn apply(&self, entries: Vec<points::LedgerEntry>, last_sequence: i64) -> Result<(), BoxError> {
        let entries: Vec<QualifyingEntry> = entries.into_iter().filter_map(qualifying).collect();
        Ok(Tiers::apply(self, &entries, last_sequence).await?)
    }
}

fn qualifying(entry: points::LedgerEntry) -> Option<QualifyingEntry> {
    let kind = points::EntryKind::try_from(entry.kind).ok()?;
    let is_order = !entry.order_id.is_empty();
    let change = match kind {
        points::EntryKind::Earn => QualifyingChange::Earn(Measures {
            points: entry.amount,
            order_points: if is_order { entry.amount } else { 0 },
            base_points: if is_order { entry.base_points } else { 0 },
            spend_minor: if is_order { entry.order_amount_minor } else { 0 },
        }),
        points::EntryKind::Reverse => QualifyingChange::Reverse {
            earn: entry.related_transaction_id,
            points: entry.amount,
            refunded_minor: is_order.then_some(entry.order_amount_minor),
        },
        _ => return None,
    };
    Some(QualifyingEntry {
        sequence: entry.sequence,
        transaction_id: entry.transaction_id,
        program_id: entry.program_id,
        customer_id: entry.customer_id,
        occurred_at: entry.created_at.as_ref().and_then(from_timestamp).unwrap_or_default(),
        change,
    })
}
