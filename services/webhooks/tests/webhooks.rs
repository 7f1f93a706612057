//! The webhooks service end to end: a real points service, a real webhooks
//! service following its ledger, and a real HTTP receiver, all on loopback,
//! on SQLite and on PostgreSQL. The receiver checks each signature with the
//! HMAC crate itself, as a shop's code would (the Python test checks them
//! with the Standard Webhooks library).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

use loyalty_common::clock::{MICROS_PER_DAY, MICROS_PER_SECOND, Micros};
use loyalty_common::server::RunningService;
use loyalty_common::testing::{self, Backend, Sandbox};
use loyalty_insights::InsightsServer;
use loyalty_points::PointsServer;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::referral::v1 as referral;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1 as rewards;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_proto::webhooks::v1 as pb;
use loyalty_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient;
use loyalty_referral::ReferralServer;
use loyalty_rewards::RewardsServer;
use loyalty_tiers::TiersServer;
use loyalty_webhooks::WebhooksServer;

/// 2025-11-24T00:00:00Z.
const T0: Micros = 1_763_942_400_000_000;

// ---------------------------------------------------------------- the receiver

/// What the receiver answers next.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// A 307 to another path of the receiver.
    Redirect,
    /// Waits this long, then 200.
    Slow(Duration),
    /// 200 with a body of bytes that are not text (a NUL among them).
    Binary,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    timestamp: i64,
    signatures: Vec<String>,
    body: serde_json::Value,
    raw: String,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Answers to give first, in order; then `otherwise`.
    script: VecDeque<Answer>,
    otherwise: Option<Answer>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start() -> Self {
        let state: Arc<Mutex<ReceiverState>> = Arc::default();
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
            let state = shared.clone();
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let received = Received {
                    path: uri.path().to_owned(),
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                    signatures: header("webhook-signature").split(' ').map(str::to_owned).collect(),
                    body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                    raw: body,
                };
                let answer = {
                    let mut state = state.lock().unwrap();
                    state.received.push(received);
                    state.script.pop_front().or(state.otherwise).unwrap_or(Answer::Status(200))
                };
                match answer {
                    Answer::Status(code) => {
                        (StatusCode::from_u16(code).unwrap(), HeaderMap::new(), format!("answer {code}"))
                    }
                    Answer::Redirect => {
                        let mut headers = HeaderMap::new();
                        headers.insert("location", "/elsewhere".parse().unwrap());
                        (StatusCode::TEMPORARY_REDIRECT, headers, String::new())
                    }
                    Answer::Binary => (StatusCode::OK, HeaderMap::new(), "ok\0\u{1}done".to_owned()),
                    Answer::Slow(wait) => {
                        tokio::time::sleep(wait).await;
                        (StatusCode::OK, HeaderMap::new(), "late".to_owned())
                    }
                }
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn script(&self, answers: &[Answer]) {
        self.state.lock().unwrap().script.extend(answers.iter().copied());
    }

    fn otherwise(&self, answer: Answer) {
        self.state.lock().unwrap().otherwise = Some(answer);
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }
}

/// Whether `signature` (`v1,<base64>`) is `secret`'s over the message, computed here from scratch.
fn signed_by(secret: &str, received: &Received) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", received.id, received.timestamp, received.raw).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    received.signatures.contains(&expected)
}

/// Asks `ask` every 20 ms until `done` holds, for at most 15 s; then fails naming `what`.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut ask: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut last = ask().await;
    for _ in 0..750 {
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = ask().await;
    }
    panic!("{what} never came; the last answer: {last:?}");
}

// ---------------------------------------------------------------- the mesh

struct Harness {
    sandbox: Sandbox,
    points: PointsServiceClient<Channel>,
    webhooks: WebhooksServiceClient<Channel>,
    points_server: RunningService,
    webhooks_server: Option<RunningService>,
    insights_server: Option<RunningService>,
    /// Tiers, referral and rewards, when the test follows their outboxes.
    outbox_servers: Vec<RunningService>,
    webhooks_url: String,
    flags: Vec<String>,
}

/// Flags of every webhooks service here: plain http, quick polling, short
/// retries; loopback is allowed unless a test names the networks itself.
const FLAGS: &[&str] =
    &["--allow-http", "--poll-interval-ms", "20", "--retry-schedule", "10s,1m", "--timeout-ms", "500"];

