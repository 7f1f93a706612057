//! Insights (scope `admin`): a customer's order history, RFM scores, segment
//! and lifetime value; the program's customers by segment; how many each
//! segment holds; the thresholds. Every route needs the insights service
//! (`INSIGHTS_ADDR`); without it they answer 503 `BACKEND_NOT_CONFIGURED`.

use axum::extract::State;
use axum::response::Response;

use crate::extract::{self, AdminScope, Authorized, IdempotencyKey, JsonBody, QueryParams, ServerScope};
use crate::model::{
    self, CohortRetention, CohortsQuery, CustomerInsight, CustomerListQuery, CustomerPage, InsightSettings,
    InsightSettingsBody, KpisQuery, ProgramKpis, SegmentChanges, SegmentChangesQuery, SegmentCounts, SurveyBody,
    SurveyResponse, SurveyScores, SurveyScoresQuery,
};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, insights_failed, json, written};
use crate::rpc;

/// Field names the service prefixes with the message they belong to.
const SETTINGS_PREFIX: &str = "settings.";

/// One customer's numbers as of now: orders, spend, RFM scores, segment and lifetime value.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/insight",
    tag = "insights",
    operation_id = "getCustomerInsight",
    security(("api_key" = ["admin"])),
    params(("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id")),
    responses(
        (status = 200, description = "The customer's insight (zeros and `new` for a customer without orders)", body = CustomerInsight),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn customer_insight(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    extract::Segment(customer_id): extract::Segment<String>,
) -> Result<Response, Problem> {
    let request = model::customer_insight_request(auth.program(), customer_id);
    let reply = state.upstreams.insights(request, rpc!(get_customer_insight)).await.map_err(insights_failed)?;
    Ok(json(&reply.message.insight.unwrap_or_default()))
}

/// The program's customers, of one segment or all, by spend or by their last order, paged.
#[utoipa::path(
    get,
    path = "/v1/insights/customers",
    tag = "insights",
    operation_id = "listInsightCustomers",
    security(("api_key" = ["admin"])),
    params(CustomerListQuery),
    responses(
        (status = 200, description = "One page of customers, highest first", body = CustomerPage),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn customers(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<CustomerListQuery>,
) -> Result<Response, Problem> {
    let request = query.into_proto(auth.program());
    let reply = state.upstreams.insights(request, rpc!(list_customers)).await.map_err(insights_failed)?;
    Ok(json(&CustomerPage::from(reply.message)))
}

/// How many customers each segment holds now, every segment listed.
#[utoipa::path(
    get,
    path = "/v1/insights/segments",
    tag = "insights",
    operation_id = "getSegmentCounts",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The segments' counts", body = SegmentCounts))
)]
pub async fn segments(State(state): State<AppState>, auth: Authorized<AdminScope>) -> Result<Response, Problem> {
    let request = model::segment_counts_request(auth.program());
    let reply = state.upstreams.insights(request, rpc!(get_segment_counts)).await.map_err(insights_failed)?;
    Ok(json(&reply.message))
}

/// The thresholds segments and the lifetime value use (the defaults until first set).
#[utoipa::path(
    get,
    path = "/v1/insights/settings",
    tag = "insights",
    operation_id = "getInsightSettings",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The thresholds", body = InsightSettings))
)]
pub async fn get_settings(State(state): State<AppState>, auth: Authorized<AdminScope>) -> Result<Response, Problem> {
    let request = model::insight_settings_request(auth.program());
    let reply = state.upstreams.insights(request, rpc!(get_insight_settings)).await.map_err(insights_failed)?;
    Ok(json(&reply.message.settings.unwrap_or_default()))
}

