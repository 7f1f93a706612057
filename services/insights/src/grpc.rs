//! The gRPC layer of the insights service: every request is validated
//! here, at the edge, and the API's prost types turned into the service's own.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use loyalty_common::auth;
use loyalty_common::clock::{MICROS_PER_DAY, Micros, to_timestamp};
use loyalty_common::validate::{self, Check, FieldViolation};
use loyalty_proto::insights::v1 as pb;
use loyalty_proto::insights::v1::insights_service_server::InsightsService;

use crate::domain::{self, Csat, Granularity, Nps, Period, Segment, Settings, SurveyAnswer, SurveyKind};
use crate::error::DOMAIN;
use crate::referral::ReferralSource;
use crate::service::{CustomerInsight, Insights};
use crate::store::{CustomerRow, Order};

pub struct InsightsApi {
    insights: Arc<Insights>,
    referral: Option<ReferralSource>,
}

impl InsightsApi {
    pub fn new(insights: Arc<Insights>, referral: Option<ReferralSource>) -> Self {
        Self { insights, referral }
    }
}

#[tonic::async_trait]
impl InsightsService for InsightsApi {
    async fn get_customer_insight(
        &self,
        request: Request<pb::GetCustomerInsightRequest>,
    ) -> Result<Response<pb::GetCustomerInsightResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let (insight, settings) = self.insights.customer(&r.program_id, &r.customer_id).await?;
        let insight = insight_to_proto(&r.program_id, &insight, &settings, self.insights.store().now());
        Ok(Response::new(pb::GetCustomerInsightResponse { insight: Some(insight) }))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        let segment = match pb::Segment::try_from(r.segment) {
            Ok(pb::Segment::Unspecified) => None,
            Ok(segment) => Some(segment_from_proto(segment)),
            Err(_) => {
                check.add(Err(FieldViolation::new("segment", "must be a segment or unspecified")));
                None
            }
        };
        let order = match pb::CustomerOrder::try_from(r.order_by) {
            Ok(pb::CustomerOrder::Unspecified | pb::CustomerOrder::Spend) => Order::Spend,
            Ok(pb::CustomerOrder::Recency) => Order::Recency,
            Err(_) => {
                check.add(Err(FieldViolation::new("order_by", "must be SPEND, RECENCY or unspecified")));
                Order::Spend
            }
        };
        // Only the size: the token is this list's own (a value and a customer id).
        let page = check.page(r.page_size, "");
        let after = if r.page_token.is_empty() {
            None
        } else {
            let parsed = parse_token(&r.page_token);
            if parsed.is_none() {
                check.add(Err(FieldViolation::new("page_token", "is not a token from a previous page")));
            }
            parsed
        };
        check.done(DOMAIN)?;
        let after = after.as_ref().map(|(value, id)| (*value, id.as_str()));
        let (rows, settings) = self.insights.customers(&r.program_id, segment, order, after, page.size + 1).await?;
        let (rows, next_page_token) = page.cut(rows, |last| format!("{}:{}", order.value(last), last.customer_id));
        let now = self.insights.store().now();
        let customers = rows.iter().map(|row| numbers_to_proto(&r.program_id, row, &settings, now)).collect();
        Ok(Response::new(pb::ListCustomersResponse { customers, next_page_token }))
    }

    async fn get_segment_counts(
        &self,
        request: Request<pb::GetSegmentCountsRequest>,
    ) -> Result<Response<pb::GetSegmentCountsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let counts = self.insights.segment_counts(&r.program_id).await?;
        let counts = counts
            .into_iter()
            .map(|(segment, customers)| pb::SegmentCount { segment: segment_to_proto(segment) as i32, customers })
            .collect();
        Ok(Response::new(pb::GetSegmentCountsResponse { counts }))
    }

    async fn get_insight_settings(
        &self,
        request: Request<pb::GetInsightSettingsRequest>,
    ) -> Result<Response<pb::GetInsightSettingsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let settings = self.insights.store().settings(&r.program_id).await?;
        Ok(Response::new(pb::GetInsightSettingsResponse { settings: Some(settings_to_proto(&settings)) }))
    }

    async fn put_insight_settings(
        &self,
        request: Request<pb::PutInsightSettingsRequest>,
    ) -> Result<Response<pb::PutInsightSettingsResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("actor", &actor).id("idempotency_key", &r.idempotency_key);
        let s = r.settings.unwrap_or_default();
        let settings = Settings {
            at_risk_days: s.at_risk_days,
            churned_days: s.churned_days,
            loyal_orders: s.loyal_orders,
            loyal_days: s.loyal_days,
            expected_lifespan_days: s.expected_lifespan_days,
            point_value_milli_minor: s.point_value_milli_minor,
            win_back_tier_id: s.win_back_tier_id,
            version: 0,
        };
        check.0.extend(settings.validate());
        if r.expected_version.is_some_and(|v| v < 0) {
            check.add(Err(FieldViolation::new("expected_version", "must not be negative")));
        }
        check.done(DOMAIN)?;
        let stored = self
            .insights
            .store()
            .put_settings(&r.program_id, settings, r.expected_version, &actor, &r.idempotency_key)
            .await?;
        Ok(Response::new(pb::PutInsightSettingsResponse { settings: Some(settings_to_proto(&stored)) }))
    }

    async fn record_survey_response(
        &self,
        request: Request<pb::RecordSurveyResponseRequest>,
    ) -> Result<Response<pb::RecordSurveyResponseResponse>, Status> {
        let r = request.into_inner();
        let now = self.insights.store().now();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id)
            .id("idempotency_key", &r.idempotency_key);
        let kind = match pb::SurveyKind::try_from(r.kind) {
            Ok(pb::SurveyKind::Nps) => Some(SurveyKind::Nps),
            Ok(pb::SurveyKind::Csat) => Some(SurveyKind::Csat),
            _ => {
                check.add(Err(FieldViolation::new("kind", "must be NPS or CSAT")));
                None
            }
        };
        if let Some(kind) = kind.filter(|kind| !kind.scores().contains(&r.score)) {
            let (low, high) = kind.scores().into_inner();
            check.add(Err(FieldViolation::new("score", format!("must be {low} to {high} for this survey"))));
        }
        if r.comment.chars().count() > MAX_COMMENT_CHARS {
            check.add(Err(FieldViolation::new("comment", format!("must be at most {MAX_COMMENT_CHARS} characters"))));
        }
        let asked_at = check.timestamp("answered_at", r.answered_at.as_ref(), now);
        let answered_at = asked_at.unwrap_or(now);
        if answered_at > now {
            check.add(Err(FieldViolation::new("answered_at", "must not be in the future")));
        }
        check.done(DOMAIN)?;
        let answer = SurveyAnswer {
            response_id: format!("srv_{}", uuid::Uuid::now_v7().simple()),
            customer_id: r.customer_id,
            kind: kind.unwrap_or(SurveyKind::Nps),
            score: r.score,
            comment: r.comment,
            answered_at,
        };
        let stored = self.insights.store().record_answer(&r.program_id, answer, asked_at, &r.idempotency_key).await?;
        Ok(Response::new(pb::RecordSurveyResponseResponse { response: Some(answer_to_proto(&stored)) }))
    }

    async fn get_program_kpis(
        &self,
        request: Request<pb::GetProgramKpisRequest>,
    ) -> Result<Response<pb::GetProgramKpisResponse>, Status> {
        Ok(Response::new(self.program_kpis(request.into_inner()).await?))
    }

    async fn get_cohort_retention(
        &self,
        request: Request<pb::GetCohortRetentionRequest>,
    ) -> Result<Response<pb::GetCohortRetentionResponse>, Status> {
        Ok(Response::new(self.cohort_retention(request.into_inner()).await?))
    }

    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::GetSegmentResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let segment = self.insights.segment(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(pb::GetSegmentResponse { segment: segment_to_proto(segment) as i32 }))
    }

    async fn list_segment_changes(
        &self,
        request: Request<pb::ListSegmentChangesRequest>,
    ) -> Result<Response<pb::ListSegmentChangesResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        if r.after_sequence < 0 {
            check.add(Err(FieldViolation::new("after_sequence", "must not be negative")));
        }
        let limit = check.page(r.page_size, "").size;
        check.done(DOMAIN)?;
        let changes = self.insights.store().segment_changes(Some(&r.program_id), r.after_sequence, limit).await?;
        let next_after_sequence = changes.last().map_or(r.after_sequence, |c| c.sequence);
        let changes = changes
            .iter()
            .map(|c| pb::SegmentChange {
                sequence: c.sequence,
                customer_id: c.customer_id.clone(),
                from_segment: c.from.map_or(pb::Segment::Unspecified, segment_to_proto) as i32,
                to_segment: segment_to_proto(c.to) as i32,
                changed_at: Some(to_timestamp(c.at)),
            })
            .collect();
        Ok(Response::new(pb::ListSegmentChangesResponse { changes, next_after_sequence }))
    }

    async fn get_survey_scores(
        &self,
        request: Request<pb::GetSurveyScoresRequest>,
    ) -> Result<Response<pb::GetSurveyScoresResponse>, Status> {
        let r = request.into_inner();
        let now = self.insights.store().now();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        let (from, to) = days(&mut check, r.from.as_ref(), r.to.as_ref(), now);
        check.done(DOMAIN)?;
        let store = self.insights.store();
        let nps = Nps::of(&store.survey_counts(&r.program_id, SurveyKind::Nps, from, to).await?);
        let csat = Csat::of(&store.survey_counts(&r.program_id, SurveyKind::Csat, from, to).await?);
        Ok(Response::new(pb::GetSurveyScoresResponse {
            from: Some(to_timestamp(from)),
            to: Some(to_timestamp(to)),
            nps: Some(pb::NpsScore {
                responses: nps.responses,
                promoters: nps.promoters,
                passives: nps.passives,
                detractors: nps.detractors,
                nps: nps.nps,
            }),
            csat: Some(pb::CsatScore {
                responses: csat.responses,
                satisfied: csat.satisfied,
                csat_percent: csat.csat_percent,
                average_centi: csat.average_centi,
            }),
        }))
    }
}