impl Harness {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        Self::start_full(backend, extra, false, false).await
    }

    /// Points, an insights service following it, and webhooks following both.
    async fn start_with_insights(backend: Backend) -> Self {
        Self::start_full(backend, &["--segment-poll-ms", "50"], true, false).await
    }

    /// Points; tiers, referral and rewards following it; webhooks following all four.
    async fn start_with_outboxes(backend: Backend) -> Self {
        Self::start_full(backend, &["--outbox-poll-ms", "50"], false, true).await
    }

    async fn start_full(backend: Backend, extra: &[&str], with_insights: bool, with_outboxes: bool) -> Self {
        let mut sandbox = Sandbox::new(backend, T0);
        let (points_url, webhooks_url) = (sandbox.database("points").await, sandbox.database("webhooks").await);
        let points_server = sandbox.start::<PointsServer>(&points_url, &[]).await;
        let points_addr = points_server.bind_addr().to_string();
        let mut flags: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        let insights_server = if with_insights {
            let url = sandbox.database("insights").await;
            let args = ["--points-addr", points_addr.as_str(), "--review-interval-secs", "3600"];
            let server = sandbox.start::<InsightsServer>(&url, &args).await;
            flags.extend(["--insights-addr".to_owned(), server.bind_addr().to_string()]);
            Some(server)
        } else {
            None
        };
        let mut outbox_servers = Vec::new();
        if with_outboxes {
            let (tiers_url, referral_url) = (sandbox.database("tiers").await, sandbox.database("referral").await);
            let rewards_url = sandbox.database("rewards").await;
            let tiers = sandbox.start::<TiersServer>(&tiers_url, &["--points-addr", &points_addr]).await;
            let referral = sandbox.start::<ReferralServer>(&referral_url, &["--points-addr", &points_addr]).await;
            let tiers_addr = tiers.bind_addr().to_string();
            let args = ["--points-addr", &points_addr, "--tiers-addr", &tiers_addr, "--recovery-interval-ms", "50"];
            let rewards = sandbox.start::<RewardsServer>(&rewards_url, &args).await;
            for (flag, server) in
                [("--tiers-addr", &tiers), ("--referral-addr", &referral), ("--rewards-addr", &rewards)]
            {
                flags.extend([flag.to_owned(), server.bind_addr().to_string()]);
            }
            outbox_servers.extend([rewards, referral, tiers]);
        }
        flags.extend(["--points-addr".to_owned(), points_addr]);
        if !extra.contains(&"--allowed-networks") {
            flags.extend(["--allowed-networks".to_owned(), "127.0.0.0/8".to_owned()]);
        }
        flags.extend(extra.iter().map(|f| (*f).to_owned()));
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let webhooks_server = sandbox.start::<WebhooksServer>(&webhooks_url, &args).await;
        Self {
            points: PointsServiceClient::new(testing::channel(points_server.bind_addr()).await),
            webhooks: WebhooksServiceClient::new(testing::channel(webhooks_server.bind_addr()).await),
            sandbox,
            points_server,
            webhooks_server: Some(webhooks_server),
            insights_server,
            outbox_servers,
            webhooks_url,
            flags,
        }
    }

    /// Stops the webhooks service (as a rolling update does) and starts it again on the same database.
    async fn restart_webhooks(&mut self) {
        self.webhooks_server.take().unwrap().shutdown().await.unwrap();
        let args: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let server = self.sandbox.start::<WebhooksServer>(&self.webhooks_url, &args).await;
        self.webhooks = WebhooksServiceClient::new(testing::channel(server.bind_addr()).await);
        self.webhooks_server = Some(server);
    }

    async fn stop(mut self) {
        if let Some(server) = self.webhooks_server.take() {
            server.shutdown().await.unwrap();
        }
        if let Some(server) = self.insights_server.take() {
            server.shutdown().await.unwrap();
        }
        for server in self.outbox_servers.drain(..) {
            server.shutdown().await.unwrap();
        }
        self.points_server.shutdown().await.unwrap();
        self.sandbox.stop().await;
    }

    fn advance(&self, by: Micros) {
        self.sandbox.clock.advance(by);
    }

    async fn subscribe(&mut self, url: &str, types: &[&str], ordered: bool) -> (pb::Subscription, String) {
        let request = pb::CreateSubscriptionRequest {
            program_id: "shop".into(),
            url: url.into(),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            description: "the shop's CRM".into(),
            ordered,
            disabled: false,
            idempotency_key: format!("subscribe-{url}"),
        };
        let answer = self.webhooks.create_subscription(request).await.unwrap().into_inner();
        (answer.subscription.unwrap(), answer.secret)
    }

    async fn earn(&mut self, customer: &str, points: i64, key: &str) -> String {
        let request = points::EarnRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            points,
            reason: "goodwill".into(),
            idempotency_key: key.into(),
            pending_until: None,
            expires_at: None,
        };
        self.points.earn(request).await.unwrap().into_inner().transaction_id
    }

    async fn spend(&mut self, customer: &str, points: i64, key: &str) {
        let request = points::SpendRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            points,
            reason: "reward".into(),
            idempotency_key: key.into(),
        };
        self.points.spend(request).await.unwrap();
    }

    async fn deliveries(&self, subscription_id: &str) -> Vec<pb::Delivery> {
        let request = pb::ListDeliveriesRequest {
            program_id: "shop".into(),
            subscription_id: subscription_id.into(),
            ..Default::default()
        };
        self.webhooks.clone().list_deliveries(request).await.unwrap().into_inner().deliveries
    }

    async fn subscription(&self, subscription_id: &str) -> pb::Subscription {
        let request = pb::GetSubscriptionRequest { program_id: "shop".into(), subscription_id: subscription_id.into() };
        self.webhooks.clone().get_subscription(request).await.unwrap().into_inner().subscription.unwrap()
    }
}

// ---------------------------------------------------------------- tests

