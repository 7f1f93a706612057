//! One customer: activities, the loyalty page and the ledger history.

use super::*;

// ---------------------------------------------------------------- customers

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityBody {
    /// `signup`, `birthday`, `review`, `social_follow` or one the shop defined in its settings.
    pub activity_type: String,
    /// What the activity was about: a product id for a review, a network for a follow.
    pub activity_ref: Option<String>,
}

impl ActivityBody {
    pub fn into_proto(self, program_id: &str, customer_id: String, key: String) -> pb::RecordActivityRequest {
        pb::RecordActivityRequest {
            program_id: program_id.to_owned(),
            customer_id,
            activity_type: self.activity_type,
            activity_ref: self.activity_ref.unwrap_or_default(),
            idempotency_key: key,
        }
    }
}

/// An activity's points, served as the points service answers them.
pub use pb::RecordActivityResponse as ActivityRecorded;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// Signed, never zero: positive adds points, negative takes them away.
    pub points: i64,
    /// Why, for the ledger and the audit trail.
    pub reason: String,
    /// For a positive adjustment: when those points expire; absent: as the program's expiry
    /// policy says, unless `never_expires`.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// For a negative adjustment: allow the balance to go below zero.
    #[serde(default)]
    pub allow_debt: bool,
    /// For a positive adjustment without `expires_at`: the points never expire, whatever the policy.
    #[serde(default)]
    pub never_expires: bool,
}

impl AdjustmentBody {
    pub fn into_proto(
        self,
        program_id: &str,
        customer_id: String,
        actor: String,
        key: String,
    ) -> Result<pb::AdjustRequest, Problem> {
        let expires_at = self.expires_at.as_deref().map(|t| time_in("expires_at", t)).transpose()?;
        Ok(pb::AdjustRequest {
            program_id: program_id.to_owned(),
            customer_id,
            points: self.points,
            reason: self.reason,
            idempotency_key: key,
            expires_at,
            allow_debt: self.allow_debt,
            actor,
            never_expires: self.never_expires,
        })
    }
}

/// An adjustment's entry and the balance after it, served as the points service answers them.
pub use pb::AdjustResponse as Adjusted;

/// One customer's loyalty standing, for a storefront widget. `points` is
/// essential (no page without it); every other part may be marked
/// `available: false` when its service is not configured or does not answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoyaltyPage {
    pub customer_id: String,
    pub points: PointsPart,
    pub tier: TierPart,
    pub referral: ReferralPart,
    pub rewards: RewardsPart,
    /// What the member told the program about themselves (the public part of
    /// the profile: not the shop's own attributes); absent until a profile is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfilePart>,
}

/// The member's own part of the profile, for the storefront.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfilePart {
    /// When the member enrolled (the profile's first write).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub enrolled_at: Option<String>,
    /// Birth month and day, no year; 0 and 0: not given.
    pub birth_month: i32,
    pub birth_day: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locale: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    pub consents: Vec<pb::MarketingConsent>,
}

impl From<pb::MemberProfile> for ProfilePart {
    fn from(p: pb::MemberProfile) -> Self {
        Self {
            enrolled_at: time_out(p.enrolled_at.as_ref()),
            birth_month: p.birth_month,
            birth_day: p.birth_day,
            locale: p.locale,
            time_zone: p.time_zone,
            consents: p.consents,
        }
    }
}

/// The customer's referral code and stats.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ReferralPart {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// False when the code was disabled or the program has referrals off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<ReferralStats>,
}

impl ReferralPart {
    pub fn absent(reason: Absence) -> Self {
        Self { available: false, reason: Some(reason), ..Self::default() }
    }
}

impl From<referral_pb::GetReferralSummaryResponse> for ReferralPart {
    fn from(r: referral_pb::GetReferralSummaryResponse) -> Self {
        let (code, stats) = (r.code.unwrap_or_default(), r.stats.unwrap_or_default());
        Self {
            available: true,
            reason: None,
            // None until the customer asked for one: reading the page makes nothing.
            code: non_empty(code.code),
            enabled: Some(code.enabled),
            stats: Some(stats),
        }
    }
}

/// The rewards the customer can redeem right now (the full list with reasons is
/// `GET /v1/customers/{customer_id}/rewards`).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RewardsPart {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemable: Option<Vec<Reward>>,
}