/// Replaces the thresholds; validated. Segments follow at once.
#[utoipa::path(
    put,
    path = "/v1/insights/settings",
    tag = "insights",
    operation_id = "putInsightSettings",
    security(("api_key" = ["admin"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer")),
    request_body = InsightSettingsBody,
    responses(
        (status = 200, description = "The stored thresholds", body = InsightSettings,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The key was used with other arguments, or the settings changed meanwhile (`VERSION_MISMATCH`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A threshold is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn put_settings(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<InsightSettingsBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), auth.actor(), key);
    let reply = state.upstreams.insights(request, rpc!(put_insight_settings)).await;
    let reply = reply.map_err(|failure| insights_failed(failure).strip_field_prefix(SETTINGS_PREFIX))?;
    Ok(written(reply.replayed, &reply.message.settings.unwrap_or_default()))
}

/// Records a customer's answer to a survey (NPS 0–10 or CSAT 1–5), once per key.
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/surveys",
    tag = "insights",
    operation_id = "recordSurveyResponse",
    security(("api_key" = ["server"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = SurveyBody,
    responses(
        (status = 200, description = "The recorded answer", body = SurveyResponse,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn record_survey(
    State(state): State<AppState>,
    auth: Authorized<ServerScope>,
    extract::Segment(customer_id): extract::Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<SurveyBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), customer_id, key)?;
    let reply = state.upstreams.insights(request, rpc!(record_survey_response)).await.map_err(insights_failed)?;
    Ok(written(reply.replayed, &reply.message.response.unwrap_or_default()))
}

/// NPS and CSAT over whole UTC days (the last 30 by default), from the answers' daily counts.
#[utoipa::path(
    get,
    path = "/v1/insights/surveys",
    tag = "insights",
    operation_id = "getSurveyScores",
    security(("api_key" = ["admin"])),
    params(SurveyScoresQuery),
    responses(
        (status = 200, description = "The scores of the days asked for", body = SurveyScores),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn survey_scores(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<SurveyScoresQuery>,
) -> Result<Response, Problem> {
    let request = query.into_proto(auth.program())?;
    let reply = state.upstreams.insights(request, rpc!(get_survey_scores)).await.map_err(insights_failed)?;
    Ok(json(&reply.message))
}

/// The program's numbers per day, week or month (members, orders, revenue,
/// points issued, redeemed, expired and outstanding, the liability), summed
/// from per-day aggregates.
#[utoipa::path(
    get,
    path = "/v1/insights/kpis",
    tag = "insights",
    operation_id = "getProgramKpis",
    security(("api_key" = ["admin"])),
    params(KpisQuery),
    responses(
        (status = 200, description = "The periods, their total and the liability", body = ProgramKpis),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn kpis(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<KpisQuery>,
) -> Result<Response, Problem> {
    let request = query.into_proto(auth.program())?;
    let reply = state.upstreams.insights(request, rpc!(get_program_kpis)).await.map_err(insights_failed)?;
    Ok(json(&reply.message))
}

/// Retention by first-order cohort: of the customers whose first order fell
/// in each month, how many ordered in each month since.
#[utoipa::path(
    get,
    path = "/v1/insights/cohorts",
    tag = "insights",
    operation_id = "getCohortRetention",
    security(("api_key" = ["admin"])),
    params(CohortsQuery),
    responses(
        (status = 200, description = "One cohort per month, oldest first", body = CohortRetention),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn cohorts(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<CohortsQuery>,
) -> Result<Response, Problem> {
    let request = query.into_proto(auth.program())?;
    let reply = state.upstreams.insights(request, rpc!(get_cohort_retention)).await.map_err(insights_failed)?;
    Ok(json(&reply.message))
}

/// Every change of a customer's segment, oldest first, after a sequence:
/// what a CRM sync or a marketing tool follows.
#[utoipa::path(
    get,
    path = "/v1/insights/segment-changes",
    tag = "insights",
    operation_id = "listSegmentChanges",
    security(("api_key" = ["admin"])),
    params(SegmentChangesQuery),
    responses(
        (status = 200, description = "The changes after `after_sequence`, in commit order", body = SegmentChanges),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn segment_changes(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<SegmentChangesQuery>,
) -> Result<Response, Problem> {
    let request = query.into_proto(auth.program());
    let reply = state.upstreams.insights(request, rpc!(list_segment_changes)).await.map_err(insights_failed)?;
    Ok(json(&reply.message))
}
