//! The tiers service as a consumer of the points ledger: earns qualify,
//! reversals stop qualifying; spends, expiry, adjustments and activations
//! leave qualifying points alone.

use loyalty_common::clock::from_timestamp;
use loyalty_common::db::Database;
use loyalty_common::follow::{BoxError, LedgerConsumer};
use loyalty_proto::points::v1 as points;

use crate::service::Tiers;
use crate::store::QualifyingEntry;

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
    let (points, reverses) = match kind {
        points::EntryKind::Earn => (entry.amount, None),
        points::EntryKind::Reverse => (-entry.amount, Some(entry.related_transaction_id)),
        _ => return None,
    };
    Some(QualifyingEntry {
        sequence: entry.sequence,
        transaction_id: entry.transaction_id,
        program_id: entry.program_id,
        customer_id: entry.customer_id,
        points,
        occurred_at: entry.created_at.as_ref().and_then(from_timestamp).unwrap_or_default(),
        reverses,
    })
}
