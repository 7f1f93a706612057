//! The JSON bodies of the API and their conversion to and from the services'
//! protobuf messages: the only file that builds or reads prost types. Points
//! and money are integers (money in minor units with an ISO 4217 currency);
//! instants are RFC 3339 text in UTC.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use loyalty_common::clock::{from_timestamp, to_timestamp};
use loyalty_proto::points::v1 as pb;
use loyalty_proto::tiers::v1 as tiers_pb;

use crate::problem::{FieldError, Problem};
use crate::rfc3339;

/// The horizon of "expiring soon" on the loyalty page.
pub const EXPIRING_SOON_DAYS: i64 = 30;

fn time_out(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    ts.and_then(from_timestamp).map(rfc3339::format)
}

fn time_in(field: &str, text: &str) -> Result<prost_types::Timestamp, Problem> {
    rfc3339::parse(text).map(to_timestamp).ok_or_else(|| {
        Problem::malformed(
            "INVALID_BODY",
            format!("{field} is not an RFC 3339 date-time"),
            vec![FieldError::new(field, "must be an RFC 3339 date-time such as 2025-11-24T09:30:00Z")],
        )
    })
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
}

impl Breakdown {
    fn from_proto(b: Option<pb::PointsBreakdown>) -> Self {
        let b = b.unwrap_or_default();
        Self {
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
}

impl OrderBody {
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
}

impl From<pb::EarnForOrderResponse> for OrderEarned {
    fn from(r: pb::EarnForOrderResponse) -> Self {
        Self {
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
    /// For a positive adjustment: when those points expire (never when absent).
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// For a negative adjustment: allow the balance to go below zero.
    #[serde(default)]
    pub allow_debt: bool,
}

impl AdjustmentBody {
    pub fn into_proto(self, program_id: &str, customer_id: String, key: String) -> Result<pb::AdjustRequest, Problem> {
        let expires_at = self.expires_at.as_deref().map(|t| time_in("expires_at", t)).transpose()?;
        Ok(pb::AdjustRequest {
            program_id: program_id.to_owned(),
            customer_id,
            points: self.points,
            reason: self.reason,
            idempotency_key: key,
            expires_at,
            allow_debt: self.allow_debt,
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
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointsPart {
    #[serde(flatten)]
    pub balance: Balance,
    pub expiring_soon: ExpiringSoon,
}

impl PointsPart {
    pub fn from_proto(balance: Option<pb::Balance>, expiring: pb::GetExpiringPointsResponse) -> Self {
        Self {
            balance: Balance::from_proto(balance),
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

pub fn balance_request(program_id: &str, customer_id: &str) -> pb::GetBalanceRequest {
    pb::GetBalanceRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

pub fn expiring_request(program_id: &str, customer_id: &str) -> pb::GetExpiringPointsRequest {
    pb::GetExpiringPointsRequest {
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        within: Some(prost_types::Duration { seconds: EXPIRING_SOON_DAYS * 86_400, nanos: 0 }),
    }
}

pub fn membership_request(program_id: &str, customer_id: &str) -> tiers_pb::GetMembershipRequest {
    tiers_pb::GetMembershipRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

/// An account that never had an entry has version 0: for this program the customer does not exist.
pub fn is_known_account(balance: Option<&pb::Balance>) -> bool {
    balance.is_some_and(|b| b.version > 0)
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

/// One change to settings or campaigns: who, when, old and new (JSON text).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub audit_id: i64,
    /// `api-key:<key id>` for changes made through the gateway.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub changed_at: Option<String>,
    pub entity: String,
    pub entity_id: String,
    pub old_value: String,
    pub new_value: String,
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
                old_value: e.old_value,
                new_value: e.new_value,
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
