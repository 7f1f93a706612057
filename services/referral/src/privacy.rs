//! What the referral service holds about a customer, for the customer's
//! rights (served by [`loyalty_common::privacy`]). Neither side of a
//! referral sees the other's id in an export. Erasure deletes the
//! customer's code and keeps referrals (on either side), the orders seen and
//! the reward tasks under the anonymous id, so the program's referral counts
//! stay right; the code a referral was made with is blanked.

use loyalty_common::privacy::Column::{Instant, Number, Text};
use loyalty_common::privacy::{Erase, Holding, OUTBOX, OUTBOX_MENTIONS, SAVED_ANSWERS, Subject};

pub static SUBJECT: Subject = Subject {
    service: "referral",
    holdings: &[
        Holding::rows(
            "referral_code",
            "referral_codes",
            &[
                ("code", Text),
                ("enabled", Number),
                ("created_at_us", Instant),
                ("disabled_by", Text),
                ("disabled_at_us", Instant),
            ],
            "customer_id",
        )
        .one()
        .erase(Erase::Delete),
        Holding::rows(
            "referrals_made",
            "referrals",
            &[
                ("referral_id", Text),
                ("code", Text),
                ("status", Text),
                ("created_at_us", Instant),
                ("completed_at_us", Instant),
                ("reversed_at_us", Instant),
                ("referrer_points", Number),
            ],
            "referral_seq",
        )
        .filter("program_id = {program} AND referrer_customer_id = {customer}")
        .erase(Erase::Keep("referrer_customer_id = {anonymous}, code = ''")),
        Holding::rows(
            "referred_by",
            "referrals",
            &[
                ("referral_id", Text),
                ("status", Text),
                ("created_at_us", Instant),
                ("completed_at_us", Instant),
                ("reversed_at_us", Instant),
                ("qualifying_order_id", Text),
            ],
            "referral_seq",
        )
        .filter("program_id = {program} AND referee_customer_id = {customer}")
        .one()
        .erase(Erase::Keep("referee_customer_id = {anonymous}")),
        Holding::rows(
            "orders",
            "orders_seen",
            &[("order_id", Text), ("amount_minor", Number), ("refunded_minor", Number), ("occurred_at_us", Instant)],
            "occurred_at_us, order_id",
        ),
        Holding::rows(
            "rewards",
            "reward_tasks",
            &[
                ("task_id", Text),
                ("kind", Text),
                ("points", Number),
                ("reward_id", Text),
                ("done", Number),
                ("created_at_us", Instant),
            ],
            "task_seq",
        )
        // A task still to send is sent with this reason: neutral, not empty.
        .erase(Erase::Keep("customer_id = {anonymous}, reason = 'referral'")),
        // The other side's tasks whose reason named this customer (before reasons named referrals).
        Holding::unexported(
            "reward_tasks",
            "program_id = {program} AND reason IN ('welcome bonus: referred by ' || {customer}, \
             'welcome gift: referred by ' || {customer}, 'referral reward: ' || {customer} || ' ordered')",
            Erase::Keep("reason = 'referral'"),
        ),
        OUTBOX,
        OUTBOX_MENTIONS,
        SAVED_ANSWERS,
    ],
    on_export: &[],
    erase_first: &[],
    erase_last: &[],
};
