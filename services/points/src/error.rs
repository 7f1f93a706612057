//! Every way a points request can fail, and the one mapping to `tonic::Status`.

use std::collections::HashMap;

use loyalty_common::db;
use loyalty_common::status::{self, ErrorClass};
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
    #[error("settings changed meanwhile: version is {actual}, expected {expected}")]
    VersionMismatch { expected: i64, actual: i64 },
    #[error("the tiers service is unavailable")]
    TiersUnavailable(#[source] tonic::Status),
    #[error("idempotency key already used for a different {method} request")]
    IdempotencyKeyReused { method: &'static str },
    #[error(
        "order {0} was already recorded with another customer, amount, currency or time: an order id earns once; \
         send a correction as a refund"
    )]
    OrderAlreadyRecorded(String),
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

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let fail = |class, reason, message: String, metadata| status::failure(class, reason, DOMAIN, message, metadata);
        match error {
            Error::InvalidArgument(violations) => status::invalid_argument(DOMAIN, &violations),
            Error::Rule(RuleViolation::InvalidField { field, description }) => {
                status::invalid_argument(DOMAIN, &[FieldViolation::new(field, description)])
            }
            Error::Rule(ref rule @ RuleViolation::InsufficientPoints { available, requested }) => fail(
                ErrorClass::FailedPrecondition,
                "INSUFFICIENT_POINTS",
                rule.to_string(),
                HashMap::from([
                    ("available".into(), available.to_string()),
                    ("requested".into(), requested.to_string()),
                ]),
            ),
            Error::Rule(ref rule @ RuleViolation::ReversalExceedsEarn { reversible, requested }) => fail(
                ErrorClass::FailedPrecondition,
                "REVERSAL_EXCEEDS_EARN",
                rule.to_string(),
                HashMap::from([
                    ("reversible".into(), reversible.to_string()),
                    ("requested".into(), requested.to_string()),
                ]),
            ),
            Error::Rule(ref rule @ RuleViolation::NothingPending) => {
                fail(ErrorClass::FailedPrecondition, "NOTHING_PENDING", rule.to_string(), HashMap::new())
            }
            Error::Rule(ref rule @ RuleViolation::RefundExceedsOrder { refundable, requested }) => fail(
                ErrorClass::FailedPrecondition,
                "REFUND_EXCEEDS_ORDER",
                rule.to_string(),
                HashMap::from([
                    ("refundable".into(), refundable.to_string()),
                    ("requested".into(), requested.to_string()),
                ]),
            ),
            Error::Rule(ref rule @ RuleViolation::ActivityNotRewarded { .. }) => {
                fail(ErrorClass::FailedPrecondition, "ACTIVITY_NOT_REWARDED", rule.to_string(), HashMap::new())
            }
            Error::Rule(ref rule @ RuleViolation::ActivityCapReached { .. }) => {
                fail(ErrorClass::FailedPrecondition, "ACTIVITY_CAP_REACHED", rule.to_string(), HashMap::new())
            }
            Error::Rule(ref rule @ RuleViolation::AlreadyRestored { ref restore, .. }) => fail(
                ErrorClass::FailedPrecondition,
                "SPEND_ALREADY_RESTORED",
                rule.to_string(),
                HashMap::from([("restore_transaction_id".into(), restore.clone())]),
            ),
            Error::Rule(ref rule @ RuleViolation::CurrencyMismatch { .. }) => {
                fail(ErrorClass::FailedPrecondition, "CURRENCY_MISMATCH", rule.to_string(), HashMap::new())
            }
            Error::EarnNotFound(_) => fail(ErrorClass::NotFound, "EARN_NOT_FOUND", error.to_string(), HashMap::new()),
            Error::OrderNotFound(_) => fail(ErrorClass::NotFound, "ORDER_NOT_FOUND", error.to_string(), HashMap::new()),
            Error::SpendNotFound(_) => fail(ErrorClass::NotFound, "SPEND_NOT_FOUND", error.to_string(), HashMap::new()),
            Error::CampaignNotFound(_) => {
                fail(ErrorClass::NotFound, "CAMPAIGN_NOT_FOUND", error.to_string(), HashMap::new())
            }
            Error::VersionMismatch { .. } => {
                fail(ErrorClass::FailedPrecondition, "VERSION_MISMATCH", error.to_string(), HashMap::new())
            }
            Error::TiersUnavailable(ref cause) => {
                tracing::warn!(code = ?cause.code(), message = cause.message(), "tiers service unavailable");
                let message = "the tiers service is unavailable, retry with the same key".to_owned();
                fail(ErrorClass::Unavailable, "TIERS_UNAVAILABLE", message, HashMap::new())
            }
            Error::IdempotencyKeyReused { .. } => {
                fail(ErrorClass::AlreadyExists, "IDEMPOTENCY_KEY_REUSED", error.to_string(), HashMap::new())
            }
            Error::OrderAlreadyRecorded(ref order_id) => fail(
                ErrorClass::AlreadyExists,
                "ORDER_ALREADY_RECORDED",
                error.to_string(),
                HashMap::from([("order_id".into(), order_id.clone())]),
            ),
            Error::Overloaded => fail(ErrorClass::Unavailable, "OVERLOADED", error.to_string(), HashMap::new()),
            Error::Database(ref e) if db::is_unavailable(e) => status::unavailable(DOMAIN, "the database", &error),
            Error::Database(_) | Error::Corrupt(_) => status::internal(DOMAIN, &error),
        }
    }
}
