//! What the services refuse, stated in the OpenAPI document: the bounds,
//! lengths and patterns of every parameter and request field, so that a
//! request valid by the schema is not refused as invalid. The contract test
//! holds the two together (schemathesis' positive-data-acceptance and
//! negative-data-rejection checks); the only refusals it lets through are the
//! rules JSON Schema cannot state (one field against another, or against the
//! present), which each field's description names.
//!
//! The handlers' annotations give the document its shape; this pass adds the
//! rules, by parameter name and by (request schema, property), in one table
//! beside the character sets of the shared validation.

use loyalty_common::validate::{CONTROL_CHARACTERS, FORMAT_CHARACTERS, MAX_ID_CHARS, MAX_REASON_CHARS, WHITE_SPACE};
use serde_json::{Value, json};

/// Largest points of one command, and largest amount of one order in minor units.
const MAX_POINTS: i64 = 1_000_000_000;
const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;
/// The longest window, period or validity a program may set, in days.
const MAX_DAYS: i64 = 3_660;
/// Voucher and referral codes: 32 letters and digits that cannot be mistaken for each other.
const CODE_ALPHABET: &str = "2-9A-HJ-NP-Za-hj-np-z";

/// Adds the rules to `document` (the generated OpenAPI document as JSON).
pub fn apply(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { continue };
            for parameter in parameters {
                let place = parameter["in"].as_str().unwrap_or_default();
                let name = parameter["name"].as_str().unwrap_or_default();
                if let Some(rule) = parameter_rule(path, place, name) {
                    merge(&mut parameter["schema"], rule);
                }
            }
        }
    }
    let Some(schemas) = document.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    for (schema, property, rule) in field_rules() {
        let Some(target) = schemas.get_mut(schema).and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
        else {
            panic!("constraints name {schema}.{property}, which the document does not have");
        };
        merge(target, rule);
    }
}

fn parameter_rule(path: &str, place: &str, name: &str) -> Option<Value> {
    Some(match (place, name) {
        ("path", "customer_id" | "campaign_id" | "reward_id" | "redemption_id" | "order_id" | "subscription_id") => {
            id()
        }
        ("path", "code") if path.starts_with("/v1/vouchers/") => voucher_code(),
        ("path", "code") => referral_code(),
        ("query", "customer_id") => id(),
        ("query", "event_id") => optional_id(),
        ("query", "page_token") if path == "/v1/webhooks/subscriptions" => {
            json!({"pattern": "^(sub_[0-9a-f]{32})?$", "description": "`next_page_token` of the previous page"})
        }
        ("query", "page_token") if path == "/v1/insights/customers" => insights_page_token(),
        ("query", "page_token") => {
            json!({"pattern": "^([1-9][0-9]{0,17})?$", "description": "`next_page_token` of the previous page"})
        }
        ("query", "amount_minor") => range(0, MAX_AMOUNT_MINOR),
        ("query", "currency") => currency(),
        _ => return None,
    })
}

