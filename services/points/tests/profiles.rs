//! Member profiles end to end over gRPC, on both back-ends: the enrolment,
//! replacing with optimistic concurrency, replays, the audit log, and clear
//! errors for impossible birthdays, consents without a time, unknown time
//! zones and bad attributes.

mod support;

use std::collections::HashMap;

use loyalty_proto::points::v1 as pb;
use loyalty_proto::privacy::v1 as privacy;
use loyalty_proto::privacy::v1::customer_data_service_client::CustomerDataServiceClient;
use support::{Backend, DAY, Harness, T0, timestamp};
use tonic::Code;
use tonic_types::StatusExt;

loyalty_common::on_both_backends!(
    a_customers_data_is_exported_as_one_document_and_the_export_audited,
    an_erased_customers_ledger_stays_under_an_anonymous_id,
    birthdays_are_awarded_once_a_year_in_the_members_time_zone,
    profiles_enrol_change_with_versions_and_are_audited,
    bad_profiles_are_refused_field_by_field,
);

fn profile(birth: (i32, i32), time_zone: &str, consents: Vec<pb::MarketingConsent>) -> pb::MemberProfile {
    pb::MemberProfile {
        enrollment_channel: "store".into(),
        birth_month: birth.0,
        birth_day: birth.1,
        locale: "de-CH".into(),
        time_zone: time_zone.into(),
        consents,
        attributes: HashMap::from([("favourite_store".into(), "Zürich HB".into())]),
        ..Default::default()
    }
}

fn consent(channel: &str, granted: bool, at: Option<i64>) -> pb::MarketingConsent {
    pb::MarketingConsent { channel: channel.into(), granted, changed_at: at.map(timestamp) }
}

fn update(customer: &str, profile: pb::MemberProfile, expected: Option<i64>, key: &str) -> pb::UpdateProfileRequest {
    pb::UpdateProfileRequest {
        program_id: "shop".into(),
        customer_id: customer.into(),
        profile: Some(profile),
        expected_version: expected,
        actor: "support@shop".into(),
        idempotency_key: key.into(),
    }
}

async fn profiles_enrol_change_with_versions_and_are_audited(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let get = pb::GetProfileRequest { program_id: "shop".into(), customer_id: "anna".into() };
    assert_eq!(
        h.client.get_profile(get.clone()).await.unwrap().into_inner().profile,
        None,
        "none before the enrolment"
    );

    let email = consent("email", true, Some(T0 - DAY));
    let first = profile((2, 29), "Europe/Zurich", vec![email.clone()]);
    let enrolled = h.client.update_profile(update("anna", first.clone(), Some(0), "p1")).await.unwrap().into_inner();
    let enrolled = enrolled.profile.unwrap();
    assert_eq!(
        (enrolled.version, enrolled.enrolled_at, enrolled.customer_id.as_str()),
        (1, Some(timestamp(T0)), "anna")
    );
    assert_eq!((enrolled.birth_month, enrolled.birth_day, enrolled.time_zone.as_str()), (2, 29, "Europe/Zurich"));
    assert_eq!(enrolled.consents, [email.clone()]);
    let replay = h.client.update_profile(update("anna", first.clone(), Some(0), "p1")).await.unwrap();
    assert_eq!(replay.into_inner().profile.unwrap(), enrolled, "a replay answers as the first time");

    h.clock.advance(DAY);
    let stale = h.client.update_profile(update("anna", first.clone(), Some(0), "p2")).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let withdrawn = consent("email", false, Some(T0 + DAY / 2));
    let mut second = profile((2, 29), "Europe/Berlin", vec![withdrawn.clone()]);
    second.enrollment_channel = "web".into();
    let changed =
        h.client.update_profile(update("anna", second, Some(1), "p3")).await.unwrap().into_inner().profile.unwrap();
    assert_eq!(
        (changed.version, changed.enrolled_at.clone(), changed.enrollment_channel.as_str()),
        (2, Some(timestamp(T0)), "store"),
        "the enrolment is history"
    );
    assert_eq!((changed.time_zone.as_str(), changed.updated_at.clone()), ("Europe/Berlin", Some(timestamp(T0 + DAY))));
    assert_eq!(h.client.get_profile(get).await.unwrap().into_inner().profile.unwrap(), changed);
    // The account summary brings it along when asked (the loyalty page: one call).
    let summary = |include_profile| pb::GetAccountSummaryRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        expiring_within: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
        include_profile,
    };
    let with = h.client.get_account_summary(summary(true)).await.unwrap().into_inner();
    assert_eq!(with.profile.as_ref(), Some(&changed));
    assert_eq!(h.client.get_account_summary(summary(false)).await.unwrap().into_inner().profile, None);

    let audit = h.audit("shop").await;
    let profiles: Vec<(&str, &str, bool)> =
        audit.iter().map(|e| (e.entity.as_str(), e.entity_id.as_str(), e.old_value.is_empty())).collect();
    assert_eq!(profiles, [("profile", "anna", false), ("profile", "anna", true)], "the change, then the enrolment");
    assert!(audit.iter().all(|e| e.actor == "support@shop"));
    assert!(audit[0].new_value.contains("Europe/Berlin") && audit[0].old_value.contains("Europe/Zurich"));
    use pb::audit_entry::{After, Before};
    match (&audit[0].before, &audit[0].after, &audit[1].before) {
        (Some(Before::ProfileBefore(before)), Some(After::ProfileAfter(after)), None) => {
            assert_eq!((before.time_zone.as_str(), after), ("Europe/Zurich", &changed), "typed, as the RPCs answer");
        }
        other => panic!("the profile's values before and after: {other:?}"),
    }
    h.stop().await;
}

