//! The insights service end to end: a real points service and a real
//! insights service following its ledger on loopback, one manual clock, on
//! SQLite and on PostgreSQL. Every number is worked out by hand below.

use std::time::Duration;

use loyalty_common::clock::{MICROS_PER_DAY, Micros, to_timestamp};
use loyalty_common::server::RunningService;
use loyalty_common::testing::{self, Backend, Sandbox};
use loyalty_insights::InsightsServer;
use loyalty_points::PointsServer;
use loyalty_proto::insights::v1 as pb;
use loyalty_proto::insights::v1::insights_service_client::InsightsServiceClient;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// 2025-11-24T00:00:00Z.
const T0: Micros = 1_763_942_400_000_000;
const DAY: Micros = MICROS_PER_DAY;

struct Harness {
    points: PointsServiceClient<Channel>,
    insights: InsightsServiceClient<Channel>,
    sandbox: Sandbox,
    points_server: RunningService,
    insights_server: Option<RunningService>,
    replays: Vec<RunningService>,
    insights_url: String,
}

/// An insights service on `url`, following `points`, and a client of it.
async fn start_insights(
    sandbox: &Sandbox,
    points: &RunningService,
    url: &str,
) -> (RunningService, InsightsServiceClient<Channel>) {
    let points = points.bind_addr().to_string();
    let server =
        sandbox.start::<InsightsServer>(url, &["--points-addr", &points, "--review-interval-secs", "3600"]).await;
    let client = InsightsServiceClient::new(testing::channel(server.bind_addr()).await);
    (server, client)
}

/// Asks `ask` every 20 ms until `done` says its answer is the one awaited,
/// for at most 10 s; then fails naming `what`.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut ask: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut last = ask().await;
    for _ in 0..500 {
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = ask().await;
    }
    panic!("{what} never came; the last answer: {last:?}");
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        let mut sandbox = Sandbox::new(backend, T0);
        let (points_url, insights_url) = (sandbox.database("points").await, sandbox.database("insights").await);
        let points_server = sandbox.start::<PointsServer>(&points_url, &[]).await;
        let (insights_server, insights) = start_insights(&sandbox, &points_server, &insights_url).await;
        Self {
            points: PointsServiceClient::new(testing::channel(points_server.bind_addr()).await),
            insights,
            sandbox,
            points_server,
            insights_server: Some(insights_server),
            replays: Vec::new(),
            insights_url,
        }
    }

    async fn start_insights(&mut self) {
        let (server, client) = start_insights(&self.sandbox, &self.points_server, &self.insights_url).await;
        self.insights = client;
        self.insights_server = Some(server);
    }

    /// A second insights service with an empty database, reading the same ledger from the start.
    async fn replay(&mut self) -> InsightsServiceClient<Channel> {
        let url = self.sandbox.database("insights-replay").await;
        let (server, client) = start_insights(&self.sandbox, &self.points_server, &url).await;
        self.replays.push(server);
        client
    }

    async fn stop(mut self) {
        if let Some(server) = self.insights_server.take() {
            server.shutdown().await.unwrap();
        }
        for replay in self.replays {
            replay.shutdown().await.unwrap();
        }
        self.points_server.shutdown().await.unwrap();
        self.sandbox.stop().await;
    }

    fn at_day(&self, day: i64) {
        self.sandbox.clock.set(T0 + day * DAY);
    }

    /// An order placed now (the clock's day); the points it earned.
    async fn order(&mut self, customer: &str, order_id: &str, amount_minor: i64) -> i64 {
        let request = points::EarnForOrderRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            order_id: order_id.into(),
            amount_minor,
            currency: "EUR".into(),
            occurred_at: None,
        };
        self.points.earn_for_order(request).await.unwrap().into_inner().points
    }

    /// Points by hand, expiring at `expires_at` if given.
    async fn earn(&mut self, customer: &str, points: i64, expires_at: Option<Micros>, key: &str) {
        let request = points::EarnRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            points,
            reason: "goodwill".into(),
            idempotency_key: key.into(),
            pending_until: None,
            expires_at: expires_at.map(to_timestamp),
        };
        self.points.earn(request).await.unwrap();
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

    /// Available and pending points together.
    async fn held(&mut self, customer: &str) -> i64 {
        let request = points::GetBalanceRequest { program_id: "shop".into(), customer_id: customer.into() };
        let balance = self.points.get_balance(request).await.unwrap().into_inner().balance.unwrap();
        balance.available + balance.pending
    }

    async fn kpis(&mut self, from: i64, to: i64, granularity: pb::Granularity) -> pb::GetProgramKpisResponse {
        let request = pb::GetProgramKpisRequest {
            program_id: "shop".into(),
            from: Some(to_timestamp(T0 + from * DAY)),
            to: Some(to_timestamp(T0 + to * DAY)),
            granularity: granularity as i32,
        };
        self.insights.get_program_kpis(request).await.unwrap().into_inner()
    }

    async fn refund(&mut self, order_id: &str, amount_minor: i64) {
        let request = points::RefundOrderRequest {
            program_id: "shop".into(),
            order_id: order_id.into(),
            refunded_amount_minor: amount_minor,
            idempotency_key: format!("refund-{order_id}-{amount_minor}"),
        };
        self.points.refund_order(request).await.unwrap();
    }

    async fn insight_from(client: &mut InsightsServiceClient<Channel>, customer: &str) -> pb::CustomerInsight {
        let request = pb::GetCustomerInsightRequest { program_id: "shop".into(), customer_id: customer.into() };
        client.get_customer_insight(request).await.unwrap().into_inner().insight.unwrap()
    }

    async fn insight(&mut self, customer: &str) -> pb::CustomerInsight {
        Self::insight_from(&mut self.insights, customer).await
    }

    /// Waits (bounded) until `client` has learnt `orders` orders and `spend` for the customer.
    async fn caught_up(client: &mut InsightsServiceClient<Channel>, customer: &str, orders: i64, spend: i64) {
        for _ in 0..500 {
            let insight = Self::insight_from(client, customer).await;
            if insight.order_count == orders && insight.spend_minor == spend {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("insights never counted {orders} orders and {spend} for {customer}");
    }

    async fn counts(&mut self) -> Vec<(i32, i64)> {
        let request = pb::GetSegmentCountsRequest { program_id: "shop".into() };
        let counts = self.insights.get_segment_counts(request).await.unwrap().into_inner().counts;
        counts.into_iter().map(|c| (c.segment, c.customers)).collect()
    }

    async fn list(&mut self, segment: pb::Segment, order_by: pb::CustomerOrder, page_size: i32) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListCustomersRequest {
                program_id: "shop".into(),
                segment: segment as i32,
                order_by: order_by as i32,
                page_size,
                page_token: page_token.clone(),
            };
            let page = self.insights.list_customers(request).await.unwrap().into_inner();
            pages.push(page.customers.into_iter().map(|c| c.customer_id).collect());
            if page.next_page_token.is_empty() {
                return pages;
            }
            page_token = page.next_page_token;
        }
    }

    /// The example program: five customers over fifty days (see the test).
    async fn five_customers(&mut self) {
        self.at_day(0);
        self.order("anna", "a1", 10_000).await;
        self.order("ben", "b1", 20_000).await;
        self.order("dan", "d1", 8_000).await;
        self.order("eve", "e1", 6_000).await;
        self.at_day(1);
        self.order("eve", "e2", 4_000).await;
        self.refund("e1", 1_000).await;
        self.refund("d1", 8_000).await;
        self.at_day(5);
        self.order("ben", "b2", 10_000).await;
        self.at_day(20);
        self.order("anna", "a2", 5_000).await;
        self.at_day(40);
        self.order("anna", "a3", 3_000).await;
        self.at_day(45);
        self.order("cara", "c1", 1_000).await;
        for (customer, orders, spend) in
            [("anna", 3, 18_000), ("ben", 2, 30_000), ("cara", 1, 1_000), ("dan", 0, 0), ("eve", 2, 9_000)]
        {
            Self::caught_up(&mut self.insights, customer, orders, spend).await;
        }
    }
}

