//! Earning rules end to end over gRPC, on both back-ends: program settings
//! and their audit log, campaigns in time, orders with refunds, activities
//! with caps, and the tier multiplier from a (fake) tiers service.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;

use loyalty_proto::points::v1 as pb;
use loyalty_proto::tiers::v1 as tiers;
use support::{Backend, DAY, Harness, Options, T0, timestamp};
use tonic::Code;
use tonic_types::StatusExt;

loyalty_common::on_both_backends!(
    settings_are_validated_versioned_and_audited,
    orders_earn_by_the_rules_and_refunds_take_back_in_proportion,
    activity_caps_hold_under_concurrency_and_over_time,
    campaigns_apply_only_inside_their_window,
    tier_multiplier_counts_and_an_unreachable_tiers_service_fails_the_earn,
    tier_limited_activity_campaigns_follow_the_customers_tier,
    an_earn_without_its_own_expiry_follows_the_programs_policy,
    an_order_worth_more_than_one_write_is_refused_not_capped,
    points_pay_for_part_of_an_order_and_refunds_give_back_exactly_what_was_spent,
);

fn checkout_settings() -> pb::ProgramSettings {
    // 100 points pay 1.00, at least 200, at most half the order, in tens.
    let checkout =
        pb::CheckoutPoints { points: 100, amount_minor: 100, min_points: 200, max_share_bp: 5_000, step_points: 10 };
    pb::ProgramSettings { pending_days: 0, checkout: Some(checkout), ..shop_settings() }
}

fn checkout(order_id: &str, amount_minor: i64, points: i64) -> pb::ApplyCheckoutPointsRequest {
    pb::ApplyCheckoutPointsRequest {
        program_id: "shop".into(),
        customer_id: "cara".into(),
        order_id: order_id.into(),
        amount_minor,
        currency: "EUR".into(),
        points,
    }
}

