//! Tier rules, free of transport and storage: the ladder, the qualification
//! window, the downgrade policy, and the evaluation that moves a member.

use serde::{Deserialize, Serialize};

use loyalty_common::clock::{MICROS_PER_DAY, Micros, civil_from_days, days_from_civil};
use loyalty_common::validate::{self, FieldViolation};

/// 1x in basis points.
pub const BP_ONE: i64 = 10_000;
/// Largest earn multiplier a tier may carry: 10x.
pub const MAX_MULTIPLIER_BP: i64 = 100_000;
const MAX_TIERS: usize = 50;
const MAX_EARLY_ACCESS_HOURS: i32 = 8_760;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub tier_id: String,
    pub name: String,
    pub threshold: i64,
    pub multiplier_bp: i64,
    pub perks: Vec<String>,
    pub hidden: bool,
    #[serde(default)]
    pub benefits: Benefits,
}

/// A tier's benefits in machine-readable form, beside the free-text perks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Benefits {
    pub free_shipping: bool,
    /// 0: no early access.
    pub early_access_hours: i32,
    /// 0 or 1x: no birthday bonus.
    pub birthday_multiplier_bp: i64,
    pub flags: Vec<String>,
}

impl Benefits {
    /// The birthday multiplier in effect: 1x when none is set.
    pub fn birthday_bp(&self) -> i64 {
        self.birthday_multiplier_bp.max(BP_ONE)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    CalendarYear,
    RollingDays(i32),
    Lifetime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Downgrade {
    Immediate,
    GraceDays(i32),
    /// A tier reached in one calendar year is kept through the next.
    EndOfNextPeriod,
}

/// What moves a member up: every earned point, order points (base only or
/// with bonuses), or spend in minor units. Every qualifying event stores all
/// four measures, so changing the basis needs no replay of the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Basis {
    /// Ladders stored before the basis existed qualified on every earn.
    #[default]
    AllEarned,
    OrderPointsBase,
    OrderPointsAll,
    Spend,
}

impl Basis {
    /// The `qualifying_events` column this basis sums.
    pub fn column(self) -> &'static str {
        match self {
            Self::AllEarned => "points",
            Self::OrderPointsBase => "base_points",
            Self::OrderPointsAll => "order_points",
            Self::Spend => "spend_minor",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ladder {
    /// Lowest first.
    pub tiers: Vec<Tier>,
    pub window: Window,
    pub downgrade: Downgrade,
    pub version: i64,
    #[serde(default)]
    pub basis: Basis,
}

impl Default for Ladder {
    /// No tiers: nobody has a tier, everyone earns at 1x.
    fn default() -> Self {
        Self {
            tiers: Vec::new(),
            window: Window::CalendarYear,
            downgrade: Downgrade::Immediate,
            version: 0,
            basis: Basis::AllEarned,
        }
    }
}

/// What one ledger entry adds to each qualification measure (negative for a
/// reversal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measures {
    /// Every earned point.
    pub points: i64,
    /// Points of an order earn, bonuses included.
    pub order_points: i64,
    /// Points of an order earn before tier and campaign bonuses.
    pub base_points: i64,
    /// The order's amount, in minor units.
    pub spend_minor: i64,
}

impl Measures {
    /// What reversing `reversed` more points of `earn` subtracts, given what
    /// earlier reversals of it took back (`before`, negative measures). Each
    /// measure keeps the share of the earn still standing, rounded down, so
    /// that reversing everything takes back exactly everything. A refund's
    /// amount, when given, is the spend taken back, but never more spend than
    /// the order still counts: a refund larger than its order, or refunds
    /// summing past it, stop at zero.
    pub fn reversal(earn: &Measures, before: &Measures, reversed: i64, refunded_minor: Option<i64>) -> Measures {
        let already_reversed = -before.points;
        let spend_left = (earn.spend_minor + before.spend_minor).max(0);
        let total = earn.points.max(0);
        let standing = |measure: i64, taken: i64| {
            if total == 0 {
                return 0;
            }
            let left = (total - taken.clamp(0, total)) as i128;
            i64::try_from(i128::from(measure) * left / i128::from(total)).unwrap_or(0)
        };
        let share = |measure: i64| standing(measure, already_reversed) - standing(measure, already_reversed + reversed);
        Measures {
            points: -reversed,
            order_points: -share(earn.order_points),
            base_points: -share(earn.base_points),
            spend_minor: -refunded_minor.unwrap_or_else(|| share(earn.spend_minor)).clamp(0, spend_left),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    Threshold,
    GraceExpired,
    PeriodEnded,
    Manual,
    AssignmentEnded,
    /// Qualifying points were taken back (a refund, a reversal).
    PointsReversed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold => "threshold",
            Self::GraceExpired => "grace_expired",
            Self::PeriodEnded => "period_ended",
            Self::Manual => "manual",
            Self::AssignmentEnded => "assignment_ended",
            Self::PointsReversed => "points_reversed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Threshold,
            Self::GraceExpired,
            Self::PeriodEnded,
            Self::Manual,
            Self::AssignmentEnded,
            Self::PointsReversed,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// Names the cause of a change that reversed points brought about: a move
/// down the ladder the moment points were taken back is their doing, not
/// the end of a period or a threshold crossed by time.
pub fn caused_by_reversal(ladder: &Ladder, change: &mut Change) {
    let down = match (ladder.rank(&change.from_tier_id), ladder.rank(&change.to_tier_id)) {
        (Some(from), Some(to)) => to < from,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if down && matches!(change.reason, Reason::Threshold | Reason::PeriodEnded) {
        change.reason = Reason::PointsReversed;
    }
}

/// The webhook event a change is: `tier.assigned` when put there by hand,
/// `tier.ended` when an assignment ran out or was removed, otherwise
/// `tier.upgraded` or `tier.downgraded` by the tiers' places on the ladder
/// (no tier is below every tier).
pub fn event_type(ladder: &Ladder, change: &Change) -> &'static str {
    match change.reason {
        Reason::Manual if !change.to_tier_id.is_empty() => "tier.assigned",
        Reason::Manual | Reason::AssignmentEnded => "tier.ended",
        _ if ladder.rank(&change.to_tier_id) > ladder.rank(&change.from_tier_id) => "tier.upgraded",
        _ => "tier.downgraded",
    }
}

/// The `data` of a change's event (`docs/events/tier.*.v1.schema.json`):
/// the tiers with their names as the ladder has them now, the reason, who
/// did it by hand, the history entry's id.
pub fn event_data(ladder: &Ladder, customer_id: &str, change: &Change, change_id: i64) -> serde_json::Value {
    let mut data = serde_json::json!({
        "customer_id": customer_id,
        "reason": change.reason.as_str(),
        "changed_at": loyalty_common::clock::to_timestamp(change.at).to_string(),
        "change_id": change_id,
    });
    let name = |id: &str| ladder.tiers.iter().find(|t| t.tier_id == id).map(|t| t.name.clone());
    for (field, id) in [("from", &change.from_tier_id), ("to", &change.to_tier_id)] {
        if !id.is_empty() {
            data[format!("{field}_tier_id")] = id.as_str().into();
            if let Some(name) = name(id) {
                data[format!("{field}_tier_name")] = name.into();
            }
        }
    }
    if !change.actor.is_empty() {
        data["actor"] = change.actor.as_str().into();
    }
    data
}

/// One customer's standing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub program_id: String,
    pub customer_id: String,
    /// Empty: no tier.
    pub tier_id: String,
    pub since: Micros,
    pub qualifying: i64,
    pub assigned_tier_id: Option<String>,
    pub assigned_until: Option<Micros>,
    pub grace_until: Option<Micros>,
    pub next_review_at: Option<Micros>,
    pub version: i64,
}

/// A tier change, for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from_tier_id: String,
    pub to_tier_id: String,
    pub reason: Reason,
    pub at: Micros,
    pub actor: String,
}

/// What evaluation needs to know of the customer's qualifying points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Qualifying {
    /// In the current window.
    pub current: i64,
    /// In the previous calendar year (only read by `EndOfNextPeriod`).
    pub previous_period: i64,
    /// The oldest positive event still in a rolling window: when it leaves,
    /// the member must be looked at again.
    pub oldest_in_window: Option<Micros>,
}

impl Ladder {
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut bad = Vec::new();
        if self.tiers.len() > MAX_TIERS {
            bad.push(FieldViolation::new("ladder.tiers", format!("at most {MAX_TIERS} tiers")));
        }
        let mut ids = std::collections::HashSet::new();
        let mut last_threshold: Option<i64> = None;
        for (i, tier) in self.tiers.iter().enumerate() {
            let field = |name: &str| format!("ladder.tiers[{i}].{name}");
            if let Err(v) = validate::id(&field("tier_id"), &tier.tier_id) {
                bad.push(v);
            } else if !ids.insert(tier.tier_id.as_str()) {
                bad.push(FieldViolation::new(field("tier_id"), "appears twice"));
            }
            if tier.name.trim().is_empty() || tier.name.chars().count() > 100 {
                bad.push(FieldViolation::new(field("name"), "must be 1 to 100 characters, not only white space"));
            }
            if !(BP_ONE..=MAX_MULTIPLIER_BP).contains(&tier.multiplier_bp) {
                bad.push(FieldViolation::new(field("multiplier_bp"), "must be between 10000 (1x) and 100000 (10x)"));
            }
            if tier.perks.len() > 50 || tier.perks.iter().any(|p| p.is_empty() || p.chars().count() > 200) {
                bad.push(FieldViolation::new(field("perks"), "at most 50 perks of 1 to 200 characters"));
            }
            let benefits = &tier.benefits;
            if !(0..=MAX_EARLY_ACCESS_HOURS).contains(&benefits.early_access_hours) {
                bad.push(FieldViolation::new(
                    field("benefits.early_access_hours"),
                    "must be between 0 and 8760 (a year)",
                ));
            }
            if benefits.birthday_multiplier_bp != 0
                && !(BP_ONE..=MAX_MULTIPLIER_BP).contains(&benefits.birthday_multiplier_bp)
            {
                bad.push(FieldViolation::new(
                    field("benefits.birthday_multiplier_bp"),
                    "must be 0 (none) or between 10000 (1x) and 100000 (10x)",
                ));
            }
            let flag_ok = |f: &String| {
                (1..=64).contains(&f.len())
                    && f.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            };
            let mut flags = std::collections::HashSet::new();
            if benefits.flags.len() > 20 || !benefits.flags.iter().all(|f| flag_ok(f) && flags.insert(f)) {
                bad.push(FieldViolation::new(
                    field("benefits.flags"),
                    "at most 20 distinct flags of 1 to 64 lowercase letters, digits, '_' or '-'",
                ));
            }
            if tier.hidden {
                continue;
            }
            if tier.threshold < 0 {
                bad.push(FieldViolation::new(field("threshold"), "must not be negative"));
            } else if last_threshold.is_some_and(|last| tier.threshold <= last) {
                bad.push(FieldViolation::new(field("threshold"), "must be above the previous visible tier's"));
            }
            last_threshold = Some(tier.threshold);
        }
        match self.window {
            Window::RollingDays(days) if !(1..=3_660).contains(&days) => {
                bad.push(FieldViolation::new("ladder.window.days", "must be between 1 and 3660"));
            }
            _ => {}
        }
        match self.downgrade {
            Downgrade::GraceDays(days) if !(1..=730).contains(&days) => {
                bad.push(FieldViolation::new("ladder.downgrade.grace_days", "must be between 1 and 730"));
            }
            Downgrade::EndOfNextPeriod if self.window != Window::CalendarYear => {
                bad.push(FieldViolation::new(
                    "ladder.downgrade.kind",
                    "END_OF_NEXT_PERIOD needs the calendar-year window",
                ));
            }
            _ => {}
        }
        bad
    }

