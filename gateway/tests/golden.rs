//! The shape of every route's answer, held against a golden file: one
//! scripted program (settings, a ladder, a campaign, rewards, referrals,
//! orders, a redemption) touches every documented route once, and each
//! answer's status and JSON shape (keys and value types, not values) must
//! equal `tests/golden/response_shapes.json`. A restructuring of the gateway
//! that changes the public JSON fails here; a deliberate change rewrites the
//! file with `GOLDEN_UPDATE=1 cargo test -p loyalty-gateway --test golden`
//! and shows in review. A documented route the script does not reach fails
//! too, so a new route comes with its shape.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use loyalty_common::clock::MICROS_PER_DAY;
use loyalty_gateway::keys::Scope;
use reqwest::Method;
use serde_json::{Value, json};

use support::{Answer, Harness, eventually, now_plus};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/response_shapes.json");

/// Keys and value types: `"string"`, `"integer"`, `"number"`, `"boolean"`,
/// `"null"`, objects by key, arrays by their first item (`[]` when empty).
fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("boolean"),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!("integer"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

/// What the script saw, by `METHOD /documented/path`.
#[derive(Default)]
struct Shapes(BTreeMap<String, Value>);

impl Shapes {
    #[track_caller]
    fn record(&mut self, route: &str, answer: &Answer) -> Value {
        assert!(answer.status.is_success(), "{route}: {} {:#}", answer.status, answer.body);
        let entry = json!({"status": answer.status.as_u16(), "body": shape(&answer.body)});
        assert!(self.0.insert(route.to_owned(), entry).is_none(), "{route} recorded twice");
        answer.body.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_in_its_golden_shape() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let anna = h.customer_token("shop", "anna").await;
    let mut seen = Shapes::default();

    let open = |path: &'static str| h.send(Method::GET, path, None, &[], None);
    seen.record("GET /healthz", &open("/healthz").await);
    seen.record("GET /readyz", &open("/readyz").await);

    // The program.
    seen.record("GET /v1/settings", &h.get(&admin, "/v1/settings").await);
    let settings = json!({
        "earn_rate": {"points": 1, "per_amount_minor": 100}, "rounding": "down", "currency": "EUR",
        "expiry": {"kind": "days_after_earn", "count": 365},
        "activity_rules": [{"activity_type": "signup", "points": 200}],
        "checkout": {"points": 100, "amount_minor": 100, "min_points": 100, "max_share_bp": 5_000, "step_points": 10},
    });
    seen.record("PUT /v1/settings", &h.put(&admin, "/v1/settings", "settings-1", settings).await);
    let ladder = json!({
        "tiers": [
            {"tier_id": "bronze", "name": "Bronze", "threshold": 0, "multiplier_bp": 10_000},
            {"tier_id": "silver", "name": "Silver", "threshold": 300, "multiplier_bp": 12_500, "perks": ["free returns"],
             "benefits": {"free_shipping": true, "flags": ["priority_support"]}},
        ],
        "window": {"kind": "lifetime"},
        "downgrade": {"kind": "immediate"},
    });
    seen.record("PUT /v1/tiers/ladder", &h.put(&admin, "/v1/tiers/ladder", "ladder-1", ladder).await);
    seen.record("GET /v1/tiers/ladder", &h.get(&admin, "/v1/tiers/ladder").await);
    let campaign = json!({
        "name": "Double weekend", "kind": "multiplier", "multiplier_bp": 20_000,
        "starts_at": now_plus(-3_600_000_000), "ends_at": now_plus(2 * MICROS_PER_DAY),
    });
    let made =
        seen.record("POST /v1/campaigns", &h.post(&admin, "/v1/campaigns", "campaign-1", campaign.clone()).await);
    let campaign_id = made["campaign_id"].as_str().unwrap().to_owned();
    let mut renamed = campaign.clone();
    renamed["name"] = json!("Double days");
    let path = format!("/v1/campaigns/{campaign_id}");
    seen.record("PUT /v1/campaigns/{campaign_id}", &h.put(&admin, &path, "campaign-2", renamed).await);
    seen.record("GET /v1/campaigns", &h.get(&admin, "/v1/campaigns").await);
    let referral_settings = json!({
        "enabled": true, "referrer_points": 300, "referee_points": 100, "attribution_window_days": 30,
        "clawback_window_days": 14,
    });
    let put = h.put(&admin, "/v1/referrals/settings", "referral-settings-1", referral_settings).await;
    seen.record("PUT /v1/referrals/settings", &put);
    seen.record("GET /v1/referrals/settings", &h.get(&admin, "/v1/referrals/settings").await);
    let reward = |name: &str, cost: i64| {
        json!({"name": name, "description": "5 EUR off", "kind": "fixed_discount", "amount_minor": 500,
               "currency": "EUR", "point_cost": cost, "voucher_validity_days": 30})
    };
    let created =
        seen.record("POST /v1/rewards", &h.post(&admin, "/v1/rewards", "reward-1", reward("€5 off", 100)).await);
    let reward_id = created["reward_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/rewards/{reward_id}");
    seen.record("PUT /v1/rewards/{reward_id}", &h.put(&admin, &path, "reward-2", reward("€5 off", 100)).await);
    let gift = json!({"customer_ids": ["anna"], "reason": "sorry for the wait"});
    seen.record(
        "POST /v1/rewards/{reward_id}/grants",
        &h.post(&admin, &format!("{path}/grants"), "gift-1", gift).await,
    );
    let codes = json!({"count": 2, "prefix": "WELCOME", "reason": "newsletter"});
    let batch = h.post(&admin, &format!("{path}/code-batches"), "codes-1", codes).await;
    seen.record("POST /v1/rewards/{reward_id}/code-batches", &batch);
    let spare = h.post(&admin, "/v1/rewards", "reward-3", reward("retired", 50)).await;
    let spare_id = spare.ok()["reward_id"].as_str().unwrap().to_owned();
    let archive = h.bodiless(Method::POST, &admin, &format!("/v1/rewards/{spare_id}/archive"), "archive-1").await;
    seen.record("POST /v1/rewards/{reward_id}/archive", &archive);
    seen.record("GET /v1/rewards", &h.get(&admin, "/v1/rewards?include_archived=true").await);
    seen.record("GET /v1/program", &h.get(&storefront, "/v1/program").await);

    // A customer's life.
    let signup = json!({"activity_type": "signup"});
    let path = "/v1/customers/anna/activities";
    seen.record("POST /v1/customers/{customer_id}/activities", &h.post(&admin, path, "signup-anna", signup).await);
    let profile = json!({
        "enrollment_channel": "store", "birth_month": 2, "birth_day": 29, "locale": "de-CH", "time_zone": "Europe/Zurich",
        "consents": [{"channel": "email", "granted": true, "changed_at": "2025-01-01T00:00:00Z"}],
        "attributes": {"favourite_store": "Zürich HB"}, "expected_version": 0,
    });
    let put = h.put(&admin, "/v1/customers/anna/profile", "profile-anna", profile).await;
    seen.record("PUT /v1/customers/{customer_id}/profile", &put);
    seen.record("GET /v1/customers/{customer_id}/profile", &h.get(&admin, "/v1/customers/anna/profile").await);
    let birthday = json!({"birth_month": 2, "birth_day": 29});
    let given = h.put_for(&storefront, &anna, "/v1/customers/anna/birthday", "birthday-anna", birthday).await;
    seen.record("PUT /v1/customers/{customer_id}/birthday", &given);
    // A preview's and an order's breakdown names the tier once the tiers service has placed
    // anna (after her sign-up points): wait for it, so the shape is one.
    let tiered = eventually(Duration::from_secs(10), || async {
        h.get(&admin, "/v1/customers/anna/tier").await.body["tier_id"].is_string()
    })
    .await;
    assert!(tiered, "anna never got a tier");
    seen.record(
        "GET /v1/orders/preview",
        &h.get(&admin, "/v1/orders/preview?customer_id=anna&amount_minor=5000&currency=EUR").await,
    );
    seen.record("POST /v1/orders", &h.order(&admin, "anna", "o-1", 15_000).await);
    let refund = json!({"refunded_amount_minor": 1_000});
    seen.record(
        "POST /v1/orders/{order_id}/refunds",
        &h.post(&admin, "/v1/orders/o-1/refunds", "refund-1", refund).await,
    );
    let path = "/v1/customers/anna/checkout-points?amount_minor=10000&currency=EUR";
    seen.record("GET /v1/customers/{customer_id}/checkout-points", &h.get_for(&storefront, &anna, path).await);
    let points = json!({"customer_id": "anna", "amount_minor": 10_000, "currency": "EUR", "points": 100});
    let applied = h.post(&admin, "/v1/orders/o-2/points", "points-o-2", points).await;
    seen.record("POST /v1/orders/{order_id}/points", &applied);
    let adjustment = json!({"points": 50, "reason": "goodwill"});
    let path = "/v1/customers/anna/adjustments";
    seen.record("POST /v1/customers/{customer_id}/adjustments", &h.post(&admin, path, "adjust-1", adjustment).await);
    let path = "/v1/customers/anna/transactions";
    seen.record("GET /v1/customers/{customer_id}/transactions", &h.get_for(&storefront, &anna, path).await);

    // Referrals.
    let path = "/v1/customers/anna/referral";
    let code = seen.record(
        "POST /v1/customers/{customer_id}/referral",
        &h.post_for(&storefront, &anna, path, "code-1", json!({})).await,
    );
    let code = code["code"].as_str().unwrap().to_owned();
    seen.record("GET /v1/customers/{customer_id}/referral", &h.get_for(&storefront, &anna, path).await);
    seen.record("GET /v1/referrals/codes/{code}", &h.get(&storefront, &format!("/v1/referrals/codes/{code}")).await);
    let signup = json!({"code": code, "customer_id": "ben"});
    seen.record("POST /v1/referrals/signups", &h.post(&admin, "/v1/referrals/signups", "signup-ben", signup).await);
    let referrals = h.get(&admin, "/v1/customers/anna/referrals").await;
    assert_eq!(referrals.ok()["referrals"][0]["referee_customer_id"], "ben", "{:?}", referrals.body);
    seen.record("GET /v1/customers/{customer_id}/referrals", &referrals);

    // Rewards at the storefront and the checkout.
    let path = "/v1/customers/anna/rewards";
    seen.record("GET /v1/customers/{customer_id}/rewards", &h.get_for(&storefront, &anna, path).await);
    let path = "/v1/customers/anna/redemptions";
    let redeem = json!({"reward_id": reward_id});
    let first = seen.record(
        "POST /v1/customers/{customer_id}/redemptions",
        &h.post_for(&storefront, &anna, path, "redeem-1", redeem.clone()).await,
    );
    let second = h.post_for(&storefront, &anna, path, "redeem-2", redeem).await;
    let second_id = second.ok()["redemption_id"].as_str().unwrap().to_owned();
    seen.record("GET /v1/customers/{customer_id}/redemptions", &h.get_for(&storefront, &anna, path).await);
    let voucher = first["voucher_code"].as_str().unwrap().to_owned();
    let path = format!("/v1/vouchers/{voucher}/validate");
    seen.record("POST /v1/vouchers/{code}/validate", &h.post(&admin, &path, "validate-1", json!({})).await);
    let path = format!("/v1/vouchers/{voucher}/consume");
    seen.record(
        "POST /v1/vouchers/{code}/consume",
        &h.post(&admin, &path, "consume-1", json!({"order_id": "o-2"})).await,
    );
    let cancel = h.bodiless(Method::POST, &admin, &format!("/v1/redemptions/{second_id}/cancel"), "cancel-1").await;
    seen.record("POST /v1/redemptions/{redemption_id}/cancel", &cancel);

    // Tiers: placed since before her first order.
    seen.record("GET /v1/customers/{customer_id}/tier", &h.get(&admin, "/v1/customers/anna/tier").await);
    let distribution = h.get(&admin, "/v1/tiers/distribution").await;
    assert!(distribution.ok()["members"].as_i64().unwrap() >= 1, "{:?}", distribution.body);
    seen.record("GET /v1/tiers/distribution", &distribution);
    let path = "/v1/customers/anna/tier/history";
    let history = h.get(&admin, path).await;
    assert!(!history.ok()["changes"].as_array().unwrap().is_empty(), "{:?}", history.body);
    seen.record("GET /v1/customers/{customer_id}/tier/history", &history);
    let path = "/v1/customers/anna/tier-assignment";
    let assigned =
        h.post(&admin, path, "assign-1", json!({"tier_id": "silver", "ends_at": now_plus(MICROS_PER_DAY)})).await;
    seen.record("POST /v1/customers/{customer_id}/tier-assignment", &assigned);
    let removed = h.bodiless(Method::DELETE, &admin, path, "unassign-1").await;
    seen.record("DELETE /v1/customers/{customer_id}/tier-assignment", &removed);
    let page = h.get_for(&storefront, &anna, "/v1/customers/anna/loyalty").await;
    seen.record("GET /v1/customers/{customer_id}/loyalty", &page);

    // Insights: anna's order, once the insights service has followed the ledger to it.
    seen.record("GET /v1/insights/settings", &h.get(&admin, "/v1/insights/settings").await);
    let thresholds = json!({
        "at_risk_days": 45, "churned_days": 120, "loyal_orders": 3, "loyal_days": 60, "expected_lifespan_days": 730,
    });
    seen.record("PUT /v1/insights/settings", &h.put(&admin, "/v1/insights/settings", "insights-1", thresholds).await);
    let counted = eventually(Duration::from_secs(10), || async {
        h.get(&admin, "/v1/customers/anna/insight").await.body["spend_minor"] == 14_000
    })
    .await;
    assert!(counted, "insights never counted anna's order");
    seen.record("GET /v1/customers/{customer_id}/insight", &h.get(&admin, "/v1/customers/anna/insight").await);
    let customers = h.get(&admin, "/v1/insights/customers?segment=new&order_by=spend&page_size=1").await;
    seen.record("GET /v1/insights/customers", &customers);
    seen.record("GET /v1/insights/segments", &h.get(&admin, "/v1/insights/segments").await);
    let survey = json!({"kind": "nps", "score": 9, "comment": "Quick delivery"});
    let path = "/v1/customers/anna/surveys";
    seen.record("POST /v1/customers/{customer_id}/surveys", &h.post(&admin, path, "survey-1", survey).await);
    let scores = h.get(&admin, "/v1/insights/surveys").await;
    assert_eq!((scores.body["nps"]["responses"].clone(), scores.body["nps"]["nps"].clone()), (json!(1), json!(100)));
    seen.record("GET /v1/insights/surveys", &scores);
    // The numbers through the gateway, by hand: one order of 150.00, 10.00 refunded.
    let kpis = h.get(&admin, "/v1/insights/kpis?granularity=week").await;
    let total = &kpis.body["total"];
    let numbers = ["orders", "revenue_minor", "refunded_minor", "average_order_minor", "active_members", "buyers"]
        .map(|field| total[field].clone());
    assert_eq!(numbers, [json!(1), json!(15_000), json!(1_000), json!(14_000), json!(1), json!(1)], "{kpis:?}");
    seen.record("GET /v1/insights/kpis", &kpis);
    // This month's cohort is anna.
    let cohorts = h.get(&admin, "/v1/insights/cohorts").await;
    let this_month = &cohorts.body["cohorts"][11];
    assert_eq!(
        (this_month["customers"].clone(), this_month["retained"].clone()),
        (json!(1), json!([1])),
        "{cohorts:?}"
    );
    seen.record("GET /v1/insights/cohorts", &cohorts);
    let changes = h.get(&admin, "/v1/insights/segment-changes?page_size=10").await;
    let first = &changes.body["changes"][0];
    assert_eq!(
        (first["customer_id"].clone(), first["to_segment"].clone()),
        (json!("anna"), json!("new")),
        "{changes:?}"
    );
    assert!(first.get("from_segment").is_none(), "a first segment comes from none");
    seen.record("GET /v1/insights/segment-changes", &changes);

    // Webhooks: a subscription to a receiver here, an order's event delivered to it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(|| async { "ok" })).await });
    seen.record("GET /v1/webhooks/event-types", &h.get(&admin, "/v1/webhooks/event-types").await);
    let schema = h.get(&admin, "/v1/webhooks/event-types/tier.upgraded/schema").await;
    seen.record("GET /v1/webhooks/event-types/{event_type}/schema", &schema);
    let body = json!({"url": hooks, "event_types": ["points.earned"], "description": "CRM", "ordered": true});
    let created = seen
        .record("POST /v1/webhooks/subscriptions", &h.post(&admin, "/v1/webhooks/subscriptions", "hook-1", body).await);
    let id = created["subscription"]["subscription_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhooks/subscriptions/{id}");
    seen.record("GET /v1/webhooks/subscriptions", &h.get(&admin, "/v1/webhooks/subscriptions").await);
    seen.record("GET /v1/webhooks/subscriptions/{subscription_id}", &h.get(&admin, &path).await);
    h.order(&admin, "ben", "order-hooks", 1_000).await.ok();
    let deliveries = format!("{path}/deliveries");
    // Ben's: earlier entries the service had not followed yet when the subscription came may be delivered too.
    let bens = || async {
        let page = h.get(&admin, &deliveries).await;
        let mut bens = page.body["deliveries"].as_array().into_iter().flatten().filter(|d| d["customer_id"] == "ben");
        bens.find(|d| d["state"] == "delivered").map(|d| d["event_id"].as_str().unwrap().to_owned())
    };
    assert!(
        eventually(Duration::from_secs(10), || async { bens().await.is_some() }).await,
        "ben's event never arrived"
    );
    let bens_event = bens().await.unwrap();
    let page = h.get(&admin, &format!("{deliveries}?event_id={bens_event}")).await;
    let page = seen.record("GET /v1/webhooks/subscriptions/{subscription_id}/deliveries", &page);
    let event_id = page["deliveries"][0]["event_id"].clone();
    let mut again = h.post(&admin, &format!("{path}/redeliveries"), "hook-2", json!({"event_id": event_id})).await;
    // The worker may have sent it before the answer reads it back: how far it
    // got (attempts, the next one) is the deliveries list's shape, not this one's.
    for racy in ["attempts", "next_attempt_at"] {
        again.body.as_object_mut().map(|delivery| delivery.remove(racy));
    }
    seen.record("POST /v1/webhooks/subscriptions/{subscription_id}/redeliveries", &again);
    let rotated = h.post(&admin, &format!("{path}/secret"), "hook-3", json!({"overlap_seconds": 3600})).await;
    seen.record("POST /v1/webhooks/subscriptions/{subscription_id}/secret", &rotated);
    let update = json!({"url": hooks, "event_types": [], "description": "CRM, all events"});
    seen.record("PUT /v1/webhooks/subscriptions/{subscription_id}", &h.put(&admin, &path, "hook-4", update).await);
    let deleted = h.bodiless(Method::DELETE, &admin, &path, "hook-5").await;
    seen.record("DELETE /v1/webhooks/subscriptions/{subscription_id}", &deleted);

    // The customer's rights, on a customer nobody knows (whose export and erasure are the same every run).
    seen.record("GET /v1/customers/{customer_id}/export", &h.get(&admin, "/v1/customers/nobody/export").await);
    let erased = h.send(Method::DELETE, "/v1/customers/nobody", Some(&admin), &[], None).await;
    seen.record("DELETE /v1/customers/{customer_id}", &erased);

    // Last, so that the audit has every kind of change in it.
    let end = h.bodiless(Method::POST, &admin, &format!("/v1/campaigns/{campaign_id}/end"), "end-1").await;
    seen.record("POST /v1/campaigns/{campaign_id}/end", &end);
    seen.record("GET /v1/audit", &h.get(&admin, "/v1/audit").await);
    h.stop().await;

    // Every documented route was reached.
    let document: Value = serde_json::from_str(&loyalty_gateway::openapi::document()).unwrap();
    let documented: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| format!("{} {path}", m.to_uppercase())))
        .collect();
    let missing: Vec<&String> = documented.iter().filter(|r| !seen.0.contains_key(*r)).collect();
    assert!(missing.is_empty(), "routes the script does not reach: {missing:?}");

    let actual = serde_json::to_string_pretty(&seen.0).unwrap() + "\n";
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::write(GOLDEN, &actual).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap_or_default();
    if golden != actual {
        let want: BTreeMap<String, Value> = serde_json::from_str(&golden).unwrap_or_default();
        let changed: Vec<&String> =
            seen.0.keys().chain(want.keys()).filter(|r| seen.0.get(*r) != want.get(*r)).collect();
        panic!(
            "response shapes differ from {GOLDEN} for {changed:?}; if the change is meant, rerun with GOLDEN_UPDATE=1 \
             and commit the file\n{actual}"
        );
    }
}