use pb::Segment::{Active, AtRisk, Churned, Loyal, New};

fn counts(new: i64, active: i64, loyal: i64, at_risk: i64, churned: i64) -> Vec<(i32, i64)> {
    vec![
        (New as i32, new),
        (Active as i32, active),
        (Loyal as i32, loyal),
        (AtRisk as i32, at_risk),
        (Churned as i32, churned),
    ]
}

/// The example, worked out by hand. At day 50:
/// - anna: 100.00 (day 0), 50.00 (day 20), 30.00 (day 40): 3 orders, 180.00,
///   last 10 days ago; loyal (3 orders within 90 days, until day 90);
///   lifetime value 18 000 × 1095 / 50 days = 394 200.
/// - ben: 200.00 (day 0), 100.00 (day 5): active (45 days quiet), 657 000.
/// - cara: 10.00 (day 45): new; tenure 5 days counts as 30: 1000 × 1095 / 30 = 36 500.
/// - dan: 80.00 (day 0), refunded in full: no orders, new, nothing ranked.
/// - eve: 60.00 (day 0) with 10.00 refunded, 40.00 (day 1): 2 orders, 90.00,
///   49 days quiet: active; 9000 × 1095 / 50 = 197 100.
///
/// RFM among the four with orders (`below` customers score lower, of 4):
/// spend cara 0 → 1, eve 1 → 2, anna 2 → 3, ben 3 → 4; orders cara 0 → 1,
/// ben and eve 1 → 2, anna 3 → 4; recency (older ranks lower) cara 3 → 4,
/// anna 2 → 3, ben 1 → 2, eve 0 → 1.
async fn a_small_program_adds_up_as_worked_out_by_hand(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.five_customers().await;
    h.at_day(50);
    let anna = h.insight("anna").await;
    assert_eq!(
        (anna.order_count, anna.spend_minor, anna.average_order_minor, anna.days_since_last_order),
        (3, 18_000, 6_000, 10)
    );
    assert_eq!(anna.first_order_at, Some(to_timestamp(T0)));
    assert_eq!(anna.last_order_at, Some(to_timestamp(T0 + 40 * DAY)));
    assert_eq!((anna.segment, anna.lifetime_value_minor), (Loyal as i32, 394_200));
    assert_eq!((anna.recency_score, anna.frequency_score, anna.monetary_score), (3, 4, 3));
    let ben = h.insight("ben").await;
    assert_eq!((ben.segment, ben.days_since_last_order, ben.lifetime_value_minor), (Active as i32, 45, 657_000));
    assert_eq!((ben.recency_score, ben.frequency_score, ben.monetary_score), (2, 2, 4));
    let cara = h.insight("cara").await;
    assert_eq!((cara.segment, cara.lifetime_value_minor), (New as i32, 36_500));
    assert_eq!((cara.recency_score, cara.frequency_score, cara.monetary_score), (4, 1, 1));
    let dan = h.insight("dan").await;
    assert_eq!((dan.segment, dan.order_count, dan.spend_minor, dan.monetary_score), (New as i32, 0, 0, 0));
    assert_eq!(dan.first_order_at, None);
    let eve = h.insight("eve").await;
    assert_eq!((eve.segment, eve.spend_minor, eve.lifetime_value_minor), (Active as i32, 9_000, 197_100));
    assert_eq!((eve.recency_score, eve.frequency_score, eve.monetary_score), (1, 2, 2));
    // Someone the ledger never told of.
    let nobody = h.insight("zoe").await;
    assert_eq!((nobody.segment, nobody.order_count, nobody.recency_score), (New as i32, 0, 0));
    assert_eq!(h.counts().await, counts(2, 2, 1, 0, 0));

    // Lists: by spend (ties never), paged two at a time; by recency.
    let by_spend = h.list(pb::Segment::Unspecified, pb::CustomerOrder::Spend, 2).await;
    assert_eq!(by_spend, [vec!["ben", "anna"], vec!["eve", "cara"], vec!["dan"]]);
    let by_recency = h.list(pb::Segment::Unspecified, pb::CustomerOrder::Recency, 10).await;
    assert_eq!(by_recency, [vec!["cara", "anna", "ben", "eve", "dan"]]);

    // Day 70: ben (65 days) and eve (69 days) are at risk; nothing new happened.
    h.at_day(70);
    assert_eq!(h.counts().await, counts(2, 0, 1, 2, 0));
    assert_eq!(h.list(AtRisk, pb::CustomerOrder::Spend, 0).await, [vec!["ben", "eve"]]);
    // Day 200: 180 quiet days churn ben and eve; anna (160 days, 3 orders) is at risk;
    // cara (one order, 155 days) is still new.
    h.at_day(200);
    assert_eq!(h.counts().await, counts(2, 0, 0, 1, 2));
    assert_eq!(h.insight("anna").await.segment, AtRisk as i32);
    assert_eq!(h.list(Churned, pb::CustomerOrder::Recency, 0).await, [vec!["ben", "eve"]]);
    // Ben orders again: active.
    h.order("ben", "b3", 500).await;
    Harness::caught_up(&mut h.insights, "ben", 3, 30_500).await;
    assert_eq!(h.insight("ben").await.segment, Active as i32);
    assert_eq!(h.counts().await, counts(2, 1, 0, 1, 1));
    h.stop().await;
}

