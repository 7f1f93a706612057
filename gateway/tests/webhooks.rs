//! The gateway's webhooks routes over real HTTP, in front of real points and
//! webhooks services, delivering to a real receiver on loopback.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use loyalty_gateway::keys::Scope;
use reqwest::Method;
use serde_json::{Value, json};

use support::{Harness, Options, eventually};

/// A receiver that answers 200 and keeps each body with its `webhook-id`.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let kept = kept.clone();
        async move {
            let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            kept.lock().unwrap().push((id, serde_json::from_str(&body).unwrap_or(Value::Null)));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shop_subscribes_and_receives_its_orders_points() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let (url, received) = receiver().await;

    let types = h.get(&admin, "/v1/webhooks/event-types").await;
    let names: Vec<&str> =
        types.ok()["event_types"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"points.earned") && names.contains(&"points.expired"), "{names:?}");
    for name in &names {
        let schema = h.get(&admin, &format!("/v1/webhooks/event-types/{name}/schema")).await;
        assert_eq!((schema.status.as_u16(), schema.content_type()), (200, "application/schema+json"), "{name}");
        assert_eq!(schema.body["properties"]["type"]["const"], *name, "each type's own schema");
    }
    h.get(&admin, "/v1/webhooks/event-types/points.unknown/schema").await.problem(404, "EVENT_TYPE_NOT_FOUND");

    let body = json!({"url": url, "event_types": ["points.earned"], "description": "CRM"});
    let created = h.post(&admin, "/v1/webhooks/subscriptions", "sub-1", body.clone()).await;
    let secret = created.ok()["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let subscription = created.body["subscription"].clone();
    assert_eq!(subscription["status"], "enabled");
    assert_eq!(subscription["event_types"], json!(["points.earned"]));
    let id = subscription["subscription_id"].as_str().unwrap().to_owned();
    let replay = h.post(&admin, "/v1/webhooks/subscriptions", "sub-1", body).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.ok()["secret"], secret.as_str(), "a replay shows the one secret again");

    h.order(&admin, "anna", "order-1", 2_500).await.ok();
    assert!(eventually(Duration::from_secs(10), || async { !received.lock().unwrap().is_empty() }).await);
    let (event_id, event) = received.lock().unwrap()[0].clone();
    assert_eq!(event["type"], "points.earned");
    assert_eq!(event["data"]["order_id"], "order-1");
    assert_eq!(event["data"]["amount"], 25);

    let path = format!("/v1/webhooks/subscriptions/{id}/deliveries");
    let delivered = eventually(Duration::from_secs(10), || async {
        let page = h.get(&admin, &path).await;
        page.body["deliveries"][0]["state"] == "delivered"
    })
    .await;
    assert!(delivered);
    let page = h.get(&admin, &format!("{path}?state=delivered&event_id={event_id}")).await;
    let delivery = page.ok()["deliveries"][0].clone();
    assert_eq!(delivery["event_id"], event_id.as_str());
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert_eq!(delivery["attempts"][0]["response"], "ok");
    assert!(page.body.get("next_page_token").is_none());

    let again = h
        .post(&admin, &format!("/v1/webhooks/subscriptions/{id}/redeliveries"), "re-1", json!({"event_id": event_id}))
        .await;
    assert_eq!(again.ok()["event_id"], event_id.as_str());
    assert!(eventually(Duration::from_secs(10), || async { received.lock().unwrap().len() == 2 }).await);
    assert_eq!(received.lock().unwrap()[1].0, event_id, "a redelivery keeps the event's webhook-id");

    let rotated = h
        .post(&admin, &format!("/v1/webhooks/subscriptions/{id}/secret"), "rot-1", json!({"overlap_seconds": 60}))
        .await;
    assert_ne!(rotated.ok()["secret"], secret.as_str());
    assert!(rotated.body["subscription"]["previous_secret_until"].is_string());

    let off = json!({"url": url, "enabled": false, "expected_version": rotated.body["subscription"]["version"]});
    let updated = h.put(&admin, &format!("/v1/webhooks/subscriptions/{id}"), "upd-1", off.clone()).await;
    assert_eq!(updated.ok()["status"], "disabled");
    assert_eq!(updated.body["event_types"], json!([]), "an update replaces the event types");
    let stale = h.put(&admin, &format!("/v1/webhooks/subscriptions/{id}"), "upd-2", off).await;
    stale.problem(409, "VERSION_MISMATCH");

    let bad = h
        .post(
            &admin,
            "/v1/webhooks/subscriptions",
            "sub-2",
            json!({"url": "ftp://x.example/", "event_types": ["nope"]}),
        )
        .await;
    let fields = bad.problem(422, "INVALID_ARGUMENT")["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(fields, ["url", "event_types[0]"]);

    let deleted = h.bodiless(Method::DELETE, &admin, &format!("/v1/webhooks/subscriptions/{id}"), "del-1").await;
    assert_eq!(deleted.status.as_u16(), 204);
    h.get(&admin, &format!("/v1/webhooks/subscriptions/{id}")).await.problem(404, "SUBSCRIPTION_NOT_FOUND");
    assert_eq!(h.get(&admin, "/v1/webhooks/subscriptions").await.ok()["subscriptions"], json!([]));

    // Another program's key sees nothing of this one's.
    let other = h.key("other", Scope::Admin).await;
    let created = h.post(&admin, "/v1/webhooks/subscriptions", "sub-3", json!({"url": url})).await;
    let id = created.ok()["subscription"]["subscription_id"].as_str().unwrap().to_owned();
    h.get(&other, &format!("/v1/webhooks/subscriptions/{id}")).await.problem(404, "SUBSCRIPTION_NOT_FOUND");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_are_for_admin_keys_and_need_the_service() {
    let h = Harness::start().await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    for key in [&server, &storefront] {
        h.get(key, "/v1/webhooks/subscriptions").await.problem(403, "INSUFFICIENT_SCOPE");
        let body = json!({"url": "https://shop.example/hooks"});
        h.post(key, "/v1/webhooks/subscriptions", "s-1", body).await.problem(403, "INSUFFICIENT_SCOPE");
    }
    h.stop().await;

    let h = Harness::start_with(Options { optional_services: false, ..Options::default() }).await;
    let admin = h.key("shop", Scope::Admin).await;
    let answer = h.get(&admin, "/v1/webhooks/event-types").await;
    let detail = answer.problem(503, "BACKEND_NOT_CONFIGURED")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("WEBHOOKS_ADDR"), "{detail}");
    h.stop().await;
}