async fn ledger_entries_are_delivered_signed(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let receiver = Receiver::start().await;
    let (subscription, secret) = h.subscribe(&receiver.url("/crm"), &["points.earned", "points.spent"], false).await;
    assert_eq!(subscription.status, pb::SubscriptionStatus::Enabled as i32);
    assert!(secret.starts_with("whsec_"));
    h.subscribe(&receiver.url("/all"), &[], false).await;

    let earned = h.earn("anna", 500, "earn-1").await;
    h.spend("anna", 200, "spend-1").await;
    let mut crm = eventually("two deliveries to /crm", || async { receiver.at("/crm") }, |r| r.len() >= 2).await;
    // Not an ordered subscription: the two may come in either order.
    crm.sort_by_key(|r| r.body["type"].as_str().unwrap().to_owned());
    let types: Vec<&str> = crm.iter().map(|r| r.body["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["points.earned", "points.spent"]);
    for received in &crm {
        assert!(signed_by(&secret, received), "{received:?} is signed by the subscription's secret");
        assert_eq!(received.body["version"], "v1");
        assert_eq!(received.body["program_id"], "shop");
        assert_eq!(received.body["data"]["customer_id"], "anna");
        assert_eq!(received.timestamp, T0 / MICROS_PER_SECOND, "the attempt's time, on the service's clock");
        assert!(received.id.starts_with("evt_"));
    }
    assert_eq!(crm[0].body["data"]["transaction_id"], earned.as_str());
    assert_eq!(crm[0].body["data"]["amount"], 500);
    assert_eq!(crm[1].body["data"]["points"], -200);

    // Each subscription gets its own delivery of one event, with the event's one id.
    let all = eventually("two deliveries to /all", || async { receiver.at("/all") }, |r| r.len() >= 2).await;
    let mut ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut crm_ids: Vec<&str> = crm.iter().map(|r| r.id.as_str()).collect();
    crm_ids.sort_unstable();
    assert_eq!(ids, crm_ids);
    assert!(!signed_by(&secret, &all[0]), "another subscription, another secret");

    let deliveries = eventually(
        "both deliveries marked delivered",
        || h.deliveries(&subscription.subscription_id),
        |d| d.len() == 2 && d.iter().all(|d| d.state == pb::DeliveryState::Delivered as i32),
    )
    .await;
    assert_eq!(deliveries[0].event_type, "points.spent", "newest first");
    assert_eq!(deliveries[1].attempts.len(), 1);
    assert_eq!(deliveries[1].attempts[0].status_code, 200);
    assert_eq!(deliveries[1].attempts[0].response, "answer 200");
    assert_eq!(deliveries[1].event_id, crm[0].id);
    h.stop().await;
}

async fn failures_are_retried_on_schedule_then_given_up(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Status(500), Answer::Status(503)]);
    let (subscription, _) = h.subscribe(&receiver.url("/flaky"), &[], false).await;
    h.earn("anna", 10, "earn-1").await;
    eventually("the first attempt", || async { receiver.received() }, |r| r.len() == 1).await;
    // The second attempt waits for its delay (10 s ± 20 %) on the service's clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "no retry before its time");
    h.advance(13 * MICROS_PER_SECOND);
    eventually("the second attempt", || async { receiver.received() }, |r| r.len() == 2).await;
    h.advance(73 * MICROS_PER_SECOND);
    eventually("the third attempt", || async { receiver.received() }, |r| r.len() == 3).await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.id == received[0].id), "one webhook-id for every attempt");
    let delivery = eventually(
        "the delivery delivered at the third attempt",
        || h.deliveries(&subscription.subscription_id),
        |d| d.first().is_some_and(|d| d.state == pb::DeliveryState::Delivered as i32),
    )
    .await
    .remove(0);
    let codes: Vec<i32> = delivery.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [500, 503, 200]);

    // An endpoint that always fails: three attempts, then given up; Redeliver sends it once more.
    receiver.otherwise(Answer::Status(500));
    h.earn("ben", 10, "earn-2").await;
    eventually("ben's first attempt", || async { receiver.received() }, |r| r.len() == 4).await;
    h.advance(13 * MICROS_PER_SECOND);
    eventually("ben's second attempt", || async { receiver.received() }, |r| r.len() == 5).await;
    h.advance(73 * MICROS_PER_SECOND);
    let given_up = eventually(
        "ben's delivery given up",
        || h.deliveries(&subscription.subscription_id),
        |d| d.first().is_some_and(|d| d.state == pb::DeliveryState::Failed as i32),
    )
    .await
    .remove(0);
    assert_eq!(given_up.attempts.len(), 3);
    assert!(given_up.next_attempt_at.is_none());
    h.advance(3_600 * MICROS_PER_SECOND);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 6, "nothing after the schedule is spent");

    receiver.otherwise(Answer::Status(204));
    let request = pb::RedeliverRequest {
        program_id: "shop".into(),
        subscription_id: subscription.subscription_id.clone(),
        event_id: given_up.event_id.clone(),
        idempotency_key: "again".into(),
    };
    let again = h.webhooks.redeliver(request.clone()).await.unwrap().into_inner().delivery.unwrap();
    assert_eq!(again.event_id, given_up.event_id);
    assert_ne!(again.delivery_id, given_up.delivery_id);
    let replay = h.webhooks.redeliver(request).await.unwrap().into_inner().delivery.unwrap();
    assert_eq!(replay.delivery_id, again.delivery_id, "a retried Redeliver is the same redelivery");
    let last = eventually("the redelivery", || async { receiver.received() }, |r| r.len() == 7).await;
    assert_eq!(last[6].id, given_up.event_id);
    h.stop().await;
}