async fn bad_profiles_are_refused_field_by_field(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let mut bad =
        profile((4, 31), "Mars/Olympus", vec![consent("email", true, None), consent("sms", true, Some(T0 + DAY))]);
    bad.locale = "deutsch".into();
    bad.attributes.insert("Shoe Size".into(), "42".into());
    let refused = h.client.update_profile(update("ben", bad, None, "b1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        refused.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(
        fields,
        [
            "profile.birth_day",
            "profile.locale",
            "profile.time_zone",
            "profile.consents[0].changed_at",
            "profile.consents[1].changed_at",
            "profile.attributes[Shoe Size]"
        ]
    );
    let get = pb::GetProfileRequest { program_id: "shop".into(), customer_id: "ben".into() };
    assert_eq!(h.client.get_profile(get).await.unwrap().into_inner().profile, None, "nothing written");
    h.stop().await;
}

/// An instant from its UTC calendar date and hour.
fn utc(year: i32, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
    loyalty_common::clock::days_from_civil(year, month, day) * DAY + (hour * 60 + minute) * 60_000_000
}

async fn birthdays_are_awarded_once_a_year_in_the_members_time_zone(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let defaults = pb::GetProgramSettingsRequest { program_id: "shop".into() };
    let mut settings = h.client.get_program_settings(defaults).await.unwrap().into_inner().settings.unwrap();
    settings.activity_rules =
        vec![pb::ActivityRule { activity_type: "birthday".into(), points: 100, active: true, ..Default::default() }];
    let put = pb::PutProgramSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin@shop".into(),
        idempotency_key: "settings".into(),
        expected_version: None,
    };
    h.client.put_program_settings(put).await.unwrap();
    for (customer, birth, zone) in
        [("leap", (2, 29), "Pacific/Auckland"), ("eve", (12, 31), "Pacific/Honolulu"), ("spring", (3, 1), "")]
    {
        let request = update(customer, profile(birth, zone, Vec::new()), None, &format!("enrol-{customer}"));
        h.client.update_profile(request).await.unwrap();
    }
    let run = |at: i64| {
        h.clock.set(at);
        let mut client = h.client.clone();
        async move {
            let run = client.run_birthdays(pb::RunBirthdaysRequest {}).await.unwrap().into_inner();
            (run.due, run.awarded)
        }
    };
    // 05:00 UTC on 1 January 2027 is still 31 December 2026 in Honolulu.
    assert_eq!(run(utc(2027, 1, 1, 5, 0)).await, (1, 1), "eve, for 2026");
    // 27 February 23:00 in Auckland: not yet.
    assert_eq!(run(utc(2027, 2, 27, 10, 0)).await, (0, 0));
    // 28 February 00:30 in Auckland, 2027 has no 29th: the leap-day birthday, once however often asked.
    let at = utc(2027, 2, 27, 11, 30);
    assert_eq!(run(at).await, (1, 1), "leap, on 28 February");
    let (first, second) = tokio::join!(run(at), run(at));
    assert_eq!((first, second), ((1, 0), (1, 0)), "a run again, or two replicas at once, award nothing more");
    assert_eq!(run(utc(2027, 12, 31, 20, 0)).await, (1, 1), "eve, for 2027");
    // 2028 has a 29th: not on the 28th, on the 29th.
    assert_eq!(run(utc(2028, 2, 27, 12, 0)).await, (0, 0));
    assert_eq!(run(utc(2028, 2, 28, 12, 0)).await, (1, 1), "leap, on 29 February 2028");
    for (customer, awards) in [("leap", 2), ("eve", 2), ("spring", 0)] {
        let request = pb::ListTransactionsRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            ..Default::default()
        };
        let entries = h.client.list_transactions(request).await.unwrap().into_inner().entries;
        assert_eq!(entries.len(), awards, "{customer}: {entries:?}");
        assert!(entries.iter().all(|e| e.points == 100 && e.reason.contains("birthday")), "{entries:?}");
    }
    h.stop().await;
}