    pub fn tier(&self, tier_id: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.tier_id == tier_id)
    }

    /// Position on the ladder; no tier (or a tier since removed) is below all.
    fn rank(&self, tier_id: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.tier_id == tier_id)
    }

    /// The highest visible tier whose threshold `qualifying` reaches.
    pub fn reached(&self, qualifying: i64) -> Option<&Tier> {
        self.tiers.iter().filter(|t| !t.hidden && t.threshold <= qualifying).max_by_key(|t| t.threshold)
    }

    /// The lowest visible tier whose threshold is above `floor` points.
    pub fn next_above(&self, floor: i64) -> Option<&Tier> {
        self.tiers.iter().filter(|t| !t.hidden && t.threshold > floor).min_by_key(|t| t.threshold)
    }

    /// First instant counted in the window at `now`; `None` for lifetime.
    pub fn window_start(&self, now: Micros) -> Option<Micros> {
        match self.window {
            Window::CalendarYear => Some(year_start(now)),
            // An event at t counts while now < t + days.
            Window::RollingDays(days) => Some(now - i64::from(days) * MICROS_PER_DAY + 1),
            Window::Lifetime => None,
        }
    }

    pub fn multiplier_bp(&self, tier_id: &str) -> i64 {
        self.tier(tier_id).map_or(BP_ONE, |t| t.multiplier_bp)
    }
}

