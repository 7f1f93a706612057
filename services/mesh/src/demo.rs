//! The quick start's demo shop: a program worth showing (ways to earn, a tier
//! ladder, rewards, referrals), a storefront key and a customer token secret,
//! and the gateway's `/demo` page switched on. Every write carries a fixed
//! idempotency key, so starting the mesh again over the same data directory
//! replays them instead of adding rewards twice; a shop that changed its
//! settings since keeps its changes.

use std::time::Duration;

use loyalty_common::auth::ServiceSecret;
use loyalty_common::clock::to_timestamp;
use loyalty_common::peer::Peers;
use loyalty_common::tls::Tls;
use loyalty_gateway::customer::CustomerSecrets;
use loyalty_gateway::keys::{KeyStore, Scope};
use loyalty_gateway::rpc;
use loyalty_gateway::upstream::{Addresses, Failure, Upstreams};
use loyalty_proto::points::v1 as points;
use loyalty_proto::referral::v1 as referral;
use loyalty_proto::rewards::v1 as rewards;
use loyalty_proto::rewards::v1::RewardKind as Kind;
use loyalty_proto::tiers::v1 as tiers;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The program the demo shop runs.
const PROGRAM: &str = "demo";
const ACTOR: &str = "quick-start demo";

/// Sets up the demo program through the running services, and turns on the gateway's demo shop.
pub async fn prepare(gateway: &mut loyalty_gateway::Config) -> Result<(), Error> {
    let addresses = Addresses {
        points: &gateway.points_addr,
        tiers: gateway.tiers_addr.as_deref(),
        referral: gateway.referral_addr.as_deref(),
        rewards: gateway.rewards_addr.as_deref(),
        insights: gateway.insights_addr.as_deref(),
        webhooks: gateway.webhooks_addr.as_deref(),
    };
    // The same way in as the gateway's: its TLS settings and a service identity from the shared secret.
    let tls = Tls::load(&gateway.tls)?;
    let peers = match gateway.service_secret.as_deref() {
        Some(secret) => Peers::presenting("demo-setup", &ServiceSecret::new(secret)?, &tls),
        None => Peers::anonymous().over(tls),
    };
    let upstreams = Upstreams::connect(&addresses, Duration::from_secs(5), &peers)?;
    seed(&upstreams).await?;

    let keys = KeyStore::open(&gateway.database.url, 2).await?;
    let storefront = keys.create(PROGRAM, Scope::Storefront, "demo shop").await?;
    CustomerSecrets::new(keys.database().clone()).ensure(PROGRAM).await?;
    gateway.widget.demo = true;
    gateway.widget.demo_program = PROGRAM.to_owned();
    gateway.widget.demo_storefront_key = Some(storefront.key);
    Ok(())
}

