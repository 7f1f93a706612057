//! The points service end to end: real gRPC over loopback, the generated
//! client, and every test on both back-ends (SQLite + in-process cache, and
//! PostgreSQL + Redis).

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use loyalty_common::testing::CuttableProxy;
use loyalty_proto::points::v1 as pb;
use support::{Backend, DAY, Harness, Options, T0, timestamp};
use tonic::Code;
use tonic_types::StatusExt;

loyalty_common::on_both_backends!(
    concurrent_spends_never_overdraw,
    concurrent_replays_of_one_earn_write_one_entry,
    replay_with_other_arguments_is_refused,
    expiry_consumes_fifo_and_writes_expire_entries,
    a_spend_given_back_returns_to_its_lots_and_is_not_earned,
    pending_points_activate_and_reversals_take_points_back,
    stream_consumer_racing_writers_sees_every_entry_once,
    invalid_input_names_the_field,
    programs_never_see_each_other,
    a_stream_of_some_kinds_sends_only_those,
    health_reflection_and_metrics_answer,
);

async fn concurrent_spends_never_overdraw(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.earn("shop", "anna", 1_000, "earn-1").await;
    let mut calls = Vec::new();
    for i in 0..200 {
        let mut client = h.client.clone();
        calls.push(tokio::spawn(async move {
            client
                .spend(pb::SpendRequest {
                    program_id: "shop".into(),
                    customer_id: "anna".into(),
                    points: 10,
                    reason: "reward".into(),
                    idempotency_key: format!("spend-{i}"),
                })
                .await
        }));
    }
    let mut succeeded = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(status.get_error_details().error_info().unwrap().reason, "INSUFFICIENT_POINTS");
            }
        }
    }
    assert_eq!(succeeded, 100);
    let balance = h.assert_ledger_matches_balance("shop", "anna").await;
    assert_eq!((balance.available, balance.spent), (0, 1_000));
    assert_eq!(h.all_entries("shop", "anna").await.len(), 101);
    h.stop().await;
}

async fn concurrent_replays_of_one_earn_write_one_entry(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let mut calls = Vec::new();
    for _ in 0..50 {
        let mut client = h.client.clone();
        calls.push(tokio::spawn(async move {
            client
                .earn(pb::EarnRequest {
                    program_id: "shop".into(),
                    customer_id: "ben".into(),
                    points: 250,
                    reason: "order 1001".into(),
                    idempotency_key: "order-1001".into(),
                    pending_until: None,
                    expires_at: None,
                })
                .await
                .expect("every replay succeeds")
        }));
    }
    let mut ids = HashSet::new();
    let mut replays = 0;
    for call in calls {
        let response = call.await.unwrap();
        if response.metadata().get("idempotent-replayed").is_some() {
            replays += 1;
        }
        let body = response.into_inner();
        assert_eq!(body.balance.unwrap().available, 250, "a replay returns the original result");
        ids.insert(body.transaction_id);
    }
    assert_eq!(ids.len(), 1, "one transaction id for every replay");
    assert_eq!(replays, 49);
    assert_eq!(h.all_entries("shop", "ben").await.len(), 1);
    assert_eq!(h.assert_ledger_matches_balance("shop", "ben").await.available, 250);
    h.stop().await;
}

