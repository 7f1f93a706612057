//! Every way a rewards request can fail, and the one mapping to `tonic::Status`.

use std::collections::HashMap;

use loyalty_common::db;
use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{self, ErrorClass};
use tonic::Status;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "rewards.loyalty";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reward {0} not found in this program")]
    RewardNotFound(String),
    #[error("reward {0} cannot be redeemed now (archived or outside its dates)")]
    RewardNotActive(String),
    #[error("redemption {0} not found in this program")]
    RedemptionNotFound(String),
    #[error("insufficient points: {available} available, {cost} needed")]
    InsufficientPoints { available: i64, cost: i64 },
    #[error("the customer's tier is below the reward's minimum tier")]
    TierTooLow,
    #[error("the reward is for other tiers than the customer's")]
    TierNotEligible,
    #[error("the reward is out of stock")]
    OutOfStock,
    #[error("the customer reached the limit for this reward")]
    LimitReached,
    #[error("no such voucher")]
    VoucherNotFound,
    #[error("the voucher was already used")]
    VoucherUsed,
    #[error("the voucher has expired")]
    VoucherExpired,
    #[error("the voucher was cancelled")]
    VoucherCancelled,
    #[error("redemption {0} was taken over while its points were spent; retry with the same key for its outcome")]
    Interrupted(String),
    #[error("the {0} service is unavailable")]
    Upstream(&'static str, #[source] tonic::Status),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<loyalty_common::db::StoredJson> for Error {
    fn from(error: loyalty_common::db::StoredJson) -> Self {
        Self::Corrupt(error.to_string())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        use ErrorClass::{AlreadyExists, FailedPrecondition, NotFound};
        let fail = |class, reason: &str, metadata| status::failure(class, reason, DOMAIN, error.to_string(), metadata);
        match &error {
            Error::RewardNotFound(_) => fail(NotFound, "REWARD_NOT_FOUND", HashMap::new()),
            Error::RewardNotActive(_) => fail(FailedPrecondition, "REWARD_NOT_ACTIVE", HashMap::new()),
            Error::RedemptionNotFound(_) => fail(NotFound, "REDEMPTION_NOT_FOUND", HashMap::new()),
            Error::InsufficientPoints { available, cost } => fail(
                FailedPrecondition,
                "INSUFFICIENT_POINTS",
                HashMap::from([("available".into(), available.to_string()), ("cost".into(), cost.to_string())]),
            ),
            Error::TierTooLow => fail(FailedPrecondition, "TIER_TOO_LOW", HashMap::new()),
            Error::TierNotEligible => fail(FailedPrecondition, "TIER_NOT_ELIGIBLE", HashMap::new()),
            Error::OutOfStock => fail(FailedPrecondition, "OUT_OF_STOCK", HashMap::new()),
            Error::LimitReached => fail(FailedPrecondition, "LIMIT_REACHED", HashMap::new()),
            Error::VoucherNotFound => fail(NotFound, "VOUCHER_NOT_FOUND", HashMap::new()),
            Error::VoucherUsed => fail(FailedPrecondition, "VOUCHER_USED", HashMap::new()),
            Error::VoucherExpired => fail(FailedPrecondition, "VOUCHER_EXPIRED", HashMap::new()),
            Error::VoucherCancelled => fail(FailedPrecondition, "VOUCHER_CANCELLED", HashMap::new()),
            Error::Key(KeyError::Reused { .. }) => fail(AlreadyExists, "IDEMPOTENCY_KEY_REUSED", HashMap::new()),
            Error::Upstream(what, _) => status::unavailable(DOMAIN, what, &error),
            Error::Interrupted(_) => status::unavailable(DOMAIN, "the redemption's settlement", &error),
            Error::Database(e) | Error::Key(KeyError::Database(e)) if db::is_unavailable(e) => {
                status::unavailable(DOMAIN, "the database", &error)
            }
            Error::Key(_) | Error::Database(_) | Error::Corrupt(_) => status::internal(DOMAIN, &error),
        }
    }
}
