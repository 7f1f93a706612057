//! The storefront widget's side of the gateway over real HTTP: customer
//! tokens on the customer routes, the guest overview, `/widget.js` and the
//! demo shop's switch.

mod support;

use loyalty_common::clock::{Clock, SystemClock};
use loyalty_gateway::customer::{self, CustomerSecrets};
use loyalty_gateway::keys::Scope;
use reqwest::Method;
use serde_json::{Value, json};

use support::{Harness, Options};

/// Every route under /v1/customers/{customer_id} a storefront may call, as (method, path suffix).
const CUSTOMER_READS: [&str; 5] = ["loyalty", "transactions", "rewards", "redemptions", "referral"];

fn now_secs() -> i64 {
    SystemClock.now() / 1_000_000
}

/// A reward of `point_cost`, created with the admin key; its id.
async fn reward(h: &Harness, admin: &str, point_cost: i64) -> String {
    let body = json!({
        "name": "5 off", "description": "5 EUR off", "kind": "fixed_discount", "amount_minor": 500, "currency": "EUR",
        "point_cost": point_cost, "voucher_validity_days": 30,
    });
    let created = h.post(admin, "/v1/rewards", &format!("reward-{point_cost}"), body).await;
    created.ok()["reward_id"].as_str().unwrap().to_owned()
}