async fn redirects_timeouts_and_private_addresses_fail(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Redirect]);
    let (redirected, _) = h.subscribe(&receiver.url("/moved"), &[], false).await;
    h.earn("anna", 10, "earn-1").await;
    let attempt = eventually(
        "the redirected attempt",
        || h.deliveries(&redirected.subscription_id),
        |d| d.first().is_some_and(|d| !d.attempts.is_empty()),
    )
    .await
    .remove(0)
    .attempts
    .remove(0);
    assert_eq!(attempt.status_code, 307);
    assert_eq!(attempt.error, "redirects are not followed");
    assert!(receiver.at("/elsewhere").is_empty(), "the redirect was not followed");
    h.stop().await;

    // An endpoint slower than the timeout (500 ms here).
    let mut h = Harness::start(backend).await;
    receiver.script(&[Answer::Slow(Duration::from_secs(2))]);
    let (slow, _) = h.subscribe(&receiver.url("/slow"), &[], false).await;
    h.earn("anna", 10, "earn-1").await;
    let attempt = eventually(
        "the timed-out attempt",
        || h.deliveries(&slow.subscription_id),
        |d| d.first().is_some_and(|d| !d.attempts.is_empty()),
    )
    .await
    .remove(0)
    .attempts
    .remove(0);
    assert_eq!((attempt.status_code, attempt.error.as_str()), (0, "timed out"));
    assert!(attempt.latency_ms < 1_500, "{attempt:?}");
    h.stop().await;

    // Without the operator's allowance, loopback is out of reach, by address and by name.
    let mut h = Harness::start_with(backend, &["--allowed-networks", "10.9.0.0/16"]).await;
    let before = receiver.received().len();
    let (by_address, _) = h.subscribe(&receiver.url("/private"), &[], false).await;
    let by_name = format!("http://localhost:{}/private", receiver.addr.port());
    let (by_name, _) = h.subscribe(&by_name, &[], false).await;
    h.earn("anna", 10, "earn-1").await;
    for subscription in [by_address, by_name] {
        let attempt = eventually(
            "the blocked attempt",
            || h.deliveries(&subscription.subscription_id),
            |d| d.first().is_some_and(|d| !d.attempts.is_empty()),
        )
        .await
        .remove(0)
        .attempts
        .remove(0);
        assert_eq!(attempt.status_code, 0);
        assert!(attempt.error.contains("resolves only to addresses deliveries may not reach"), "{attempt:?}");
    }
    assert_eq!(receiver.received().len(), before, "nothing reached the private address");
    h.stop().await;

    // An answer that is not text is kept without what PostgreSQL cannot hold, and the next ones follow.
    let mut h = Harness::start(backend).await;
    receiver.script(&[Answer::Binary]);
    let (binary, _) = h.subscribe(&receiver.url("/binary"), &[], false).await;
    h.earn("anna", 10, "earn-1").await;
    h.earn("anna", 20, "earn-2").await;
    let deliveries = eventually(
        "both deliveries marked delivered",
        || h.deliveries(&binary.subscription_id),
        |d| d.len() == 2 && d.iter().all(|d| d.state == pb::DeliveryState::Delivered as i32),
    )
    .await;
    let answers: Vec<&str> = deliveries.iter().map(|d| d.attempts[0].response.as_str()).collect();
    assert!(answers.contains(&"ok\u{1}done"), "{answers:?}");
    h.stop().await;
}