/// A consumer stopped mid-way resumes where it stood, and a replay of the
/// whole ledger into an empty database ends with the same numbers.
async fn a_restarted_or_replayed_consumer_counts_everything_once(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.five_customers().await;
    h.insights_server.take().unwrap().shutdown().await.unwrap();
    h.at_day(46);
    h.order("cara", "c2", 2_000).await;
    h.refund("a1", 10_000).await;
    h.start_insights().await;
    Harness::caught_up(&mut h.insights, "cara", 2, 3_000).await;
    Harness::caught_up(&mut h.insights, "anna", 2, 8_000).await;
    let mut replay = h.replay().await;
    // The days' aggregates: every refund (the last entries) counted by both
    // means each has read the whole ledger; then they agree on every day.
    let kpis = || pb::GetProgramKpisRequest {
        program_id: "shop".into(),
        from: Some(to_timestamp(T0)),
        to: Some(to_timestamp(T0 + 46 * DAY)),
        granularity: pb::Granularity::Day as i32,
    };
    let original = h.insights.get_program_kpis(kpis()).await.unwrap().into_inner();
    assert_eq!(original.total.as_ref().unwrap().refunded_minor, 1_000 + 8_000 + 10_000);
    let replayed = eventually(
        "the replay's whole ledger",
        || {
            let mut replay = replay.clone();
            async move { replay.get_program_kpis(kpis()).await.unwrap().into_inner() }
        },
        |k| k.total.as_ref().is_some_and(|t| t.refunded_minor == 1_000 + 8_000 + 10_000),
    )
    .await;
    assert_eq!(replayed, original, "a replay of the ledger counts every day the same");
    // And on every customer, dan (fully refunded) included.
    for customer in ["anna", "ben", "cara", "dan", "eve"] {
        assert_eq!(Harness::insight_from(&mut replay, customer).await, h.insight(customer).await, "{customer}");
    }
    h.stop().await;
}

/// Settings move segments at once, refuse stale versions and bad values.
async fn settings_move_segments_and_are_checked(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.five_customers().await;
    h.at_day(50);
    assert_eq!(h.counts().await, counts(2, 2, 1, 0, 0));
    let get = pb::GetInsightSettingsRequest { program_id: "shop".into() };
    let defaults = h.insights.get_insight_settings(get.clone()).await.unwrap().into_inner().settings.unwrap();
    assert_eq!(
        (defaults.at_risk_days, defaults.churned_days, defaults.loyal_orders, defaults.loyal_days, defaults.version),
        (60, 180, 3, 90, 0)
    );
    let put = |settings: pb::InsightSettings, expected_version: Option<i64>, key: &str| pb::PutInsightSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin@shop".into(),
        idempotency_key: key.into(),
        expected_version,
    };
    // At risk after 30 days: ben (45) and eve (49) are.
    let thirty = pb::InsightSettings { at_risk_days: 30, ..defaults.clone() };
    let stored = h.insights.put_insight_settings(put(thirty.clone(), Some(0), "s1")).await.unwrap().into_inner();
    assert_eq!(stored.settings.unwrap().version, 1);
    assert_eq!(h.counts().await, counts(2, 0, 1, 2, 0));
    assert_eq!(h.insight("eve").await.segment, AtRisk as i32);
    // The same key again answers the same; a stale version is refused.
    let again = h.insights.put_insight_settings(put(thirty, Some(0), "s1")).await.unwrap().into_inner();
    assert_eq!(again.settings.unwrap().version, 1);
    let stale = h.insights.put_insight_settings(put(defaults.clone(), Some(0), "s2")).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert_eq!(stale.get_error_details().error_info().unwrap().reason, "VERSION_MISMATCH");
    // Out of range and contradictory values, every field named.
    let bad = pb::InsightSettings { at_risk_days: 0, churned_days: 20, loyal_orders: 0, ..defaults };
    let refused = h.insights.put_insight_settings(put(bad, None, "s3")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        refused.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["settings.at_risk_days", "settings.loyal_orders"]);
    let bad_token =
        pb::ListCustomersRequest { program_id: "shop".into(), page_token: "x".into(), ..Default::default() };
    assert_eq!(h.insights.list_customers(bad_token).await.unwrap_err().code(), Code::InvalidArgument);
    h.stop().await;
}

