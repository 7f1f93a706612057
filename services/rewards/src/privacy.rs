//! What the rewards service holds about a customer, for the customer's
//! rights (served by [`loyalty_common::privacy`]). Erasure keeps
//! redemptions and the saga's points tasks under the anonymous id (stock,
//! limits and redemption counts stay right; an unused voucher stays valid
//! for whoever holds its code), with grant reasons blanked, and leaves a
//! tombstone ([`loyalty_common::privacy::customer_hash`]) so that a gift to
//! the erased id is refused (`CUSTOMER_ERASED`).

use loyalty_common::privacy::Column::{Instant, Number, Text};
use loyalty_common::privacy::{Erase, Holding, OUTBOX, OUTBOX_MENTIONS, SAVED_ANSWERS, Subject};

pub static SUBJECT: Subject = Subject {
    service: "rewards",
    holdings: &[
        Holding::rows(
            "redemptions",
            "redemptions",
            &[
                ("redemption_id", Text),
                ("reward_id", Text),
                ("reward_name", Text),
                ("points", Number),
                ("status", Text),
                ("voucher_code", Text),
                ("voucher_expires_at_us", Instant),
                ("consumed_order_id", Text),
                ("granted_by", Text),
                ("grant_reason", Text),
                ("batch_id", Text),
                ("created_at_us", Instant),
                ("updated_at_us", Instant),
            ],
            "redemption_seq",
        )
        .erase(Erase::Keep("customer_id = {anonymous}, grant_reason = ''")),
        // The referred friend's welcome gift named the referrer (before reasons named referrals).
        Holding::unexported(
            "redemptions",
            "program_id = {program} AND grant_reason = 'welcome gift: referred by ' || {customer}",
            Erase::Keep("grant_reason = 'welcome gift'"),
        ),
        Holding::unexported(
            "points_tasks",
            "program_id = {program} AND customer_id = {customer}",
            // A task still to send is sent with this reason: neutral, not empty.
            Erase::Keep("customer_id = {anonymous}, reason = 'reward redemption'"),
        ),
        OUTBOX,
        OUTBOX_MENTIONS,
        SAVED_ANSWERS,
    ],
    on_export: &[],
    erase_first: &[],
    erase_last: &["INSERT INTO erased_customers (program_id, customer_hash, erased_at_us) \
         VALUES ({program}, {hash}, {now}) ON CONFLICT DO NOTHING"],
};