async fn ordered_subscriptions_deliver_each_customers_events_in_order(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Status(500)]);
    h.subscribe(&receiver.url("/ordered"), &[], true).await;
    h.earn("anna", 10, "earn-1").await;
    eventually("anna's first event, refused", || async { receiver.received() }, |r| r.len() == 1).await;
    h.earn("anna", 20, "earn-2").await;
    h.earn("ben", 30, "earn-3").await;
    // Ben's event does not wait for Anna's; Anna's second waits for her first.
    let received = eventually("ben's event", || async { receiver.received() }, |r| r.len() == 2).await;
    assert_eq!(received[1].body["data"]["customer_id"], "ben");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "anna's second event waits for her first");
    h.advance(13 * MICROS_PER_SECOND);
    let received = eventually("anna's events, in order", || async { receiver.received() }, |r| r.len() == 4).await;
    let anna: Vec<i64> = received
        .iter()
        .filter(|r| r.body["data"]["customer_id"] == "anna")
        .map(|r| r.body["data"]["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(anna, [10, 10, 20]);
    h.stop().await;
}

async fn a_rotated_secret_signs_beside_the_old_one_during_the_overlap(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let receiver = Receiver::start().await;
    let (subscription, old) = h.subscribe(&receiver.url("/rotating"), &[], false).await;
    let request = pb::RotateSecretRequest {
        program_id: "shop".into(),
        subscription_id: subscription.subscription_id.clone(),
        overlap_seconds: 3_600,
        idempotency_key: "rotate-1".into(),
    };
    let rotated = h.webhooks.rotate_secret(request.clone()).await.unwrap().into_inner();
    let new = rotated.secret.clone();
    assert_ne!(new, old);
    assert_eq!(
        h.webhooks.rotate_secret(request).await.unwrap().into_inner().secret,
        new,
        "a replay shows the same secret"
    );
    let subscription = rotated.subscription.unwrap();
    assert_eq!(subscription.previous_secret_until.unwrap().seconds, T0 / MICROS_PER_SECOND + 3_600);

    h.earn("anna", 10, "earn-1").await;
    let during = eventually("a delivery during the overlap", || async { receiver.received() }, |r| r.len() == 1).await;
    assert_eq!(during[0].signatures.len(), 2);
    assert!(signed_by(&new, &during[0]) && signed_by(&old, &during[0]));

    h.advance(3_601 * MICROS_PER_SECOND);
    h.earn("anna", 10, "earn-2").await;
    let after = eventually("a delivery after the overlap", || async { receiver.received() }, |r| r.len() == 2).await;
    assert_eq!(after[1].signatures.len(), 1);
    assert!(signed_by(&new, &after[1]) && !signed_by(&old, &after[1]));
    h.stop().await;
}

async fn an_endpoint_failing_for_days_is_disabled_and_the_shop_told(backend: Backend) {
    let mut h =
        Harness::start_with(backend, &["--disable-after-days", "1", "--retry-schedule", "12h,12h,12h,12h"]).await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Answer::Status(502));
    let (failing, _) = h.subscribe(&receiver.url("/down"), &["points.earned"], false).await;
    h.subscribe(&receiver.url("/ops"), &["subscription.disabled"], false).await;
    h.earn("anna", 10, "earn-1").await;
    eventually("the first failure", || async { receiver.at("/down") }, |r| r.len() == 1).await;
    let failing_since =
        eventually("the failing state", || h.subscription(&failing.subscription_id), |s| s.failing_since.is_some())
            .await;
    assert_eq!(failing_since.status, pb::SubscriptionStatus::Enabled as i32, "one failure does not disable");
    h.advance(15 * 3_600 * MICROS_PER_SECOND);
    eventually("the second failure", || async { receiver.at("/down") }, |r| r.len() == 2).await;
    h.advance(15 * 3_600 * MICROS_PER_SECOND);
    eventually("the third failure", || async { receiver.at("/down") }, |r| r.len() == 3).await;
    let disabled = eventually(
        "the subscription disabled",
        || h.subscription(&failing.subscription_id),
        |s| s.status == pb::SubscriptionStatus::Failing as i32,
    )
    .await;
    receiver.otherwise(Answer::Status(200));
    let ops = eventually("the shop told", || async { receiver.at("/ops") }, |r| !r.is_empty()).await;
    assert_eq!(ops[0].body["type"], "subscription.disabled");
    assert_eq!(ops[0].body["data"]["subscription_id"], failing.subscription_id.as_str());

    // Nothing goes to a failing endpoint; enabling it again delivers what waited.
    h.earn("anna", 10, "earn-2").await;
    h.advance(15 * 3_600 * MICROS_PER_SECOND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.at("/down").len(), 3);
    let request = pb::UpdateSubscriptionRequest {
        program_id: "shop".into(),
        subscription_id: failing.subscription_id.clone(),
        url: receiver.url("/down"),
        event_types: vec!["points.earned".into()],
        description: "back".into(),
        ordered: false,
        enabled: true,
        expected_version: disabled.version,
        idempotency_key: "enable".into(),
    };
    let enabled = h.webhooks.update_subscription(request.clone()).await.unwrap().into_inner().subscription.unwrap();
    assert_eq!(enabled.status, pb::SubscriptionStatus::Enabled as i32);
    assert!(enabled.failing_since.is_none());
    eventually("the waiting delivery", || async { receiver.at("/down") }, |r| r.len() == 4).await;
    // A stale version is refused.
    let stale = pb::UpdateSubscriptionRequest { idempotency_key: "stale".into(), ..request };
    let error = h.webhooks.update_subscription(stale).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    h.stop().await;
}

async fn a_restarted_service_delivers_what_it_had_not(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Answer::Status(503));
    h.subscribe(&receiver.url("/later"), &[], false).await;
    for i in 0..10 {
        h.earn(&format!("customer-{i}"), 10 + i, &format!("earn-{i}")).await;
    }
    eventually("ten refused attempts", || async { receiver.received() }, |r| r.len() >= 10).await;
    h.restart_webhooks().await;
    for i in 10..20 {
        h.earn(&format!("customer-{i}"), 10 + i, &format!("earn-{i}")).await;
    }
    receiver.otherwise(Answer::Status(200));
    h.advance(13 * MICROS_PER_SECOND);
    let delivered = eventually(
        "every event delivered",
        || async {
            let received = receiver.received();
            let mut amounts: Vec<i64> = received
                .iter()
                .filter(|r| r.path == "/later")
                .map(|r| r.body["data"]["amount"].as_i64().unwrap())
                .collect();
            amounts.sort_unstable();
            amounts.dedup();
            amounts
        },
        |amounts| amounts.len() == 20,
    )
    .await;
    assert_eq!(delivered, (10..30).collect::<Vec<i64>>());
    h.stop().await;
}

/// Points that expire at `expires_at`.
async fn earn_expiring(h: &mut Harness, customer: &str, points: i64, expires_at: Micros, key: &str) {
    let request = points::EarnRequest {
        program_id: "shop".into(),
        customer_id: customer.into(),
        points,
        reason: "goodwill".into(),
        idempotency_key: key.into(),
        pending_until: None,
        expires_at: Some(loyalty_common::clock::to_timestamp(expires_at)),
    };
    h.points.earn(request).await.unwrap();
}