/// Moves `member` to where the ladder, its qualifying points, any manual
/// assignment and the downgrade policy put it at `now`; returns the change,
/// if any. Upgrades are immediate; downgrades follow the policy.
pub fn evaluate(ladder: &Ladder, member: &mut Membership, qualifying: Qualifying, now: Micros) -> Option<Change> {
    member.qualifying = qualifying.current;
    let mut assignment_ended = false;
    if member.assigned_until.is_some_and(|until| until <= now) {
        member.assigned_tier_id = None;
        member.assigned_until = None;
        assignment_ended = true;
    }
    let by_points = held_by_points(ladder, qualifying);
    let (target, reason) = match &member.assigned_tier_id {
        Some(assigned) => {
            member.grace_until = None;
            (assigned.clone(), Reason::Manual)
        }
        None => {
            let current_rank = ladder.rank(&member.tier_id);
            let points_rank = ladder.rank(&by_points);
            let going_down = match (current_rank, points_rank) {
                (Some(current), Some(points)) => points < current,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !going_down || assignment_ended {
                member.grace_until = None;
                let reason = if assignment_ended { Reason::AssignmentEnded } else { Reason::Threshold };
                (by_points, reason)
            } else {
                match ladder.downgrade {
                    Downgrade::Immediate => (by_points, Reason::Threshold),
                    Downgrade::EndOfNextPeriod => (by_points, Reason::PeriodEnded),
                    Downgrade::GraceDays(days) => match member.grace_until {
                        Some(until) if until <= now => {
                            member.grace_until = None;
                            (by_points, Reason::GraceExpired)
                        }
                        Some(_) => (member.tier_id.clone(), Reason::Threshold),
                        None => {
                            member.grace_until = Some(now + i64::from(days) * MICROS_PER_DAY);
                            (member.tier_id.clone(), Reason::Threshold)
                        }
                    },
                }
            }
        }
    };
    member.next_review_at = next_review(ladder, member, qualifying, now);
    if target == member.tier_id {
        return None;
    }
    let change = Change {
        from_tier_id: member.tier_id.clone(),
        to_tier_id: target.clone(),
        reason,
        at: now,
        actor: String::new(),
    };
    member.tier_id = target;
    member.since = now;
    Some(change)
}

/// The tier the points alone give: the current window's, or under
/// `EndOfNextPeriod` the better of this year's and last year's.
fn held_by_points(ladder: &Ladder, qualifying: Qualifying) -> String {
    let now_reached = ladder.reached(qualifying.current);
    let reached = if ladder.downgrade == Downgrade::EndOfNextPeriod {
        let last_year = ladder.reached(qualifying.previous_period);
        match (now_reached, last_year) {
            (Some(a), Some(b)) => Some(if a.threshold >= b.threshold { a } else { b }),
            (a, b) => a.or(b),
        }
    } else {
        now_reached
    };
    reached.map(|t| t.tier_id.clone()).unwrap_or_default()
}

/// When the membership could change with no new points.
fn next_review(ladder: &Ladder, member: &Membership, qualifying: Qualifying, now: Micros) -> Option<Micros> {
    let boundary = match ladder.window {
        Window::CalendarYear
            if !member.tier_id.is_empty() || qualifying.current > 0 || qualifying.previous_period > 0 =>
        {
            Some(next_year_start(now))
        }
        Window::RollingDays(days) => qualifying.oldest_in_window.map(|t| t + i64::from(days) * MICROS_PER_DAY),
        _ => None,
    };
    [boundary, member.grace_until, member.assigned_until].into_iter().flatten().min()
}

/// The qualifying points still needed for the next visible tier.
pub fn progress<'a>(ladder: &'a Ladder, member: &Membership) -> Option<(&'a Tier, i64)> {
    // A hidden (assigned) tier, or none yet, is off the ladder: progress
    // counts from the points, so it is never "0 more points to reach" a
    // tier the points already reach.
    let floor = ladder.tier(&member.tier_id).filter(|t| !t.hidden).map_or(member.qualifying, |t| t.threshold);
    let next = ladder.next_above(floor)?;
    Some((next, (next.threshold - member.qualifying).max(0)))
}

