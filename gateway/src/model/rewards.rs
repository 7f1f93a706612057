//! The rewards catalog, redemptions and vouchers.

use super::*;

// ---------------------------------------------------------------- rewards

/// Read and written by name; an unspecified or unknown kind shows as `custom`.
pub use rewards_pb::RewardKind;

/// A catalog entry, as created or replaced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardBody {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: RewardKind,
    /// For `fixed_discount`.
    pub amount_minor: Option<i64>,
    /// For `fixed_discount`: ISO 4217.
    pub currency: Option<String>,
    /// For `percent_discount`, in basis points.
    pub percent_bp: Option<i32>,
    /// For `free_product`.
    pub sku: Option<String>,
    pub point_cost: i64,
    /// Members of this visible tier or a visible tier above it (hidden tiers never count as above;
    /// a hidden tier here means its members only); absent, with `eligible_tier_ids` empty: anyone.
    pub minimum_tier_id: Option<String>,
    /// Members of exactly these tiers, hidden ones included; with `minimum_tier_id` too, either admits.
    #[serde(default)]
    pub eligible_tier_ids: Vec<String>,
    /// Vouchers that can be issued in total; absent: unlimited.
    pub total_stock: Option<i64>,
    /// At most this many redemptions per customer per `limit_period_days`; 0: no limit.
    #[serde(default)]
    pub per_customer_limit: i32,
    #[serde(default)]
    pub limit_period_days: i32,
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// How long an issued voucher stays valid, in days; absent: 90.
    #[serde(default = "default_voucher_validity_days")]
    #[schema(default = 90)]
    pub voucher_validity_days: i32,
    /// Give the points back when a voucher expires unused.
    #[serde(default)]
    pub refund_expired: bool,
    /// On `PUT`: when set, the change is refused (409 `VERSION_MISMATCH`) unless the stored version still
    /// matches (the same replacement again is answered as the first). Ignored on `POST`.
    pub expected_version: Option<i64>,
}

/// A voucher's life when a reward does not say: about a season.
fn default_voucher_validity_days() -> i32 {
    90
}

impl RewardBody {
    pub fn into_proto(self, reward_id: String) -> Result<rewards_pb::Reward, Problem> {
        let starts_at = self.starts_at.as_deref().map(|t| time_in("starts_at", t)).transpose()?;
        let ends_at = self.ends_at.as_deref().map(|t| time_in("ends_at", t)).transpose()?;
        Ok(rewards_pb::Reward {
            reward_id,
            name: self.name,
            description: self.description,
            kind: self.kind.into(),
            amount_minor: self.amount_minor.unwrap_or(0),
            currency: self.currency.unwrap_or_default(),
            percent_bp: self.percent_bp.unwrap_or(0),
            sku: self.sku.unwrap_or_default(),
            point_cost: self.point_cost,
            minimum_tier_id: self.minimum_tier_id.unwrap_or_default(),
            eligible_tier_ids: self.eligible_tier_ids,
            total_stock: self.total_stock,
            remaining_stock: 0,
            per_customer_limit: self.per_customer_limit,
            limit_period_days: self.limit_period_days,
            starts_at,
            ends_at,
            voucher_validity_days: self.voucher_validity_days,
            refund_expired: self.refund_expired,
            archived: false,
            version: 0,
        })
    }
}

/// A catalog entry as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reward {
    pub reward_id: String,
    pub name: String,
    pub description: String,
    pub kind: RewardKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_bp: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub point_cost: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_tier_id: Option<String>,
    /// Only members of these tiers (hidden ones included) may redeem it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub eligible_tier_ids: Vec<String>,
    /// Absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_stock: Option<i64>,
    /// Vouchers left, when `total_stock` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_stock: Option<i64>,
    pub per_customer_limit: i32,
    pub limit_period_days: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    pub voucher_validity_days: i32,
    pub refund_expired: bool,
    pub archived: bool,
    /// 1 when created, one more with every change; send it back as `expected_version` to change it safely.
    pub version: i64,
}

