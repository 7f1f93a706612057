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
        let (events, last) = recordable(source.name(), &page, next);
        if last > after {
            made += store.record_followed(&consumer, &events, last).await?;
        }
        if page.len() < PAGE as usize || last < next || next <= after {
            break;
        }
        after = next;
    }
    Ok(made)
}

/// The events of a page to record, and where the cursor may go: to `next`,
/// or to just before the first event of a type this build does not know.
fn recordable(source: &'static str, page: &[Event], next: i64) -> (Vec<NewEvent>, i64) {
    let mut events = Vec::with_capacity(page.len());
    for outboxed in page {
        match event(source, outboxed) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {}
            Err(Unknown) => {
                tracing::warn!(source, event_type = %outboxed.r#type, sequence = outboxed.sequence,
                    "an event of a type this build does not know waits until it does");
                return (events, outboxed.sequence - 1);
            }
        }
    }
    (events, next)
}

/// An event type this build does not know.
#[derive(Debug, PartialEq, Eq)]
struct Unknown;

/// The event to record; `None` for one whose data is not a JSON object (a
/// bug of its source, logged and passed over).
fn event(source: &'static str, event: &Event) -> Result<Option<NewEvent>, Unknown> {
    let known = loyalty_proto::webhooks::EVENT_TYPES.iter().find(|(name, _)| *name == event.r#type);
    let &(event_type, _) = known.ok_or(Unknown)?;
    let data = match serde_json::from_str::<serde_json::Value>(&event.data_json) {
        Ok(data @ serde_json::Value::Object(_)) => data,
        _ => {
            let sequence = event.sequence;
            tracing::error!(source, sequence, "an event whose data is not a JSON object is passed over");
            return Ok(None);
        }
    };
    Ok(Some(NewEvent {
        program_id: event.program_id.clone(),
        event_type,
        customer_id: event.customer_id.clone(),
        source,
        source_position: event.sequence.to_string(),
        occurred_at: event.occurred_at.as_ref().and_then(from_timestamp).unwrap_or_default(),
        data,
    }))
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
        let recorded = event("tiers", &outbox_event("tier.upgraded", r#"{"customer_id":"anna"}"#)).unwrap().unwrap();
        assert_eq!((recorded.source, recorded.source_position.as_str()), ("tiers", "7"));
        assert_eq!((recorded.event_type, recorded.occurred_at), ("tier.upgraded", 1_000_000));
        assert_eq!(recorded.data["customer_id"], "anna");
    }

    #[test]
    fn bad_data_is_passed_over_and_an_unknown_type_holds_the_cursor_before_it() {
        assert_eq!(event("rewards", &outbox_event("reward.redeemed", "[1]")), Ok(None));
        assert_eq!(event("rewards", &outbox_event("reward.redeemed", "not json")), Ok(None));
        let at = |sequence: i64, event_type: &str| Event { sequence, ..outbox_event(event_type, "{}") };
        let page = [at(3, "tier.upgraded"), at(4, "tier.renamed"), at(5, "tier.ended")];
        let (events, last) = recordable("tiers", &page, 5);
        assert_eq!((events.len(), last), (1, 3), "held before the unknown one");
        let (events, last) = recordable("tiers", &page[..1], 9);
        assert_eq!((events.len(), last), (1, 9), "a page of known events moves to its end");
    }
}