/// (request schema, property, rule). A field that counts only for some
/// values of another (a campaign's `bonus_points` for `kind: bonus`, a
/// reward's `sku` for `free_product`) gets no rule here: any value passes
/// while it does not count, and the description says when it does.
fn field_rules() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("SurveyBody", "score", range(0, 10)),
        ("SurveyBody", "comment", json!({"maxLength": 2_000})),
        ("InsightSettingsBody", "at_risk_days", range(1, MAX_DAYS)),
        ("InsightSettingsBody", "churned_days", range(1, MAX_DAYS)),
        ("InsightSettingsBody", "loyal_orders", range(1, 1_000)),
        ("InsightSettingsBody", "loyal_days", range(1, MAX_DAYS)),
        ("InsightSettingsBody", "expected_lifespan_days", range(1, MAX_DAYS)),
        ("InsightSettingsBody", "expected_version", json!({"minimum": 0})),
        ("InsightSettingsBody", "point_value_milli_minor", range(0, 1_000_000)),
        ("InsightSettingsBody", "win_back_tier_id", optional_id()),
        ("ActivityBody", "activity_type", activity_type()),
        ("ActivityBody", "activity_ref", optional_id()),
        ("AdjustmentBody", "points", json!({"minimum": -MAX_POINTS, "maximum": MAX_POINTS, "not": {"const": 0}})),
        ("AdjustmentBody", "reason", named(MAX_REASON_CHARS)),
        ("AssignmentBody", "tier_id", id()),
        ("CampaignBody", "name", named(200)),
        ("CampaignBody", "tier_ids", json!({"items": id()})),
        ("CampaignBody", "applies_to", json!({"items": activity_type()})),
        (
            "CampaignBody",
            "segment_ids",
            json!({"items": {"type": "string", "enum": ["new", "active", "loyal", "at_risk", "churned"]}}),
        ),
        ("ConsumeBody", "order_id", id()),
        ("ConsumeBody", "customer_id", optional_id()),
        ("BirthdayBody", "birth_month", range(1, 12)),
        ("BirthdayBody", "birth_day", range(1, 31)),
        ("ProfileBody", "birth_month", range(0, 12)),
        ("ProfileBody", "birth_day", range(0, 31)),
        ("ProfileBody", "enrollment_channel", json!({"pattern": "^[a-z0-9_-]{0,32}$"})),
        (
            "ProfileBody",
            "attributes",
            json!({
                "maxProperties": 50,
                "propertyNames": {"pattern": "^[a-z0-9_-]{1,64}$"},
                "additionalProperties": {"maxLength": 500, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
            }),
        ),
        ("ProfileBody", "locale", json!({"maxLength": 35, "pattern": "^([A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*)?$"})),
        ("ProfileBody", "consents", json!({"maxItems": 20})),
        ("ProfileBody", "expected_version", json!({"minimum": 0})),
        ("ConsentBody", "channel", json!({"pattern": "^[a-z0-9_-]{1,32}$"})),
        ("GrantBody", "customer_ids", json!({"items": id(), "minItems": 1, "maxItems": 1_000, "uniqueItems": true})),
        ("GrantBody", "reason", named(MAX_REASON_CHARS)),
        ("CodeBatchBody", "count", range(1, 10_000)),
        ("CodeBatchBody", "prefix", json!({"pattern": "^[A-Za-z0-9]{0,12}$"})),
        ("CodeBatchBody", "reason", named(MAX_REASON_CHARS)),
        ("OrderBody", "customer_id", id()),
        ("OrderBody", "order_id", id()),
        ("OrderBody", "amount_minor", range(0, MAX_AMOUNT_MINOR)),
        ("OrderBody", "currency", currency()),
        ("RedeemBody", "reward_id", id()),
        ("RefundBody", "refunded_amount_minor", range(1, MAX_AMOUNT_MINOR)),
        ("ReferralSettingsBody", "referrer_points", range(0, MAX_POINTS)),
        ("ReferralSettingsBody", "referee_points", range(0, MAX_POINTS)),
        ("ReferralSettingsBody", "minimum_order_minor", json!({"minimum": 0})),
        ("ReferralSettingsBody", "cap_count", json!({"minimum": 0})),
        ("ReferralSettingsBody", "cap_period_days", range(1, MAX_DAYS)),
        ("ReferralSettingsBody", "attribution_window_days", range(1, MAX_DAYS)),
        ("ReferralSettingsBody", "clawback_window_days", range(0, MAX_DAYS)),
        ("ReferralSettingsBody", "referee_reward_id", optional_id()),
        ("ReferralSettingsBody", "referrer_reward_id", optional_id()),
        ("RewardBody", "name", named(200)),
        ("RewardBody", "description", json!({"maxLength": 2_000})),
        ("RewardBody", "point_cost", range(1, MAX_POINTS)),
        ("RewardBody", "minimum_tier_id", optional_id()),
        ("RewardBody", "eligible_tier_ids", json!({"items": id(), "maxItems": 50, "uniqueItems": true})),
        ("RewardBody", "total_stock", json!({"minimum": 0})),
        ("RewardBody", "per_customer_limit", json!({"minimum": 0})),
        ("RewardBody", "voucher_validity_days", range(1, MAX_DAYS)),
        ("SettingsBody", "currency", json!({"pattern": "^([A-Z]{3})?$"})),
        ("SettingsBody", "minimum_order_minor", range(0, MAX_AMOUNT_MINOR)),
        ("SettingsBody", "pending_days", range(0, 365)),
        ("SettingsBody", "expiry_reminder_days", range(0, 365)),
        ("CheckoutPoints", "points", range(1, MAX_POINTS)),
        ("CheckoutPoints", "amount_minor", range(1, MAX_POINTS)),
        ("CheckoutPoints", "min_points", range(0, MAX_POINTS)),
        ("CheckoutPoints", "max_share_bp", range(1, 10_000)),
        ("CheckoutPoints", "step_points", range(0, MAX_POINTS)),
        ("CheckoutPointsBody", "customer_id", id()),
        ("CheckoutPointsBody", "amount_minor", range(0, MAX_AMOUNT_MINOR)),
        ("CheckoutPointsBody", "currency", currency()),
        ("CheckoutPointsBody", "points", range(1, MAX_POINTS)),
        ("EarnRate", "points", range(0, 1_000_000)),
        ("EarnRate", "per_amount_minor", range(1, MAX_POINTS)),
        ("ActivityRule", "activity_type", activity_type()),
        ("ActivityRule", "points", range(1, MAX_POINTS)),
        ("ActivityRule", "cap_count", json!({"minimum": 0})),
        ("LadderBody", "tiers", json!({"maxItems": 50})),
        ("Tier", "tier_id", id()),
        ("Tier", "name", named(100)),
        ("Tier", "multiplier_bp", range(10_000, 100_000)),
        ("Tier", "perks", json!({"maxItems": 50, "items": {"minLength": 1, "maxLength": 200}})),
        ("TierBenefits", "early_access_hours", range(0, 8_760)),
        ("TierBenefits", "birthday_multiplier_bp", json!({"anyOf": [{"const": 0}, range(10_000, 100_000)]})),
        ("TierBenefits", "flags", json!({"maxItems": 20, "uniqueItems": true, "items": activity_type()})),
        ("SignupBody", "code", referral_code()),
        ("SignupBody", "customer_id", id()),
        ("ValidateBody", "customer_id", optional_id()),
        ("SubscriptionBody", "url", endpoint_url()),
        ("SubscriptionBody", "event_types", json!({"items": {"type": "string", "enum": event_type_names()}})),
        ("SubscriptionBody", "description", json!({"maxLength": 500})),
        ("SubscriptionChange", "url", endpoint_url()),
        ("SubscriptionChange", "event_types", json!({"items": {"type": "string", "enum": event_type_names()}})),
        ("SubscriptionChange", "description", json!({"maxLength": 500})),
        ("SubscriptionChange", "expected_version", json!({"minimum": 0})),
        ("RotateSecretBody", "overlap_seconds", range(0, 7 * 86_400)),
        ("RedeliverBody", "event_id", id()),
    ]
}

