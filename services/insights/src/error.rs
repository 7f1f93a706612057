//! Every way an insights request can fail, and what each is to a caller.

use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{ErrorClass, Fault, ServiceError};
use tonic::Status;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "insights.loyalty";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("settings changed meanwhile: version is {actual}, expected {expected}")]
    VersionMismatch { expected: i64, actual: i64 },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("the tiers service did not answer: {0}")]
    TiersUnavailable(tonic::Status),
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
            Error::VersionMismatch { .. } => Fault::failure(ErrorClass::FailedPrecondition, "VERSION_MISMATCH"),
            Error::Key(e) => Fault::key(e),
            Error::Database(e) => Fault::database(e),
            Error::Corrupt(_) => Fault::Internal,
            Error::TiersUnavailable(_) => Fault::Unavailable("the tiers service"),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.into_status()
    }
}