async fn replay_with_other_arguments_is_refused(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.earn("shop", "cleo", 100, "k1").await;
    let status = h
        .client
        .earn(pb::EarnRequest {
            program_id: "shop".into(),
            customer_id: "cleo".into(),
            points: 101,
            reason: "order".into(),
            idempotency_key: "k1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(status.get_error_details().error_info().unwrap().reason, "IDEMPOTENCY_KEY_REUSED");
    // Keys are scoped per method: the same key on Spend is a new request.
    h.spend("shop", "cleo", 10, "k1").await.expect("spend with the earn's key");
    // A refused write saves nothing: the same key succeeds once the balance allows it.
    let refused = h.spend("shop", "cleo", 500, "big").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    h.earn("shop", "cleo", 1_000, "k2").await;
    h.spend("shop", "cleo", 500, "big").await.expect("judged afresh");
    assert_eq!(h.assert_ledger_matches_balance("shop", "cleo").await.available, 590);
    h.stop().await;
}

/// RestoreSpend puts each point back in the lot it came from: a lot whose
/// date passed meanwhile expires again at once; nothing counts as earned;
/// once per spend.
async fn a_spend_given_back_returns_to_its_lots_and_is_not_earned(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let earn = |points, days: i64, key: &str| pb::EarnRequest {
        program_id: "shop".into(),
        customer_id: "ron".into(),
        points,
        reason: "order".into(),
        idempotency_key: key.into(),
        pending_until: None,
        expires_at: Some(timestamp(T0 + days * DAY)),
    };
    let soon = h.client.earn(earn(100, 10, "soon")).await.unwrap().into_inner().transaction_id;
    h.client.earn(earn(100, 60, "late")).await.unwrap();
    let spend = h.spend("shop", "ron", 150, "s1").await.unwrap().transaction_id;
    h.clock.advance(11 * DAY);
    let restore = |which: pb::restore_spend_request::Spend, key: &str| pb::RestoreSpendRequest {
        program_id: "shop".into(),
        spend: Some(which),
        idempotency_key: key.into(),
        reason: "voucher cancelled".into(),
        actor: "service:test".into(),
    };
    let by_key = pb::restore_spend_request::Spend::SpendIdempotencyKey("s1".into());
    let restored = h.client.restore_spend(restore(by_key.clone(), "g1")).await.unwrap().into_inner();
    assert_eq!((restored.points_restored, restored.customer_id.as_str()), (150, "ron"));
    let balance = restored.balance.unwrap();
    assert_eq!((balance.available, balance.expired, balance.spent, balance.lifetime_earned), (100, 100, 0, 200));
    assert_eq!((balance.next_expiry_points, balance.next_expiry_at), (100, Some(timestamp(T0 + 60 * DAY))));
    let entries = h.all_entries("shop", "ron").await;
    let newest: Vec<_> = entries.iter().take(2).map(|e| (e.kind, e.points, e.related_transaction_id.clone())).collect();
    assert_eq!(
        newest,
        [(pb::EntryKind::Expire as i32, -100, soon), (pb::EntryKind::Restore as i32, 150, spend.clone())],
        "the expired lot's part came back and expired again"
    );
    assert_eq!(entries[1].actor, "service:test");
    // A replay answers as before; another key for the same spend is refused.
    let replay = h.client.restore_spend(restore(by_key, "g1")).await.unwrap().into_inner();
    assert_eq!(replay.transaction_id, restored.transaction_id);
    let by_id = pb::restore_spend_request::Spend::SpendTransactionId(spend);
    let twice = h.client.restore_spend(restore(by_id, "g2")).await.unwrap_err();
    let details = twice.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!((twice.code(), info.reason.as_str()), (Code::FailedPrecondition, "SPEND_ALREADY_RESTORED"));
    assert_eq!(info.metadata["restore_transaction_id"], restored.transaction_id);
    let not_a_spend = pb::restore_spend_request::Spend::SpendIdempotencyKey("soon".into());
    let missing = h.client.restore_spend(restore(not_a_spend, "g3")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    h.assert_ledger_matches_balance("shop", "ron").await;
    h.stop().await;
}

async fn expiry_consumes_fifo_and_writes_expire_entries(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let earn = |points, days: i64, key: &str| pb::EarnRequest {
        program_id: "shop".into(),
        customer_id: "dina".into(),
        points,
        reason: "order".into(),
        idempotency_key: key.into(),
        pending_until: None,
        expires_at: Some(timestamp(T0 + days * DAY)),
    };
    let late = h.client.earn(earn(100, 60, "late")).await.unwrap().into_inner().transaction_id;
    let soon = h.client.earn(earn(100, 10, "soon")).await.unwrap().into_inner().transaction_id;
    h.spend("shop", "dina", 30, "s1").await.unwrap();

    let balance = h.balance("shop", "dina").await;
    assert_eq!(
        (balance.available, balance.next_expiry_points),
        (170, 70),
        "the spend came out of the earliest-expiring lot"
    );
    assert_eq!(balance.next_expiry_at, Some(timestamp(T0 + 10 * DAY)));
    let expiring = h
        .client
        .get_expiring_points(pb::GetExpiringPointsRequest {
            program_id: "shop".into(),
            customer_id: "dina".into(),
            within: Some(prost_types::Duration { seconds: 30 * 86_400, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expiring.total_points, 70);
    assert_eq!(expiring.expiring.len(), 1);
    // The summary answers both in one call; within a horizon that ends before
    // the next expiry it has nothing to list (and reads no lots).
    let summary = |days: i64| pb::GetAccountSummaryRequest {
        program_id: "shop".into(),
        customer_id: "dina".into(),
        expiring_within: Some(prost_types::Duration { seconds: days * 86_400, nanos: 0 }),
        include_profile: false,
    };
    let both = h.client.get_account_summary(summary(30)).await.unwrap().into_inner();
    assert_eq!((both.balance, both.expiring), (Some(balance), Some(expiring)));
    let short = h.client.get_account_summary(summary(5)).await.unwrap().into_inner();
    assert_eq!((short.balance, short.expiring), (Some(balance), Some(pb::GetExpiringPointsResponse::default())));
    let status = h.client.get_account_summary(summary(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    h.clock.advance(11 * DAY);
    // Reads settle lazily, so the balance is right before the job runs...
    let balance = h.balance("shop", "dina").await;
    assert_eq!((balance.available, balance.expired), (100, 70));
    // ...and the job finds nothing left to do for this account.
    let run = h.client.run_expiry(pb::RunExpiryRequest { program_id: "shop".into() }).await.unwrap().into_inner();
    assert_eq!(run.points_expired, 0);

    h.clock.advance(50 * DAY);
    let run = h.client.run_expiry(pb::RunExpiryRequest { program_id: String::new() }).await.unwrap().into_inner();
    assert_eq!((run.accounts_settled, run.points_expired), (1, 100));
    let entries = h.all_entries("shop", "dina").await;
    let expired: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == pb::EntryKind::Expire as i32)
        .map(|e| (e.related_transaction_id.clone(), e.points))
        .collect();
    assert_eq!(expired, vec![(late, -100), (soon, -70)], "newest first");
    let balance = h.assert_ledger_matches_balance("shop", "dina").await;
    assert_eq!((balance.available, balance.expired, balance.next_expiry_points), (0, 170, 0));
    h.stop().await;
}

async fn pending_points_activate_and_reversals_take_points_back(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let pending_earn = |key: &str, points| pb::EarnRequest {
        program_id: "shop".into(),
        customer_id: "emil".into(),
        points,
        reason: "order".into(),
        idempotency_key: key.into(),
        pending_until: Some(timestamp(T0 + 14 * DAY)),
        expires_at: None,
    };
    let first = h.client.earn(pending_earn("o1", 40)).await.unwrap().into_inner();
    assert_eq!(first.balance.as_ref().map(|b| (b.available, b.pending)), Some((0, 40)));
    assert_eq!(h.spend("shop", "emil", 1, "s0").await.unwrap_err().code(), Code::FailedPrecondition);

    // Early activation of one earn.
    let activated = h
        .client
        .activate_pending(pb::ActivatePendingRequest {
            program_id: "shop".into(),
            customer_id: "emil".into(),
            earn_transaction_id: first.transaction_id.clone(),
            idempotency_key: "a1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(activated.points_activated, 40);
    assert_eq!(activated.balance.map(|b| (b.available, b.pending)), Some((40, 0)));

    // Reversal of pending points cancels them.
    h.client.earn(pending_earn("o2", 60)).await.unwrap();
    let reversed = h
        .client
        .reverse(pb::ReverseRequest {
            program_id: "shop".into(),
            original: Some(pb::reverse_request::Original::OriginalIdempotencyKey("o2".into())),
            points: Some(25),
            idempotency_key: "r1".into(),
            reason: "partial refund".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reversed.points_reversed, reversed.customer_id.as_str()), (25, "emil"));
    assert_eq!(reversed.balance.map(|b| (b.available, b.pending)), Some((40, 35)));

    // The pending period ends: the rest activates without any call.
    h.clock.advance(14 * DAY);
    let balance = h.balance("shop", "emil").await;
    assert_eq!((balance.available, balance.pending), (75, 0));

    // Reversal of active points that were partly spent leaves a debt.
    h.spend("shop", "emil", 70, "s1").await.unwrap();
    let reverse_first = |key: &str, points| pb::ReverseRequest {
        program_id: "shop".into(),
        original: Some(pb::reverse_request::Original::OriginalTransactionId(first.transaction_id.clone())),
        points,
        idempotency_key: key.into(),
        reason: "refund".into(),
    };
    let all = h.client.reverse(reverse_first("r2", None)).await.unwrap().into_inner();
    assert_eq!(all.points_reversed, 40);
    assert_eq!(all.balance.as_ref().map(|b| b.available), Some(-35));
    let over = h.client.reverse(reverse_first("r3", Some(1))).await.unwrap_err();
    assert_eq!(over.code(), Code::FailedPrecondition);
    assert_eq!(over.get_error_details().error_info().unwrap().reason, "REVERSAL_EXCEEDS_EARN");
    // The next earn repays the debt.
    h.earn("shop", "emil", 50, "o3").await;
    let balance = h.assert_ledger_matches_balance("shop", "emil").await;
    assert_eq!((balance.available, balance.reversed), (15, 65));
    h.stop().await;
}

async fn stream_consumer_racing_writers_sees_every_entry_once(backend: Backend) {
    const WRITERS: usize = 8;
    const EARNS_PER_WRITER: usize = 40;
    let total = WRITERS * EARNS_PER_WRITER;
    let h = Harness::start(backend).await;

    let consumer = {
        let mut client = h.client().await;
        tokio::spawn(async move {
            let mut seen: Vec<(i64, String)> = Vec::new();
            let mut cursor = 0;
            // Reconnect from the stored cursor every 50 entries, as a consumer restarting would.
            while seen.len() < total {
                let mut stream = client
                    .stream_events(pb::StreamEventsRequest {
                        after_sequence: cursor,
                        program_id: "race".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let mut this_connection = 0;
                while let Some(message) = stream.next().await {
                    let entry = message.unwrap().entry.unwrap();
                    assert!(entry.sequence > cursor, "sequences only grow");
                    cursor = entry.sequence;
                    seen.push((entry.sequence, entry.transaction_id));
                    this_connection += 1;
                    if this_connection == 50 || seen.len() == total {
                        break;
                    }
                }
            }
            seen
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = h.client().await;
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EARNS_PER_WRITER {
                let response = client
                    .earn(pb::EarnRequest {
                        program_id: "race".into(),
                        customer_id: format!("c{}", i % 5),
                        points: 1,
                        reason: "race".into(),
                        idempotency_key: format!("w{w}-{i}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                ids.push(response.into_inner().transaction_id);
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), consumer).await.expect("the consumer catches up").unwrap();
    let seen_ids: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(seen.len(), total, "no entry seen twice");
    assert_eq!(seen_ids, written, "every entry seen");
    h.stop().await;
}

async fn invalid_input_names_the_field(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let bad = [
        (
            pb::EarnRequest { customer_id: "c".into(), points: 1, idempotency_key: "k".into(), ..Default::default() },
            "program_id",
        ),
        (
            pb::EarnRequest {
                program_id: "p".into(),
                customer_id: "c".repeat(129),
                points: 1,
                idempotency_key: "k".into(),
                ..Default::default()
            },
            "customer_id",
        ),
        (
            pb::EarnRequest {
                program_id: "p".into(),
                customer_id: "c".into(),
                points: 0,
                idempotency_key: "k".into(),
                ..Default::default()
            },
            "points",
        ),
        (
            pb::EarnRequest {
                program_id: "p".into(),
                customer_id: "c".into(),
                points: 2_000_000_000,
                idempotency_key: "k".into(),
                ..Default::default()
            },
            "points",
        ),
        (
            pb::EarnRequest { program_id: "p".into(), customer_id: "c".into(), points: 1, ..Default::default() },
            "idempotency_key",
        ),
        (
            pb::EarnRequest {
                program_id: "p".into(),
                customer_id: "c".into(),
                points: 1,
                idempotency_key: "k".into(),
                expires_at: Some(timestamp(T0 - DAY)),
                ..Default::default()
            },
            "expires_at",
        ),
    ];
    for (request, field) in bad {
        let status = h.client.earn(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let details = status.get_error_details();
        let fields: Vec<_> =
            details.bad_request().expect("field violations").field_violations.iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, vec![field.to_owned()]);
    }
    let status = h
        .client
        .reverse(pb::ReverseRequest { program_id: "p".into(), idempotency_key: "k".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("original"), "{}", status.message());
    let status = h
        .client
        .list_transactions(pb::ListTransactionsRequest {
            program_id: "p".into(),
            customer_id: "c".into(),
            page_size: 10,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(h.balance("p", "c").await.available, 0, "nothing was written");
    h.stop().await;
}

async fn programs_never_see_each_other(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let earn = h.earn("shop-a", "same-customer", 300, "k").await;
    h.earn("shop-b", "same-customer", 5, "k").await;
    assert_eq!(h.balance("shop-a", "same-customer").await.available, 300);
    assert_eq!(h.balance("shop-b", "same-customer").await.available, 5);
    assert!(h.all_entries("shop-b", "same-customer").await.iter().all(|e| e.program_id == "shop-b"));
    // Program B cannot reverse program A's earn, by id or by key.
    let status = h
        .client
        .reverse(pb::ReverseRequest {
            program_id: "shop-b".into(),
            original: Some(pb::reverse_request::Original::OriginalTransactionId(earn.transaction_id)),
            points: None,
            idempotency_key: "r".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let mut stream = h
        .client
        .stream_events(pb::StreamEventsRequest { after_sequence: 0, program_id: "shop-b".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap().entry.unwrap();
    assert_eq!(first.program_id, "shop-b");
    h.stop().await;
}

/// A consumer that asks for reversals gets reversals, old and live, in
/// stream order; the entries between them are skipped, never sent.
async fn a_stream_of_some_kinds_sends_only_those(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let reverse = |key: &str, original: &str| pb::ReverseRequest {
        program_id: "shop".into(),
        original: Some(pb::reverse_request::Original::OriginalIdempotencyKey(original.into())),
        points: Some(10),
        idempotency_key: key.into(),
        reason: "refund".into(),
    };
    h.earn("shop", "ivy", 100, "e1").await;
    h.spend("shop", "ivy", 30, "s1").await.unwrap();
    h.client.reverse(reverse("r1", "e1")).await.unwrap();
    h.earn("shop", "ivy", 50, "e2").await;
    let request = |interval_ms| pb::StreamEventsRequest {
        kinds: vec![pb::EntryKind::Reverse as i32],
        interval_ms,
        ..Default::default()
    };
    let refused = h.client.stream_events(request(60_001)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut stream = h.client.stream_events(request(50)).await.unwrap().into_inner();
    let first = stream.next().await.unwrap().unwrap().entry.unwrap();
    assert_eq!((first.kind, first.points), (pb::EntryKind::Reverse as i32, -10));
    h.earn("shop", "ivy", 5, "e3").await;
    h.client.reverse(reverse("r2", "e2")).await.unwrap();
    // Between them the stream may say how far it went past what it skipped
    // (a message without an entry), never backwards and never past an entry it owes.
    let mut through = first.sequence;
    let second = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        match message.entry {
            Some(entry) => break entry,
            None => {
                assert!(message.through_sequence >= through, "{} after {through}", message.through_sequence);
                through = message.through_sequence;
            }
        }
    };
    assert!(through < second.sequence, "the progress {through} passed the reversal {}", second.sequence);
    assert_eq!(second.kind, pb::EntryKind::Reverse as i32, "the earn in between was not sent");
    assert!(second.sequence > first.sequence + 1, "{} then {}", first.sequence, second.sequence);
    h.stop().await;
}

async fn health_reflection_and_metrics_answer(backend: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut h = Harness::start(backend).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", h.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", loyalty_points::SERVICE_NAME] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: HashSet<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(loyalty_points::SERVICE_NAME) && names.contains("grpc.health.v1.Health"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("loyalty.") && n != loyalty_points::SERVICE_NAME),
        "only what this port serves: {names:?}"
    );

    h.earn("shop", "fay", 1, "k").await;
    let _ = h.spend("shop", "fay", 5, "s").await;
    let text = h.metrics_text().await;
    assert!(text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.contains(r#"method="Earn",code="Ok"} 1"#), "{text}");
    assert!(text.contains(r#"method="Spend",code="FailedPrecondition"} 1"#), "{text}");
    assert!(text.contains("balance_cache_"), "{text}");
    h.stop().await;
}

/// Redis goes away mid-test: reads and writes go on from the database, and
/// once Redis is back no stale balance is served, though Redis kept the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_loses_nothing_and_serves_nothing_stale() {
    let upstream = redis_socket_addr();
    let proxy = CuttableProxy::start(upstream).await;
    let options =
        Options { redis_url: Some(format!("redis://{}", proxy.addr)), redis_backoff_ms: 0, ..Options::default() };
    let mut h = Harness::start_with(Backend::Postgres, options).await;

    h.earn("shop", "gus", 100, "e1").await;
    // The service's Redis connection is made lazily and the first doubt
    // poll must pass before reads trust (and refill) Redis: on a busy
    // machine the first write may miss Redis, and a read then refills it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cached = loop {
        assert_eq!(h.balance("shop", "gus").await.available, 100);
        match cached_balance(&h, "shop", "gus").await {
            Some(cached) => break cached,
            None if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("the balance is cached in Redis within 10 s"),
        }
    };
    assert_eq!(cached["available"], 100);

    proxy.cut();
    h.spend("shop", "gus", 30, "s1").await.expect("writes go on without Redis");
    assert_eq!(h.balance("shop", "gus").await.available, 70, "reads fall back to the database");
    h.earn("shop", "gus", 5, "e2").await;
    // Redis itself still holds the balance from before the outage.
    assert_eq!(cached_balance(&h, "shop", "gus").await.expect("still there")["available"], 100);

    proxy.restore();
    for _ in 0..20 {
        assert_eq!(h.balance("shop", "gus").await.available, 75, "never the stale 100");
    }
    let refreshed = cached_balance(&h, "shop", "gus").await.expect("cached again once Redis is back");
    assert_eq!(refreshed["available"], 75);
    let metrics = h.metrics_text().await;
    let errors: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("balance_cache_errors_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the cache error counter is exported");
    assert!(errors > 0, "the outage was noticed: {metrics}");
    h.stop().await;
}

fn redis_socket_addr() -> std::net::SocketAddr {
    let url = loyalty_common::testing::redis_url();
    let hostport = url.trim_start_matches("redis://").trim_end_matches('/');
    let hostport = hostport.rsplit('@').next().unwrap();
    std::net::ToSocketAddrs::to_socket_addrs(hostport).unwrap().next().unwrap()
}

async fn cached_balance(h: &Harness, program: &str, customer: &str) -> Option<HashMap<String, serde_json::Value>> {
    let client = redis::Client::open(loyalty_common::testing::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.expect("test Redis answers");
    let key = format!("{}bal:{{{}:{program}:{customer}}}", h.redis_prefix, program.len());
    let json: Option<String> = redis::cmd("HGET").arg(key).arg("d").query_async(&mut conn).await.unwrap();
    json.map(|j| serde_json::from_str(&j).unwrap())
}
