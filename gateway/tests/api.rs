//! The gateway over real HTTP, in front of a real points service.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use loyalty_common::clock::{Clock, MICROS_PER_DAY, MICROS_PER_SECOND, SystemClock};
use loyalty_gateway::keys::Scope;
use loyalty_gateway::rfc3339;
use reqwest::Method;
use serde_json::{Value, json};

use support::{Backend, Harness, Options, closed_port, eventually, now_plus, silent_server};

async fn shop_flow(backend: Backend) {
    let h = Harness::start_with(Options { backend, ..Options::default() }).await;
    let admin = h.key("shop", Scope::Admin).await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let anna = h.customer_token("shop", "anna").await;

    let rules = json!({
        "currency": "EUR",
        "earn_rate": {"points": 1, "per_amount_minor": 100},
        "rounding": "down",
        "minimum_order_minor": 1_000,
        "expiry": {"kind": "days_after_earn", "count": 365},
        "activity_rules": [{"activity_type": "signup", "points": 500, "cap_count": 1, "cap_period": "lifetime"}],
    });
    let put = h.put(&admin, "/v1/settings", "rules-1", rules).await;
    assert!(put.ok()["version"].as_i64().unwrap() > 0);

    // An order earns once; recording it again replays the first answer.
    let earned = h.order(&server, "anna", "1001", 12_999).await;
    let body = earned.ok();
    assert_eq!(body["points"], 129);
    assert_eq!(body["breakdown"]["base_points"], 129);
    assert_eq!(body["balance"]["available"], 129);
    assert!(rfc3339::parse(body["expires_at"].as_str().unwrap()).is_some(), "{body:#}");
    assert_eq!(earned.header("idempotent-replayed"), None);
    let again = h.order(&server, "anna", "1001", 12_999).await;
    assert_eq!(again.body, earned.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The order id is what makes an order idempotent: another amount under a fresh key is refused as such.
    let body = serde_json::json!({"customer_id": "anna", "order_id": "1001", "amount_minor": 5_000, "currency": "EUR"});
    let conflict = h.post(&server, "/v1/orders", "a-fresh-key", body).await;
    assert!(conflict.problem(409, "ORDER_ALREADY_RECORDED")["detail"].as_str().unwrap().contains("order 1001"));

    // A refund takes back its share; a replay of it changes nothing; the key with other arguments is refused.
    let refund = h.post(&server, "/v1/orders/1001/refunds", "refund-1", json!({"refunded_amount_minor": 6_500})).await;
    assert_eq!(refund.ok()["points_reversed"], 64);
    assert_eq!(refund.body["balance"]["available"], 65);
    let replay = h.post(&server, "/v1/orders/1001/refunds", "refund-1", json!({"refunded_amount_minor": 6_500})).await;
    assert_eq!(replay.body, refund.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let reused = h.post(&server, "/v1/orders/1001/refunds", "refund-1", json!({"refunded_amount_minor": 100})).await;
    reused.problem(409, "IDEMPOTENCY_KEY_REUSED");
    let too_much =
        h.post(&server, "/v1/orders/1001/refunds", "refund-2", json!({"refunded_amount_minor": 9_000})).await;
    assert_eq!(too_much.problem(409, "REFUND_EXCEEDS_ORDER")["metadata"]["refundable"], "6499");

    // An activity within its cap, then past it.
    let signup =
        h.post(&server, "/v1/customers/anna/activities", "signup-anna", json!({"activity_type": "signup"})).await;
    assert_eq!(signup.ok()["points"], 500);
    assert_eq!(signup.body["balance"]["available"], 565);
    let twice =
        h.post(&server, "/v1/customers/anna/activities", "signup-anna-2", json!({"activity_type": "signup"})).await;
    twice.problem(409, "ACTIVITY_CAP_REACHED");

    let small = h.get(&server, "/v1/orders/preview?customer_id=anna&amount_minor=999&currency=EUR").await;
    assert_eq!(small.ok()["points"], 0);
    assert_eq!(small.body["breakdown"]["no_points_reason"], "below_minimum_order", "{:#}", small.body);
    let preview = h.get(&server, "/v1/orders/preview?customer_id=anna&amount_minor=5000&currency=EUR").await;
    assert_eq!(preview.ok()["points"], 50);
    assert_eq!(preview.body["breakdown"]["total_points"], 50);
    assert!(preview.body["breakdown"].get("no_points_reason").is_none(), "only when nothing is earned");

    // The storefront view of the same customer, signed in.
    let page = h.get_for(&storefront, &anna, "/v1/customers/anna/loyalty").await;
    let page = page.ok();
    assert_eq!(page["customer_id"], "anna");
    assert_eq!(page["points"]["available"], 565);
    assert_eq!(page["points"]["pending"], 0);
    assert_eq!(page["points"]["expiring_soon"]["within_days"], 30);
    assert_eq!(page["points"]["expiring_soon"]["total_points"], 0);
    // No ladder yet: the tiers service answers, the customer has no tier.
    assert_eq!(page["tier"]["available"], true, "{page:#}");
    assert!(page["tier"].get("tier_id").is_none(), "{page:#}");
    assert_eq!(page["referral"]["available"], true, "{page:#}");
    assert!(page["referral"].get("code").is_none(), "reading the page makes no code: {page:#}");
    assert_eq!(page["rewards"], json!({"available": true, "redeemable": []}));

    // A customer with nothing yet: an empty account and an empty history, and nothing made by looking.
    let nobody = h.get(&server, "/v1/customers/nobody-yet/loyalty").await;
    assert_eq!(nobody.ok()["points"]["available"], 0, "{:#}", nobody.body);
    assert_eq!(
        (nobody.body["points"]["pending"].as_i64(), nobody.body["points"]["version"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(h.get(&server, "/v1/customers/nobody-yet/transactions").await.ok()["entries"], json!([]));
    let referral = h.get(&server, "/v1/customers/nobody-yet/referral").await;
    assert!(referral.ok().get("code").is_none(), "a GET makes no code: {:#}", referral.body);
    let made = h.post(&server, "/v1/customers/nobody-yet/referral", "code-1", json!({})).await;
    let code = made.ok()["code"].as_str().expect("a code on request").to_owned();
    let again = h.post(&server, "/v1/customers/nobody-yet/referral", "code-2", json!({})).await;
    assert_eq!(again.ok()["code"], code.as_str(), "one code per customer");
    assert_eq!(h.get(&server, "/v1/customers/nobody-yet/referral").await.ok()["code"], code.as_str());

    let first = h.get_for(&storefront, &anna, "/v1/customers/anna/transactions?page_size=2").await;
    let kinds = |a: &support::Answer| -> Vec<String> {
        a.body["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(kinds(&first), ["earn", "reverse"], "{:#}", first.body);
    let token = first.ok()["next_page_token"].as_str().expect("a next page").to_owned();
    let next = format!("/v1/customers/anna/transactions?page_size=2&page_token={token}");
    let second = h.get_for(&storefront, &anna, &next).await;
    assert_eq!(kinds(&second), ["earn"]);
    assert_eq!(second.body["entries"][0]["points"], 129);
    assert!(second.body.get("next_page_token").is_none());

    h.stop().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn shop_flow() {
        super::shop_flow(super::Backend::Sqlite).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn shop_flow() {
        super::shop_flow(super::Backend::Postgres).await;
    }
}

/// Points at checkout over HTTP: the rule in the settings, the storefront's
/// quote for a signed-in customer, the shop's back end spending them on an
/// order (once), a refusal past the share, and a refund giving back its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn points_pay_part_of_an_order_at_checkout() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let bo = h.customer_token("shop", "bo").await;
    let rules = json!({
        "currency": "EUR",
        "earn_rate": {"points": 1, "per_amount_minor": 100},
        "rounding": "down",
        "expiry": {"kind": "never"},
        "checkout": {"points": 100, "amount_minor": 100, "max_share_bp": 5_000, "step_points": 100},
    });
    let put = h.put(&admin, "/v1/settings", "rules-1", rules).await;
    assert_eq!(
        put.ok()["checkout"],
        json!({"points": 100, "amount_minor": 100, "min_points": 0, "max_share_bp": 5_000, "step_points": 100})
    );
    h.order(&server, "bo", "o-1", 200_000).await.ok();

    let quote = h.get_for(&storefront, &bo, "/v1/customers/bo/checkout-points?amount_minor=3050&currency=EUR").await;
    let quote = quote.ok();
    assert_eq!(
        (quote["max_points"].as_i64(), quote["max_discount_minor"].as_i64()),
        (Some(1_500), Some(1_500)),
        "{quote:#}"
    );
    assert_eq!(quote["available"], 2_000);
    assert_eq!(quote["rule"]["max_share_bp"], 5_000);

    let body = json!({"customer_id": "bo", "amount_minor": 3_050, "currency": "EUR", "points": 1_500});
    h.post(&storefront, "/v1/orders/o-2/points", "p-1", body.clone()).await.problem(403, "INSUFFICIENT_SCOPE");
    let applied = h.post(&server, "/v1/orders/o-2/points", "p-1", body.clone()).await;
    assert_eq!(
        (applied.ok()["discount_minor"].as_i64(), applied.body["balance"]["available"].as_i64()),
        (Some(1_500), Some(500))
    );
    let again = h.post(&server, "/v1/orders/o-2/points", "p-2", body).await;
    assert_eq!((again.body.clone(), again.header("idempotent-replayed")), (applied.body.clone(), Some("true")));
    let more = json!({"customer_id": "bo", "amount_minor": 3_050, "currency": "EUR", "points": 1_600});
    let refused = h.post(&server, "/v1/orders/o-3/points", "p-3", more).await;
    assert_eq!(refused.problem(409, "CHECKOUT_SHARE_EXCEEDED")["metadata"]["max_points"], "1500");

    let refund = h.post(&server, "/v1/orders/o-2/refunds", "r-1", json!({"refunded_amount_minor": 1_525})).await;
    let refund = refund.ok();
    assert_eq!(
        (refund["points_restored"].as_i64(), refund["points_reversed"].as_i64()),
        (Some(750), Some(0)),
        "{refund:#}"
    );
    assert!(refund.get("transaction_id").is_none() && refund["restore_transaction_id"].is_string(), "{refund:#}");
    assert_eq!(refund["balance"]["available"], 1_250);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_manages_rules_campaigns_audit_and_adjustments() {
    let h = Harness::start().await;
    let created = h.new_key("shop", Scope::Admin).await;
    let admin = created.key.clone();

    let defaults = h.get(&admin, "/v1/settings").await;
    assert_eq!(defaults.ok()["earn_rate"], json!({"points": 1, "per_amount_minor": 100}));
    assert_eq!(defaults.body["version"], 0);

    let rules = json!({"earn_rate": {"points": 2, "per_amount_minor": 100}, "rounding": "nearest", "expiry": {"kind": "never"}});
    let stored = h.put(&admin, "/v1/settings", "rules-1", rules.clone()).await;
    let version = stored.ok()["version"].as_i64().unwrap();
    assert_eq!(stored.body["rounding"], "nearest");
    let mut stale = rules.clone();
    stale["expected_version"] = json!(version - 1);
    h.put(&admin, "/v1/settings", "rules-2", stale).await.problem(409, "VERSION_MISMATCH");
    let invalid = json!({"earn_rate": {"points": 1, "per_amount_minor": 0}, "rounding": "down", "pending_days": 999, "expiry": {"kind": "never"}});
    let refused = h.put(&admin, "/v1/settings", "rules-3", invalid).await;
    refused.problem(422, "INVALID_ARGUMENT");
    assert_eq!(refused.error_fields(), ["earn_rate.per_amount_minor", "pending_days"]);

    // A double-points campaign running now.
    let campaign = json!({
        "name": "double weekend", "kind": "multiplier", "multiplier_bp": 20000,
        "starts_at": now_plus(-3_600 * MICROS_PER_SECOND), "ends_at": now_plus(2 * MICROS_PER_DAY),
    });
    let made = h.post(&admin, "/v1/campaigns", "campaign-1", campaign.clone()).await;
    let id = made.ok()["campaign_id"].as_str().unwrap().to_owned();
    assert_eq!(made.body["multiplier_bp"], 20000);
    assert_eq!(h.post(&admin, "/v1/campaigns", "campaign-1", campaign.clone()).await.body, made.body);
    let earned = h.order(&admin, "carl", "2001", 10_000).await;
    assert_eq!(earned.ok()["breakdown"]["base_points"], 200);
    assert_eq!(earned.body["breakdown"]["campaign_bonus_points"], 200);
    assert_eq!(earned.body["breakdown"]["campaign_ids"], json!([id]));

    let mut renamed = campaign.clone();
    renamed["name"] = json!("double days");
    let updated = h.put(&admin, &format!("/v1/campaigns/{id}"), "campaign-2", renamed.clone()).await;
    assert_eq!(updated.ok()["name"], "double days");
    h.put(&admin, "/v1/campaigns/no-such-campaign", "campaign-3", renamed).await.problem(404, "CAMPAIGN_NOT_FOUND");
    let mut bad = campaign.clone();
    bad["multiplier_bp"] = json!(5_000);
    let refused = h.post(&admin, "/v1/campaigns", "campaign-4", bad).await;
    refused.problem(422, "INVALID_ARGUMENT");
    assert_eq!(refused.error_fields(), ["multiplier_bp"]);

    let listed = h.get(&admin, "/v1/campaigns").await;
    assert_eq!(listed.ok()["campaigns"][0]["campaign_id"], id.as_str());
    let end = format!("/v1/campaigns/{id}/end");
    let ended = h.send(Method::POST, &end, Some(&admin), &[("idempotency-key", "end-1")], None).await;
    let ends_at = rfc3339::parse(ended.ok()["ends_at"].as_str().unwrap()).unwrap();
    assert!(ends_at <= SystemClock.now());
    assert_eq!(h.get(&admin, "/v1/campaigns").await.body["campaigns"], json!([]));
    assert_eq!(
        h.get(&admin, "/v1/campaigns?include_ended=true").await.body["campaigns"][0]["campaign_id"],
        id.as_str()
    );

    let audit = h.get(&admin, "/v1/audit?page_size=2").await;
    let entries = audit.ok()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2);
    assert!(audit.body["next_page_token"].is_string());
    for entry in &entries {
        assert_eq!(entry["actor"], format!("api-key:{}", created.key_id));
    }
    // Old and new values in the shapes their own routes answer: the ended
    // campaign as GET /v1/campaigns shows it, the settings as GET /v1/settings.
    let ended_entry = &entries[0];
    assert_eq!((&ended_entry["entity"], &ended_entry["entity_id"]), (&json!("campaign"), &json!(id)));
    assert_eq!(ended_entry["new_value"], ended.body, "{ended_entry:#}");
    assert_eq!(ended_entry["old_value"]["name"], "double days");
    assert_eq!(ended_entry["old_value"]["kind"], "multiplier");
    assert!(rfc3339::parse(ended_entry["old_value"]["ends_at"].as_str().unwrap()).is_some(), "{ended_entry:#}");
    let all = h.get(&admin, "/v1/audit").await.ok()["entries"].as_array().unwrap().clone();
    let creation = all.iter().find(|e| e["entity"] == "campaign" && e.get("old_value").is_none());
    assert_eq!(creation.expect("the creation")["new_value"], made.body);
    let settings = all.iter().find(|e| e["entity"] == "settings").expect("the settings change");
    assert_eq!(settings["old_value"], defaults.body);
    assert_eq!(settings["new_value"], stored.body);

    // Manual adjustments: up, down past zero only with allow_debt.
    let path = "/v1/customers/dora/adjustments";
    let up = h.post(&admin, path, "adjust-1", json!({"points": 50, "reason": "goodwill"})).await;
    assert_eq!(up.ok()["balance"]["available"], 50);
    let short = h.post(&admin, path, "adjust-2", json!({"points": -80, "reason": "correction"})).await;
    assert_eq!(short.problem(409, "INSUFFICIENT_POINTS")["metadata"]["available"], "50");
    let debt =
        h.post(&admin, path, "adjust-3", json!({"points": -80, "reason": "correction", "allow_debt": true})).await;
    assert_eq!(debt.ok()["balance"]["available"], -30);
    let no_reason = h.post(&admin, path, "adjust-4", json!({"points": 5, "reason": " "})).await;
    no_reason.problem(422, "INVALID_ARGUMENT");
    assert_eq!(no_reason.error_fields(), ["reason"]);
    let kept = h.post(&admin, path, "adjust-5", json!({"points": 5, "reason": "gift", "never_expires": true})).await;
    assert_eq!(kept.ok()["balance"]["available"], -25);
    let odd = h.post(&admin, path, "adjust-6", json!({"points": -5, "reason": "x", "never_expires": true})).await;
    odd.problem(422, "INVALID_ARGUMENT");
    assert_eq!(odd.error_fields(), ["never_expires"]);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_a_valid_key_are_unauthenticated() {
    let h = Harness::start_with(Options { key_cache_ttl_secs: 1, ..Options::default() }).await;
    let path = "/v1/customers/anna/loyalty";

    let none = h.send(Method::GET, path, None, &[], None).await;
    none.problem(401, "UNAUTHENTICATED");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let basic = h.send(Method::GET, path, None, &[("authorization", "Basic YTpi")], None).await;
    basic.problem(401, "UNAUTHENTICATED");
    h.get("not-a-key", path).await.problem(401, "UNAUTHENTICATED");
    let unknown = format!("lk_{}_{}", "0".repeat(16), "0".repeat(64));
    h.get(&unknown, path).await.problem(401, "UNAUTHENTICATED");

    let real = h.new_key("shop", Scope::Admin).await;
    let mut wrong_secret = real.key.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });
    h.get(&wrong_secret, path).await.problem(401, "UNAUTHENTICATED");
    // The real key is authenticated: the customer simply has nothing yet.
    assert_eq!(h.get(&real.key, path).await.ok()["points"]["available"], 0);

    let revoked_early = h.new_key("shop", Scope::Admin).await;
    assert!(h.keys.revoke(&revoked_early.key_id).await.unwrap());
    h.get(&revoked_early.key, path).await.problem(401, "UNAUTHENTICATED");

    // A key in use stops working within the cache TTL (1 s here) of its revocation.
    assert!(h.keys.revoke(&real.key_id).await.unwrap());
    let (hr, revoked) = (&h, real.key.as_str());
    let rejected =
        eventually(Duration::from_secs(5), || async move { hr.get(revoked, path).await.status.as_u16() == 401 }).await;
    assert!(rejected, "a revoked key still works after its cache TTL");
    assert!(!h.keys.revoke("0000000000000000").await.unwrap());

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_creates_lists_and_revokes_keys() {
    let h = Harness::start_with(Options { key_cache_ttl_secs: 1, ..Options::default() }).await;
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
            .args(args)
            .env("DATABASE_URL", &h.database_url)
            .output()
            .expect("the binary runs")
    };

    let created = cli(&["keys", "create", "--program", "shop", "--scope", "storefront", "--label", "widget"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    assert_eq!(key.len(), 3 + 16 + 1 + 64, "{key}");
    h.get(&key, "/v1/program").await.ok();
    h.get(&key, "/v1/settings").await.problem(403, "INSUFFICIENT_SCOPE");

    let listed = cli(&["keys", "list", "--program", "shop"]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.status.success());
    assert!(listing.contains(&key_id) && listing.contains("storefront") && listing.contains("widget"), "{listing}");
    assert!(!listing.contains(&key[20..]), "the listing shows a secret: {listing}");

    let revoked = cli(&["keys", "revoke", &key_id]);
    assert!(revoked.status.success());
    assert!(!cli(&["keys", "revoke", "0000000000000000"]).status.success());
    let bad_scope = cli(&["keys", "create", "--program", "shop", "--scope", "root"]);
    assert!(!bad_scope.status.success());
    let (hr, kr) = (&h, key.as_str());
    let rejected =
        eventually(Duration::from_secs(5), || async move { hr.get(kr, "/v1/program").await.status == 401 }).await;
    assert!(rejected, "a key revoked by the CLI still works");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scopes_limit_what_a_key_may_call() {
    let h = Harness::start().await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let server = h.key("shop", Scope::Server).await;
    let admin = h.key("shop", Scope::Admin).await;
    h.order(&server, "anna", "1", 1_000).await.ok();

    h.get(&storefront, "/v1/settings").await.problem(403, "INSUFFICIENT_SCOPE");
    h.get(&storefront, "/v1/orders/preview?amount_minor=100&currency=EUR").await.problem(403, "INSUFFICIENT_SCOPE");
    h.order(&storefront, "anna", "2", 1_000).await.problem(403, "INSUFFICIENT_SCOPE");
    let adjust = json!({"points": 5, "reason": "x"});
    h.post(&server, "/v1/customers/anna/adjustments", "a-1", adjust.clone()).await.problem(403, "INSUFFICIENT_SCOPE");
    h.get(&server, "/v1/audit").await.problem(403, "INSUFFICIENT_SCOPE");

    // Each scope includes the ones below it (a storefront acts for a customer only with their token).
    h.get_for(&storefront, &h.customer_token("shop", "anna").await, "/v1/customers/anna/loyalty").await.ok();
    h.get(&server, "/v1/customers/anna/loyalty").await.ok();
    h.get(&admin, "/v1/customers/anna/transactions").await.ok();
    h.get(&admin, "/v1/orders/preview?amount_minor=100&currency=EUR").await.ok();
    h.post(&admin, "/v1/customers/anna/adjustments", "a-2", adjust).await.ok();

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_never_reaches_another_programs_data() {
    let h = Harness::start().await;
    let a = h.key("program-a", Scope::Admin).await;
    let b = h.key("program-b", Scope::Admin).await;
    h.order(&b, "carla", "b-1", 5_000).await.ok();
    let campaign = json!({
        "name": "b only", "kind": "bonus", "bonus_points": 10,
        "starts_at": now_plus(0), "ends_at": now_plus(MICROS_PER_DAY),
    });
    let b_campaign = h.post(&b, "/v1/campaigns", "c-1", campaign.clone()).await;
    let b_campaign = b_campaign.ok()["campaign_id"].as_str().unwrap().to_owned();

    h.get(&b, "/v1/customers/carla/loyalty").await.ok();
    // In program A carla has nothing: an empty account, none of B's points or entries.
    assert_eq!(h.get(&a, "/v1/customers/carla/loyalty").await.ok()["points"]["available"], 0);
    assert_eq!(h.get(&a, "/v1/customers/carla/transactions").await.ok()["entries"], json!([]));
    let refund = json!({"refunded_amount_minor": 100});
    h.post(&a, "/v1/orders/b-1/refunds", "r-1", refund).await.problem(404, "ORDER_NOT_FOUND");
    let path = format!("/v1/campaigns/{b_campaign}");
    h.put(&a, &path, "c-2", campaign).await.problem(404, "CAMPAIGN_NOT_FOUND");
    let end = h.send(Method::POST, &format!("{path}/end"), Some(&a), &[("idempotency-key", "c-3")], None).await;
    end.problem(404, "CAMPAIGN_NOT_FOUND");
    assert_eq!(h.get(&a, "/v1/campaigns").await.body["campaigns"], json!([]));
    assert_eq!(h.get(&a, "/v1/audit").await.body["entries"], json!([]));
    // B's data is untouched by A's attempts.
    assert_eq!(h.get(&b, "/v1/customers/carla/loyalty").await.body["points"]["available"], 50);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreadable_requests_are_4xx_problems() {
    let h = Harness::start_with(Options { max_body_bytes: 1_024, ..Options::default() }).await;
    let key = h.key("shop", Scope::Admin).await;
    let (hr, kr) = (&h, key.as_str());
    let json_write = |body: &str| {
        let body = body.as_bytes().to_vec();
        async move {
            let headers = [("content-type", "application/json"), ("idempotency-key", "k-1")];
            hr.send(Method::POST, "/v1/orders", Some(kr), &headers, Some(body)).await
        }
    };

    json_write(r#"{"customer_id": "#).await.problem(400, "INVALID_BODY");
    json_write(r#"{"customer_id": "a"} trailing"#).await.problem(400, "INVALID_BODY");
    let order = r#""customer_id": "a", "order_id": "1", "amount_minor": 100, "currency": "EUR""#;
    let unknown = json_write(&format!(r#"{{{order}, "coupon": "x"}}"#)).await;
    unknown.problem(400, "INVALID_BODY");
    assert_eq!(unknown.error_fields(), ["coupon"]);
    let wrong_type = json_write(r#"{"customer_id": "a", "order_id": "1", "amount_minor": "100", "currency": "EUR"}"#);
    assert_eq!(wrong_type.await.error_fields(), ["amount_minor"]);
    let missing = json_write(r#"{"customer_id": "a", "amount_minor": 100, "currency": "EUR"}"#).await;
    missing.problem(400, "INVALID_BODY");
    assert_eq!(missing.error_fields(), ["order_id"]);
    let bad_time = json_write(&format!(r#"{{{order}, "occurred_at": "yesterday"}}"#)).await;
    bad_time.problem(400, "INVALID_BODY");
    assert_eq!(bad_time.error_fields(), ["occurred_at"]);

    let oversize =
        format!(r#"{{"customer_id": "{}", "order_id": "1", "amount_minor": 1, "currency": "EUR"}}"#, "a".repeat(4_096));
    json_write(&oversize).await.problem(413, "BODY_TOO_LARGE");

    let body = Some(format!("{{{order}}}").into_bytes());
    let plain = [("content-type", "text/plain"), ("idempotency-key", "k-1")];
    h.send(Method::POST, "/v1/orders", Some(&key), &plain, body.clone()).await.problem(415, "UNSUPPORTED_MEDIA_TYPE");
    let no_key = [("content-type", "application/json")];
    let missing_key = h.send(Method::POST, "/v1/orders", Some(&key), &no_key, body.clone()).await;
    missing_key.problem(400, "MISSING_IDEMPOTENCY_KEY");
    assert_eq!(missing_key.error_fields(), ["Idempotency-Key"]);
    let spaced = [("content-type", "application/json"), ("idempotency-key", "two words")];
    h.send(Method::POST, "/v1/orders", Some(&key), &spaced, body).await.problem(400, "INVALID_IDEMPOTENCY_KEY");

    // Well-formed but refused by the service: 422 naming every bad field.
    let refused = json_write(r#"{"customer_id": "", "order_id": "1", "amount_minor": -1, "currency": "E"}"#).await;
    refused.problem(422, "INVALID_ARGUMENT");
    assert_eq!(refused.error_fields(), ["customer_id", "amount_minor", "currency"]);

    let query = h.get(&key, "/v1/orders/preview?amount_minor=lots&currency=EUR").await;
    query.problem(400, "INVALID_QUERY");
    assert_eq!(query.error_fields(), ["amount_minor"]);
    assert_eq!(h.get(&key, "/v1/orders/preview?amount_minor=1").await.error_fields(), ["currency"]);
    h.get(&key, "/v1/customers/anna/transactions?page_size=1000").await.problem(422, "INVALID_ARGUMENT");

    h.get(&key, "/v1/nothing-here").await.problem(404, "NOT_FOUND");
    let wrong_method = h.send(Method::DELETE, "/v1/orders", Some(&key), &[], None).await;
    wrong_method.problem(405, "METHOD_NOT_ALLOWED");
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_key_has_its_own_rate_limit() {
    let h = Harness::start_with(Options { rate_limit_per_sec: 1, rate_limit_burst: 2, ..Options::default() }).await;
    let busy = h.key("shop", Scope::Admin).await;
    let calm = h.key("shop", Scope::Admin).await;

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let answer = h.get(&busy, "/v1/settings").await;
        statuses.push(answer.status.as_u16());
        if answer.status == 429 {
            limited = Some(answer);
        }
    }
    assert_eq!(statuses[..2], [200, 200], "{statuses:?}");
    let limited = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    limited.problem(429, "RATE_LIMITED");
    let retry_after: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    h.get(&calm, "/v1/settings").await.ok();

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loyalty_page_survives_an_unavailable_tiers_service() {
    let tiers = closed_port().await;
    let h = Harness::start_with(Options { tiers_addr: Some(tiers.to_string()), ..Options::default() }).await;
    let key = h.key("shop", Scope::Server).await;
    h.order(&key, "anna", "1", 2_500).await.ok();

    let page = h.get(&key, "/v1/customers/anna/loyalty").await;
    assert_eq!(page.ok()["points"]["available"], 25);
    assert_eq!(page.body["tier"], json!({"available": false, "reason": "unavailable"}));

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loyalty_page_asks_each_service_once() {
    let h = Harness::start().await;
    let key = h.key("shop", Scope::Server).await;
    h.order(&key, "anna", "1", 2_500).await.ok();
    // The first page makes anna's referral code; the services' followers
    // catch up with the order meanwhile.
    h.get(&key, "/v1/customers/anna/loyalty").await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Long-lived streams and health checks are not the page's calls.
    let page_calls = |calls: std::collections::BTreeMap<(String, String), u64>| {
        calls.into_iter().filter(|((service, method), _)| method != "StreamEvents" && !service.starts_with("grpc."))
    };
    let before = h.rpc_calls().await;
    const PAGES: u64 = 5;
    for _ in 0..PAGES {
        assert_eq!(h.get(&key, "/v1/customers/anna/loyalty").await.ok()["points"]["available"], 25);
    }
    let expected: Vec<((String, String), u64)> = [
        // Rewards is told the balance, so it asks points nothing itself.
        ("loyalty.points.v1.PointsService", "GetAccountSummary"),
        ("loyalty.referral.v1.ReferralService", "GetReferralSummary"),
        ("loyalty.rewards.v1.RewardsService", "ListAvailableRewards"),
        ("loyalty.tiers.v1.TiersService", "GetMembership"),
    ]
    .into_iter()
    .map(|(service, method)| ((service.to_owned(), method.to_owned()), PAGES))
    .collect();
    // A service counts a call once its answer is out, which may be a moment after the gateway has it.
    let mut asked = Vec::new();
    for _ in 0..20 {
        let after = h.rpc_calls().await;
        asked = page_calls(after)
            .map(|(call, n)| {
                let earlier = before.get(&call).copied().unwrap_or(0);
                (call, n - earlier)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if asked == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(asked, expected, "upstream calls for {PAGES} pages");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_points_service_the_gateway_is_not_ready() {
    let points = closed_port().await;
    let h = Harness::start_with(Options { points_addr: Some(points.to_string()), ..Options::default() }).await;
    let key = h.key("shop", Scope::Admin).await;

    h.send(Method::GET, "/healthz", None, &[], None).await.ok();
    h.send(Method::GET, "/readyz", None, &[], None).await.problem(503, "NOT_READY");
    let page = h.get(&key, "/v1/customers/anna/loyalty").await;
    assert!(page.problem(503, "UNAVAILABLE")["detail"].as_str().unwrap().contains("points"));
    h.order(&key, "anna", "1", 100).await.problem(503, "UNAVAILABLE");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_that_does_not_answer_in_time_is_a_504() {
    let points = silent_server().await;
    let options = Options { points_addr: Some(points.to_string()), upstream_timeout_ms: 300, ..Options::default() };
    let h = Harness::start_with(options).await;
    let key = h.key("shop", Scope::Admin).await;

    let started = std::time::Instant::now();
    h.get(&key, "/v1/settings").await.problem(504, "DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ready_gateway_says_so() {
    let h = Harness::start().await;
    let ready = h.send(Method::GET, "/readyz", None, &[], None).await;
    assert_eq!(ready.ok()["status"], "ready");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_documents_exactly_the_routes_served() {
    let h = Harness::start().await;
    let doc = h.send(Method::GET, "/openapi.json", None, &[], None).await;
    let doc = doc.ok();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<_> = h.gateway().routes().iter().map(|r| (r.method.to_string(), r.path.to_owned())).collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but missing from /openapi.json: {undocumented:?}");
    assert!(unserved.is_empty(), "documented but not served: {unserved:?}");

    for (method, path) in &served {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let concrete = path.replace(['{', '}'], "");
        let answer = h.send(method.parse().unwrap(), &concrete, None, &[], None).await;
        if path.starts_with("/v1/") {
            // Served, and nothing without a key.
            answer.problem(401, "UNAUTHENTICATED");
            assert!(operation["security"][0]["api_key"].is_array(), "{method} {path} lacks security");
            assert!(operation["responses"]["401"].is_object(), "{method} {path} does not document 401");
        } else {
            assert_eq!(answer.status, 200, "{method} {path}");
        }
        if method == "POST" || method == "PUT" {
            let params = operation["parameters"].as_array().cloned().unwrap_or_default();
            let idempotency = params.iter().find(|p| p["name"] == "Idempotency-Key");
            let documented = idempotency.is_some_and(|p| p["in"] == "header" && p["required"] == true);
            assert!(documented, "{method} {path} does not require Idempotency-Key");
        }
    }
    for schema in ["Problem", "FieldError", "LoyaltyPage", "OrderBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
    assert_eq!(doc["components"]["schemas"]["OrderBody"]["additionalProperties"], Value::Bool(false));

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_by_route_template() {
    let h = Harness::start().await;
    let key = h.key("shop", Scope::Server).await;
    h.get(&key, "/v1/customers/anna/loyalty").await.ok();
    h.get(&key, "/v1/customers/bob/loyalty").await.ok();
    h.get(&key, "/no/such/route/4711").await.problem(404, "NOT_FOUND");

    let text = h.metrics_text().await;
    let line = r#"http_server_requests_total{method="GET",route="/v1/customers/{customer_id}/loyalty",status="200"} 2"#;
    assert!(text.contains(line), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404"} 1"#), "{text}");
    assert!(!text.contains("4711") && !text.contains("anna"), "raw paths leak into labels: {text}");
    assert!(text.contains("http_server_duration_seconds_bucket"), "{text}");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_listed_origins_may_call_from_a_browser() {
    let origins = vec!["https://shop.example".to_owned()];
    let h = Harness::start_with(Options { cors_origins: origins, ..Options::default() }).await;
    let hr = &h;
    let preflight = |origin: &'static str| async move {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ];
        hr.send(Method::OPTIONS, "/v1/customers/anna/loyalty", None, &headers, None).await
    };

    let allowed = preflight("https://shop.example").await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://shop.example"));
    assert!(allowed.header("access-control-allow-headers").unwrap().contains("authorization"));
    let refused = preflight("https://elsewhere.example").await;
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let key = h.key("shop", Scope::Storefront).await;
    let answer = h
        .send(Method::GET, "/v1/customers/anna/loyalty", Some(&key), &[("origin", "https://shop.example")], None)
        .await;
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://shop.example"));
    assert!(answer.header("access-control-expose-headers").unwrap().contains("idempotent-replayed"));

    h.stop().await;
}

/// A member's profile through the HTTP API: none before the enrolment, the
/// service's field errors named as the body names them, a time that is not
/// RFC 3339 refused here already, and no storefront key writing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profiles_are_enrolled_and_refused_by_body_field() {
    let h = Harness::start().await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    h.get(&server, "/v1/customers/zoe/profile").await.problem(404, "PROFILE_NOT_FOUND");
    let impossible = json!({"birth_month": 4, "birth_day": 31, "time_zone": "Mars/Olympus"});
    let refused = h.put(&server, "/v1/customers/zoe/profile", "p-1", impossible).await;
    refused.problem(422, "INVALID_ARGUMENT");
    assert_eq!(refused.error_fields(), ["birth_day", "time_zone"]);
    let timeless = json!({"consents": [{"channel": "email", "granted": true, "changed_at": "yesterday"}]});
    let refused = h.put(&server, "/v1/customers/zoe/profile", "p-2", timeless).await;
    assert_eq!(refused.error_fields(), ["consents[0].changed_at"], "{:#}", refused.body);
    let zoe = h.customer_token("shop", "zoe").await;
    let page = h.get_for(&storefront, &zoe, "/v1/customers/zoe/loyalty").await;
    assert!(page.ok().get("profile").is_none(), "no profile before the enrolment: {:#}", page.body);
    let body = json!({
        "birth_month": 12, "birth_day": 24, "locale": "tr", "expected_version": 0,
        "attributes": {"crm_note": "the shop's own"},
    });
    h.put(&storefront, "/v1/customers/zoe/profile", "p-3", body.clone()).await.problem(403, "INSUFFICIENT_SCOPE");
    let stored = h.put(&server, "/v1/customers/zoe/profile", "p-4", body).await;
    assert_eq!((stored.ok()["birth_day"].clone(), stored.body["version"].clone()), (json!(24), json!(1)));
    let again = json!({"birth_month": 12, "birth_day": 25, "expected_version": 0});
    h.put(&server, "/v1/customers/zoe/profile", "p-5", again).await.problem(409, "VERSION_MISMATCH");
    assert_eq!(h.get(&server, "/v1/customers/zoe/profile").await.ok()["locale"], "tr");
    // The loyalty page shows the member's own part, not the shop's attributes.
    let page = h.get_for(&storefront, &zoe, "/v1/customers/zoe/loyalty").await;
    let shown = &page.ok()["profile"];
    assert_eq!((&shown["birth_month"], &shown["birth_day"], &shown["locale"]), (&json!(12), &json!(24), &json!("tr")));
    assert!(shown["enrolled_at"].is_string() && shown.get("attributes").is_none(), "{shown:#}");
    // The member's own birthday: set once, by the member (a storefront key with their token).
    let same = h
        .put_for(&storefront, &zoe, "/v1/customers/zoe/birthday", "b-1", json!({"birth_month": 12, "birth_day": 24}))
        .await;
    assert_eq!(same.ok()["birth_day"], 24, "the same birthday again answers as the first time");
    let moved = h
        .put_for(&storefront, &zoe, "/v1/customers/zoe/birthday", "b-2", json!({"birth_month": 1, "birth_day": 2}))
        .await;
    moved.problem(409, "BIRTHDAY_ALREADY_SET");
    let yan = h.customer_token("shop", "yan").await;
    let impossible = h
        .put_for(&storefront, &yan, "/v1/customers/yan/birthday", "b-3", json!({"birth_month": 2, "birth_day": 30}))
        .await;
    assert_eq!(impossible.error_fields(), ["birth_day"], "{:#}", impossible.body);
    let others = h
        .put_for(&storefront, &yan, "/v1/customers/zoe/birthday", "b-4", json!({"birth_month": 2, "birth_day": 29}))
        .await;
    assert_eq!(others.status.as_u16(), 403, "yan's token is not zoe's: {:#}", others.body);
    let given = h
        .put_for(&storefront, &yan, "/v1/customers/yan/birthday", "b-5", json!({"birth_month": 2, "birth_day": 29}))
        .await;
    assert_eq!((given.ok()["birth_month"].clone(), given.body["birth_day"].clone()), (json!(2), json!(29)));
    assert!(given.body["enrolled_at"].is_string(), "the birthday enrols: {:#}", given.body);
    let admin = h.key("shop", Scope::Admin).await;
    let audit = h.get(&admin, "/v1/audit").await;
    let by_yan = &audit.ok()["entries"][0];
    assert_eq!((&by_yan["entity_id"], &by_yan["actor"]), (&json!("yan"), &json!("customer:yan")), "{by_yan:#}");
    let enrolled = &audit.body["entries"][1];
    assert_eq!((&enrolled["entity"], &enrolled["entity_id"]), (&json!("profile"), &json!("zoe")));
    assert_eq!((enrolled.get("old_value"), &enrolled["new_value"]["birth_day"]), (None, &json!(24)), "{enrolled:#}");
    h.stop().await;
}

/// The ladder, the referral settings and rewards are replaced with
/// optimistic concurrency, as the earning rules are: the version read, or 409
/// `VERSION_MISMATCH` and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ladder_referral_settings_and_rewards_refuse_a_change_made_meanwhile() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let ladder = |name: &str, expected: i64| {
        json!({
            "tiers": [{"tier_id": "bronze", "name": name, "threshold": 0, "multiplier_bp": 10_000}],
            "window": {"kind": "lifetime"}, "downgrade": {"kind": "immediate"}, "expected_version": expected,
        })
    };
    assert_eq!(h.put(&admin, "/v1/tiers/ladder", "l-1", ladder("Bronze", 0)).await.ok()["version"], 1);
    let stale = h.put(&admin, "/v1/tiers/ladder", "l-2", ladder("Stale", 0)).await;
    stale.problem(409, "VERSION_MISMATCH");
    assert_eq!(h.get(&admin, "/v1/tiers/ladder").await.ok()["tiers"][0]["name"], "Bronze", "nothing changed");
    assert_eq!(h.put(&admin, "/v1/tiers/ladder", "l-3", ladder("Copper", 1)).await.ok()["version"], 2);

    let settings = |points: i64, expected: i64| {
        json!({"enabled": true, "referrer_points": points, "referee_points": 100, "attribution_window_days": 30,
               "clawback_window_days": 14, "expected_version": expected})
    };
    let first = h.put(&admin, "/v1/referrals/settings", "r-1", settings(300, 0)).await;
    let version = first.ok()["version"].as_i64().unwrap();
    let stale = h.put(&admin, "/v1/referrals/settings", "r-2", settings(999, version - 1)).await;
    stale.problem(409, "VERSION_MISMATCH");
    assert_eq!(h.get(&admin, "/v1/referrals/settings").await.ok()["referrer_points"], 300, "nothing changed");
    let next = h.put(&admin, "/v1/referrals/settings", "r-3", settings(500, version)).await;
    assert_eq!(next.ok()["version"], version + 1);

    // Rewards: 1 when created; a change with the version read; a stale one refused; the same change again answered.
    let reward = |cost: i64, expected: i64| {
        json!({"name": "5 off", "description": "", "kind": "fixed_discount", "amount_minor": 500, "currency": "EUR",
               "point_cost": cost, "voucher_validity_days": 30, "expected_version": expected})
    };
    let created = h.post(&admin, "/v1/rewards", "w-1", reward(100, 0)).await;
    let (id, v1) = (created.ok()["reward_id"].as_str().unwrap().to_owned(), created.ok()["version"].clone());
    assert_eq!(v1, 1);
    let path = format!("/v1/rewards/{id}");
    assert_eq!(h.put(&admin, &path, "w-2", reward(150, 1)).await.ok()["version"], 2);
    h.put(&admin, &path, "w-3", reward(999, 1)).await.problem(409, "VERSION_MISMATCH");
    let again = h.put(&admin, &path, "w-4", reward(150, 1)).await;
    assert_eq!((again.ok()["version"].clone(), again.ok()["point_cost"].clone()), (json!(2), json!(150)), "a retry");
    h.stop().await;
}