impl From<rewards_pb::Reward> for Reward {
    fn from(r: rewards_pb::Reward) -> Self {
        let kind = RewardKind::shown(r.kind);
        let fixed = matches!(kind, RewardKind::FixedDiscount);
        Self {
            reward_id: r.reward_id,
            name: r.name,
            description: r.description,
            kind,
            amount_minor: fixed.then_some(r.amount_minor),
            currency: non_empty(r.currency).filter(|_| fixed),
            percent_bp: matches!(kind, RewardKind::PercentDiscount).then_some(r.percent_bp),
            sku: non_empty(r.sku).filter(|_| matches!(kind, RewardKind::FreeProduct)),
            point_cost: r.point_cost,
            minimum_tier_id: non_empty(r.minimum_tier_id),
            eligible_tier_ids: r.eligible_tier_ids,
            remaining_stock: r.total_stock.map(|_| r.remaining_stock),
            total_stock: r.total_stock,
            per_customer_limit: r.per_customer_limit,
            limit_period_days: r.limit_period_days,
            starts_at: time_out(r.starts_at.as_ref()),
            ends_at: time_out(r.ends_at.as_ref()),
            voucher_validity_days: r.voucher_validity_days,
            refund_expired: r.refund_expired,
            archived: r.archived,
            version: r.version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RewardList {
    pub rewards: Vec<Reward>,
}

impl From<rewards_pb::ListRewardsResponse> for RewardList {
    fn from(r: rewards_pb::ListRewardsResponse) -> Self {
        Self { rewards: r.rewards.into_iter().map(Reward::from).collect() }
    }
}

/// `include_archived=true` lists archived rewards too.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RewardQuery {
    pub include_archived: Option<bool>,
}

pub fn rewards_request(program_id: &str, query: RewardQuery) -> rewards_pb::ListRewardsRequest {
    rewards_pb::ListRewardsRequest {
        program_id: program_id.to_owned(),
        include_archived: query.include_archived.unwrap_or(false),
    }
}

pub fn create_reward_request(
    program_id: &str,
    reward: rewards_pb::Reward,
    actor: String,
    key: String,
) -> rewards_pb::CreateRewardRequest {
    rewards_pb::CreateRewardRequest {
        program_id: program_id.to_owned(),
        reward: Some(reward),
        actor,
        idempotency_key: key,
    }
}

pub fn update_reward_request(
    program_id: &str,
    reward: rewards_pb::Reward,
    expected_version: Option<i64>,
    actor: String,
    key: String,
) -> rewards_pb::UpdateRewardRequest {
    rewards_pb::UpdateRewardRequest {
        program_id: program_id.to_owned(),
        reward: Some(reward),
        actor,
        idempotency_key: key,
        expected_version,
    }
}

pub fn archive_reward_request(
    program_id: &str,
    reward_id: String,
    actor: String,
    key: String,
) -> rewards_pb::ArchiveRewardRequest {
    rewards_pb::ArchiveRewardRequest { program_id: program_id.to_owned(), reward_id, actor, idempotency_key: key }
}

/// Why a customer cannot redeem a reward now.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unavailability {
    /// Not enough points: `points_short` are missing.
    PointsShort,
    /// Below the reward's minimum tier, which the customer can still reach.
    TierTooLow,
    /// For other tiers: a hidden tier's members, or the tiers it lists.
    TierNotEligible,
    OutOfStock,
    LimitReached,
    Unknown,
}

/// An active reward and whether the customer can redeem it now.
#[derive(Debug, Serialize, ToSchema)]
pub struct AvailableReward {
    pub reward: Reward,
    pub redeemable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailability: Option<Unavailability>,
    /// With `points_short`: how many points are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_short: Option<i64>,
}

impl From<rewards_pb::AvailableReward> for AvailableReward {
    fn from(a: rewards_pb::AvailableReward) -> Self {
        let unavailability = match rewards_pb::Unavailability::try_from(a.unavailability) {
            Ok(rewards_pb::Unavailability::Unspecified) => None,
            Ok(rewards_pb::Unavailability::PointsShort) => Some(Unavailability::PointsShort),
            Ok(rewards_pb::Unavailability::TierTooLow) => Some(Unavailability::TierTooLow),
            Ok(rewards_pb::Unavailability::TierNotEligible) => Some(Unavailability::TierNotEligible),
            Ok(rewards_pb::Unavailability::OutOfStock) => Some(Unavailability::OutOfStock),
            Ok(rewards_pb::Unavailability::LimitReached) => Some(Unavailability::LimitReached),
            Err(_) => Some(Unavailability::Unknown),
        }
        .filter(|_| !a.redeemable);
        Self {
            points_short: matches!(unavailability, Some(Unavailability::PointsShort)).then_some(a.points_short),
            reward: a.reward.unwrap_or_default().into(),
            redeemable: a.redeemable,
            unavailability,
        }
    }
}

/// The active rewards, each with whether the customer can redeem it now.
#[derive(Debug, Serialize, ToSchema)]
pub struct AvailableRewards {
    pub customer_id: String,
    /// The customer's spendable points.
    pub available_points: i64,
    pub rewards: Vec<AvailableReward>,
}

impl AvailableRewards {
    pub fn from_proto(customer_id: String, r: rewards_pb::ListAvailableRewardsResponse) -> Self {
        Self {
            customer_id,
            available_points: r.available_points,
            rewards: r.rewards.into_iter().map(AvailableReward::from).collect(),
        }
    }
}

/// `known_points`: the customer's available points as just read from points,
/// so that rewards need not ask again.
pub fn available_rewards_request(
    program_id: &str,
    customer_id: &str,
    known_points: Option<i64>,
) -> rewards_pb::ListAvailableRewardsRequest {
    rewards_pb::ListAvailableRewardsRequest {
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        available_points: known_points,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    pub reward_id: String,
}

impl RedeemBody {
    pub fn into_proto(self, program_id: &str, customer_id: String, key: String) -> rewards_pb::RedeemRequest {
        rewards_pb::RedeemRequest {
            program_id: program_id.to_owned(),
            customer_id,
            reward_id: self.reward_id,
            idempotency_key: key,
        }
    }
}

/// A redemption and its voucher, served as the rewards service answers them; an unspecified or
/// unknown status is `unknown`.
pub use rewards_pb::{Redemption, RedemptionStatus};

/// Newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedemptionPage {
    pub redemptions: Vec<Redemption>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A gift: the reward given to each customer without points, with why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// 1 to 1000 customers, each given one voucher.
    pub customer_ids: Vec<String>,
    /// Why it is given: kept with each voucher and told in its `reward.granted` event.
    pub reason: String,
}

impl GrantBody {
    pub fn into_proto(
        self,
        program_id: &str,
        reward_id: String,
        actor: String,
        key: String,
    ) -> rewards_pb::GrantRewardRequest {
        rewards_pb::GrantRewardRequest {
            program_id: program_id.to_owned(),
            reward_id,
            customer_ids: self.customer_ids,
            reason: self.reason,
            actor,
            idempotency_key: key,
        }
    }
}

/// The vouchers given, one per customer, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Gifts {
    pub redemptions: Vec<Redemption>,
}

