//! Earning rules, free of transport and storage: program settings, activity
//! rules with caps, campaigns, and the arithmetic that turns an order or an
//! activity into points.
//!
//! How multipliers combine (documented for shops): the tier multiplier and
//! the highest active campaign multiplier each add their extra share of the
//! base points (a 2x tier during a 3x campaign earns base × 4), overlapping
//! campaign multipliers do not stack (the highest wins), and fixed campaign
//! bonuses add up. Every share is rounded down to whole points.

use serde::{Deserialize, Serialize};

use loyalty_common::clock::{MICROS_PER_DAY, Micros, civil_from_days, days_from_civil};
use loyalty_common::validate::{self, FieldViolation};

use crate::domain::{MAX_POINTS_PER_COMMAND, RuleViolation};

/// 1x in basis points.
pub const BP_ONE: i64 = 10_000;
/// Largest order amount accepted, in minor units (10 billion major units).
pub const MAX_ORDER_MINOR: i64 = 1_000_000_000_000;
/// Largest multiplier, tier or campaign: 10x.
pub const MAX_MULTIPLIER_BP: i64 = 100_000;
/// What `applies_to` names for orders; anything else is an activity type.
pub const ORDER_TARGET: &str = "order";
/// The activity a tier's birthday perk multiplies.
pub const BIRTHDAY_ACTIVITY: &str = "birthday";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rounding {
    Down,
    Nearest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpiryPolicy {
    Never,
    DaysAfterEarn(i32),
    EndOfNthMonth(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapPeriod {
    Lifetime,
    Year,
    Month,
    Week,
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRule {
    pub activity_type: String,
    pub points: i64,
    pub active: bool,
    /// 0: no cap.
    pub cap_count: i32,
    pub cap_period: CapPeriod,
    pub once_per_ref: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramSettings {
    pub currency: String,
    pub earn_points: i64,
    pub earn_per_amount_minor: i64,
    pub rounding: Rounding,
    pub minimum_order_minor: i64,
    pub pending_days: i32,
    pub expiry: ExpiryPolicy,
    pub activity_rules: Vec<ActivityRule>,
    pub version: i64,
    /// Days before points expire that the customer is reminded (0: [`DEFAULT_EXPIRY_REMINDER_DAYS`]).
    #[serde(default)]
    pub expiry_reminder_days: i32,
    /// Points at checkout; `None`: points cannot pay for orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<CheckoutPoints>,
}

/// How points may pay for part of an order: `points` points pay
/// `amount_minor`, at least `min_points`, at most `max_share_bp` of the
/// order, in multiples of `step_points`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutPoints {
    pub points: i64,
    pub amount_minor: i64,
    pub min_points: i64,
    pub max_share_bp: i64,
    pub step_points: i64,
}

impl CheckoutPoints {
    /// What `points` pay, rounded down to a whole minor unit.
    pub fn discount_minor(&self, points: i64) -> i64 {
        let value = i128::from(points) * i128::from(self.amount_minor) / i128::from(self.points);
        i64::try_from(value).unwrap_or(i64::MAX)
    }

    /// The most points an order of `order_minor` may take: their value
    /// within the maximum share, in whole steps (however many the customer has).
    pub fn max_points_for(&self, order_minor: i64) -> i64 {
        let max_discount = i128::from(order_minor.max(0)) * i128::from(self.max_share_bp) / i128::from(BP_ONE);
        let points = max_discount * i128::from(self.points) / i128::from(self.amount_minor);
        let points = i64::try_from(points).unwrap_or(i64::MAX).min(MAX_POINTS_PER_COMMAND);
        points - points % self.step()
    }

    /// The most of `available` points an order may take: 0 when that is
    /// below the minimum.
    pub fn usable(&self, order_minor: i64, available: i64) -> i64 {
        let available = available.max(0);
        let points = self.max_points_for(order_minor).min(available - available % self.step());
        if points < self.min_points.max(1) { 0 } else { points }
    }

    /// The discount `points` give an order of `order_minor`, or why they may not pay for it.
    pub fn apply(&self, order_minor: i64, points: i64) -> Result<i64, RuleViolation> {
        let step = self.step();
        if points % step != 0 || points < self.min_points {
            return Err(RuleViolation::CheckoutUnaligned { min_points: self.min_points, step_points: step });
        }
        let max_points = self.max_points_for(order_minor);
        if points > max_points {
            return Err(RuleViolation::CheckoutShareExceeded { max_points, max_share_bp: self.max_share_bp });
        }
        Ok(self.discount_minor(points))
    }

    fn step(&self) -> i64 {
        self.step_points.max(1)
    }

    fn validate(&self, push: &mut impl FnMut(String, &str)) {
        let field = |name: &str| format!("settings.checkout.{name}");
        if !(1..=MAX_POINTS_PER_COMMAND).contains(&self.points) {
            push(field("points"), "must be between 1 and 1000000000");
        }
        if !(1..=MAX_POINTS_PER_COMMAND).contains(&self.amount_minor) {
            push(field("amount_minor"), "must be between 1 and 1000000000");
        }
        if !(0..=MAX_POINTS_PER_COMMAND).contains(&self.min_points) {
            push(field("min_points"), "must be between 0 and 1000000000");
        }
        if !(1..=BP_ONE).contains(&self.max_share_bp) {
            push(field("max_share_bp"), "must be between 1 and 10000 (10000 is the whole order)");
        }
        if !(0..=MAX_POINTS_PER_COMMAND).contains(&self.step_points) {
            push(field("step_points"), "must be between 0 and 1000000000");
        }
    }
}

/// The reminder's lead when a program names none.
pub const DEFAULT_EXPIRY_REMINDER_DAYS: i32 = 14;

impl Default for ProgramSettings {
    /// 1 point per 1.00 of any currency, rounded down, active at once, never expiring.
    fn default() -> Self {
        Self {
            currency: String::new(),
            earn_points: 1,
            earn_per_amount_minor: 100,
            rounding: Rounding::Down,
            minimum_order_minor: 0,
            pending_days: 0,
            expiry: ExpiryPolicy::Never,
            activity_rules: Vec::new(),
            version: 0,
            expiry_reminder_days: 0,
            checkout: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignKind {
    Multiplier { multiplier_bp: i64 },
    Bonus { points: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub campaign_id: String,
    pub name: String,
    pub kind: CampaignKind,
    pub starts_at: Micros,
    pub ends_at: Micros,
    pub tier_ids: Vec<String>,
    pub applies_to: Vec<String>,
    /// Only customers in these insights segments; left out of the stored
    /// JSON when empty, so campaigns stored before it read and hash alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segment_ids: Vec<String>,
}

/// The insights service's lifecycle segments a campaign may target.
pub const SEGMENTS: [&str; 5] = ["new", "active", "loyal", "at_risk", "churned"];

/// The customer's tier as the tiers service reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TierStanding {
    pub tier_id: String,
    pub multiplier_bp: i64,
    /// The tier's birthday perk (1x when it has none).
    pub birthday_multiplier_bp: i64,
}

impl TierStanding {
    pub fn none() -> Self {
        Self { tier_id: String::new(), multiplier_bp: BP_ONE, birthday_multiplier_bp: BP_ONE }
    }

    /// The tier's multiplier for an earn of `target`: the earn multiplier for
    /// orders, the birthday perk for the birthday activity, 1x for every
    /// other activity (tier multipliers reward spending).
    pub fn multiplier_for(&self, target: &str) -> i64 {
        match target {
            ORDER_TARGET => self.multiplier_bp,
            BIRTHDAY_ACTIVITY => self.birthday_multiplier_bp,
            _ => BP_ONE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Breakdown {
    pub base_points: i64,
    pub tier_bonus_points: i64,
    pub campaign_bonus_points: i64,
    pub total_points: i64,
    pub tier_multiplier_bp: i64,
    pub tier_id: String,
    pub campaign_ids: Vec<String>,
    /// The order is below the program's minimum: it earns nothing at all.
    #[serde(default)]
    pub below_minimum: bool,
}

impl Breakdown {
    /// An order below the program's minimum: nothing, and nothing added to it.
    pub fn below_minimum() -> Self {
        Self { tier_multiplier_bp: BP_ONE, below_minimum: true, ..Self::default() }
    }
}

impl ProgramSettings {
    /// Every problem, with field paths such as `settings.activity_rules[1].points`.
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut bad = Vec::new();
        let mut push = |field: String, description: &str| bad.push(FieldViolation::new(field, description));
        if !self.currency.is_empty() && !is_currency_code(&self.currency) {
            push("settings.currency".into(), "must be an ISO 4217 code such as EUR, or empty");
        }
        if !(0..=1_000_000).contains(&self.earn_points) {
            push("settings.earn_rate.points".into(), "must be between 0 and 1000000");
        }
        if !(1..=1_000_000_000).contains(&self.earn_per_amount_minor) {
            push("settings.earn_rate.per_amount_minor".into(), "must be between 1 and 1000000000");
        }
        if !(0..=MAX_ORDER_MINOR).contains(&self.minimum_order_minor) {
            push("settings.minimum_order_minor".into(), "must not be negative");
        }
        if !(0..=365).contains(&self.pending_days) {
            push("settings.pending_days".into(), "must be between 0 and 365");
        }
        if !(0..=365).contains(&self.expiry_reminder_days) {
            push("settings.expiry_reminder_days".into(), "must be between 0 and 365");
        }
        match self.expiry {
            ExpiryPolicy::Never => {}
            ExpiryPolicy::DaysAfterEarn(days) if !(1..=3_650).contains(&days) => {
                push("settings.expiry.count".into(), "days must be between 1 and 3650");
            }
            ExpiryPolicy::EndOfNthMonth(months) if !(0..=120).contains(&months) => {
                push("settings.expiry.count".into(), "months must be between 0 and 120");
            }
            _ => {}
        }
        if matches!(self.expiry, ExpiryPolicy::DaysAfterEarn(days) if days <= self.pending_days) {
            push("settings.expiry.count".into(), "points must not expire before the pending period ends");
        }
        if let Some(checkout) = &self.checkout {
            checkout.validate(&mut push);
        }
        let mut seen = std::collections::HashSet::new();
        for (i, rule) in self.activity_rules.iter().enumerate() {
            let field = |name: &str| format!("settings.activity_rules[{i}].{name}");
            if let Err(v) = activity_type(&rule.activity_type) {
                push(field("activity_type"), &v.description);
            } else if !seen.insert(rule.activity_type.as_str()) {
                push(field("activity_type"), "appears twice");
            }
            if !(1..=MAX_POINTS_PER_COMMAND).contains(&rule.points) {
                push(field("points"), "must be between 1 and 1000000000");
            }
            if rule.cap_count < 0 {
                push(field("cap_count"), "must not be negative");
            }
        }
        bad
    }

    pub fn rule(&self, activity_type: &str) -> Option<&ActivityRule> {
        self.activity_rules.iter().find(|r| r.activity_type == activity_type)
    }

    /// Base points of an order: the earn rate applied with the rounding
    /// rule; nothing below the minimum order.
    pub fn order_base_points(&self, amount_minor: i64) -> i64 {
        if amount_minor < self.minimum_order_minor || amount_minor <= 0 {
            return 0;
        }
        let numerator = i128::from(amount_minor) * i128::from(self.earn_points);
        let divisor = i128::from(self.earn_per_amount_minor);
        let points = match self.rounding {
            Rounding::Down => numerator / divisor,
            Rounding::Nearest => (2 * numerator + divisor) / (2 * divisor),
        };
        // Not capped: an order worth more than one command may earn is refused whole (the ledger's
        // price check), never silently cut.
        i64::try_from(points).unwrap_or(i64::MAX)
    }

    /// When points earned at `earned_at` become active; `None`: at once.
    pub fn pending_until(&self, earned_at: Micros) -> Option<Micros> {
        (self.pending_days > 0).then(|| earned_at + i64::from(self.pending_days) * MICROS_PER_DAY)
    }

    /// When points earned at `earned_at` expire; `None`: never.
    pub fn expires_at(&self, earned_at: Micros) -> Option<Micros> {
        match self.expiry {
            ExpiryPolicy::Never => None,
            ExpiryPolicy::DaysAfterEarn(days) => Some(earned_at + i64::from(days) * MICROS_PER_DAY),
            ExpiryPolicy::EndOfNthMonth(months) => {
                let (year, month, _) = civil_from_days(earned_at.div_euclid(MICROS_PER_DAY));
                let index = i64::from(year) * 12 + i64::from(month - 1) + i64::from(months) + 1;
                let (year, month) = (index.div_euclid(12), index.rem_euclid(12) + 1);
                Some(days_from_civil(year as i32, month as u32, 1) * MICROS_PER_DAY)
            }
        }
    }
}

impl Campaign {
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut bad = Vec::new();
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            bad.push(FieldViolation::new("campaign.name", "must be 1 to 200 characters, not only white space"));
        }
        match self.kind {
            CampaignKind::Multiplier { multiplier_bp }
                if !(BP_ONE + 1..=MAX_MULTIPLIER_BP).contains(&multiplier_bp) =>
            {
                bad.push(FieldViolation::new(
                    "campaign.multiplier_bp",
                    "must be above 10000 (1x) and at most 100000 (10x)",
                ));
            }
            CampaignKind::Bonus { points } if !(1..=MAX_POINTS_PER_COMMAND).contains(&points) => {
                bad.push(FieldViolation::new("campaign.bonus_points", "must be between 1 and 1000000000"));
            }
            _ => {}
        }
        if self.ends_at <= self.starts_at {
            bad.push(FieldViolation::new("campaign.ends_at", "must be after starts_at"));
        }
        for (i, tier) in self.tier_ids.iter().enumerate() {
            if let Err(v) = validate::id(&format!("campaign.tier_ids[{i}]"), tier) {
                bad.push(v);
            }
        }
        for (i, segment) in self.segment_ids.iter().enumerate() {
            if !SEGMENTS.contains(&segment.as_str()) {
                bad.push(FieldViolation::new(
                    format!("campaign.segment_ids[{i}]"),
                    "must be one of new, active, loyal, at_risk, churned",
                ));
            }
        }
        for (i, target) in self.applies_to.iter().enumerate() {
            if let Err(mut v) = activity_type(target) {
                v.field = format!("campaign.applies_to[{i}]");
                bad.push(v);
            }
        }
        bad
    }

    /// Whether it boosts an earn of `target` (`order` or an activity type)
    /// at `at` for a member of `tier_id` in `segment` (none when unknown).
    pub fn applies(&self, at: Micros, tier_id: &str, segment: Option<&str>, target: &str) -> bool {
        self.boosts(at, target)
            && (self.tier_ids.is_empty() || self.tier_ids.iter().any(|t| t == tier_id))
            && (self.segment_ids.is_empty() || segment.is_some_and(|s| self.segment_ids.iter().any(|id| id == s)))
    }

    /// Whether it is limited to segments and would boost `target` at `at`:
    /// only then does pricing ask the insights service.
    pub fn needs_segment(&self, at: Micros, target: &str) -> bool {
        !self.segment_ids.is_empty() && self.boosts(at, target)
    }

    /// Whether it is limited to tiers and would boost `target` at `at` for
    /// one of them: only then does pricing need the customer's tier.
    pub fn needs_tier(&self, at: Micros, target: &str) -> bool {
        !self.tier_ids.is_empty() && self.boosts(at, target)
    }

    fn boosts(&self, at: Micros, target: &str) -> bool {
        (self.starts_at..self.ends_at).contains(&at)
            && (self.applies_to.is_empty() || self.applies_to.iter().any(|t| t == target))
    }
}

/// Applies the tier's multiplier for `target` and the campaigns active at
/// `at` for a customer of that tier and `segment` to `base`.
pub fn breakdown(
    base: i64,
    tier: &TierStanding,
    segment: Option<&str>,
    campaigns: &[Campaign],
    target: &str,
    at: Micros,
) -> Breakdown {
    let share = |multiplier_bp: i64| {
        let extra = i128::from(base) * i128::from((multiplier_bp - BP_ONE).max(0)) / i128::from(BP_ONE);
        i64::try_from(extra).unwrap_or(i64::MAX)
    };
    let tier_bp = tier.multiplier_for(target);
    let tier_bonus = share(tier_bp);
    let applying: Vec<&Campaign> = campaigns.iter().filter(|c| c.applies(at, &tier.tier_id, segment, target)).collect();
    let best_multiplier = applying
        .iter()
        .filter_map(|c| match c.kind {
            CampaignKind::Multiplier { multiplier_bp } => Some((multiplier_bp, c)),
            CampaignKind::Bonus { .. } => None,
        })
        .max_by_key(|(bp, c)| (*bp, std::cmp::Reverse(c.campaign_id.clone())));
    let bonuses: Vec<(i64, &Campaign)> = applying
        .iter()
        .filter_map(|c| match c.kind {
            CampaignKind::Bonus { points } => Some((points, *c)),
            CampaignKind::Multiplier { .. } => None,
        })
        .collect();
    let campaign_bonus = best_multiplier.map_or(0, |(bp, _)| share(bp)) + bonuses.iter().map(|(p, _)| p).sum::<i64>();
    let mut campaign_ids: Vec<String> = best_multiplier.iter().map(|(_, c)| c.campaign_id.clone()).collect();
    campaign_ids.extend(bonuses.iter().map(|(_, c)| c.campaign_id.clone()));
    // Exact, so the breakdown always adds up; the caller refuses a total past MAX_POINTS_PER_COMMAND.
    let total = base.saturating_add(tier_bonus).saturating_add(campaign_bonus);
    Breakdown {
        below_minimum: false,
        base_points: base,
        tier_bonus_points: tier_bonus,
        campaign_bonus_points: campaign_bonus,
        total_points: total,
        tier_multiplier_bp: tier_bp,
        tier_id: tier.tier_id.clone(),
        campaign_ids,
    }
}

/// Points a refund takes back so that, after it, the order has lost
/// `points × refunded / amount` points (rounded down) in total. Refunds in
/// any number of parts therefore never take back more than was earned, and
/// refunding the whole order takes back exactly what it earned.
pub fn refund_reversal(points: i64, amount_minor: i64, refunded_before: i64, refund_now: i64) -> i64 {
    if amount_minor <= 0 {
        return 0;
    }
    let taken = |refunded: i64| {
        let refunded = refunded.clamp(0, amount_minor);
        i64::try_from(i128::from(points) * i128::from(refunded) / i128::from(amount_minor)).unwrap_or(points)
    };
    taken(refunded_before + refund_now) - taken(refunded_before)
}

/// Start of the cap period containing `at`; `None` for a lifetime cap.
pub fn period_start(period: CapPeriod, at: Micros) -> Option<Micros> {
    let day = at.div_euclid(MICROS_PER_DAY);
    let (year, month, _) = civil_from_days(day);
    let start_day = match period {
        CapPeriod::Lifetime => return None,
        CapPeriod::Year => days_from_civil(year, 1, 1),
        CapPeriod::Month => days_from_civil(year, month, 1),
        // 1970-01-01 was a Thursday: (day + 3) mod 7 counts from Monday.
        CapPeriod::Week => day - (day + 3).rem_euclid(7),
        CapPeriod::Day => day,
    };
    Some(start_day * MICROS_PER_DAY)
}

/// An activity type or `applies_to` target: 1 to 64 of `a-z 0-9 _ -`.
pub fn activity_type(value: &str) -> Result<(), FieldViolation> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldViolation::new("activity_type", "must be 1 to 64 characters of a-z, 0-9, _ and -"))
    }
}

pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(points: i64, per: i64, rounding: Rounding) -> ProgramSettings {
        ProgramSettings { earn_points: points, earn_per_amount_minor: per, rounding, ..ProgramSettings::default() }
    }

    fn campaign(id: &str, kind: CampaignKind, applies_to: &[&str]) -> Campaign {
        Campaign {
            campaign_id: id.into(),
            name: id.into(),
            kind,
            starts_at: 100,
            ends_at: 200,
            tier_ids: Vec::new(),
            segment_ids: Vec::new(),
            applies_to: applies_to.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn rounding_follows_the_rule() {
        assert_eq!(settings(1, 100, Rounding::Down).order_base_points(1_299), 12);
        assert_eq!(settings(1, 100, Rounding::Nearest).order_base_points(1_299), 13);
        assert_eq!(settings(1, 100, Rounding::Nearest).order_base_points(1_250), 13);
        assert_eq!(settings(1, 100, Rounding::Nearest).order_base_points(1_249), 12);
        assert_eq!(settings(3, 200, Rounding::Down).order_base_points(1_000), 15);
    }

    #[test]
    fn orders_below_the_minimum_earn_nothing() {
        let s = ProgramSettings { minimum_order_minor: 2_000, ..ProgramSettings::default() };
        assert_eq!(s.order_base_points(1_999), 0);
        assert_eq!(s.order_base_points(2_000), 20);
    }

    #[test]
    fn highest_campaign_multiplier_wins_bonuses_add_tier_adds_its_share() {
        let campaigns = [
            campaign("double", CampaignKind::Multiplier { multiplier_bp: 20_000 }, &[]),
            campaign("triple", CampaignKind::Multiplier { multiplier_bp: 30_000 }, &["order"]),
            campaign("b1", CampaignKind::Bonus { points: 50 }, &[]),
            campaign("b2", CampaignKind::Bonus { points: 25 }, &["order"]),
            campaign("reviews", CampaignKind::Bonus { points: 999 }, &["review"]),
        ];
        let gold = TierStanding { tier_id: "gold".into(), multiplier_bp: 20_000, birthday_multiplier_bp: 30_000 };
        let b = breakdown(100, &gold, None, &campaigns, ORDER_TARGET, 150);
        assert_eq!((b.base_points, b.tier_bonus_points, b.campaign_bonus_points, b.total_points), (100, 100, 275, 475));
        assert_eq!(b.campaign_ids, ["triple", "b1", "b2"]);
        let outside = breakdown(100, &gold, None, &campaigns, ORDER_TARGET, 200);
        assert_eq!(outside.total_points, 200, "the window excludes its end");
    }

    #[test]
    fn tier_restricted_campaigns_apply_only_to_those_tiers() {
        let mut c = campaign("vip", CampaignKind::Bonus { points: 10 }, &[]);
        c.tier_ids = vec!["gold".into()];
        assert!(c.applies(150, "gold", None, ORDER_TARGET));
        assert!(!c.applies(150, "", None, ORDER_TARGET));
        // Limited to at-risk customers as well: only gold members at risk.
        c.segment_ids = vec!["at_risk".into()];
        assert!(c.applies(150, "gold", Some("at_risk"), ORDER_TARGET));
        assert!(!c.applies(150, "gold", Some("active"), ORDER_TARGET));
        assert!(!c.applies(150, "gold", None, ORDER_TARGET));
        assert!(c.needs_segment(150, ORDER_TARGET) && !c.needs_segment(250, ORDER_TARGET));
        c.segment_ids = vec!["vip".into()];
        assert_eq!(c.validate()[0].field, "campaign.segment_ids[0]");
    }

    #[test]
    fn expiry_policies_give_the_documented_instants() {
        let earned = days_from_civil(2026, 1, 31) * MICROS_PER_DAY + 5_000;
        let s = |expiry| ProgramSettings { expiry, ..ProgramSettings::default() };
        assert_eq!(s(ExpiryPolicy::Never).expires_at(earned), None);
        assert_eq!(s(ExpiryPolicy::DaysAfterEarn(30)).expires_at(earned), Some(earned + 30 * MICROS_PER_DAY));
        assert_eq!(
            s(ExpiryPolicy::EndOfNthMonth(0)).expires_at(earned),
            Some(days_from_civil(2026, 2, 1) * MICROS_PER_DAY)
        );
        assert_eq!(
            s(ExpiryPolicy::EndOfNthMonth(12)).expires_at(earned),
            Some(days_from_civil(2027, 2, 1) * MICROS_PER_DAY)
        );
        assert_eq!(
            s(ExpiryPolicy::EndOfNthMonth(11)).expires_at(earned),
            Some(days_from_civil(2027, 1, 1) * MICROS_PER_DAY)
        );
    }

    #[test]
    fn cap_periods_start_where_the_calendar_says() {
        let at = days_from_civil(2026, 11, 25) * MICROS_PER_DAY + 3_600_000_000;
        assert_eq!(period_start(CapPeriod::Year, at), Some(days_from_civil(2026, 1, 1) * MICROS_PER_DAY));
        assert_eq!(period_start(CapPeriod::Month, at), Some(days_from_civil(2026, 11, 1) * MICROS_PER_DAY));
        // 2026-11-25 is a Wednesday; its week starts on Monday the 23rd.
        assert_eq!(period_start(CapPeriod::Week, at), Some(days_from_civil(2026, 11, 23) * MICROS_PER_DAY));
        assert_eq!(period_start(CapPeriod::Day, at), Some(days_from_civil(2026, 11, 25) * MICROS_PER_DAY));
        assert_eq!(period_start(CapPeriod::Lifetime, at), None);
    }

    #[test]
    fn invalid_settings_name_their_fields() {
        let mut s = ProgramSettings {
            currency: "eur".into(),
            earn_per_amount_minor: 0,
            pending_days: 14,
            expiry: ExpiryPolicy::DaysAfterEarn(7),
            ..ProgramSettings::default()
        };
        s.activity_rules = vec![
            ActivityRule {
                activity_type: "signup".into(),
                points: 500,
                active: true,
                cap_count: 1,
                cap_period: CapPeriod::Lifetime,
                once_per_ref: false,
            },
            ActivityRule {
                activity_type: "signup".into(),
                points: 0,
                active: true,
                cap_count: -1,
                cap_period: CapPeriod::Lifetime,
                once_per_ref: false,
            },
        ];
        let fields: Vec<String> = s.validate().into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "settings.currency",
                "settings.earn_rate.per_amount_minor",
                "settings.expiry.count",
                "settings.activity_rules[1].activity_type",
                "settings.activity_rules[1].points",
                "settings.activity_rules[1].cap_count",
            ]
        );
        assert!(ProgramSettings::default().validate().is_empty());
    }

    #[test]
    fn campaign_windows_must_not_end_before_they_start() {
        let mut c = campaign("x", CampaignKind::Multiplier { multiplier_bp: 10_000 }, &["Order!"]);
        c.ends_at = c.starts_at;
        let fields: Vec<String> = c.validate().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["campaign.multiplier_bp", "campaign.ends_at", "campaign.applies_to[0]"]);
    }

    fn checkout(min_points: i64, max_share_bp: i64, step_points: i64) -> CheckoutPoints {
        CheckoutPoints { points: 100, amount_minor: 100, min_points, max_share_bp, step_points }
    }

    #[test]
    fn checkout_points_stay_within_the_share_the_minimum_and_the_steps() {
        // 100 points = 1.00, at most half the order, at least 500, in hundreds.
        let rule = checkout(500, 5_000, 100);
        assert_eq!(rule.max_points_for(12_345), 6_100, "half of 123.45 is 61.72: 6100 points in steps of 100");
        assert_eq!(rule.usable(12_345, 2_550), 2_500, "what the customer has, in whole steps");
        assert_eq!(rule.usable(12_345, 499), 0, "below the minimum nothing is usable");
        assert_eq!(rule.usable(800, 10_000), 0, "half of 8.00 is below the minimum");
        assert_eq!(rule.apply(12_345, 2_500), Ok(2_500));
        assert_eq!(
            rule.apply(12_345, 6_200),
            Err(RuleViolation::CheckoutShareExceeded { max_points: 6_100, max_share_bp: 5_000 })
        );
        assert_eq!(
            rule.apply(12_345, 2_550),
            Err(RuleViolation::CheckoutUnaligned { min_points: 500, step_points: 100 })
        );
        assert_eq!(
            rule.apply(12_345, 400),
            Err(RuleViolation::CheckoutUnaligned { min_points: 500, step_points: 100 })
        );
        // 3 points = 0.01: 10 points pay 0.03, rounded down.
        let odd = CheckoutPoints { points: 3, amount_minor: 1, min_points: 0, max_share_bp: BP_ONE, step_points: 0 };
        assert_eq!(odd.apply(1_000, 10), Ok(3));
        assert_eq!(odd.max_points_for(1_000), 3_000);
    }

    #[test]
    fn checkout_rules_name_their_fields() {
        let bad = ProgramSettings {
            checkout: Some(CheckoutPoints {
                points: 0,
                amount_minor: 100,
                min_points: -1,
                max_share_bp: 10_001,
                step_points: 1,
            }),
            ..ProgramSettings::default()
        };
        let fields: Vec<String> = bad.validate().into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            ["settings.checkout.points", "settings.checkout.min_points", "settings.checkout.max_share_bp"]
        );
    }

    proptest! {
        #[test]
        fn calendar_round_trips(days in -800_000i64..800_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn order_points_are_never_negative_and_grow_with_the_amount(
            a in 0i64..MAX_ORDER_MINOR, b in 0i64..MAX_ORDER_MINOR,
            points in 0i64..1_000, per in 1i64..100_000, nearest in any::<bool>(),
        ) {
            let s = settings(points, per, if nearest { Rounding::Nearest } else { Rounding::Down });
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(s.order_base_points(lo) >= 0);
            prop_assert!(s.order_base_points(lo) <= s.order_base_points(hi));
        }

        #[test]
        fn refunds_in_any_parts_never_exceed_the_earn(
            points in 0i64..1_000_000, amount in 1i64..1_000_000_000,
            parts in proptest::collection::vec(1i64..1_000_000_000, 1..10),
        ) {
            let mut refunded = 0;
            let mut reversed = 0;
            for part in parts {
                let part = part.min(amount - refunded);
                if part == 0 { break; }
                let r = refund_reversal(points, amount, refunded, part);
                prop_assert!(r >= 0);
                refunded += part;
                reversed += r;
                prop_assert!(reversed <= points);
            }
            if refunded == amount {
                prop_assert_eq!(reversed, points, "a full refund takes back exactly what was earned");
            }
        }

        #[test]
        fn checkout_discounts_never_exceed_the_share(
            points in 1i64..10_000, amount in 1i64..10_000, share in 1i64..=BP_ONE, step in 0i64..500,
            order in 0i64..10_000_000, available in 0i64..10_000_000,
        ) {
            let rule = CheckoutPoints { points, amount_minor: amount, min_points: 0, max_share_bp: share, step_points: step };
            let usable = rule.usable(order, available);
            prop_assert!(usable <= available);
            prop_assert_eq!(usable % step.max(1), 0);
            let discount = rule.apply(order, usable).expect("the usable points apply");
            prop_assert!(i128::from(discount) * i128::from(BP_ONE) <= i128::from(order) * i128::from(share));
        }

        #[test]
        fn breakdown_total_is_the_sum_of_its_parts(base in 0i64..10_000_000, tier_bp in 10_000i64..=MAX_MULTIPLIER_BP, bonus in 1i64..1_000) {
            let campaigns = [campaign("b", CampaignKind::Bonus { points: bonus }, &[])];
            let tier = TierStanding { tier_id: "t".into(), multiplier_bp: tier_bp, birthday_multiplier_bp: BP_ONE };
            let b = breakdown(base, &tier, None, &campaigns, ORDER_TARGET, 150);
            prop_assert!(b.total_points >= b.base_points);
            prop_assert_eq!(b.total_points, b.base_points + b.tier_bonus_points + b.campaign_bonus_points);
        }
    }
}