async fn expiring_points_are_reminded_once_per_lot(backend: Backend) {
    let mut h = Harness::start_with(backend, &["--reminder-interval-secs", "1"]).await;
    let receiver = Receiver::start().await;
    // The program reminds 7 days ahead.
    let settings = points::ProgramSettings {
        earn_rate: Some(points::EarnRate { points: 1, per_amount_minor: 100 }),
        rounding: points::Rounding::Down as i32,
        expiry: Some(points::ExpiryPolicy { kind: points::ExpiryPolicyKind::Never as i32, count: 0 }),
        expiry_reminder_days: 7,
        ..Default::default()
    };
    let request = points::PutProgramSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin".into(),
        idempotency_key: "settings".into(),
        expected_version: None,
    };
    h.points.put_program_settings(request).await.unwrap();
    h.subscribe(&receiver.url("/remind"), &["points.expiring_soon"], false).await;
    // A second replica on the same database runs the job too (PostgreSQL; SQLite is one process).
    let args: Vec<&str> = h.flags.iter().map(String::as_str).collect();
    let second = match backend {
        Backend::Postgres => Some(h.sandbox.start::<WebhooksServer>(&h.webhooks_url, &args).await),
        Backend::Sqlite => None,
    };

    let day = MICROS_PER_DAY;
    earn_expiring(&mut h, "anna", 500, T0 + 30 * day, "e1").await;
    earn_expiring(&mut h, "anna", 200, T0 + 31 * day, "e2").await;
    earn_expiring(&mut h, "ben", 100, T0 + 31 * day, "e3").await;
    h.spend("anna", 100, "s1").await;
    // Seven days before the first lot expires (and an hour): what is left of it.
    h.advance(23 * day + 3_600 * MICROS_PER_SECOND);
    let first = eventually("anna's first reminder", || async { receiver.at("/remind") }, |r| !r.is_empty()).await;
    assert_eq!(first[0].body["type"], "points.expiring_soon");
    assert_eq!(first[0].body["data"]["customer_id"], "anna");
    assert_eq!(first[0].body["data"]["points"], 400, "the lot's points less the spend");
    assert_eq!(first[0].body["data"]["reminder_days"], 7);
    assert_eq!(first[0].body["data"]["expires_at"], loyalty_common::clock::to_timestamp(T0 + 30 * day).to_string());
    // The job runs again on both replicas, and after a restart: still one reminder.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    h.restart_webhooks().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.at("/remind").len(), 1, "one reminder per lot");

    // Anna spends what would have expired next: only ben is reminded of the lots of day 31.
    h.spend("anna", 600, "s2").await;
    h.advance(day);
    let second_round = eventually("ben's reminder", || async { receiver.at("/remind") }, |r| r.len() >= 2).await;
    assert_eq!(second_round[1].body["data"]["customer_id"], "ben");
    assert_eq!(second_round[1].body["data"]["points"], 100);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(receiver.at("/remind").len(), 2, "nothing for points already spent, nothing twice");
    if let Some(second) = second {
        second.shutdown().await.unwrap();
    }
    h.stop().await;
}

async fn segment_changes_are_delivered(backend: Backend) {
    let mut h = Harness::start_with_insights(backend).await;
    let receiver = Receiver::start().await;
    h.subscribe(&receiver.url("/segments"), &["segment.changed"], true).await;
    let order = |order_id: &str| points::EarnForOrderRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        order_id: order_id.into(),
        amount_minor: 5_000,
        currency: "EUR".into(),
        occurred_at: None,
    };
    h.points.earn_for_order(order("o-1")).await.unwrap();
    let first = eventually("anna's first segment", || async { receiver.at("/segments") }, |r| !r.is_empty()).await;
    assert_eq!(first[0].body["type"], "segment.changed");
    assert_eq!(first[0].body["data"]["to_segment"], "new");
    assert!(first[0].body["data"].get("from_segment").is_none(), "a first segment comes from none");
    h.advance(MICROS_PER_DAY);
    h.points.earn_for_order(order("o-2")).await.unwrap();
    let both = eventually("anna's second segment", || async { receiver.at("/segments") }, |r| r.len() >= 2).await;
    assert_eq!(
        (both[1].body["data"]["from_segment"].as_str(), both[1].body["data"]["to_segment"].as_str()),
        (Some("new"), Some("active"))
    );
    assert!(both[1].body["data"]["sequence"].as_i64() > both[0].body["data"]["sequence"].as_i64());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.at("/segments").len(), 2, "each change once");
    h.stop().await;
}

