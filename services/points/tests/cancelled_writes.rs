//! Writes whose callers give up: an acknowledged write reaches the cache
//! even when the call that made it was cancelled after its commit, a burst
//! beyond the write queue is refused cleanly, and one-command and batched
//! writes on the same accounts and keys never deadlock.
//!
//! A write is held just before its commit by a transaction of the test's own
//! that holds the account (PostgreSQL: its row lock; SQLite: the write lock);
//! the caller's deadline runs out meanwhile, then the test lets it go and
//! waits for its commit before retrying.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Connection;
use tonic::Code;

use loyalty_common::testing::{self, WriteHold};
use loyalty_proto::points::v1 as pb;
use support::{Backend, Harness, Options};

const PROGRAM: &str = "shop";
/// The deadline of a call the test lets run out.
const SHORT_DEADLINE: Duration = Duration::from_millis(300);

loyalty_common::on_both_backends!(
    a_batched_earn_cancelled_after_its_commit_is_read_back_at_once,
    a_batched_spend_cancelled_after_its_commit_is_read_back_at_once,
    a_lone_earn_cancelled_after_its_commit_is_read_back_at_once,
    an_activity_cancelled_after_its_commit_is_read_back_at_once,
    a_burst_beyond_the_write_queue_is_refused_cleanly,
);

/// Real Redis in front of either database.
fn redis_options(write_workers: usize) -> Options {
    Options { redis_url: Some(testing::redis_url()), write_workers, ..Options::default() }
}

/// Keeps writes to the customer's account waiting (every write, on SQLite).
async fn hold(h: &Harness, customer: &str) -> WriteHold {
    WriteHold::row(h.database_url(), "accounts", PROGRAM, customer).await
}

/// Sends `request` with a short deadline while the account is held, so the
/// deadline runs out before the write can commit; then lets the write go
/// and returns once it committed (its key's result is saved).
async fn cancelled<T, R>(
    h: &Harness,
    customer: &str,
    key: &str,
    request: T,
    call: impl AsyncFnOnce(
        &mut pb::points_service_client::PointsServiceClient<tonic::transport::Channel>,
        tonic::Request<T>,
    ) -> Result<R, tonic::Status>,
) {
    let hold = hold(h, customer).await;
    let mut client = h.client().await;
    let mut request = tonic::Request::new(request);
    request.set_timeout(SHORT_DEADLINE);
    let status = call(&mut client, request).await.err().expect("the held write cannot answer in time");
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "the caller gave up: {status:?}");
    drop(client);
    hold.release().await;
    await_saved(h, key).await;
}

