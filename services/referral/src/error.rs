//! Every way a referral request can fail, and the one mapping to `tonic::Status`.

use std::collections::HashMap;

use loyalty_common::db;
use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{self, ErrorClass};
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
}

impl From<loyalty_common::db::StoredJson> for Error {
    fn from(error: loyalty_common::db::StoredJson) -> Self {
        Self::Corrupt(error.to_string())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let fail =
            |class, reason: &str, message: String| status::failure(class, reason, DOMAIN, message, HashMap::new());
        match error {
            Error::Refused(ref refusal) => {
                let (class, reason) = match refusal {
                    Refusal::ReferralsOff => (ErrorClass::FailedPrecondition, "REFERRALS_DISABLED"),
                    Refusal::UnknownCode(_) => (ErrorClass::NotFound, "UNKNOWN_CODE"),
                    Refusal::CodeDisabled(_) => (ErrorClass::FailedPrecondition, "CODE_DISABLED"),
                    Refusal::SelfReferral => (ErrorClass::FailedPrecondition, "SELF_REFERRAL"),
                    Refusal::AlreadyReferred => (ErrorClass::AlreadyExists, "ALREADY_REFERRED"),
                    Refusal::ExistingCustomer => (ErrorClass::FailedPrecondition, "EXISTING_CUSTOMER"),
                    Refusal::CapReached { .. } => (ErrorClass::FailedPrecondition, "REFERRER_CAP_REACHED"),
                };
                fail(class, reason, refusal.to_string())
            }
            Error::Key(KeyError::Reused { .. }) => {
                fail(ErrorClass::AlreadyExists, "IDEMPOTENCY_KEY_REUSED", error.to_string())
            }
            Error::Database(ref e) | Error::Key(KeyError::Database(ref e)) if db::is_unavailable(e) => {
                status::unavailable(DOMAIN, "the database", &error)
            }
            Error::Key(_) | Error::Database(_) | Error::Corrupt(_) => status::internal(DOMAIN, &error),
        }
    }
}