async fn available(h: &Harness, server: &str, customer: &str) -> i64 {
    let page = h.get(server, &format!("/v1/customers/{customer}/loyalty")).await;
    page.ok()["points"]["available"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storefront_key_alone_can_neither_read_nor_spend_a_customers_points() {
    let h = Harness::start().await;
    let (admin, server) = (h.key("shop", Scope::Admin).await, h.key("shop", Scope::Server).await);
    let storefront = h.key("shop", Scope::Storefront).await;
    let reward_id = reward(&h, &admin, 100).await;
    h.order(&server, "anna", "1001", 25_000).await.ok();
    let secret = CustomerSecrets::new(h.keys.database().clone()).ensure("shop").await.unwrap();

    for part in CUSTOMER_READS {
        let path = format!("/v1/customers/anna/{part}");
        h.get(&storefront, &path).await.problem(401, "CUSTOMER_TOKEN_REQUIRED");
        h.get_for(&storefront, "v1.not.a-token", &path).await.problem(401, "CUSTOMER_TOKEN_INVALID");
    }
    let redeem = json!({"reward_id": reward_id});
    let path = "/v1/customers/anna/redemptions";
    h.post(&storefront, path, "redeem-1", redeem.clone()).await.problem(401, "CUSTOMER_TOKEN_REQUIRED");

    // Signed, but not good enough: too old, from too far in the future, with another program's
    // secret, or altered after signing.
    let expired = customer::sign(&secret, "anna", now_secs() - 901);
    h.get_for(&storefront, &expired, "/v1/customers/anna/loyalty").await.problem(401, "CUSTOMER_TOKEN_EXPIRED");
    h.post_for(&storefront, &expired, path, "redeem-2", redeem.clone()).await.problem(401, "CUSTOMER_TOKEN_EXPIRED");
    let future = customer::sign(&secret, "anna", now_secs() + 600);
    h.get_for(&storefront, &future, "/v1/customers/anna/loyalty").await.problem(401, "CUSTOMER_TOKEN_INVALID");
    let other_program = h.customer_token("elsewhere", "anna").await;
    let refused = h.get_for(&storefront, &other_program, "/v1/customers/anna/loyalty").await;
    refused.problem(401, "CUSTOMER_TOKEN_INVALID");
    let good = h.customer_token("shop", "anna").await;
    let (payload, signature) = good.rsplit_once('.').unwrap();
    let altered = format!("{payload}.{}", signature.chars().rev().collect::<String>());
    h.post_for(&storefront, &altered, path, "redeem-3", redeem.clone()).await.problem(401, "CUSTOMER_TOKEN_INVALID");
    assert_eq!(available(&h, &server, "anna").await, 250, "no refused request spent anything");

    // The customer's own token opens every route, and spends.
    for part in CUSTOMER_READS {
        h.get_for(&storefront, &good, &format!("/v1/customers/anna/{part}")).await.ok();
    }
    let redeemed = h.post_for(&storefront, &good, path, "redeem-4", redeem).await;
    assert_eq!(redeemed.ok()["status"], "active");
    assert_eq!(available(&h, &server, "anna").await, 150);

    // A program without a secret accepts no token at all.
    let lonely = h.key("lonely", Scope::Storefront).await;
    let answer = h.get_for(&lonely, &good, "/v1/customers/anna/loyalty").await;
    assert_eq!(answer.problem(401, "CUSTOMER_TOKEN_INVALID")["detail"], "the program has no customer token secret");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_for_one_customer_opens_nothing_of_another() {
    let h = Harness::start().await;
    let (admin, server) = (h.key("shop", Scope::Admin).await, h.key("shop", Scope::Server).await);
    let storefront = h.key("shop", Scope::Storefront).await;
    let reward_id = reward(&h, &admin, 100).await;
    h.order(&server, "anna", "1001", 25_000).await.ok();
    h.order(&server, "ben", "1002", 25_000).await.ok();
    let anna = h.customer_token("shop", "anna").await;

    for part in CUSTOMER_READS {
        let answer = h.get_for(&storefront, &anna, &format!("/v1/customers/ben/{part}")).await;
        answer.problem(403, "CUSTOMER_TOKEN_MISMATCH");
    }
    let redeem = json!({"reward_id": reward_id});
    let refused = h.post_for(&storefront, &anna, "/v1/customers/ben/redemptions", "redeem-1", redeem).await;
    refused.problem(403, "CUSTOMER_TOKEN_MISMATCH");
    assert_eq!(available(&h, &server, "ben").await, 250);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_and_admin_keys_need_no_customer_token() {
    let h = Harness::start().await;
    let (admin, server) = (h.key("shop", Scope::Admin).await, h.key("shop", Scope::Server).await);
    let reward_id = reward(&h, &admin, 100).await;
    h.order(&server, "anna", "1001", 25_000).await.ok();

    for key in [&server, &admin] {
        for part in CUSTOMER_READS {
            h.get(key, &format!("/v1/customers/anna/{part}")).await.ok();
        }
    }
    let redeemed = h.post(&server, "/v1/customers/anna/redemptions", "redeem-1", json!({"reward_id": reward_id})).await;
    assert_eq!(redeemed.ok()["status"], "active");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_the_secret_retires_the_tokens_signed_with_the_old_one() {
    let mut options = Options::default();
    options.widget.customer_secret_cache_ttl_secs = 0;
    let h = Harness::start_with(options).await;
    let (server, storefront) = (h.key("shop", Scope::Server).await, h.key("shop", Scope::Storefront).await);
    h.order(&server, "anna", "1001", 1_000).await.ok();
    let old = h.customer_token("shop", "anna").await;
    h.get_for(&storefront, &old, "/v1/customers/anna/loyalty").await.ok();

    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
        .args(["customer-secret", "rotate", "--program", "shop"])
        .env("DATABASE_URL", &h.database_url)
        .output()
        .expect("the gateway binary runs");
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let secret = String::from_utf8(rotated.stdout).unwrap().trim().to_owned();
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret:?}");

    h.get_for(&storefront, &old, "/v1/customers/anna/loyalty").await.problem(401, "CUSTOMER_TOKEN_INVALID");
    let bytes: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&secret[2 * i..2 * i + 2], 16).unwrap()).collect();
    let new = customer::sign(&bytes, "anna", now_secs());
    h.get_for(&storefront, &new, "/v1/customers/anna/loyalty").await.ok();

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guests_see_how_the_program_works_without_a_token() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let rules = json!({
        "currency": "EUR",
        "earn_rate": {"points": 1, "per_amount_minor": 100},
        "rounding": "down",
        "expiry": {"kind": "never"},
        "activity_rules": [
            {"activity_type": "signup", "points": 200, "cap_count": 1, "cap_period": "lifetime"},
            {"activity_type": "review", "points": 50, "active": false},
        ],
    });
    h.put(&admin, "/v1/settings", "settings-1", rules).await.ok();
    let ladder = json!({
        "tiers": [
            {"tier_id": "bronze", "name": "Bronze", "threshold": 0, "multiplier_bp": 10000},
            {"tier_id": "winback", "name": "Win-back", "threshold": 0, "multiplier_bp": 10000, "hidden": true},
            {"tier_id": "gold", "name": "Gold", "threshold": 1000, "multiplier_bp": 15000},
        ],
        "window": {"kind": "lifetime"},
        "downgrade": {"kind": "immediate"},
    });
    h.put(&admin, "/v1/tiers/ladder", "ladder-1", ladder).await.ok();
    reward(&h, &admin, 100).await;
    // Tier-only rewards are shown only to customers who may redeem them.
    let tier_only = |name: &str, limit: Value| {
        let mut body = json!({
            "name": name, "kind": "free_shipping", "point_cost": 50, "voucher_validity_days": 30,
        });
        body.as_object_mut().unwrap().extend(limit.as_object().unwrap().clone());
        body
    };
    let winback = h
        .post(&admin, "/v1/rewards", "winback", tier_only("come back", json!({"eligible_tier_ids": ["winback"]})))
        .await;
    assert_eq!(winback.ok()["eligible_tier_ids"], json!(["winback"]));
    h.post(&admin, "/v1/rewards", "gold", tier_only("gold and up", json!({"minimum_tier_id": "gold"}))).await.ok();
    // A double-points weekend running now, and one that has not begun: shoppers see the first only.
    let at = |hours: i64| loyalty_gateway::rfc3339::format(SystemClock.now() + hours * 3_600_000_000);
    let weekend = json!({"name": "double weekend", "kind": "multiplier", "multiplier_bp": 20_000,
        "starts_at": at(-1), "ends_at": at(48), "applies_to": ["order"]});
    h.post(&admin, "/v1/campaigns", "weekend", weekend).await.ok();
    let later = json!({"name": "later", "kind": "bonus", "bonus_points": 50, "starts_at": at(24), "ends_at": at(72)});
    h.post(&admin, "/v1/campaigns", "later", later).await.ok();

    let overview = h.get(&storefront, "/v1/program").await;
    let overview = overview.ok();
    assert_eq!(overview["currency"], "EUR");
    assert_eq!(overview["earn_rate"], json!({"points": 1, "per_amount_minor": 100}));
    let ways: Vec<&Value> = overview["ways_to_earn"].as_array().unwrap().iter().collect();
    assert_eq!(ways.len(), 1, "only active rules: {overview:#}");
    assert_eq!((ways[0]["activity_type"].as_str(), ways[0]["points"].as_i64()), (Some("signup"), Some(200)));
    let tiers: Vec<&str> =
        overview["tiers"]["tiers"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["Bronze", "Gold"], "hidden tiers stay hidden");
    let running = overview["campaigns"].as_array().unwrap();
    assert_eq!(running.len(), 1, "only what runs now: {overview:#}");
    assert_eq!(
        (running[0]["name"].as_str(), running[0]["multiplier_bp"].as_i64()),
        (Some("double weekend"), Some(20_000))
    );
    assert_eq!(running[0]["applies_to"], json!(["order"]));
    assert_eq!(overview["rewards"]["rewards"][0]["point_cost"], 100);
    assert_eq!(overview["rewards"]["rewards"].as_array().unwrap().len(), 1, "no tier-only reward: {overview:#}");
    assert_eq!(
        overview["referral"],
        json!({"available": true, "enabled": false, "referrer_points": 0, "referee_points": 0})
    );

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_widget_script_is_cached_and_revalidated() {
    let h = Harness::start().await;
    let url = format!("{}/widget.js", h.base);
    let first = h.http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let header = |r: &reqwest::Response, name: &str| r.headers().get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header(&first, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&first, "cache-control"), "public, max-age=300");
    let etag = header(&first, "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "a strong ETag: {etag}");
    let script = first.text().await.unwrap();
    assert!(script.contains("loyalty-widget"), "the built widget: {}", &script[..script.len().min(200)]);

    let again = h.http.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    assert_eq!(header(&again, "cache-control"), "public, max-age=300");
    assert!(again.bytes().await.unwrap().is_empty());
    let stale = h.http.get(&url).header("if-none-match", "\"something-else\"").send().await.unwrap();
    assert_eq!(stale.status(), 200);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_console_is_served_locked_down() {
    let h = Harness::start().await;
    let header = |r: &reqwest::Response, name: &str| r.headers().get(name).unwrap().to_str().unwrap().to_owned();
    let page = h.http.get(format!("{}/admin", h.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-store");
    let policy = header(&page, "content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{directive} missing from {policy}");
    }
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<div id="console"></div><script src="/admin/console.js"></script>"#), "{html}");

    let url = format!("{}/admin/console.js", h.base);
    let script = h.http.get(&url).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(header(&script, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&script, "cache-control"), "no-cache");
    let etag = header(&script, "etag");
    let body = script.text().await.unwrap();
    // The built console with its charting library, not a placeholder.
    assert!(body.len() > 20_000 && body.contains("/v1/insights/kpis"), "{} bytes", body.len());
    let again = h.http.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_shop_is_there_only_in_demo_mode() {
    let h = Harness::start().await;
    h.send(Method::GET, "/demo", None, &[], None).await.problem(404, "NOT_FOUND");
    let session = h
        .send(Method::POST, "/demo/api/session", None, &[("content-type", "application/json")], Some(b"{}".to_vec()))
        .await;
    session.problem(404, "NOT_FOUND");
    h.stop().await;

    let mut options = Options::default();
    options.widget.demo = true;
    options.widget.demo_program = "shop".into();
    options.widget.demo_storefront_key = Some("lk_embedded_in_the_page".into());
    let h = Harness::start_with(options).await;
    let page = h.http.get(format!("{}/demo", h.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(r#"api-key="lk_embedded_in_the_page""#));

    // Signing in makes a token the storefront key can use, as a shop's back end would.
    let admin = h.key("shop", Scope::Admin).await;
    let rules = json!({
        "currency": "EUR", "earn_rate": {"points": 1, "per_amount_minor": 100}, "rounding": "down",
        "expiry": {"kind": "never"}, "activity_rules": [{"activity_type": "signup", "points": 200}],
    });
    h.put(&admin, "/v1/settings", "settings-1", rules).await.ok();
    h.customer_token("shop", "anna").await;
    let body = serde_json::to_vec(&json!({"customer_id": "anna"})).unwrap();
    let session =
        h.send(Method::POST, "/demo/api/session", None, &[("content-type", "application/json")], Some(body)).await;
    let token = session.ok()["token"].as_str().unwrap().to_owned();
    let storefront = h.key("shop", Scope::Storefront).await;
    let page = h.get_for(&storefront, &token, "/v1/customers/anna/loyalty").await;
    assert_eq!(page.ok()["points"]["available"], 200, "the sign-up bonus");

    h.stop().await;
}