/// January 1st, 00:00 UTC, of the year containing `at`.
pub fn year_start(at: Micros) -> Micros {
    let (year, _, _) = civil_from_days(at.div_euclid(MICROS_PER_DAY));
    days_from_civil(year, 1, 1) * MICROS_PER_DAY
}

pub fn next_year_start(at: Micros) -> Micros {
    let (year, _, _) = civil_from_days(at.div_euclid(MICROS_PER_DAY));
    days_from_civil(year + 1, 1, 1) * MICROS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_763_942_400_000_000; // 2025-11-24

    fn tier(id: &str, threshold: i64, bp: i64) -> Tier {
        Tier {
            tier_id: id.into(),
            name: id.into(),
            threshold,
            multiplier_bp: bp,
            perks: Vec::new(),
            hidden: false,
            benefits: Benefits::default(),
        }
    }

    #[test]
    fn reversals_take_back_each_measure_in_proportion_and_all_of_it_at_the_end() {
        let earn = Measures { points: 30, order_points: 30, base_points: 10, spend_minor: 1_000 };
        let none = Measures::default();
        let first = Measures::reversal(&earn, &none, 10, None);
        assert_eq!(first, Measures { points: -10, order_points: -10, base_points: -4, spend_minor: -334 });
        let second = Measures::reversal(&earn, &first, 20, Some(500));
        assert_eq!(second.base_points, -6, "the rest of the base, rounding included");
        assert_eq!(second.spend_minor, -500, "a refund takes back its own amount");
        assert_eq!(first.order_points + second.order_points, -30);
        let activity = Measures { points: 50, ..Measures::default() };
        assert_eq!(Measures::reversal(&activity, &none, 50, None), Measures { points: -50, ..Measures::default() });
    }

    #[test]
    fn refunds_never_take_back_more_spend_than_the_order_still_counts() {
        let earn = Measures { points: 10, order_points: 10, base_points: 10, spend_minor: 1_000 };
        let none = Measures::default();
        assert_eq!(Measures::reversal(&earn, &none, 10, Some(5_000)).spend_minor, -1_000, "a refund above its order");
        let first = Measures::reversal(&earn, &none, 5, Some(800));
        assert_eq!(first.spend_minor, -800);
        let second = Measures::reversal(&earn, &first, 5, Some(800));
        assert_eq!(second.spend_minor, -200, "only what the order still counts");
        let both = Measures { points: first.points + second.points, spend_minor: -1_000, ..none };
        assert_eq!(Measures::reversal(&earn, &both, 0, Some(100)).spend_minor, 0, "nothing left to take");
        assert_eq!(Measures::reversal(&earn, &none, 1, Some(-50)).spend_minor, 0, "a negative refund adds nothing");
    }

    fn ladder(downgrade: Downgrade) -> Ladder {
        let mut winback = tier("winback", 0, 12_000);
        winback.hidden = true;
        Ladder {
            tiers: vec![
                tier("explorer", 0, 10_000),
                tier("catalyst", 1_000, 15_000),
                winback,
                tier("advocate", 5_000, 20_000),
            ],
            window: Window::CalendarYear,
            downgrade,
            version: 1,
            basis: Basis::OrderPointsBase,
        }
    }

    fn q(current: i64) -> Qualifying {
        Qualifying { current, ..Qualifying::default() }
    }

    #[test]
    fn upgrades_are_immediate_and_progress_counts_to_the_next_visible_tier() {
        let l = ladder(Downgrade::Immediate);
        let mut m = Membership::default();
        let change = evaluate(&l, &mut m, q(10), T0).unwrap();
        assert_eq!((change.from_tier_id.as_str(), change.to_tier_id.as_str()), ("", "explorer"));
        assert_eq!(progress(&l, &m).map(|(t, n)| (t.tier_id.as_str(), n)), Some(("catalyst", 990)));
        let change = evaluate(&l, &mut m, q(5_000), T0 + 1).unwrap();
        assert_eq!((change.to_tier_id.as_str(), change.reason), ("advocate", Reason::Threshold));
        assert_eq!(progress(&l, &m), None, "top of the ladder");
        assert_eq!(m.next_review_at, Some(next_year_start(T0)));
    }

    #[test]
    fn grace_delays_a_downgrade_and_recovery_cancels_it() {
        let l = ladder(Downgrade::GraceDays(30));
        let mut m = Membership::default();
        evaluate(&l, &mut m, q(1_500), T0);
        assert_eq!(evaluate(&l, &mut m, q(500), T0 + DAY), None);
        assert_eq!(m.grace_until, Some(T0 + 31 * DAY));
        assert_eq!(m.next_review_at, Some(T0 + 31 * DAY));
        assert_eq!(evaluate(&l, &mut m, q(1_200), T0 + 2 * DAY), None);
        assert_eq!(m.grace_until, None, "back above the threshold");
        evaluate(&l, &mut m, q(500), T0 + 3 * DAY);
        let change = evaluate(&l, &mut m, q(500), T0 + 33 * DAY).unwrap();
        assert_eq!((change.to_tier_id.as_str(), change.reason), ("explorer", Reason::GraceExpired));
    }

    const DAY: Micros = MICROS_PER_DAY;

    #[test]
    fn end_of_next_period_keeps_last_years_tier() {
        let l = ladder(Downgrade::EndOfNextPeriod);
        let mut m = Membership::default();
        evaluate(&l, &mut m, q(6_000), T0);
        let next_year = Qualifying { current: 0, previous_period: 6_000, oldest_in_window: None };
        assert_eq!(evaluate(&l, &mut m, next_year, next_year_start(T0)), None, "kept through the next year");
        let year_after = Qualifying { current: 0, previous_period: 1_100, oldest_in_window: None };
        let change = evaluate(&l, &mut m, year_after, next_year_start(next_year_start(T0))).unwrap();
        assert_eq!((change.to_tier_id.as_str(), change.reason), ("catalyst", Reason::PeriodEnded));
    }

    #[test]
    fn hidden_tiers_are_never_reached_by_points_and_assignments_end() {
        let l = ladder(Downgrade::Immediate);
        let mut m = Membership::default();
        evaluate(&l, &mut m, q(1_000_000), T0);
        assert_eq!(m.tier_id, "advocate");
        let mut m = Membership {
            assigned_tier_id: Some("winback".into()),
            assigned_until: Some(T0 + 10 * DAY),
            ..Membership::default()
        };
        let change = evaluate(&l, &mut m, q(1_200), T0).unwrap();
        assert_eq!((change.to_tier_id.as_str(), change.reason), ("winback", Reason::Manual));
        assert_eq!(m.next_review_at, Some(T0 + 10 * DAY));
        // On the hidden tier, progress counts from where the points are (catalyst), not from the bottom.
        let next = progress(&l, &m).map(|(t, n)| (t.tier_id.as_str(), n));
        assert_eq!(next, Some(("advocate", 3_800)), "never '0 more points to reach explorer'");
        let mut fresh = Membership { assigned_tier_id: Some("winback".into()), ..Membership::default() };
        evaluate(&l, &mut fresh, q(0), T0);
        let next = progress(&l, &fresh).map(|(t, n)| (t.tier_id.as_str(), n));
        assert_eq!(next, Some(("catalyst", 1_000)), "explorer (threshold 0) is already reached");
        let change = evaluate(&l, &mut m, q(1_200), T0 + 10 * DAY).unwrap();
        assert_eq!((change.to_tier_id.as_str(), change.reason), ("catalyst", Reason::AssignmentEnded));
    }

    #[test]
    fn a_move_down_when_points_are_taken_back_is_named_for_it() {
        let l = ladder(Downgrade::EndOfNextPeriod);
        let change = |from: &str, to: &str, reason| Change {
            from_tier_id: from.into(),
            to_tier_id: to.into(),
            reason,
            at: T0,
            actor: String::new(),
        };
        for reason in [Reason::PeriodEnded, Reason::Threshold] {
            let mut down = change("advocate", "catalyst", reason);
            caused_by_reversal(&l, &mut down);
            assert_eq!(down.reason, Reason::PointsReversed, "{reason:?}");
        }
        let mut up = change("explorer", "catalyst", Reason::Threshold);
        caused_by_reversal(&l, &mut up);
        assert_eq!(up.reason, Reason::Threshold, "a move up is not the reversal's doing");
        let mut ended = change("winback", "explorer", Reason::AssignmentEnded);
        caused_by_reversal(&l, &mut ended);
        assert_eq!(ended.reason, Reason::AssignmentEnded);
        assert_eq!(Reason::parse("points_reversed"), Some(Reason::PointsReversed));
    }

    #[test]
    fn rolling_windows_drop_points_as_they_age() {
        let l = Ladder { window: Window::RollingDays(90), ..ladder(Downgrade::Immediate) };
        assert_eq!(l.window_start(T0 + 90 * DAY), Some(T0 + 1), "an event at T0 has just left");
        let mut m = Membership::default();
        evaluate(&l, &mut m, Qualifying { current: 1_000, previous_period: 0, oldest_in_window: Some(T0) }, T0);
        assert_eq!(m.next_review_at, Some(T0 + 90 * DAY));
        let change = evaluate(&l, &mut m, q(0), T0 + 90 * DAY).unwrap();
        assert_eq!(change.to_tier_id, "explorer");
    }

    #[test]
    fn ladders_are_validated_field_by_field() {
        let mut l = ladder(Downgrade::GraceDays(0));
        l.tiers[0].benefits = Benefits {
            early_access_hours: -1,
            birthday_multiplier_bp: 5_000,
            flags: vec!["Free Returns".into()],
            ..Benefits::default()
        };
        l.tiers.push(tier("catalyst", 100, 5_000));
        l.window = Window::RollingDays(0);
        let fields: Vec<String> = l.validate().into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "ladder.tiers[0].benefits.early_access_hours",
                "ladder.tiers[0].benefits.birthday_multiplier_bp",
                "ladder.tiers[0].benefits.flags",
                "ladder.tiers[4].tier_id",
                "ladder.tiers[4].multiplier_bp",
                "ladder.tiers[4].threshold",
                "ladder.window.days",
                "ladder.downgrade.grace_days"
            ]
        );
        assert!(ladder(Downgrade::Immediate).validate().is_empty());
    }

    #[test]
    fn calendar_years_start_on_january_first() {
        assert_eq!(year_start(T0), days_from_civil(2025, 1, 1) * DAY);
        assert_eq!(next_year_start(T0), days_from_civil(2026, 1, 1) * DAY);
    }
}
