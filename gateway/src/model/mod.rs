//! The JSON bodies of the API and their conversion to and from the services'
//! protobuf messages, one file per resource (the shared helpers here): the
//! only module that builds or reads prost types. Points and money are
//! integers (money in minor units with an ISO 4217 currency); instants are
//! RFC 3339 text in UTC. Messages whose JSON is the message itself are not
//! copied here: they derive it (loyalty-proto's `json` feature) and are
//! re-exported under the API's names; the structs here are the shapes that
//! deliberately differ (parts from other calls, the request's own values,
//! fields that count only for some kinds).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use loyalty_common::clock::{Clock, SystemClock, from_timestamp, to_timestamp};
use loyalty_common::validate;
use loyalty_proto::insights::v1 as insights_pb;
use loyalty_proto::json::JsonEnum;
use loyalty_proto::points::v1 as pb;
use loyalty_proto::referral::v1 as referral_pb;
use loyalty_proto::rewards::v1 as rewards_pb;
use loyalty_proto::tiers::v1 as tiers_pb;
use loyalty_proto::webhooks::v1 as webhooks_pb;

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

/// Served as they are: loyalty-proto derives their JSON and schema (see its
/// build.rs), under the names the API has always given them.
pub use pb::{Balance, PointsBreakdown as Breakdown};

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
pub mod event_schemas;
mod insights;
mod orders;
mod privacy;
mod program;
mod referrals;
mod rewards;
mod tiers;
mod webhooks;

pub use customers::*;
pub use insights::*;
pub use orders::*;
pub use privacy::*;
pub use program::*;
pub use referrals::*;
pub use rewards::*;
pub use tiers::*;
pub use webhooks::*;