/// Survey answers and their scores, worked out by hand:
/// - days 0 to 10: NPS 10, 9, 6, 8, 0: 2 promoters, 1 passive, 2 detractors: NPS 0;
///   CSAT 5, 4, 2: 2 of 3 satisfied (66 %), mean 3.66 (366);
/// - the last 30 days at day 40 (days 11 to 40): NPS 10 alone (100), CSAT 3 alone (0 %, 300);
/// - days 0 to 40: NPS 6 answers, 3 promoters, 2 detractors: 16 (16.6 rounded toward zero);
///   CSAT 5, 4, 2, 3: 50 %, 350.
async fn survey_answers_add_up_to_nps_and_csat(backend: Backend) {
    let mut h = Harness::start(backend).await;
    // Noon of day 40: the answers of day 40 (at 01:00) lie behind.
    h.sandbox.clock.set(T0 + 40 * DAY + DAY / 2);
    let answer =
        |customer: &str, kind: pb::SurveyKind, score: i32, day: i64, key: &str| pb::RecordSurveyResponseRequest {
            program_id: "shop".into(),
            customer_id: customer.into(),
            kind: kind as i32,
            score,
            comment: String::new(),
            answered_at: Some(to_timestamp(T0 + day * DAY + 3_600_000_000)),
            idempotency_key: key.into(),
        };
    use pb::SurveyKind::{Csat, Nps};
    let answers = [
        answer("anna", Nps, 10, 0, "a1"),
        answer("ben", Nps, 9, 0, "b1"),
        answer("cara", Nps, 6, 0, "c1"),
        answer("dan", Nps, 8, 10, "d1"),
        answer("eve", Nps, 0, 10, "e1"),
        answer("anna", Csat, 5, 10, "a2"),
        answer("ben", Csat, 4, 10, "b2"),
        answer("cara", Csat, 2, 10, "c2"),
        answer("fay", Nps, 10, 40, "f1"),
        answer("dan", Csat, 3, 40, "d2"),
    ];
    let mut first = None;
    for request in answers.clone() {
        let recorded = h.insights.record_survey_response(request).await.unwrap().into_inner().response.unwrap();
        first.get_or_insert(recorded);
    }
    // The same key again: the same answer, counted once.
    let again = h.insights.record_survey_response(answers[0].clone()).await.unwrap().into_inner().response.unwrap();
    assert_eq!(Some(again), first);
    let scores = |from: Option<i64>, to: Option<i64>| pb::GetSurveyScoresRequest {
        program_id: "shop".into(),
        from: from.map(|day| to_timestamp(T0 + day * DAY + 5)),
        to: to.map(|day| to_timestamp(T0 + day * DAY + 7)),
    };
    let numbers = |r: pb::GetSurveyScoresResponse| {
        let (n, c) = (r.nps.unwrap(), r.csat.unwrap());
        (
            (n.responses, n.promoters, n.passives, n.detractors, n.nps),
            (c.responses, c.satisfied, c.csat_percent, c.average_centi),
        )
    };
    let early = h.insights.get_survey_scores(scores(Some(0), Some(10))).await.unwrap().into_inner();
    assert_eq!((early.from.clone(), early.to.clone()), (Some(to_timestamp(T0)), Some(to_timestamp(T0 + 10 * DAY))));
    assert_eq!(numbers(early), ((5, 2, 1, 2, 0), (3, 2, 66, 366)));
    let recent = h.insights.get_survey_scores(scores(None, None)).await.unwrap().into_inner();
    assert_eq!(recent.from, Some(to_timestamp(T0 + 11 * DAY)));
    assert_eq!(numbers(recent), ((1, 1, 0, 0, 100), (1, 0, 0, 300)));
    let all = h.insights.get_survey_scores(scores(Some(0), Some(40))).await.unwrap().into_inner();
    assert_eq!(numbers(all), ((6, 3, 1, 2, 16), (4, 2, 50, 350)));
    // Without `answered_at` (now), a retry later with the same key is the same answer, not a reused key.
    let undated = pb::RecordSurveyResponseRequest { answered_at: None, ..answer("gus", Nps, 7, 40, "g1") };
    let recorded = h.insights.record_survey_response(undated.clone()).await.unwrap().into_inner().response;
    h.sandbox.clock.advance(3_600_000_000);
    let retried = h.insights.record_survey_response(undated).await.unwrap().into_inner().response;
    assert_eq!(retried, recorded);
    assert_eq!(recorded.unwrap().answered_at, Some(to_timestamp(T0 + 40 * DAY + DAY / 2)));
    // Refusals name the field.
    let refused_field = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.get_error_details().bad_request().unwrap().field_violations[0].field.clone()
    };
    let mut bad = answer("zoe", Nps, 11, 40, "z1");
    assert_eq!(refused_field(h.insights.record_survey_response(bad.clone()).await.unwrap_err()), "score");
    bad = answer("zoe", Csat, 0, 40, "z2");
    assert_eq!(refused_field(h.insights.record_survey_response(bad).await.unwrap_err()), "score");
    bad = answer("zoe", Nps, 5, 41, "z3");
    assert_eq!(refused_field(h.insights.record_survey_response(bad).await.unwrap_err()), "answered_at");
    let backwards = h.insights.get_survey_scores(scores(Some(10), Some(0))).await.unwrap_err();
    assert_eq!(refused_field(backwards), "from");
    h.stop().await;
}

/// The program's numbers, summed from the days the ledger's entries fell on.
/// Day 0 is Monday 24 November: anna orders 100.00 (earning `p` points) and
/// ben gets 500 by hand; day 1 anna spends 50; day 2 ben gets 300 expiring
/// on day 5; day 8 (Tuesday 2 December) 40.00 of anna's order is refunded
/// (taking back `r` points) and the expiry run takes ben's 300.
async fn program_kpis_sum_the_ledger_by_day_week_and_month(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.at_day(0);
    let p = h.order("anna", "a1", 10_000).await;
    h.earn("ben", 500, None, "e1").await;
    h.at_day(1);
    h.spend("anna", 50, "s1").await;
    h.at_day(2);
    h.earn("ben", 300, Some(T0 + 5 * DAY), "e2").await;
    h.at_day(8);
    h.refund("a1", 4_000).await;
    h.points.run_expiry(points::RunExpiryRequest { program_id: "shop".into() }).await.unwrap();
    let listing = points::ListTransactionsRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        page_size: 0,
        page_token: String::new(),
    };
    let entries = h.points.list_transactions(listing).await.unwrap().into_inner().entries;
    let r = entries.iter().find(|e| e.kind == points::EntryKind::Reverse as i32).expect("the refund's reversal").amount;
    let outstanding = h.held("anna").await + h.held("ben").await;
    let request = pb::GetProgramKpisRequest {
        program_id: "shop".into(),
        from: Some(to_timestamp(T0)),
        to: Some(to_timestamp(T0 + 8 * DAY)),
        granularity: pb::Granularity::Day as i32,
    };
    let days = eventually(
        "the expiry and the refund in the KPIs",
        || {
            let (mut client, request) = (h.insights.clone(), request.clone());
            async move { client.get_program_kpis(request).await.unwrap().into_inner() }
        },
        |k| k.total.as_ref().is_some_and(|t| t.points_expired == 300 && t.refunded_minor == 4_000),
    )
    .await;
    assert_eq!(days.periods.len(), 9);
    let day0 = &days.periods[0];
    assert_eq!((day0.new_members, day0.members, day0.orders, day0.revenue_minor), (2, 2, 1, 10_000));
    assert_eq!((day0.points_issued, day0.points_outstanding, day0.average_order_minor), (p + 500, p + 500, 10_000));
    assert_eq!((days.periods[1].points_redeemed, days.periods[1].points_outstanding), (50, p + 450));
    assert_eq!((days.periods[2].points_issued, days.periods[5].points_outstanding), (300, p + 750));
    let day8 = &days.periods[8];
    assert_eq!((day8.refunded_minor, day8.points_reversed, day8.points_expired, day8.members), (4_000, r, 300, 2));
    assert_eq!(day8.points_outstanding, outstanding, "outstanding = every balance, available and pending");
    let total = days.total.unwrap();
    assert_eq!(
        (total.orders, total.revenue_minor, total.refunded_minor, total.average_order_minor),
        (1, 10_000, 4_000, 6_000)
    );
    assert_eq!((total.points_issued, total.points_redeemed, total.points_expired), (p + 800, 50, 300));
    assert_eq!(total.redemption_rate_percent, i32::try_from(50 * 100 / (p + 800)).unwrap());
    // No point value yet: no liability; the history so far redeemed 50 and let 300 expire (14 %).
    assert_eq!((days.liability_minor, days.expected_redemption_percent), (0, 14));

    // Weeks (Monday to Sunday) and months: days 0-6 are November's last week, 7-8 December's first days.
    for granularity in [pb::Granularity::Week, pb::Granularity::Month] {
        let periods = h.kpis(0, 8, granularity).await.periods;
        let bounds: Vec<_> = periods.iter().map(|p| (p.from.clone().unwrap(), p.to.clone().unwrap())).collect();
        let day = |d: i64| to_timestamp(T0 + d * DAY);
        assert_eq!(bounds, [(day(0), day(6)), (day(7), day(8))], "{granularity:?}");
        assert_eq!((periods[0].points_issued, periods[0].points_redeemed, periods[0].orders), (p + 800, 50, 1));
        assert_eq!((periods[1].points_expired, periods[1].points_outstanding), (300, outstanding));
    }
    // A later range starts from what came before: members and outstanding carry over.
    let later = h.kpis(5, 8, pb::Granularity::Day).await;
    assert_eq!((later.periods[0].members, later.periods[0].new_members), (2, 0));
    assert_eq!(later.total.unwrap().points_outstanding, outstanding);

    // A point worth 0.01 (1,000 milli-minor units): 14 % of the outstanding points' value.
    let settings = pb::InsightSettings {
        at_risk_days: 60,
        churned_days: 180,
        loyal_orders: 3,
        loyal_days: 90,
        expected_lifespan_days: 1095,
        point_value_milli_minor: 1_000,
        ..Default::default()
    };
    let put = pb::PutInsightSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin@shop".into(),
        idempotency_key: "value-1".into(),
        expected_version: None,
    };
    h.insights.put_insight_settings(put).await.unwrap();
    assert_eq!(h.kpis(0, 8, pb::Granularity::Day).await.liability_minor, outstanding * 1_000 * 14 / 100_000);
    // Ranges: backwards, or longer than three years, are refused.
    let backwards = pb::GetProgramKpisRequest {
        program_id: "shop".into(),
        from: Some(to_timestamp(T0 + DAY)),
        to: Some(to_timestamp(T0)),
        granularity: 0,
    };
    assert_eq!(h.insights.get_program_kpis(backwards).await.unwrap_err().code(), Code::InvalidArgument);
    let long = pb::GetProgramKpisRequest {
        program_id: "shop".into(),
        from: Some(to_timestamp(T0 - 1_101 * DAY)),
        to: Some(to_timestamp(T0)),
        granularity: 0,
    };
    assert_eq!(h.insights.get_program_kpis(long).await.unwrap_err().code(), Code::InvalidArgument);
    h.stop().await;
}

