//! The gRPC layer of the webhooks service: every request is validated here,
//! at the edge, and the API's prost types turned into the service's own.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use loyalty_common::clock::{Micros, to_timestamp};
use loyalty_common::validate::{Check, FieldViolation};
use loyalty_proto::webhooks::v1 as pb;
use loyalty_proto::webhooks::v1::webhooks_service_server::WebhooksService;

use crate::domain::{self, EVENT_TYPES, Endpoint};
use crate::error::DOMAIN;
use crate::service::Webhooks;
use crate::store::{DeliveryRow, ENABLED, FAILING, SubscriptionRow, WebhooksStore};

pub struct WebhooksApi {
    webhooks: Arc<Webhooks>,
}

impl WebhooksApi {
    pub fn new(webhooks: Arc<Webhooks>) -> Self {
        Self { webhooks }
    }

    fn store(&self) -> &WebhooksStore {
        self.webhooks.store()
    }
}

/// What CreateSubscription and RotateSecret save under their key: the
/// subscription's id and the secret they showed.
#[derive(serde::Serialize, serde::Deserialize)]
struct WithSecret {
    subscription_id: String,
    secret: String,
}

#[tonic::async_trait]
impl WebhooksService for WebhooksApi {
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("idempotency_key", &r.idempotency_key);
        let mut endpoint = Endpoint {
            url: r.url,
            event_types: r.event_types,
            description: r.description,
            ordered: r.ordered,
            enabled: !r.disabled,
        };
        check.0.extend(endpoint.validate(self.webhooks.settings().plain_http));
        check.done(DOMAIN)?;
        let program = r.program_id.clone();
        let request_json = serde_json::to_value(&endpoint).unwrap_or_default();
        let (saved, replayed) = self
            .store()
            .idempotent(&program, "CreateSubscription", &r.idempotency_key, &request_json, async |conn, now| {
                let secret = domain::new_secret();
                let id = WebhooksStore::insert_subscription(conn, &program, &endpoint, &secret, now).await?;
                Ok(WithSecret { subscription_id: id, secret })
            })
            .await?;
        let row = self.store().get_subscription(&r.program_id, &saved.subscription_id).await?;
        Ok(marked(
            pb::CreateSubscriptionResponse { subscription: Some(subscription_to_proto(&row)), secret: saved.secret },
            replayed,
        ))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("subscription_id", &r.subscription_id);
        check.done(DOMAIN)?;
        let row = self.store().get_subscription(&r.program_id, &r.subscription_id).await?;
        Ok(Response::new(pb::GetSubscriptionResponse { subscription: Some(subscription_to_proto(&row)) }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        // The token is the last id of the previous page.
        let page = check.page(r.page_size, "");
        if !r.page_token.is_empty() && !r.page_token.starts_with("sub_") {
            check.add(Err(FieldViolation::new("page_token", "is not a token from a previous page")));
        }
        check.done(DOMAIN)?;
        let rows = self.store().list_subscriptions(&r.program_id, &r.page_token, page.size + 1).await?;
        let (rows, next_page_token) = page.cut(rows, |last| last.subscription_id.clone());
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: rows.iter().map(subscription_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Result<Response<pb::UpdateSubscriptionResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("subscription_id", &r.subscription_id)
            .id("idempotency_key", &r.idempotency_key);
        let mut endpoint = Endpoint {
            url: r.url,
            event_types: r.event_types,
            description: r.description,
            ordered: r.ordered,
            enabled: r.enabled,
        };
        check.0.extend(endpoint.validate(self.webhooks.settings().plain_http));
        if r.expected_version < 0 {
            check.add(Err(FieldViolation::new("expected_version", "must not be negative")));
        }
        check.done(DOMAIN)?;
        let (program, id, expected) = (r.program_id.clone(), r.subscription_id.clone(), r.expected_version);
        let request_json = serde_json::json!({ "id": id, "endpoint": endpoint, "expected": expected });
        let dialect = self.store().database().dialect;
        let ((), replayed) = self
            .store()
            .idempotent(&program, "UpdateSubscription", &r.idempotency_key, &request_json, async |conn, _| {
                WebhooksStore::update_subscription(conn, dialect, &program, &id, &endpoint, expected).await?;
                Ok(())
            })
            .await?;
        let row = self.store().get_subscription(&r.program_id, &r.subscription_id).await?;
        if row.status == ENABLED {
            self.webhooks.wake();
        }
        Ok(marked(pb::UpdateSubscriptionResponse { subscription: Some(subscription_to_proto(&row)) }, replayed))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("subscription_id", &r.subscription_id)
            .id("idempotency_key", &r.idempotency_key);
        check.done(DOMAIN)?;
        let request_json = serde_json::json!({ "id": r.subscription_id });
        let id = r.subscription_id.clone();
        let ((), replayed) = self
            .store()
            .idempotent(&r.program_id, "DeleteSubscription", &r.idempotency_key, &request_json, async |conn, _| {
                WebhooksStore::delete_subscription(conn, &r.program_id, &id).await
            })
            .await?;
        Ok(marked(pb::DeleteSubscriptionResponse {}, replayed))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("subscription_id", &r.subscription_id)
            .id("idempotency_key", &r.idempotency_key);
        let overlap = domain::overlap(r.overlap_seconds);
        if let Err(violation) = &overlap {
            check.add(Err(violation.clone()));
        }
        check.done(DOMAIN)?;
        let overlap = overlap.unwrap_or_default();
        let (program, id) = (r.program_id.clone(), r.subscription_id.clone());
        let request_json = serde_json::json!({ "id": id, "overlap": r.overlap_seconds });
        let dialect = self.store().database().dialect;
        let (saved, replayed) = self
            .store()
            .idempotent(&program, "RotateSecret", &r.idempotency_key, &request_json, async |conn, now| {
                let secret = domain::new_secret();
                WebhooksStore::rotate_secret(conn, dialect, &program, &id, &secret, now + overlap).await?;
                Ok(WithSecret { subscription_id: id.clone(), secret })
            })
            .await?;
        let row = self.store().get_subscription(&r.program_id, &r.subscription_id).await?;
        Ok(marked(
            pb::RotateSecretResponse { subscription: Some(subscription_to_proto(&row)), secret: saved.secret },
            replayed,
        ))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("subscription_id", &r.subscription_id);
        if !r.event_id.is_empty() {
            check.id("event_id", &r.event_id);
        }
        let state = match pb::DeliveryState::try_from(r.state) {
            Ok(pb::DeliveryState::Unspecified) => None,
            Ok(pb::DeliveryState::Pending) => Some("pending"),
            Ok(pb::DeliveryState::Delivered) => Some("delivered"),
            Ok(pb::DeliveryState::Failed) => Some("failed"),
            Err(_) => {
                check.add(Err(FieldViolation::new("state", "must be PENDING, DELIVERED, FAILED or unspecified")));
                None
            }
        };
        let page = check.page(r.page_size, &r.page_token);
        check.done(DOMAIN)?;
        let event = Some(r.event_id.as_str()).filter(|e| !e.is_empty());
        let rows = self
            .store()
            .deliveries(&r.program_id, &r.subscription_id, event, state, page.before, page.size + 1)
            .await?;
        let (rows, next_page_token) = page.cut(rows, |last| last.delivery_seq);
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.iter().map(delivery_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn redeliver(
        &self,
        request: Request<pb::RedeliverRequest>,
    ) -> Result<Response<pb::RedeliverResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("subscription_id", &r.subscription_id)
            .id("event_id", &r.event_id)
            .id("idempotency_key", &r.idempotency_key);
        check.done(DOMAIN)?;
        let (program, subscription, event) = (r.program_id.clone(), r.subscription_id.clone(), r.event_id.clone());
        let request_json = serde_json::json!({ "subscription": subscription, "event": event });
        let (delivery_id, replayed): (String, bool) = self
            .store()
            .idempotent(&program, "Redeliver", &r.idempotency_key, &request_json, async |conn, now| {
                WebhooksStore::redeliver(conn, &program, &subscription, &event, now).await
            })
            .await?;
        self.webhooks.wake();
        let row = self.store().delivery(&r.program_id, &r.subscription_id, &delivery_id).await?;
        Ok(marked(pb::RedeliverResponse { delivery: Some(delivery_to_proto(&row)) }, replayed))
    }

    async fn list_event_types(
        &self,
        _request: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        let event_types = EVENT_TYPES
            .iter()
            .map(|(name, description)| pb::EventType { name: (*name).into(), description: (*description).into() })
            .collect();
        Ok(Response::new(pb::ListEventTypesResponse { event_types }))
    }
}

/// An answer, marked `idempotent-replayed: true` when it is the saved one of an earlier call.
fn marked<T>(message: T, replayed: bool) -> Response<T> {
    let mut response = Response::new(message);
    if replayed {
        response.metadata_mut().insert("idempotent-replayed", "true".parse().expect("static header value"));
    }
    response
}

fn instant(at: Option<Micros>) -> Option<prost_types::Timestamp> {
    at.map(to_timestamp)
}

pub fn subscription_to_proto(row: &SubscriptionRow) -> pb::Subscription {
    let status = match row.status {
        ENABLED => pb::SubscriptionStatus::Enabled,
        FAILING => pb::SubscriptionStatus::Failing,
        _ => pb::SubscriptionStatus::Disabled,
    };
    pb::Subscription {
        subscription_id: row.subscription_id.clone(),
        url: row.endpoint.url.clone(),
        event_types: row.endpoint.event_types.clone(),
        description: row.endpoint.description.clone(),
        status: status as i32,
        ordered: row.endpoint.ordered,
        created_at: Some(to_timestamp(row.created_at)),
        failing_since: instant(row.failing_since),
        previous_secret_until: instant(row.previous_until),
        version: row.version,
    }
}

pub fn delivery_to_proto(row: &DeliveryRow) -> pb::Delivery {
    let state = match row.state.as_str() {
        "pending" => pb::DeliveryState::Pending,
        "delivered" => pb::DeliveryState::Delivered,
        _ => pb::DeliveryState::Failed,
    };
    pb::Delivery {
        delivery_id: row.delivery_id.clone(),
        subscription_id: row.subscription_id.clone(),
        event_id: row.event_id.clone(),
        event_type: row.event_type.clone(),
        customer_id: row.customer_id.clone(),
        state: state as i32,
        created_at: Some(to_timestamp(row.created_at)),
        next_attempt_at: instant(row.next_attempt),
        attempts: row
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                attempted_at: Some(to_timestamp(a.attempted_at)),
                status_code: i32::try_from(a.status_code).unwrap_or(0),
                latency_ms: a.latency_ms,
                response: a.response.clone(),
                error: a.error.clone(),
            })
            .collect(),
        payload: row.body.clone(),
    }
}
