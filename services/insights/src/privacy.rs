//! What the insights service holds about a customer, for the customer's
//! rights (served by [`loyalty_common::privacy`]). Erasure keeps every row
//! the KPIs, cohorts, segments and NPS are counted from under the anonymous
//! id (so they do not move), with survey comments blanked.

use loyalty_common::privacy::Column::{Instant, Number, Text};
use loyalty_common::privacy::{Erase, Holding, SAVED_ANSWERS, Subject};

/// The buyer calendars: counted, never shown on their own.
const fn calendar(table: &'static str) -> Holding {
    Holding::unexported(
        table,
        "program_id = {program} AND customer_id = {customer}",
        Erase::Keep("customer_id = {anonymous}"),
    )
}

pub static SUBJECT: Subject = Subject {
    service: "insights",
    holdings: &[
        Holding::rows("member", "members", &[("first_seen_us", Instant)], "customer_id").one(),
        Holding::rows(
            "customer",
            "customers",
            &[
                ("first_order_us", Instant),
                ("last_order_us", Instant),
                ("order_count", Number),
                ("spend_minor", Number),
                ("segment", Text),
            ],
            "customer_id",
        )
        .one(),
        Holding::rows(
            "orders",
            "orders",
            &[("order_id", Text), ("amount_minor", Number), ("refunded_minor", Number), ("occurred_at_us", Instant)],
            "occurred_at_us, order_id",
        ),
        Holding::rows(
            "survey_responses",
            "survey_responses",
            &[("response_id", Text), ("kind", Text), ("score", Number), ("comment", Text), ("answered_at_us", Instant)],
            "answered_at_us, response_id",
        )
        .erase(Erase::Keep("customer_id = {anonymous}, comment = ''")),
        Holding::rows(
            "segment_changes",
            "segment_changes",
            &[("from_segment", Text), ("to_segment", Text), ("changed_at_us", Instant)],
            "sequence",
        ),
        calendar("buyer_days"),
        calendar("buyer_weeks"),
        calendar("buyer_months"),
        SAVED_ANSWERS,
    ],
    on_export: &[],
    erase_first: &[],
    erase_last: &[],
};
