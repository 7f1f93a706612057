//! Every way a points request can fail, and the one mapping to `tonic::Status`.

use loyalty_common::status::{ErrorClass, Fault, ServiceError};
use loyalty_common::validate::FieldViolation;
use tonic::Status;

use crate::domain::RuleViolation;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "points.loyalty";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    #[error("earn {0} not found in this program")]
    EarnNotFound(String),
    #[error("order {0} not found in this program")]
    OrderNotFound(String),
    #[error("spend {0} not found in this program")]
    SpendNotFound(String),
    #[error("campaign {0} not found in this program")]
    CampaignNotFound(String),
    #[error("changed meanwhile (settings, a profile): version is {actual}, expected {expected}")]
    VersionMismatch { expected: i64, actual: i64 },
    #[error("the tiers service is unavailable, retry with the same key")]
    TiersUnavailable(#[source] tonic::Status),
    #[error("the insights service is unavailable, retry with the same key")]
    InsightsUnavailable(#[source] tonic::Status),
    #[error("idempotency key already used for a different {method} request")]
    IdempotencyKeyReused { method: &'static str },
    #[error(
        "order {0} was already recorded with another customer, amount, currency or time: an order id earns once; \
         send a correction as a refund"
    )]
    OrderAlreadyRecorded(String),
    #[error(
        "order {0} already took points with another customer, amount, currency or number of points, or is \
         another customer's order: an order takes points once; refund it to give them back"
    )]
    CheckoutAlreadyApplied(String),
    #[error("too many writes are waiting; retry with the same idempotency key")]
    Overloaded,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<loyalty_common::idempotency::KeyError> for Error {
    fn from(error: loyalty_common::idempotency::KeyError) -> Self {
        use loyalty_common::idempotency::KeyError;
        match error {
            KeyError::Reused { method } => Self::IdempotencyKeyReused { method },
            KeyError::Corrupt { method } => Self::Corrupt(format!("{method} key without a saved result")),
            KeyError::Database(e) => Self::Database(e),
        }
    }
}

impl Error {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<loyalty_common::db::StoredJson> for Error {
    fn from(error: loyalty_common::db::StoredJson) -> Self {
        Self::Corrupt(error.to_string())
    }
}

impl ServiceError for Error {
    const DOMAIN: &'static str = DOMAIN;

    fn fault(&self) -> Fault {
        use ErrorClass::{AlreadyExists, FailedPrecondition, NotFound, Unavailable};
        let failure = |class, reason, metadata: &[(&'static str, String)]| Fault::Failure {
            class,
            reason,
            metadata: metadata.to_vec(),
        };
        match self {
            Error::InvalidArgument(violations) => Fault::Invalid(violations.clone()),
            Error::Rule(RuleViolation::InvalidField { field, description }) => {
                Fault::Invalid(vec![FieldViolation::new(*field, description.clone())])
            }
            Error::Rule(RuleViolation::InsufficientPoints { available, requested }) => failure(
                FailedPrecondition,
                "INSUFFICIENT_POINTS",
                &[("available", available.to_string()), ("requested", requested.to_string())],
            ),
            Error::Rule(RuleViolation::ReversalExceedsEarn { reversible, requested }) => failure(
                FailedPrecondition,
                "REVERSAL_EXCEEDS_EARN",
                &[("reversible", reversible.to_string()), ("requested", requested.to_string())],
            ),
            Error::Rule(RuleViolation::NothingPending) => Fault::failure(FailedPrecondition, "NOTHING_PENDING"),
            Error::Rule(RuleViolation::RefundExceedsOrder { refundable, requested }) => failure(
                FailedPrecondition,
                "REFUND_EXCEEDS_ORDER",
                &[("refundable", refundable.to_string()), ("requested", requested.to_string())],
            ),
            Error::Rule(RuleViolation::ActivityNotRewarded { .. }) => {
                Fault::failure(FailedPrecondition, "ACTIVITY_NOT_REWARDED")
            }
            Error::Rule(RuleViolation::ActivityCapReached { .. }) => {
                Fault::failure(FailedPrecondition, "ACTIVITY_CAP_REACHED")
            }
            Error::Rule(RuleViolation::AlreadyRestored { restore, .. }) => {
                failure(FailedPrecondition, "SPEND_ALREADY_RESTORED", &[("restore_transaction_id", restore.clone())])
            }
            Error::Rule(RuleViolation::SpendPaidForOrder { order_id, .. }) => {
                failure(FailedPrecondition, "SPEND_PAID_FOR_ORDER", &[("order_id", order_id.clone())])
            }
            Error::Rule(RuleViolation::CheckoutDisabled) => {
                Fault::failure(FailedPrecondition, "CHECKOUT_POINTS_DISABLED")
            }
            Error::Rule(RuleViolation::CheckoutUnaligned { min_points, step_points }) => failure(
                FailedPrecondition,
                "CHECKOUT_POINTS_UNALIGNED",
                &[("min_points", min_points.to_string()), ("step_points", step_points.to_string())],
            ),
            Error::Rule(RuleViolation::CheckoutShareExceeded { max_points, max_share_bp }) => failure(
                FailedPrecondition,
                "CHECKOUT_SHARE_EXCEEDED",
                &[("max_points", max_points.to_string()), ("max_share_bp", max_share_bp.to_string())],
            ),
            Error::Rule(RuleViolation::CurrencyMismatch { .. }) => {
                Fault::failure(FailedPrecondition, "CURRENCY_MISMATCH")
            }
            Error::EarnNotFound(_) => Fault::failure(NotFound, "EARN_NOT_FOUND"),
            Error::OrderNotFound(_) => Fault::failure(NotFound, "ORDER_NOT_FOUND"),
            Error::SpendNotFound(_) => Fault::failure(NotFound, "SPEND_NOT_FOUND"),
            Error::CampaignNotFound(_) => Fault::failure(NotFound, "CAMPAIGN_NOT_FOUND"),
            Error::VersionMismatch { .. } => Fault::failure(FailedPrecondition, "VERSION_MISMATCH"),
            Error::TiersUnavailable(_) => Fault::failure(Unavailable, "TIERS_UNAVAILABLE"),
            Error::InsightsUnavailable(_) => Fault::failure(Unavailable, "INSIGHTS_UNAVAILABLE"),
            Error::IdempotencyKeyReused { .. } => Fault::failure(AlreadyExists, "IDEMPOTENCY_KEY_REUSED"),
            Error::OrderAlreadyRecorded(order_id) => {
                failure(AlreadyExists, "ORDER_ALREADY_RECORDED", &[("order_id", order_id.clone())])
            }
            Error::CheckoutAlreadyApplied(order_id) => {
                failure(AlreadyExists, "CHECKOUT_ALREADY_APPLIED", &[("order_id", order_id.clone())])
            }
            Error::Overloaded => Fault::failure(Unavailable, "OVERLOADED"),
            Error::Database(e) => Fault::database(e),
            Error::Corrupt(_) => Fault::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        if let Error::TiersUnavailable(cause) | Error::InsightsUnavailable(cause) = &error {
            tracing::warn!(code = ?cause.code(), message = cause.message(), "a peer service is unavailable: {error}");
        }
        error.into_status()
    }
}
