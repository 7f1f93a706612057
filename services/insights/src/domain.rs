//! What a customer's orders say about them, free of transport and storage:
//! the lifecycle segment and when it next changes by time alone, RFM
//! quintiles, and the lifetime value estimate.

use serde::{Deserialize, Serialize};

use loyalty_common::clock::{MICROS_PER_DAY, Micros, civil_from_days, days_from_civil};
use loyalty_common::validate::FieldViolation;

/// Where a customer stands in their life with the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    New,
    Active,
    Loyal,
    AtRisk,
    Churned,
}

impl Segment {
    pub const ALL: [Segment; 5] = [Self::New, Self::Active, Self::Loyal, Self::AtRisk, Self::Churned];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Active => "active",
            Self::Loyal => "loyal",
            Self::AtRisk => "at_risk",
            Self::Churned => "churned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A program's thresholds; `version` 0 while the defaults apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub at_risk_days: i32,
    pub churned_days: i32,
    pub loyal_orders: i32,
    pub loyal_days: i32,
    pub expected_lifespan_days: i32,
    /// What one point is worth, in thousandths of a minor unit; 0: no liability reported.
    #[serde(default)]
    pub point_value_milli_minor: i64,
    /// The hidden tier customers hold while at risk; empty: none.
    #[serde(default)]
    pub win_back_tier_id: String,
    pub version: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            at_risk_days: 60,
            churned_days: 180,
            loyal_orders: 3,
            loyal_days: 90,
            expected_lifespan_days: 1095,
            point_value_milli_minor: 0,
            win_back_tier_id: String::new(),
            version: 0,
        }
    }
}

/// Most a point may be worth: 1,000 minor units (thousandths of a minor unit).
pub const MAX_POINT_VALUE_MILLI_MINOR: i64 = 1_000_000;

/// Longest threshold, in days: ten years, as every other window of a program.
pub const MAX_DAYS: i32 = 3_660;

impl Settings {
    /// Whether `other` puts every customer in the same segment (only the
    /// lifetime value's and the liability's settings differ).
    pub fn same_segments(&self, other: &Settings) -> bool {
        (self.at_risk_days, self.churned_days, self.loyal_orders, self.loyal_days)
            == (other.at_risk_days, other.churned_days, other.loyal_orders, other.loyal_days)
    }

    /// Every threshold out of range, named by its field under `settings.`.
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut bad = Vec::new();
        for (field, value) in [
            ("at_risk_days", self.at_risk_days),
            ("churned_days", self.churned_days),
            ("loyal_days", self.loyal_days),
            ("expected_lifespan_days", self.expected_lifespan_days),
        ] {
            if !(1..=MAX_DAYS).contains(&value) {
                bad.push(FieldViolation::new(format!("settings.{field}"), format!("must be between 1 and {MAX_DAYS}")));
            }
        }
        if !(1..=1_000).contains(&self.loyal_orders) {
            bad.push(FieldViolation::new("settings.loyal_orders", "must be between 1 and 1000"));
        }
        if !(0..=MAX_POINT_VALUE_MILLI_MINOR).contains(&self.point_value_milli_minor) {
            bad.push(FieldViolation::new(
                "settings.point_value_milli_minor",
                format!("must be between 0 and {MAX_POINT_VALUE_MILLI_MINOR}"),
            ));
        }
        if !self.win_back_tier_id.is_empty()
            && let Err(violation) = loyalty_common::validate::id("settings.win_back_tier_id", &self.win_back_tier_id)
        {
            bad.push(violation);
        }
        if self.churned_days <= self.at_risk_days {
            bad.push(FieldViolation::new("settings.churned_days", "must be more than at_risk_days"));
        }
        bad
    }
}

/// A customer's move from one segment to another (from none: their first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentChange {
    pub sequence: i64,
    pub program_id: String,
    pub customer_id: String,
    pub from: Option<Segment>,
    pub to: Segment,
    pub at: Micros,
}

