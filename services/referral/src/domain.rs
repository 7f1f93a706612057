//! Referral rules, free of transport and storage: program settings, codes,
//! and what an order or a refund does to a referral.

use serde::{Deserialize, Serialize};

use loyalty_common::clock::{MICROS_PER_DAY, Micros};
use loyalty_common::validate::{self, FieldViolation};

/// Readable aloud: no 0/O and no 1/I.
pub const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// 8 symbols of 5 bits: 40 random bits, from the operating system's CSPRNG.
pub const CODE_LENGTH: usize = 8;
const MAX_REWARD_POINTS: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub enabled: bool,
    pub referrer_points: i64,
    pub referee_points: i64,
    pub minimum_order_minor: i64,
    pub cap_count: i32,
    pub cap_period_days: i32,
    pub attribution_window_days: i32,
    pub clawback_window_days: i32,
    pub version: i64,
    /// The friend's welcome voucher (a reward given at sign-up); empty: none.
    #[serde(default)]
    pub referee_reward_id: String,
    /// The referrer's reward as a voucher instead of points; empty: points.
    #[serde(default)]
    pub referrer_reward_id: String,
}

impl Default for Settings {
    /// Off, until a shop sets its rewards and turns it on.
    fn default() -> Self {
        Self {
            enabled: false,
            referrer_points: 0,
            referee_points: 0,
            minimum_order_minor: 0,
            cap_count: 0,
            cap_period_days: 30,
            attribution_window_days: 30,
            clawback_window_days: 30,
            version: 0,
            referee_reward_id: String::new(),
            referrer_reward_id: String::new(),
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut bad = Vec::new();
        let mut check = |ok: bool, field: &str, description: &str| {
            if !ok {
                bad.push(FieldViolation::new(format!("settings.{field}"), description));
            }
        };
        check((0..=MAX_REWARD_POINTS).contains(&self.referrer_points), "referrer_points", "must be 0 to 1000000000");
        check((0..=MAX_REWARD_POINTS).contains(&self.referee_points), "referee_points", "must be 0 to 1000000000");
        check(self.minimum_order_minor >= 0, "minimum_order_minor", "must not be negative");
        check(self.cap_count >= 0, "cap_count", "must not be negative");
        check((1..=3_660).contains(&self.cap_period_days), "cap_period_days", "must be 1 to 3660");
        check((1..=3_660).contains(&self.attribution_window_days), "attribution_window_days", "must be 1 to 3660");
        check((0..=3_660).contains(&self.clawback_window_days), "clawback_window_days", "must be 0 to 3660");
        check(
            !self.enabled || self.referrer_points > 0 || self.referee_points > 0 || !self.reward_ids().is_empty(),
            "enabled",
            "a program needs a reward for at least one side to turn referrals on",
        );
        for (field, id) in
            [("referee_reward_id", &self.referee_reward_id), ("referrer_reward_id", &self.referrer_reward_id)]
        {
            if !id.is_empty()
                && let Err(violation) = validate::id(&format!("settings.{field}"), id)
            {
                bad.push(violation);
            }
        }
        bad
    }

    /// The rewards given as vouchers (the rewards service must hold them).
    pub fn reward_ids(&self) -> Vec<(&'static str, &str)> {
        [
            ("settings.referee_reward_id", &self.referee_reward_id),
            ("settings.referrer_reward_id", &self.referrer_reward_id),
        ]
        .into_iter()
        .filter(|(_, id)| !id.is_empty())
        .map(|(field, id)| (field, id.as_str()))
        .collect()
    }

    /// Start of the cap period that ends at `now`.
    pub fn cap_since(&self, now: Micros) -> Micros {
        now - i64::from(self.cap_period_days) * MICROS_PER_DAY
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Pending,
    Completed,
    Reversed,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Reversed => "reversed",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Completed, Self::Reversed, Self::Expired].into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub referral_id: String,
    pub program_id: String,
    pub code: String,
    pub referrer_customer_id: String,
    pub referee_customer_id: String,
    pub status: Status,
    pub created_at: Micros,
    pub completed_at: Option<Micros>,
    pub reversed_at: Option<Micros>,
    pub qualifying_order_id: String,
    pub referrer_points: i64,
}

impl Referral {
    /// The event a referral's new state is (`referral.completed`,
    /// `referral.reversed`), told to the referrer: the friend's order earned
    /// them points, or its refund took them back.
    pub fn event(&self) -> Option<loyalty_common::outbox::Event> {
        let (event_type, at) = match self.status {
            Status::Completed => ("referral.completed", self.completed_at?),
            Status::Reversed => ("referral.reversed", self.reversed_at?),
            Status::Pending | Status::Expired => return None,
        };
        let instant = |at: Micros| loyalty_common::clock::to_timestamp(at).to_string();
        let mut data = serde_json::json!({
            "customer_id": self.referrer_customer_id,
            "referral_id": self.referral_id,
            "referee_customer_id": self.referee_customer_id,
            "qualifying_order_id": self.qualifying_order_id,
            "referrer_points": self.referrer_points,
            "signed_up_at": instant(self.created_at),
        });
        if let Some(completed_at) = self.completed_at {
            data["completed_at"] = instant(completed_at).into();
        }
        if let Some(reversed_at) = self.reversed_at {
            data["reversed_at"] = instant(reversed_at).into();
        }
        Some(loyalty_common::outbox::Event {
            program_id: self.program_id.clone(),
            customer_id: self.referrer_customer_id.clone(),
            event_type,
            occurred_at: at,
            data,
        })
    }
}

/// Why a sign-up is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("referrals are not enabled in this program")]
    ReferralsOff,
    #[error("no referral code {0:?} in this program")]
    UnknownCode(String),
    #[error("referral code {0:?} is disabled")]
    CodeDisabled(String),
    #[error("a customer cannot refer themselves")]
    SelfReferral,
    #[error("this customer was already referred")]
    AlreadyReferred,
    #[error("this customer has already ordered, so cannot be referred")]
    ExistingCustomer,
    #[error("the referrer reached the limit of {cap} referrals in {days} days")]
    CapReached { cap: i32, days: i32 },
}

