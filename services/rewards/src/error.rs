//! Every way a rewards request can fail, and the one mapping to `tonic::Status`.

use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{ErrorClass, Fault, ServiceError};
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
    #[error("the reward changed meanwhile: version is {actual}, expected {expected}")]
    VersionMismatch { expected: i64, actual: i64 },
    #[error("customer {0} was erased at their request: nothing can be given to them")]
    CustomerErased(String),
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

impl ServiceError for Error {
    const DOMAIN: &'static str = DOMAIN;

    fn fault(&self) -> Fault {
        use ErrorClass::{FailedPrecondition, NotFound};
        match self {
            Error::RewardNotFound(_) => Fault::failure(NotFound, "REWARD_NOT_FOUND"),
            Error::RewardNotActive(_) => Fault::failure(FailedPrecondition, "REWARD_NOT_ACTIVE"),
            Error::RedemptionNotFound(_) => Fault::failure(NotFound, "REDEMPTION_NOT_FOUND"),
            Error::InsufficientPoints { available, cost } => Fault::Failure {
                class: FailedPrecondition,
                reason: "INSUFFICIENT_POINTS",
                metadata: vec![("available", available.to_string()), ("cost", cost.to_string())],
            },
            Error::TierTooLow => Fault::failure(FailedPrecondition, "TIER_TOO_LOW"),
            Error::TierNotEligible => Fault::failure(FailedPrecondition, "TIER_NOT_ELIGIBLE"),
            Error::OutOfStock => Fault::failure(FailedPrecondition, "OUT_OF_STOCK"),
            Error::LimitReached => Fault::failure(FailedPrecondition, "LIMIT_REACHED"),
            Error::VoucherNotFound => Fault::failure(NotFound, "VOUCHER_NOT_FOUND"),
            Error::VoucherUsed => Fault::failure(FailedPrecondition, "VOUCHER_USED"),
            Error::VoucherExpired => Fault::failure(FailedPrecondition, "VOUCHER_EXPIRED"),
            Error::VoucherCancelled => Fault::failure(FailedPrecondition, "VOUCHER_CANCELLED"),
            Error::VersionMismatch { .. } => Fault::failure(FailedPrecondition, "VERSION_MISMATCH"),
            Error::CustomerErased(customer) => Fault::Failure {
                class: FailedPrecondition,
                reason: "CUSTOMER_ERASED",
                metadata: vec![("customer_id", customer.clone())],
            },
            Error::Upstream(what, _) => Fault::Unavailable(what),
            Error::Interrupted(_) => Fault::Unavailable("the redemption's settlement"),
            Error::Key(e) => Fault::key(e),
            Error::Database(e) => Fault::database(e),
            Error::Corrupt(_) => Fault::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.into_status()
    }
}