impl RewardsPart {
    pub fn absent(reason: Absence) -> Self {
        Self { available: false, reason: Some(reason), ..Self::default() }
    }
}

impl From<rewards_pb::ListAvailableRewardsResponse> for RewardsPart {
    fn from(r: rewards_pb::ListAvailableRewardsResponse) -> Self {
        let redeemable =
            r.rewards.into_iter().filter(|a| a.redeemable).map(|a| a.reward.unwrap_or_default().into()).collect();
        Self { available: true, reason: None, redeemable: Some(redeemable) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointsPart {
    #[serde(flatten)]
    pub balance: Balance,
    pub expiring_soon: ExpiringSoon,
}

impl From<pb::GetAccountSummaryResponse> for PointsPart {
    fn from(summary: pb::GetAccountSummaryResponse) -> Self {
        let expiring = summary.expiring.unwrap_or_default();
        Self {
            balance: summary.balance.unwrap_or_default(),
            expiring_soon: ExpiringSoon {
                within_days: EXPIRING_SOON_DAYS,
                total_points: expiring.total_points,
                expiring: expiring.expiring,
            },
        }
    }
}

/// Active points that expire within `within_days`, grouped by instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiringSoon {
    pub within_days: i64,
    pub total_points: i64,
    pub expiring: Vec<ExpiringPoints>,
}

/// Points and the instant they expire, as the points service answers them.
pub use pb::ExpiringPoints;

/// Why a part of the loyalty page is missing.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Absence {
    /// The gateway has no address for that service.
    NotConfigured,
    /// The service did not answer (in time); the rest of the page is still right.
    Unavailable,
}

/// The customer's tier. With `available: true` and no `tier_id` the customer has no tier yet.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct TierPart {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Absence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_name: Option<String>,
    /// Earn multiplier in basis points: 10000 is 1x.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier_bp: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualifying_points: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_to_next_tier: Option<i64>,
    /// What `qualifying_points` counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualification_basis: Option<QualificationBasis>,
    /// The current tier's benefits (free shipping for a checkout to apply, and so on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benefits: Option<TierBenefits>,
    /// The current tier's free-text perks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perks: Option<Vec<String>>,
}

impl TierPart {
    pub fn absent(reason: Absence) -> Self {
        Self { available: false, reason: Some(reason), ..Self::default() }
    }

    /// A customer the tiers service does not know has no tier.
    pub fn no_tier() -> Self {
        Self { available: true, ..Self::default() }
    }
}

/// No membership: no tier.
impl From<Option<tiers_pb::Membership>> for TierPart {
    fn from(m: Option<tiers_pb::Membership>) -> Self {
        let Some(m) = m else { return Self::no_tier() };
        let has_tier = !m.tier_id.is_empty();
        let has_next = !m.next_tier_id.is_empty();
        Self {
            available: true,
            reason: None,
            tier_id: non_empty(m.tier_id),
            tier_name: non_empty(m.tier_name),
            multiplier_bp: has_tier.then_some(m.multiplier_bp),
            qualifying_points: Some(m.qualifying_points),
            next_tier_id: non_empty(m.next_tier_id),
            next_tier_name: non_empty(m.next_tier_name),
            points_to_next_tier: has_next.then_some(m.points_to_next_tier),
            qualification_basis: Some(QualificationBasis::shown(m.qualification_basis)),
            benefits: m.benefits,
            perks: has_tier.then_some(m.perks),
        }
    }
}

/// A ledger entry's kind; an unspecified or unknown one is `unknown`.
pub use pb::EntryKind;

/// One ledger entry of the customer's account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transaction {
    pub transaction_id: String,
    pub kind: EntryKind,
    /// Change to `available` (signed).
    pub points: i64,
    /// Change to `pending` (signed).
    pub pending_points: i64,
    pub reason: String,
    /// The earn a `reverse`, `activate` or `expire` entry refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub pending_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// Newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionPage {
    pub entries: Vec<Transaction>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<pb::ListTransactionsResponse> for TransactionPage {
    fn from(r: pb::ListTransactionsResponse) -> Self {
        let entries = r
            .entries
            .into_iter()
            .map(|e| Transaction {
                kind: EntryKind::shown(e.kind),
                created_at: time_out(e.created_at.as_ref()),
                pending_until: time_out(e.pending_until.as_ref()),
                expires_at: time_out(e.expires_at.as_ref()),
                related_transaction_id: non_empty(e.related_transaction_id),
                transaction_id: e.transaction_id,
                points: e.points,
                pending_points: e.pending_points,
                reason: e.reason,
            })
            .collect();
        Self { entries, next_page_token: non_empty(r.next_page_token) }
    }
}