/// What an order does to a PENDING referral of its customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEffect {
    Complete,
    /// Below the minimum: the referral waits for a bigger order.
    Nothing,
    /// Past the attribution window.
    Expire,
}

pub fn order_effect(settings: &Settings, referral: &Referral, amount_minor: i64, at: Micros) -> OrderEffect {
    let deadline = referral.created_at + i64::from(settings.attribution_window_days) * MICROS_PER_DAY;
    if at > deadline {
        OrderEffect::Expire
    } else if amount_minor >= settings.minimum_order_minor {
        OrderEffect::Complete
    } else {
        OrderEffect::Nothing
    }
}

/// Whether a refund of the qualifying order takes the rewards back: within
/// the clawback window, and when what is left of the order no longer qualifies.
pub fn claws_back(settings: &Settings, completed_at: Micros, amount: i64, refunded_total: i64, at: Micros) -> bool {
    let deadline = completed_at + i64::from(settings.clawback_window_days) * MICROS_PER_DAY;
    at <= deadline && amount - refunded_total < settings.minimum_order_minor.max(1)
}

/// A fresh random code.
pub fn new_code() -> String {
    let random = uuid::Uuid::new_v4().as_u128();
    (0..CODE_LENGTH).map(|i| CODE_ALPHABET[((random >> (i * 5)) & 31) as usize] as char).collect()
}

/// Codes are read back case-insensitively; anything outside the alphabet is no code.
pub fn normalize_code(input: &str) -> Option<String> {
    let code = input.trim().to_ascii_uppercase();
    (code.len() == CODE_LENGTH && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral(created_at: Micros) -> Referral {
        Referral {
            referral_id: "r".into(),
            program_id: "p".into(),
            code: "ABCDEFGH".into(),
            referrer_customer_id: "a".into(),
            referee_customer_id: "b".into(),
            status: Status::Pending,
            created_at,
            completed_at: None,
            reversed_at: None,
            qualifying_order_id: String::new(),
            referrer_points: 0,
        }
    }

    #[test]
    fn codes_use_the_readable_alphabet_and_differ() {
        let codes: std::collections::HashSet<String> = (0..1_000).map(|_| new_code()).collect();
        assert_eq!(codes.len(), 1_000);
        for code in &codes {
            assert_eq!(code.len(), CODE_LENGTH);
            assert!(!code.contains(['0', 'O', '1', 'I']), "{code}");
        }
        assert_eq!(normalize_code(" abcdefgh "), Some("ABCDEFGH".into()));
        assert_eq!(normalize_code("ABCDEFG0"), None, "0 is not in the alphabet");
    }

    #[test]
    fn orders_complete_within_the_window_and_above_the_minimum() {
        let s = Settings { minimum_order_minor: 2_000, attribution_window_days: 30, ..Settings::default() };
        let r = referral(0);
        assert_eq!(order_effect(&s, &r, 2_000, 30 * MICROS_PER_DAY), OrderEffect::Complete);
        assert_eq!(order_effect(&s, &r, 1_999, MICROS_PER_DAY), OrderEffect::Nothing);
        assert_eq!(order_effect(&s, &r, 5_000, 30 * MICROS_PER_DAY + 1), OrderEffect::Expire);
    }

    #[test]
    fn refunds_claw_back_within_the_window_when_the_order_no_longer_qualifies() {
        let s = Settings { minimum_order_minor: 2_000, clawback_window_days: 14, ..Settings::default() };
        assert!(claws_back(&s, 0, 5_000, 3_500, MICROS_PER_DAY));
        assert!(!claws_back(&s, 0, 5_000, 3_000, MICROS_PER_DAY), "2000 left still qualifies");
        assert!(!claws_back(&s, 0, 5_000, 5_000, 15 * MICROS_PER_DAY), "after the window");
    }

    #[test]
    fn settings_need_a_reward_to_be_enabled() {
        let s = Settings { enabled: true, ..Settings::default() };
        let fields: Vec<String> = s.validate().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["settings.enabled"]);
        assert!(Settings { referrer_points: 500, ..s }.validate().is_empty());
    }
}
