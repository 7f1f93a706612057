//! Probes and the API description; no key needed.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use loyalty_common::db;

use crate::model::HealthStatus;
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json};

/// The process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "Alive", body = HealthStatus))
)]
pub async fn healthz() -> Response {
    json(&HealthStatus { status: "ok".to_owned() })
}

/// The gateway can serve: its key store answers and the points service reports SERVING.
///
/// Only points is checked: the tiers, referral and rewards services are
/// optional, and while one is down its routes answer 503 and the loyalty
/// page marks its part unavailable, but everything else still serves.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready", body = HealthStatus),
        (status = 503, description = "A dependency is not ready", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, Problem> {
    // A probe answers within its own deadline, even when the key store hangs.
    let keys = db::ping(&state.database, std::time::Duration::from_secs(1));
    let (keys, points) = tokio::join!(keys, state.upstreams.points_ready());
    let mut missing = Vec::new();
    if !keys {
        missing.push("the key store does not answer");
    }
    if !points {
        missing.push("the points service is not serving");
    }
    if !missing.is_empty() {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", missing.join("; ")));
    }
    Ok(json(&HealthStatus { status: "ready".to_owned() }))
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi.as_str().to_owned()).into_response()
}