/// The right of access: one document with everything points holds about the
/// customer (account, lots, ledger, orders, checkout spends, activity awards,
/// profile and its changes), nobody else's, and the export audited.
async fn a_customers_data_is_exported_as_one_document_and_the_export_audited(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let mut settings = h
        .client
        .get_program_settings(pb::GetProgramSettingsRequest { program_id: "shop".into() })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    settings.activity_rules = vec![pb::ActivityRule {
        activity_type: "signup".into(),
        points: 200,
        active: true,
        cap_count: 1,
        cap_period: pb::CapPeriod::Lifetime as i32,
        once_per_ref: false,
    }];
    settings.checkout =
        Some(pb::CheckoutPoints { points: 1, amount_minor: 1, min_points: 0, max_share_bp: 10_000, step_points: 0 });
    let put = pb::PutProgramSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin@shop".into(),
        idempotency_key: "s".into(),
        expected_version: None,
    };
    h.client.put_program_settings(put).await.expect("settings");
    let first = profile((7, 14), "Europe/Paris", vec![consent("email", true, Some(T0 - DAY))]);
    h.client.update_profile(update("anna", first, Some(0), "p1")).await.expect("enrolled");
    let order = pb::EarnForOrderRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        order_id: "o-1".into(),
        amount_minor: 5_000,
        currency: "EUR".into(),
        occurred_at: None,
    };
    h.client.earn_for_order(order).await.expect("earned");
    let signup = pb::RecordActivityRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        activity_type: "signup".into(),
        activity_ref: String::new(),
        idempotency_key: "signup-anna".into(),
    };
    h.client.record_activity(signup).await.expect("signup");
    let paid = pb::ApplyCheckoutPointsRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        order_id: "o-2".into(),
        amount_minor: 1_000,
        currency: "EUR".into(),
        points: 100,
    };
    h.client.apply_checkout_points(paid).await.expect("points at checkout");
    h.earn("shop", "ben", 999, "e-ben").await;

    let mut data = CustomerDataServiceClient::connect(format!("http://{}", h.addr)).await.unwrap();
    let export = |customer: &str| privacy::ExportCustomerRequest {
        program_id: "shop".into(),
        customer_id: customer.into(),
        actor: "dpo@shop".into(),
    };
    let answer = data.export_customer(export("anna")).await.unwrap().into_inner();
    assert_eq!(answer.service, "points");
    let document: serde_json::Value = serde_json::from_str(&answer.document).expect("one JSON document");
    let balance = h.balance("shop", "anna").await;
    assert_eq!(document["account"]["available"], balance.available, "{document:#}");
    let kinds: Vec<&str> = document["ledger"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["EARN", "EARN", "SPEND"], "oldest first: {document:#}");
    assert_eq!(document["lots"].as_array().unwrap().len(), 2);
    assert_eq!(document["orders"][0]["order_id"], "o-1");
    assert_eq!(
        (&document["checkout_spends"][0]["order_id"], &document["checkout_spends"][0]["points"]),
        (&serde_json::json!("o-2"), &serde_json::json!(100))
    );
    assert_eq!(document["activity_awards"][0]["activity_type"], "signup");
    assert_eq!(document["profile"]["body"]["time_zone"], "Europe/Paris");
    assert_eq!(document["profile_changes"][0]["actor"], "support@shop");
    assert!(document["ledger"][0]["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339: {document:#}");
    assert!(!document.to_string().contains("ben"), "nobody else's data: {document:#}");

    let nobody = data.export_customer(export("nobody")).await.unwrap().into_inner().document;
    let nobody: serde_json::Value = serde_json::from_str(&nobody).unwrap();
    assert_eq!((nobody["account"].clone(), nobody["ledger"].clone()), (serde_json::Value::Null, serde_json::json!([])));

    let audit = h.audit("shop").await;
    let exports: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.entity == "customer_export")
        .map(|e| (e.entity_id.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(exports, [("nobody", "dpo@shop"), ("anna", "dpo@shop")], "each export audited, newest first");
    h.stop().await;
}

/// The right to erasure, as points does it: the account, its lots and
/// entries move to the anonymous id with their sums (and the balance the
/// cache held leaves it), the profile goes, reasons are blanked, the
/// erasure is audited under the anonymous id, another customer and another
/// program are untouched, and a second erasure finds nothing.
async fn an_erased_customers_ledger_stays_under_an_anonymous_id(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let first = profile((7, 14), "Europe/Paris", vec![consent("email", true, Some(T0 - DAY))]);
    h.client.update_profile(update("anna", first, Some(0), "p1")).await.expect("enrolled");
    h.earn("shop", "anna", 700, "e-1").await;
    h.earn("shop", "anna", 300, "e-2").await;
    h.earn("shop", "ben", 999, "e-ben").await;
    h.earn("other", "anna", 55, "e-other").await;
    let spend = pb::SpendRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        points: 200,
        reason: "a present for anna's mother".into(),
        idempotency_key: "s-1".into(),
    };
    h.client.spend(spend).await.expect("spent");
    let before = h.balance("shop", "anna").await;
    assert_eq!(before.available, 800);

    let mut data = CustomerDataServiceClient::connect(format!("http://{}", h.addr)).await.unwrap();
    let anonymous = loyalty_common::privacy::anonymous_id();
    let erase = |anonymous_id: &str| privacy::EraseCustomerRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        anonymous_id: anonymous_id.into(),
        actor: "dpo@shop".into(),
    };
    let bad = data.erase_customer(erase("anon-not-hex")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let erased = data.erase_customer(erase(&anonymous)).await.expect("erased").into_inner();
    assert_eq!(erased.service, "points");
    assert!(erased.anonymized >= 6 && erased.deleted >= 2, "{erased:?}");

    // Audited under the anonymous id; the profile's changes moved there too.
    let audit = h.audit("shop").await;
    let erasure = audit.iter().find(|e| e.entity == "customer_erasure").expect("audited");
    assert_eq!((erasure.entity_id.as_str(), erasure.actor.as_str()), (anonymous.as_str(), "dpo@shop"));
    assert!(audit.iter().all(|e| e.entity_id != "anna"), "no audit entry names anna: {audit:?}");

    // The ledger's sums moved whole; the customer's id holds nothing, even in the cache.
    let moved = h.balance("shop", &anonymous).await;
    assert_eq!((moved.available, moved.lifetime_earned, moved.spent), (800, 1_000, 200));
    assert_eq!(h.balance("shop", "anna").await.available, 0, "the cached balance left with the account");
    assert_eq!(h.balance("shop", "ben").await.available, 999);
    assert_eq!(h.balance("other", "anna").await.available, 55, "another program's anna is not this one");
    let entries = pb::ListTransactionsRequest {
        program_id: "shop".into(),
        customer_id: anonymous.clone(),
        page_size: 10,
        page_token: String::new(),
    };
    let entries = h.client.list_transactions(entries).await.unwrap().into_inner().entries;
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.reason.is_empty()), "reasons are blanked: {entries:?}");
    let profile = pb::GetProfileRequest { program_id: "shop".into(), customer_id: "anna".into() };
    let profile = h.client.get_profile(profile).await;
    assert!(profile.is_err() || profile.unwrap().into_inner().profile.is_none(), "the profile is gone");
    let document = data.export_customer(privacy::ExportCustomerRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        actor: "dpo@shop".into(),
    });
    let document: serde_json::Value = serde_json::from_str(&document.await.unwrap().into_inner().document).unwrap();
    assert_eq!(
        (document["account"].clone(), document["ledger"].clone()),
        (serde_json::Value::Null, serde_json::json!([]))
    );
    assert_eq!(document["profile_changes"], serde_json::json!([]), "{document:#}");

    let again = data.erase_customer(erase(&loyalty_common::privacy::anonymous_id())).await.unwrap().into_inner();
    // Nothing left but the audit entry of the export made since, which names anna.
    assert_eq!((again.anonymized, again.deleted), (1, 0));
    h.stop().await;
}
