//! Every error the gateway answers, as an RFC 9457 `application/problem+json`
//! document, and the one mapping from a gRPC status code to an HTTP status.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// The `Retry-After` of a 503 `UNAVAILABLE`, in seconds: long enough for a reconnect, short enough
/// that a client retrying once loses little.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// What went wrong, in the shape of RFC 9457; boxed, so results carrying it stay small.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<ProblemDocument>);

/// The problem+json document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument {
    /// A URI naming the kind of problem: `urn:loyalty:problem:` and the lowercase `code`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status phrase.
    pub title: String,
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// Machine-readable reason, e.g. `INSUFFICIENT_POINTS` (the service's `ErrorInfo.reason`) or a
    /// gateway reason such as `MISSING_IDEMPOTENCY_KEY`.
    pub code: String,
    /// Every invalid field, when the request had some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Facts about the failure, e.g. `available` and `requested` for `INSUFFICIENT_POINTS`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip)]
    retry_after_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (`amount_minor`, `activity_rules[0].points`), or a header name.
    pub field: String,
    pub description: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// The one mapping from a gRPC status code to an HTTP status.
///
/// INVALID_ARGUMENT is 422: the body parsed (a malformed one is 400 before any
/// call) but a value is unacceptable. FAILED_PRECONDITION is 409: the request
/// is fine but conflicts with the account's or program's current state
/// (insufficient points, a cap reached, a settings version changed).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::UNPROCESSABLE_ENTITY,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(ProblemDocument {
            kind: format!("urn:loyalty:problem:{}", code.to_ascii_lowercase()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            errors: Vec::new(),
            metadata: BTreeMap::new(),
            retry_after_secs: None,
        }))
    }

    /// A 400 naming the fields that could not be read.
    pub fn malformed(code: &str, detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(StatusCode::BAD_REQUEST, code, detail);
        problem.0.errors = errors;
        problem
    }

    pub fn unauthenticated(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", detail)
    }

    pub fn not_found(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// A 503 for something that is down for a moment (a lost database connection, a backend
    /// restarting): `Retry-After` tells clients when to try again instead of hammering it.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", detail);
        problem.0.retry_after_secs = Some(UNAVAILABLE_RETRY_AFTER_SECS);
        problem
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let detail = format!("too many requests for this API key, retry in {retry_after_secs} s");
        let mut problem = Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", detail);
        problem.0.retry_after_secs = Some(retry_after_secs);
        problem
    }

    /// A 503 for a route whose backend service the gateway has no address for
    /// (an optional service left unset): retrying does not help until it is configured.
    pub fn not_configured(backend: &str, variable: &str) -> Self {
        let detail = format!("this gateway is not connected to a {backend} service ({variable} is not set)");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "BACKEND_NOT_CONFIGURED", detail)
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Renames a field prefix the service uses but the JSON body does not
    /// (the body of `PUT /v1/settings` is what the service calls `settings`).
    pub fn strip_field_prefix(mut self, prefix: &str) -> Self {
        for error in &mut self.0.errors {
            if let Some(rest) = error.field.strip_prefix(prefix) {
                error.field = rest.to_owned();
            }
        }
        self
    }

    /// The problem for a failed call to `backend`. 5xx answers never carry
    /// the service's message (it may name hosts or internals); it is logged instead.
    pub fn from_upstream(backend: &str, status: &tonic::Status) -> Self {
        let http = http_status(status.code());
        let details = status.get_error_details();
        let info = details.error_info();
        let code = info.map(|i| i.reason.clone()).filter(|r| !r.is_empty());
        if http.is_server_error() {
            tracing::warn!(backend, grpc.code = ?status.code(), grpc.message = status.message(), "backend call failed");
            let (code, detail) = match status.code() {
                Code::Unavailable | Code::Cancelled => {
                    return Self::unavailable(format!("the {backend} service is unavailable, retry later"));
                }
                Code::DeadlineExceeded => {
                    ("DEADLINE_EXCEEDED", format!("the {backend} service did not answer in time, retry later"))
                }
                Code::Unimplemented => ("NOT_IMPLEMENTED", format!("the {backend} service does not offer this")),
                _ => ("INTERNAL", "internal error".to_owned()),
            };
            return Self::new(http, code, detail);
        }
        let fallback = format!("{:?}", status.code()).to_ascii_uppercase();
        let mut problem = Self::new(http, code.as_deref().unwrap_or(&fallback), status.message());
        if let Some(info) = info {
            problem.0.metadata = info.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if let Some(bad) = details.bad_request() {
            problem.0.errors =
                bad.field_violations.iter().map(|v| FieldError::new(v.field.clone(), v.description.clone())).collect();
        }
        problem
    }
}

impl std::ops::Deref for Problem {
    type Target = ProblemDocument;

    fn deref(&self) -> &ProblemDocument {
        &self.0
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| br#"{"status":500}"#.to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = self.0.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn every_grpc_code_maps_to_an_error_status() {
        for code in 1..=16 {
            let status = http_status(Code::from(code));
            assert!(status.is_client_error() || status.is_server_error(), "{code} -> {status}");
        }
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::CONFLICT);
        assert_eq!(http_status(Code::DeadlineExceeded), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn upstream_details_become_code_errors_and_metadata() {
        let mut details = ErrorDetails::with_error_info(
            "INSUFFICIENT_POINTS",
            "points.loyalty",
            HashMap::from([("available".to_owned(), "3".to_owned())]),
        );
        details.add_bad_request_violation("settings.rounding", "must be set");
        let status = tonic::Status::with_error_details(Code::FailedPrecondition, "short", details);
        let problem = Problem::from_upstream("points", &status).strip_field_prefix("settings.");
        assert_eq!(problem.status, 409);
        assert_eq!(problem.code, "INSUFFICIENT_POINTS");
        assert_eq!(problem.kind, "urn:loyalty:problem:insufficient_points");
        assert_eq!(problem.metadata["available"], "3");
        assert_eq!(problem.errors, [FieldError::new("rounding", "must be set")]);
    }

    #[test]
    fn unavailable_is_503_with_retry_after() {
        for status in [tonic::Status::unavailable("database connection lost"), tonic::Status::cancelled("gone")] {
            let problem = Problem::from_upstream("points", &status);
            assert_eq!(problem.status, 503);
            assert_eq!(problem.code, "UNAVAILABLE");
            let response = problem.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
            assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        }
        // Only a moment's outage invites a retry: a missing configuration or an internal error does not.
        for problem in [
            Problem::not_configured("tiers", "TIERS_ADDR"),
            Problem::from_upstream("points", &tonic::Status::internal("boom")),
            Problem::from_upstream("points", &tonic::Status::deadline_exceeded("slow")),
        ] {
            assert!(problem.into_response().headers().get(header::RETRY_AFTER).is_none());
        }
    }

    #[test]
    fn server_errors_hide_the_backend_message() {
        let status = tonic::Status::internal("password=hunter2 at db:5432");
        let problem = Problem::from_upstream("points", &status);
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
        let status = tonic::Status::unavailable("tcp connect error 10.0.0.7:50051");
        assert!(!Problem::from_upstream("points", &status).detail.contains("10.0.0.7"));
    }
}
