//! The win-back rule: a program that names a hidden tier in its insight
//! settings (`win_back_tier_id`) has its customers hold it while they are
//! at risk. The rule follows this service's own segment changes (a cursor
//! of its own) and asks the tiers service: a customer who becomes at risk
//! gets the tier, unless the shop assigned them one by hand; one who leaves
//! at risk loses it, if it is still the win-back tier. Each call carries an
//! idempotency key made of the change's sequence, and every action looks
//! at the membership first, so a change handled twice (after a crash, or a
//! tiers service that did not answer) does nothing more.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};

use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;

use crate::domain::{SegmentChange, WinBack};
use crate::error::Error;
use crate::store::InsightsStore;

/// Names the rule's row in `consumer_cursors`.
const FOLLOWER: &str = "win-back";
/// Who the tiers service's history names for the rule's assignments.
pub const ACTOR: &str = "rule:win-back";
/// Changes read at a time.
const BATCH: i64 = 200;

pub struct WinBackRule {
    client: TiersServiceClient<PeerChannel>,
}

impl WinBackRule {
    /// Connects lazily to the tiers service at `addr`; `None` without one.
    pub fn connect(
        addr: Option<&str>,
        deadline: Duration,
        peers: &Peers,
    ) -> Result<Option<Self>, tonic::transport::Error> {
        Ok(peers.optional(addr, deadline)?.map(|channel| Self { client: TiersServiceClient::new(channel) }))
    }

    /// Applies the rule to every change not handled yet, until none is left
    /// or `stop` says so; returns how many were handled. Stops at the first
    /// change the tiers service could not take (it is tried again next time).
    pub async fn run(&self, store: &InsightsStore, stop: impl Fn() -> bool) -> Result<usize, Error> {
        let mut handled = 0;
        let mut tiers: HashMap<String, String> = HashMap::new();
        loop {
            let after = store.follower_cursor(FOLLOWER).await?;
            let changes = store.segment_changes(None, after, BATCH).await?;
            if changes.is_empty() {
                return Ok(handled);
            }
            for change in &changes {
                if !tiers.contains_key(&change.program_id) {
                    let tier = store.settings(&change.program_id).await?.win_back_tier_id;
                    tiers.insert(change.program_id.clone(), tier);
                }
                let tier = &tiers[&change.program_id];
                if let Some(action) = change.win_back().filter(|_| !tier.is_empty()) {
                    self.apply(change, tier, action).await?;
                }
                store.advance_follower(FOLLOWER, change.sequence).await?;
                handled += 1;
            }
            if stop() {
                return Ok(handled);
            }
        }
    }

    async fn apply(&self, change: &SegmentChange, tier: &str, action: WinBack) -> Result<(), Error> {
        let (program_id, customer_id) = (change.program_id.clone(), change.customer_id.clone());
        let mut client = self.client.clone();
        let request = tiers::GetMembershipRequest { program_id: program_id.clone(), customer_id: customer_id.clone() };
        let membership = match client.get_membership(request).await {
            Ok(reply) => reply.into_inner().membership.unwrap_or_default(),
            Err(status) => return refused(change, status),
        };
        let outcome = match action {
            // A tier the shop assigned by hand stands.
            WinBack::Assign if !membership.assigned => client
                .assign_tier(tiers::AssignTierRequest {
                    program_id,
                    customer_id,
                    tier_id: tier.to_owned(),
                    ends_at: None,
                    actor: ACTOR.to_owned(),
                    idempotency_key: format!("win-back-{}", change.sequence),
                })
                .await
                .map(drop),
            // Only the win-back tier ends, not one the shop assigned since.
            WinBack::End if membership.assigned && membership.tier_id == tier => client
                .remove_assignment(tiers::RemoveAssignmentRequest {
                    program_id,
                    customer_id,
                    actor: ACTOR.to_owned(),
                    idempotency_key: format!("win-back-end-{}", change.sequence),
                })
                .await
                .map(drop),
            WinBack::Assign | WinBack::End => Ok(()),
        };
        outcome.or_else(|status| refused(change, status))
    }
}

/// A call the tiers service did not take: worth another try later when it
/// may succeed then (the service is down or busy), else logged and left.
fn refused(change: &SegmentChange, status: Status) -> Result<(), Error> {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            Err(Error::TiersUnavailable(status))
        }
        _ => {
            tracing::warn!(
                program_id = %change.program_id,
                sequence = change.sequence,
                code = ?status.code(),
                message = status.message(),
                "the tiers service refused the win-back tier; the change is left"
            );
            Ok(())
        }
    }
}
