//! Every way a webhooks request can fail, and what each is to a caller.

use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{ErrorClass, Fault, ServiceError};
use tonic::Status;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "webhooks.loyalty";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no subscription {0} in this program")]
    SubscriptionNotFound(String),
    #[error("no event {0} in this program")]
    EventNotFound(String),
    #[error("subscription changed meanwhile: version is {actual}, expected {expected}")]
    VersionMismatch { expected: i64, actual: i64 },
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
        match self {
            Error::SubscriptionNotFound(_) => Fault::failure(ErrorClass::NotFound, "SUBSCRIPTION_NOT_FOUND"),
            Error::EventNotFound(_) => Fault::failure(ErrorClass::NotFound, "EVENT_NOT_FOUND"),
            Error::VersionMismatch { .. } => Fault::failure(ErrorClass::FailedPrecondition, "VERSION_MISMATCH"),
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