/// The events of the tiers, rewards and referral services' outboxes reach
/// the subscriptions that want them, signed, each once.
async fn tier_reward_and_referral_events_are_delivered(backend: Backend) {
    let mut h = Harness::start_with_outboxes(backend).await;
    let receiver = Receiver::start().await;
    let types = ["tier.upgraded", "reward.redeemed", "voucher.consumed", "redemption.cancelled", "referral.completed"];
    let (_, secret) = h.subscribe(&receiver.url("/crm"), &types, false).await;
    let peer = |i: usize| testing::channel(h.outbox_servers[i].bind_addr());
    let (mut rewards, mut referral, mut tiers) = (
        RewardsServiceClient::new(peer(0).await),
        ReferralServiceClient::new(peer(1).await),
        TiersServiceClient::new(peer(2).await),
    );
    let tier = |id: &str, threshold: i64| tiers::Tier {
        tier_id: id.into(),
        name: id.to_uppercase(),
        threshold,
        multiplier_bp: 10_000,
        ..Default::default()
    };
    let ladder = tiers::Ladder {
        tiers: vec![tier("silver", 0), tier("gold", 1_000)],
        window: Some(tiers::Window { kind: tiers::WindowKind::Lifetime as i32, days: 0 }),
        downgrade: Some(tiers::DowngradePolicy { kind: tiers::DowngradeKind::Immediate as i32, grace_days: 0 }),
        ..Default::default()
    };
    let put = tiers::PutLadderRequest {
        program_id: "shop".into(),
        ladder: Some(ladder),
        actor: "admin".into(),
        idempotency_key: "ladder".into(),
        expected_version: None,
    };
    tiers.put_ladder(put).await.unwrap();
    let reward = rewards::Reward {
        name: "5 EUR off".into(),
        kind: rewards::RewardKind::FixedDiscount as i32,
        amount_minor: 500,
        currency: "EUR".into(),
        point_cost: 300,
        voucher_validity_days: 90,
        ..Default::default()
    };
    let create = rewards::CreateRewardRequest {
        program_id: "shop".into(),
        reward: Some(reward),
        actor: "admin".into(),
        idempotency_key: "reward".into(),
    };
    let reward_id = rewards.create_reward(create).await.unwrap().into_inner().reward.unwrap().reward_id;
    let settings = referral::ReferralSettings {
        enabled: true,
        referrer_points: 500,
        referee_points: 250,
        minimum_order_minor: 1_000,
        cap_count: 10,
        cap_period_days: 30,
        attribution_window_days: 30,
        clawback_window_days: 14,
        version: 0,
        referee_reward_id: String::new(),
        referrer_reward_id: String::new(),
    };
    let put = referral::PutReferralSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin".into(),
        idempotency_key: "settings".into(),
        expected_version: None,
    };
    referral.put_referral_settings(put).await.unwrap();

    // Anna climbs to gold, redeems twice, uses one voucher and gives the other back; Ben, whom she referred, orders.
    h.earn("anna", 1_200, "e1").await;
    let mut vouchers = Vec::new();
    for key in ["r1", "r2"] {
        let redeem = |key: &str| rewards::RedeemRequest {
            program_id: "shop".into(),
            customer_id: "anna".into(),
            reward_id: reward_id.clone(),
            idempotency_key: key.into(),
        };
        vouchers.push(rewards.redeem(redeem(key)).await.unwrap().into_inner().redemption.unwrap());
    }
    let consume = rewards::ConsumeVoucherRequest {
        program_id: "shop".into(),
        code: vouchers[0].voucher_code.clone(),
        order_id: "o-9".into(),
        customer_id: String::new(),
    };
    rewards.consume_voucher(consume).await.unwrap();
    let cancel = rewards::CancelRedemptionRequest {
        program_id: "shop".into(),
        redemption_id: vouchers[1].redemption_id.clone(),
        idempotency_key: "c1".into(),
        actor: "support@shop".into(),
    };
    rewards.cancel_redemption(cancel).await.unwrap();
    let code = referral
        .get_or_create_code(referral::GetOrCreateCodeRequest { program_id: "shop".into(), customer_id: "anna".into() })
        .await
        .unwrap()
        .into_inner()
        .code;
    let signup = referral::RecordSignupRequest {
        program_id: "shop".into(),
        code,
        referee_customer_id: "ben".into(),
        idempotency_key: "signup-ben".into(),
    };
    referral.record_signup(signup).await.unwrap();
    let order = points::EarnForOrderRequest {
        program_id: "shop".into(),
        customer_id: "ben".into(),
        order_id: "o-ben".into(),
        amount_minor: 5_000,
        currency: "EUR".into(),
        occurred_at: None,
    };
    h.points.earn_for_order(order).await.unwrap();

    // tier.upgraded twice (none → silver at the first evaluation is an
    // upgrade too, as is silver → gold) is not assumed: one at least, to gold.
    let wanted = |r: &Vec<Received>| {
        let of = |t: &str| r.iter().filter(|d| d.body["type"] == t).count();
        of("reward.redeemed") == 2
            && of("voucher.consumed") == 1
            && of("redemption.cancelled") == 1
            && of("referral.completed") == 1
            && r.iter().any(|d| d.body["type"] == "tier.upgraded" && d.body["data"]["to_tier_id"] == "gold")
            && r.iter().any(|d| d.body["type"] == "tier.upgraded" && d.body["data"]["customer_id"] == "ben")
    };
    let got = eventually("every outbox event", || async { receiver.at("/crm") }, wanted).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_later = receiver.at("/crm");
    let later_ids: std::collections::HashSet<&str> = got_later.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        (later_ids.len(), got_later.len()),
        (got.len(), got.len()),
        "each event once, nothing after: {:?}",
        got_later.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    for delivery in &got {
        assert!(signed_by(&secret, delivery), "signed: {}", delivery.raw);
        assert!(types.contains(&delivery.body["type"].as_str().unwrap()), "only what was asked for: {}", delivery.raw);
        assert_eq!((&delivery.body["program_id"], &delivery.body["version"]), (&"shop".into(), &"v1".into()));
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "one webhook-id per event");
    let of = |t: &str| got.iter().find(|d| d.body["type"] == t).unwrap().body["data"].clone();
    let consumed = of("voucher.consumed");
    assert_eq!((&consumed["customer_id"], &consumed["order_id"]), (&"anna".into(), &"o-9".into()));
    assert_eq!(consumed["voucher_code"], vouchers[0].voucher_code.as_str());
    assert_eq!(of("redemption.cancelled")["redemption_id"], vouchers[1].redemption_id.as_str());
    let completed = of("referral.completed");
    assert_eq!(
        (&completed["customer_id"], &completed["referee_customer_id"], &completed["referrer_points"]),
        (&"anna".into(), &"ben".into(), &500.into())
    );
    h.stop().await;
}