/// Adds `rule`'s keys to `target`, object into object (an array's `items`
/// keeps its type); the type and description stay unless the rule says.
fn merge(target: &mut Value, rule: Value) {
    let (Some(target), Value::Object(rule)) = (target.as_object_mut(), rule) else { return };
    for (key, value) in rule {
        match target.get_mut(&key) {
            Some(existing) if existing.is_object() && value.is_object() => merge(existing, value),
            _ => {
                target.insert(key, value);
            }
        }
    }
}

/// An endpoint: `https://`, a DNS name whose last label starts with a letter (no
/// address, no punycode), an optional port, path and query. Plain `http://` is for
/// operators who allow it (`WEBHOOKS_ALLOW_HTTP`), so the document does not offer it.
fn endpoint_url() -> Value {
    let label = "[a-z0-9]+(-[a-z0-9]+)*";
    let last = "[a-z][a-z0-9]*(-[a-z0-9]+)*";
    json!({
        "maxLength": 2_000,
        "pattern": format!("^https://({label}\\.)*{last}(:[1-9][0-9]{{0,3}})?(/[A-Za-z0-9._~/-]*)?(\\?[A-Za-z0-9._~=&-]*)?$"),
    })
}

fn event_type_names() -> Vec<&'static str> {
    loyalty_proto::webhooks::EVENT_TYPES.iter().map(|(name, _)| *name).collect()
}

fn range(minimum: i64, maximum: i64) -> Value {
    json!({"minimum": minimum, "maximum": maximum})
}

fn currency() -> Value {
    json!({"pattern": "^[A-Z]{3}$"})
}

fn activity_type() -> Value {
    json!({"pattern": "^[a-z0-9_-]{1,64}$"})
}

fn voucher_code() -> Value {
    // A campaign's prefix (IssueCodeBatch), then the code itself.
    json!({"pattern": format!("^[- ]*([A-Za-z0-9][- ]*){{0,12}}([{CODE_ALPHABET}][- ]*){{12}}$"), "maxLength": 128})
}

fn referral_code() -> Value {
    let space = class(false, &[WHITE_SPACE]);
    json!({"pattern": format!("^{space}*[{CODE_ALPHABET}]{{8}}{space}*$")})
}

/// The customer list's page token: the last row's value and customer id
/// (`<digits>:<id>`), at most 200 characters, no control character.
fn insights_page_token() -> Value {
    let text = class(true, &[CONTROL_CHARACTERS]);
    json!({
        "maxLength": 200,
        "pattern": format!("^((0|[1-9][0-9]{{0,17}}):{text}+)?$"),
        "description": "`next_page_token` of the previous page",
    })
}