/// What the win-back rule does about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinBack {
    /// The customer became at risk: give them the win-back tier.
    Assign,
    /// They are no longer at risk: end it.
    End,
}

impl SegmentChange {
    pub fn win_back(&self) -> Option<WinBack> {
        let was = self.from == Some(Segment::AtRisk);
        match (was, self.to == Segment::AtRisk) {
            (false, true) => Some(WinBack::Assign),
            (true, false) => Some(WinBack::End),
            _ => None,
        }
    }
}

/// What is known of one customer's orders: those not refunded in full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// When each counting order was placed, oldest first.
    pub order_times: Vec<Micros>,
    /// Their amounts with refunds subtracted, in minor units.
    pub spend_minor: i64,
}

impl History {
    pub fn order_count(&self) -> i64 {
        i64::try_from(self.order_times.len()).unwrap_or(i64::MAX)
    }

    pub fn first_order(&self) -> Option<Micros> {
        self.order_times.first().copied()
    }

    pub fn last_order(&self) -> Option<Micros> {
        self.order_times.last().copied()
    }

    /// The segment at `now`, and the next instant at which time alone
    /// changes it (none once churned, or without orders).
    pub fn segment(&self, settings: &Settings, now: Micros) -> (Segment, Option<Micros>) {
        let Some(last) = self.last_order() else {
            return (Segment::New, None);
        };
        let days = |d: i32| i64::from(d) * MICROS_PER_DAY;
        let churned_at = last + days(settings.churned_days);
        let at_risk_at = (self.order_count() >= 2).then(|| last + days(settings.at_risk_days));
        // Loyal while the `loyal_orders`-th most recent order is within `loyal_days`.
        let loyal_until = usize::try_from(settings.loyal_orders)
            .ok()
            .filter(|&n| n >= 1 && n <= self.order_times.len())
            .map(|n| self.order_times[self.order_times.len() - n] + days(settings.loyal_days));
        let segment = if now >= churned_at {
            Segment::Churned
        } else if at_risk_at.is_some_and(|at| now >= at) {
            Segment::AtRisk
        } else if loyal_until.is_some_and(|until| now < until) {
            Segment::Loyal
        } else if self.order_count() >= 2 {
            Segment::Active
        } else {
            Segment::New
        };
        let next = [Some(churned_at), at_risk_at, loyal_until].into_iter().flatten().filter(|&at| at > now).min();
        (segment, next)
    }

    /// See [`lifetime_value`].
    pub fn lifetime_value(&self, settings: &Settings, now: Micros) -> i64 {
        lifetime_value(self.first_order(), self.spend_minor, settings, now)
    }
}

/// Average order value × orders per year × expected lifespan, in minor
/// units, rounded down. Orders per year count over the customer's tenure
/// (first order to `now`, at least 30 days, so a brand-new customer is not
/// taken for one who orders daily), so the estimate comes to
/// spend × lifespan / tenure. 0 without orders.
pub fn lifetime_value(first_order: Option<Micros>, spend_minor: i64, settings: &Settings, now: Micros) -> i64 {
    let Some(first) = first_order else {
        return 0;
    };
    let tenure_days = ((now - first) / MICROS_PER_DAY).max(30);
    let value = i128::from(spend_minor.max(0)) * i128::from(settings.expected_lifespan_days) / i128::from(tenure_days);
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whole days from `at` to `now` (0 without an instant).
pub fn days_since(at: Option<Micros>, now: Micros) -> i32 {
    at.map_or(0, |at| i32::try_from(((now - at) / MICROS_PER_DAY).max(0)).unwrap_or(i32::MAX))
}

/// The quintile (1 to 5) of a customer of whom `below` out of `total`
/// customers score strictly lower: equal values share a score. 0 when
/// nobody is ranked.
pub fn quintile(below: i64, total: i64) -> i32 {
    if total <= 0 {
        return 0;
    }
    let score = 1 + (5 * below.clamp(0, total)) / total;
    i32::try_from(score.min(5)).unwrap_or(5)
}

/// What a survey asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SurveyKind {
    /// "How likely are you to recommend us?", 0 to 10.
    Nps,
    /// "How satisfied are you?", 1 to 5.
    Csat,
}

