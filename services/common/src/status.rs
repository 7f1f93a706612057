//! Turning domain failures into `tonic::Status`: the right code, an
//! `ErrorInfo` detail with a machine-readable reason, `BadRequest` field
//! violations for invalid input, and a generic message for internal errors.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::validate::FieldViolation;

/// Reason given with every INVALID_ARGUMENT.
pub const REASON_INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";

/// The failure classes every service speaks; each maps to one gRPC code,
/// and the gateway maps each gRPC code to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    Internal,
}

impl ErrorClass {
    pub fn code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Unavailable => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }
}

/// What a service's error is to its callers: every service error says it
/// through [`ServiceError`], and [`ServiceError::into_status`] is the one
/// conversion to `Status`.
#[derive(Debug)]
pub enum Fault {
    /// A business failure with its reason (e.g. `INSUFFICIENT_POINTS`) and
    /// `ErrorInfo` metadata; the message is the error's `Display`.
    Failure { class: ErrorClass, reason: &'static str, metadata: Vec<(&'static str, String)> },
    /// INVALID_ARGUMENT naming each bad field.
    Invalid(Vec<FieldViolation>),
    /// A dependency (`what`, e.g. "the database") does not answer: retry with the same key.
    Unavailable(&'static str),
    /// A bug or corrupt data: logged in full, answered with a generic message.
    Internal,
}

impl Fault {
    /// A failure without metadata.
    pub fn failure(class: ErrorClass, reason: &'static str) -> Self {
        Self::Failure { class, reason, metadata: Vec::new() }
    }

    /// A database error: UNAVAILABLE when the server cannot be reached, else internal.
    pub fn database(error: &sqlx::Error) -> Self {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            crate::spans::POOL_TIMEOUTS.inc();
        }
        if crate::db::is_unavailable(error) { Self::Unavailable("the database") } else { Self::Internal }
    }

    /// What an idempotency key's trouble is to the caller.
    pub fn key(error: &crate::idempotency::KeyError) -> Self {
        use crate::idempotency::KeyError;
        match error {
            KeyError::Reused { .. } => Self::failure(ErrorClass::AlreadyExists, "IDEMPOTENCY_KEY_REUSED"),
            KeyError::Database(e) => Self::database(e),
            KeyError::Corrupt { .. } => Self::Internal,
        }
    }
}

/// A service's error type: its `ErrorInfo.domain` and the [`Fault`] of each
/// variant. Each service's `impl From<Error> for Status` calls `into_status`.
pub trait ServiceError: std::error::Error + Sized + 'static {
    /// `ErrorInfo.domain` of every error the service returns, e.g. `points.loyalty`.
    const DOMAIN: &'static str;

    fn fault(&self) -> Fault;

    fn into_status(self) -> Status {
        match self.fault() {
            Fault::Failure { class, reason, metadata } => {
                let metadata = metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                failure(class, reason, Self::DOMAIN, self.to_string(), metadata)
            }
            Fault::Invalid(violations) => invalid_argument(Self::DOMAIN, &violations),
            Fault::Unavailable(what) => unavailable(Self::DOMAIN, what, &self),
            Fault::Internal => internal(Self::DOMAIN, &self),
        }
    }
}

/// INVALID_ARGUMENT naming every bad field.
pub fn invalid_argument(domain: &str, violations: &[FieldViolation]) -> Status {
    // The first ones, so that the status (sent as HTTP/2 trailers) stays well
    // within a peer's header size limit however many items a list got wrong.
    let shown = &violations[..violations.len().min(MAX_VIOLATIONS)];
    let mut message = shown.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
    if violations.len() > shown.len() {
        message.push_str(&format!("; and {} more", violations.len() - shown.len()));
    }
    let mut details = ErrorDetails::with_error_info(REASON_INVALID_ARGUMENT, domain, HashMap::new());
    for v in shown {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// Most field violations one INVALID_ARGUMENT names.
pub const MAX_VIOLATIONS: usize = 20;

/// A business failure with its reason (e.g. `INSUFFICIENT_POINTS`).
pub fn failure(
    class: ErrorClass,
    reason: &str,
    domain: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
) -> Status {
    let details = ErrorDetails::with_error_info(reason, domain, metadata);
    Status::with_error_details(class.code(), message, details)
}

/// Logs the error in full and answers with a generic message, so no
/// internal detail (SQL, hostnames) reaches a caller.
pub fn internal(domain: &str, error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %error_chain(error), domain, "internal error");
    let details = ErrorDetails::with_error_info("INTERNAL", domain, HashMap::new());
    Status::with_error_details(Code::Internal, "internal error", details)
}

/// UNAVAILABLE: the caller may retry with the same idempotency key.
pub fn unavailable(domain: &str, what: &str, error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::warn!(error = %error_chain(error), domain, what, "dependency unavailable");
    let details = ErrorDetails::with_error_info("UNAVAILABLE", domain, HashMap::new());
    Status::with_error_details(Code::Unavailable, format!("{what} is unavailable, retry later"), details)
}

/// `outer: inner: innermost` for a log line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_with_many_bad_items_names_the_first_ones_and_counts_the_rest() {
        let violations: Vec<_> =
            (0..500).map(|i| FieldViolation::new(format!("tiers[{i}].tier_id"), "appears twice")).collect();
        let status = invalid_argument("d", &violations);
        let shown = status.get_error_details().bad_request().map(|b| b.field_violations.len());
        assert_eq!(shown, Some(MAX_VIOLATIONS));
        assert!(status.message().ends_with("; and 480 more"), "{}", status.message());
        assert!(status.message().len() < 2_000);
    }

    #[test]
    fn invalid_argument_carries_reason_and_every_field() {
        let status = invalid_argument(
            "points.loyalty",
            &[
                FieldViolation::new("points", "must be greater than zero"),
                FieldViolation::new("program_id", "must not be empty"),
            ],
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("points: must be greater than zero"));
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, REASON_INVALID_ARGUMENT);
        let fields: Vec<_> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["points", "program_id"]);
    }

    #[test]
    fn internal_hides_the_cause() {
        let error = std::io::Error::other("password=hunter2 at db:5432");
        let status = internal("points.loyalty", &error);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