/// The first and last day a request names (its time of day ignored), the
/// last 30 days by default; `from` after `to` is refused.
fn days(
    check: &mut Check,
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
    now: Micros,
) -> (Micros, Micros) {
    let to = domain::day_of(check.timestamp("to", to, now).unwrap_or(now));
    let default_from = to - (DEFAULT_SCORE_DAYS - 1) * MICROS_PER_DAY;
    let from = domain::day_of(check.timestamp("from", from, now).unwrap_or(default_from));
    if from > to {
        check.add(Err(FieldViolation::new("from", "must not be after to")));
    }
    (from, to)
}

fn period_to_proto(p: &Period, active_members: i64) -> pb::Kpis {
    let c = &p.counts;
    pb::Kpis {
        from: Some(to_timestamp(p.first_day)),
        to: Some(to_timestamp(p.last_day)),
        new_members: c.new_members,
        members: p.running.new_members,
        orders: c.orders,
        revenue_minor: c.revenue_minor,
        refunded_minor: c.refunded_minor,
        average_order_minor: p.average_order_minor(),
        points_issued: c.points_issued,
        points_redeemed: c.points_redeemed,
        points_expired: c.points_expired,
        points_reversed: c.points_reversed,
        points_outstanding: p.running.points_change,
        redemption_rate_percent: p.redemption_rate_percent(),
        active_members,
        buyers: p.running.first_buyers,
        repeat_buyers: p.running.repeat_buyers,
        repeat_purchase_rate_percent: p.repeat_purchase_rate_percent(),
        churned: c.churned,
        reactivated: c.reactivated,
        churn_rate_percent: p.churn_rate_percent(),
    }
}