fn reason_of(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

/// Points at checkout: the quote, the discount, the refusals (share, steps,
/// balance, a disabled program, the same order twice), a spend that paid for
/// an order is given back only by refunding the order, and three partial
/// refunds running at once give back exactly the points spent, never more.
async fn points_pay_for_part_of_an_order_and_refunds_give_back_exactly_what_was_spent(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let quote = |customer: &str, amount_minor| pb::QuoteCheckoutPointsRequest {
        program_id: "shop".into(),
        customer_id: customer.into(),
        amount_minor,
        currency: "EUR".into(),
    };
    put_settings(&mut h, "shop", shop_settings(), "s-plain").await;
    let disabled = h.client.quote_checkout_points(quote("cara", 10_000)).await.unwrap_err();
    assert_eq!(
        (disabled.code(), reason_of(&disabled).as_str()),
        (Code::FailedPrecondition, "CHECKOUT_POINTS_DISABLED")
    );
    let bad = pb::ProgramSettings {
        checkout: Some(pb::CheckoutPoints { max_share_bp: 20_000, ..checkout_settings().checkout.unwrap() }),
        ..checkout_settings()
    };
    let refused = h
        .client
        .put_program_settings(pb::PutProgramSettingsRequest {
            program_id: "shop".into(),
            settings: Some(bad),
            actor: "admin@shop".into(),
            idempotency_key: "s-bad".into(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    let fields: Vec<_> =
        refused.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["settings.checkout.max_share_bp"]);
    let stored = put_settings(&mut h, "shop", checkout_settings(), "s-checkout").await;
    assert_eq!(stored.checkout, checkout_settings().checkout, "the rule reads back as written");

    h.earn("shop", "cara", 5_000, "e-1").await;
    let q = h.client.quote_checkout_points(quote("cara", 7_000)).await.unwrap().into_inner();
    assert_eq!((q.max_points, q.max_discount_minor, q.available), (3_500, 3_500, 5_000), "half of 70.00");
    assert_eq!((q.min_points, q.step_points), (200, 10));
    let q = h.client.quote_checkout_points(quote("nobody", 7_000)).await.unwrap().into_inner();
    assert_eq!((q.max_points, q.available), (0, 0), "nothing to use below the minimum");

    let applied = h.client.apply_checkout_points(checkout("o-1", 10_000, 3_000)).await.unwrap().into_inner();
    assert_eq!((applied.points, applied.discount_minor), (3_000, 3_000));
    assert_eq!(applied.balance.as_ref().unwrap().available, 2_000);
    let replay = h.client.apply_checkout_points(checkout("o-1", 10_000, 3_000)).await.unwrap();
    assert!(replay.metadata().get("idempotent-replayed").is_some());
    assert_eq!(replay.into_inner().transaction_id, applied.transaction_id);
    let twice = h.client.apply_checkout_points(checkout("o-1", 10_000, 2_000)).await.unwrap_err();
    assert_eq!((twice.code(), reason_of(&twice).as_str()), (Code::AlreadyExists, "CHECKOUT_ALREADY_APPLIED"));

    let too_much = h.client.apply_checkout_points(checkout("o-2", 10_000, 6_000)).await.unwrap_err();
    assert_eq!(reason_of(&too_much), "CHECKOUT_SHARE_EXCEEDED", "{too_much:?}");
    assert_eq!(too_much.get_error_details().error_info().unwrap().metadata["max_points"], "5000");
    let unaligned = h.client.apply_checkout_points(checkout("o-2", 10_000, 205)).await.unwrap_err();
    assert_eq!(reason_of(&unaligned), "CHECKOUT_POINTS_UNALIGNED", "{unaligned:?}");
    let poor = h.client.apply_checkout_points(checkout("o-2", 10_000, 2_500)).await.unwrap_err();
    assert_eq!(reason_of(&poor), "INSUFFICIENT_POINTS", "{poor:?}");
    let dollars = pb::ApplyCheckoutPointsRequest { currency: "USD".into(), ..checkout("o-2", 10_000, 200) };
    assert_eq!(reason_of(&h.client.apply_checkout_points(dollars).await.unwrap_err()), "CURRENCY_MISMATCH");

    // Only a refund of the order gives those points back.
    let restore = pb::RestoreSpendRequest {
        program_id: "shop".into(),
        spend: Some(pb::restore_spend_request::Spend::SpendTransactionId(applied.transaction_id.clone())),
        idempotency_key: "r-1".into(),
        reason: "cancel".into(),
        actor: "admin@shop".into(),
    };
    let not_so = h.client.restore_spend(restore).await.unwrap_err();
    assert_eq!((not_so.code(), reason_of(&not_so).as_str()), (Code::FailedPrecondition, "SPEND_PAID_FOR_ORDER"));

    // Three partial refunds at once: 999 + 1000 + 1001 in whatever order they commit.
    let refund = |amount, key: &str| pb::RefundOrderRequest {
        program_id: "shop".into(),
        order_id: "o-1".into(),
        refunded_amount_minor: amount,
        idempotency_key: key.into(),
    };
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(h.client().await);
    }
    let refunds = [(3_333, "rf-1"), (3_333, "rf-2"), (3_334, "rf-3")].into_iter().zip(clients).map(
        |((amount, key), mut client)| {
            let request = refund(amount, key);
            async move { client.refund_order(request).await.expect("refunded").into_inner() }
        },
    );
    let done = futures::future::join_all(refunds).await;
    let restored: i64 = done.iter().map(|r| r.points_restored).sum();
    assert_eq!(restored, 3_000, "exactly what was spent: {done:?}");
    assert!(done.iter().all(|r| r.points_reversed == 0 && !r.restore_transaction_id.is_empty()));
    assert_eq!(done.iter().map(|r| r.total_refunded_minor).max(), Some(10_000));
    let more = h.client.refund_order(refund(1, "rf-4")).await.unwrap_err();
    assert_eq!(reason_of(&more), "REFUND_EXCEEDS_ORDER", "{more:?}");
    let replay = h.client.refund_order(refund(3_334, "rf-3")).await.expect("a replay").into_inner();
    assert_eq!(replay.points_restored, done[2].points_restored, "the saved result, nothing given twice");
    let balance = h.assert_ledger_matches_balance("shop", "cara").await;
    assert_eq!((balance.available, balance.spent), (5_000, 0), "every point back, none twice");

    // Points and an earn on one order: refunding the order's value takes
    // back the earn and gives back the points.
    let applied = h.client.apply_checkout_points(checkout("o-5", 10_000, 1_000)).await.unwrap().into_inner();
    assert_eq!(applied.discount_minor, 1_000);
    let earned = h.client.earn_for_order(order("shop", "cara", "o-5", 9_000)).await.unwrap().into_inner();
    assert_eq!(earned.points, 90, "earned on what was paid");
    let whole =
        h.client.refund_order(pb::RefundOrderRequest { order_id: "o-5".into(), ..refund(10_000, "rf-5") }).await;
    let whole = whole.expect("the whole order refunded").into_inner();
    assert_eq!((whole.points_reversed, whole.points_restored, whole.total_refunded_minor), (90, 1_000, 10_000));
    let balance = h.assert_ledger_matches_balance("shop", "cara").await;
    assert_eq!(balance.available, 5_000);

    // Another customer's order id is not cara's to pay for.
    h.client.earn_for_order(order("shop", "dan", "o-6", 9_000)).await.expect("dan's order");
    let not_hers = h.client.apply_checkout_points(checkout("o-6", 10_000, 1_000)).await.unwrap_err();
    assert_eq!(reason_of(&not_hers), "CHECKOUT_ALREADY_APPLIED", "{not_hers:?}");
    assert_eq!(h.assert_ledger_matches_balance("shop", "cara").await.available, 5_000);
    h.stop().await;
}

/// 1 point per 1.00: an order of 10,000,000.00 earns exactly the most one
/// write may book, and its breakdown adds up; a double-points campaign
/// would make it twice that, which is refused whole (it used to be cut to
/// the cap with a breakdown that did not add up), in preview too.
async fn an_order_worth_more_than_one_write_is_refused_not_capped(backend: Backend) {
    let mut h = Harness::start(backend).await;
    put_settings(&mut h, "shop", pb::ProgramSettings { pending_days: 0, ..shop_settings() }, "s").await;
    let at_the_cap = h.client.earn_for_order(order("shop", "max", "o-1", 100_000_000_000)).await.unwrap().into_inner();
    let b = at_the_cap.breakdown.unwrap();
    assert_eq!((b.base_points, b.total_points, at_the_cap.points), (1_000_000_000, 1_000_000_000, 1_000_000_000));

    create_campaign(&mut h, campaign("2x", pb::CampaignKind::Multiplier, 20_000, T0 - DAY, T0 + DAY), "c").await;
    let refused = h.client.earn_for_order(order("shop", "max", "o-2", 100_000_000_000)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let violation = refused.get_error_details().bad_request().unwrap().field_violations[0].clone();
    assert_eq!(violation.field, "amount_minor");
    assert!(violation.description.contains("earns 2000000000 points"), "{violation:?}");
    let preview = h
        .client
        .preview_order(pb::PreviewOrderRequest {
            program_id: "shop".into(),
            customer_id: "max".into(),
            amount_minor: 100_000_000_000,
            currency: "EUR".into(),
        })
        .await;
    assert_eq!(preview.unwrap_err().code(), Code::InvalidArgument, "a preview says the same");
    let half = h.client.earn_for_order(order("shop", "max", "o-3", 50_000_000_000)).await.unwrap().into_inner();
    let b = half.breakdown.unwrap();
    assert_eq!(b.base_points + b.tier_bonus_points + b.campaign_bonus_points, b.total_points, "{b:?}");
    assert_eq!(half.points, 1_000_000_000);
    assert_eq!(h.assert_ledger_matches_balance("shop", "max").await.available, 2_000_000_000);
    h.stop().await;
}

/// Referral rewards and any other Earn sent without `expires_at` expire as
/// the program says; one with its own expiry keeps it; a replay after the
/// policy changed is still the same request.
async fn an_earn_without_its_own_expiry_follows_the_programs_policy(backend: Backend) {
    let mut h = Harness::start(backend).await;
    put_settings(&mut h, "shop", shop_settings(), "s").await;
    let earn = |key: &str, expires_at: Option<prost_types::Timestamp>| pb::EarnRequest {
        program_id: "shop".into(),
        customer_id: "rey".into(),
        points: 100,
        reason: "referral reward".into(),
        idempotency_key: key.into(),
        pending_until: None,
        expires_at,
    };
    h.client.earn(earn("by-policy", None)).await.expect("earned");
    h.client.earn(earn("own-expiry", Some(timestamp(T0 + 30 * DAY)))).await.expect("earned");
    let expiries: Vec<_> = h.all_entries("shop", "rey").await.into_iter().map(|e| e.expires_at).collect();
    assert!(expiries.contains(&Some(timestamp(T0 + 365 * DAY))), "the program's 365 days: {expiries:?}");
    assert!(expiries.contains(&Some(timestamp(T0 + 30 * DAY))), "its own expiry: {expiries:?}");
    assert!(!expiries.contains(&None), "nothing earned here escapes the policy: {expiries:?}");

    // An adjustment too, unless the admin says never.
    let adjust = |key: &str, points: i64, never_expires: bool| pb::AdjustRequest {
        program_id: "shop".into(),
        customer_id: "adi".into(),
        points,
        reason: "goodwill".into(),
        idempotency_key: key.into(),
        expires_at: None,
        allow_debt: false,
        actor: "admin@shop".into(),
        never_expires,
    };
    h.client.adjust(adjust("a-policy", 40, false)).await.expect("adjusted");
    h.client.adjust(adjust("a-never", 60, true)).await.expect("adjusted");
    let mut adjusted: Vec<_> =
        h.all_entries("shop", "adi").await.into_iter().map(|e| (e.points, e.expires_at)).collect();
    adjusted.sort_by_key(|(points, _)| *points);
    assert_eq!(adjusted, [(40, Some(timestamp(T0 + 365 * DAY))), (60, None)]);
    let refused = h.client.adjust(adjust("a-bad", -5, true)).await.unwrap_err();
    assert_eq!(refused.get_error_details().bad_request().unwrap().field_violations[0].field, "never_expires");

    let never = Some(pb::ExpiryPolicy { kind: pb::ExpiryPolicyKind::Never as i32, count: 0 });
    put_settings(&mut h, "shop", pb::ProgramSettings { expiry: never, ..shop_settings() }, "s-never").await;
    let replay = h.client.earn(earn("by-policy", None)).await.expect("a replay, not a reused key");
    assert!(replay.metadata().get("idempotent-replayed").is_some());
    h.client.earn(earn("after-change", None)).await.expect("earned");
    let expiries: Vec<_> = h.all_entries("shop", "rey").await.into_iter().map(|e| e.expires_at).collect();
    assert_eq!(expiries.iter().filter(|e| e.is_none()).count(), 1, "the policy is now never: {expiries:?}");
    assert_eq!(expiries.len(), 3);
    assert_eq!(h.assert_ledger_matches_balance("shop", "rey").await.available, 300);
    h.stop().await;
}

fn shop_settings() -> pb::ProgramSettings {
    pb::ProgramSettings {
        currency: "EUR".into(),
        earn_rate: Some(pb::EarnRate { points: 1, per_amount_minor: 100 }),
        rounding: pb::Rounding::Nearest as i32,
        minimum_order_minor: 1_000,
        pending_days: 14,
        expiry: Some(pb::ExpiryPolicy { kind: pb::ExpiryPolicyKind::DaysAfterEarn as i32, count: 365 }),
        activity_rules: vec![
            rule("signup", 500, 1, pb::CapPeriod::Lifetime, false),
            rule("birthday", 200, 1, pb::CapPeriod::Year, false),
            rule("review", 50, 0, pb::CapPeriod::Unspecified, true),
            pb::ActivityRule { active: false, ..rule("social_follow", 20, 0, pb::CapPeriod::Unspecified, true) },
        ],
        version: 0,
        expiry_reminder_days: 0,
        checkout: None,
    }
}

fn rule(kind: &str, points: i64, cap: i32, period: pb::CapPeriod, once_per_ref: bool) -> pb::ActivityRule {
    pb::ActivityRule {
        activity_type: kind.into(),
        points,
        active: true,
        cap_count: cap,
        cap_period: period as i32,
        once_per_ref,
    }
}

async fn put_settings(h: &mut Harness, program: &str, settings: pb::ProgramSettings, key: &str) -> pb::ProgramSettings {
    h.client
        .put_program_settings(pb::PutProgramSettingsRequest {
            program_id: program.into(),
            settings: Some(settings),
            actor: "admin@shop".into(),
            idempotency_key: key.into(),
            expected_version: None,
        })
        .await
        .expect("settings accepted")
        .into_inner()
        .settings
        .unwrap()
}

fn order(program: &str, customer: &str, order_id: &str, amount_minor: i64) -> pb::EarnForOrderRequest {
    pb::EarnForOrderRequest {
        program_id: program.into(),
        customer_id: customer.into(),
        order_id: order_id.into(),
        amount_minor,
        currency: "EUR".into(),
        occurred_at: None,
    }
}

fn activity(customer: &str, kind: &str, reference: &str, key: &str) -> pb::RecordActivityRequest {
    pb::RecordActivityRequest {
        program_id: "shop".into(),
        customer_id: customer.into(),
        activity_type: kind.into(),
        activity_ref: reference.into(),
        idempotency_key: key.into(),
    }
}

fn campaign(name: &str, kind: pb::CampaignKind, value: i64, from: i64, to: i64) -> pb::Campaign {
    pb::Campaign {
        campaign_id: String::new(),
        name: name.into(),
        kind: kind as i32,
        multiplier_bp: if kind == pb::CampaignKind::Multiplier { value as i32 } else { 0 },
        bonus_points: if kind == pb::CampaignKind::Bonus { value } else { 0 },
        starts_at: Some(timestamp(from)),
        ends_at: Some(timestamp(to)),
        tier_ids: Vec::new(),
        applies_to: Vec::new(),
        segment_ids: Vec::new(),
    }
}

async fn create_campaign(h: &mut Harness, campaign: pb::Campaign, key: &str) -> pb::Campaign {
    h.client
        .create_campaign(pb::CreateCampaignRequest {
            program_id: "shop".into(),
            campaign: Some(campaign),
            actor: "marketing@shop".into(),
            idempotency_key: key.into(),
        })
        .await
        .expect("campaign created")
        .into_inner()
        .campaign
        .unwrap()
}

async fn settings_are_validated_versioned_and_audited(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let defaults = h
        .client
        .get_program_settings(pb::GetProgramSettingsRequest { program_id: "shop".into() })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(defaults.earn_rate, Some(pb::EarnRate { points: 1, per_amount_minor: 100 }));
    assert_eq!(defaults.version, 0);

    let stored = put_settings(&mut h, "shop", shop_settings(), "s1").await;
    assert_eq!(stored.version, 1);
    let replay = put_settings(&mut h, "shop", shop_settings(), "s1").await;
    assert_eq!(replay.version, 1, "a replay changes nothing");

    let mut bad = shop_settings();
    bad.earn_rate = Some(pb::EarnRate { points: -1, per_amount_minor: 100 });
    bad.activity_rules.push(rule("signup", 10, 0, pb::CapPeriod::Unspecified, false));
    let status = h
        .client
        .put_program_settings(pb::PutProgramSettingsRequest {
            program_id: "shop".into(),
            settings: Some(bad),
            actor: "admin@shop".into(),
            idempotency_key: "s2".into(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<_> =
        status.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["settings.earn_rate.points", "settings.activity_rules[4].activity_type"]);

    let stale = h
        .client
        .put_program_settings(pb::PutProgramSettingsRequest {
            program_id: "shop".into(),
            settings: Some(pb::ProgramSettings { pending_days: 30, ..shop_settings() }),
            actor: "other@shop".into(),
            idempotency_key: "s3".into(),
            expected_version: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.get_error_details().error_info().unwrap().reason, "VERSION_MISMATCH");

    let audit = h.audit("shop").await;
    assert_eq!(audit.len(), 1, "one change, whatever was refused or replayed");
    let entry = &audit[0];
    assert_eq!((entry.actor.as_str(), entry.entity.as_str()), ("admin@shop", "settings"));
    assert!(entry.old_value.contains("\"pending_days\":0") && entry.new_value.contains("\"pending_days\":14"));
    // The same values as the messages the settings RPCs use.
    let (Some(pb::audit_entry::Before::SettingsBefore(before)), Some(pb::audit_entry::After::SettingsAfter(after))) =
        (&entry.before, &entry.after)
    else {
        panic!("typed settings before and after: {entry:?}")
    };
    assert_eq!((before.pending_days, after.pending_days), (0, 14));
    h.stop().await;
}

async fn orders_earn_by_the_rules_and_refunds_take_back_in_proportion(backend: Backend) {
    let mut h = Harness::start(backend).await;
    put_settings(&mut h, "shop", shop_settings(), "s").await;

    let earned = h.client.earn_for_order(order("shop", "ida", "o-1", 12_950)).await.unwrap().into_inner();
    assert_eq!(earned.points, 130, "129.50 at 1 point per 1.00, rounded to nearest");
    let breakdown = earned.breakdown.unwrap();
    assert_eq!((breakdown.base_points, breakdown.tier_bonus_points, breakdown.campaign_bonus_points), (130, 0, 0));
    assert_eq!(earned.pending_until, Some(timestamp(T0 + 14 * DAY)));
    assert_eq!(earned.expires_at, Some(timestamp(T0 + 365 * DAY)));
    assert_eq!(earned.balance.as_ref().map(|b| (b.available, b.pending)), Some((0, 130)));

    let replay = h.client.earn_for_order(order("shop", "ida", "o-1", 12_950)).await.unwrap();
    assert!(replay.metadata().get("idempotent-replayed").is_some());
    assert_eq!(replay.into_inner().transaction_id, earned.transaction_id);
    // Rules that would refuse the order now do not change its replay.
    put_settings(&mut h, "shop", pb::ProgramSettings { currency: "USD".into(), ..shop_settings() }, "s-usd").await;
    let replay = h.client.earn_for_order(order("shop", "ida", "o-1", 12_950)).await.expect("the saved result");
    assert_eq!(replay.into_inner().transaction_id, earned.transaction_id);
    put_settings(&mut h, "shop", shop_settings(), "s-eur").await;
    let other = h.client.earn_for_order(order("shop", "ida", "o-1", 99_999)).await.unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "one order id, one amount");
    let info = other.get_error_details().error_info().expect("an ErrorInfo").clone();
    assert_eq!(info.reason, "ORDER_ALREADY_RECORDED", "the conflict is the order id, not a key: {other:?}");
    assert_eq!(info.metadata["order_id"], "o-1");
    assert!(other.message().contains("order o-1 was already recorded"), "{other:?}");

    // Below the minimum, even with a bonus campaign running: nothing, and it says why.
    let bonus =
        create_campaign(&mut h, campaign("bonus", pb::CampaignKind::Bonus, 25, T0 - DAY, T0 + DAY), "c-bonus").await;
    let small = h.client.earn_for_order(order("shop", "ida", "o-2", 999)).await.unwrap().into_inner();
    assert_eq!((small.points, small.transaction_id.as_str()), (0, ""), "below the minimum order");
    let why = small.breakdown.clone().unwrap();
    assert_eq!(why.no_points_reason, pb::NoPointsReason::BelowMinimumOrder as i32, "{why:?}");
    assert_eq!((why.total_points, why.campaign_bonus_points, why.campaign_ids.len()), (0, 0, 0), "no campaign");
    assert_eq!((small.expires_at, small.pending_until), (None, None), "nothing to expire or wait for");
    let enough = h.client.earn_for_order(order("shop", "ivo", "o-2b", 1_000)).await.unwrap().into_inner();
    let b = enough.breakdown.unwrap();
    assert_eq!((b.base_points, b.campaign_bonus_points, b.no_points_reason), (10, 25, 0), "at the minimum it earns");
    let end = pb::EndCampaignRequest {
        program_id: "shop".into(),
        campaign_id: bonus.campaign_id,
        actor: "marketing@shop".into(),
        idempotency_key: "c-bonus-end".into(),
    };
    h.client.end_campaign(end).await.expect("ended");
    let dollars = pb::EarnForOrderRequest { currency: "USD".into(), ..order("shop", "ida", "o-3", 5_000) };
    let status = h.client.earn_for_order(dollars).await.unwrap_err();
    assert_eq!(status.get_error_details().error_info().unwrap().reason, "CURRENCY_MISMATCH");

    let refund = |amount, key: &str| pb::RefundOrderRequest {
        program_id: "shop".into(),
        order_id: "o-1".into(),
        refunded_amount_minor: amount,
        idempotency_key: key.into(),
    };
    // Refunded within the return window: the pending points are cancelled.
    let first = h.client.refund_order(refund(3_000, "r1")).await.unwrap().into_inner();
    assert_eq!((first.points_reversed, first.total_refunded_minor), (30, 3_000));
    assert_eq!(first.balance.map(|b| b.pending), Some(100));
    h.clock.advance(15 * DAY);
    assert_eq!(h.balance("shop", "ida").await.available, 100, "the rest activated");
    let second = h.client.refund_order(refund(3_333, "r2")).await.unwrap().into_inner();
    assert_eq!(second.points_reversed, 33);
    let too_much = h.client.refund_order(refund(10_000, "r3")).await.unwrap_err();
    assert_eq!(too_much.get_error_details().error_info().unwrap().reason, "REFUND_EXCEEDS_ORDER");
    let rest = h.client.refund_order(refund(12_950 - 6_333, "r4")).await.unwrap().into_inner();
    assert_eq!(first.points_reversed + second.points_reversed + rest.points_reversed, 130, "never more, never less");
    let balance = h.assert_ledger_matches_balance("shop", "ida").await;
    assert_eq!((balance.available, balance.pending, balance.reversed), (0, 0, 130));
    let orders: Vec<(i32, String, i64)> = h
        .all_entries("shop", "ida")
        .await
        .into_iter()
        .filter(|e| !e.order_id.is_empty())
        .map(|e| (e.kind, e.order_id, e.order_amount_minor))
        .collect();
    let (earn, reverse) = (pb::EntryKind::Earn as i32, pb::EntryKind::Reverse as i32);
    assert_eq!(
        orders,
        [
            (reverse, "o-1".into(), 6_617),
            (reverse, "o-1".into(), 3_333),
            (reverse, "o-1".into(), 3_000),
            (earn, "o-1".into(), 12_950)
        ],
        "entries tell their order and amount, newest first"
    );

    let unknown =
        h.client.refund_order(pb::RefundOrderRequest { order_id: "nope".into(), ..refund(1, "r5") }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let preview = h
        .client
        .preview_order(pb::PreviewOrderRequest {
            program_id: "shop".into(),
            customer_id: String::new(),
            amount_minor: 25_049,
            currency: "EUR".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.points, 250);
    assert_eq!(
        h.all_entries("shop", "ida").await.len(),
        5,
        "earn, 3 refunds and the activation; preview wrote nothing"
    );
    h.stop().await;
}

async fn activity_caps_hold_under_concurrency_and_over_time(backend: Backend) {
    let mut h = Harness::start(backend).await;
    put_settings(&mut h, "shop", shop_settings(), "s").await;

    let mut calls = Vec::new();
    for i in 0..20 {
        let mut client = h.client.clone();
        calls.push(tokio::spawn(async move {
            client.record_activity(activity("jo", "signup", "", &format!("signup-{i}"))).await
        }));
    }
    let mut awarded = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(response) => {
                awarded += 1;
                assert_eq!(response.into_inner().points, 500);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition);
                assert_eq!(status.get_error_details().error_info().unwrap().reason, "ACTIVITY_CAP_REACHED");
            }
        }
    }
    assert_eq!(awarded, 1, "20 parallel sign-ups award once");

    h.client.record_activity(activity("jo", "birthday", "", "bd-2025")).await.expect("first birthday");
    let again = h.client.record_activity(activity("jo", "birthday", "", "bd-2025b")).await.unwrap_err();
    assert_eq!(again.get_error_details().error_info().unwrap().reason, "ACTIVITY_CAP_REACHED");
    h.clock.set(T0 + 40 * DAY); // 2026-01-03: a new calendar year.
    h.client.record_activity(activity("jo", "birthday", "", "bd-2026")).await.expect("next year's birthday");

    h.client.record_activity(activity("jo", "review", "product-a", "rv-1")).await.expect("first review of a");
    let twice = h.client.record_activity(activity("jo", "review", "product-a", "rv-2")).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    h.client.record_activity(activity("jo", "review", "product-b", "rv-3")).await.expect("another product");

    let inactive = h.client.record_activity(activity("jo", "social_follow", "instagram", "f-1")).await.unwrap_err();
    assert_eq!(inactive.get_error_details().error_info().unwrap().reason, "ACTIVITY_NOT_REWARDED");
    let unknown = h.client.record_activity(activity("jo", "newsletter", "", "n-1")).await.unwrap_err();
    assert_eq!(unknown.get_error_details().error_info().unwrap().reason, "ACTIVITY_NOT_REWARDED");

    let balance = h.assert_ledger_matches_balance("shop", "jo").await;
    assert_eq!(balance.available, 500 + 200 + 200 + 50 + 50);
    h.stop().await;
}

async fn campaigns_apply_only_inside_their_window(backend: Backend) {
    let mut h = Harness::start(backend).await;
    put_settings(
        &mut h,
        "shop",
        pb::ProgramSettings { pending_days: 0, minimum_order_minor: 0, ..shop_settings() },
        "s",
    )
    .await;
    let weekend = create_campaign(
        &mut h,
        campaign("double weekend", pb::CampaignKind::Multiplier, 20_000, T0 + DAY, T0 + 3 * DAY),
        "c1",
    )
    .await;
    let triple =
        create_campaign(&mut h, campaign("triple", pb::CampaignKind::Multiplier, 30_000, T0 + DAY, T0 + 2 * DAY), "c2")
            .await;
    let welcome =
        create_campaign(&mut h, campaign("welcome bonus", pb::CampaignKind::Bonus, 25, T0, T0 + 10 * DAY), "c3").await;
    let replayed =
        create_campaign(&mut h, campaign("welcome bonus", pb::CampaignKind::Bonus, 25, T0, T0 + 10 * DAY), "c3").await;
    assert_eq!(replayed.campaign_id, welcome.campaign_id, "a replayed create makes no second campaign");

    let bad = h
        .client
        .create_campaign(pb::CreateCampaignRequest {
            program_id: "shop".into(),
            campaign: Some(campaign("backwards", pb::CampaignKind::Bonus, 5, T0 + DAY, T0)),
            actor: "marketing@shop".into(),
            idempotency_key: "c4".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.get_error_details().bad_request().unwrap().field_violations[0].field, "campaign.ends_at");

    let points = |e: pb::EarnForOrderResponse| (e.points, e.breakdown.unwrap().campaign_ids);
    let before = h.client.earn_for_order(order("shop", "kim", "o-1", 10_000)).await.unwrap().into_inner();
    assert_eq!(points(before), (125, vec![welcome.campaign_id.clone()]));
    h.clock.advance(DAY);
    let during = h.client.earn_for_order(order("shop", "kim", "o-2", 10_000)).await.unwrap().into_inner();
    assert_eq!(
        points(during),
        (325, vec![triple.campaign_id.clone(), welcome.campaign_id.clone()]),
        "highest multiplier wins, bonuses add"
    );
    h.clock.advance(DAY);
    let later = h.client.earn_for_order(order("shop", "kim", "o-3", 10_000)).await.unwrap().into_inner();
    assert_eq!(points(later), (225, vec![weekend.campaign_id.clone(), welcome.campaign_id.clone()]));

    h.client
        .end_campaign(pb::EndCampaignRequest {
            program_id: "shop".into(),
            campaign_id: weekend.campaign_id.clone(),
            actor: "marketing@shop".into(),
            idempotency_key: "e1".into(),
        })
        .await
        .unwrap();
    let ended = h.client.earn_for_order(order("shop", "kim", "o-4", 10_000)).await.unwrap().into_inner();
    assert_eq!(ended.points, 125);
    let listed = h
        .client
        .list_campaigns(pb::ListCampaignsRequest { program_id: "shop".into(), include_ended: false })
        .await
        .unwrap()
        .into_inner();
    let ids: HashSet<_> = listed.campaigns.iter().map(|c| c.campaign_id.clone()).collect();
    assert_eq!(ids, HashSet::from([welcome.campaign_id.clone()]));
    let audit = h
        .client
        .list_audit_entries(pb::ListAuditEntriesRequest {
            program_id: "shop".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.entries[0].entity_id, weekend.campaign_id, "the end, newest first");
    assert!(!audit.next_page_token.is_empty(), "settings and three creations follow");
    // Filtered by kind and by actor (exact), paged the same way.
    let filtered = |actor: &str, entity: &str| pb::ListAuditEntriesRequest {
        program_id: "shop".into(),
        actor: actor.into(),
        entity: entity.into(),
        ..Default::default()
    };
    let all = h.client.list_audit_entries(filtered("", "")).await.unwrap().into_inner().entries;
    let campaigns = h.client.list_audit_entries(filtered("", "campaign")).await.unwrap().into_inner().entries;
    assert!(!campaigns.is_empty() && campaigns.iter().all(|e| e.entity == "campaign"), "{campaigns:?}");
    assert_eq!(campaigns.len(), all.iter().filter(|e| e.entity == "campaign").count());
    let actor = all[0].actor.clone();
    let by_actor = h.client.list_audit_entries(filtered(&actor, "")).await.unwrap().into_inner().entries;
    assert_eq!(by_actor.len(), all.iter().filter(|e| e.actor == actor).count());
    let nobody = h.client.list_audit_entries(filtered("nobody", "campaign")).await.unwrap().into_inner().entries;
    assert!(nobody.is_empty());
    h.stop().await;
}

/// A tiers service that says customers whose id starts with `silver` are
/// silver (1.25x) and every other customer is gold (1.5x, and 1.5x
/// birthday points).
struct GoldTiers;

#[tonic::async_trait]
impl tiers::tiers_service_server::TiersService for GoldTiers {
    async fn get_multiplier(
        &self,
        request: tonic::Request<tiers::GetMultiplierRequest>,
    ) -> Result<tonic::Response<tiers::GetMultiplierResponse>, tonic::Status> {
        let (tier_id, multiplier_bp, birthday_multiplier_bp) = if request.get_ref().customer_id.starts_with("silver") {
            ("silver", 12_500, 0)
        } else {
            ("gold", 15_000, 15_000)
        };
        Ok(tonic::Response::new(tiers::GetMultiplierResponse {
            tier_id: tier_id.into(),
            multiplier_bp,
            birthday_multiplier_bp,
        }))
    }

    async fn get_ladder(
        &self,
        _request: tonic::Request<tiers::GetLadderRequest>,
    ) -> Result<tonic::Response<tiers::GetLadderResponse>, tonic::Status> {
        let silver = tiers::Tier {
            tier_id: "silver".into(),
            name: "Silver".into(),
            multiplier_bp: 12_500,
            ..Default::default()
        };
        let gold = tiers::Tier {
            tier_id: "gold".into(),
            name: "Gold".into(),
            threshold: 1_000,
            multiplier_bp: 15_000,
            ..Default::default()
        };
        Ok(tonic::Response::new(tiers::GetLadderResponse {
            ladder: Some(tiers::Ladder { tiers: vec![silver, gold], ..Default::default() }),
        }))
    }

    async fn put_ladder(
        &self,
        _request: tonic::Request<tiers::PutLadderRequest>,
    ) -> Result<tonic::Response<tiers::PutLadderResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }

    async fn get_tier_distribution(
        &self,
        _request: tonic::Request<tiers::GetTierDistributionRequest>,
    ) -> Result<tonic::Response<tiers::GetTierDistributionResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }

    async fn get_membership(
        &self,
        _request: tonic::Request<tiers::GetMembershipRequest>,
    ) -> Result<tonic::Response<tiers::GetMembershipResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }

    async fn list_membership_history(
        &self,
        _request: tonic::Request<tiers::ListMembershipHistoryRequest>,
    ) -> Result<tonic::Response<tiers::ListMembershipHistoryResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }

    async fn assign_tier(
        &self,
        _request: tonic::Request<tiers::AssignTierRequest>,
    ) -> Result<tonic::Response<tiers::AssignTierResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }

    async fn remove_assignment(
        &self,
        _request: tonic::Request<tiers::RemoveAssignmentRequest>,
    ) -> Result<tonic::Response<tiers::RemoveAssignmentResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }

    async fn reevaluate(
        &self,
        _request: tonic::Request<tiers::ReevaluateRequest>,
    ) -> Result<tonic::Response<tiers::ReevaluateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }

    async fn list_events(
        &self,
        _request: tonic::Request<tiers::ListEventsRequest>,
    ) -> Result<tonic::Response<tiers::ListEventsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the points service only asks for multipliers and ladders"))
    }
}

