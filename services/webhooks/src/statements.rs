//! `points.statement`: once a month, for every member of a subscribed
//! program who holds points, their balance (available and pending, as the
//! points service last settled it), what expires next, and their tier and
//! the points to the next one (with `TIERS_ADDR`). The job goes through the
//! program's accounts in customer id order (`ListBalances`) and keeps how
//! far it came, so a restart resumes; each statement is recorded under its
//! customer and month, so replicas that run the job at once send it once.
//! A month's statements go out on the first days of the next month, to
//! programs subscribed before it ended.

use std::sync::Arc;
use std::time::Duration;

use loyalty_common::clock::{MICROS_PER_DAY, Micros, civil_from_days, days_from_civil};
use loyalty_common::peer::PeerChannel;
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;

use crate::jobs::{self, JobError};
use crate::service::Webhooks;
use crate::store::NewEvent;

pub const STATEMENT: &str = "points.statement";
/// Accounts per page.
const PAGE: i32 = 200;

/// The peers a statement asks.
#[derive(Clone)]
pub struct Peers {
    pub points: PointsServiceClient<PeerChannel>,
    pub tiers: Option<TiersServiceClient<PeerChannel>>,
}

/// Sends the statements due every `interval` until shutdown.
pub async fn run(webhooks: Arc<Webhooks>, peers: Peers, interval: Duration, shutdown: ShutdownSignal) {
    let stop = shutdown.clone();
    let round = || send(&webhooks, peers.clone(), || stop.is_fired());
    jobs::every(&webhooks, "monthly statements", interval, shutdown, round).await;
}

/// The month before the one `now` falls in (`YYYY-MM`), and the instant it ended (UTC).
pub fn last_month(now: Micros) -> (String, Micros) {
    let (year, month, _) = civil_from_days(now.div_euclid(MICROS_PER_DAY));
    let ended = days_from_civil(year, month, 1) * MICROS_PER_DAY;
    let (year, month) = if month == 1 { (year - 1, 12) } else { (year, month - 1) };
    (format!("{year:04}-{month:02}"), ended)
}

/// Records every statement due now; returns the deliveries made.
pub async fn send(webhooks: &Webhooks, mut peers: Peers, stop: impl Fn() -> bool) -> Result<usize, JobError> {
    let store = webhooks.store();
    let (period, ended) = last_month(store.now());
    let mut made = 0;
    for (program, since) in store.programs_wanting(STATEMENT).await? {
        if since >= ended {
            continue;
        }
        let Some(mut after) = store.statement_position(&program, &period).await? else { continue };
        loop {
            let request = points::ListBalancesRequest {
                program_id: program.clone(),
                after_customer_id: after.clone(),
                page_size: PAGE,
            };
            let page = peers.points.list_balances(request).await?.into_inner().balances;
            let mut events = Vec::with_capacity(page.len());
            for account in &page {
                let tier = match &mut peers.tiers {
                    Some(client) => {
                        let request = tiers::GetMembershipRequest {
                            program_id: program.clone(),
                            customer_id: account.customer_id.clone(),
                        };
                        client.get_membership(request).await?.into_inner().membership
                    }
                    None => None,
                };
                events.push(statement(&program, &period, account, tier.as_ref(), store.now()));
            }
            let last = page.last().map_or(after.clone(), |a| a.customer_id.clone());
            let done = page.len() < PAGE as usize;
            made += store.record_statements(&program, &period, &events, &last, done).await?;
            after = last;
            if done || stop() {
                break;
            }
        }
    }
    Ok(made)
}

fn statement(
    program: &str,
    period: &str,
    account: &points::CustomerBalance,
    tier: Option<&tiers::Membership>,
    now: Micros,
) -> NewEvent {
    let balance = account.balance.clone().unwrap_or_default();
    let mut data = serde_json::json!({
        "customer_id": account.customer_id,
        "period": period,
        "available": balance.available,
        "pending": balance.pending,
        "lifetime_earned": balance.lifetime_earned,
    });
    if let Some(at) = balance.next_expiry_at.filter(|_| balance.next_expiry_points > 0) {
        data["next_expiry"] = serde_json::json!({"points": balance.next_expiry_points, "expires_at": at.to_string()});
    }
    if let Some(m) = tier {
        let mut tier = serde_json::json!({"qualifying_points": m.qualifying_points});
        if !m.tier_id.is_empty() {
            tier["tier_id"] = m.tier_id.clone().into();
            tier["tier_name"] = m.tier_name.clone().into();
        }
        if !m.next_tier_id.is_empty() {
            tier["next_tier_id"] = m.next_tier_id.clone().into();
            tier["points_to_next_tier"] = m.points_to_next_tier.into();
        }
        data["tier"] = tier;
    }
    NewEvent {
        program_id: program.to_owned(),
        event_type: STATEMENT,
        customer_id: account.customer_id.clone(),
        source: "statements",
        source_position: format!("{program}/{period}/{}", account.customer_id),
        occurred_at: now,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_is_for_the_month_before() {
        let day = |y, m, d| days_from_civil(y, m, d) * MICROS_PER_DAY;
        assert_eq!(last_month(day(2026, 12, 5) + 3_600_000_000), ("2026-11".to_owned(), day(2026, 12, 1)));
        assert_eq!(last_month(day(2027, 1, 1)), ("2026-12".to_owned(), day(2027, 1, 1)));
    }
}
