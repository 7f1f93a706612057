//! What the tiers service holds about a customer, for the customer's rights
//! (served by [`loyalty_common::privacy`]). Erasure keeps the membership,
//! its history (whose reasons are codes such as `threshold`, not text) and
//! the qualifying events under the anonymous id, so the tier distribution
//! stays right.

use loyalty_common::privacy::Column::{Instant, Number, Text};
use loyalty_common::privacy::{Holding, OUTBOX, OUTBOX_MENTIONS, SAVED_ANSWERS, Subject};

pub static SUBJECT: Subject = Subject {
    service: "tiers",
    holdings: &[
        Holding::rows(
            "membership",
            "memberships",
            &[
                ("tier_id", Text),
                ("since_us", Instant),
                ("qualifying", Number),
                ("assigned_tier_id", Text),
                ("assigned_until_us", Instant),
                ("grace_until_us", Instant),
                ("next_review_us", Instant),
                ("version", Number),
            ],
            "customer_id",
        )
        .one(),
        Holding::rows(
            "tier_history",
            "membership_history",
            &[
                ("from_tier_id", Text),
                ("to_tier_id", Text),
                ("reason", Text),
                ("actor", Text),
                ("changed_at_us", Instant),
            ],
            "change_id",
        ),
        Holding::rows(
            "qualifying_events",
            "qualifying_events",
            &[
                ("transaction_id", Text),
                ("points", Number),
                ("order_points", Number),
                ("base_points", Number),
                ("spend_minor", Number),
                ("reverses", Text),
                ("occurred_at_us", Instant),
            ],
            "occurred_at_us, transaction_id",
        ),
        OUTBOX,
        OUTBOX_MENTIONS,
        SAVED_ANSWERS,
    ],
    on_export: &[],
    erase_first: &[],
    erase_last: &[],
};
