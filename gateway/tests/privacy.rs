//! A customer's rights through the gateway, on the whole mesh: the export
//! holds what every service keeps about the customer; after the erasure no
//! text column of any service's database holds the customer's id or
//! anything they gave (checked by SQL over every table), the program's
//! totals are what they were, another program's customer of the same id is
//! untouched, a gift to the erased id is refused, and a second erasure
//! finds nothing left.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use loyalty_common::db::{self, Database, Dialect, PoolSettings};
use loyalty_gateway::keys::Scope;
use support::{Backend, Harness, eventually};

/// The customer, and what they gave: none of it may survive the erasure.
const CUSTOMER: &str = "erase-me-7f3a";
const SECRETS: &[&str] = &[CUSTOMER, "attr-secret-91c", "comment-secret-55", "reason-secret-42"];
/// Their friend, who signs up with their code.
const FRIEND: &str = "friend-b7";

async fn open(url: &str) -> Database {
    db::connect(url, PoolSettings::new(2, 10_000)).await.expect("a service database opens")
}

/// Every text column of every table, by table.
async fn text_columns(db: &Database) -> BTreeMap<String, Vec<String>> {
    let sql = match db.dialect {
        Dialect::Postgres => {
            "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND data_type IN ('text', 'character varying')"
        }
        Dialect::Sqlite => {
            "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m \
             JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND upper(p.type) = 'TEXT'"
        }
    };
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in sqlx::query(sql).fetch_all(&db.pool).await.unwrap() {
        let table: String = row.try_get(0).unwrap();
        tables.entry(table).or_default().push(row.try_get(1).unwrap());
    }
    tables
}

/// `service.table.column = secret` for every value of program `shop` (or of
/// a table without a program) that contains a secret.
async fn survivors(databases: &BTreeMap<&'static str, String>) -> Vec<String> {
    let mut found = Vec::new();
    for (service, url) in databases {
        let db = open(url).await;
        let tables = text_columns(&db).await;
        assert!(tables.len() > 3, "{service}: no tables found in {tables:?}");
        for (table, columns) in &tables {
            let scoped = columns.iter().any(|c| c == "program_id");
            for column in columns {
                for secret in SECRETS {
                    let mut sql = format!("SELECT count(*) FROM {table} WHERE replace({column}, $1, '') <> {column}");
                    if scoped {
                        sql.push_str(" AND program_id <> 'other-shop'");
                    }
                    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(*secret)
                        .fetch_one(&db.pool)
                        .await
                        .unwrap_or_else(|e| panic!("{service}.{table}.{column}: {e}"));
                    if count > 0 {
                        found.push(format!("{service}.{table}.{column} = {secret} ({count} rows)"));
                    }
                }
            }
        }
        db.pool.close().await;
    }
    found
}

/// The program's totals in every service, read by SQL.
const TOTALS: &[(&str, &str)] = &[
    ("points", "SELECT count(*) FROM accounts WHERE program_id = 'shop'"),
    ("points", "SELECT COALESCE(CAST(sum(available) AS BIGINT), 0) FROM accounts WHERE program_id = 'shop'"),
    ("points", "SELECT COALESCE(CAST(sum(lifetime_earned) AS BIGINT), 0) FROM accounts WHERE program_id = 'shop'"),
    ("points", "SELECT COALESCE(CAST(sum(spent) AS BIGINT), 0) FROM accounts WHERE program_id = 'shop'"),
    ("points", "SELECT count(*) FROM ledger_entries WHERE program_id = 'shop'"),
    ("points", "SELECT COALESCE(CAST(sum(points) AS BIGINT), 0) FROM ledger_entries WHERE program_id = 'shop'"),
    ("points", "SELECT COALESCE(CAST(sum(remaining) AS BIGINT), 0) FROM point_lots WHERE program_id = 'shop'"),
    ("points", "SELECT COALESCE(CAST(sum(amount_minor) AS BIGINT), 0) FROM orders WHERE program_id = 'shop'"),
    ("tiers", "SELECT count(*) FROM memberships WHERE program_id = 'shop' AND tier_id = 'silver'"),
    ("tiers", "SELECT count(*) FROM memberships WHERE program_id = 'shop'"),
    ("tiers", "SELECT count(*) FROM membership_history WHERE program_id = 'shop'"),
    ("referral", "SELECT count(*) FROM referrals WHERE program_id = 'shop' AND status = 'completed'"),
    ("referral", "SELECT count(*) FROM reward_tasks WHERE program_id = 'shop' AND done = 1"),
    ("rewards", "SELECT count(*) FROM redemptions WHERE program_id = 'shop' AND status = 'active'"),
    ("insights", "SELECT count(*) FROM members WHERE program_id = 'shop'"),
    ("insights", "SELECT COALESCE(CAST(sum(spend_minor) AS BIGINT), 0) FROM customers WHERE program_id = 'shop'"),
    ("insights", "SELECT count(*) FROM survey_responses WHERE program_id = 'shop'"),
    ("insights", "SELECT COALESCE(CAST(sum(score) AS BIGINT), 0) FROM survey_responses WHERE program_id = 'shop'"),
    ("insights", "SELECT count(*) FROM buyer_days WHERE program_id = 'shop'"),
];

