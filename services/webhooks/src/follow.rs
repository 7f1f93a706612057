//! The webhooks service as a consumer of the points ledger: every entry is
//! an event (`points.earned`, `points.spent`, …), recorded with its
//! deliveries in the transaction that moves the cursor, and only then
//! attempted. The ledger publishes only what committed, so nothing reaches
//! a shop that did not happen.

use loyalty_common::clock::{from_timestamp, to_timestamp};
use loyalty_common::db::Database;
use loyalty_common::follow::{BoxError, LedgerConsumer};
use loyalty_proto::points::v1 as points;

use crate::service::Webhooks;
use crate::store::{Expiring, NewEvent};

impl LedgerConsumer for Webhooks {
    const NAME: &'static str = "webhooks";
    const LOCK_KEY: i64 = 0x0077_6562_686f_0001;

    fn database(&self) -> &Database {
        self.store().database()
    }

    async fn cursor(&self) -> Result<i64, BoxError> {
        Ok(self.store().cursor().await?)
    }

    async fn apply(&self, entries: Vec<points::LedgerEntry>, last_sequence: i64) -> Result<(), BoxError> {
        let events: Vec<(i64, NewEvent)> = entries.iter().filter_map(|e| Some((e.sequence, event(e)?))).collect();
        let expiring: Vec<(i64, Expiring)> = entries.iter().filter_map(|e| Some((e.sequence, expiring(e)?))).collect();
        let made = self.store().record_batch(&events, &expiring, last_sequence).await?;
        if made > 0 {
            self.wake();
        }
        Ok(())
    }
}

/// The points an entry makes that will expire: an earn's, or a positive
/// adjustment's, with an expiry.
pub fn expiring(entry: &points::LedgerEntry) -> Option<Expiring> {
    use points::EntryKind::{Adjust, Earn};
    let kind = points::EntryKind::try_from(entry.kind).ok()?;
    // An adjustment's `amount` is its size; `points` says which way it went.
    let adds = matches!(kind, Earn) || (matches!(kind, Adjust) && entry.points + entry.pending_points > 0);
    let expires_at = entry.expires_at.as_ref().and_then(from_timestamp).filter(|_| adds)?;
    Some(Expiring { program_id: entry.program_id.clone(), customer_id: entry.customer_id.clone(), expires_at })
}

/// The event a ledger entry is, if it is one.
pub fn event(entry: &points::LedgerEntry) -> Option<NewEvent> {
    use points::EntryKind::{Activate, Adjust, Earn, Expire, Restore, Reverse, Spend};
    let event_type = match points::EntryKind::try_from(entry.kind).ok()? {
        Earn => "points.earned",
        Activate => "points.activated",
        Spend => "points.spent",
        Restore => "points.restored",
        Reverse => "points.reversed",
        Adjust => "points.adjusted",
        Expire => "points.expired",
        _ => return None,
    };
    let at = entry.created_at.as_ref().and_then(from_timestamp).unwrap_or_default();
    let instant = |t: &Option<prost_types::Timestamp>| t.as_ref().map(ToString::to_string);
    let mut data = serde_json::json!({
        "customer_id": entry.customer_id,
        "transaction_id": entry.transaction_id,
        "amount": entry.amount,
        "points": entry.points,
        "pending_points": entry.pending_points,
        "reason": entry.reason,
        "created_at": to_timestamp(at).to_string(),
    });
    let object = data.as_object_mut().expect("an object");
    let mut optional = |name: &str, value: serde_json::Value| {
        if !(value.is_null() || value == "" || value == 0) {
            object.insert(name.to_owned(), value);
        }
    };
    optional("related_transaction_id", entry.related_transaction_id.clone().into());
    optional("order_id", entry.order_id.clone().into());
    optional("order_amount_minor", entry.order_amount_minor.into());
    optional("base_points", entry.base_points.into());
    optional("pending_until", instant(&entry.pending_until).into());
    optional("expires_at", instant(&entry.expires_at).into());
    Some(NewEvent {
        program_id: entry.program_id.clone(),
        event_type,
        customer_id: entry.customer_id.clone(),
        source: "points",
        source_position: entry.sequence.to_string(),
        occurred_at: at,
        data,
    })
}
