//! Reward rules, free of transport and storage: the catalog entry, whether a
//! customer can redeem it now, and voucher codes.

use serde::{Deserialize, Serialize};

use loyalty_common::clock::{MICROS_PER_DAY, Micros};
use loyalty_common::validate::{self, FieldViolation};

/// Readable aloud: no 0/O and no 1/I.
const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// 12 symbols of 5 bits: 60 random bits from the operating system's CSPRNG.
pub const VOUCHER_LENGTH: usize = 12;
const MAX_POINT_COST: i64 = 1_000_000_000;
const MAX_ELIGIBLE_TIERS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    FixedDiscount { amount_minor: i64, currency: String },
    PercentDiscount { percent_bp: i64 },
    FreeShipping,
    FreeProduct { sku: String },
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    pub reward_id: String,
    pub name: String,
    pub description: String,
    pub kind: Kind,
    pub point_cost: i64,
    pub minimum_tier_id: String,
    /// Exactly these tiers, hidden ones included.
    #[serde(default)]
    pub eligible_tier_ids: Vec<String>,
    pub total_stock: Option<i64>,
    pub per_customer_limit: i32,
    pub limit_period_days: i32,
    pub starts_at: Option<Micros>,
    pub ends_at: Option<Micros>,
    pub voucher_validity_days: i32,
    pub refund_expired: bool,
    /// 1 when created, one more with every change (0: stored before versions).
    #[serde(default)]
    pub version: i64,
}

/// Why a customer cannot redeem a reward now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    PointsShort(i64),
    /// A visible tier the customer can still climb to.
    TierTooLow,
    /// For other tiers: a hidden one, or a listed set the customer is not in.
    TierNotEligible,
    OutOfStock,
    LimitReached,
}

/// What is known of a customer when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub available_points: i64,
    /// Why the customer's tier does not admit the reward, if it does not.
    pub tier: Option<Unavailable>,
    /// Redemptions of this reward by the customer in the limit period.
    pub recent_redemptions: i64,
}

impl Reward {
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut bad = Vec::new();
        let mut push =
            |field: &str, description: &str| bad.push(FieldViolation::new(format!("reward.{field}"), description));
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            push("name", "must be 1 to 200 characters, not only white space");
        }
        if self.description.chars().count() > 2_000 {
            push("description", "must be at most 2000 characters");
        }
        match &self.kind {
            Kind::FixedDiscount { amount_minor, currency } => {
                if *amount_minor <= 0 {
                    push("amount_minor", "must be greater than zero");
                }
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                    push("currency", "must be an ISO 4217 code such as EUR");
                }
            }
            Kind::PercentDiscount { percent_bp } if !(1..=10_000).contains(percent_bp) => {
                push("percent_bp", "must be 1 to 10000 (0.01% to 100%)");
            }
            Kind::FreeProduct { sku } if validate::id("reward.sku", sku).is_err() => {
                push("sku", "must be a valid id (1 to 128 characters)");
            }
            _ => {}
        }
        if !(1..=MAX_POINT_COST).contains(&self.point_cost) {
            push("point_cost", "must be 1 to 1000000000");
        }
        if !self.minimum_tier_id.is_empty() && validate::id("x", &self.minimum_tier_id).is_err() {
            push("minimum_tier_id", "must be a valid tier id (1 to 128 characters)");
        }
        let mut seen = std::collections::HashSet::new();
        if self.eligible_tier_ids.len() > MAX_ELIGIBLE_TIERS
            || !self.eligible_tier_ids.iter().all(|t| validate::id("x", t).is_ok() && seen.insert(t))
        {
            push("eligible_tier_ids", "at most 50 distinct tier ids of 1 to 128 characters");
        }
        if self.total_stock.is_some_and(|s| s < 0) {
            push("total_stock", "must not be negative");
        }
        if self.per_customer_limit < 0 {
            push("per_customer_limit", "must not be negative");
        }
        if self.per_customer_limit > 0 && !(1..=3_660).contains(&self.limit_period_days) {
            push("limit_period_days", "must be 1 to 3660 when a limit is set");
        }
        if let (Some(start), Some(end)) = (self.starts_at, self.ends_at)
            && end <= start
        {
            push("ends_at", "must be after starts_at");
        }
        if !(1..=3_660).contains(&self.voucher_validity_days) {
            push("voucher_validity_days", "must be 1 to 3660");
        }
        bad
    }

    /// Whether only some tiers may redeem it.
    pub fn tier_limited(&self) -> bool {
        !self.minimum_tier_id.is_empty() || !self.eligible_tier_ids.is_empty()
    }

    pub fn is_active(&self, now: Micros) -> bool {
        self.starts_at.is_none_or(|s| s <= now) && self.ends_at.is_none_or(|e| now < e)
    }

    /// Start of the per-customer limit period ending at `now`.
    pub fn limit_since(&self, now: Micros) -> Micros {
        now - i64::from(self.limit_period_days) * MICROS_PER_DAY
    }

    pub fn voucher_expires_at(&self, issued_at: Micros) -> Micros {
        issued_at + i64::from(self.voucher_validity_days) * MICROS_PER_DAY
    }

    /// Why the customer cannot redeem it now, checked in the order a
    /// customer can act on: tier, limit, stock, then points.
    pub fn unavailable(&self, standing: Standing, remaining_stock: Option<i64>) -> Option<Unavailable> {
        if let Some(why) = standing.tier {
            Some(why)
        } else if self.per_customer_limit > 0 && standing.recent_redemptions >= i64::from(self.per_customer_limit) {
            Some(Unavailable::LimitReached)
        } else if remaining_stock.is_some_and(|s| s <= 0) {
            Some(Unavailable::OutOfStock)
        } else if standing.available_points < self.point_cost {
            Some(Unavailable::PointsShort(self.point_cost - standing.available_points.max(0)))
        } else {
            None
        }
    }
}