/// Waits until the write under `key` has committed, whoever still listens.
async fn await_saved(h: &Harness, key: &str) {
    let mut conn = sqlx::AnyConnection::connect(h.database_url()).await.expect("test connection");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let saved: Option<Option<String>> =
            sqlx::query_scalar("SELECT response FROM idempotency_keys WHERE program_id = $1 AND idempotency_key = $2")
                .bind(PROGRAM)
                .bind(key)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        if saved.flatten().is_some() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the cancelled write under {key} never committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn replayed<T>(response: &tonic::Response<T>) -> bool {
    response.metadata().get("idempotent-replayed").is_some_and(|v| v == "true")
}

fn earn_request(customer: &str, points: i64, key: &str) -> pb::EarnRequest {
    support::earn_request(PROGRAM, customer, points, key)
}

fn spend_request(customer: &str, points: i64, key: &str) -> pb::SpendRequest {
    pb::SpendRequest {
        program_id: PROGRAM.into(),
        customer_id: customer.into(),
        points,
        reason: "reward".into(),
        idempotency_key: key.into(),
    }
}

/// The balance is cached at 100 (read once, so the cache holds it), an earn
/// of 50 is cancelled after its commit and retried: the retry is a replay
/// and the very next read says 150.
async fn earn_cancelled_then_retried(backend: Backend, write_workers: usize) {
    let mut h = Harness::start_with(backend, redis_options(write_workers)).await;
    h.earn(PROGRAM, "ada", 100, "first").await;
    assert_eq!(h.balance(PROGRAM, "ada").await.available, 100);

    cancelled(&h, "ada", "second", earn_request("ada", 50, "second"), async |c, r| c.earn(r).await).await;
    let retried = h.client.earn(earn_request("ada", 50, "second")).await.expect("retry answers");
    assert!(replayed(&retried), "the cancelled call had committed; its retry is a replay");
    assert_eq!(h.balance(PROGRAM, "ada").await.available, 150, "the read after the acknowledged retry");
    assert_eq!(h.assert_ledger_matches_balance(PROGRAM, "ada").await.available, 150);
    h.stop().await;
}

async fn a_batched_earn_cancelled_after_its_commit_is_read_back_at_once(backend: Backend) {
    earn_cancelled_then_retried(backend, 4).await;
}

async fn a_lone_earn_cancelled_after_its_commit_is_read_back_at_once(backend: Backend) {
    earn_cancelled_then_retried(backend, 0).await;
}

async fn a_batched_spend_cancelled_after_its_commit_is_read_back_at_once(backend: Backend) {
    let mut h = Harness::start_with(backend, redis_options(4)).await;
    h.earn(PROGRAM, "bo", 100, "earn").await;
    assert_eq!(h.balance(PROGRAM, "bo").await.available, 100);

    cancelled(&h, "bo", "spend", spend_request("bo", 30, "spend"), async |c, r| c.spend(r).await).await;
    let retried = h.client.spend(spend_request("bo", 30, "spend")).await.expect("retry answers");
    assert!(replayed(&retried), "the cancelled call had committed; its retry is a replay");
    assert_eq!(h.balance(PROGRAM, "bo").await.available, 70);
    assert_eq!(h.assert_ledger_matches_balance(PROGRAM, "bo").await.available, 70);
    h.stop().await;
}

/// RecordActivity takes the one-command path whatever the write workers.
async fn an_activity_cancelled_after_its_commit_is_read_back_at_once(backend: Backend) {
    let mut h = Harness::start_with(backend, redis_options(4)).await;
    let settings = pb::ProgramSettings {
        currency: "EUR".into(),
        earn_rate: Some(pb::EarnRate { points: 1, per_amount_minor: 100 }),
        rounding: pb::Rounding::Nearest as i32,
        expiry: Some(pb::ExpiryPolicy { kind: pb::ExpiryPolicyKind::Never as i32, count: 0 }),
        activity_rules: vec![pb::ActivityRule {
            activity_type: "review".into(),
            points: 25,
            active: true,
            cap_count: 0,
            cap_period: pb::CapPeriod::Unspecified as i32,
            once_per_ref: true,
        }],
        ..Default::default()
    };
    h.client
        .put_program_settings(pb::PutProgramSettingsRequest {
            program_id: PROGRAM.into(),
            settings: Some(settings),
            actor: "admin@shop".into(),
            idempotency_key: "settings".into(),
            expected_version: None,
        })
        .await
        .expect("settings saved");
    h.earn(PROGRAM, "cy", 100, "earn").await;
    assert_eq!(h.balance(PROGRAM, "cy").await.available, 100);

    let activity = || pb::RecordActivityRequest {
        program_id: PROGRAM.into(),
        customer_id: "cy".into(),
        activity_type: "review".into(),
        activity_ref: "review-1".into(),
        idempotency_key: "review-1".into(),
    };
    cancelled(&h, "cy", "review-1", activity(), async |c, r| c.record_activity(r).await).await;
    let retried = h.client.record_activity(activity()).await.expect("retry answers");
    assert!(replayed(&retried), "the cancelled call had committed; its retry is a replay");
    assert_eq!(h.balance(PROGRAM, "cy").await.available, 125);
    assert_eq!(h.assert_ledger_matches_balance(PROGRAM, "cy").await.available, 125);
    h.stop().await;
}

/// One write worker whose queue holds 2, kept busy by a held write (held
/// before the burst on PostgreSQL; on SQLite every write waits, so whichever
/// batch the worker takes first is the held one): of 61 earns, what the
/// worker and its queue took commits once released (on PostgreSQL exactly
/// 3), and the rest is refused at once as UNAVAILABLE, counted, and absent
/// from the ledger.
async fn a_burst_beyond_the_write_queue_is_refused_cleanly(backend: Backend) {
    const CAPACITY: usize = 2;
    const BURST: usize = 60;
    let options = Options { write_queue_capacity: CAPACITY as u64, ..redis_options(1) };
    let mut h = Harness::start_with(backend, options).await;
    h.earn(PROGRAM, "held", 10, "held-0").await;

    let hold = hold(&h, "held").await;
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let send = |customer: String| {
        let mut client = h.client.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let result = client.earn(earn_request(&customer, 5, &format!("{customer}-burst"))).await;
            let _ = answers.send((customer, result.map(drop)));
        });
    };
    send("held".to_owned());
    if backend == Backend::Postgres {
        await_lock_wait(&h).await;
    }
    for i in 0..BURST {
        send(format!("burst-{i}"));
    }
    drop(answers);
    // The refused answer at once, while the worker is still held. On
    // PostgreSQL the worker holds the one held write, so exactly what the
    // queue cannot take is refused; on SQLite the worker's first batch may
    // have taken up to a queue's worth before blocking, so at least that less.
    let refused_while_held = match backend {
        Backend::Postgres => BURST - CAPACITY,
        Backend::Sqlite => BURST + 1 - 2 * CAPACITY,
    };
    let mut results = Vec::new();
    while results.len() < refused_while_held {
        let (customer, result) = answered.recv().await.expect("every call answers");
        assert!(result.is_err(), "{customer}: nothing commits while the worker is held");
        results.push((customer, result));
    }
    hold.release().await;
    while let Some(result) = answered.recv().await {
        results.push(result);
    }

    let (mut accepted, mut refused) = (HashSet::new(), HashSet::new());
    for (customer, result) in results {
        match result {
            Ok(()) => {
                accepted.insert(customer);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{customer}: refused as retryable, not {status:?}");
                refused.insert(customer);
            }
        }
    }
    assert!(refused.len() >= refused_while_held, "refused: {refused:?}");
    if backend == Backend::Postgres {
        assert_eq!(accepted.len(), CAPACITY + 1, "the worker's write and a full queue: {accepted:?}");
        assert!(accepted.contains("held"), "the held write was the worker's: {accepted:?}");
    }
    let metrics = h.metrics_text().await;
    let counted = metric(&metrics, "ledger_writes_refused_total");
    assert_eq!(counted, refused.len() as u64, "every refusal is counted");
    let before = |customer: &str| if customer == "held" { 10 } else { 0 };
    for customer in &accepted {
        let available = h.assert_ledger_matches_balance(PROGRAM, customer).await.available;
        assert_eq!(available, before(customer) + 5, "{customer} committed");
    }
    for customer in &refused {
        let available = h.assert_ledger_matches_balance(PROGRAM, customer).await.available;
        assert_eq!(available, before(customer), "{customer} was refused: nothing written");
    }
    h.stop().await;
}