/// Active members, buyers and the repeat purchase rate: day 0 anna and ben
/// order, day 1 anna again (a repeat buyer), day 8 cara (a new buyer) and
/// anna (her third order).
async fn active_members_and_repeat_buyers_count_customers_not_orders(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.at_day(0);
    h.order("anna", "a1", 1_000).await;
    h.order("ben", "b1", 1_000).await;
    h.at_day(1);
    h.order("anna", "a2", 1_000).await;
    h.at_day(8);
    h.order("cara", "c1", 1_000).await;
    h.order("anna", "a3", 1_000).await;
    Harness::caught_up(&mut h.insights, "anna", 3, 3_000).await;
    Harness::caught_up(&mut h.insights, "cara", 1, 1_000).await;
    let numbers = |k: &pb::Kpis| (k.active_members, k.buyers, k.repeat_buyers, k.repeat_purchase_rate_percent);
    let days = h.kpis(0, 8, pb::Granularity::Day).await;
    assert_eq!(numbers(&days.periods[0]), (2, 2, 0, 0));
    assert_eq!(numbers(&days.periods[1]), (1, 2, 1, 50));
    assert_eq!(numbers(&days.periods[4]), (0, 2, 1, 50));
    assert_eq!(numbers(&days.periods[8]), (2, 3, 1, 33));
    // Distinct per period, not summed over days: anna counts once in her week.
    assert_eq!(numbers(days.total.as_ref().unwrap()), (3, 3, 1, 33));
    let weeks = h.kpis(0, 8, pb::Granularity::Week).await;
    assert_eq!(weeks.periods.iter().map(numbers).collect::<Vec<_>>(), [(2, 2, 1, 50), (2, 3, 1, 33)]);
    // Two whole weeks: the second holds anna and cara.
    let weeks = h.kpis(0, 13, pb::Granularity::Week).await;
    assert_eq!(weeks.periods.iter().map(|p| p.active_members).collect::<Vec<_>>(), [2, 2]);
    // Months: day 0 is 24 November, day 7 the 1st of December. Dan orders on day 20.
    h.at_day(20);
    h.order("dan", "d1", 1_000).await;
    Harness::caught_up(&mut h.insights, "dan", 1, 1_000).await;
    let active = |k: &pb::GetProgramKpisResponse| k.periods.iter().map(|p| p.active_members).collect::<Vec<_>>();
    // Whole months: November anna and ben; December anna, cara and dan.
    assert_eq!(active(&h.kpis(-23, 37, pb::Granularity::Month).await), [2, 3]);
    // Partial ones: 24–30 November, then 1–2 December (anna and cara).
    assert_eq!(active(&h.kpis(0, 8, pb::Granularity::Month).await), [2, 2]);
    h.stop().await;
}

impl Harness {
    async fn put_churned_days(&mut self, churned_days: i32, key: &str) {
        let settings = pb::InsightSettings {
            at_risk_days: 10,
            churned_days,
            loyal_orders: 3,
            loyal_days: 90,
            expected_lifespan_days: 1095,
            ..Default::default()
        };
        let request = pb::PutInsightSettingsRequest {
            program_id: "shop".into(),
            settings: Some(settings),
            actor: "test".into(),
            idempotency_key: key.into(),
            expected_version: None,
        };
        self.insights.put_insight_settings(request).await.unwrap();
    }

    async fn cohorts(&mut self, from: i64, to: i64) -> Vec<(i64, Vec<i64>, Vec<i32>)> {
        let request = pb::GetCohortRetentionRequest {
            program_id: "shop".into(),
            from: Some(to_timestamp(T0 + from * DAY)),
            to: Some(to_timestamp(T0 + to * DAY)),
        };
        let response = self.insights.get_cohort_retention(request).await.unwrap().into_inner();
        response.cohorts.into_iter().map(|c| (c.customers, c.retained, c.retained_percent)).collect()
    }

