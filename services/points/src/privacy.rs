//! What the points service holds about a customer, for the customer's rights
//! (export and erasure, served by [`loyalty_common::privacy`]).
//!
//! Erasure keeps the ledger: the account, its lots, entries, orders,
//! checkout spends and activity awards move to the anonymous id (the
//! account by a copy, since lots reference it), so program totals, expiry
//! and the stream stay right; free text (reasons, activity references) is
//! blanked. The profile, its change values, the cache doubts and saved
//! answers that name the customer are deleted. Both are audited in the
//! program's audit log: the export under the customer's id (moved to the
//! anonymous id by a later erasure), the erasure under the anonymous id.

use loyalty_common::privacy::Column::{Instant, Json, Number, Text};
use loyalty_common::privacy::{Erase, Holding, Subject};

/// The account's columns, copied under the anonymous id before its lots move.
const COPY_ACCOUNT: &str = "INSERT INTO accounts (program_id, customer_id, available, pending, lifetime_earned, \
     spent, expired, reversed, debt, version, next_transition_us, next_expiry_us, next_expiry_points) \
     SELECT program_id, {anonymous}, available, pending, lifetime_earned, spent, expired, reversed, debt, version, \
     next_transition_us, next_expiry_us, next_expiry_points FROM accounts \
     WHERE program_id = {program} AND customer_id = {customer}";

pub static SUBJECT: Subject = Subject {
    service: "points",
    holdings: &[
        Holding::rows(
            "lots",
            "point_lots",
            &[
                ("lot_id", Text),
                ("original", Number),
                ("remaining", Number),
                ("consumed", Number),
                ("expired", Number),
                ("reversed", Number),
                ("state", Text),
                ("earned_at_us", Instant),
                ("pending_until_us", Instant),
                ("expires_at_us", Instant),
            ],
            "earned_at_us, lot_id",
        ),
        // After its lots: they now reference the copy.
        Holding::rows(
            "account",
            "accounts",
            &[
                ("available", Number),
                ("pending", Number),
                ("lifetime_earned", Number),
                ("spent", Number),
                ("expired", Number),
                ("reversed", Number),
                ("debt", Number),
                ("version", Number),
            ],
            "customer_id",
        )
        .one()
        .erase(Erase::Delete),
        Holding::rows(
            "ledger",
            "ledger_entries",
            &[
                ("transaction_id", Text),
                ("kind", Text),
                ("points", Number),
                ("pending_points", Number),
                ("amount", Number),
                ("reason", Text),
                ("related_transaction_id", Text),
                ("order_id", Text),
                ("order_amount_minor", Number),
                ("actor", Text),
                ("created_at_us", Instant),
                ("pending_until_us", Instant),
                ("expires_at_us", Instant),
            ],
            "id",
        )
        .erase(Erase::Keep(
            "customer_id = {anonymous}, reason = '', \
             actor = CASE WHEN actor = 'customer:' || {customer} THEN 'customer:' || {anonymous} ELSE actor END",
        )),
        // Other members' entries whose reason named this one (referral rewards before reasons named referrals).
        Holding::unexported(
            "ledger_entries",
            "program_id = {program} AND reason IN ('welcome bonus: referred by ' || {customer}, \
             'referral reward: ' || {customer} || ' ordered')",
            Erase::Keep("reason = 'referral'"),
        ),
        Holding::rows(
            "orders",
            "orders",
            &[
                ("order_id", Text),
                ("amount_minor", Number),
                ("currency", Text),
                ("points", Number),
                ("transaction_id", Text),
                ("refunded_minor", Number),
                ("reversed_points", Number),
                ("created_at_us", Instant),
            ],
            "created_at_us, order_id",
        ),
        Holding::rows(
            "checkout_spends",
            "checkout_spends",
            &[
                ("order_id", Text),
                ("transaction_id", Text),
                ("amount_minor", Number),
                ("currency", Text),
                ("points", Number),
                ("discount_minor", Number),
                ("refunded_minor", Number),
                ("restored_points", Number),
                ("created_at_us", Instant),
            ],
            "created_at_us, order_id",
        ),
        Holding::rows(
            "activity_awards",
            "activity_awards",
            &[("activity_type", Text), ("activity_ref", Text), ("transaction_id", Text), ("awarded_at_us", Instant)],
            "awarded_at_us, transaction_id",
        )
        .erase(Erase::Keep("customer_id = {anonymous}, activity_ref = ''")),
        Holding::rows(
            "profile",
            "member_profiles",
            &[("body", Json), ("version", Number), ("updated_at_us", Instant)],
            "customer_id",
        )
        .one()
        .erase(Erase::Delete),
        Holding::rows(
            "profile_changes",
            "audit_entries",
            &[("actor", Text), ("changed_at_us", Instant), ("old_value", Json), ("new_value", Json)],
            "audit_id",
        )
        .filter("program_id = {program} AND entity = 'profile' AND entity_id = {customer}")
        .erase(Erase::Keep("entity_id = {anonymous}, old_value = '', new_value = ''")),
        Holding::rows("exports", "audit_entries", &[("actor", Text), ("changed_at_us", Instant)], "audit_id")
            .filter("program_id = {program} AND entity = 'customer_export' AND entity_id = {customer}")
            .erase(Erase::Keep("entity_id = {anonymous}")),
        // The member's own changes, by actor.
        Holding::unexported(
            "audit_entries",
            "program_id = {program} AND actor = 'customer:' || {customer}",
            Erase::Keep("actor = 'customer:' || {anonymous}"),
        ),
        Holding::unexported(
            "balance_cache_doubts",
            "program_id = {program} AND customer_id = {customer}",
            Erase::Delete,
        ),
        // Saved answers naming the customer or holding their profile, and the
        // birthday job's keys (`birthday:<customer>:<year>`).
        Holding::unexported(
            "idempotency_keys",
            "program_id = {program} AND (replace(response, {quoted}, '') <> response \
             OR transaction_id = 'profile:' || {customer} \
             OR substr(idempotency_key, 1, length('birthday:' || {customer} || ':')) = 'birthday:' || {customer} || ':')",
            Erase::Delete,
        ),
    ],
    on_export: &[
        "INSERT INTO audit_entries (program_id, actor, changed_at_us, entity, entity_id, old_value, new_value) \
         VALUES ({program}, {actor}, {now}, 'customer_export', {customer}, '', '')",
    ],
    erase_first: &[COPY_ACCOUNT],
    erase_last: &[
        "INSERT INTO audit_entries (program_id, actor, changed_at_us, entity, entity_id, old_value, new_value) \
         VALUES ({program}, {actor}, {now}, 'customer_erasure', {anonymous}, '', '')",
    ],
};
