//! Webhooks (scope `admin`): the program's endpoints, their signing secrets,
//! the deliveries made to them, and the event types. Every route needs the
//! webhooks service (`WEBHOOKS_ADDR`); without it they answer 503
//! `BACKEND_NOT_CONFIGURED`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::extract::{AdminScope, Authorized, IdempotencyKey, JsonBody, QueryParams, Segment};
use crate::model::{
    self, DeliveriesQuery, Delivery, DeliveryPage, EventTypes, PageQuery, RedeliverBody, RotateSecretBody,
    SecretRotated, Subscription, SubscriptionBody, SubscriptionChange, SubscriptionCreated, SubscriptionPage,
};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json, webhooks_failed, written};
use crate::rpc;

/// The event types a subscription can ask for, with what each means.
#[utoipa::path(
    get,
    path = "/v1/webhooks/event-types",
    tag = "webhooks",
    operation_id = "listWebhookEventTypes",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "Every event type", body = EventTypes))
)]
pub async fn event_types(State(state): State<AppState>, auth: Authorized<AdminScope>) -> Result<Response, Problem> {
    let request = model::event_types_request(auth.program());
    let reply = state.upstreams.webhooks(request, rpc!(list_event_types)).await.map_err(webhooks_failed)?;
    Ok(json(&reply.message))
}

