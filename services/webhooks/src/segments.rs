//! `segment.changed`: every change of a customer's lifecycle segment, as the
//! insights service numbers them (`ListSegmentChanges`, in commit order, so
//! paging by sequence misses none). Programs are followed while they have
//! an enabled subscription that wants the event, each from a cursor of its
//! own, starting with the changes made after their first such subscription.
//! An event is recorded under its sequence, so replicas that poll at once
//! record it once.

use std::sync::Arc;
use std::time::Duration;

use loyalty_common::clock::{Micros, from_timestamp};
use loyalty_common::peer::PeerChannel;
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_proto::insights::v1 as insights;
use loyalty_proto::insights::v1::insights_service_client::InsightsServiceClient;

use crate::jobs::{self, JobError};
use crate::service::Webhooks;
use crate::store::NewEvent;

pub const SEGMENT_CHANGED: &str = "segment.changed";
/// Changes asked for per call, and pages per program and round at most.
const PAGE: i32 = 200;
const PAGES_PER_ROUND: usize = 25;

/// Follows the segment changes every `interval` until shutdown.
pub async fn run(
    webhooks: Arc<Webhooks>,
    insights: InsightsServiceClient<PeerChannel>,
    interval: Duration,
    shutdown: ShutdownSignal,
) {
    let round = || follow(&webhooks, insights.clone());
    jobs::every(&webhooks, "segment changes", interval, shutdown, round).await;
}

/// One round over every program that wants the event; returns the deliveries made.
pub async fn follow(webhooks: &Webhooks, mut insights: InsightsServiceClient<PeerChannel>) -> Result<usize, JobError> {
    let store = webhooks.store();
    let mut made = 0;
    for (program, since) in store.programs_wanting(SEGMENT_CHANGED).await? {
        let consumer = format!("insights:{program}");
        let mut after = store.stream_cursor(&consumer).await?;
        for _ in 0..PAGES_PER_ROUND {
            let request = insights::ListSegmentChangesRequest {
                program_id: program.clone(),
                after_sequence: after,
                page_size: PAGE,
            };
            let page = insights.list_segment_changes(request).await?.into_inner();
            let events: Vec<NewEvent> = page.changes.iter().filter_map(|c| event(&program, c, since)).collect();
            made += store.record_followed(&consumer, &events, page.next_after_sequence).await?;
            let full = page.changes.len() as i32 == PAGE;
            after = page.next_after_sequence;
            if !full {
                break;
            }
        }
    }
    Ok(made)
}

/// The event of a change, unless it came before the program's first subscription to it.
fn event(program: &str, change: &insights::SegmentChange, since: Micros) -> Option<NewEvent> {
    let at = change.changed_at.as_ref().and_then(from_timestamp).unwrap_or_default();
    if at < since {
        return None;
    }
    let mut data = serde_json::json!({
        "customer_id": change.customer_id,
        "to_segment": segment_name(change.to_segment)?,
        "changed_at": loyalty_common::clock::to_timestamp(at).to_string(),
        "sequence": change.sequence,
    });
    if let Some(from) = segment_name(change.from_segment) {
        data["from_segment"] = from.into();
    }
    Some(NewEvent {
        program_id: program.to_owned(),
        event_type: SEGMENT_CHANGED,
        customer_id: change.customer_id.clone(),
        source: "insights",
        source_position: change.sequence.to_string(),
        occurred_at: at,
        data,
    })
}

/// `at_risk` for SEGMENT_AT_RISK; `None` for unspecified or unknown.
fn segment_name(number: i32) -> Option<String> {
    match insights::Segment::try_from(number).ok()? {
        insights::Segment::Unspecified => None,
        segment => Some(segment.as_str_name().trim_start_matches("SEGMENT_").to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_named_as_the_gateway_names_them() {
        assert_eq!(segment_name(insights::Segment::AtRisk as i32).as_deref(), Some("at_risk"));
        assert_eq!(segment_name(insights::Segment::New as i32).as_deref(), Some("new"));
        assert_eq!(segment_name(0), None);
        assert_eq!(segment_name(99), None);
    }
}