/// One tier of the program's ladder, lowest first, as eligibility needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderTier {
    pub tier_id: String,
    pub hidden: bool,
}

/// The program's ladder and the tier the customer holds (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierPosition {
    pub ladder: Vec<LadderTier>,
    pub held: String,
}

impl TierPosition {
    /// Why the customer's tier does not admit `reward`; `None` when it does.
    /// A minimum counts visible tiers only: a hidden tier is never "above"
    /// it, and a hidden minimum admits that tier's members alone. The listed
    /// tiers admit exactly themselves. With both, either admits.
    pub fn refuses(&self, reward: &Reward) -> Option<Unavailable> {
        let minimum = reward.minimum_tier_id.as_str();
        if minimum.is_empty() && reward.eligible_tier_ids.is_empty() {
            return None;
        }
        if !self.held.is_empty() && reward.eligible_tier_ids.contains(&self.held) {
            return None;
        }
        if minimum.is_empty() {
            return Some(Unavailable::TierNotEligible);
        }
        let tier = |id: &str| self.ladder.iter().find(|t| t.tier_id == id);
        let visible_rank = |id: &str| self.ladder.iter().filter(|t| !t.hidden).position(|t| t.tier_id == id);
        match tier(minimum) {
            Some(min) if min.hidden => (self.held != minimum).then_some(Unavailable::TierNotEligible),
            Some(_) => match (tier(&self.held), visible_rank(&self.held), visible_rank(minimum)) {
                (Some(held), _, _) if held.hidden => Some(Unavailable::TierNotEligible),
                (_, Some(held), Some(min)) if held >= min => None,
                _ => Some(Unavailable::TierTooLow),
            },
            // A minimum the ladder lacks admits nobody.
            None => Some(Unavailable::TierNotEligible),
        }
    }
}

/// A fresh random voucher code.
pub fn new_voucher_code() -> String {
    let random = uuid::Uuid::new_v4().as_u128();
    (0..VOUCHER_LENGTH).map(|i| CODE_ALPHABET[((random >> (i * 5)) & 31) as usize] as char).collect()
}

/// A campaign code's prefix: at most this many letters and digits.
pub const MAX_PREFIX: usize = 12;

/// `ABCD-EFGH-JKLM` for people; a campaign code's prefix before it
/// (`WELCOME-ABCD-EFGH-JKLM`).
pub fn display_code(code: &str) -> String {
    let (prefix, random) = code.split_at(code.len().saturating_sub(VOUCHER_LENGTH));
    let groups = random.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>();
    let groups = groups.join("-");
    if prefix.is_empty() { groups } else { format!("{prefix}-{groups}") }
}

/// A code as typed (any case, dashes or spaces); `None` when it cannot be
/// one: 12 symbols of the alphabet, after a campaign's prefix if any.
pub fn normalize_code(input: &str) -> Option<String> {
    let code: String = input.chars().filter(|c| !matches!(c, '-' | ' ')).collect::<String>().to_ascii_uppercase();
    if !code.is_ascii() {
        return None;
    }
    let prefix_len = code.len().checked_sub(VOUCHER_LENGTH)?;
    let (prefix, random) = code.split_at(prefix_len);
    let fits = prefix_len <= MAX_PREFIX
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        && random.bytes().all(|b| CODE_ALPHABET.contains(&b));
    fits.then_some(code)
}