pub fn transactions_request(program_id: &str, customer_id: String, page: PageQuery) -> pb::ListTransactionsRequest {
    pb::ListTransactionsRequest {
        program_id: program_id.to_owned(),
        customer_id,
        page_size: page.page_size.unwrap_or(0),
        page_token: page.page_token.unwrap_or_default(),
    }
}

/// The balance and what expires within [`EXPIRING_SOON_DAYS`], in one points call.
pub fn account_summary_request(program_id: &str, customer_id: &str) -> pb::GetAccountSummaryRequest {
    pb::GetAccountSummaryRequest {
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        expiring_within: Some(prost_types::Duration { seconds: EXPIRING_SOON_DAYS * 86_400, nanos: 0 }),
        include_profile: true,
    }
}

pub fn membership_request(program_id: &str, customer_id: &str) -> tiers_pb::GetMembershipRequest {
    tiers_pb::GetMembershipRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

/// A member's profile, replaced whole; the first write is the enrolment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    /// Where the customer enrolled (`web`, `store`, `app`…): set once, kept after.
    #[serde(default)]
    pub enrollment_channel: String,
    /// Birth month (1 to 12) and day (29 February included), no year; absent: unknown.
    #[serde(default)]
    pub birth_month: i32,
    #[serde(default)]
    pub birth_day: i32,
    /// BCP 47, e.g. `de-CH`; absent: the program's.
    #[serde(default)]
    pub locale: String,
    /// IANA, e.g. `Europe/Berlin`; absent: UTC.
    #[serde(default)]
    pub time_zone: String,
    /// Each channel's consent with when it was given or withdrawn.
    #[serde(default)]
    pub consents: Vec<ConsentBody>,
    /// The shop's own fields: at most 50; keys of lower-case letters, digits, `_` or `-`.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The `version` read (0: none yet); a profile changed meanwhile is refused
    /// (409 `VERSION_MISMATCH`). Absent: the last writer wins.
    pub expected_version: Option<i64>,
}

/// A marketing consent as the customer gave or withdrew it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    /// e.g. `email`, `sms`, `push`.
    pub channel: String,
    pub granted: bool,
    /// When: required, not in the future.
    #[schema(format = DateTime)]
    pub changed_at: String,
}

impl ProfileBody {
    pub fn into_proto(
        self,
        program_id: &str,
        customer_id: String,
        actor: String,
        key: String,
    ) -> Result<pb::UpdateProfileRequest, Problem> {
        let mut consents = Vec::with_capacity(self.consents.len());
        for (i, c) in self.consents.into_iter().enumerate() {
            let changed_at = time_in(&format!("consents[{i}].changed_at"), &c.changed_at)?;
            consents.push(pb::MarketingConsent {
                channel: c.channel,
                granted: c.granted,
                changed_at: Some(changed_at),
            });
        }
        Ok(pb::UpdateProfileRequest {
            program_id: program_id.to_owned(),
            customer_id,
            profile: Some(pb::MemberProfile {
                enrollment_channel: self.enrollment_channel,
                birth_month: self.birth_month,
                birth_day: self.birth_day,
                locale: self.locale,
                time_zone: self.time_zone,
                consents,
                attributes: self.attributes.into_iter().collect(),
                ..Default::default()
            }),
            expected_version: self.expected_version,
            actor,
            idempotency_key: key,
        })
    }
}

/// The member's birthday, as they give it themselves.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BirthdayBody {
    /// 1 to 12.
    pub birth_month: i32,
    /// 1 to the month's last day (29 February included); no year.
    pub birth_day: i32,
}

pub use pb::{MarketingConsent, MemberProfile};

pub fn profile_request(program_id: &str, customer_id: String) -> pb::GetProfileRequest {
    pb::GetProfileRequest { program_id: program_id.to_owned(), customer_id }
}
