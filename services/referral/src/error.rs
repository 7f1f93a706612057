//! Every way a referral request can fail, and the one mapping to `tonic::Status`.

use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{ErrorClass, Fault, ServiceError};
use tonic::Status;

use crate::domain::Refusal;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "referral.loyalty";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("vouchers need the rewards service, and REWARDS_ADDR is not set")]
    RewardsNotConfigured,
    #[error("the rewards service is unavailable")]
    Rewards(#[source] tonic::Status),
    #[error("the referral settings changed meanwhile: version is {actual}, expected {expected}")]
    VersionMismatch { expected: i64, actual: i64 },
    #[error("invalid settings")]
    Invalid(Vec<loyalty_common::validate::FieldViolation>),
}

impl From<loyalty_common::db::StoredJson> for Error {
    fn from(error: loyalty_common::db::StoredJson) -> Self {
        Self::Corrupt(error.to_string())
    }
}

impl ServiceError for Error {
    const DOMAIN: &'static str = DOMAIN;

    fn fault(&self) -> Fault {
        use ErrorClass::{AlreadyExists, FailedPrecondition, NotFound};
        match self {
            Error::Refused(refusal) => {
                let (class, reason) = match refusal {
                    Refusal::ReferralsOff => (FailedPrecondition, "REFERRALS_DISABLED"),
                    Refusal::UnknownCode(_) => (NotFound, "UNKNOWN_CODE"),
                    Refusal::CodeDisabled(_) => (FailedPrecondition, "CODE_DISABLED"),
                    Refusal::SelfReferral => (FailedPrecondition, "SELF_REFERRAL"),
                    Refusal::AlreadyReferred => (AlreadyExists, "ALREADY_REFERRED"),
                    Refusal::ExistingCustomer => (FailedPrecondition, "EXISTING_CUSTOMER"),
                    Refusal::CapReached { .. } => (FailedPrecondition, "REFERRER_CAP_REACHED"),
                };
                Fault::failure(class, reason)
            }
            Error::Key(e) => Fault::key(e),
            Error::Database(e) => Fault::database(e),
            Error::Corrupt(_) => Fault::Internal,
            Error::RewardsNotConfigured => Fault::failure(FailedPrecondition, "REWARDS_NOT_CONFIGURED"),
            Error::Rewards(_) => Fault::Unavailable("the rewards service"),
            Error::Invalid(violations) => Fault::Invalid(violations.clone()),
            Error::VersionMismatch { .. } => Fault::failure(FailedPrecondition, "VERSION_MISMATCH"),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.into_status()
    }
}
