//! The JSON bodies of the API and their conversion to and from the services'
//! protobuf messages, one file per resource (the shared helpers here): the
//! only module that builds or reads prost types. Points and money are
//! integers (money in minor units with an ISO 4217 currency); instants are
//! RFC 3339 text in UTC.

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

mod customers;
mod orders;
mod program;
mod referrals;
mod rewards;
mod tiers;

pub use customers::*;
pub use orders::*;
pub use program::*;
pub use referrals::*;
pub use rewards::*;
pub use tiers::*;