/// An id: 1 to 128 characters, no control or invisible format character, not only white space.
fn id() -> Value {
    let (any, visible) = id_classes();
    json!({"minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": format!("^{any}*{visible}{any}*$")})
}

/// An id, or empty for none.
fn optional_id() -> Value {
    let (any, visible) = id_classes();
    json!({"maxLength": MAX_ID_CHARS, "pattern": format!("^({any}*{visible}{any}*)?$")})
}

fn id_classes() -> (String, String) {
    (
        class(true, &[CONTROL_CHARACTERS, FORMAT_CHARACTERS]),
        class(true, &[CONTROL_CHARACTERS, FORMAT_CHARACTERS, WHITE_SPACE]),
    )
}

/// Free text of 1 to `max` characters, not only white space.
fn named(max: usize) -> Value {
    let visible = class(true, &[WHITE_SPACE]);
    json!({"minLength": 1, "maxLength": max, "pattern": format!("^[\\s\\S]*{visible}[\\s\\S]*$")})
}

/// A character class of the characters in `sets`, or (`negated`) of every other character.
fn class(negated: bool, sets: &[&[(char, char)]]) -> String {
    let mut out = String::from(if negated { "[^" } else { "[" });
    for &(low, high) in sets.iter().copied().flatten() {
        out.push_str(&escape(low));
        if high != low {
            out.push('-');
            out.push_str(&escape(high));
        }
    }
    out.push(']');
    out
}

/// One character as every pattern dialect that reads the document reads it
/// (ECMA-262, Python `re`, Rust `regex`): `\uXXXX` in the Basic Multilingual
/// Plane, the character itself beyond it.
fn escape(c: char) -> String {
    let code = u32::from(c);
    if code <= 0xFFFF { format!("\\u{code:04X}") } else { c.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(rule: &Value, text: &str) -> bool {
        let pattern = regex::Regex::new(rule["pattern"].as_str().unwrap()).unwrap();
        let length = text.chars().count() as u64;
        let min = rule["minLength"].as_u64().unwrap_or(0);
        let max = rule["maxLength"].as_u64().unwrap_or(u64::MAX);
        pattern.is_match(text) && (min..=max).contains(&length)
    }

    #[test]
    fn the_id_pattern_accepts_what_the_services_accept_and_nothing_else() {
        let samples = [
            "anna",
            "zoë",
            "客户-42",
            "a b",
            " a",
            "🙂",
            "",
            " ",
            "\u{3000}",
            "a\u{200B}b",
            "a\nb",
            "\u{E0041}x",
            "x\u{110BD}",
            "\u{0085}",
            "a\u{00A0}",
        ];
        let long = "é".repeat(MAX_ID_CHARS);
        let too_long = "é".repeat(MAX_ID_CHARS + 1);
        for text in samples.iter().copied().chain([long.as_str(), too_long.as_str()]) {
            assert_eq!(
                matches(&id(), text),
                loyalty_common::validate::id("x", text).is_ok(),
                "{text:?} by the schema and by the service"
            );
        }
    }

    #[test]
    fn endpoint_urls_the_schema_offers_are_urls_the_webhooks_service_takes() {
        let rule = endpoint_url();
        for url in [
            "https://shop.example/hooks",
            "https://a/",
            "https://x-1.y2.example:8443/a/b_c~d.e?x=1&y=-",
            "https://0.a",
            "https://shop.example",
        ] {
            assert!(matches(&rule, url), "{url} by the schema");
            assert_eq!(loyalty_webhooks::domain::check_url(url, false), Ok(()), "{url} by the service");
        }
        for url in ["http://shop.example/", "https://1.2.3.4/", "https://xn--a.example/", "https://a.0/", "ftp://a/"] {
            assert!(!matches(&rule, url), "{url} is not offered");
        }
    }

    #[test]
    fn codes_match_what_the_services_normalise() {
        assert!(matches(&voucher_code(), "ABCD-EFGH-JKLM"));
        assert!(matches(&voucher_code(), "abcdefghjkmn"));
        assert!(!matches(&voucher_code(), "ABCD-EFGH-JKL0"));
        assert!(matches(&referral_code(), "ABCDEFGH"));
        assert!(matches(&referral_code(), " abcdefgh\u{3000}"));
        assert!(!matches(&referral_code(), "ABCDEFG1"));
    }
}
