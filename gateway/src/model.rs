//! The JSON bodies of the API and their conversion to and from the services'
//! protobuf messages: the only file that builds or reads prost types. Points
//! and money are integers (money in minor units with an ISO 4217 currency);
//! instants are RFC 3339 text in UTC.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use loyalty_common::clock::{Clock, SystemClock, from_timestamp, to_timestamp};
use loyalty_common::validate;
use loyalty_proto::points::v1 as pb;
use loyalty_proto::referral::v1 as referral_pb;
use loyalty_proto::rewards::v1 as rewards_pb;
use loyalty_proto::tiers::v1 as tiers_pb;

use crate::problem::{FieldError, Problem};
use crate::rfc3339;

/// The horizon of "expiring soon" on the loyalty page.
pub const EXPIRING_SOON_DAYS: i64 = 30;

fn time_out(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    ts.and_then(from_timestamp).map(rfc3339::format)
}

/// An instant of a body, held to the services' bounds ([`validate::instant`]) here already, so
/// that one out of range is the same 400 as one that does not parse.
fn time_in(field: &str, text: &str) -> Result<prost_types::Timestamp, Problem> {
    let micros = rfc3339::parse(text).ok_or_else(|| {
        Problem::malformed(
            "INVALID_BODY",
            format!("{field} is not an RFC 3339 date-time"),
            vec![FieldError::new(field, "must be an RFC 3339 date-time such as 2025-11-24T09:30:00Z")],
        )
    })?;
    validate::instant(field, micros, SystemClock.now()).map_err(|violation| {
        Problem::malformed(
            "INVALID_BODY",
            format!("{field} {}", violation.description),
            vec![FieldError::new(field, violation.description)],
        )
    })?;
    Ok(to_timestamp(micros))
}

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------- shared

#[derive(Debug, Serialize, ToSchema)]
pub struct Balance {
    /// Spendable now. Negative only after a refund took back points already spent.
    pub available: i64,
    /// Earned but still inside the return window.
    pub pending: i64,
    pub lifetime_earned: i64,
    pub spent: i64,
    pub expired: i64,
    pub reversed: i64,
    /// Points of the earliest-expiring lot(s); 0 when nothing expires.
    pub next_expiry_points: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub next_expiry_at: Option<String>,
    /// Grows with every change to the account.
    pub version: i64,
}

impl Balance {
    fn from_proto(b: Option<pb::Balance>) -> Self {
        let b = b.unwrap_or_default();
        Self {
            available: b.available,
            pending: b.pending,
            lifetime_earned: b.lifetime_earned,
            spent: b.spent,
            expired: b.expired,
            reversed: b.reversed,
            next_expiry_points: b.next_expiry_points,
            next_expiry_at: time_out(b.next_expiry_at.as_ref()),
            version: b.version,
        }
    }
}

/// How an earn's points were computed, for the shop to show its customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Breakdown {
    pub base_points: i64,
    pub tier_bonus_points: i64,
    pub campaign_bonus_points: i64,
    pub total_points: i64,
    /// The tier multiplier used, in basis points (10000 = 1x).
    pub tier_multiplier_bp: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_id: Option<String>,
    pub campaign_ids: Vec<String>,
    /// Why the order earns nothing at all, when a rule says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_points_reason: Option<NoPointsReason>,
}

/// Why an order earns no points.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoPointsReason {
    /// The amount is below the program's minimum order: no base points, no bonus, no expiry.
    BelowMinimumOrder,
}

impl Breakdown {
    fn from_proto(b: Option<pb::PointsBreakdown>) -> Self {
        let b = b.unwrap_or_default();
        let no_points_reason = match pb::NoPointsReason::try_from(b.no_points_reason) {
            Ok(pb::NoPointsReason::BelowMinimumOrder) => Some(NoPointsReason::BelowMinimumOrder),
            _ => None,
        };
        Self {
            no_points_reason,
            base_points: b.base_points,
            tier_bonus_points: b.tier_bonus_points,
            campaign_bonus_points: b.campaign_bonus_points,
            total_points: b.total_points,
            tier_multiplier_bp: b.tier_multiplier_bp,
            tier_id: non_empty(b.tier_id),
            campaign_ids: b.campaign_ids,
        }
    }
}

/// One page of a newest-first list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Entries per page, at most 200; absent or 0: 50.
    #[param(minimum = 0, maximum = 200)]
    pub page_size: Option<i32>,
    /// The `next_page_token` of the previous page; absent: the first page.
    pub page_token: Option<String>,
}

// ---------------------------------------------------------------- orders

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    pub customer_id: String,
    /// The shop's order id. One earn per order: it is what makes this call idempotent.
    pub order_id: String,
    pub amount_minor: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// When the order was placed; absent: now. The return window and expiry count from it.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// A friend's referral code the customer signed up with: recorded before the order earns, so
    /// this order can complete the referral. A refusal does not fail the order (see `referral`).
    pub referral_code: Option<String>,
}

impl OrderBody {
    /// The sign-up to record first, when the order names a referral code. Its idempotency key
    /// derives from the order id, which is what makes the whole call idempotent.
    pub fn signup_request(&self, program_id: &str) -> Option<referral_pb::RecordSignupRequest> {
        let code = self.referral_code.as_deref().map(str::trim).filter(|c| !c.is_empty())?;
        let key = format!("order:{}:signup", self.order_id);
        Some(signup_request(program_id, code.to_owned(), self.customer_id.clone(), key))
    }