impl SurveyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nps => "nps",
            Self::Csat => "csat",
        }
    }

    /// The scores an answer may give.
    pub fn scores(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Self::Nps => 0..=10,
            Self::Csat => 1..=5,
        }
    }
}

/// One customer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyAnswer {
    pub response_id: String,
    pub customer_id: String,
    pub kind: SurveyKind,
    pub score: i32,
    pub comment: String,
    pub answered_at: Micros,
}

/// Net Promoter Score of some answers: promoters 9–10, passives 7–8,
/// detractors 0–6; `nps` = % promoters − % detractors, rounded toward zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nps {
    pub responses: i64,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    pub nps: i32,
}

impl Nps {
    /// From (score, answers) counts.
    pub fn of(counts: &[(i32, i64)]) -> Self {
        let count = |range: std::ops::RangeInclusive<i32>| -> i64 {
            counts.iter().filter(|(score, _)| range.contains(score)).map(|(_, n)| n).sum()
        };
        let (promoters, passives, detractors) = (count(9..=10), count(7..=8), count(0..=6));
        let responses = promoters + passives + detractors;
        let nps = if responses == 0 { 0 } else { (promoters - detractors) * 100 / responses };
        Self { responses, promoters, passives, detractors, nps: i32::try_from(nps).unwrap_or(0) }
    }
}

/// Customer satisfaction of some answers: the share of 4s and 5s, and the mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Csat {
    pub responses: i64,
    pub satisfied: i64,
    /// Percent, rounded down.
    pub csat_percent: i32,
    /// The mean score × 100, rounded down.
    pub average_centi: i32,
}

impl Csat {
    /// From (score, answers) counts.
    pub fn of(counts: &[(i32, i64)]) -> Self {
        let answers = counts.iter().filter(|(score, _)| (1..=5).contains(score));
        let (responses, satisfied, total) = answers.fold((0_i64, 0_i64, 0_i64), |(r, s, t), &(score, n)| {
            (r + n, s + if score >= 4 { n } else { 0 }, t + i64::from(score) * n)
        });
        if responses == 0 {
            return Self::default();
        }
        let percent = |part: i64| i32::try_from(part * 100 / responses).unwrap_or(0);
        Self { responses, satisfied, csat_percent: percent(satisfied), average_centi: percent(total) }
    }
}

/// The UTC day an instant falls on, as the instant of its midnight.
pub fn day_of(at: Micros) -> Micros {
    at.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY
}

/// One day's (or a period's) counts, as kept per day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub new_members: i64,
    pub orders: i64,
    pub revenue_minor: i64,
    pub refunded_minor: i64,
    pub points_issued: i64,
    pub points_redeemed: i64,
    pub points_expired: i64,
    pub points_reversed: i64,
    pub points_change: i64,
    /// Customers whose first (second) order was that day.
    pub first_buyers: i64,
    pub repeat_buyers: i64,
    /// Customers who churned that day (`churned_days` after the last day
    /// they ordered), and who ordered again that day after churning.
    pub churned: i64,
    pub reactivated: i64,
    /// Customers who ordered that day, each once.
    pub day_buyers: i64,
}

impl std::ops::AddAssign for DayCounts {
    fn add_assign(&mut self, o: Self) {
        self.new_members += o.new_members;
        self.orders += o.orders;
        self.revenue_minor += o.revenue_minor;
        self.refunded_minor += o.refunded_minor;
        self.points_issued += o.points_issued;
        self.points_redeemed += o.points_redeemed;
        self.points_expired += o.points_expired;
        self.points_reversed += o.points_reversed;
        self.points_change += o.points_change;
        self.first_buyers += o.first_buyers;
        self.repeat_buyers += o.repeat_buyers;
        self.churned += o.churned;
        self.reactivated += o.reactivated;
        self.day_buyers += o.day_buyers;
    }
}

