//! The events of the tiers, referral and rewards services (`tier.*`,
//! `referral.*`, `reward.redeemed`, `voucher.*`, `redemption.cancelled`).
//! Each of them writes its events into an outbox in the transaction that
//! makes the change and numbers them in commit order; this follows each
//! one's `ListEvents` from a cursor of its own, recording a page's events
//! (with their deliveries) and the cursor in one transaction. An event is
//! recorded under its source and sequence, so replicas that poll at once
//! record it once, and nothing that did not commit is ever seen.

use std::sync::Arc;
use std::time::Duration;

use loyalty_common::clock::from_timestamp;
use loyalty_common::peer::PeerChannel;
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_proto::events::v1::Event;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_proto::{referral, rewards, tiers};

use crate::jobs::{self, JobError};
use crate::service::Webhooks;
use crate::store::NewEvent;

/// Events asked for per call, and pages per round at most.
const PAGE: i32 = 500;
const PAGES_PER_ROUND: usize = 20;

/// A service whose outbox is followed.
#[derive(Clone)]
pub enum Source {
    Tiers(TiersServiceClient<PeerChannel>),
    Referral(ReferralServiceClient<PeerChannel>),
    Rewards(RewardsServiceClient<PeerChannel>),
}

impl Source {
    /// The source's name: on its events and its cursor.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tiers(_) => "tiers",
            Self::Referral(_) => "referral",
            Self::Rewards(_) => "rewards",
        }
    }

    /// The events after `after`, and where the next page starts.
    async fn page(&mut self, after: i64) -> Result<(Vec<Event>, i64), tonic::Status> {
        let (events, next) = match self {
            Self::Tiers(client) => {
                let request = tiers::v1::ListEventsRequest { after_sequence: after, page_size: PAGE };
                let page = client.list_events(request).await?.into_inner();
                (page.events, page.next_after_sequence)
            }
            Self::Referral(client) => {
                let request = referral::v1::ListEventsRequest { after_sequence: after, page_size: PAGE };
                let page = client.list_events(request).await?.into_inner();
                (page.events, page.next_after_sequence)
            }
            Self::Rewards(client) => {
                let request = rewards::v1::ListEventsRequest { after_sequence: after, page_size: PAGE };
                let page = client.list_events(request).await?.into_inner();
                (page.events, page.next_after_sequence)
            }
        };
        Ok((events, next))
    }
}

/// Follows `source` every `interval` until shutdown.
pub async fn run(webhooks: Arc<Webhooks>, source: Source, interval: Duration, shutdown: ShutdownSignal) {
    let round = || follow(&webhooks, source.clone());
    jobs::every(&webhooks, source.name(), interval, shutdown, round).await;
}

/// One round: the pages `source` has after the cursor; returns the deliveries made.
pub async fn follow(webhooks: &Webhooks, mut source: Source) -> Result<usize, JobError> {
    let store = webhooks.store();
    let consumer = format!("outbox:{}", source.name());
    let mut after = store.stream_cursor(&consumer).await?;
    let mut made = 0;
    for _ in 0..PAGES_PER_ROUND {
        let (page, next) = source.page(after).await?;
        let events: Vec<NewEvent> = page.iter().filter_map(|e| event(source.name(), e)).collect();
        made += store.record_followed(&consumer, &events, next).await?;
        if page.len() < PAGE as usize || next <= after {
            break;
        }
        after = next;
    }
    Ok(made)
}

/// The event to record, if it is of a type subscriptions can ask for.
fn event(source: &'static str, event: &Event) -> Option<NewEvent> {
    let known = loyalty_proto::webhooks::EVENT_TYPES.iter().find(|(name, _)| *name == event.r#type);
    let Some(&(event_type, _)) = known else {
        tracing::warn!(source, event_type = %event.r#type, "an event of an unknown type is not delivered");
        return None;
    };
    let data = match serde_json::from_str::<serde_json::Value>(&event.data_json) {
        Ok(data @ serde_json::Value::Object(_)) => data,
        _ => {
            tracing::warn!(
                source,
                sequence = event.sequence,
                "an event whose data is not a JSON object is not delivered"
            );
            return None;
        }
    };
    Some(NewEvent {
        program_id: event.program_id.clone(),
        event_type,
        customer_id: event.customer_id.clone(),
        source,
        source_position: event.sequence.to_string(),
        occurred_at: event.occurred_at.as_ref().and_then(from_timestamp).unwrap_or_default(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox_event(event_type: &str, data_json: &str) -> Event {
        Event {
            sequence: 7,
            program_id: "shop".into(),
            customer_id: "anna".into(),
            r#type: event_type.into(),
            occurred_at: Some(loyalty_common::clock::to_timestamp(1_000_000)),
            data_json: data_json.into(),
        }
    }

    #[test]
    fn known_events_are_recorded_under_their_source_and_sequence() {
        let recorded = event("tiers", &outbox_event("tier.upgraded", r#"{"customer_id":"anna"}"#)).unwrap();
        assert_eq!((recorded.source, recorded.source_position.as_str()), ("tiers", "7"));
        assert_eq!((recorded.event_type, recorded.occurred_at), ("tier.upgraded", 1_000_000));
        assert_eq!(recorded.data["customer_id"], "anna");
    }

    #[test]
    fn unknown_types_and_bad_data_are_not_delivered() {
        assert!(event("tiers", &outbox_event("tier.renamed", "{}")).is_none());
        assert!(event("rewards", &outbox_event("reward.redeemed", "[1]")).is_none());
        assert!(event("rewards", &outbox_event("reward.redeemed", "not json")).is_none());
    }
}
