//! Orders: earning, previews, refunds and points at checkout.

use super::*;

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
            breakdown: r.breakdown.unwrap_or_default(),
            pending_until: time_out(r.pending_until.as_ref()),
            expires_at: time_out(r.expires_at.as_ref()),
            balance: r.balance.unwrap_or_default(),
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

/// The points a refund took back, served as the points service answers them.
pub use pb::RefundOrderResponse as Refunded;

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

/// What an order would earn, served as the points service answers it.
pub use pb::PreviewOrderResponse as Preview;

// ---------------------------------------------------------------- points at checkout

/// The order points may pay for: its amount before any points discount and its currency.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckoutQuery {
    pub amount_minor: i64,
    pub currency: String,
}

impl CheckoutQuery {
    pub fn into_proto(self, program_id: &str, customer_id: String) -> pb::QuoteCheckoutPointsRequest {
        pb::QuoteCheckoutPointsRequest {
            program_id: program_id.to_owned(),
            customer_id,
            amount_minor: self.amount_minor,
            currency: self.currency,
        }
    }
}

/// How many points may pay for the order and for how much, served as the points service answers it.
pub use pb::QuoteCheckoutPointsResponse as CheckoutQuote;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutPointsBody {
    pub customer_id: String,
    /// The order's amount before the points discount; refunds of the order count against it.
    pub amount_minor: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// The points to spend: at least the program's `min_points`, in its steps, within its maximum share.
    pub points: i64,
}

impl CheckoutPointsBody {
    pub fn into_proto(self, program_id: &str, order_id: String) -> pb::ApplyCheckoutPointsRequest {
        pb::ApplyCheckoutPointsRequest {
            program_id: program_id.to_owned(),
            customer_id: self.customer_id,
            order_id,
            amount_minor: self.amount_minor,
            currency: self.currency,
            points: self.points,
        }
    }
}

/// The points spent on the order and the discount they pay, served as the points service answers them.
pub use pb::ApplyCheckoutPointsResponse as CheckoutApplied;