    /// Asks for the aggregates to be recomputed from the buyers' days, as a change of settings or the migration does.
    async fn ask_rebuild(&self) {
        let db = loyalty_common::db::connect(&self.insights_url, loyalty_common::db::PoolSettings::new(1, 5_000))
            .await
            .unwrap();
        for part in ["churn", "cohorts", "gaps", "weeks"] {
            sqlx::query("INSERT INTO kpi_rebuilds (program_id, part) VALUES ('shop', $1)")
                .bind(part)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        db.pool.close().await;
    }
}

/// Churn, reactivation and cohorts, churned after 30 quiet days. T0 is
/// Monday 24 November 2025: days 0–6 are November, 7–37 December, 38–68
/// January. Day 0 anna and ben order (churning on day 30), day 10 anna
/// again (her churn moves to 40) and cara (churning on 40), day 35 cara
/// again (to 65), day 45 ben, who churned on day 30: reactivated, churning
/// again on 75. Now is day 50.
async fn churn_and_cohorts_follow_each_customer_as_worked_out_by_hand(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.put_churned_days(30, "settings-30").await;
    h.order("anna", "a1", 1_000).await;
    h.order("ben", "b1", 1_000).await;
    h.at_day(10);
    h.order("anna", "a2", 1_000).await;
    h.order("cara", "c1", 1_000).await;
    h.at_day(35);
    h.order("cara", "c2", 1_000).await;
    h.at_day(45);
    h.order("ben", "b2", 1_000).await;
    h.at_day(50);
    Harness::caught_up(&mut h.insights, "ben", 2, 2_000).await;
    let churn = |k: &pb::Kpis| (k.churned, k.reactivated, k.churn_rate_percent);
    let days = h.kpis(0, 50, pb::Granularity::Day).await;
    let churned_days: Vec<(usize, i64)> =
        days.periods.iter().enumerate().filter(|(_, k)| k.churned != 0).map(|(d, k)| (d, k.churned)).collect();
    assert_eq!(churned_days, [(30, 1), (40, 1)], "ben on day 30, anna on day 40");
    assert_eq!(churn(&days.periods[45]), (0, 1, 0));
    // All 50 days: 2 churned of 3 first buyers and 1 reactivated: 50 %.
    assert_eq!(churn(days.total.as_ref().unwrap()), (2, 1, 50));
    // November: nobody. December: ben of anna, ben (live at its start) and cara: 33 %.
    // January: anna of anna and cara (live at its start) and ben (back): 33 %.
    let months = h.kpis(0, 50, pb::Granularity::Month).await;
    assert_eq!(months.periods.iter().map(churn).collect::<Vec<_>>(), [(0, 0, 0), (1, 0, 33), (1, 1, 33)]);
    // Cara's day 65 and ben's day 75 have not come: nothing counts for them yet.
    assert_eq!(churn(h.kpis(0, 80, pb::Granularity::Day).await.total.as_ref().unwrap()), (2, 1, 50));
    // November's cohort (anna, ben): anna back in December, ben in January;
    // December's (cara): not back in January; January's: nobody.
    let cohorts = h.cohorts(0, 50).await;
    assert_eq!(cohorts, [(2, vec![2, 1, 1], vec![100, 50, 50]), (1, vec![1, 0], vec![100, 0]), (0, vec![0], vec![0])]);
    // Recomputed from the buyers' days, as after the migration, they are the same.
    let weekly = h.kpis(0, 55, pb::Granularity::Week).await;
    assert_eq!(weekly.periods.iter().map(|p| p.active_members).collect::<Vec<_>>(), [2, 2, 0, 0, 0, 1, 1, 0]);
    h.ask_rebuild().await;
    assert_eq!(h.kpis(0, 55, pb::Granularity::Week).await, weekly);
    assert_eq!(h.kpis(0, 50, pb::Granularity::Day).await, days);
    assert_eq!(h.cohorts(0, 50).await, cohorts);
    // Churned after 40 days instead: ben on day 40 (back on 45), anna on day 50.
    h.put_churned_days(40, "settings-40").await;
    let days = h.kpis(0, 50, pb::Granularity::Day).await;
    let churned_days: Vec<(usize, i64)> =
        days.periods.iter().enumerate().filter(|(_, k)| k.churned != 0).map(|(d, k)| (d, k.churned)).collect();
    assert_eq!(churned_days, [(40, 1), (50, 1)]);
    assert_eq!(churn(days.total.as_ref().unwrap()), (2, 1, 50));
    // Too many cohorts, or backwards, are refused.
    for (from, to) in [(-1_200, 0), (40, 0)] {
        let request = pb::GetCohortRetentionRequest {
            program_id: "shop".into(),
            from: Some(to_timestamp(T0 + from * DAY)),
            to: Some(to_timestamp(T0 + to * DAY)),
        };
        assert_eq!(h.insights.get_cohort_retention(request).await.unwrap_err().code(), Code::InvalidArgument);
    }
    h.stop().await;
}

/// The win-back rule end to end: a points, a tiers and an insights service
/// (reviewing every second). At risk after 10 quiet days: anna and ben
/// order on days 0 and 1; the shop gives ben the hidden `vip` tier by hand.
/// On day 12 both are at risk: anna gets the `winback` tier, ben keeps
/// `vip`. On day 13 anna orders again: loyal (3 orders), and the tier ends. Every
/// change is listed in order.
async fn the_win_back_tier_follows_the_at_risk_segment(backend: Backend) {
    use loyalty_proto::tiers::v1 as tiers;
    use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
    use pb::Segment::{Active, AtRisk, Loyal, New, Unspecified};
    let mut h = Harness::start(backend).await;
    let tiers_url = h.sandbox.database("tiers").await;
    let points_addr = h.points_server.bind_addr().to_string();
    let tiers_server = h
        .sandbox
        .start::<loyalty_tiers::TiersServer>(
            &tiers_url,
            &["--points-addr", &points_addr, "--review-interval-secs", "3600"],
        )
        .await;
    let mut tier_client = TiersServiceClient::new(testing::channel(tiers_server.bind_addr()).await);
    let tier = |id: &str, hidden: bool| tiers::Tier {
        tier_id: id.into(),
        name: id.to_uppercase(),
        multiplier_bp: 10_000,
        hidden,
        ..Default::default()
    };
    let ladder = tiers::Ladder {
        tiers: vec![tier("member", false), tier("winback", true), tier("vip", true)],
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
    tier_client.put_ladder(put).await.unwrap();
    // The insights service again, now with the tiers service and a quick review.
    h.insights_server.take().unwrap().shutdown().await.unwrap();
    let tiers_addr = tiers_server.bind_addr().to_string();
    let args = ["--points-addr", &points_addr, "--tiers-addr", &tiers_addr, "--review-interval-secs", "1"];
    let server = h.sandbox.start::<InsightsServer>(&h.insights_url, &args).await;
    h.insights = InsightsServiceClient::new(testing::channel(server.bind_addr()).await);
    h.insights_server = Some(server);
    let settings = pb::InsightSettings {
        at_risk_days: 10,
        churned_days: 30,
        loyal_orders: 3,
        loyal_days: 90,
        expected_lifespan_days: 1095,
        win_back_tier_id: "winback".into(),
        ..Default::default()
    };
    let request = pb::PutInsightSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin".into(),
        idempotency_key: "win-back".into(),
        expected_version: None,
    };
    h.insights.put_insight_settings(request).await.unwrap();

    h.order("anna", "a1", 1_000).await;
    h.order("ben", "b1", 1_000).await;
    // Caught up before the next orders: one change per batch and customer.
    Harness::caught_up(&mut h.insights, "ben", 1, 1_000).await;
    h.at_day(1);
    h.order("anna", "a2", 1_000).await;
    h.order("ben", "b2", 1_000).await;
    let assign = tiers::AssignTierRequest {
        program_id: "shop".into(),
        customer_id: "ben".into(),
        tier_id: "vip".into(),
        ends_at: None,
        actor: "admin".into(),
        idempotency_key: "ben-vip".into(),
    };
    tier_client.assign_tier(assign).await.unwrap();
    Harness::caught_up(&mut h.insights, "ben", 2, 2_000).await;
    let membership = |customer: &'static str| {
        let mut client = tier_client.clone();
        async move {
            let request = tiers::GetMembershipRequest { program_id: "shop".into(), customer_id: customer.into() };
            let m = client.get_membership(request).await.unwrap().into_inner().membership.unwrap();
            (m.tier_id, m.assigned)
        }
    };
    h.at_day(12);
    eventually("anna's win-back tier", || membership("anna"), |m| *m == ("winback".to_owned(), true)).await;
    assert_eq!(h.counts().await, counts(0, 0, 0, 2, 0));
    assert_eq!(membership("ben").await, ("vip".to_owned(), true), "a tier the shop assigned stands");
    h.at_day(13);
    h.order("anna", "a3", 1_000).await;
    eventually("the end of anna's win-back tier", || membership("anna"), |m| !m.1).await;
    assert_eq!(membership("ben").await, ("vip".to_owned(), true));
    let history = tiers::ListMembershipHistoryRequest {
        program_id: "shop".into(),
        customer_id: "anna".into(),
        page_size: 0,
        page_token: String::new(),
    };
    let changes = tier_client.list_membership_history(history).await.unwrap().into_inner().changes;
    // Newest first: the rule's end, then its assignment, both audited as the rule.
    let moves: Vec<_> =
        changes.iter().map(|c| (c.from_tier_id.as_str(), c.to_tier_id.as_str(), c.actor.as_str())).collect();
    let rule = loyalty_insights::winback::ACTOR;
    assert_eq!(moves[..2], [("winback", "member", rule), ("member", "winback", rule)]);
    // Every change, in order, paged.
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let list = pb::ListSegmentChangesRequest { program_id: "shop".into(), after_sequence: after, page_size: 3 };
        let page = h.insights.list_segment_changes(list).await.unwrap().into_inner();
        assert!(page.changes.len() <= 3);
        if page.changes.is_empty() {
            assert_eq!(page.next_after_sequence, after, "an empty page keeps the place");
            break;
        }
        after = page.next_after_sequence;
        all.extend(page.changes);
    }
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let of = |customer: &str| -> Vec<(i32, i32)> {
        all.iter().filter(|c| c.customer_id == customer).map(|c| (c.from_segment, c.to_segment)).collect()
    };
    let anna = [(Unspecified, New), (New, Active), (Active, AtRisk), (AtRisk, Loyal)];
    assert_eq!(of("anna"), anna.map(|(a, b)| (a as i32, b as i32)));
    assert_eq!(of("ben"), [(Unspecified, New), (New, Active), (Active, AtRisk)].map(|(a, b)| (a as i32, b as i32)));
    tiers_server.shutdown().await.unwrap();
    h.stop().await;
}