    pub fn into_proto(self, program_id: &str) -> Result<pb::EarnForOrderRequest, Problem> {
        let occurred_at = self.occurred_at.as_deref().map(|t| time_in("occurred_at", t)).transpose()?;
        Ok(pb::EarnForOrderRequest {
            program_id: program_id.to_owned(),
            customer_id: self.customer_id,
            order_id: self.order_id,
            amount_minor: self.amount_minor,
            currency: self.currency,
            occurred_at,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEarned {
    /// Absent when the order earned nothing (e.g. below the minimum order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    pub points: i64,
    pub breakdown: Breakdown,
    /// The points stay pending (the return window) until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub pending_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub balance: Balance,
    /// Present when the order named a `referral_code`: whether the sign-up was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral: Option<ReferralOutcome>,
}

impl From<pb::EarnForOrderResponse> for OrderEarned {
    fn from(r: pb::EarnForOrderResponse) -> Self {
        Self {
            referral: None,
            transaction_id: non_empty(r.transaction_id),
            points: r.points,
            breakdown: Breakdown::from_proto(r.breakdown),
            pending_until: time_out(r.pending_until.as_ref()),
            expires_at: time_out(r.expires_at.as_ref()),
            balance: Balance::from_proto(r.balance),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// This refund's amount; refunds of one order add up and may not exceed it.
    pub refunded_amount_minor: i64,
}

impl RefundBody {
    pub fn into_proto(self, program_id: &str, order_id: String, idempotency_key: String) -> pb::RefundOrderRequest {
        pb::RefundOrderRequest {
            program_id: program_id.to_owned(),
            order_id,
            refunded_amount_minor: self.refunded_amount_minor,
            idempotency_key,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Refunded {
    pub transaction_id: String,
    pub points_reversed: i64,
    /// Everything refunded on this order so far.
    pub total_refunded_minor: i64,
    pub balance: Balance,
}

impl From<pb::RefundOrderResponse> for Refunded {
    fn from(r: pb::RefundOrderResponse) -> Self {
        Self {
            transaction_id: r.transaction_id,
            points_reversed: r.points_reversed,
            total_refunded_minor: r.total_refunded_minor,
            balance: Balance::from_proto(r.balance),
        }
    }
}

/// The order to price: `amount_minor` and `currency` are required; with `customer_id` the
/// customer's tier multiplier counts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    pub customer_id: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
}

impl PreviewQuery {
    pub fn into_proto(self, program_id: &str) -> pb::PreviewOrderRequest {
        pb::PreviewOrderRequest {
            program_id: program_id.to_owned(),
            customer_id: self.customer_id.unwrap_or_default(),
            amount_minor: self.amount_minor,
            currency: self.currency,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    pub points: i64,
    pub breakdown: Breakdown,
}

impl From<pb::PreviewOrderResponse> for Preview {
    fn from(r: pb::PreviewOrderResponse) -> Self {
        Self { points: r.points, breakdown: Breakdown::from_proto(r.breakdown) }
    }
}

// ---------------------------------------------------------------- customers

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityBody {
    /// `signup`, `birthday`, `review`, `social_follow` or one the shop defined in its settings.
    pub activity_type: String,
    /// What the activity was about: a product id for a review, a network for a follow.
    pub activity_ref: Option<String>,
}

impl ActivityBody {
    pub fn into_proto(self, program_id: &str, customer_id: String, key: String) -> pb::RecordActivityRequest {
        pb::RecordActivityRequest {
            program_id: program_id.to_owned(),
            customer_id,
            activity_type: self.activity_type,
            activity_ref: self.activity_ref.unwrap_or_default(),
            idempotency_key: key,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityRecorded {
    pub transaction_id: String,
    pub points: i64,
    pub breakdown: Breakdown,
    pub balance: Balance,
}

impl From<pb::RecordActivityResponse> for ActivityRecorded {
    fn from(r: pb::RecordActivityResponse) -> Self {
        Self {
            transaction_id: r.transaction_id,
            points: r.points,
            breakdown: Breakdown::from_proto(r.breakdown),
            balance: Balance::from_proto(r.balance),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// Signed, never zero: positive adds points, negative takes them away.
    pub points: i64,
    /// Why, for the ledger and the audit trail.
    pub reason: String,
    /// For a positive adjustment: when those points expire; absent: as the program's expiry
    /// policy says, unless `never_expires`.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// For a negative adjustment: allow the balance to go below zero.
    #[serde(default)]
    pub allow_debt: bool,
    /// For a positive adjustment without `expires_at`: the points never expire, whatever the policy.
    #[serde(default)]
    pub never_expires: bool,
}

impl AdjustmentBody {
    pub fn into_proto(
        self,
        program_id: &str,
        customer_id: String,
        actor: String,
        key: String,
    ) -> Result<pb::AdjustRequest, Problem> {
        let expires_at = self.expires_at.as_deref().map(|t| time_in("expires_at", t)).transpose()?;
        Ok(pb::AdjustRequest {
            program_id: program_id.to_owned(),
            customer_id,
            points: self.points,
            reason: self.reason,
            idempotency_key: key,
            expires_at,
            allow_debt: self.allow_debt,
            actor,
            never_expires: self.never_expires,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Adjusted {
    pub transaction_id: String,
    pub balance: Balance,
}

impl From<pb::AdjustResponse> for Adjusted {
    fn from(r: pb::AdjustResponse) -> Self {
        Self { transaction_id: r.transaction_id, balance: Balance::from_proto(r.balance) }
    }
}

/// One customer's loyalty standing, for a storefront widget. `points` is
/// essential (no page without it); every other part may be marked
/// `available: false` when its service is not configured or does not answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoyaltyPage {
    pub customer_id: String,
    pub points: PointsPart,
    pub tier: TierPart,
    pub referral: ReferralPart,
    pub rewards: RewardsPart,
}

/// The customer's referral code and stats.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ReferralPart {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// False when the code was disabled or the program has referrals off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<ReferralStats>,
}

impl ReferralPart {
    pub fn absent(reason: Absence) -> Self {
        Self { available: false, reason: Some(reason), ..Self::default() }
    }

    pub fn from_proto(r: referral_pb::GetReferralSummaryResponse) -> Self {
        let (code, stats) = (r.code.unwrap_or_default(), r.stats.unwrap_or_default());
        Self {
            available: true,
            reason: None,
            // None until the customer asked for one: reading the page makes nothing.
            code: non_empty(code.code),
            enabled: Some(code.enabled),
            stats: Some(stats.into()),
        }
    }
}

/// The rewards the customer can redeem right now (the full list with reasons is
/// `GET /v1/customers/{customer_id}/rewards`).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RewardsPart {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemable: Option<Vec<Reward>>,
}

impl RewardsPart {
    pub fn absent(reason: Absence) -> Self {
        Self { available: false, reason: Some(reason), ..Self::default() }
    }

    pub fn from_proto(r: rewards_pb::ListAvailableRewardsResponse) -> Self {
        let redeemable = r.rewards.into_iter().filter(|a| a.redeemable).map(|a| Reward::from_proto(a.reward)).collect();
        Self { available: true, reason: None, redeemable: Some(redeemable) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointsPart {
    #[serde(flatten)]
    pub balance: Balance,
    pub expiring_soon: ExpiringSoon,
}

impl PointsPart {
    pub fn from_proto(summary: pb::GetAccountSummaryResponse) -> Self {
        let expiring = summary.expiring.unwrap_or_default();
        Self {
            balance: Balance::from_proto(summary.balance),
            expiring_soon: ExpiringSoon {
                within_days: EXPIRING_SOON_DAYS,
                total_points: expiring.total_points,
                expiring: expiring
                    .expiring
                    .into_iter()
                    .map(|e| ExpiringPoints { points: e.points, expires_at: time_out(e.expires_at.as_ref()) })
                    .collect(),
            },
        }
    }
}

/// Active points that expire within `within_days`, grouped by instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiringSoon {
    pub within_days: i64,
    pub total_points: i64,
    pub expiring: Vec<ExpiringPoints>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiringPoints {
    pub points: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// Why a part of the loyalty page is missing.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Absence {
    /// The gateway has no address for that service.
    NotConfigured,
    /// The service did not answer (in time); the rest of the page is still right.
    Unavailable,
}

/// The customer's tier. With `available: true` and no `tier_id` the customer has no tier yet.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct TierPart {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_name: Option<String>,
    /// Earn multiplier in basis points: 10000 is 1x.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier_bp: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualifying_points: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_to_next_tier: Option<i64>,
    /// What `qualifying_points` counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualification_basis: Option<QualificationBasis>,
    /// The current tier's benefits (free shipping for a checkout to apply, and so on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benefits: Option<TierBenefits>,
    /// The current tier's free-text perks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perks: Option<Vec<String>>,
}

impl TierPart {
    pub fn absent(reason: Absence) -> Self {
        Self { available: false, reason: Some(reason), ..Self::default() }
    }

    /// A customer the tiers service does not know has no tier.
    pub fn no_tier() -> Self {
        Self { available: true, ..Self::default() }
    }

    pub fn from_proto(m: Option<tiers_pb::Membership>) -> Self {
        let Some(m) = m else { return Self::no_tier() };
        let has_tier = !m.tier_id.is_empty();
        let has_next = !m.next_tier_id.is_empty();
        Self {
            available: true,
            reason: None,
            tier_id: non_empty(m.tier_id),
            tier_name: non_empty(m.tier_name),
            multiplier_bp: has_tier.then_some(m.multiplier_bp),
            qualifying_points: Some(m.qualifying_points),
            next_tier_id: non_empty(m.next_tier_id),
            next_tier_name: non_empty(m.next_tier_name),
            points_to_next_tier: has_next.then_some(m.points_to_next_tier),
            qualification_basis: Some(QualificationBasis::from_proto(m.qualification_basis)),
            benefits: m.benefits.map(TierBenefits::from),
            perks: has_tier.then_some(m.perks),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Earn,
    Spend,
    Reverse,
    Adjust,
    Activate,
    Expire,
    /// A spend given back (an unused voucher cancelled): the points return
    /// with their own expiry and count as neither earned nor spent.
    Restore,
    Unknown,
}

/// One ledger entry of the customer's account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transaction {
    pub transaction_id: String,
    pub kind: EntryKind,
    /// Change to `available` (signed).
    pub points: i64,
    /// Change to `pending` (signed).
    pub pending_points: i64,
    pub reason: String,
    /// The earn a `reverse`, `activate` or `expire` entry refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub pending_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// Newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionPage {
    pub entries: Vec<Transaction>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<pb::ListTransactionsResponse> for TransactionPage {
    fn from(r: pb::ListTransactionsResponse) -> Self {
        let entries = r
            .entries
            .into_iter()
            .map(|e| Transaction {
                kind: match pb::EntryKind::try_from(e.kind) {
                    Ok(pb::EntryKind::Earn) => EntryKind::Earn,
                    Ok(pb::EntryKind::Spend) => EntryKind::Spend,
                    Ok(pb::EntryKind::Reverse) => EntryKind::Reverse,
                    Ok(pb::EntryKind::Adjust) => EntryKind::Adjust,
                    Ok(pb::EntryKind::Activate) => EntryKind::Activate,
                    Ok(pb::EntryKind::Expire) => EntryKind::Expire,
                    Ok(pb::EntryKind::Restore) => EntryKind::Restore,
                    Ok(pb::EntryKind::Unspecified) | Err(_) => EntryKind::Unknown,
                },
                created_at: time_out(e.created_at.as_ref()),
                pending_until: time_out(e.pending_until.as_ref()),
                expires_at: time_out(e.expires_at.as_ref()),
                related_transaction_id: non_empty(e.related_transaction_id),
                transaction_id: e.transaction_id,
                points: e.points,
                pending_points: e.pending_points,
                reason: e.reason,
            })
            .collect();
        Self { entries, next_page_token: non_empty(r.next_page_token) }
    }
}

pub fn transactions_request(program_id: &str, customer_id: String, page: PageQuery) -> pb::ListTransactionsRequest {
    pb::ListTransactionsRequest {
        program_id: program_id.to_owned(),
        customer_id,
        page_size: page.page_size.unwrap_or(0),
        page_token: page.page_token.unwrap_or_default(),
    }
}

/// The balance and what expires within [`EXPIRING_SOON_DAYS`], in one points call.
pub fn account_summary_request(program_id: &str, customer_id: &str) -> pb::GetAccountSummaryRequest {
    pb::GetAccountSummaryRequest {
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        expiring_within: Some(prost_types::Duration { seconds: EXPIRING_SOON_DAYS * 86_400, nanos: 0 }),
    }
}

pub fn membership_request(program_id: &str, customer_id: &str) -> tiers_pb::GetMembershipRequest {
    tiers_pb::GetMembershipRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

// ---------------------------------------------------------------- settings

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Toward zero: 1 point per 1.00 gives 12 points for 12.99.
    Down,
    /// Half up: 1 point per 1.00 gives 13 points for 12.50.
    Nearest,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryKind {
    Never,
    /// `count` days after the points were earned.
    DaysAfterEarn,
    /// At the end of the `count`-th month after the month of earning (UTC); 0 is that same month.
    EndOfNthMonth,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapPeriod {
    Lifetime,
    Year,
    Month,
    /// Weeks start on Monday (UTC).
    Week,
    Day,
}

/// `points` points for every `per_amount_minor` of order value, e.g. 1 per 100 cents.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EarnRate {
    pub points: i64,
    pub per_amount_minor: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiryPolicy {
    pub kind: ExpiryKind,
    /// Days or months, depending on `kind`.
    #[serde(default)]
    pub count: i32,
}

/// Points for an action such as `signup`, `birthday`, `review`, `social_follow` or a shop-defined one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityRule {
    pub activity_type: String,
    pub points: i64,
    #[serde(default = "yes")]
    pub active: bool,
    /// At most this many awards per customer per `cap_period`; 0 means no cap.
    #[serde(default)]
    pub cap_count: i32,
    /// Required when `cap_count` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_period: Option<CapPeriod>,
    /// At most one award per `activity_ref`.
    #[serde(default)]
    pub once_per_ref: bool,
}

fn yes() -> bool {
    true
}

/// A program's earning rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// ISO 4217 currency of orders; empty accepts any.
    #[serde(default)]
    pub currency: String,
    pub earn_rate: EarnRate,
    pub rounding: Rounding,
    /// Orders below this amount earn nothing.
    #[serde(default)]
    pub minimum_order_minor: i64,
    /// Return window: order points stay pending this many days (0: active at once).
    #[serde(default)]
    pub pending_days: i32,
    pub expiry: ExpiryPolicy,
    #[serde(default)]
    pub activity_rules: Vec<ActivityRule>,
    /// When set, the change is refused (409 `VERSION_MISMATCH`) unless the stored version still matches.
    pub expected_version: Option<i64>,
}

impl SettingsBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> pb::PutProgramSettingsRequest {
        let settings = pb::ProgramSettings {
            currency: self.currency,
            earn_rate: Some(pb::EarnRate {
                points: self.earn_rate.points,
                per_amount_minor: self.earn_rate.per_amount_minor,
            }),
            rounding: match self.rounding {
                Rounding::Down => pb::Rounding::Down,
                Rounding::Nearest => pb::Rounding::Nearest,
            } as i32,
            minimum_order_minor: self.minimum_order_minor,
            pending_days: self.pending_days,
            expiry: Some(pb::ExpiryPolicy {
                kind: match self.expiry.kind {
                    ExpiryKind::Never => pb::ExpiryPolicyKind::Never,
                    ExpiryKind::DaysAfterEarn => pb::ExpiryPolicyKind::DaysAfterEarn,
                    ExpiryKind::EndOfNthMonth => pb::ExpiryPolicyKind::EndOfNthMonth,
                } as i32,
                count: self.expiry.count,
            }),
            activity_rules: self
                .activity_rules
                .into_iter()
                .map(|r| pb::ActivityRule {
                    activity_type: r.activity_type,
                    points: r.points,
                    active: r.active,
                    cap_count: r.cap_count,
                    cap_period: match r.cap_period {
                        None => pb::CapPeriod::Unspecified,
                        Some(CapPeriod::Lifetime) => pb::CapPeriod::Lifetime,
                        Some(CapPeriod::Year) => pb::CapPeriod::Year,
                        Some(CapPeriod::Month) => pb::CapPeriod::Month,
                        Some(CapPeriod::Week) => pb::CapPeriod::Week,
                        Some(CapPeriod::Day) => pb::CapPeriod::Day,
                    } as i32,
                    once_per_ref: r.once_per_ref,
                })
                .collect(),
            version: 0,
        };
        pb::PutProgramSettingsRequest {
            program_id: program_id.to_owned(),
            settings: Some(settings),
            actor,
            idempotency_key: key,
            expected_version: self.expected_version,
        }
    }
}

/// A program's earning rules as stored; `version` grows with every change.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    pub currency: String,
    pub earn_rate: EarnRate,
    pub rounding: Rounding,
    pub minimum_order_minor: i64,
    pub pending_days: i32,
    pub expiry: ExpiryPolicy,
    pub activity_rules: Vec<ActivityRule>,
    pub version: i64,
}

impl Settings {
    pub fn from_proto(s: Option<pb::ProgramSettings>) -> Self {
        let s = s.unwrap_or_default();
        let rate = s.earn_rate.unwrap_or_default();
        let expiry = s.expiry.unwrap_or_default();
        Self {
            currency: s.currency,
            earn_rate: EarnRate { points: rate.points, per_amount_minor: rate.per_amount_minor },
            rounding: match pb::Rounding::try_from(s.rounding) {
                Ok(pb::Rounding::Nearest) => Rounding::Nearest,
                _ => Rounding::Down,
            },
            minimum_order_minor: s.minimum_order_minor,
            pending_days: s.pending_days,
            expiry: ExpiryPolicy {
                kind: match pb::ExpiryPolicyKind::try_from(expiry.kind) {
                    Ok(pb::ExpiryPolicyKind::DaysAfterEarn) => ExpiryKind::DaysAfterEarn,
                    Ok(pb::ExpiryPolicyKind::EndOfNthMonth) => ExpiryKind::EndOfNthMonth,
                    _ => ExpiryKind::Never,
                },
                count: expiry.count,
            },
            activity_rules: s
                .activity_rules
                .into_iter()
                .map(|r| ActivityRule {
                    cap_period: Some(match pb::CapPeriod::try_from(r.cap_period) {
                        Ok(pb::CapPeriod::Year) => CapPeriod::Year,
                        Ok(pb::CapPeriod::Month) => CapPeriod::Month,
                        Ok(pb::CapPeriod::Week) => CapPeriod::Week,
                        Ok(pb::CapPeriod::Day) => CapPeriod::Day,
                        _ => CapPeriod::Lifetime,
                    }),
                    activity_type: r.activity_type,
                    points: r.points,
                    active: r.active,
                    cap_count: r.cap_count,
                    once_per_ref: r.once_per_ref,
                })
                .collect(),
            version: s.version,
        }
    }
}

pub fn settings_request(program_id: &str) -> pb::GetProgramSettingsRequest {
    pb::GetProgramSettingsRequest { program_id: program_id.to_owned() }
}

// ---------------------------------------------------------------- campaigns

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    /// Multiplies the base points; among overlapping campaigns the highest wins.
    Multiplier,
    /// Adds fixed points; overlapping bonuses add up.
    Bonus,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    pub name: String,
    pub kind: CampaignKind,
    /// For `multiplier`, in basis points: 20000 is 2x.
    pub multiplier_bp: Option<i32>,
    /// For `bonus`.
    pub bonus_points: Option<i64>,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    /// Only members of these tiers; empty: everyone.
    #[serde(default)]
    pub tier_ids: Vec<String>,
    /// `order` and/or activity types it applies to; empty: every earn.
    #[serde(default)]
    pub applies_to: Vec<String>,
}

impl CampaignBody {
    pub fn into_proto(self, campaign_id: String) -> Result<pb::Campaign, Problem> {
        Ok(pb::Campaign {
            starts_at: Some(time_in("starts_at", &self.starts_at)?),
            ends_at: Some(time_in("ends_at", &self.ends_at)?),
            campaign_id,
            name: self.name,
            kind: match self.kind {
                CampaignKind::Multiplier => pb::CampaignKind::Multiplier,
                CampaignKind::Bonus => pb::CampaignKind::Bonus,
            } as i32,
            multiplier_bp: self.multiplier_bp.unwrap_or(0),
            bonus_points: self.bonus_points.unwrap_or(0),
            tier_ids: self.tier_ids,
            applies_to: self.applies_to,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Campaign {
    pub campaign_id: String,
    pub name: String,
    pub kind: CampaignKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier_bp: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bonus_points: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    pub tier_ids: Vec<String>,
    pub applies_to: Vec<String>,
}

impl Campaign {
    pub fn from_proto(c: Option<pb::Campaign>) -> Self {
        let c = c.unwrap_or_default();
        let kind = match pb::CampaignKind::try_from(c.kind) {
            Ok(pb::CampaignKind::Multiplier) => CampaignKind::Multiplier,
            _ => CampaignKind::Bonus,
        };
        Self {
            campaign_id: c.campaign_id,
            name: c.name,
            kind,
            multiplier_bp: matches!(kind, CampaignKind::Multiplier).then_some(c.multiplier_bp),
            bonus_points: matches!(kind, CampaignKind::Bonus).then_some(c.bonus_points),
            starts_at: time_out(c.starts_at.as_ref()),
            ends_at: time_out(c.ends_at.as_ref()),
            tier_ids: c.tier_ids,
            applies_to: c.applies_to,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<Campaign>,
}

impl From<pb::ListCampaignsResponse> for CampaignList {
    fn from(r: pb::ListCampaignsResponse) -> Self {
        Self { campaigns: r.campaigns.into_iter().map(|c| Campaign::from_proto(Some(c))).collect() }
    }
}

/// `include_ended=true` lists ended campaigns too.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignQuery {
    pub include_ended: Option<bool>,
}

pub fn campaigns_request(program_id: &str, query: CampaignQuery) -> pb::ListCampaignsRequest {
    pb::ListCampaignsRequest { program_id: program_id.to_owned(), include_ended: query.include_ended.unwrap_or(false) }
}

pub fn create_campaign_request(
    program_id: &str,
    campaign: pb::Campaign,
    actor: String,
    key: String,
) -> pb::CreateCampaignRequest {
    pb::CreateCampaignRequest {
        program_id: program_id.to_owned(),
        campaign: Some(campaign),
        actor,
        idempotency_key: key,
    }
}

pub fn update_campaign_request(
    program_id: &str,
    campaign: pb::Campaign,
    actor: String,
    key: String,
) -> pb::UpdateCampaignRequest {
    pb::UpdateCampaignRequest {
        program_id: program_id.to_owned(),
        campaign: Some(campaign),
        actor,
        idempotency_key: key,
    }
}

pub fn end_campaign_request(
    program_id: &str,
    campaign_id: String,
    actor: String,
    key: String,
) -> pb::EndCampaignRequest {
    pb::EndCampaignRequest { program_id: program_id.to_owned(), campaign_id, actor, idempotency_key: key }
}

// ---------------------------------------------------------------- audit

/// One change to settings or campaigns: who, when, old and new.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub audit_id: i64,
    /// `api-key:<key id>` for changes made through the gateway.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub changed_at: Option<String>,
    /// `settings` or `campaign`.
    pub entity: String,
    pub entity_id: String,
    /// The settings or the campaign before the change, as `GET` answers them;
    /// absent when the change created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_value: Option<AuditValue>,
    /// The settings or the campaign after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_value: Option<AuditValue>,
}

/// An audited value, in the shape its own routes use.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AuditValue {
    Settings(Settings),
    Campaign(Campaign),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<pb::ListAuditEntriesResponse> for AuditPage {
    fn from(r: pb::ListAuditEntriesResponse) -> Self {
        let entries = r
            .entries
            .into_iter()
            .map(|e| AuditEntry {
                audit_id: e.audit_id,
                actor: e.actor,
                changed_at: time_out(e.changed_at.as_ref()),
                entity: e.entity,
                entity_id: e.entity_id,
                old_value: e.before.map(|before| match before {
                    pb::audit_entry::Before::SettingsBefore(s) => AuditValue::Settings(Settings::from_proto(Some(s))),
                    pb::audit_entry::Before::CampaignBefore(c) => AuditValue::Campaign(Campaign::from_proto(Some(c))),
                }),
                new_value: e.after.map(|after| match after {
                    pb::audit_entry::After::SettingsAfter(s) => AuditValue::Settings(Settings::from_proto(Some(s))),
                    pb::audit_entry::After::CampaignAfter(c) => AuditValue::Campaign(Campaign::from_proto(Some(c))),
                }),
            })
            .collect();
        Self { entries, next_page_token: non_empty(r.next_page_token) }
    }
}

pub fn audit_request(program_id: &str, page: PageQuery) -> pb::ListAuditEntriesRequest {
    pb::ListAuditEntriesRequest {
        program_id: program_id.to_owned(),
        page_size: page.page_size.unwrap_or(0),
        page_token: page.page_token.unwrap_or_default(),
    }
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (alive) or `ready` (can serve).
    pub status: String,
}

// ---------------------------------------------------------------- tiers

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Points earned since January 1st (UTC).
    CalendarYear,
    /// Points earned in the last `days` days.
    RollingDays,
    Lifetime,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DowngradeKind {
    Immediate,
    /// Down only after `grace_days` below the threshold.
    GraceDays,
    /// A tier reached in one calendar year is kept through the next (needs the `calendar_year` window).
    EndOfNextPeriod,
}

/// What moves a member up the ladder. Thresholds are points, or minor units for `spend`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QualificationBasis {
    /// Every earned point: orders, activities, referral and API earns.
    #[default]
    AllEarned,
    /// Orders' base points, without tier or campaign bonuses.
    OrderPointsBase,
    /// Orders' points with their tier and campaign bonuses.
    OrderPointsAll,
    /// Order amounts in minor units, refunds subtracted.
    Spend,
}

impl QualificationBasis {
    fn into_proto(self) -> tiers_pb::QualificationBasis {
        match self {
            Self::AllEarned => tiers_pb::QualificationBasis::AllEarned,
            Self::OrderPointsBase => tiers_pb::QualificationBasis::OrderPointsBase,
            Self::OrderPointsAll => tiers_pb::QualificationBasis::OrderPointsAll,
            Self::Spend => tiers_pb::QualificationBasis::Spend,
        }
    }

    fn from_proto(basis: i32) -> Self {
        match tiers_pb::QualificationBasis::try_from(basis) {
            Ok(tiers_pb::QualificationBasis::OrderPointsBase) => Self::OrderPointsBase,
            Ok(tiers_pb::QualificationBasis::OrderPointsAll) => Self::OrderPointsAll,
            Ok(tiers_pb::QualificationBasis::Spend) => Self::Spend,
            _ => Self::AllEarned,
        }
    }
}

/// One rung of the ladder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Stable id, e.g. `gold`.
    pub tier_id: String,
    pub name: String,
    /// Qualifying points needed in the window; ignored for hidden tiers.
    #[serde(default)]
    pub threshold: i64,
    /// Earn multiplier in basis points: 10000 is 1x, 15000 is 1.5x.
    pub multiplier_bp: i32,
    /// Free text shown to members.
    #[serde(default)]
    pub perks: Vec<String>,
    /// Only assigned by hand, never reached by points.
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub benefits: TierBenefits,
}

/// A tier's benefits in machine-readable form, for a checkout or a campaign to act on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBenefits {
    #[serde(default)]
    pub free_shipping: bool,
    /// Members see sales and launches this many hours early; 0: no early access.
    #[serde(default)]
    pub early_access_hours: i32,
    /// Birthday points multiplied by this, in basis points (20000 doubles them); 0: none.
    #[serde(default)]
    pub birthday_multiplier_bp: i32,
    /// Shop-defined flags, e.g. `free_returns`.
    #[serde(default)]
    pub flags: Vec<String>,
}

impl From<tiers_pb::TierBenefits> for TierBenefits {
    fn from(b: tiers_pb::TierBenefits) -> Self {
        Self {
            free_shipping: b.free_shipping,
            early_access_hours: b.early_access_hours,
            birthday_multiplier_bp: b.birthday_multiplier_bp,
            flags: b.flags,
        }
    }
}

impl From<TierBenefits> for tiers_pb::TierBenefits {
    fn from(b: TierBenefits) -> Self {
        Self {
            free_shipping: b.free_shipping,
            early_access_hours: b.early_access_hours,
            birthday_multiplier_bp: b.birthday_multiplier_bp,
            flags: b.flags,
        }
    }
}

/// Which earned points qualify.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierWindow {
    pub kind: WindowKind,
    /// For `rolling_days`.
    #[serde(default)]
    pub days: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DowngradePolicy {
    pub kind: DowngradeKind,
    /// For `grace_days`.
    #[serde(default)]
    pub grace_days: i32,
}

/// The program's tier ladder, lowest tier first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LadderBody {
    /// Lowest first; thresholds strictly increase among visible tiers.
    pub tiers: Vec<Tier>,
    pub window: TierWindow,
    pub downgrade: DowngradePolicy,
    /// Absent: `all_earned`. Changing it re-evaluates every member from the stored history.
    #[serde(default)]
    pub qualification_basis: QualificationBasis,
}

impl LadderBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> tiers_pb::PutLadderRequest {
        let ladder = tiers_pb::Ladder {
            tiers: self
                .tiers
                .into_iter()
                .map(|t| tiers_pb::Tier {
                    tier_id: t.tier_id,
                    name: t.name,
                    threshold: t.threshold,
                    multiplier_bp: t.multiplier_bp,
                    perks: t.perks,
                    hidden: t.hidden,
                    benefits: Some(t.benefits.into()),
                })
                .collect(),
            window: Some(tiers_pb::Window {
                kind: match self.window.kind {
                    WindowKind::CalendarYear => tiers_pb::WindowKind::CalendarYear,
                    WindowKind::RollingDays => tiers_pb::WindowKind::RollingDays,
                    WindowKind::Lifetime => tiers_pb::WindowKind::Lifetime,
                } as i32,
                days: self.window.days,
            }),
            downgrade: Some(tiers_pb::DowngradePolicy {
                kind: match self.downgrade.kind {
                    DowngradeKind::Immediate => tiers_pb::DowngradeKind::Immediate,
                    DowngradeKind::GraceDays => tiers_pb::DowngradeKind::GraceDays,
                    DowngradeKind::EndOfNextPeriod => tiers_pb::DowngradeKind::EndOfNextPeriod,
                } as i32,
                grace_days: self.downgrade.grace_days,
            }),
            version: 0,
            qualification_basis: self.qualification_basis.into_proto() as i32,
        };
        tiers_pb::PutLadderRequest {
            program_id: program_id.to_owned(),
            ladder: Some(ladder),
            actor,
            idempotency_key: key,
        }
    }
}

/// The ladder as stored; `version` grows with every change (0: never set, no tiers).
#[derive(Debug, Serialize, ToSchema)]
pub struct Ladder {
    pub tiers: Vec<Tier>,
    pub window: TierWindow,
    pub downgrade: DowngradePolicy,
    pub version: i64,
    pub qualification_basis: QualificationBasis,
}

impl Ladder {
    pub fn from_proto(l: Option<tiers_pb::Ladder>) -> Self {
        let l = l.unwrap_or_default();
        let window = l.window.unwrap_or_default();
        let downgrade = l.downgrade.unwrap_or_default();
        Self {
            tiers: l
                .tiers
                .into_iter()
                .map(|t| Tier {
                    tier_id: t.tier_id,
                    name: t.name,
                    threshold: t.threshold,
                    multiplier_bp: t.multiplier_bp,
                    perks: t.perks,
                    hidden: t.hidden,
                    benefits: t.benefits.unwrap_or_default().into(),
                })
                .collect(),
            window: TierWindow {
                kind: match tiers_pb::WindowKind::try_from(window.kind) {
                    Ok(tiers_pb::WindowKind::CalendarYear) => WindowKind::CalendarYear,
                    Ok(tiers_pb::WindowKind::RollingDays) => WindowKind::RollingDays,
                    _ => WindowKind::Lifetime,
                },
                days: window.days,
            },
            downgrade: DowngradePolicy {
                kind: match tiers_pb::DowngradeKind::try_from(downgrade.kind) {
                    Ok(tiers_pb::DowngradeKind::GraceDays) => DowngradeKind::GraceDays,
                    Ok(tiers_pb::DowngradeKind::EndOfNextPeriod) => DowngradeKind::EndOfNextPeriod,
                    _ => DowngradeKind::Immediate,
                },
                grace_days: downgrade.grace_days,
            },
            version: l.version,
            qualification_basis: QualificationBasis::from_proto(l.qualification_basis),
        }
    }
}

pub fn ladder_request(program_id: &str) -> tiers_pb::GetLadderRequest {
    tiers_pb::GetLadderRequest { program_id: program_id.to_owned() }
}

/// A customer's tier and the progress to the next one. Without `tier_id` the customer has no tier yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    pub customer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_name: Option<String>,
    /// Earn multiplier in basis points: 10000 is 1x.
    pub multiplier_bp: i32,
    /// Qualifying points in the current window (minor units under the `spend` basis).
    pub qualifying_points: i64,
    /// What `qualifying_points` and `points_to_next_tier` count.
    pub qualification_basis: QualificationBasis,
    /// The current tier's benefits; absent without a tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benefits: Option<TierBenefits>,
    /// The current tier's free-text perks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub perks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub window_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_name: Option<String>,
    /// Qualifying points still needed for the next tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_to_next_tier: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub next_review_at: Option<String>,
    /// The tier was assigned by hand.
    pub assigned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub assignment_ends_at: Option<String>,
    /// Set while below the threshold under a grace policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub downgrade_at: Option<String>,
}

impl Membership {
    pub fn from_proto(customer_id: String, m: Option<tiers_pb::Membership>) -> Self {
        let m = m.unwrap_or_default();
        let has_next = !m.next_tier_id.is_empty();
        Self {
            customer_id,
            tier_id: non_empty(m.tier_id),
            tier_name: non_empty(m.tier_name),
            multiplier_bp: m.multiplier_bp,
            qualifying_points: m.qualifying_points,
            qualification_basis: QualificationBasis::from_proto(m.qualification_basis),
            benefits: m.benefits.map(TierBenefits::from),
            perks: m.perks,
            window_start: time_out(m.window_start.as_ref()),
            next_tier_id: non_empty(m.next_tier_id),
            next_tier_name: non_empty(m.next_tier_name),
            points_to_next_tier: has_next.then_some(m.points_to_next_tier),
            since: time_out(m.since.as_ref()),
            next_review_at: time_out(m.next_review_at.as_ref()),
            assigned: m.assigned,
            assignment_ends_at: time_out(m.assignment_ends_at.as_ref()),
            downgrade_at: time_out(m.downgrade_at.as_ref()),
        }
    }
}

/// Puts the customer in a tier by hand (hidden tiers included); it wins over the ladder while it lasts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    pub tier_id: String,
    /// Absent: until removed.
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
}

impl AssignmentBody {
    pub fn into_proto(
        self,
        program_id: &str,
        customer_id: String,
        actor: String,
        key: String,
    ) -> Result<tiers_pb::AssignTierRequest, Problem> {
        let ends_at = self.ends_at.as_deref().map(|t| time_in("ends_at", t)).transpose()?;
        Ok(tiers_pb::AssignTierRequest {
            program_id: program_id.to_owned(),
            customer_id,
            tier_id: self.tier_id,
            ends_at,
            actor,
            idempotency_key: key,
        })
    }
}

pub fn remove_assignment_request(
    program_id: &str,
    customer_id: String,
    actor: String,
    key: String,
) -> tiers_pb::RemoveAssignmentRequest {
    tiers_pb::RemoveAssignmentRequest { program_id: program_id.to_owned(), customer_id, actor, idempotency_key: key }
}

// ---------------------------------------------------------------- rewards

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// `amount_minor` off, in `currency`.
    FixedDiscount,
    /// `percent_bp` off (1500 = 15%).
    PercentDiscount,
    FreeShipping,
    /// The product `sku` for free.
    FreeProduct,
    Custom,
}

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
}

/// A voucher's life when a reward does not say: about a season.
fn default_voucher_validity_days() -> i32 {
    90
}

/// The referral cap's period when the settings do not say.
fn default_cap_period_days() -> i32 {
    30
}

impl RewardBody {
    pub fn into_proto(self, reward_id: String) -> Result<rewards_pb::Reward, Problem> {
        let starts_at = self.starts_at.as_deref().map(|t| time_in("starts_at", t)).transpose()?;
        let ends_at = self.ends_at.as_deref().map(|t| time_in("ends_at", t)).transpose()?;
        Ok(rewards_pb::Reward {
            reward_id,
            name: self.name,
            description: self.description,
            kind: match self.kind {
                RewardKind::FixedDiscount => rewards_pb::RewardKind::FixedDiscount,
                RewardKind::PercentDiscount => rewards_pb::RewardKind::PercentDiscount,
                RewardKind::FreeShipping => rewards_pb::RewardKind::FreeShipping,
                RewardKind::FreeProduct => rewards_pb::RewardKind::FreeProduct,
                RewardKind::Custom => rewards_pb::RewardKind::Custom,
            } as i32,
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
}

impl Reward {
    pub fn from_proto(r: Option<rewards_pb::Reward>) -> Self {
        let r = r.unwrap_or_default();
        let kind = match rewards_pb::RewardKind::try_from(r.kind) {
            Ok(rewards_pb::RewardKind::FixedDiscount) => RewardKind::FixedDiscount,
            Ok(rewards_pb::RewardKind::PercentDiscount) => RewardKind::PercentDiscount,
            Ok(rewards_pb::RewardKind::FreeShipping) => RewardKind::FreeShipping,
            Ok(rewards_pb::RewardKind::FreeProduct) => RewardKind::FreeProduct,
            _ => RewardKind::Custom,
        };
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
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RewardList {
    pub rewards: Vec<Reward>,
}

impl From<rewards_pb::ListRewardsResponse> for RewardList {
    fn from(r: rewards_pb::ListRewardsResponse) -> Self {
        Self { rewards: r.rewards.into_iter().map(|r| Reward::from_proto(Some(r))).collect() }
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
    actor: String,
    key: String,
) -> rewards_pb::UpdateRewardRequest {
    rewards_pb::UpdateRewardRequest {
        program_id: program_id.to_owned(),
        reward: Some(reward),
        actor,
        idempotency_key: key,
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

impl AvailableReward {
    fn from_proto(a: rewards_pb::AvailableReward) -> Self {
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
            reward: Reward::from_proto(a.reward),
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
            rewards: r.rewards.into_iter().map(AvailableReward::from_proto).collect(),
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

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedemptionStatus {
    /// Points being spent; settled shortly.
    Pending,
    /// The voucher is issued and usable.
    Active,
    Used,
    Cancelled,
    Expired,
    /// Did not go through; any points spent were given back.
    Failed,
    Unknown,
}

/// A redemption and its voucher.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redemption {
    pub redemption_id: String,
    pub customer_id: String,
    pub reward_id: String,
    pub reward_name: String,
    pub points_spent: i64,
    pub status: RedemptionStatus,
    /// Set once the redemption is `active`, e.g. `ABCD-EFGH-JKLM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub voucher_expires_at: Option<String>,
    /// The order the voucher was used for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumed_order_id: Option<String>,
}

impl Redemption {
    pub fn from_proto(r: Option<rewards_pb::Redemption>) -> Self {
        let r = r.unwrap_or_default();
        Self {
            status: match rewards_pb::RedemptionStatus::try_from(r.status) {
                Ok(rewards_pb::RedemptionStatus::Pending) => RedemptionStatus::Pending,
                Ok(rewards_pb::RedemptionStatus::Active) => RedemptionStatus::Active,
                Ok(rewards_pb::RedemptionStatus::Used) => RedemptionStatus::Used,
                Ok(rewards_pb::RedemptionStatus::Cancelled) => RedemptionStatus::Cancelled,
                Ok(rewards_pb::RedemptionStatus::Expired) => RedemptionStatus::Expired,
                Ok(rewards_pb::RedemptionStatus::Failed) => RedemptionStatus::Failed,
                Ok(rewards_pb::RedemptionStatus::Unspecified) | Err(_) => RedemptionStatus::Unknown,
            },
            redemption_id: r.redemption_id,
            customer_id: r.customer_id,
            reward_id: r.reward_id,
            reward_name: r.reward_name,
            points_spent: r.points_spent,
            voucher_code: non_empty(r.voucher_code),
            created_at: time_out(r.created_at.as_ref()),
            voucher_expires_at: time_out(r.voucher_expires_at.as_ref()),
            consumed_order_id: non_empty(r.consumed_order_id),
        }
    }
}

/// Newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedemptionPage {
    pub redemptions: Vec<Redemption>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<rewards_pb::ListRedemptionsResponse> for RedemptionPage {
    fn from(r: rewards_pb::ListRedemptionsResponse) -> Self {
        Self {
            redemptions: r.redemptions.into_iter().map(|r| Redemption::from_proto(Some(r))).collect(),
            next_page_token: non_empty(r.next_page_token),
        }
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
    key: String,
) -> rewards_pb::CancelRedemptionRequest {
    rewards_pb::CancelRedemptionRequest { program_id: program_id.to_owned(), redemption_id, idempotency_key: key }
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

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoucherState {
    /// Usable now.
    Valid,
    /// No such voucher (for this customer, when one was named).
    Unknown,
    Expired,
    Used,
    Cancelled,
}

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
        let state = match rewards_pb::VoucherState::try_from(r.state) {
            Ok(rewards_pb::VoucherState::Valid) => VoucherState::Valid,
            Ok(rewards_pb::VoucherState::Expired) => VoucherState::Expired,
            Ok(rewards_pb::VoucherState::Used) => VoucherState::Used,
            Ok(rewards_pb::VoucherState::Cancelled) => VoucherState::Cancelled,
            _ => VoucherState::Unknown,
        };
        let known = !matches!(state, VoucherState::Unknown);
        Self {
            state,
            redemption: r.redemption.filter(|_| known).map(|x| Redemption::from_proto(Some(x))),
            reward: r.reward.filter(|_| known).map(|x| Reward::from_proto(Some(x))),
        }
    }
}

/// Uses a voucher for an order, exactly once; the same order again answers as the first time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeBody {
    pub order_id: String,
}

impl ConsumeBody {
    pub fn into_proto(self, program_id: &str, code: String) -> rewards_pb::ConsumeVoucherRequest {
        rewards_pb::ConsumeVoucherRequest { program_id: program_id.to_owned(), code, order_id: self.order_id }
    }
}

// ---------------------------------------------------------------- referrals

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ReferralStats {
    /// Friends who signed up with the code.
    pub invited: i64,
    pub pending: i64,
    pub completed: i64,
    pub reversed: i64,
    pub expired: i64,
    /// Referrer rewards of completed referrals, not reversed.
    pub points_earned: i64,
}

impl From<referral_pb::GetReferralStatsResponse> for ReferralStats {
    fn from(s: referral_pb::GetReferralStatsResponse) -> Self {
        Self {
            invited: s.invited,
            pending: s.pending,
            completed: s.completed,
            reversed: s.reversed,
            expired: s.expired,
            points_earned: s.points_earned,
        }
    }
}

/// The customer's own referral code, and how their referrals went.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerReferral {
    pub customer_id: String,
    /// Stable once issued; absent until `POST /v1/customers/{customer_id}/referral` made it
    /// (reading makes nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// False when there is no code yet, the code was disabled, or the program has referrals off.
    pub enabled: bool,
    pub stats: ReferralStats,
}

impl CustomerReferral {
    pub fn from_proto(customer_id: String, r: referral_pb::GetReferralSummaryResponse) -> Self {
        let (code, stats) = (r.code.unwrap_or_default(), r.stats.unwrap_or_default());
        Self { customer_id, code: non_empty(code.code), enabled: code.enabled, stats: stats.into() }
    }
}

pub fn code_request(program_id: &str, customer_id: &str) -> referral_pb::GetOrCreateCodeRequest {
    referral_pb::GetOrCreateCodeRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

/// The code and its stats, in one referral call.
pub fn referral_summary_request(program_id: &str, customer_id: &str) -> referral_pb::GetReferralSummaryRequest {
    referral_pb::GetReferralSummaryRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

/// What a code is worth, for a storefront ("Anna invited you: 500 points").
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeInfo {
    pub code: String,
    /// False for unknown or disabled codes, or when referrals are off.
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer_customer_id: Option<String>,
    /// The friend's welcome bonus.
    pub referee_points: i64,
    /// The friend's first order must reach this amount to qualify.
    pub minimum_order_minor: i64,
}

impl CodeInfo {
    pub fn from_proto(code: String, r: referral_pb::ResolveCodeResponse) -> Self {
        Self {
            code,
            valid: r.valid,
            referrer_customer_id: non_empty(r.referrer_customer_id).filter(|_| r.valid),
            referee_points: r.referee_points,
            minimum_order_minor: r.minimum_order_minor,
        }
    }
}

pub fn resolve_code_request(program_id: &str, code: String) -> referral_pb::ResolveCodeRequest {
    referral_pb::ResolveCodeRequest { program_id: program_id.to_owned(), code }
}

/// A friend signed up with a code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    pub code: String,
    /// The friend's customer id.
    pub customer_id: String,
}

impl SignupBody {
    pub fn into_proto(self, program_id: &str, key: String) -> referral_pb::RecordSignupRequest {
        signup_request(program_id, self.code, self.customer_id, key)
    }
}

pub fn signup_request(
    program_id: &str,
    code: String,
    referee_customer_id: String,
    key: String,
) -> referral_pb::RecordSignupRequest {
    referral_pb::RecordSignupRequest {
        program_id: program_id.to_owned(),
        code,
        referee_customer_id,
        idempotency_key: key,
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    /// Signed up, no qualifying order yet.
    Pending,
    /// Qualifying order placed; both sides rewarded.
    Completed,
    /// The qualifying order was refunded within the clawback window; rewards taken back.
    Reversed,
    /// No qualifying order within the attribution window.
    Expired,
    Unknown,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Referral {
    pub referral_id: String,
    pub code: String,
    pub referrer_customer_id: String,
    pub referee_customer_id: String,
    pub status: ReferralStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub reversed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualifying_order_id: Option<String>,
}

impl Referral {
    pub fn from_proto(r: Option<referral_pb::Referral>) -> Self {
        let r = r.unwrap_or_default();
        Self {
            status: match referral_pb::ReferralStatus::try_from(r.status) {
                Ok(referral_pb::ReferralStatus::Pending) => ReferralStatus::Pending,
                Ok(referral_pb::ReferralStatus::Completed) => ReferralStatus::Completed,
                Ok(referral_pb::ReferralStatus::Reversed) => ReferralStatus::Reversed,
                Ok(referral_pb::ReferralStatus::Expired) => ReferralStatus::Expired,
                Ok(referral_pb::ReferralStatus::Unspecified) | Err(_) => ReferralStatus::Unknown,
            },
            referral_id: r.referral_id,
            code: r.code,
            referrer_customer_id: r.referrer_customer_id,
            referee_customer_id: r.referee_customer_id,
            created_at: time_out(r.created_at.as_ref()),
            completed_at: time_out(r.completed_at.as_ref()),
            reversed_at: time_out(r.reversed_at.as_ref()),
            qualifying_order_id: non_empty(r.qualifying_order_id),
        }
    }
}

/// What became of an order's `referral_code`. The order earns its points either way.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralOutcome {
    pub recorded: bool,
    /// Why not, when not recorded: the referral service's reason (`ALREADY_REFERRED`, `UNKNOWN_CODE`,
    /// `SELF_REFERRAL`, `EXISTING_CUSTOMER`, `REFERRALS_DISABLED`, ...), or `BACKEND_NOT_CONFIGURED`
    /// / `UNAVAILABLE` when the service could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pending referral, when recorded; it completes on its own once the order counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral: Option<Referral>,
}

impl ReferralOutcome {
    /// The sign-up's answer; a refusal or an outage is reported, never raised.
    pub fn from_signup(answer: Result<referral_pb::RecordSignupResponse, Problem>) -> Self {
        match answer {
            Ok(r) => Self { recorded: true, reason: None, referral: Some(Referral::from_proto(r.referral)) },
            Err(problem) => {
                if problem.status().is_server_error() {
                    tracing::warn!(code = %problem.code, "an order's referral sign-up was not recorded");
                }
                Self { recorded: false, reason: Some(problem.code.clone()), referral: None }
            }
        }
    }
}

/// A referral program's rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralSettingsBody {
    /// Off until a shop turns it on.
    pub enabled: bool,
    pub referrer_points: i64,
    /// The friend's welcome bonus.
    pub referee_points: i64,
    /// The friend's first order must reach this amount to qualify.
    #[serde(default)]
    pub minimum_order_minor: i64,
    /// At most `cap_count` referrals per referrer per `cap_period_days`; 0 (the default): no cap.
    #[serde(default)]
    pub cap_count: i32,
    /// The cap's period; absent: 30 days.
    #[serde(default = "default_cap_period_days")]
    #[schema(default = 30)]
    pub cap_period_days: i32,
    /// Days from sign-up to the qualifying order.
    pub attribution_window_days: i32,
    /// Days after completion in which a refund of the qualifying order claws back.
    pub clawback_window_days: i32,
}

impl ReferralSettingsBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> referral_pb::PutReferralSettingsRequest {
        referral_pb::PutReferralSettingsRequest {
            program_id: program_id.to_owned(),
            settings: Some(referral_pb::ReferralSettings {
                enabled: self.enabled,
                referrer_points: self.referrer_points,
                referee_points: self.referee_points,
                minimum_order_minor: self.minimum_order_minor,
                cap_count: self.cap_count,
                cap_period_days: self.cap_period_days,
                attribution_window_days: self.attribution_window_days,
                clawback_window_days: self.clawback_window_days,
                version: 0,
            }),
            actor,
            idempotency_key: key,
        }
    }
}

/// The referral rules as stored; `version` grows with every change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralSettings {
    pub enabled: bool,
    pub referrer_points: i64,
    pub referee_points: i64,
    pub minimum_order_minor: i64,
    pub cap_count: i32,
    pub cap_period_days: i32,
    pub attribution_window_days: i32,
    pub clawback_window_days: i32,
    pub version: i64,
}

impl ReferralSettings {
    pub fn from_proto(s: Option<referral_pb::ReferralSettings>) -> Self {
        let s = s.unwrap_or_default();
        Self {
            enabled: s.enabled,
            referrer_points: s.referrer_points,
            referee_points: s.referee_points,
            minimum_order_minor: s.minimum_order_minor,
            cap_count: s.cap_count,
            cap_period_days: s.cap_period_days,
            attribution_window_days: s.attribution_window_days,
            clawback_window_days: s.clawback_window_days,
            version: s.version,
        }
    }
}

pub fn referral_settings_request(program_id: &str) -> referral_pb::GetReferralSettingsRequest {
    referral_pb::GetReferralSettingsRequest { program_id: program_id.to_owned() }
}