impl DayCounts {
    /// Buyers not churned: every first buyer, less the churned, plus the reactivated.
    pub fn live_buyers(&self) -> i64 {
        self.first_buyers - self.churned + self.reactivated
    }
}

/// How a range is cut into periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    /// ISO weeks, Monday to Sunday.
    Week,
    Month,
}

/// A period's days and counts, and the sums of every day up to its last
/// (members, buyers and outstanding points as of then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub first_day: Micros,
    pub last_day: Micros,
    pub counts: DayCounts,
    pub running: DayCounts,
}

impl Period {
    /// (revenue − refunds) / orders, rounded down.
    pub fn average_order_minor(&self) -> i64 {
        let c = &self.counts;
        if c.orders == 0 { 0 } else { (c.revenue_minor - c.refunded_minor) / c.orders }
    }

    /// Redeemed / issued in percent, rounded down.
    pub fn redemption_rate_percent(&self) -> i32 {
        percent(self.counts.points_redeemed, self.counts.points_issued)
    }

    /// Buyers who ordered at least twice, in percent of every buyer so far, rounded down.
    pub fn repeat_purchase_rate_percent(&self) -> i32 {
        percent(self.running.repeat_buyers, self.running.first_buyers)
    }

    /// Buyers not churned when the period began.
    pub fn live_buyers_at_start(&self) -> i64 {
        self.running.live_buyers() - self.counts.live_buyers()
    }

    /// Customers who churned in the period, in percent of every buyer not
    /// churned at some time in it (those at its start, its first buyers and
    /// its reactivated), rounded down.
    pub fn churn_rate_percent(&self) -> i32 {
        let c = &self.counts;
        percent(c.churned, self.live_buyers_at_start() + c.first_buyers + c.reactivated)
    }
}

/// How a customer's order on `day` moves the churn counts, given the last
/// day they had ordered before (`previous`), and `churned_days`: a list of
/// (day, churned, reactivated) changes. A customer churns `churned_days`
/// after their last order day; an order before then moves that day later,
/// an order on or after it reactivates them (the churn stays counted).
/// An order on or before the previous day changes nothing.
pub fn churn_changes(previous: Option<Micros>, day: Micros, churned_days: i32) -> Vec<(Micros, i64, i64)> {
    let after = i64::from(churned_days) * MICROS_PER_DAY;
    match previous {
        None => vec![(day + after, 1, 0)],
        Some(last) if day <= last => Vec::new(),
        Some(last) if day < last + after => vec![(last + after, -1, 0), (day + after, 1, 0)],
        Some(_) => vec![(day, 0, 1), (day + after, 1, 0)],
    }
}

/// The previous order day of a customer's first: before every day.
pub const NO_DAY: Micros = Micros::MIN;

/// The first instant of the calendar month (UTC) `at` falls in.
pub fn month_of(at: Micros) -> Micros {
    let (year, month, _) = civil_from_days(at.div_euclid(MICROS_PER_DAY));
    days_from_civil(year, month, 1) * MICROS_PER_DAY
}

/// The first instant of the month `months` after the one starting at `month`.
pub fn add_months(month: Micros, months: i64) -> Micros {
    let (year, m, _) = civil_from_days(month.div_euclid(MICROS_PER_DAY));
    let index = i64::from(year) * 12 + i64::from(m) - 1 + months;
    let (year, m) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    days_from_civil(i32::try_from(year).unwrap_or(i32::MAX), u32::try_from(m).unwrap_or(1), 1) * MICROS_PER_DAY
}

