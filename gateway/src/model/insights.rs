//! Insights (admin scope): a customer's numbers and segment, the program's
//! customers by segment, how many each segment holds, and the thresholds.

use super::*;

/// Served as the insights service answers them: loyalty-proto derives their
/// JSON and schema.
pub use insights_pb::{
    Cohort, CsatScore, CustomerInsight, CustomerOrder, GetCohortRetentionResponse as CohortRetention,
    GetProgramKpisResponse as ProgramKpis, GetSegmentCountsResponse as SegmentCounts,
    GetSurveyScoresResponse as SurveyScores, Granularity, InsightSettings, Kpis,
    ListSegmentChangesResponse as SegmentChanges, NpsScore, Segment, SegmentChange, SegmentCount, SurveyKind,
    SurveyResponse,
};

/// Which customers, in what order, from where.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CustomerListQuery {
    /// Only the customers in this segment; absent: every customer.
    pub segment: Option<Segment>,
    /// `spend` (the default) or `recency` (the last order): highest first.
    pub order_by: Option<CustomerOrder>,
    /// Customers per page, at most 200; absent or 0: 50.
    #[param(minimum = 0, maximum = 200)]
    pub page_size: Option<i32>,
    /// The `next_page_token` of the previous page; absent: the first page.
    pub page_token: Option<String>,
}

impl CustomerListQuery {
    pub fn into_proto(self, program_id: &str) -> insights_pb::ListCustomersRequest {
        insights_pb::ListCustomersRequest {
            program_id: program_id.to_owned(),
            segment: self.segment.map_or(0, Into::into),
            order_by: self.order_by.map_or(0, Into::into),
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.unwrap_or_default(),
        }
    }
}

/// One page of the program's customers (without RFM scores: the customer's
/// own insight has them).
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    pub customers: Vec<CustomerInsight>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<insights_pb::ListCustomersResponse> for CustomerPage {
    fn from(r: insights_pb::ListCustomersResponse) -> Self {
        Self { customers: r.customers, next_page_token: non_empty(r.next_page_token) }
    }
}

/// The thresholds segments and the lifetime value estimate use.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InsightSettingsBody {
    /// A customer who ordered at least twice is at risk after this many days without an order.
    pub at_risk_days: i32,
    /// Any customer is churned after this many days without an order; must be more than `at_risk_days`.
    pub churned_days: i32,
    /// Loyal: at least `loyal_orders` orders in the last `loyal_days` days.
    pub loyal_orders: i32,
    pub loyal_days: i32,
    /// How long a customer is expected to stay, in days, for the lifetime value estimate.
    pub expected_lifespan_days: i32,
    /// What one point is worth to the shop, in thousandths of a minor unit (1000: 0.01), for the
    /// points liability; 0 (the default): no liability is reported.
    #[serde(default)]
    pub point_value_milli_minor: i64,
    /// A hidden tier of the ladder that customers hold while `at_risk` (assigned when they become
    /// at risk unless the shop assigned them a tier by hand, ended when they leave). Absent: none.
    #[serde(default)]
    pub win_back_tier_id: String,
    /// When set, the change is refused (409 `VERSION_MISMATCH`) unless the stored version still matches.
    pub expected_version: Option<i64>,
}

impl InsightSettingsBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> insights_pb::PutInsightSettingsRequest {
        insights_pb::PutInsightSettingsRequest {
            program_id: program_id.to_owned(),
            settings: Some(insights_pb::InsightSettings {
                at_risk_days: self.at_risk_days,
                churned_days: self.churned_days,
                loyal_orders: self.loyal_orders,
                loyal_days: self.loyal_days,
                expected_lifespan_days: self.expected_lifespan_days,
                point_value_milli_minor: self.point_value_milli_minor,
                win_back_tier_id: self.win_back_tier_id,
                version: 0,
            }),
            actor,
            idempotency_key: key,
            expected_version: self.expected_version,
        }
    }
}

pub fn customer_insight_request(program_id: &str, customer_id: String) -> insights_pb::GetCustomerInsightRequest {
    insights_pb::GetCustomerInsightRequest { program_id: program_id.to_owned(), customer_id }
}

pub fn segment_counts_request(program_id: &str) -> insights_pb::GetSegmentCountsRequest {
    insights_pb::GetSegmentCountsRequest { program_id: program_id.to_owned() }
}