impl InsightsApi {
    async fn program_kpis(&self, r: pb::GetProgramKpisRequest) -> Result<pb::GetProgramKpisResponse, Status> {
        let now = self.insights.store().now();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        let (from, to) = days(&mut check, r.from.as_ref(), r.to.as_ref(), now);
        if to - from > MAX_KPI_DAYS * MICROS_PER_DAY {
            check.add(Err(FieldViolation::new("from", format!("must be at most {MAX_KPI_DAYS} days before to"))));
        }
        let granularity = match pb::Granularity::try_from(r.granularity) {
            Ok(pb::Granularity::Unspecified | pb::Granularity::Day) => (pb::Granularity::Day, Granularity::Day),
            Ok(pb::Granularity::Week) => (pb::Granularity::Week, Granularity::Week),
            Ok(pb::Granularity::Month) => (pb::Granularity::Month, Granularity::Month),
            Err(_) => {
                check.add(Err(FieldViolation::new("granularity", "must be DAY, WEEK, MONTH or unspecified")));
                (pb::Granularity::Day, Granularity::Day)
            }
        };
        check.done(DOMAIN)?;
        let store = self.insights.store();
        store.rebuild_pending(Some(&r.program_id)).await?;
        let (day_rows, before) = store.kpi_days(&r.program_id, from, to, domain::day_of(now)).await?;
        let settings = store.settings(&r.program_id).await?;
        let periods = domain::periods(&day_rows, before, from, to, granularity.1);
        let total = domain::total(&periods).ok_or_else(|| Status::internal("a range of no days"))?;
        let expected = domain::expected_redemption_percent(total.running.points_redeemed, total.running.points_expired);
        let bounds: Vec<(Micros, Micros)> = periods.iter().map(|p| (p.first_day, p.last_day)).collect();
        let active = match granularity.1 {
            Granularity::Day => periods.iter().map(|p| p.counts.day_buyers).collect(),
            Granularity::Week | Granularity::Month => self.active(&r.program_id, granularity.1, &bounds).await?,
        };
        let total_active = store.active_between(&r.program_id, from, to).await?;
        let points_outstanding = total.running.points_change;
        let referrals = match &self.referral {
            Some(source) => source.funnel(&r.program_id, from, to + MICROS_PER_DAY).await,
            None => None,
        };
        Ok(pb::GetProgramKpisResponse {
            referrals_unavailable: self.referral.is_some() && referrals.is_none(),
            referrals,
            granularity: granularity.0 as i32,
            periods: periods.iter().zip(active).map(|(p, active)| period_to_proto(p, active)).collect(),
            total: Some(period_to_proto(&total, total_active)),
            liability_minor: domain::liability_minor(points_outstanding, settings.point_value_milli_minor, expected),
            expected_redemption_percent: expected,
        })
    }
}

