//! What the webhooks service holds about a customer, for the customer's
//! rights (served by [`loyalty_common::privacy`]). The shop already
//! received what was delivered; erasure deletes the customer's events,
//! their deliveries (pending ones are not sent) with the receivers'
//! answers, and the expiry reminders, and replaces the customer's id in
//! other customers' events that name it (a referral's).

use loyalty_common::privacy::Column::{Instant, Json, Number, Text};
use loyalty_common::privacy::{Erase, Holding, SAVED_ANSWERS, Subject};

/// The customer's deliveries, in the customer's program's subscriptions.
const DELIVERIES: &str = "customer_id = {customer} AND subscription_id IN \
     (SELECT subscription_id FROM subscriptions WHERE program_id = {program})";

pub static SUBJECT: Subject = Subject {
    service: "webhooks",
    holdings: &[
        Holding::unexported(
            "attempts",
            "delivery_seq IN (SELECT delivery_seq FROM deliveries WHERE customer_id = {customer} AND subscription_id IN \
             (SELECT subscription_id FROM subscriptions WHERE program_id = {program}))",
            Erase::Delete,
        ),
        Holding::rows(
            "deliveries",
            "deliveries",
            &[
                ("delivery_id", Text),
                ("subscription_id", Text),
                ("event_id", Text),
                ("state", Text),
                ("attempts", Number),
                ("created_at_us", Instant),
            ],
            "delivery_seq",
        )
        .filter(DELIVERIES)
        .erase(Erase::Delete),
        Holding::rows(
            "events",
            "events",
            &[("event_id", Text), ("event_type", Text), ("occurred_at_us", Instant), ("body", Json)],
            "occurred_at_us, event_id",
        )
        .erase(Erase::Delete),
        Holding::unexported(
            "events",
            "program_id = {program} AND replace(body, {quoted}, '') <> body",
            Erase::Keep("body = replace(body, {quoted}, {anonymous_quoted})"),
        ),
        Holding::rows("reminders", "reminders", &[("expires_at_us", Instant)], "expires_at_us").erase(Erase::Delete),
        // A monthly statement run paused at this customer resumes from the anonymous id.
        Holding::unexported(
            "statement_runs",
            "program_id = {program} AND after_customer = {customer}",
            Erase::Keep("after_customer = {anonymous}"),
        ),
        SAVED_ANSWERS,
    ],
    on_export: &[],
    erase_first: &[],
    erase_last: &[],
};
