//! How the program works, for guests (scope `storefront`, no customer
//! token): the ways to earn, the visible tiers, the rewards catalog and the
//! referral offer. What the widget shows before anyone signs in.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::{Authorized, StorefrontScope};
use crate::routes::customers::absence;
use crate::routes::{AppState, json, points_failed};
use loyalty_common::clock::{Clock, SystemClock, from_timestamp};

use crate::model::{
    self, Absence, ActivityRule, Campaign, CampaignQuery, EarnRate, Ladder, Reward, RewardKind, RewardList,
    RewardQuery, Settings, Tier,
};
use crate::problem::Problem;
use crate::rpc;

/// The program as a guest sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgramOverview {
    /// ISO 4217 currency of orders.
    pub currency: String,
    /// Points per order amount.
    pub earn_rate: EarnRate,
    /// The active activity rules (`signup`, `birthday`, `review`, `social_follow`, ...).
    pub ways_to_earn: Vec<ActivityRule>,
    /// The campaigns running now (a double-points weekend, a bonus), with
    /// what they apply to (`order` or activity types; empty: everything) and
    /// for whom (`tier_ids`; empty: everyone), soonest-ending first.
    pub campaigns: Vec<Campaign>,
    pub tiers: TiersOverview,
    pub rewards: CatalogOverview,
    pub referral: ReferralOffer,
}

/// The visible tiers, lowest first. Hidden tiers (assigned by hand) are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct TiersOverview {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    pub tiers: Vec<Tier>,
}

/// The rewards on offer to everyone (not archived, not limited to tiers: a
/// tier-only reward is shown only to customers who may redeem it).
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogOverview {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    pub rewards: Vec<RewardSummary>,
}

/// A reward, as a guest needs to see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RewardSummary {
    pub reward_id: String,
    pub name: String,
    pub description: String,
    pub kind: RewardKind,
    pub point_cost: i64,
}

/// What referring a friend brings, when the program has referrals switched on.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralOffer {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    pub enabled: bool,
    /// Points for the customer who referred, once the friend's first order qualifies.
    pub referrer_points: i64,
    /// The friend's welcome bonus.
    pub referee_points: i64,
}

/// How the program works: ways to earn, tiers, rewards and the referral offer.
///
/// Open to a `storefront` key without a customer token. The earning rules come
/// from the points service and are essential; the tiers, rewards and referral
/// parts are marked `available: false` when their service is not configured or
/// does not answer.
#[utoipa::path(
    get,
    path = "/v1/program",
    tag = "customers",
    operation_id = "getProgramOverview",
    security(("api_key" = ["storefront"])),
    responses((status = 200, description = "How the program works", body = ProgramOverview))
)]
pub async fn overview(State(state): State<AppState>, auth: Authorized<StorefrontScope>) -> Result<Response, Problem> {
    let program = auth.program();
    let up = &state.upstreams;
    let (settings, campaigns, ladder, catalog, referral) = tokio::join!(
        up.points(model::settings_request(program), rpc!(get_program_settings)),
        up.points(
            model::campaigns_request(program, CampaignQuery { include_ended: Some(false) }),
            rpc!(list_campaigns)
        ),
        up.tiers(model::ladder_request(program), rpc!(get_ladder)),
        up.rewards(model::rewards_request(program, RewardQuery { include_archived: Some(false) }), rpc!(list_rewards)),
        up.referral(model::referral_settings_request(program), rpc!(get_referral_settings)),
    );
    let settings = Settings::from(settings.map_err(points_failed)?.message.settings.unwrap_or_default());
    let now = SystemClock.now();
    let mut running: Vec<_> = campaigns
        .map_err(points_failed)?
        .message
        .campaigns
        .into_iter()
        .filter(|c| c.starts_at.as_ref().and_then(from_timestamp).is_none_or(|at| at <= now))
        .filter(|c| c.ends_at.as_ref().and_then(from_timestamp).is_none_or(|at| now < at))
        .collect();
    running.sort_by_key(|c| c.ends_at.as_ref().and_then(from_timestamp).unwrap_or(i64::MAX));
    let tiers = match ladder {
        Ok(reply) => {
            let tiers = Ladder::from(reply.message.ladder.unwrap_or_default())
                .tiers
                .into_iter()
                .filter(|t| !t.hidden)
                .collect();
            TiersOverview { available: true, reason: None, tiers }
        }
        Err(failure) => TiersOverview { available: false, reason: Some(absence("tiers", failure)), tiers: Vec::new() },
    };
    let rewards = match catalog {
        Ok(reply) => {
            let rewards = RewardList::from(reply.message)
                .rewards
                .into_iter()
                .filter(|r| !r.archived && r.minimum_tier_id.is_none() && r.eligible_tier_ids.is_empty())
                .map(summary);
            CatalogOverview { available: true, reason: None, rewards: rewards.collect() }
        }
        Err(failure) => {
            CatalogOverview { available: false, reason: Some(absence("rewards", failure)), rewards: Vec::new() }
        }
    };
    let referral = match referral {
        Ok(reply) => {
            let s = reply.message.settings.unwrap_or_default();
            let (referrer_points, referee_points) =
                if s.enabled { (s.referrer_points, s.referee_points) } else { (0, 0) };
            ReferralOffer { available: true, reason: None, enabled: s.enabled, referrer_points, referee_points }
        }
        Err(failure) => ReferralOffer {
            available: false,
            reason: Some(absence("referral", failure)),
            enabled: false,
            referrer_points: 0,
            referee_points: 0,
        },
    };
    Ok(json(&ProgramOverview {
        currency: settings.currency,
        earn_rate: settings.earn_rate,
        ways_to_earn: settings.activity_rules.into_iter().filter(|rule| rule.active).collect(),
        campaigns: running.into_iter().map(Campaign::from).collect(),
        tiers,
        rewards,
        referral,
    }))
}

fn summary(reward: Reward) -> RewardSummary {
    RewardSummary {
        reward_id: reward.reward_id,
        name: reward.name,
        description: reward.description,
        kind: reward.kind,
        point_cost: reward.point_cost,
    }
}