impl InsightsApi {
    /// Active members per week or month: a whole ISO week's or calendar
    /// month's are counted as orders arrive (`week_buyers`, the cohorts'
    /// counts for a month); only a partial first or last period is summed
    /// from `buyer_gaps`.
    async fn active(
        &self,
        program_id: &str,
        granularity: Granularity,
        bounds: &[(Micros, Micros)],
    ) -> Result<Vec<i64>, Status> {
        let store = self.insights.store();
        let whole = |&(first, last): &(Micros, Micros)| match granularity {
            Granularity::Week => first == domain::week_start(first) && last == first + 6 * MICROS_PER_DAY,
            Granularity::Month => {
                first == domain::month_of(first) && last == domain::add_months(first, 1) - MICROS_PER_DAY
            }
            Granularity::Day => first == last,
        };
        let partial: Vec<(Micros, Micros)> = bounds.iter().copied().filter(|b| !whole(b)).collect();
        let mut partial_counts = store.active_members(program_id, &partial).await?.into_iter();
        let (Some(&(first, _)), Some(&(last, _))) = (bounds.first(), bounds.last()) else {
            return Ok(Vec::new());
        };
        let counted = match granularity {
            Granularity::Week => store.week_buyers(program_id, first, last).await?,
            Granularity::Month | Granularity::Day => store.month_buyers(program_id, first, last).await?,
        };
        Ok(bounds
            .iter()
            .map(|b| match whole(b) {
                true => counted.get(&b.0).copied().unwrap_or(0),
                false => partial_counts.next().unwrap_or(0),
            })
            .collect())
    }

    async fn cohort_retention(
        &self,
        r: pb::GetCohortRetentionRequest,
    ) -> Result<pb::GetCohortRetentionResponse, Status> {
        let now = self.insights.store().now();
        let current = domain::month_of(now);
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        let last = check.timestamp("to", r.to.as_ref(), now).map_or(current, domain::month_of);
        let first = check
            .timestamp("from", r.from.as_ref(), now)
            .map_or_else(|| domain::add_months(last, 1 - DEFAULT_COHORTS), domain::month_of);
        if first > last {
            check.add(Err(FieldViolation::new("from", "must not be after to")));
        } else if domain::add_months(first, MAX_COHORTS) <= last {
            check.add(Err(FieldViolation::new("from", format!("must be at most {MAX_COHORTS} months before to"))));
        }
        check.done(DOMAIN)?;
        let store = self.insights.store();
        store.rebuild_pending(Some(&r.program_id)).await?;
        let counts = store.cohort_months(&r.program_id, first, last).await?;
        let cohorts = domain::cohorts(&counts, first, last, current);
        Ok(pb::GetCohortRetentionResponse {
            cohorts: cohorts
                .iter()
                .map(|c| pb::Cohort {
                    month: Some(to_timestamp(c.month)),
                    customers: c.customers(),
                    retained: c.retained.clone(),
                    retained_percent: c.retained_percent(),
                })
                .collect(),
        })
    }
}