/// Waits until some session of the test database waits for a row lock.
async fn await_lock_wait(h: &Harness) {
    let mut conn = sqlx::PgConnection::connect(h.database_url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the write never waited for the held account");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// PostgreSQL only (SQLite has one writer at a time): a one-command
/// replica and a batching replica write to the same accounts, some of them
/// new, under the same keys at once. Nothing fails but for want of points,
/// and the server counts no deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_command_and_batched_writes_never_deadlock() {
    let database = testing::TestDatabase::create().await;
    let shared =
        |write_workers| Options { database_url: Some(database.url.clone()), write_workers, ..Options::default() };
    let lone = Harness::start_with(Backend::Postgres, shared(0)).await;
    let batched = Harness::start_with(Backend::Postgres, shared(4)).await;

    const ROUNDS: usize = 12;
    const WRITERS: usize = 16;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        for h in [&lone, &batched] {
            let mut client = h.client().await;
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for round in 0..ROUNDS {
                    // The same key reaches both replicas with the same arguments.
                    let n = (writer * 7 + round * 3) % 40;
                    let customer = format!("c{}", (n * 5 + round) % 9);
                    let key = format!("k{round}-{n}");
                    let result = if n % 3 == 0 {
                        client.spend(spend_request(&customer, 3, &key)).await.map(drop)
                    } else {
                        client.earn(earn_request(&customer, 10, &key)).await.map(drop)
                    };
                    if let Err(status) = result
                        && status.code() != Code::FailedPrecondition
                    {
                        failures.push(format!("{customer}/{key}: {status:?}"));
                    }
                }
                failures
            }));
        }
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    assert!(failures.is_empty(), "writes failed: {failures:#?}");
    lone.stop().await;
    batched.stop().await;

    // Every backend of both replicas has exited, and with it flushed its statistics.
    let mut admin = sqlx::PgConnection::connect(&testing::postgres_admin_url()).await.unwrap();
    let name = database.url.rsplit('/').next().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let backends: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if backends == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replicas' connections never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadlocks: i64 = sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(deadlocks, 0, "PostgreSQL broke deadlocks between the writers");
    database.drop_database().await;
}
