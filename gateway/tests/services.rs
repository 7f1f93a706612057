//! The gateway's tiers, referral and rewards routes over real HTTP, in front
//! of real points, tiers, referral and rewards services.

mod support;

use std::time::Duration;

use loyalty_common::clock::{Clock, MICROS_PER_DAY, SystemClock};
use loyalty_gateway::keys::Scope;
use loyalty_gateway::rfc3339;
use reqwest::Method;
use serde_json::{Value, json};

use support::{Answer, Harness, Options, eventually};

fn reward(name: &str, point_cost: i64) -> Value {
    json!({
        "name": name, "description": "5 EUR off", "kind": "fixed_discount", "amount_minor": 500, "currency": "EUR",
        "point_cost": point_cost, "voucher_validity_days": 30,
    })
}

async fn available_points(h: &Harness, key: &str, customer: &str) -> i64 {
    let token = h.customer_token("shop", customer).await;
    let page = h.get_for(key, &token, &format!("/v1/customers/{customer}/loyalty")).await;
    page.ok()["points"]["available"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_redeems_a_reward_and_the_checkout_uses_the_voucher() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let anna = h.customer_token("shop", "anna").await;

    // The catalog.
    let created = h.post(&admin, "/v1/rewards", "reward-1", reward("5 off", 100)).await;
    let reward_id = created.ok()["reward_id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["kind"], "fixed_discount");
    assert_eq!(created.body["amount_minor"], 500);
    assert_eq!(created.body["archived"], false);
    assert_eq!(h.post(&admin, "/v1/rewards", "reward-1", reward("5 off", 100)).await.body, created.body);
    let expensive = h.post(&admin, "/v1/rewards", "reward-2", reward("big", 10_000)).await;
    let expensive_id = expensive.ok()["reward_id"].as_str().unwrap().to_owned();
    let mut bad = reward("broken", 100);
    bad["voucher_validity_days"] = json!(0);
    let refused = h.post(&admin, "/v1/rewards", "reward-3", bad).await;
    refused.problem(422, "INVALID_ARGUMENT");
    assert_eq!(refused.error_fields(), ["voucher_validity_days"]);
    // A field the schema marks optional takes its documented default when absent.
    let mut plain = reward("plain", 100);
    plain.as_object_mut().unwrap().remove("voucher_validity_days");
    let defaulted = h.post(&admin, "/v1/rewards", "reward-6", plain).await;
    assert_eq!(defaulted.ok()["voucher_validity_days"], 90, "{:#}", defaulted.body);
    let plain_id = defaulted.body["reward_id"].as_str().unwrap().to_owned();
    h.bodiless(Method::POST, &admin, &format!("/v1/rewards/{plain_id}/archive"), "archive-plain").await.ok();
    let renamed = h.put(&admin, &format!("/v1/rewards/{reward_id}"), "reward-4", reward("5 EUR off", 100)).await;
    assert_eq!(renamed.ok()["name"], "5 EUR off");
    h.put(&admin, "/v1/rewards/no-such-reward", "reward-5", reward("x", 1)).await.problem(404, "REWARD_NOT_FOUND");
    assert_eq!(h.get(&admin, "/v1/rewards").await.ok()["rewards"].as_array().unwrap().len(), 2);

    // Earn, then see what can be redeemed.
    h.order(&server, "anna", "1001", 25_000).await.ok();
    let listed = h.get_for(&storefront, &anna, "/v1/customers/anna/rewards").await;
    assert_eq!(listed.ok()["available_points"], 250);
    let by_id = |id: &str| listed.body["rewards"].as_array().unwrap().iter().find(|r| r["reward"]["reward_id"] == id);
    let cheap = by_id(&reward_id).expect("listed");
    assert_eq!(cheap["redeemable"], true);
    let big = by_id(&expensive_id).expect("listed");
    assert_eq!((big["redeemable"].clone(), big["unavailability"].clone()), (json!(false), json!("points_short")));
    assert_eq!(big["points_short"], 9_750);

    // Redeem: the points go, a voucher comes; a retry redeems nothing more.
    let path = "/v1/customers/anna/redemptions";
    let redeemed = h.post_for(&storefront, &anna, path, "redeem-1", json!({"reward_id": reward_id})).await;
    let redemption = redeemed.ok().clone();
    assert_eq!(redemption["status"], "active", "{redemption:#}");
    assert_eq!(redemption["points_spent"], 100);
    let code = redemption["voucher_code"].as_str().expect("a voucher").to_owned();
    let replay = h.post_for(&storefront, &anna, path, "redeem-1", json!({"reward_id": reward_id})).await;
    assert_eq!(replay.body["redemption_id"], redemption["redemption_id"]);
    assert_eq!(available_points(&h, &storefront, "anna").await, 150);
    let short = h.post_for(&storefront, &anna, path, "redeem-2", json!({"reward_id": expensive_id})).await;
    short.problem(409, "INSUFFICIENT_POINTS");
    let page = h.get_for(&storefront, &anna, path).await;
    // The refused one is listed as failed, nothing spent; the voucher is there.
    let listed: Vec<(Value, Value)> = page.ok()["redemptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].clone(), r["voucher_code"].clone()))
        .collect();
    assert!(listed.contains(&(json!("active"), json!(code))), "{listed:?}");
    assert!(listed.iter().all(|(status, _)| status == "active" || status == "failed"), "{listed:?}");

    // The checkout validates, then consumes exactly once.
    let validate = format!("/v1/vouchers/{code}/validate");
    let valid = h.post(&server, &validate, "v-1", json!({"customer_id": "anna"})).await;
    assert_eq!(valid.ok()["state"], "valid");
    assert_eq!(valid.body["reward"]["amount_minor"], 500);
    let elsewhere = h.post(&server, &validate, "v-2", json!({"customer_id": "bob"})).await;
    assert_eq!(elsewhere.ok()["state"], "unknown");
    let consume = format!("/v1/vouchers/{code}/consume");
    let used = h.post(&server, &consume, "c-1", json!({"order_id": "2001"})).await;
    assert_eq!(used.ok()["status"], "used");
    assert_eq!(used.body["consumed_order_id"], "2001");
    assert_eq!(h.post(&server, &consume, "c-2", json!({"order_id": "2001"})).await.ok()["status"], "used");
    h.post(&server, &consume, "c-3", json!({"order_id": "2002"})).await.problem(409, "VOUCHER_USED");
    assert_eq!(h.post(&server, &validate, "v-3", json!({})).await.ok()["state"], "used");
    let unknown = h.post(&server, "/v1/vouchers/AAAA-BBBB-CCCC/validate", "v-4", json!({})).await;
    assert_eq!(unknown.ok()["state"], "unknown");

    // An unused voucher cancelled by an admin gives the points back.
    let second = h.post_for(&storefront, &anna, path, "redeem-3", json!({"reward_id": reward_id})).await;
    let second_id = second.ok()["redemption_id"].as_str().unwrap().to_owned();
    assert_eq!(available_points(&h, &storefront, "anna").await, 50);
    let earned = |page: &Answer| page.body["points"]["lifetime_earned"].clone();
    let before = earned(&h.get_for(&storefront, &anna, "/v1/customers/anna/loyalty").await);
    let cancelled = h.bodiless(Method::POST, &admin, &format!("/v1/redemptions/{second_id}/cancel"), "cancel-1").await;
    assert_eq!(cancelled.ok()["status"], "cancelled");
    assert_eq!(available_points(&h, &storefront, "anna").await, 150);
    // The cancel gave the spend back: nothing more was earned, and the ledger says so.
    assert_eq!(earned(&h.get_for(&storefront, &anna, "/v1/customers/anna/loyalty").await), before);
    let history = h.get(&server, "/v1/customers/anna/transactions").await;
    assert_eq!(history.ok()["entries"][0]["kind"], "restore", "{:#}", history.body);

    // Archived rewards leave the catalog.
    let archived = h.bodiless(Method::POST, &admin, &format!("/v1/rewards/{expensive_id}/archive"), "archive-1").await;
    assert_eq!(archived.ok()["archived"], true);
    assert_eq!(h.get(&admin, "/v1/rewards").await.body["rewards"].as_array().unwrap().len(), 1);
    assert_eq!(h.get(&admin, "/v1/rewards?include_archived=true").await.body["rewards"].as_array().unwrap().len(), 3);

    // The loyalty page has every part, the rewards part listing what is redeemable now.
    let page = h.get_for(&storefront, &anna, "/v1/customers/anna/loyalty").await;
    let page = page.ok();
    assert_eq!(page["points"]["available"], 150);
    assert_eq!(page["tier"]["available"], true);
    assert_eq!(page["referral"]["available"], true);
    assert!(page["referral"].get("code").is_none(), "the page makes no code: {page:#}");
    h.post_for(&storefront, &anna, "/v1/customers/anna/referral", "anna-code", json!({})).await.ok();
    let page = h.get_for(&storefront, &anna, "/v1/customers/anna/loyalty").await;
    let page = page.ok();
    assert!(page["referral"]["code"].is_string(), "made on request: {page:#}");
    assert_eq!(page["rewards"]["available"], true);
    assert_eq!(page["rewards"]["redeemable"][0]["reward_id"], reward_id.as_str());

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_with_a_referral_code_completes_the_referral() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let anna = h.customer_token("shop", "anna").await;

    let defaults = h.get(&admin, "/v1/referrals/settings").await;
    assert_eq!(defaults.ok()["enabled"], false);
    let settings = json!({
        "enabled": true, "referrer_points": 500, "referee_points": 200, "minimum_order_minor": 1_000,
        "cap_count": 0, "cap_period_days": 30, "attribution_window_days": 30, "clawback_window_days": 14,
    });
    // Without the optional cap fields: no cap, over the documented 30 days.
    let mut uncapped = settings.clone();
    for field in ["cap_count", "cap_period_days", "minimum_order_minor"] {
        uncapped.as_object_mut().unwrap().remove(field);
    }
    let defaulted = h.put(&admin, "/v1/referrals/settings", "ref-settings-0", uncapped).await;
    assert_eq!((defaulted.ok()["cap_count"].as_i64(), defaulted.body["cap_period_days"].as_i64()), (Some(0), Some(30)));
    let stored = h.put(&admin, "/v1/referrals/settings", "ref-settings-1", settings.clone()).await;
    assert_eq!(stored.ok()["referrer_points"], 500);
    assert!(stored.body["version"].as_i64().unwrap() > 0);
    let mut invalid = settings.clone();
    invalid["attribution_window_days"] = json!(0);
    let refused = h.put(&admin, "/v1/referrals/settings", "ref-settings-2", invalid).await;
    refused.problem(422, "INVALID_ARGUMENT");
    assert_eq!(refused.error_fields(), ["attribution_window_days"]);

    // Anna, a customer already, shares her code.
    h.order(&server, "anna", "1", 10_000).await.ok();
    let none_yet = h.get_for(&storefront, &anna, "/v1/customers/anna/referral").await;
    assert!(none_yet.ok().get("code").is_none(), "{:#}", none_yet.body);
    let mine = h.post_for(&storefront, &anna, "/v1/customers/anna/referral", "anna-code", json!({})).await;
    let code = mine.ok()["code"].as_str().unwrap().to_owned();
    assert_eq!(mine.body["enabled"], true);
    assert_eq!(mine.body["stats"]["invited"], 0);
    assert_eq!(h.get_for(&storefront, &anna, "/v1/customers/anna/referral").await.body["code"], code.as_str());
    let resolved = h.get(&storefront, &format!("/v1/referrals/codes/{code}")).await;
    assert_eq!(resolved.ok()["valid"], true);
    assert_eq!(resolved.body["referee_points"], 200);
    assert_eq!(resolved.body["referrer_customer_id"], "anna");
    assert_eq!(h.get(&storefront, "/v1/referrals/codes/ZZZZ2345").await.ok()["valid"], false);

    // Bob's first order names the code: the sign-up is recorded, the order earns as usual.
    let body =
        json!({"customer_id": "bob", "order_id": "2", "amount_minor": 5_000, "currency": "EUR", "referral_code": code});
    let earned = h.post(&server, "/v1/orders", "order-2", body.clone()).await;
    assert_eq!(earned.ok()["points"], 50);
    assert_eq!(earned.body["referral"]["recorded"], true, "{:#}", earned.body);
    assert_eq!(earned.body["referral"]["referral"]["referrer_customer_id"], "anna");
    // A replay of the order replays the sign-up too.
    let again = h.post(&server, "/v1/orders", "order-2", body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["referral"]["recorded"], true, "{:#}", again.body);

    // The referral completes on its own from the ledger: Anna gets 500, Bob his welcome 200.
    let (hr, sf) = (&h, storefront.as_str());
    let rewarded =
        eventually(Duration::from_secs(20), || async move { available_points(hr, sf, "anna").await == 100 + 500 })
            .await;
    assert!(rewarded, "the referrer was not rewarded: {}", available_points(&h, &storefront, "anna").await);
    let welcomed =
        eventually(Duration::from_secs(20), || async move { available_points(hr, sf, "bob").await == 50 + 200 }).await;
    assert!(welcomed, "the friend was not rewarded");
    let stats = h.get_for(&storefront, &anna, "/v1/customers/anna/referral").await;
    assert_eq!(stats.ok()["stats"]["completed"], 1, "{:#}", stats.body);
    assert_eq!(stats.body["stats"]["points_earned"], 500);

    // A refused sign-up never fails the order.
    let body =
        json!({"customer_id": "bob", "order_id": "3", "amount_minor": 2_000, "currency": "EUR", "referral_code": code});
    let second = h.post(&server, "/v1/orders", "order-3", body).await;
    assert_eq!(second.ok()["points"], 20);
    assert_eq!(second.body["referral"]["recorded"], false);
    assert!(second.body["referral"]["reason"].is_string(), "{:#}", second.body);
    let body = json!({"customer_id": "dan", "order_id": "4", "amount_minor": 2_000, "currency": "EUR", "referral_code": "ZZZZ2345"});
    let unknown = h.post(&server, "/v1/orders", "order-4", body).await;
    assert_eq!(unknown.ok()["referral"], json!({"recorded": false, "reason": "UNKNOWN_CODE"}));

    // A storefront records the signed-in friend's sign-up; it cannot claim anyone else.
    let carl = h.customer_token("shop", "carl").await;
    let path = "/v1/referrals/signups";
    let unproven = h.post(&storefront, path, "signup-0", json!({"code": code, "customer_id": "carl"})).await;
    unproven.problem(401, "CUSTOMER_TOKEN_REQUIRED");
    let someone_else =
        h.post_for(&storefront, &carl, path, "signup-0b", json!({"code": code, "customer_id": "erin"})).await;
    someone_else.problem(403, "CUSTOMER_TOKEN_MISMATCH");
    let signup = h.post_for(&storefront, &carl, path, "signup-1", json!({"code": code, "customer_id": "carl"})).await;
    assert_eq!(signup.ok()["status"], "pending");
    assert_eq!(signup.body["referee_customer_id"], "carl");
    let twice = h.post_for(&storefront, &carl, path, "signup-2", json!({"code": code, "customer_id": "carl"})).await;
    twice.problem(409, "ALREADY_REFERRED");
    let anna = h.customer_token("shop", "anna").await;
    let own = h.post_for(&storefront, &anna, path, "signup-3", json!({"code": code, "customer_id": "anna"})).await;
    assert_eq!(own.status, 409, "{:#}", own.body);
    // The shop's back end (a server key) needs no token.
    let server_signup = h.post(&server, path, "signup-4", json!({"code": code, "customer_id": "fay"})).await;
    assert_eq!(server_signup.ok()["referee_customer_id"], "fay");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_set_the_tier_ladder_and_assign_tiers() {
    let h = Harness::start().await;
    let admin = h.key("shop", Scope::Admin).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let anna = h.customer_token("shop", "anna").await;

    let empty = h.get(&admin, "/v1/tiers/ladder").await;
    assert_eq!(empty.ok()["tiers"], json!([]));
    let ladder = json!({
        "tiers": [
            {"tier_id": "silver", "name": "Silver", "threshold": 100, "multiplier_bp": 10_000},
            {"tier_id": "gold", "name": "Gold", "threshold": 1_000, "multiplier_bp": 15_000, "perks": ["free shipping"]},
            {"tier_id": "vip", "name": "VIP", "multiplier_bp": 20_000, "hidden": true, "perks": ["double birthday points"],
             "benefits": {"free_shipping": true, "birthday_multiplier_bp": 20_000, "flags": ["priority_support"]}},
        ],
        "window": {"kind": "lifetime"},
        "downgrade": {"kind": "immediate"},
        "qualification_basis": "order_points_base",
    });
    let stored = h.put(&admin, "/v1/tiers/ladder", "ladder-1", ladder.clone()).await;
    assert!(stored.ok()["version"].as_i64().unwrap() > 0);
    let read = h.get(&admin, "/v1/tiers/ladder").await;
    assert_eq!(read.ok()["tiers"][1]["perks"], json!(["free shipping"]));
    assert_eq!(read.body["tiers"][2]["hidden"], true);
    assert_eq!(read.body["window"]["kind"], "lifetime");
    assert_eq!(read.body["qualification_basis"], "order_points_base");
    assert_eq!(
        read.body["tiers"][0]["benefits"],
        json!({"free_shipping": false, "early_access_hours": 0, "birthday_multiplier_bp": 0, "flags": []})
    );
    let mut bad = ladder.clone();
    bad["tiers"][1]["threshold"] = json!(50);
    bad["tiers"][2]["benefits"]["flags"] = json!(["Priority Support"]);
    let refused = h.put(&admin, "/v1/tiers/ladder", "ladder-2", bad).await;
    refused.problem(422, "INVALID_ARGUMENT");
    assert_eq!(refused.error_fields(), ["tiers[1].threshold", "tiers[2].benefits.flags"]);

    // Points qualify for silver; the membership shows the way to gold.
    let server = h.key("shop", Scope::Server).await;
    h.order(&server, "anna", "1", 20_000).await.ok();
    let (hr, ar) = (&h, admin.as_str());
    let silver = eventually(Duration::from_secs(20), || async move {
        hr.get(ar, "/v1/customers/anna/tier").await.body["tier_id"] == "silver"
    })
    .await;
    assert!(silver, "{:#}", h.get(&admin, "/v1/customers/anna/tier").await.body);
    let membership = h.get(&admin, "/v1/customers/anna/tier").await;
    assert_eq!(membership.ok()["next_tier_id"], "gold");
    assert_eq!(membership.body["points_to_next_tier"], 800);
    assert_eq!(membership.body["assigned"], false);
    assert_eq!(membership.body["qualification_basis"], "order_points_base");

    // By hand, into the hidden tier until a date; then back to the ladder.
    let ends_at = rfc3339::format(SystemClock.now() + 30 * MICROS_PER_DAY);
    let path = "/v1/customers/anna/tier-assignment";
    let assigned = h.post(&admin, path, "assign-1", json!({"tier_id": "vip", "ends_at": ends_at})).await;
    assert_eq!(assigned.ok()["tier_id"], "vip");
    assert_eq!(assigned.body["assigned"], true);
    assert!(assigned.body["assignment_ends_at"].is_string(), "{:#}", assigned.body);
    let page = h.get_for(&storefront, &anna, "/v1/customers/anna/loyalty").await;
    assert_eq!(page.ok()["tier"]["tier_id"], "vip");
    assert_eq!(page.body["tier"]["multiplier_bp"], 20_000);
    assert_eq!(page.body["tier"]["benefits"]["free_shipping"], true, "a checkout reads it without parsing text");
    assert_eq!(page.body["tier"]["benefits"]["flags"], json!(["priority_support"]));
    assert_eq!(page.body["tier"]["perks"], json!(["double birthday points"]));
    // On the hidden tier the way up still counts from the points (silver, 200 of them): gold, 800 to go.
    assert_eq!(assigned.body["next_tier_id"], "gold", "{:#}", assigned.body);
    assert_eq!(assigned.body["points_to_next_tier"], 800);
    h.post(&admin, path, "assign-2", json!({"tier_id": "platinum"})).await.problem(404, "TIER_NOT_FOUND");

    // A hidden tier's rewards are its members' alone, and it unlocks nothing above it.
    let tier_reward = |name: &str, limit: Value| {
        let mut body = json!({"name": name, "kind": "free_shipping", "point_cost": 20, "voucher_validity_days": 30});
        body.as_object_mut().unwrap().extend(limit.as_object().unwrap().clone());
        body
    };
    let vip_only =
        h.post(&admin, "/v1/rewards", "r-vip", tier_reward("vip gift", json!({"eligible_tier_ids": ["vip"]}))).await;
    let vip_only = vip_only.ok()["reward_id"].as_str().unwrap().to_owned();
    let gold_up =
        h.post(&admin, "/v1/rewards", "r-gold", tier_reward("gold and up", json!({"minimum_tier_id": "gold"}))).await;
    let gold_up = gold_up.ok()["reward_id"].as_str().unwrap().to_owned();
    let redemptions = "/v1/customers/anna/redemptions";
    let redeemed = h.post_for(&storefront, &anna, redemptions, "redeem-vip", json!({"reward_id": vip_only})).await;
    assert_eq!(redeemed.ok()["status"], "active");
    let refused = h.post_for(&storefront, &anna, redemptions, "redeem-gold", json!({"reward_id": gold_up})).await;
    refused.problem(409, "TIER_NOT_ELIGIBLE");
    let listed = h.get_for(&storefront, &anna, "/v1/customers/anna/rewards").await;
    let gold_listed =
        listed.ok()["rewards"].as_array().unwrap().iter().find(|r| r["reward"]["reward_id"] == gold_up.as_str());
    assert_eq!(gold_listed.unwrap()["unavailability"], "tier_not_eligible");
    let removed = h.send(Method::DELETE, path, Some(&admin), &[("idempotency-key", "unassign-1")], None).await;
    assert_eq!(removed.ok()["assigned"], false);
    assert_eq!(removed.body["tier_id"], "silver");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loyalty_page_survives_a_referral_service_that_is_down() {
    let mut h = Harness::start().await;
    let server = h.key("shop", Scope::Server).await;
    h.order(&server, "anna", "1", 2_500).await.ok();
    h.stop_referral().await;

    let page = h.get(&server, "/v1/customers/anna/loyalty").await;
    assert_eq!(page.ok()["points"]["available"], 25);
    assert_eq!(page.body["referral"], json!({"available": false, "reason": "unavailable"}));
    assert_eq!(page.body["tier"]["available"], true);
    assert_eq!(page.body["rewards"]["available"], true);
    h.get(&server, "/v1/customers/anna/referral").await.problem(503, "UNAVAILABLE");
    // The order still earns; the sign-up is reported not recorded.
    let body = json!({"customer_id": "bob", "order_id": "2", "amount_minor": 1_000, "currency": "EUR", "referral_code": "ABCD2345"});
    let earned = h.post(&server, "/v1/orders", "order-2", body).await;
    assert_eq!(earned.ok()["referral"], json!({"recorded": false, "reason": "UNAVAILABLE"}));
    h.send(Method::GET, "/readyz", None, &[], None).await.ok();

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_of_an_unconfigured_service_answer_503() {
    let h = Harness::start_with(Options { optional_services: false, ..Options::default() }).await;
    let admin = h.key("shop", Scope::Admin).await;
    h.order(&admin, "anna", "1", 2_500).await.ok();

    let page = h.get(&admin, "/v1/customers/anna/loyalty").await;
    assert_eq!(page.ok()["points"]["available"], 25);
    for part in ["tier", "referral", "rewards"] {
        assert_eq!(page.body[part], json!({"available": false, "reason": "not_configured"}), "{part}");
    }
    for path in ["/v1/rewards", "/v1/tiers/ladder", "/v1/referrals/settings", "/v1/customers/anna/rewards"] {
        let answer = h.get(&admin, path).await;
        let detail = answer.problem(503, "BACKEND_NOT_CONFIGURED")["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("_ADDR"), "{path}: {detail}");
    }
    h.post(&admin, "/v1/vouchers/ABCD/consume", "c-1", json!({"order_id": "1"}))
        .await
        .problem(503, "BACKEND_NOT_CONFIGURED");
    let body = json!({"customer_id": "bob", "order_id": "2", "amount_minor": 1_000, "currency": "EUR", "referral_code": "ABCD2345"});
    let earned = h.post(&admin, "/v1/orders", "order-2", body).await;
    assert_eq!(earned.ok()["points"], 10);
    assert_eq!(earned.body["referral"], json!({"recorded": false, "reason": "BACKEND_NOT_CONFIGURED"}));
    h.send(Method::GET, "/readyz", None, &[], None).await.ok();

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scopes_limit_the_new_routes() {
    let h = Harness::start().await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let anna = h.customer_token("shop", "anna").await;
    let server = h.key("shop", Scope::Server).await;

    for path in ["/v1/tiers/ladder", "/v1/rewards", "/v1/referrals/settings", "/v1/customers/anna/tier"] {
        h.get(&storefront, path).await.problem(403, "INSUFFICIENT_SCOPE");
        h.get(&server, path).await.problem(403, "INSUFFICIENT_SCOPE");
    }
    h.post(&storefront, "/v1/rewards", "r-1", reward("x", 1)).await.problem(403, "INSUFFICIENT_SCOPE");
    let assign = h.post(&server, "/v1/customers/anna/tier-assignment", "a-1", json!({"tier_id": "vip"})).await;
    assign.problem(403, "INSUFFICIENT_SCOPE");
    let validate = h.post(&storefront, "/v1/vouchers/ABCD/validate", "v-1", json!({})).await;
    validate.problem(403, "INSUFFICIENT_SCOPE");
    let cancel = h.bodiless(Method::POST, &server, "/v1/redemptions/r-1/cancel", "x-1").await;
    cancel.problem(403, "INSUFFICIENT_SCOPE");

    // Storefront routes are open to every scope; a storefront key acts for a customer with their token.
    h.get_for(&storefront, &anna, "/v1/customers/anna/rewards").await.ok();
    h.get(&server, "/v1/customers/anna/redemptions").await.ok();
    h.get_for(&storefront, &anna, "/v1/customers/anna/referral").await.ok();

    h.stop().await;
}
