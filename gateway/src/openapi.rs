//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the JSON types. A test compares it with the router's route table.

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::problem::{self, FieldError, ProblemDocument};
use crate::routes::{admin, customers, insights, ops, orders, privacy, program, referrals, rewards, tiers, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Loyalty gateway",
        description = "The HTTP/JSON API of the loyalty mesh for shops and storefront widgets.\n\n\
            Every `/v1` route needs `Authorization: Bearer <API key>`. A key belongs to one program (the \
            program is never in the URL or body) and has a scope: `storefront` (read one customer), \
            `server` (the shop's back end; includes `storefront`) or `admin` (includes `server`). A \
            `storefront` key is public, so on `/v1/customers/{customer_id}/...` routes it also needs \
            `X-Customer-Token`: a token the shop's back end signed (HMAC-SHA256) for that customer; refusals \
            are 401 `CUSTOMER_TOKEN_REQUIRED`, `CUSTOMER_TOKEN_INVALID`, `CUSTOMER_TOKEN_EXPIRED` and 403 \
            `CUSTOMER_TOKEN_MISMATCH`.\n\n\
            Integers (points, amounts in minor units, days) are written as integers: `1200`, never \
            `1200.0` or `1.2e3` (400 `INVALID_BODY`). Ids are 1 to 128 characters without control or \
            invisible format characters, compared byte for byte. A few rules relate one field to another \
            or to the present (a campaign ends after it starts; an expiry lies ahead); the fields' \
            descriptions say them, and breaking one is 422 naming the field.\n\n\
            Every write (POST, PUT) needs an `Idempotency-Key` header; a retry with the same key returns \
            the first answer, marked `Idempotent-Replayed: true`.\n\n\
            Errors are RFC 9457 `application/problem+json` documents with a machine-readable `code` and, \
            for invalid input, `errors` naming each field: 400 for a request that cannot be read, 422 for \
            values the service refuses, 409 for a conflict with the current state (e.g. \
            `INSUFFICIENT_POINTS`), 429 with `Retry-After` past the key's rate limit.\n\n\
            The tiers, referral, rewards, insights and webhooks services are optional: a route that needs one the gateway \
            has no address for answers 503 with code `BACKEND_NOT_CONFIGURED`; the loyalty page then \
            marks that part `available: false, reason: not_configured`."
    ),
    paths(
        ops::healthz,
        ops::readyz,
        orders::earn_for_order,
        orders::preview_order,
        orders::refund_order,
        orders::quote_checkout_points,
        orders::apply_checkout_points,
        customers::record_activity,
        customers::loyalty_page,
        customers::profile,
        customers::put_profile,
        customers::set_birthday,
        customers::transactions,
        program::overview,
        admin::adjust,
        admin::get_settings,
        admin::put_settings,
        admin::list_campaigns,
        admin::create_campaign,
        admin::update_campaign,
        admin::end_campaign,
        privacy::export,
        privacy::erase,
        admin::audit,
        rewards::available,
        rewards::redeem,
        rewards::redemptions,
        rewards::validate_voucher,
        rewards::consume_voucher,
        rewards::list,
        rewards::create,
        rewards::update,
        rewards::archive,
        rewards::grant,
        rewards::issue_codes,
        rewards::cancel_redemption,
        referrals::customer_referral,
        referrals::customer_referrals,
        referrals::create_customer_referral_code,
        referrals::signup,
        referrals::resolve_code,
        referrals::get_settings,
        referrals::put_settings,
        tiers::get_ladder,
        tiers::put_ladder,
        tiers::distribution,
        tiers::history,
        tiers::membership,
        tiers::assign,
        tiers::remove_assignment,
        insights::customer_insight,
        insights::customers,
        insights::segments,
        insights::get_settings,
        insights::put_settings,
        insights::record_survey,
        insights::survey_scores,
        insights::kpis,
        insights::cohorts,
        insights::segment_changes,
        webhooks::event_types,
        webhooks::event_schema,
        webhooks::list,
        webhooks::create,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::rotate_secret,
        webhooks::deliveries,
        webhooks::redeliver,
    ),
    // CustomerOrder and DeliveryState appear only in a query, which utoipa does not collect schemas from.
    components(schemas(
        ProblemDocument,
        FieldError,
        crate::model::CustomerOrder,
        crate::model::DeliveryState,
        crate::model::AuditKind
    )),
    modifiers(&SecurityAndProblems),
    tags(
        (name = "orders", description = "The shop's back end (scope `server`)"),
        (name = "customers", description = "One customer: activities (`server`), loyalty page and history (`storefront` with a customer token); how the program works (`storefront`, no token)"),
        (name = "admin", description = "Program administration (scope `admin`)"),
        (name = "rewards", description = "Rewards, redemptions (`storefront`), vouchers at the checkout (`server`) and the catalog (`admin`); needs the rewards service"),
        (name = "referrals", description = "Referral codes and sign-ups (`storefront`) and settings (`admin`); needs the referral service"),
        (name = "tiers", description = "The tier ladder, memberships and manual assignments (scope `admin`); needs the tiers service"),
        (name = "insights", description = "Customers' order history, RFM scores, segments and lifetime value, their thresholds, program KPIs, churn and cohort retention, NPS and CSAT (scope `admin`); survey answers (`server`); needs the insights service"),
        (name = "webhooks", description = "Endpoints that receive the program's events, signed per the Standard Webhooks specification, their secrets and deliveries (scope `admin`); needs the webhooks service"),
        (name = "operations", description = "Probes; no key needed"),
    )
)]
pub struct ApiDoc;

/// The bearer scheme, and the problem answers every operation may give.
struct SecurityAndProblems;

impl Modify for SecurityAndProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key made with `loyalty-gateway keys create`"))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty() && has_scheme(s));
                let writes = operation
                    .parameters
                    .as_ref()
                    .is_some_and(|ps| ps.iter().any(|p| p.name.eq_ignore_ascii_case("idempotency-key")));
                let mut add = |status: &str, description: &str| {
                    operation.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(description));
                };
                if secured {
                    add(
                        "400",
                        "The request cannot be read: malformed JSON, an unknown field, a wrong type, or a missing Idempotency-Key header",
                    );
                    add("401", "No API key, or a key that is not valid (unknown, wrong or revoked)");
                    add("403", "The key's scope does not allow this route");
                    add("429", "The key's rate limit is exhausted; retry after `Retry-After` seconds");
                    add(
                        "503",
                        "A backend service is unavailable; retry later (with the same Idempotency-Key for writes). \
                         `BACKEND_NOT_CONFIGURED`: the gateway has no address for the optional service this route needs",
                    );
                    add("504", "A backend service did not answer in time; retry later");
                }
                if writes {
                    add("413", "The body is larger than the API accepts");
                    add("415", "The body is not `application/json`");
                }
                add("default", "Any other problem");
            }
        }
    }
}

fn has_scheme(requirements: &[utoipa::openapi::security::SecurityRequirement]) -> bool {
    // `security(())` documents an open route as one empty requirement.
    serde_json::to_value(requirements)
        .is_ok_and(|v| v.as_array().is_some_and(|a| a.iter().any(|r| r != &serde_json::json!({}))))
}

fn problem(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content(problem::CONTENT_TYPE, content).build())
}

/// The document as served at `/openapi.json`, with the services' rules ([`crate::constraints`]).
pub fn document() -> String {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    crate::constraints::apply(&mut document);
    serde_json::to_string_pretty(&document).expect("the OpenAPI document serializes")
}
