//! Webhooks (admin scope): the program's endpoints, the deliveries made to
//! them and the event types they can ask for.

use super::*;

/// Served as the webhooks service answers them: loyalty-proto derives their
/// JSON and schema.
pub use webhooks_pb::{
    Attempt, CreateSubscriptionResponse as SubscriptionCreated, Delivery, DeliveryState, EventType,
    ListDeliveriesResponse as DeliveryPage, ListEventTypesResponse as EventTypes,
    ListSubscriptionsResponse as SubscriptionPage, RotateSecretResponse as SecretRotated, Subscription,
    SubscriptionStatus,
};

/// An endpoint of the program: where events are POSTed and which.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    /// An `https://` URL (plain `http://` only where the operator allows it), without credentials or fragment.
    #[schema(max_length = 2000)]
    pub url: String,
    /// The event types delivered (`GET /v1/webhooks/event-types`); absent or empty: every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// What the endpoint is, for the shop's own people.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
    /// Deliver each customer's events one after the other, in order (a failing one holds back
    /// that customer's later ones); absent: false, in parallel.
    #[serde(default)]
    pub ordered: bool,
    /// Absent: true. A disabled subscription gets no events.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

/// A subscription as it is to be from now on: every field is replaced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionChange {
    /// An `https://` URL (plain `http://` only where the operator allows it), without credentials or fragment.
    #[schema(max_length = 2000)]
    pub url: String,
    /// The event types delivered; absent or empty: every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
    /// Each customer's events in order; absent: false.
    #[serde(default)]
    pub ordered: bool,
    /// Absent: true. Enabling a subscription disabled for failing delivers what was still pending.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// When set, the change is refused (409 `VERSION_MISMATCH`) unless the stored version still matches.
    pub expected_version: Option<i64>,
}

fn enabled_by_default() -> bool {
    true
}

impl SubscriptionBody {
    pub fn into_proto(self, program_id: &str, key: String) -> webhooks_pb::CreateSubscriptionRequest {
        webhooks_pb::CreateSubscriptionRequest {
            program_id: program_id.to_owned(),
            url: self.url,
            event_types: self.event_types,
            description: self.description,
            ordered: self.ordered,
            disabled: !self.enabled,
            idempotency_key: key,
        }
    }
}

impl SubscriptionChange {
    pub fn into_proto(
        self,
        program_id: &str,
        subscription_id: String,
        key: String,
    ) -> webhooks_pb::UpdateSubscriptionRequest {
        webhooks_pb::UpdateSubscriptionRequest {
            program_id: program_id.to_owned(),
            subscription_id,
            url: self.url,
            event_types: self.event_types,
            description: self.description,
            ordered: self.ordered,
            enabled: self.enabled,
            expected_version: self.expected_version.unwrap_or(0),
            idempotency_key: key,
        }
    }
}

/// A new signing secret.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretBody {
    /// How long the old secret still signs beside the new one, in seconds, at most 604800 (7 days);
    /// absent or 0: 86400 (a day).
    #[schema(minimum = 0, maximum = 604800)]
    pub overlap_seconds: Option<i64>,
}

/// One event delivered once more.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {
    /// The event (a delivery's `event_id`).
    #[schema(min_length = 1, max_length = 128)]
    pub event_id: String,
}

/// Which deliveries, from where.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only the deliveries of this event; absent or empty: every event.
    pub event_id: Option<String>,
    /// Only deliveries in this state.
    pub state: Option<DeliveryState>,
    /// Deliveries per page, at most 200; absent or 0: 50.
    #[param(minimum = 0, maximum = 200)]
    pub page_size: Option<i32>,
    /// The `next_page_token` of the previous page; absent: the first page.
    pub page_token: Option<String>,
}

impl DeliveriesQuery {
    pub fn into_proto(self, program_id: &str, subscription_id: String) -> webhooks_pb::ListDeliveriesRequest {
        webhooks_pb::ListDeliveriesRequest {
            program_id: program_id.to_owned(),
            subscription_id,
            event_id: self.event_id.unwrap_or_default(),
            state: self.state.map_or(0, Into::into),
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.unwrap_or_default(),
        }
    }
}

pub fn subscriptions_request(program_id: &str, page: PageQuery) -> webhooks_pb::ListSubscriptionsRequest {
    webhooks_pb::ListSubscriptionsRequest {
        program_id: program_id.to_owned(),
        page_size: page.page_size.unwrap_or(0),
        page_token: page.page_token.unwrap_or_default(),
    }
}

pub fn subscription_request(program_id: &str, subscription_id: String) -> webhooks_pb::GetSubscriptionRequest {
    webhooks_pb::GetSubscriptionRequest { program_id: program_id.to_owned(), subscription_id }
}

pub fn delete_subscription_request(
    program_id: &str,
    subscription_id: String,
    key: String,
) -> webhooks_pb::DeleteSubscriptionRequest {
    webhooks_pb::DeleteSubscriptionRequest { program_id: program_id.to_owned(), subscription_id, idempotency_key: key }
}

pub fn rotate_secret_request(
    program_id: &str,
    subscription_id: String,
    body: RotateSecretBody,
    key: String,
) -> webhooks_pb::RotateSecretRequest {
    webhooks_pb::RotateSecretRequest {
        program_id: program_id.to_owned(),
        subscription_id,
        overlap_seconds: body.overlap_seconds.unwrap_or(0),
        idempotency_key: key,
    }
}

pub fn redeliver_request(
    program_id: &str,
    subscription_id: String,
    body: RedeliverBody,
    key: String,
) -> webhooks_pb::RedeliverRequest {
    webhooks_pb::RedeliverRequest {
        program_id: program_id.to_owned(),
        subscription_id,
        event_id: body.event_id,
        idempotency_key: key,
    }
}

pub fn event_types_request(program_id: &str) -> webhooks_pb::ListEventTypesRequest {
    webhooks_pb::ListEventTypesRequest { program_id: program_id.to_owned() }
}