/// Single-use codes of a reward for a campaign, held by no customer until one uses them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBatchBody {
    /// 1 to 10000 codes.
    pub count: i32,
    /// What every code starts with: up to 12 letters and digits (`WELCOME`: `WELCOME-ABCD-EFGH-JKLM`).
    #[serde(default)]
    pub prefix: String,
    /// When the codes stop being valid; absent: the reward's `voucher_validity_days` from now.
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    /// Why they are issued (kept with the batch and each code).
    pub reason: String,
}

impl CodeBatchBody {
    pub fn into_proto(
        self,
        program_id: &str,
        reward_id: String,
        actor: String,
        key: String,
    ) -> Result<rewards_pb::IssueCodeBatchRequest, Problem> {
        let valid_until = self.valid_until.as_deref().map(|t| time_in("valid_until", t)).transpose()?;
        Ok(rewards_pb::IssueCodeBatchRequest {
            program_id: program_id.to_owned(),
            reward_id,
            count: self.count,
            prefix: self.prefix,
            valid_until,
            reason: self.reason,
            actor,
            idempotency_key: key,
        })
    }
}

/// A batch of campaign codes.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeBatch {
    pub batch_id: String,
    /// Each code as customers type it, e.g. `WELCOME-ABCD-EFGH-JKLM`.
    pub codes: Vec<String>,
    #[schema(format = DateTime)]
    pub valid_until: String,
}

