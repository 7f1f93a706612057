//! The gRPC face of the rewards service: the only file that touches prost
//! types. Every request is validated here, at the edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use loyalty_common::auth;
use loyalty_common::clock::{Micros, to_timestamp};
use loyalty_common::outbox;
use loyalty_common::validate::{Check, FieldViolation};
use loyalty_proto::rewards::v1 as pb;
use loyalty_proto::rewards::v1::rewards_service_server::RewardsService;

use crate::domain::{self, Kind, Reward, Unavailable};
use crate::error::DOMAIN;
use crate::service::Rewards;
use crate::store::{CatalogEntry, Giving, Redemption, Status as RedemptionStatus};

pub struct RewardsApi {
    rewards: Arc<Rewards>,
}

impl RewardsApi {
    pub fn new(rewards: Arc<Rewards>) -> Self {
        Self { rewards }
    }
}

fn admin(check: &mut Check, program_id: &str, actor: &str, key: &str) {
    check.id("program_id", program_id).id("actor", actor).id("idempotency_key", key);
}

/// Customers one GrantReward gives to, and codes one IssueCodeBatch issues, at most.
const MAX_GIFTS: usize = 1_000;
const MAX_BATCH_CODES: i32 = 10_000;

/// What every giving (a gift, a batch) checks: the ids, who gives, the key,
/// and why, which is required, bounded free text.
fn giving_checked(program_id: &str, reward_id: &str, giving: Giving<'_>) -> Check {
    let mut check = Check::default();
    check.id("program_id", program_id).id("reward_id", reward_id).id("actor", giving.actor);
    check.id("idempotency_key", giving.key);
    if giving.reason.trim().is_empty() {
        check.add(Err(FieldViolation::new("reason", "is required: say why it is given")));
    }
    check.text("reason", giving.reason);
    check
}

fn voucher_code(check: &mut Check, input: &str) -> String {
    domain::normalize_code(input).unwrap_or_else(|| {
        check.add(Err(FieldViolation::new(
            "code",
            "is not a voucher code (12 characters after a campaign's prefix if any, dashes allowed)",
        )));
        String::new()
    })
}