/// The cohorts GetCohortRetention answers with when the request names none, and at most.
const DEFAULT_COHORTS: i64 = 12;
const MAX_COHORTS: i64 = 36;

fn answer_to_proto(a: &SurveyAnswer) -> pb::SurveyResponse {
    pb::SurveyResponse {
        response_id: a.response_id.clone(),
        customer_id: a.customer_id.clone(),
        kind: match a.kind {
            SurveyKind::Nps => pb::SurveyKind::Nps,
            SurveyKind::Csat => pb::SurveyKind::Csat,
        } as i32,
        score: a.score,
        comment: a.comment.clone(),
        answered_at: Some(to_timestamp(a.answered_at)),
    }
}

/// Longest survey comment, in characters.
const MAX_COMMENT_CHARS: usize = 2_000;
/// The days GetSurveyScores and GetProgramKpis count when the request names none: the last 30, today included.
const DEFAULT_SCORE_DAYS: i64 = 30;
/// The longest range GetProgramKpis answers for: three years.
const MAX_KPI_DAYS: i64 = 1_100;

/// `<value>:<customer id>`, as `next_page_token` writes it: the value a
/// plain number, the id any text without control characters (it is only a
/// bound to compare with), at most [`MAX_TOKEN_CHARS`] in all.
fn parse_token(token: &str) -> Option<(i64, String)> {
    let (value, id) = token.split_once(':')?;
    let value = validate::position(value)?;
    let fits = token.chars().count() <= MAX_TOKEN_CHARS && !id.is_empty() && !id.chars().any(char::is_control);
    fits.then(|| (value, id.to_owned()))
}

/// The longest page token: a value and an id of at most 128 characters fit.
const MAX_TOKEN_CHARS: usize = 200;

/// A customer's numbers as of `now`; RFM scores 0 (a list leaves them out).
fn numbers_to_proto(program_id: &str, row: &CustomerRow, settings: &Settings, now: Micros) -> pb::CustomerInsight {
    pb::CustomerInsight {
        program_id: program_id.to_owned(),
        customer_id: row.customer_id.clone(),
        first_order_at: row.first_order.map(to_timestamp),
        last_order_at: row.last_order.map(to_timestamp),
        order_count: row.order_count,
        spend_minor: row.spend_minor,
        average_order_minor: if row.order_count > 0 { row.spend_minor / row.order_count } else { 0 },
        days_since_last_order: domain::days_since(row.last_order, now),
        recency_score: 0,
        frequency_score: 0,
        monetary_score: 0,
        segment: segment_to_proto(row.segment) as i32,
        lifetime_value_minor: domain::lifetime_value(row.first_order, row.spend_minor, settings, now),
    }
}

fn insight_to_proto(program_id: &str, c: &CustomerInsight, settings: &Settings, now: Micros) -> pb::CustomerInsight {
    let (recency_score, frequency_score, monetary_score) = c.rfm;
    pb::CustomerInsight {
        recency_score,
        frequency_score,
        monetary_score,
        ..numbers_to_proto(program_id, &c.numbers, settings, now)
    }
}

fn settings_to_proto(s: &Settings) -> pb::InsightSettings {
    pb::InsightSettings {
        at_risk_days: s.at_risk_days,
        churned_days: s.churned_days,
        loyal_orders: s.loyal_orders,
        loyal_days: s.loyal_days,
        expected_lifespan_days: s.expected_lifespan_days,
        point_value_milli_minor: s.point_value_milli_minor,
        win_back_tier_id: s.win_back_tier_id.clone(),
        version: s.version,
    }
}

fn segment_to_proto(segment: Segment) -> pb::Segment {
    match segment {
        Segment::New => pb::Segment::New,
        Segment::Active => pb::Segment::Active,
        Segment::Loyal => pb::Segment::Loyal,
        Segment::AtRisk => pb::Segment::AtRisk,
        Segment::Churned => pb::Segment::Churned,
    }
}

fn segment_from_proto(segment: pb::Segment) -> Segment {
    match segment {
        pb::Segment::New | pb::Segment::Unspecified => Segment::New,
        pb::Segment::Active => Segment::Active,
        pb::Segment::Loyal => Segment::Loyal,
        pb::Segment::AtRisk => Segment::AtRisk,
        pb::Segment::Churned => Segment::Churned,
    }
}