async fn serve_gold_tiers() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tiers::tiers_service_server::TiersServiceServer::new(GoldTiers))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn tier_multiplier_counts_and_an_unreachable_tiers_service_fails_the_earn(backend: Backend) {
    let tiers_addr = serve_gold_tiers().await;
    let mut h =
        Harness::start_with(backend, Options { tiers_addr: Some(tiers_addr.to_string()), ..Options::default() }).await;
    put_settings(&mut h, "shop", pb::ProgramSettings { pending_days: 0, ..shop_settings() }, "s").await;
    let mut vip = campaign("gold only", pb::CampaignKind::Bonus, 10, T0 - DAY, T0 + DAY);
    vip.tier_ids = vec!["gold".into()];
    create_campaign(&mut h, vip.clone(), "c1").await;
    vip.tier_ids = vec!["gold".into(), "platinum".into()];
    let unknown = h
        .client
        .create_campaign(pb::CreateCampaignRequest {
            program_id: "shop".into(),
            campaign: Some(vip),
            actor: "marketing@shop".into(),
            idempotency_key: "c2".into(),
        })
        .await
        .unwrap_err();
    let fields: Vec<_> =
        unknown.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["campaign.tier_ids[1]"], "unknown tiers are refused");
    let earned = h.client.earn_for_order(order("shop", "lee", "o-1", 10_001)).await.unwrap().into_inner();
    let b = earned.breakdown.unwrap();
    assert_eq!(
        (b.base_points, b.tier_bonus_points, b.campaign_bonus_points, b.tier_id.as_str()),
        (100, 50, 10, "gold")
    );
    assert_eq!(earned.points, 160);
    h.stop().await;

    // Nothing listens at this address: the tiers service is configured but down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut h =
        Harness::start_with(backend, Options { tiers_addr: Some(closed.to_string()), ..Options::default() }).await;
    let status = h.client.earn_for_order(order("shop", "lee", "o-1", 10_001)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.get_error_details().error_info().unwrap().reason, "TIERS_UNAVAILABLE");
    assert_eq!(h.balance("shop", "lee").await.available, 0, "nothing was awarded at the wrong rate");
    // Activities do not depend on tiers.
    put_settings(&mut h, "shop", shop_settings(), "s").await;
    h.client.record_activity(activity("lee", "signup", "", "a1")).await.expect("activities need no tier");
    h.stop().await;
}