/// A campaign code's prefix as given, checked: letters and digits, made upper case.
pub fn code_prefix(input: &str) -> Result<String, FieldViolation> {
    if input.len() > MAX_PREFIX || !input.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FieldViolation::new("prefix", format!("must be at most {MAX_PREFIX} letters and digits")));
    }
    Ok(input.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward() -> Reward {
        Reward {
            reward_id: "r".into(),
            name: "5 EUR off".into(),
            description: String::new(),
            kind: Kind::FixedDiscount { amount_minor: 500, currency: "EUR".into() },
            point_cost: 500,
            minimum_tier_id: String::new(),
            eligible_tier_ids: Vec::new(),
            total_stock: None,
            per_customer_limit: 1,
            limit_period_days: 30,
            starts_at: None,
            ends_at: None,
            voucher_validity_days: 90,
            refund_expired: false,
            version: 0,
        }
    }

    #[test]
    fn unavailability_says_why() {
        let ok = Standing { available_points: 600, tier: None, recent_redemptions: 0 };
        assert_eq!(reward().unavailable(ok, None), None);
        assert_eq!(
            reward().unavailable(Standing { available_points: 120, ..ok }, None),
            Some(Unavailable::PointsShort(380))
        );
        let low = Standing { tier: Some(Unavailable::TierTooLow), ..ok };
        assert_eq!(reward().unavailable(low, None), Some(Unavailable::TierTooLow));
        assert_eq!(
            reward().unavailable(Standing { recent_redemptions: 1, ..ok }, None),
            Some(Unavailable::LimitReached)
        );
        assert_eq!(reward().unavailable(ok, Some(0)), Some(Unavailable::OutOfStock));
    }

    #[test]
    fn tiers_admit_by_visible_order_or_by_name_and_hidden_tiers_never_count_as_above() {
        let tier = |id: &str, hidden| LadderTier { tier_id: id.into(), hidden };
        // A hidden win-back tier placed at the top of the ladder.
        let ladder = vec![tier("silver", false), tier("gold", false), tier("winback", true)];
        let at = |held: &str| TierPosition { ladder: ladder.clone(), held: held.into() };
        let gold_minimum = Reward { minimum_tier_id: "gold".into(), ..reward() };
        assert_eq!(at("gold").refuses(&gold_minimum), None);
        assert_eq!(at("silver").refuses(&gold_minimum), Some(Unavailable::TierTooLow));
        assert_eq!(at("").refuses(&gold_minimum), Some(Unavailable::TierTooLow));
        assert_eq!(at("winback").refuses(&gold_minimum), Some(Unavailable::TierNotEligible), "hidden is not above");
        let listed = Reward { eligible_tier_ids: vec!["winback".into()], ..gold_minimum.clone() };
        assert_eq!(at("winback").refuses(&listed), None, "unless the hidden tier is listed");
        assert_eq!(at("gold").refuses(&listed), None, "either way admits");

        let winback_only = Reward { eligible_tier_ids: vec!["winback".into()], ..reward() };
        assert_eq!(at("winback").refuses(&winback_only), None);
        for other in ["gold", "silver", ""] {
            assert_eq!(at(other).refuses(&winback_only), Some(Unavailable::TierNotEligible), "{other:?}");
        }
        let hidden_minimum = Reward { minimum_tier_id: "winback".into(), ..reward() };
        assert_eq!(at("winback").refuses(&hidden_minimum), None);
        assert_eq!(at("gold").refuses(&hidden_minimum), Some(Unavailable::TierNotEligible));
        assert_eq!(at("gold").refuses(&reward()), None, "an open reward");
        let unknown = Reward { minimum_tier_id: "platinum".into(), ..reward() };
        assert_eq!(at("gold").refuses(&unknown), Some(Unavailable::TierNotEligible));
    }

    #[test]
    fn voucher_codes_carry_60_random_bits_in_a_readable_alphabet() {
        let codes: std::collections::HashSet<String> = (0..2_000).map(|_| new_voucher_code()).collect();
        assert_eq!(codes.len(), 2_000);
        let code = codes.iter().next().unwrap();
        assert_eq!(code.len(), VOUCHER_LENGTH);
        assert_eq!(normalize_code(&display_code(code).to_lowercase()), Some(code.clone()));
        assert_eq!(normalize_code("ABCD-EFGH-JKL0"), None);
        let campaign = format!("WELCOME{code}");
        assert_eq!(display_code(&campaign), format!("WELCOME-{}", display_code(code)));
        assert_eq!(normalize_code(&display_code(&campaign).to_lowercase()), Some(campaign));
        assert_eq!(normalize_code(&format!("ABCDEFGHIJKLM{code}")), None, "a prefix of 13");
        assert_eq!(normalize_code(&format!("WEL_COME{code}")), None);
        assert_eq!(normalize_code(&format!("é{code}")), None, "not split inside a character");
        assert_eq!(code_prefix("welcome10").unwrap(), "WELCOME10");
        assert!(code_prefix("WELCOME-10").is_err() && code_prefix("ABCDEFGHIJKLM").is_err());
    }

    #[test]
    fn rewards_are_validated_field_by_field() {
        let mut r = reward();
        r.kind = Kind::PercentDiscount { percent_bp: 0 };
        r.point_cost = 0;
        r.voucher_validity_days = 0;
        r.eligible_tier_ids = vec!["gold".into(), "gold".into()];
        let fields: Vec<String> = r.validate().into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            ["reward.percent_bp", "reward.point_cost", "reward.eligible_tier_ids", "reward.voucher_validity_days"]
        );
        assert!(reward().validate().is_empty());
    }
}