pub fn insight_settings_request(program_id: &str) -> insights_pb::GetInsightSettingsRequest {
    insights_pb::GetInsightSettingsRequest { program_id: program_id.to_owned() }
}

/// A customer's answer to a survey.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyBody {
    /// `nps` ("how likely are you to recommend us?") or `csat` ("how satisfied are you?").
    pub kind: SurveyKind,
    /// 0 to 10 for `nps`, 1 to 5 for `csat`.
    pub score: i32,
    /// What the customer wrote, if anything.
    #[serde(default)]
    pub comment: String,
    /// RFC 3339; when the customer answered, not in the future. Absent: now.
    #[schema(format = DateTime)]
    pub answered_at: Option<String>,
}

impl SurveyBody {
    pub fn into_proto(
        self,
        program_id: &str,
        customer_id: String,
        key: String,
    ) -> Result<insights_pb::RecordSurveyResponseRequest, Problem> {
        Ok(insights_pb::RecordSurveyResponseRequest {
            program_id: program_id.to_owned(),
            customer_id,
            kind: self.kind.into(),
            score: self.score,
            comment: self.comment,
            answered_at: self.answered_at.as_deref().map(|at| time_in("answered_at", at)).transpose()?,
            idempotency_key: key,
        })
    }
}

/// The UTC days whose answers count.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SurveyScoresQuery {
    /// RFC 3339; the first day counted (its time of day is ignored). Absent: 29 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; the last day counted, not before `from`. Absent: today.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

impl SurveyScoresQuery {
    pub fn into_proto(self, program_id: &str) -> Result<insights_pb::GetSurveyScoresRequest, Problem> {
        Ok(insights_pb::GetSurveyScoresRequest {
            program_id: program_id.to_owned(),
            from: self.from.as_deref().map(|at| time_in("from", at)).transpose()?,
            to: self.to.as_deref().map(|at| time_in("to", at)).transpose()?,
        })
    }
}

/// Where to read segment changes from.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SegmentChangesQuery {
    /// Only changes after this sequence (a previous answer's `next_after_sequence`). Absent: from the first.
    #[param(minimum = 0)]
    pub after_sequence: Option<i64>,
    /// Changes per page, at most 200; absent or 0: 50.
    #[param(minimum = 0, maximum = 200)]
    pub page_size: Option<i32>,
}

impl SegmentChangesQuery {
    pub fn into_proto(self, program_id: &str) -> insights_pb::ListSegmentChangesRequest {
        insights_pb::ListSegmentChangesRequest {
            program_id: program_id.to_owned(),
            after_sequence: self.after_sequence.unwrap_or(0),
            page_size: self.page_size.unwrap_or(0),
        }
    }
}

/// The months whose first-time customers are followed.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CohortsQuery {
    /// RFC 3339; its calendar month (UTC) is the first cohort. Absent: 11 months before `to`'s.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; its calendar month is the last cohort, at most 35 months after `from`'s. Absent: this month.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

impl CohortsQuery {
    pub fn into_proto(self, program_id: &str) -> Result<insights_pb::GetCohortRetentionRequest, Problem> {
        Ok(insights_pb::GetCohortRetentionRequest {
            program_id: program_id.to_owned(),
            from: self.from.as_deref().map(|at| time_in("from", at)).transpose()?,
            to: self.to.as_deref().map(|at| time_in("to", at)).transpose()?,
        })
    }
}

/// The UTC days whose numbers count, and how they are cut.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KpisQuery {
    /// RFC 3339; the first day counted (its time of day is ignored). Absent: 29 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; the last day counted, not before `from`, at most 1,100 days after it. Absent: today.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `day` (the default), `week` (Monday to Sunday) or `month`.
    pub granularity: Option<Granularity>,
}

impl KpisQuery {
    pub fn into_proto(self, program_id: &str) -> Result<insights_pb::GetProgramKpisRequest, Problem> {
        Ok(insights_pb::GetProgramKpisRequest {
            program_id: program_id.to_owned(),
            from: self.from.as_deref().map(|at| time_in("from", at)).transpose()?,
            to: self.to.as_deref().map(|at| time_in("to", at)).transpose()?,
            granularity: self.granularity.map_or(0, Into::into),
        })
    }
}