async fn totals(databases: &BTreeMap<&'static str, String>) -> Vec<(String, i64)> {
    let mut totals = Vec::new();
    for (service, sql) in TOTALS {
        let db = open(&databases[service]).await;
        let value: i64 = sqlx::query_scalar(*sql).fetch_one(&db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        totals.push((format!("{service}: {sql}"), value));
        db.pool.close().await;
    }
    totals
}

async fn customer_rights(backend: Backend) {
    let h = Harness::start_with(support::Options { backend, ..Default::default() }).await;
    let admin = h.key("shop", Scope::Admin).await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let other = h.key("other-shop", Scope::Admin).await;
    let token = h.customer_token("shop", CUSTOMER).await;

    // A receiver for the program's webhooks.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(|| async { "ok" })).await });
    let subscription = json!({"url": hooks, "event_types": [], "description": "CRM"});
    h.post(&admin, "/v1/webhooks/subscriptions", "hook-1", subscription).await.ok();

    // The program, and the customer's life in it.
    let settings = json!({
        "earn_rate": {"points": 1, "per_amount_minor": 100}, "rounding": "down", "currency": "EUR",
        "expiry": {"kind": "days_after_earn", "count": 365}, "activity_rules": [],
    });
    h.put(&admin, "/v1/settings", "settings-1", settings).await.ok();
    let ladder = json!({
        "tiers": [
            {"tier_id": "bronze", "name": "Bronze", "threshold": 0, "multiplier_bp": 10_000},
            {"tier_id": "silver", "name": "Silver", "threshold": 100, "multiplier_bp": 10_000},
        ],
        "window": {"kind": "lifetime"}, "downgrade": {"kind": "immediate"},
    });
    h.put(&admin, "/v1/tiers/ladder", "ladder-1", ladder).await.ok();
    let referral = json!({"enabled": true, "referrer_points": 300, "referee_points": 100, "attribution_window_days": 30,
                      "clawback_window_days": 14});
    h.put(&admin, "/v1/referrals/settings", "referral-1", referral).await.ok();
    let reward = json!({"name": "5 off", "description": "5 EUR off", "kind": "fixed_discount", "amount_minor": 500,
                        "currency": "EUR", "point_cost": 100, "voucher_validity_days": 30});
    let reward_id =
        h.post(&admin, "/v1/rewards", "reward-1", reward).await.ok()["reward_id"].as_str().unwrap().to_owned();
    let profile = json!({
        "enrollment_channel": "store", "birth_month": 5, "birth_day": 17, "locale": "de-CH", "time_zone": "Europe/Zurich",
        "consents": [{"channel": "email", "granted": true, "changed_at": "2025-01-01T00:00:00Z"}],
        "attributes": {"favourite_store": "attr-secret-91c"}, "expected_version": 0,
    });
    h.put(&admin, &format!("/v1/customers/{CUSTOMER}/profile"), "profile-1", profile).await.ok();
    h.order(&server, CUSTOMER, "o-1", 25_000).await.ok();
    h.order(&server, CUSTOMER, "o-2", 5_000).await.ok();
    let adjustment = json!({"points": 50, "reason": "goodwill reason-secret-42"});
    h.post(&admin, &format!("/v1/customers/{CUSTOMER}/adjustments"), "adjust-1", adjustment).await.ok();
    let survey = json!({"kind": "nps", "score": 9, "comment": "comment-secret-55"});
    h.post(&admin, &format!("/v1/customers/{CUSTOMER}/surveys"), "survey-1", survey).await.ok();
    let gift = json!({"customer_ids": [CUSTOMER], "reason": "thanks reason-secret-42"});
    h.post(&admin, &format!("/v1/rewards/{reward_id}/grants"), "gift-1", gift).await.ok();
    let code =
        h.post_for(&storefront, &token, &format!("/v1/customers/{CUSTOMER}/referral"), "code-1", json!({})).await;
    let code = code.ok()["code"].as_str().unwrap().to_owned();
    let signup = json!({"code": code, "customer_id": FRIEND});
    h.post(&server, "/v1/referrals/signups", "signup-1", signup).await.ok();
    h.order(&server, FRIEND, "o-3", 10_000).await.ok();
    // The same id in another program, which the erasure must not touch.
    h.order(&other, CUSTOMER, "other-o-1", 7_000).await.ok();

    // Wait for every follower (tiers, referral and its rewards, insights, webhooks) to be done with it all.
    let databases = h.service_databases.clone();
    let settled = || async {
        let referral = open(&databases["referral"]).await;
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM reward_tasks WHERE done = 1")
            .fetch_one(&referral.pool)
            .await
            .unwrap();
        referral.pool.close().await;
        let insight = h.get(&admin, &format!("/v1/customers/{CUSTOMER}/insight")).await;
        let webhooks = open(&databases["webhooks"]).await;
        let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
            .fetch_one(&webhooks.pool)
            .await
            .unwrap();
        webhooks.pool.close().await;
        done == 2 && insight.status == 200 && insight.body["spend_minor"] == 30_000 && delivered >= 6
    };
    assert!(eventually(Duration::from_secs(20), settled).await, "the followers never caught up");
    // Then until nothing moves any more.
    let mut before = (totals(&databases).await, h.get(&admin, "/v1/insights/kpis").await.body);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = (totals(&databases).await, h.get(&admin, "/v1/insights/kpis").await.body);
        if now == before {
            break;
        }
        before = now;
    }
    let other_page =
        h.get(&other, &format!("/v1/customers/{CUSTOMER}/loyalty")).await.ok()["points"]["available"].clone();

    // The export: every service's part.
    let export = h.get(&admin, &format!("/v1/customers/{CUSTOMER}/export")).await;
    let document = export.ok();
    assert_eq!((document["program_id"].clone(), document["customer_id"].clone()), (json!("shop"), json!(CUSTOMER)));
    assert_eq!(document["not_configured"], json!([]));
    let services = &document["services"];
    let account = services["points"]["account"].clone();
    assert_eq!(services["points"]["profile"]["body"]["attributes"]["favourite_store"], "attr-secret-91c");
    assert_eq!(services["points"]["orders"].as_array().unwrap().len(), 2, "{services}");
    assert!(services["points"]["ledger"].as_array().unwrap().len() >= 4, "{services}");
    assert_eq!(services["points"]["exports"].as_array().unwrap().len(), 1, "this export is audited: {services}");
    assert_eq!(services["insights"]["survey_responses"][0]["comment"], "comment-secret-55");
    assert_eq!(services["insights"]["customer"]["spend_minor"], 30_000);
    assert_eq!(services["tiers"]["membership"]["tier_id"], "silver");
    assert_eq!(services["referral"]["referral_code"]["code"], code.as_str());
    assert_eq!(services["referral"]["referrals_made"][0]["status"], "completed");
    assert_eq!(services["rewards"]["redemptions"][0]["grant_reason"], "thanks reason-secret-42");
    assert!(!services["webhooks"]["events"].as_array().unwrap().is_empty(), "{services}");
    assert!(!services["webhooks"]["deliveries"].as_array().unwrap().is_empty(), "{services}");
    assert!(!document.to_string().contains(FRIEND), "the friend's id is not the customer's data: {document}");
    // Admin only.
    h.get(&server, &format!("/v1/customers/{CUSTOMER}/export")).await.problem(403, "INSUFFICIENT_SCOPE");
    let refused = h.send(Method::DELETE, &format!("/v1/customers/{CUSTOMER}"), Some(&server), &[], None).await;
    refused.problem(403, "INSUFFICIENT_SCOPE");
    assert!(!survivors(&databases).await.is_empty(), "the scan finds the customer before the erasure");

    // The erasure.
    let erased = h.send(Method::DELETE, &format!("/v1/customers/{CUSTOMER}"), Some(&admin), &[], None).await;
    let erased = erased.ok().clone();
    let names: Vec<&str> =
        erased["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["points", "tiers", "referral", "rewards", "insights", "webhooks"]);
    for service in erased["services"].as_array().unwrap() {
        let touched = service["anonymized"].as_i64().unwrap() + service["deleted"].as_i64().unwrap();
        assert!(touched > 0, "{service}");
    }

    let left = survivors(&databases).await;
    assert!(left.is_empty(), "personal data survived the erasure: {left:#?}");
    assert_eq!(totals(&databases).await, before.0, "the program's totals moved");
    assert_eq!(h.get(&admin, "/v1/insights/kpis").await.body, before.1, "the KPIs moved");
    let other_after =
        h.get(&other, &format!("/v1/customers/{CUSTOMER}/loyalty")).await.ok()["points"]["available"].clone();
    assert_eq!(other_after, other_page, "another program's customer of the same id was touched");
    assert!(other_page.as_i64().unwrap() > 0, "{other_page}");

    // Nothing is left to export, a gift is refused, the audit says who did it.
    let empty = h.get(&admin, &format!("/v1/customers/{CUSTOMER}/export")).await;
    let services = empty.ok()["services"].clone();
    assert_eq!(services["points"]["account"], Value::Null);
    assert_eq!(services["points"]["ledger"], json!([]));
    assert_eq!(services["tiers"]["membership"], Value::Null);
    assert_eq!(services["insights"]["survey_responses"], json!([]));
    let gift = json!({"customer_ids": ["someone-else", CUSTOMER], "reason": "welcome back"});
    let refused = h.post(&admin, &format!("/v1/rewards/{reward_id}/grants"), "gift-2", gift).await;
    assert_eq!(refused.problem(409, "CUSTOMER_ERASED")["metadata"]["customer_id"], CUSTOMER, "{:?}", refused.body);
    let audit = h.get(&admin, "/v1/audit?page_size=50").await;
    let entries = audit.ok()["entries"].as_array().unwrap().clone();
    let erasure = entries.iter().find(|e| e["entity"] == "customer_erasure").expect("the erasure is audited");
    assert!(erasure["actor"].as_str().unwrap().starts_with("api-key:"), "{erasure}");
    let anonymous = erasure["entity_id"].as_str().unwrap().to_owned();
    assert!(anonymous.starts_with("anon-"), "{erasure}");
    // What the totals are made of is there, under the anonymous id, and reads as ever.
    let page = h.get(&admin, &format!("/v1/customers/{anonymous}/loyalty")).await;
    let points = &page.ok()["points"];
    assert_eq!(
        (&points["available"], &points["lifetime_earned"]),
        (&account["available"], &account["lifetime_earned"])
    );
    assert_eq!(page.ok()["tier"]["tier_id"], "silver", "{:?}", page.body);
    let history = h.get(&admin, &format!("/v1/customers/{anonymous}/transactions")).await;
    let entries = history.ok()["entries"].as_array().unwrap().clone();
    assert!(entries.len() >= 4 && entries.iter().all(|e| e["reason"].as_str().unwrap_or("").is_empty()), "{entries:?}");

    // Again: nothing left to erase but the audit entry of the export made since (which names the customer).
    let again = h.send(Method::DELETE, &format!("/v1/customers/{CUSTOMER}"), Some(&admin), &[], None).await;
    for service in again.ok()["services"].as_array().unwrap() {
        let moved = if service["service"] == "points" { 1 } else { 0 };
        assert_eq!((service["anonymized"].clone(), service["deleted"].clone()), (json!(moved), json!(0)), "{service}");
    }
    assert!(survivors(&databases).await.is_empty());
    h.stop().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn customer_rights() {
        super::customer_rights(super::Backend::Sqlite).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn customer_rights() {
        super::customer_rights(super::Backend::Postgres).await;
    }
}