/// The customers whose first order fell in one month, and how many of them
/// ordered in that month and each one after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    pub month: Micros,
    /// `retained[k]`: customers of the cohort who ordered in the k-th month
    /// after its own; `retained[0]` is the cohort's size.
    pub retained: Vec<i64>,
}

impl Cohort {
    pub fn customers(&self) -> i64 {
        self.retained.first().copied().unwrap_or(0)
    }

    /// `retained[k]` in percent of the cohort, rounded down.
    pub fn retained_percent(&self) -> Vec<i32> {
        self.retained.iter().map(|&n| percent(n, self.customers())).collect()
    }
}

/// The cohorts of the months from `first` to `last` (month starts), each
/// with its months up to `current`, from (cohort, month, customers) counts.
pub fn cohorts(counts: &[(Micros, Micros, i64)], first: Micros, last: Micros, current: Micros) -> Vec<Cohort> {
    let counts: std::collections::HashMap<(Micros, Micros), i64> =
        counts.iter().map(|&(cohort, month, n)| ((cohort, month), n)).collect();
    let mut cohorts = Vec::new();
    let mut month = first;
    while month <= last {
        let mut retained = Vec::new();
        let mut at = month;
        while at <= current {
            retained.push(counts.get(&(month, at)).copied().unwrap_or(0));
            at = add_months(at, 1);
        }
        cohorts.push(Cohort { month, retained });
        month = add_months(month, 1);
    }
    cohorts
}

/// `part / whole` in percent, rounded down; 0 when `whole` is not positive.
fn percent(part: i64, whole: i64) -> i32 {
    if whole <= 0 { 0 } else { i32::try_from(i128::from(part) * 100 / i128::from(whole)).unwrap_or(0) }
}

/// Cuts the days `first_day..=last_day` into periods, each with the sum of
/// its `days` (day midnight → counts; missing days count zero), and the
/// running sums from `before` (the sums of every day before the range).
pub fn periods(
    days: &[(Micros, DayCounts)],
    before: DayCounts,
    first_day: Micros,
    last_day: Micros,
    granularity: Granularity,
) -> Vec<Period> {
    let mut periods: Vec<Period> = Vec::new();
    let mut day = first_day;
    while day <= last_day {
        let end = match granularity {
            Granularity::Day => day,
            Granularity::Week => week_start(day) + 6 * MICROS_PER_DAY,
            Granularity::Month => next_month_start(day) - MICROS_PER_DAY,
        }
        .min(last_day);
        let empty = DayCounts::default();
        periods.push(Period { first_day: day, last_day: end, counts: empty, running: empty });
        day = end + MICROS_PER_DAY;
    }
    for &(day, counts) in days {
        // Periods are in order: the one holding `day` is the last that starts by then.
        let index = periods.partition_point(|p| p.first_day <= day);
        if let Some(period) = index.checked_sub(1).map(|i| &mut periods[i]).filter(|p| day <= p.last_day) {
            period.counts += counts;
        }
    }
    let mut running = before;
    for period in &mut periods {
        running += period.counts;
        period.running = running;
    }
    periods
}

/// The whole range of `periods` as one period.
pub fn total(periods: &[Period]) -> Option<Period> {
    let (first, last) = (periods.first()?, periods.last()?);
    let mut counts = DayCounts::default();
    for period in periods {
        counts += period.counts;
    }
    Some(Period { first_day: first.first_day, last_day: last.last_day, counts, running: last.running })
}

/// The share of points that end up redeemed, from the history so far:
/// redeemed / (redeemed + expired) in percent; 100 before anything was either.
pub fn expected_redemption_percent(redeemed: i64, expired: i64) -> i32 {
    if redeemed + expired <= 0 { 100 } else { percent(redeemed, redeemed + expired) }
}

