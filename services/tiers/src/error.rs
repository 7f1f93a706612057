//! Every way a tiers request can fail, and the one mapping to `tonic::Status`.

use std::collections::HashMap;

use loyalty_common::db;
use loyalty_common::idempotency::KeyError;
use loyalty_common::status::{self, ErrorClass};
use tonic::Status;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "tiers.loyalty";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tier {0} is not on this program's ladder")]
    UnknownTier(String),
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
        match error {
            Error::UnknownTier(_) => {
                status::failure(ErrorClass::NotFound, "TIER_NOT_FOUND", DOMAIN, error.to_string(), HashMap::new())
            }
            Error::Key(KeyError::Reused { .. }) => status::failure(
                ErrorClass::AlreadyExists,
                "IDEMPOTENCY_KEY_REUSED",
                DOMAIN,
                error.to_string(),
                HashMap::new(),
            ),
            Error::Database(ref e) | Error::Key(KeyError::Database(ref e)) if db::is_unavailable(e) => {
                status::unavailable(DOMAIN, "the database", &error)
            }
            Error::Key(_) | Error::Database(_) | Error::Corrupt(_) => status::internal(DOMAIN, &error),
        }
    }
}