async fn tier_limited_activity_campaigns_follow_the_customers_tier(backend: Backend) {
    let tiers = loyalty_common::testing::CuttableProxy::start(serve_gold_tiers().await).await;
    let mut h =
        Harness::start_with(backend, Options { tiers_addr: Some(tiers.addr.to_string()), ..Options::default() }).await;
    put_settings(&mut h, "shop", shop_settings(), "s").await;
    let mut double = campaign("gold birthdays", pb::CampaignKind::Multiplier, 20_000, T0 - DAY, T0 + DAY);
    double.tier_ids = vec!["gold".into()];
    double.applies_to = vec!["birthday".into()];
    let double = create_campaign(&mut h, double, "c1").await;

    let gold = h.client.record_activity(activity("gia", "birthday", "", "b1")).await.unwrap().into_inner();
    let b = gold.breakdown.unwrap();
    assert_eq!(
        (gold.points, b.base_points, b.tier_bonus_points, b.campaign_bonus_points, b.tier_id.as_str()),
        (500, 200, 100, 200, "gold"),
        "gold's birthday perk and the gold-only campaign, each on the base"
    );
    assert_eq!(b.campaign_ids, std::slice::from_ref(&double.campaign_id));
    let silver = h.client.record_activity(activity("silver-sam", "birthday", "", "b2")).await.unwrap().into_inner();
    let b = silver.breakdown.unwrap();
    assert_eq!((silver.points, b.tier_bonus_points, b.campaign_bonus_points), (200, 0, 0), "silver is not gold");
    let other = h.client.record_activity(activity("gia", "signup", "", "s1")).await.unwrap().into_inner();
    assert_eq!(other.points, 500, "no tier multiplier on other activities, and the campaign is for birthdays");

    // With the tiers service gone, an activity that a tier-limited campaign
    // could boost is refused rather than priced at the wrong rate; a replay
    // still answers from its saved result, and other activities go on.
    tiers.cut();
    let status = h.client.record_activity(activity("hu", "birthday", "", "b3")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.get_error_details().error_info().unwrap().reason, "TIERS_UNAVAILABLE");
    assert_eq!(h.balance("shop", "hu").await.available, 0);
    let replay = h.client.record_activity(activity("gia", "birthday", "", "b1")).await.unwrap().into_inner();
    assert_eq!((replay.points, replay.transaction_id), (500, gold.transaction_id));
    h.client.record_activity(activity("hu", "signup", "", "s2")).await.expect("no tier-limited campaign applies");
    h.stop().await;
}