/// Outstanding points × value (thousandths of a minor unit) × expected
/// redemption, in minor units, rounded down.
pub fn liability_minor(outstanding: i64, point_value_milli_minor: i64, expected_percent: i32) -> i64 {
    let value =
        i128::from(outstanding.max(0)) * i128::from(point_value_milli_minor) * i128::from(expected_percent) / 100_000;
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The Monday (UTC) of the ISO week `day` falls in; 1970-01-01 was a Thursday.
pub fn week_start(day: Micros) -> Micros {
    let index = day.div_euclid(MICROS_PER_DAY);
    (index - (index + 3).rem_euclid(7)) * MICROS_PER_DAY
}

/// The first day of the calendar month after `day`'s (UTC).
fn next_month_start(day: Micros) -> Micros {
    add_months(month_of(day), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Micros = MICROS_PER_DAY;

    fn history(days_ago: &[i64], now: Micros, spend_minor: i64) -> History {
        let mut order_times: Vec<Micros> = days_ago.iter().map(|d| now - d * DAY).collect();
        order_times.sort_unstable();
        History { order_times, spend_minor }
    }

    #[test]
    fn segments_follow_the_default_thresholds() {
        let s = Settings::default();
        let now = 1_000 * DAY;
        assert_eq!(History::default().segment(&s, now), (Segment::New, None));
        // One order ten days ago: new, until churned at 180 days.
        assert_eq!(history(&[10], now, 1).segment(&s, now), (Segment::New, Some(now + 170 * DAY)));
        // One order 100 days ago: still new (at risk needs two orders).
        assert_eq!(history(&[100], now, 1).segment(&s, now).0, Segment::New);
        // Two orders, the last 10 days ago: active, at risk at day 60.
        assert_eq!(history(&[40, 10], now, 1).segment(&s, now), (Segment::Active, Some(now + 50 * DAY)));
        // Two orders, the last 61 days ago: at risk, churned at day 180.
        assert_eq!(history(&[90, 61], now, 1).segment(&s, now), (Segment::AtRisk, Some(now + 119 * DAY)));
        // Anything 180 days quiet is churned, and stays so.
        assert_eq!(history(&[300, 200, 180], now, 1).segment(&s, now), (Segment::Churned, None));
        // Three orders within 90 days: loyal until the oldest of them is 90 days old.
        assert_eq!(history(&[80, 30, 5], now, 1).segment(&s, now), (Segment::Loyal, Some(now + 10 * DAY)));
        // ... then active.
        assert_eq!(history(&[91, 31, 6], now, 1).segment(&s, now).0, Segment::Active);
    }

    #[test]
    fn quintiles_split_the_ranking_in_fifths_and_ties_share() {
        assert_eq!((0..5).map(|below| quintile(below, 5)).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!((0..10).map(|below| quintile(below, 10)).collect::<Vec<_>>(), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(quintile(0, 1), 1);
        assert_eq!(quintile(0, 0), 0);
    }

    #[test]
    fn lifetime_value_is_spend_over_tenure_times_lifespan() {
        let s = Settings::default();
        let now = 1_000 * DAY;
        // 3 orders, 300.00 spent over 100 days: 300.00 × 1095 / 100 = 3285.00.
        assert_eq!(history(&[100, 50, 1], now, 30_000).lifetime_value(&s, now), 328_500);
        // A first order yesterday counts over 30 days, not one.
        assert_eq!(history(&[1], now, 5_000).lifetime_value(&s, now), 5_000 * 1095 / 30);
        assert_eq!(History::default().lifetime_value(&s, now), 0);
    }

    #[test]
    fn nps_and_csat_count_as_published() {
        // 10 answers: 5 promoters (9, 10), 2 passives, 3 detractors: 50 % − 30 % = 20.
        let nps = Nps::of(&[(10, 3), (9, 2), (8, 1), (7, 1), (6, 2), (0, 1)]);
        assert_eq!((nps.responses, nps.promoters, nps.passives, nps.detractors, nps.nps), (10, 5, 2, 3, 20));
        // Rounded toward zero: 1 promoter, 2 detractors of 3 is −33.3 → −33.
        assert_eq!(Nps::of(&[(10, 1), (3, 2)]).nps, -33);
        assert_eq!(Nps::of(&[]), Nps::default());
        // 4 answers 5, 4, 3, 1: 2 satisfied (50 %), mean 3.25.
        let csat = Csat::of(&[(5, 1), (4, 1), (3, 1), (1, 1)]);
        assert_eq!((csat.responses, csat.satisfied, csat.csat_percent, csat.average_centi), (4, 2, 50, 325));
        assert_eq!(day_of(3 * DAY + 5), 3 * DAY);
        assert_eq!(day_of(-1), -DAY);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        // 2025-11-24 (a Monday) is day 20416.
        let monday = 20_416 * DAY;
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(week_start(monday), monday);
        assert_eq!(week_start(monday + 6 * DAY), monday);
        assert_eq!(week_start(monday + 7 * DAY), monday + 7 * DAY);
        assert_eq!(next_month_start(monday), monday + 7 * DAY);
        assert_eq!(next_month_start(days_from_civil(2024, 2, 29) * DAY), days_from_civil(2024, 3, 1) * DAY);
        assert_eq!(next_month_start(days_from_civil(2024, 12, 31) * DAY), days_from_civil(2025, 1, 1) * DAY);
    }

    #[test]
    fn periods_cut_the_range_and_carry_the_running_totals() {
        let monday = 20_416 * DAY;
        let day = |members, change| DayCounts { new_members: members, points_change: change, ..DayCounts::default() };
        let days = [(monday, day(2, 100)), (monday + 8 * DAY, day(1, -30)), (monday + 12 * DAY, day(0, 5))];
        let before = day(10, 1_000);
        // From Wednesday to the second Sunday after: a partial week, then a whole one.
        let weeks = periods(&days, before, monday + 2 * DAY, monday + 13 * DAY, Granularity::Week);
        assert_eq!(weeks.len(), 2);
        assert_eq!((weeks[0].first_day, weeks[0].last_day), (monday + 2 * DAY, monday + 6 * DAY));
        assert_eq!((weeks[0].running.new_members, weeks[0].running.points_change), (10, 1_000));
        assert_eq!(
            (weeks[1].counts.new_members, weeks[1].running.new_members, weeks[1].running.points_change),
            (1, 11, 975)
        );
        // Monday 24 November to Sunday 7 December: November's last week, then December's first.
        let months = periods(&days, before, monday, monday + 13 * DAY, Granularity::Month);
        let bounds: Vec<_> = months.iter().map(|p| (p.first_day, p.last_day)).collect();
        assert_eq!(bounds, [(monday, monday + 6 * DAY), (monday + 7 * DAY, monday + 13 * DAY)]);
        assert_eq!((months[0].running.points_change, months[1].running.points_change), (1_100, 1_075));
        assert_eq!(periods(&days, before, monday, monday + 2 * DAY, Granularity::Day).len(), 3);
        let whole = total(&weeks).unwrap();
        assert_eq!((whole.first_day, whole.last_day), (monday + 2 * DAY, monday + 13 * DAY));
        assert_eq!((whole.counts.new_members, whole.running.points_change), (1, 975));
    }

    #[test]
    fn liability_applies_the_value_and_the_expected_redemption() {
        assert_eq!(expected_redemption_percent(0, 0), 100);
        assert_eq!(expected_redemption_percent(300, 100), 75);
        // 10,000 points at 0.01 each (1,000 milli-minor) redeemed at 75 %: 75.00.
        assert_eq!(liability_minor(10_000, 1_000, 75), 7_500);
        assert_eq!(liability_minor(10_000, 0, 75), 0);
    }

    #[test]
    fn churn_moves_with_each_order_and_reactivation_keeps_it() {
        let d = |n: i64| n * DAY;
        // A first order on day 10: churns on day 190.
        assert_eq!(churn_changes(None, d(10), 180), [(d(190), 1, 0)]);
        // Another on day 100 moves it to day 280.
        assert_eq!(churn_changes(Some(d(10)), d(100), 180), [(d(190), -1, 0), (d(280), 1, 0)]);
        // On day 190 itself it had churned: reactivated that day, churning again on 370.
        assert_eq!(churn_changes(Some(d(10)), d(190), 180), [(d(190), 0, 1), (d(370), 1, 0)]);
        // A second order the same day, or an earlier one, changes nothing.
        assert!(churn_changes(Some(d(10)), d(10), 180).is_empty());
        assert!(churn_changes(Some(d(10)), d(5), 180).is_empty());
    }

    #[test]
    fn churn_rate_counts_everyone_live_in_the_period() {
        // 10 buyers before, 2 churned and 1 back: 9 live at the start; in the
        // period 1 new buyer, 1 reactivated, 2 churned: 2 / (9 + 1 + 1) = 18 %.
        let before = DayCounts { first_buyers: 10, churned: 2, reactivated: 1, ..DayCounts::default() };
        let counts = DayCounts { first_buyers: 1, churned: 2, reactivated: 1, ..DayCounts::default() };
        let mut running = before;
        running += counts;
        let period = Period { first_day: 0, last_day: 0, counts, running };
        assert_eq!(period.live_buyers_at_start(), 9);
        assert_eq!(period.churn_rate_percent(), 18);
    }

    #[test]
    fn cohorts_count_months_since_the_first_order() {
        let jan = days_from_civil(2026, 1, 1) * DAY;
        let (feb, mar) = (add_months(jan, 1), add_months(jan, 2));
        assert_eq!(month_of(jan + 40 * DAY), feb);
        assert_eq!(add_months(jan, -1), days_from_civil(2025, 12, 1) * DAY);
        assert_eq!(add_months(jan, 13), days_from_civil(2027, 2, 1) * DAY);
        // January's cohort: 4 customers, 2 back in February, 1 in March; February's: 3, 3 back in March.
        let counts = [(jan, jan, 4), (jan, feb, 2), (jan, mar, 1), (feb, feb, 3), (feb, mar, 3)];
        let cohorts = cohorts(&counts, jan, feb, mar);
        assert_eq!(cohorts.len(), 2);
        assert_eq!((cohorts[0].customers(), cohorts[0].retained.clone()), (4, vec![4, 2, 1]));
        assert_eq!(cohorts[0].retained_percent(), [100, 50, 25]);
        assert_eq!((cohorts[1].month, cohorts[1].retained.clone()), (feb, vec![3, 3]));
    }

    #[test]
    fn the_win_back_tier_follows_entering_and_leaving_at_risk() {
        let change =
            |from, to| SegmentChange { sequence: 1, program_id: "p".into(), customer_id: "c".into(), from, to, at: 0 };
        assert_eq!(change(Some(Segment::Active), Segment::AtRisk).win_back(), Some(WinBack::Assign));
        assert_eq!(change(Some(Segment::AtRisk), Segment::Active).win_back(), Some(WinBack::End));
        assert_eq!(change(Some(Segment::AtRisk), Segment::Churned).win_back(), Some(WinBack::End));
        assert_eq!(change(None, Segment::New).win_back(), None);
        assert_eq!(change(Some(Segment::Loyal), Segment::Active).win_back(), None);
    }

    #[test]
    fn settings_are_checked() {
        assert!(Settings::default().validate().is_empty());
        let bad = Settings {
            at_risk_days: 200,
            churned_days: 180,
            loyal_orders: 0,
            win_back_tier_id: " ".into(),
            ..Settings::default()
        };
        let fields: Vec<_> = bad.validate().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["settings.loyal_orders", "settings.win_back_tier_id", "settings.churned_days"]);
    }
}