impl From<rewards_pb::IssueCodeBatchResponse> for CodeBatch {
    fn from(r: rewards_pb::IssueCodeBatchResponse) -> Self {
        Self { batch_id: r.batch_id, codes: r.codes, valid_until: time_out(r.valid_until.as_ref()).unwrap_or_default() }
    }
}

impl From<rewards_pb::ListRedemptionsResponse> for RedemptionPage {
    fn from(r: rewards_pb::ListRedemptionsResponse) -> Self {
        Self { redemptions: r.redemptions, next_page_token: non_empty(r.next_page_token) }
    }
}

pub fn redemptions_request(
    program_id: &str,
    customer_id: String,
    page: PageQuery,
) -> rewards_pb::ListRedemptionsRequest {
    rewards_pb::ListRedemptionsRequest {
        program_id: program_id.to_owned(),
        customer_id,
        page_size: page.page_size.unwrap_or(0),
        page_token: page.page_token.unwrap_or_default(),
    }
}

pub fn cancel_redemption_request(
    program_id: &str,
    redemption_id: String,
    actor: String,
    key: String,
) -> rewards_pb::CancelRedemptionRequest {
    rewards_pb::CancelRedemptionRequest {
        program_id: program_id.to_owned(),
        redemption_id,
        idempotency_key: key,
        actor,
    }
}

/// Checks a voucher at the checkout; writes nothing.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// When set, a voucher of another customer is reported `unknown`.
    pub customer_id: Option<String>,
}

impl ValidateBody {
    pub fn into_proto(self, program_id: &str, code: String) -> rewards_pb::ValidateVoucherRequest {
        rewards_pb::ValidateVoucherRequest {
            program_id: program_id.to_owned(),
            code,
            customer_id: self.customer_id.unwrap_or_default(),
        }
    }
}

/// A voucher's state by name; an unspecified or unknown one is `unknown`.
pub use rewards_pb::VoucherState;

/// Whether a voucher is good, and what it grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoucherCheck {
    pub state: VoucherState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redemption: Option<Redemption>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<Reward>,
}

impl From<rewards_pb::ValidateVoucherResponse> for VoucherCheck {
    fn from(r: rewards_pb::ValidateVoucherResponse) -> Self {
        let state = VoucherState::shown(r.state);
        let known = !matches!(state, VoucherState::Unknown);
        Self { state, redemption: r.redemption.filter(|_| known), reward: r.reward.filter(|_| known).map(Reward::from) }
    }
}

/// Uses a voucher for an order, exactly once; the same order again answers as the first time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeBody {
    pub order_id: String,
    /// The customer using it: becomes a campaign code's holder; another
    /// customer's voucher is refused as unknown. Optional.
    #[serde(default)]
    pub customer_id: String,
}

impl ConsumeBody {
    pub fn into_proto(self, program_id: &str, code: String) -> rewards_pb::ConsumeVoucherRequest {
        rewards_pb::ConsumeVoucherRequest {
            program_id: program_id.to_owned(),
            code,
            order_id: self.order_id,
            customer_id: self.customer_id,
        }
    }
}