async fn settled_deliveries_are_forgotten_after_their_retention(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let receiver = Receiver::start().await;
    let (subscription, _) = h.subscribe(&receiver.url("/kept"), &[], false).await;
    h.earn("anna", 10, "old").await;
    eventually(
        "the old delivery",
        || h.deliveries(&subscription.subscription_id),
        |d| d.len() == 1 && d[0].state == pb::DeliveryState::Delivered as i32,
    )
    .await;
    h.advance(31 * MICROS_PER_DAY);
    h.earn("anna", 20, "new").await;
    eventually(
        "the new delivery",
        || h.deliveries(&subscription.subscription_id),
        |d| d.len() == 2 && d[0].state == pb::DeliveryState::Delivered as i32,
    )
    .await;
    // The service's own job runs hourly; its store, on the same database and clock, does the same now.
    let database =
        loyalty_common::db::connect(&h.webhooks_url, loyalty_common::db::PoolSettings::new(2, 5_000)).await.unwrap();
    let store = loyalty_webhooks::store::WebhooksStore::new(database, std::sync::Arc::new(h.sandbox.clock.clone()));
    let purged = store.purge(store.now() - 30 * MICROS_PER_DAY).await.unwrap();
    assert_eq!(purged, 1);
    let left = h.deliveries(&subscription.subscription_id).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].payload.contains("\"amount\":20"), "the recent one stays: {left:?}");
    store.database().pool.close().await;
    h.stop().await;
}

async fn members_with_points_get_a_monthly_statement(backend: Backend) {
    // T0 is 2025-11-24: the statement for November goes out from 2025-12-01.
    let mut h = Harness::start_with(backend, &["--statement-interval-secs", "1"]).await;
    let receiver = Receiver::start().await;
    h.subscribe(&receiver.url("/statements"), &["points.statement"], false).await;
    h.earn("anna", 500, "e1").await;
    h.earn("ben", 100, "e2").await;
    h.spend("ben", 100, "s1").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(receiver.at("/statements").is_empty(), "no statement before the month is over");
    h.advance(7 * MICROS_PER_DAY + 3_600 * MICROS_PER_SECOND);
    let sent = eventually("anna's statement", || async { receiver.at("/statements") }, |r| !r.is_empty()).await;
    let data = &sent[0].body["data"];
    assert_eq!(sent[0].body["type"], "points.statement");
    assert_eq!((data["customer_id"].as_str(), data["period"].as_str()), (Some("anna"), Some("2025-11")));
    assert_eq!((data["available"].as_i64(), data["pending"].as_i64()), (Some(500), Some(0)));
    // Again on the next rounds and after a restart: one statement per member and month, none for ben (no points).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    h.restart_webhooks().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let sent = receiver.at("/statements");
    assert_eq!(sent.len(), 1, "{sent:?}");
    h.stop().await;
}

async fn bad_requests_are_refused_field_by_field(backend: Backend) {
    use tonic_types::StatusExt;
    let mut h = Harness::start(backend).await;
    let request = pb::CreateSubscriptionRequest {
        program_id: "shop".into(),
        url: "ftp://shop.example/".into(),
        event_types: vec!["points.stolen".into()],
        description: String::new(),
        ordered: false,
        disabled: false,
        idempotency_key: String::new(),
    };
    let error = h.webhooks.create_subscription(request).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        error.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["idempotency_key", "url", "event_types[0]"]);

    let missing = pb::GetSubscriptionRequest { program_id: "shop".into(), subscription_id: "sub_nope".into() };
    assert_eq!(h.webhooks.get_subscription(missing).await.unwrap_err().code(), Code::NotFound);
    let types = h.webhooks.list_event_types(pb::ListEventTypesRequest::default()).await.unwrap().into_inner();
    assert!(types.event_types.iter().any(|t| t.name == "points.expired"));

    // Another program sees none of this one's subscriptions.
    let receiver = Receiver::start().await;
    let (mine, _) = h.subscribe(&receiver.url("/mine"), &[], false).await;
    let theirs = pb::GetSubscriptionRequest { program_id: "other".into(), subscription_id: mine.subscription_id };
    assert_eq!(h.webhooks.get_subscription(theirs).await.unwrap_err().code(), Code::NotFound);
    let list = pb::ListSubscriptionsRequest { program_id: "other".into(), ..Default::default() };
    assert!(h.webhooks.list_subscriptions(list).await.unwrap().into_inner().subscriptions.is_empty());
    h.stop().await;
}

loyalty_common::on_both_backends!(
    ledger_entries_are_delivered_signed,
    failures_are_retried_on_schedule_then_given_up,
    redirects_timeouts_and_private_addresses_fail,
    ordered_subscriptions_deliver_each_customers_events_in_order,
    a_rotated_secret_signs_beside_the_old_one_during_the_overlap,
    an_endpoint_failing_for_days_is_disabled_and_the_shop_told,
    a_restarted_service_delivers_what_it_had_not,
    expiring_points_are_reminded_once_per_lot,
    segment_changes_are_delivered,
    settled_deliveries_are_forgotten_after_their_retention,
    members_with_points_get_a_monthly_statement,
    bad_requests_are_refused_field_by_field,
    tier_reward_and_referral_events_are_delivered,
);
