//! Program administration (scope `admin`): earning rules, campaigns, the
//! audit log and manual adjustments. Changes are audited with the actor
//! `api-key:<key id>`.

use axum::extract::State;
use axum::response::Response;

use crate::extract::{AdminScope, Authorized, IdempotencyKey, JsonBody, QueryParams, Segment};
use crate::model::{
    self, Adjusted, AdjustmentBody, AuditPage, AuditQuery, Campaign, CampaignBody, CampaignList, CampaignQuery,
    Settings, SettingsBody,
};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json, points_failed, written};
use crate::rpc;

/// Field names the service prefixes with the message they belong to.
const SETTINGS_PREFIX: &str = "settings.";
const CAMPAIGN_PREFIX: &str = "campaign.";

/// Adds or takes away points by hand, with a reason.
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/adjustments",
    tag = "admin",
    operation_id = "adjustPoints",
    security(("api_key" = ["admin"])),
    params(
        ("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = AdjustmentBody,
    responses(
        (status = 200, description = "The adjustment made", body = Adjusted,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "Not enough points without `allow_debt` (`INSUFFICIENT_POINTS`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn adjust(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<AdjustmentBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), customer_id, auth.actor(), key)?;
    let reply = state.upstreams.points(request, rpc!(adjust)).await.map_err(points_failed)?;
    Ok(written(reply.replayed, &Adjusted::from(reply.message)))
}

/// The program's earning rules (the defaults until they are first set).
#[utoipa::path(
    get,
    path = "/v1/settings",
    tag = "admin",
    operation_id = "getSettings",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The earning rules", body = Settings))
)]
pub async fn get_settings(State(state): State<AppState>, auth: Authorized<AdminScope>) -> Result<Response, Problem> {
    let reply = state.upstreams.points(model::settings_request(auth.program()), rpc!(get_program_settings)).await;
    let reply = reply.map_err(points_failed)?;
    Ok(json(&Settings::from(reply.message.settings.unwrap_or_default())))
}

/// Replaces the program's earning rules; validated and audited.
#[utoipa::path(
    put,
    path = "/v1/settings",
    tag = "admin",
    operation_id = "putSettings",
    security(("api_key" = ["admin"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer")),
    request_body = SettingsBody,
    responses(
        (status = 200, description = "The stored rules", body = Settings,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "`expected_version` no longer matches (`VERSION_MISMATCH`), or the key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A rule is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn put_settings(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<SettingsBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), auth.actor(), key);
    let reply = state.upstreams.points(request, rpc!(put_program_settings)).await;
    let reply = reply.map_err(|status| points_failed(status).strip_field_prefix(SETTINGS_PREFIX))?;
    Ok(written(reply.replayed, &Settings::from(reply.message.settings.unwrap_or_default())))
}

/// The program's campaigns, current and upcoming (and ended ones with `include_ended=true`).
#[utoipa::path(
    get,
    path = "/v1/campaigns",
    tag = "admin",
    operation_id = "listCampaigns",
    security(("api_key" = ["admin"])),
    params(CampaignQuery),
    responses((status = 200, description = "The campaigns", body = CampaignList))
)]
pub async fn list_campaigns(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<CampaignQuery>,
) -> Result<Response, Problem> {
    let reply = state.upstreams.points(model::campaigns_request(auth.program(), query), rpc!(list_campaigns)).await;
    Ok(json(&CampaignList::from(reply.map_err(points_failed)?.message)))
}

/// Creates a time-boxed multiplier or bonus.
#[utoipa::path(
    post,
    path = "/v1/campaigns",
    tag = "admin",
    operation_id = "createCampaign",
    security(("api_key" = ["admin"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer")),
    request_body = CampaignBody,
    responses(
        (status = 200, description = "The campaign, with its id", body = Campaign,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn create_campaign(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<CampaignBody>,
) -> Result<Response, Problem> {
    let campaign = body.into_proto(String::new())?;
    let request = model::create_campaign_request(auth.program(), campaign, auth.actor(), key);
    let reply = state.upstreams.points(request, rpc!(create_campaign)).await;
    let reply = reply.map_err(|status| points_failed(status).strip_field_prefix(CAMPAIGN_PREFIX))?;
    Ok(written(reply.replayed, &Campaign::from(reply.message.campaign.unwrap_or_default())))
}

/// Replaces a campaign.
#[utoipa::path(
    put,
    path = "/v1/campaigns/{campaign_id}",
    tag = "admin",
    operation_id = "updateCampaign",
    security(("api_key" = ["admin"])),
    params(
        ("campaign_id" = String, Path, min_length = 1, max_length = 128, description = "The campaign's id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = CampaignBody,
    responses(
        (status = 200, description = "The campaign as stored", body = Campaign,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such campaign in this program (`CAMPAIGN_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn update_campaign(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(campaign_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<CampaignBody>,
) -> Result<Response, Problem> {
    let campaign = body.into_proto(campaign_id)?;
    let request = model::update_campaign_request(auth.program(), campaign, auth.actor(), key);
    let reply = state.upstreams.points(request, rpc!(update_campaign)).await;
    let reply = reply.map_err(|status| points_failed(status).strip_field_prefix(CAMPAIGN_PREFIX))?;
    Ok(written(reply.replayed, &Campaign::from(reply.message.campaign.unwrap_or_default())))
}

/// Ends a campaign now: its window is cut short, nothing is deleted.
#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign_id}/end",
    tag = "admin",
    operation_id = "endCampaign",
    security(("api_key" = ["admin"])),
    params(
        ("campaign_id" = String, Path, min_length = 1, max_length = 128, description = "The campaign's id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    responses(
        (status = 200, description = "The campaign as ended", body = Campaign,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such campaign in this program (`CAMPAIGN_NOT_FOUND`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The campaign id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn end_campaign(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(campaign_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, Problem> {
    let request = model::end_campaign_request(auth.program(), campaign_id, auth.actor(), key);
    let reply = state.upstreams.points(request, rpc!(end_campaign)).await.map_err(points_failed)?;
    Ok(written(reply.replayed, &Campaign::from(reply.message.campaign.unwrap_or_default())))
}

/// Every change to settings, campaigns and profiles, and every export and
/// erasure of a customer's data, newest first, paged; filtered by actor and
/// kind when asked.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "admin",
    operation_id = "listAuditEntries",
    security(("api_key" = ["admin"])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of the audit log", body = AuditPage),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Response, Problem> {
    let reply = state.upstreams.points(model::audit_request(auth.program(), query), rpc!(list_audit_entries)).await;
    Ok(json(&AuditPage::from(reply.map_err(points_failed)?.message)))
}