/// A campaign for at-risk customers, end to end: points asks insights for
/// the customer's segment when the campaign could apply. Anna orders on days
/// 0 and 1 (10 points each), and on day 12, at risk after 10 quiet days:
/// twice the points. With the insights service down an order is refused as
/// UNAVAILABLE, and its retry earns once insights is back.
async fn a_campaign_for_at_risk_customers_doubles_their_points(backend: Backend) {
    let mut sandbox = Sandbox::new(backend, T0);
    let (points_url, insights_url) = (sandbox.database("points").await, sandbox.database("insights").await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let insights_addr = listener.local_addr().unwrap().to_string();
    let points_server = sandbox.start::<PointsServer>(&points_url, &["--insights-addr", &insights_addr]).await;
    let points_addr = points_server.bind_addr().to_string();
    let insights_args = ["--points-addr", points_addr.as_str(), "--review-interval-secs", "3600"];
    let insights_server = sandbox.start_on::<InsightsServer>(listener, &insights_url, &insights_args).await;
    let mut h = Harness {
        points: PointsServiceClient::new(testing::channel(points_server.bind_addr()).await),
        insights: InsightsServiceClient::new(testing::channel(insights_server.bind_addr()).await),
        sandbox,
        points_server,
        insights_server: Some(insights_server),
        replays: Vec::new(),
        insights_url,
    };
    h.put_churned_days(30, "settings").await;
    let campaign = points::Campaign {
        name: "We miss you".into(),
        kind: points::CampaignKind::Multiplier as i32,
        multiplier_bp: 20_000,
        starts_at: Some(to_timestamp(T0)),
        ends_at: Some(to_timestamp(T0 + 100 * DAY)),
        applies_to: vec!["order".into()],
        segment_ids: vec!["at_risk".into()],
        ..Default::default()
    };
    let create = |campaign: points::Campaign| points::CreateCampaignRequest {
        program_id: "shop".into(),
        campaign: Some(campaign),
        actor: "admin".into(),
        idempotency_key: "we-miss-you".into(),
    };
    h.points.create_campaign(create(campaign.clone())).await.unwrap();
    let unknown = points::Campaign { segment_ids: vec!["vip".into()], ..campaign.clone() };
    let refused = h.points.create_campaign(create(unknown)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    assert_eq!(h.order("anna", "a1", 1_000).await, 10);
    h.at_day(1);
    assert_eq!(h.order("anna", "a2", 1_000).await, 10, "active: the campaign is not for her");
    Harness::caught_up(&mut h.insights, "anna", 2, 2_000).await;
    h.at_day(12);
    assert_eq!(h.order("anna", "a3", 1_000).await, 20, "at risk: double points");
    Harness::caught_up(&mut h.insights, "anna", 3, 3_000).await;
    // Back to active with that order: single points again.
    assert_eq!(h.order("anna", "a4", 1_000).await, 10);

    // Without insights the earn cannot be priced: UNAVAILABLE, and nothing is booked.
    h.insights_server.take().unwrap().shutdown().await.unwrap();
    let order = points::EarnForOrderRequest {
        program_id: "shop".into(),
        customer_id: "ben".into(),
        order_id: "b1".into(),
        amount_minor: 1_000,
        currency: "EUR".into(),
        occurred_at: None,
    };
    let status = h.points.earn_for_order(order.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.get_error_details().error_info().unwrap().reason, "INSIGHTS_UNAVAILABLE");
    assert_eq!(h.held("ben").await, 0);
    // Back on the address the points service knows.
    let listener = tokio::net::TcpListener::bind(&insights_addr).await.unwrap();
    let server = h.sandbox.start_on::<InsightsServer>(listener, &h.insights_url, &insights_args).await;
    h.insights_server = Some(server);
    let earned = eventually(
        "the retried order",
        || {
            let (mut points, order) = (h.points.clone(), order.clone());
            async move { points.earn_for_order(order).await.map(|r| r.into_inner().points).map_err(|s| s.code()) }
        },
        |answer| answer.is_ok(),
    )
    .await;
    assert_eq!(earned, Ok(10));

    // A points service without an insights service refuses campaigns for segments.
    let lone_url = h.sandbox.database("points-alone").await;
    let lone = h.sandbox.start::<PointsServer>(&lone_url, &[]).await;
    let mut client = PointsServiceClient::new(testing::channel(lone.bind_addr()).await);
    let status = client.create_campaign(create(campaign)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("INSIGHTS_ADDR")
            || format!("{:?}", status.get_error_details()).contains("INSIGHTS_ADDR")
    );
    lone.shutdown().await.unwrap();
    h.stop().await;
}

/// Referral conversion among the KPIs: ben and cara sign up with anna's
/// code, ben's order completes his referral: 2 signed up, 1 completed, 50 %.
/// With the referral service down the KPIs still answer, without it.
async fn the_kpis_carry_the_referral_funnel(backend: Backend) {
    use loyalty_proto::referral::v1 as referral;
    use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
    let mut h = Harness::start(backend).await;
    let referral_url = h.sandbox.database("referral").await;
    let points_addr = h.points_server.bind_addr().to_string();
    let referral_server =
        h.sandbox.start::<loyalty_referral::ReferralServer>(&referral_url, &["--points-addr", &points_addr]).await;
    let mut client = ReferralServiceClient::new(testing::channel(referral_server.bind_addr()).await);
    h.insights_server.take().unwrap().shutdown().await.unwrap();
    let referral_addr = referral_server.bind_addr().to_string();
    let args = ["--points-addr", &points_addr, "--referral-addr", &referral_addr, "--review-interval-secs", "3600"];
    let server = h.sandbox.start::<InsightsServer>(&h.insights_url, &args).await;
    h.insights = InsightsServiceClient::new(testing::channel(server.bind_addr()).await);
    h.insights_server = Some(server);
    let settings = referral::ReferralSettings {
        enabled: true,
        referrer_points: 500,
        referee_points: 250,
        minimum_order_minor: 2_000,
        cap_period_days: 30,
        attribution_window_days: 30,
        clawback_window_days: 14,
        ..Default::default()
    };
    let put = referral::PutReferralSettingsRequest {
        program_id: "shop".into(),
        settings: Some(settings),
        actor: "admin".into(),
        idempotency_key: "referral-settings".into(),
        expected_version: None,
    };
    client.put_referral_settings(put).await.unwrap();
    let code = referral::GetOrCreateCodeRequest { program_id: "shop".into(), customer_id: "anna".into() };
    let code = client.get_or_create_code(code).await.unwrap().into_inner().code;
    for friend in ["ben", "cara"] {
        let signup = referral::RecordSignupRequest {
            program_id: "shop".into(),
            code: code.clone(),
            referee_customer_id: friend.into(),
            idempotency_key: format!("signup-{friend}"),
        };
        client.record_signup(signup).await.unwrap();
    }
    let purchase = referral::RecordPurchaseRequest {
        program_id: "shop".into(),
        customer_id: "ben".into(),
        order_id: "b1".into(),
        amount_minor: 5_000,
        occurred_at: None,
    };
    assert!(client.record_purchase(purchase).await.unwrap().into_inner().referral.is_some());
    let kpis = h.kpis(0, 0, pb::Granularity::Day).await;
    let funnel = kpis.referrals.expect("the funnel");
    assert_eq!((funnel.signed_up, funnel.completed, funnel.conversion_percent), (2, 1, 50));
    assert!(!kpis.referrals_unavailable);
    // The day before: nobody.
    let before = h.kpis(-1, -1, pb::Granularity::Day).await.referrals.expect("the funnel");
    assert_eq!((before.signed_up, before.conversion_percent), (0, 0));
    referral_server.shutdown().await.unwrap();
    let kpis = h.kpis(0, 0, pb::Granularity::Day).await;
    assert!(kpis.referrals.is_none() && kpis.referrals_unavailable);
    h.stop().await;
}

loyalty_common::on_both_backends!(
    the_kpis_carry_the_referral_funnel,
    a_campaign_for_at_risk_customers_doubles_their_points,
    the_win_back_tier_follows_the_at_risk_segment,
    churn_and_cohorts_follow_each_customer_as_worked_out_by_hand,
    active_members_and_repeat_buyers_count_customers_not_orders,
    program_kpis_sum_the_ledger_by_day_week_and_month,
    survey_answers_add_up_to_nps_and_csat,
    a_small_program_adds_up_as_worked_out_by_hand,
    a_restarted_or_replayed_consumer_counts_everything_once,
    settings_move_segments_and_are_checked,
);