async fn seed(up: &Upstreams) -> Result<(), Error> {
    up.points(
        points::PutProgramSettingsRequest {
            program_id: PROGRAM.to_owned(),
            settings: Some(points::ProgramSettings {
                currency: "EUR".to_owned(),
                earn_rate: Some(points::EarnRate { points: 1, per_amount_minor: 100 }),
                rounding: points::Rounding::Down as i32,
                minimum_order_minor: 0,
                // Points arrive at once, so the demo shows them without waiting out a return window.
                pending_days: 0,
                expiry: Some(points::ExpiryPolicy { kind: points::ExpiryPolicyKind::DaysAfterEarn as i32, count: 365 }),
                activity_rules: vec![
                    activity("signup", 200, 1, points::CapPeriod::Lifetime, false),
                    activity("birthday", 100, 1, points::CapPeriod::Year, false),
                    activity("review", 50, 5, points::CapPeriod::Month, true),
                    activity("social_follow", 25, 3, points::CapPeriod::Lifetime, true),
                ],
                version: 0,
                expiry_reminder_days: 0,
                // Points pay for up to half an order at checkout: 100 points = 1.00, in tens.
                checkout: Some(points::CheckoutPoints {
                    points: 100,
                    amount_minor: 100,
                    min_points: 100,
                    max_share_bp: 5_000,
                    step_points: 10,
                }),
            }),
            actor: ACTOR.to_owned(),
            // A new key for new settings: a demo database seeded before gets them once.
            idempotency_key: "demo-setup-settings-v2".to_owned(),
            expected_version: None,
        },
        rpc!(put_program_settings),
    )
    .await?;
    // A campaign running now, so the widget shows one; on reviews only, so orders earn as the ladder says.
    up.points(
        points::CreateCampaignRequest {
            program_id: PROGRAM.to_owned(),
            campaign: Some(points::Campaign {
                campaign_id: String::new(),
                name: "Double points on reviews".to_owned(),
                kind: points::CampaignKind::Multiplier as i32,
                multiplier_bp: 20_000,
                bonus_points: 0,
                // Fixed dates, so that the setup's key replays on every start: 2026-01-01 to 2034-12-31.
                starts_at: Some(to_timestamp(1_767_225_600_000_000)),
                ends_at: Some(to_timestamp(2_051_136_000_000_000)),
                tier_ids: Vec::new(),
                applies_to: vec!["review".to_owned()],
                segment_ids: Vec::new(),
            }),
            actor: ACTOR.to_owned(),
            idempotency_key: "demo-setup-campaign-reviews-v1".to_owned(),
        },
        rpc!(create_campaign),
    )
    .await?;
    // The win-back offer: double points on orders for customers slipping away (insights' AT_RISK).
    up.points(
        points::CreateCampaignRequest {
            program_id: PROGRAM.to_owned(),
            campaign: Some(points::Campaign {
                campaign_id: String::new(),
                name: "Double points when we miss you".to_owned(),
                kind: points::CampaignKind::Multiplier as i32,
                multiplier_bp: 20_000,
                bonus_points: 0,
                starts_at: Some(to_timestamp(1_767_225_600_000_000)),
                ends_at: Some(to_timestamp(2_051_136_000_000_000)),
                tier_ids: Vec::new(),
                applies_to: vec!["order".to_owned()],
                segment_ids: vec!["at_risk".to_owned()],
            }),
            actor: ACTOR.to_owned(),
            idempotency_key: "demo-setup-campaign-at-risk-v1".to_owned(),
        },
        rpc!(create_campaign),
    )
    .await?;
    let tier = |tier_id: &str, name: &str, threshold: i64, multiplier_bp: i32, perks: &[&str]| tiers::Tier {
        tier_id: tier_id.to_owned(),
        name: name.to_owned(),
        threshold,
        multiplier_bp,
        perks: perks.iter().map(|p| (*p).to_owned()).collect(),
        hidden: false,
        benefits: None,
    };
    let gold = tiers::Tier {
        benefits: Some(tiers::TierBenefits {
            free_shipping: true,
            birthday_multiplier_bp: 20_000,
            flags: vec!["free_returns".to_owned()],
            ..Default::default()
        }),
        ..tier(
            "gold",
            "Gold",
            1_000,
            15_000,
            &["1.5x points on orders", "free returns", "free shipping", "double birthday points"],
        )
    };
    up.tiers(
        tiers::PutLadderRequest {
            program_id: PROGRAM.to_owned(),
            ladder: Some(tiers::Ladder {
                tiers: vec![
                    tier("bronze", "Bronze", 0, 10_000, &[]),
                    tier("silver", "Silver", 300, 12_500, &["1.25x points on orders"]),
                    gold,
                ],
                window: Some(tiers::Window { kind: tiers::WindowKind::Lifetime as i32, days: 0 }),
                downgrade: Some(tiers::DowngradePolicy { kind: tiers::DowngradeKind::Immediate as i32, grace_days: 0 }),
                version: 0,
                // The demo's sign-up bonus should show a tier at once.
                qualification_basis: tiers::QualificationBasis::AllEarned as i32,
            }),
            actor: ACTOR.to_owned(),
            // v2: tier benefits and the qualification basis arrived.
            idempotency_key: "demo-setup-ladder-v2".to_owned(),
            expected_version: None,
        },
        rpc!(put_ladder),
    )
    .await
    .map_err(failed)?;
    for (slug, reward) in [
        ("five-off", reward("€5 off", "5 euros off your next order", Kind::FixedDiscount, 150, 500, 0, "")),
        ("free-shipping", reward("Free shipping", "On your next order", Kind::FreeShipping, 250, 0, 0, "")),
        (
            "ten-percent-v2",
            reward("10% off", "For Silver members and up", Kind::PercentDiscount, 500, 0, 1_000, "silver"),
        ),
    ] {
        up.rewards(
            rewards::CreateRewardRequest {
                program_id: PROGRAM.to_owned(),
                reward: Some(reward),
                actor: ACTOR.to_owned(),
                idempotency_key: format!("demo-setup-reward-{slug}-v1"),
            },
            rpc!(create_reward),
        )
        .await
        .map_err(failed)?;
    }
    up.referral(
        referral::PutReferralSettingsRequest {
            program_id: PROGRAM.to_owned(),
            settings: Some(referral::ReferralSettings {
                enabled: true,
                referrer_points: 300,
                referee_points: 100,
                minimum_order_minor: 20_00,
                cap_count: 10,
                cap_period_days: 30,
                attribution_window_days: 30,
                clawback_window_days: 14,
                version: 0,
                referee_reward_id: String::new(),
                referrer_reward_id: String::new(),
            }),
            actor: ACTOR.to_owned(),
            idempotency_key: "demo-setup-referrals-v1".to_owned(),
            expected_version: None,
        },
        rpc!(put_referral_settings),
    )
    .await
    .map_err(failed)?;
    Ok(())
}

fn activity(
    kind: &str,
    points: i64,
    cap_count: i32,
    cap_period: points::CapPeriod,
    once_per_ref: bool,
) -> points::ActivityRule {
    points::ActivityRule {
        activity_type: kind.to_owned(),
        points,
        active: true,
        cap_count,
        cap_period: cap_period as i32,
        once_per_ref,
    }
}

fn reward(
    name: &str,
    description: &str,
    kind: Kind,
    point_cost: i64,
    amount_minor: i64,
    percent_bp: i32,
    minimum_tier_id: &str,
) -> rewards::Reward {
    rewards::Reward {
        name: name.to_owned(),
        description: description.to_owned(),
        kind: kind as i32,
        amount_minor,
        currency: if amount_minor > 0 { "EUR".to_owned() } else { String::new() },
        percent_bp,
        point_cost,
        minimum_tier_id: minimum_tier_id.to_owned(),
        voucher_validity_days: 30,
        ..Default::default()
    }
}

/// An optional service the demo needs was not reachable or refused.
fn failed(failure: Failure) -> Error {
    match failure {
        Failure::NotConfigured(variable) => format!("the demo shop needs {variable}").into(),
        Failure::Status(status) => status.into(),
    }
}