/// The JSON Schema (draft 2020-12) of one event type's delivery body, the
/// envelope with its `data`: what `docs/events/` holds. Served by the
/// gateway itself, so it answers without the webhooks service.
#[utoipa::path(
    get,
    path = "/v1/webhooks/event-types/{event_type}/schema",
    tag = "webhooks",
    operation_id = "getWebhookEventSchema",
    security(("api_key" = ["admin"])),
    params(("event_type" = String, Path, min_length = 1, max_length = 64, description = "An event type, e.g. `points.earned`")),
    responses(
        (status = 200, description = "The JSON Schema of the type's deliveries", body = Object, content_type = "application/schema+json"),
        (status = 404, description = "No such event type", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn event_schema(
    _auth: Authorized<AdminScope>,
    Segment(event_type): Segment<String>,
) -> Result<Response, Problem> {
    let schema = model::event_schemas::schema(&event_type)
        .ok_or_else(|| Problem::not_found("EVENT_TYPE_NOT_FOUND", format!("there is no event type {event_type:?}")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/schema+json")], schema).into_response())
}

/// The program's subscriptions, oldest first, paged.
#[utoipa::path(
    get,
    path = "/v1/webhooks/subscriptions",
    tag = "webhooks",
    operation_id = "listWebhookSubscriptions",
    security(("api_key" = ["admin"])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of subscriptions", body = SubscriptionPage),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    QueryParams(page): QueryParams<PageQuery>,
) -> Result<Response, Problem> {
    let request = model::subscriptions_request(auth.program(), page);
    let reply = state.upstreams.webhooks(request, rpc!(list_subscriptions)).await.map_err(webhooks_failed)?;
    Ok(json(&reply.message))
}

/// A new endpoint. The answer holds its signing secret (`whsec_…`), shown
/// this once: keep it to verify the `webhook-signature` of every delivery
/// (Standard Webhooks).
#[utoipa::path(
    post,
    path = "/v1/webhooks/subscriptions",
    tag = "webhooks",
    operation_id = "createWebhookSubscription",
    security(("api_key" = ["admin"])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer")),
    request_body = SubscriptionBody,
    responses(
        (status = 200, description = "The subscription and its secret", body = SubscriptionCreated,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (the URL, an event type)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<SubscriptionBody>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), key);
    let reply = state.upstreams.webhooks(request, rpc!(create_subscription)).await.map_err(webhooks_failed)?;
    Ok(written(reply.replayed, &reply.message))
}

/// One subscription (without its secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/subscriptions/{subscription_id}",
    tag = "webhooks",
    operation_id = "getWebhookSubscription",
    security(("api_key" = ["admin"])),
    params(("subscription_id" = String, Path, min_length = 1, max_length = 128, description = "The subscription")),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        (status = 404, description = "No such subscription in this program", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(subscription_id): Segment<String>,
) -> Result<Response, Problem> {
    let request = model::subscription_request(auth.program(), subscription_id);
    let reply = state.upstreams.webhooks(request, rpc!(get_subscription)).await.map_err(webhooks_failed)?;
    Ok(json(&reply.message.subscription.unwrap_or_default()))
}

/// Replaces what can change of a subscription: URL, event types,
/// description, ordering, enabled.
#[utoipa::path(
    put,
    path = "/v1/webhooks/subscriptions/{subscription_id}",
    tag = "webhooks",
    operation_id = "updateWebhookSubscription",
    security(("api_key" = ["admin"])),
    params(
        ("subscription_id" = String, Path, min_length = 1, max_length = 128, description = "The subscription"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = SubscriptionChange,
    responses(
        (status = 200, description = "The subscription as stored", body = Subscription,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such subscription in this program", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments, or the subscription changed meanwhile (`VERSION_MISMATCH`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(subscription_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<SubscriptionChange>,
) -> Result<Response, Problem> {
    let request = body.into_proto(auth.program(), subscription_id, key);
    let reply = state.upstreams.webhooks(request, rpc!(update_subscription)).await.map_err(webhooks_failed)?;
    Ok(written(reply.replayed, &reply.message.subscription.unwrap_or_default()))
}

/// Deletes a subscription and drops its pending deliveries.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/subscriptions/{subscription_id}",
    tag = "webhooks",
    operation_id = "deleteWebhookSubscription",
    security(("api_key" = ["admin"])),
    params(
        ("subscription_id" = String, Path, min_length = 1, max_length = 128, description = "The subscription"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    responses(
        (status = 204, description = "Deleted",
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such subscription in this program", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(subscription_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, Problem> {
    let request = model::delete_subscription_request(auth.program(), subscription_id, key);
    let reply = state.upstreams.webhooks(request, rpc!(delete_subscription)).await.map_err(webhooks_failed)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if reply.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A new signing secret, shown this once. Deliveries carry a signature by
/// the old secret too until the overlap ends, so receivers switch without
/// refusing one.
#[utoipa::path(
    post,
    path = "/v1/webhooks/subscriptions/{subscription_id}/secret",
    tag = "webhooks",
    operation_id = "rotateWebhookSecret",
    security(("api_key" = ["admin"])),
    params(
        ("subscription_id" = String, Path, min_length = 1, max_length = 128, description = "The subscription"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = RotateSecretBody,
    responses(
        (status = 200, description = "The subscription and its new secret", body = SecretRotated,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such subscription in this program", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(subscription_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<RotateSecretBody>,
) -> Result<Response, Problem> {
    let request = model::rotate_secret_request(auth.program(), subscription_id, body, key);
    let reply = state.upstreams.webhooks(request, rpc!(rotate_secret)).await.map_err(webhooks_failed)?;
    Ok(written(reply.replayed, &reply.message))
}

/// Deliveries to one subscription, newest first, each with its attempts
/// (status, latency, the start of the answer).
#[utoipa::path(
    get,
    path = "/v1/webhooks/subscriptions/{subscription_id}/deliveries",
    tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    security(("api_key" = ["admin"])),
    params(
        ("subscription_id" = String, Path, min_length = 1, max_length = 128, description = "The subscription"),
        DeliveriesQuery,
    ),
    responses(
        (status = 200, description = "One page of deliveries", body = DeliveryPage),
        (status = 404, description = "No such subscription in this program", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(subscription_id): Segment<String>,
    QueryParams(query): QueryParams<DeliveriesQuery>,
) -> Result<Response, Problem> {
    let request = query.into_proto(auth.program(), subscription_id);
    let reply = state.upstreams.webhooks(request, rpc!(list_deliveries)).await.map_err(webhooks_failed)?;
    Ok(json(&reply.message))
}

/// Delivers an event to the subscription once more, now, with the event's
/// own `webhook-id`, whatever became of its earlier deliveries.
#[utoipa::path(
    post,
    path = "/v1/webhooks/subscriptions/{subscription_id}/redeliveries",
    tag = "webhooks",
    operation_id = "redeliverWebhookEvent",
    security(("api_key" = ["admin"])),
    params(
        ("subscription_id" = String, Path, min_length = 1, max_length = 128, description = "The subscription"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "A retry with the same key returns the first answer"),
    ),
    request_body = RedeliverBody,
    responses(
        (status = 200, description = "The new delivery, pending", body = Delivery,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the saved answer of an earlier call"))),
        (status = 404, description = "No such subscription or event in this program", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with other arguments", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn redeliver(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(subscription_id): Segment<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<RedeliverBody>,
) -> Result<Response, Problem> {
    let request = model::redeliver_request(auth.program(), subscription_id, body, key);
    let reply = state.upstreams.webhooks(request, rpc!(redeliver)).await.map_err(webhooks_failed)?;
    Ok(written(reply.replayed, &reply.message.delivery.unwrap_or_default()))
}
