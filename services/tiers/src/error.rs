//! Every way a tiers request can fail, and the one mapping to `tonic::Status`.

use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{ErrorClass, Fault, ServiceError};
use tonic::Status;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "tiers.loyalty";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tier {0} is not on this program's ladder")]
    UnknownTier(String),
    #[error("the ladder changed meanwhile: version is {actual}, expected {expected}")]
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
            Error::UnknownTier(_) => Fault::failure(ErrorClass::NotFound, "TIER_NOT_FOUND"),
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