#[tonic::async_trait]
impl RewardsService for RewardsApi {
    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> Result<Response<pb::CreateRewardResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        admin(&mut check, &r.program_id, &actor, &r.idempotency_key);
        let reward = reward_from_proto(r.reward.unwrap_or_default(), &mut check, self.rewards.store().now());
        if !reward.reward_id.is_empty() {
            check.add(Err(FieldViolation::new("reward.reward_id", "is given by the service; leave it empty")));
        }
        check.done(DOMAIN)?;
        let entry = self.rewards.store().create(&r.program_id, reward, &r.idempotency_key).await?;
        Ok(Response::new(pb::CreateRewardResponse { reward: Some(reward_to_proto(&entry)) }))
    }

    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> Result<Response<pb::UpdateRewardResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        admin(&mut check, &r.program_id, &actor, &r.idempotency_key);
        let reward = reward_from_proto(r.reward.unwrap_or_default(), &mut check, self.rewards.store().now());
        check.id("reward.reward_id", &reward.reward_id);
        check.done(DOMAIN)?;
        // Replacing with the same content twice is the same replacement: idempotent by nature.
        let entry = self.rewards.store().update(&r.program_id, reward, r.expected_version).await?;
        Ok(Response::new(pb::UpdateRewardResponse { reward: Some(reward_to_proto(&entry)) }))
    }

    async fn archive_reward(
        &self,
        request: Request<pb::ArchiveRewardRequest>,
    ) -> Result<Response<pb::ArchiveRewardResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        admin(&mut check, &r.program_id, &actor, &r.idempotency_key);
        check.id("reward_id", &r.reward_id);
        check.done(DOMAIN)?;
        let entry = self.rewards.store().archive(&r.program_id, &r.reward_id).await?;
        Ok(Response::new(pb::ArchiveRewardResponse { reward: Some(reward_to_proto(&entry)) }))
    }

    async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> Result<Response<pb::ListRewardsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let catalog = self.rewards.store().catalog(&r.program_id, r.include_archived).await?;
        Ok(Response::new(pb::ListRewardsResponse { rewards: catalog.iter().map(reward_to_proto).collect() }))
    }

    async fn list_available_rewards(
        &self,
        request: Request<pb::ListAvailableRewardsRequest>,
    ) -> Result<Response<pb::ListAvailableRewardsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let (entries, available_points) =
            self.rewards.available(&r.program_id, &r.customer_id, r.available_points).await?;
        let rewards = entries
            .iter()
            .map(|(entry, why)| {
                let (unavailability, points_short) = match why {
                    None => (pb::Unavailability::Unspecified, 0),
                    Some(Unavailable::PointsShort(n)) => (pb::Unavailability::PointsShort, *n),
                    Some(Unavailable::TierTooLow) => (pb::Unavailability::TierTooLow, 0),
                    Some(Unavailable::TierNotEligible) => (pb::Unavailability::TierNotEligible, 0),
                    Some(Unavailable::OutOfStock) => (pb::Unavailability::OutOfStock, 0),
                    Some(Unavailable::LimitReached) => (pb::Unavailability::LimitReached, 0),
                };
                pb::AvailableReward {
                    reward: Some(reward_to_proto(entry)),
                    redeemable: why.is_none(),
                    unavailability: unavailability as i32,
                    points_short,
                }
            })
            .collect();
        Ok(Response::new(pb::ListAvailableRewardsResponse { rewards, available_points }))
    }

    async fn redeem(&self, request: Request<pb::RedeemRequest>) -> Result<Response<pb::RedeemResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.id("reward_id", &r.reward_id).id("idempotency_key", &r.idempotency_key);
        check.done(DOMAIN)?;
        let (redemption, replayed) =
            self.rewards.redeem(&r.program_id, &r.customer_id, &r.reward_id, &r.idempotency_key).await?;
        let mut response = Response::new(pb::RedeemResponse { redemption: Some(redemption_to_proto(&redemption)) });
        if replayed {
            // As every service does: a replay is told apart without changing the body.
            response.metadata_mut().insert("idempotent-replayed", "true".parse().expect("static header value"));
        }
        Ok(response)
    }

    async fn list_redemptions(
        &self,
        request: Request<pb::ListRedemptionsRequest>,
    ) -> Result<Response<pb::ListRedemptionsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        let page = check.page(r.page_size, &r.page_token);
        check.done(DOMAIN)?;
        let rows = self.rewards.store().redemptions(&r.program_id, &r.customer_id, page.before, page.size + 1).await?;
        let (rows, next_page_token) = page.cut(rows, |(seq, _)| *seq);
        let redemptions = rows.iter().map(|(_, redemption)| redemption_to_proto(redemption)).collect();
        Ok(Response::new(pb::ListRedemptionsResponse { redemptions, next_page_token }))
    }

    async fn cancel_redemption(
        &self,
        request: Request<pb::CancelRedemptionRequest>,
    ) -> Result<Response<pb::CancelRedemptionResponse>, Status> {
        // Recorded on the refund's ledger entry: which key (or, through the gateway, whose) cancelled the voucher.
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("redemption_id", &r.redemption_id);
        check.id("idempotency_key", &r.idempotency_key);
        check.done(DOMAIN)?;
        let cancelled = self.rewards.store().cancel(&r.program_id, &r.redemption_id, &actor, "").await?;
        // The refund goes out now if the points service answers, else with the next background round.
        if let Err(error) = self.rewards.send_refunds().await {
            tracing::warn!(%error, "refund of a cancelled voucher delayed");
        }
        Ok(Response::new(pb::CancelRedemptionResponse { redemption: Some(redemption_to_proto(&cancelled)) }))
    }

    async fn validate_voucher(
        &self,
        request: Request<pb::ValidateVoucherRequest>,
    ) -> Result<Response<pb::ValidateVoucherResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        if !r.customer_id.is_empty() {
            check.id("customer_id", &r.customer_id);
        }
        let code = voucher_code(&mut check, &r.code);
        check.done(DOMAIN)?;
        let found = self.rewards.store().by_code(&r.program_id, &code).await?;
        // A campaign code is public: anyone's until used, and its state anyone's to know.
        let public = |v: &Redemption| !v.batch_id.is_empty();
        let found = found.filter(|v| r.customer_id.is_empty() || public(v) || v.customer_id == r.customer_id);
        let now = self.rewards.store().now();
        let Some(redemption) = found else {
            return Ok(Response::new(pb::ValidateVoucherResponse {
                state: pb::VoucherState::Unknown as i32,
                ..Default::default()
            }));
        };
        let state = voucher_state(&redemption, now);
        let reward = if state == pb::VoucherState::Unknown {
            None
        } else {
            Some(reward_to_proto(&self.rewards.store().entry(&r.program_id, &redemption.reward_id).await?))
        };
        let redemption = (state != pb::VoucherState::Unknown).then(|| redemption_to_proto(&redemption));
        Ok(Response::new(pb::ValidateVoucherResponse { state: state as i32, redemption, reward }))
    }

    async fn consume_voucher(
        &self,
        request: Request<pb::ConsumeVoucherRequest>,
    ) -> Result<Response<pb::ConsumeVoucherResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("order_id", &r.order_id);
        if !r.customer_id.is_empty() {
            check.id("customer_id", &r.customer_id);
        }
        let code = voucher_code(&mut check, &r.code);
        check.done(DOMAIN)?;
        let used = self.rewards.store().consume(&r.program_id, &code, &r.order_id, &r.customer_id).await?;
        Ok(Response::new(pb::ConsumeVoucherResponse { redemption: Some(redemption_to_proto(&used)) }))
    }

    async fn grant_reward(
        &self,
        request: Request<pb::GrantRewardRequest>,
    ) -> Result<Response<pb::GrantRewardResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let giving = Giving { actor: &actor, reason: &r.reason, key: &r.idempotency_key };
        let mut check = giving_checked(&r.program_id, &r.reward_id, giving);
        if r.customer_ids.is_empty() || r.customer_ids.len() > MAX_GIFTS {
            check.add(Err(FieldViolation::new("customer_ids", format!("must name 1 to {MAX_GIFTS} customers"))));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, customer) in r.customer_ids.iter().enumerate().take(MAX_GIFTS) {
            check.id(&format!("customer_ids[{i}]"), customer);
            if !seen.insert(customer) {
                check.add(Err(FieldViolation::new(format!("customer_ids[{i}]"), "names a customer twice")));
            }
        }
        check.done(DOMAIN)?;
        let gifts = self.rewards.store().grant(&r.program_id, &r.reward_id, &r.customer_ids, giving).await?;
        Ok(Response::new(pb::GrantRewardResponse { redemptions: gifts.iter().map(redemption_to_proto).collect() }))
    }

    async fn issue_code_batch(
        &self,
        request: Request<pb::IssueCodeBatchRequest>,
    ) -> Result<Response<pb::IssueCodeBatchResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let giving = Giving { actor: &actor, reason: &r.reason, key: &r.idempotency_key };
        let mut check = giving_checked(&r.program_id, &r.reward_id, giving);
        if !(1..=MAX_BATCH_CODES).contains(&r.count) {
            check.add(Err(FieldViolation::new("count", format!("must be between 1 and {MAX_BATCH_CODES}"))));
        }
        let prefix = domain::code_prefix(&r.prefix).map_err(|v| check.add(Err(v))).unwrap_or_default();
        let now = self.rewards.store().now();
        let valid_until = check.timestamp("valid_until", r.valid_until.as_ref(), now);
        if valid_until.is_some_and(|until| until <= now) {
            check.add(Err(FieldViolation::new("valid_until", "must be in the future")));
        }
        check.done(DOMAIN)?;
        let count = usize::try_from(r.count).unwrap_or(0);
        let batch =
            self.rewards.store().issue_batch(&r.program_id, &r.reward_id, count, &prefix, valid_until, giving).await?;
        Ok(Response::new(pb::IssueCodeBatchResponse {
            batch_id: batch.batch_id,
            codes: batch.codes.iter().map(|c| domain::display_code(c)).collect(),
            valid_until: Some(to_timestamp(batch.valid_until)),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let r = request.into_inner();
        let database = self.rewards.store().database();
        let (events, next_after_sequence) = outbox::list(database, DOMAIN, r.after_sequence, r.page_size).await?;
        Ok(Response::new(pb::ListEventsResponse { events, next_after_sequence }))
    }
}

fn voucher_state(redemption: &Redemption, now: Micros) -> pb::VoucherState {
    match redemption.status {
        RedemptionStatus::Active if redemption.voucher_expires_at > now => pb::VoucherState::Valid,
        RedemptionStatus::Active | RedemptionStatus::Expired => pb::VoucherState::Expired,
        RedemptionStatus::Used => pb::VoucherState::Used,
        RedemptionStatus::Cancelled => pb::VoucherState::Cancelled,
        RedemptionStatus::Pending | RedemptionStatus::Failed => pb::VoucherState::Unknown,
    }
}

/// `now` is the service's clock, which bounds `starts_at` and `ends_at`.
fn reward_from_proto(r: pb::Reward, check: &mut Check, now: Micros) -> Reward {
    let kind = match pb::RewardKind::try_from(r.kind) {
        Ok(pb::RewardKind::FixedDiscount) => Kind::FixedDiscount { amount_minor: r.amount_minor, currency: r.currency },
        Ok(pb::RewardKind::PercentDiscount) => Kind::PercentDiscount { percent_bp: i64::from(r.percent_bp) },
        Ok(pb::RewardKind::FreeShipping) => Kind::FreeShipping,
        Ok(pb::RewardKind::FreeProduct) => Kind::FreeProduct { sku: r.sku },
        Ok(pb::RewardKind::Custom) => Kind::Custom,
        _ => {
            check.add(Err(FieldViolation::new("reward.kind", "must be set")));
            Kind::Custom
        }
    };
    let starts_at = check.timestamp("reward.starts_at", r.starts_at.as_ref(), now);
    let ends_at = check.timestamp("reward.ends_at", r.ends_at.as_ref(), now);
    let reward = Reward {
        reward_id: r.reward_id,
        name: r.name,
        description: r.description,
        kind,
        point_cost: r.point_cost,
        minimum_tier_id: r.minimum_tier_id,
        eligible_tier_ids: r.eligible_tier_ids,
        total_stock: r.total_stock,
        per_customer_limit: r.per_customer_limit,
        limit_period_days: r.limit_period_days,
        starts_at,
        ends_at,
        voucher_validity_days: r.voucher_validity_days,
        refund_expired: r.refund_expired,
        version: 0,
    };
    for violation in reward.validate() {
        check.add(Err(violation));
    }
    reward
}

fn reward_to_proto(entry: &CatalogEntry) -> pb::Reward {
    let r = &entry.reward;
    let (kind, amount_minor, currency, percent_bp, sku) = match &r.kind {
        Kind::FixedDiscount { amount_minor, currency } => {
            (pb::RewardKind::FixedDiscount, *amount_minor, currency.clone(), 0, String::new())
        }
        Kind::PercentDiscount { percent_bp } => {
            (pb::RewardKind::PercentDiscount, 0, String::new(), i32::try_from(*percent_bp).unwrap_or(0), String::new())
        }
        Kind::FreeShipping => (pb::RewardKind::FreeShipping, 0, String::new(), 0, String::new()),
        Kind::FreeProduct { sku } => (pb::RewardKind::FreeProduct, 0, String::new(), 0, sku.clone()),
        Kind::Custom => (pb::RewardKind::Custom, 0, String::new(), 0, String::new()),
    };
    pb::Reward {
        reward_id: r.reward_id.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        kind: kind as i32,
        amount_minor,
        currency,
        percent_bp,
        sku,
        point_cost: r.point_cost,
        minimum_tier_id: r.minimum_tier_id.clone(),
        eligible_tier_ids: r.eligible_tier_ids.clone(),
        total_stock: r.total_stock,
        remaining_stock: entry.remaining_stock.unwrap_or(0),
        per_customer_limit: r.per_customer_limit,
        limit_period_days: r.limit_period_days,
        starts_at: r.starts_at.map(to_timestamp),
        ends_at: r.ends_at.map(to_timestamp),
        voucher_validity_days: r.voucher_validity_days,
        refund_expired: r.refund_expired,
        archived: entry.archived,
        version: r.version,
    }
}

fn redemption_to_proto(r: &Redemption) -> pb::Redemption {
    let status = match r.status {
        RedemptionStatus::Pending => pb::RedemptionStatus::Pending,
        RedemptionStatus::Active => pb::RedemptionStatus::Active,
        RedemptionStatus::Used => pb::RedemptionStatus::Used,
        RedemptionStatus::Cancelled => pb::RedemptionStatus::Cancelled,
        RedemptionStatus::Expired => pb::RedemptionStatus::Expired,
        RedemptionStatus::Failed => pb::RedemptionStatus::Failed,
    };
    // A code is only shown once it is (or was) a real voucher.
    let issued = !matches!(r.status, RedemptionStatus::Pending | RedemptionStatus::Failed);
    pb::Redemption {
        redemption_id: r.redemption_id.clone(),
        customer_id: r.customer_id.clone(),
        reward_id: r.reward_id.clone(),
        reward_name: r.reward_name.clone(),
        points_spent: if r.status == RedemptionStatus::Failed { 0 } else { r.points },
        status: status as i32,
        voucher_code: if issued { domain::display_code(&r.voucher_code) } else { String::new() },
        created_at: Some(to_timestamp(r.created_at)),
        voucher_expires_at: issued.then(|| to_timestamp(r.voucher_expires_at)),
        consumed_order_id: r.consumed_order_id.clone(),
        granted_by: r.granted_by.clone(),
        grant_reason: r.grant_reason.clone(),
        batch_id: r.batch_id.clone(),
    }
}
