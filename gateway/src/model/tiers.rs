//! The tier ladder, memberships and manual assignments.

use super::*;

// ---------------------------------------------------------------- tiers

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Points earned since January 1st (UTC).
    CalendarYear,
    /// Points earned in the last `days` days.
    RollingDays,
    Lifetime,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DowngradeKind {
    Immediate,
    /// Down only after `grace_days` below the threshold.
    GraceDays,
    /// A tier reached in one calendar year is kept through the next (needs the `calendar_year` window).
    EndOfNextPeriod,
}

/// What moves a member up the ladder. Thresholds are points, or minor units for `spend`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QualificationBasis {
    /// Every earned point: orders, activities, referral and API earns.
    #[default]
    AllEarned,
    /// Orders' base points, without tier or campaign bonuses.
    OrderPointsBase,
    /// Orders' points with their tier and campaign bonuses.
    OrderPointsAll,
    /// Order amounts in minor units, refunds subtracted.
    Spend,
}

impl QualificationBasis {
    fn into_proto(self) -> tiers_pb::QualificationBasis {
        match self {
            Self::AllEarned => tiers_pb::QualificationBasis::AllEarned,
            Self::OrderPointsBase => tiers_pb::QualificationBasis::OrderPointsBase,
            Self::OrderPointsAll => tiers_pb::QualificationBasis::OrderPointsAll,
            Self::Spend => tiers_pb::QualificationBasis::Spend,
        }
    }

    pub(super) fn from_proto(basis: i32) -> Self {
        match tiers_pb::QualificationBasis::try_from(basis) {
            Ok(tiers_pb::QualificationBasis::OrderPointsBase) => Self::OrderPointsBase,
            Ok(tiers_pb::QualificationBasis::OrderPointsAll) => Self::OrderPointsAll,
            Ok(tiers_pb::QualificationBasis::Spend) => Self::Spend,
            _ => Self::AllEarned,
        }
    }
}

/// One rung of the ladder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Stable id, e.g. `gold`.
    pub tier_id: String,
    pub name: String,
    /// Qualifying points needed in the window; ignored for hidden tiers.
    #[serde(default)]
    pub threshold: i64,
    /// Earn multiplier in basis points: 10000 is 1x, 15000 is 1.5x.
    pub multiplier_bp: i32,
    /// Free text shown to members.
    #[serde(default)]
    pub perks: Vec<String>,
    /// Only assigned by hand, never reached by points.
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub benefits: TierBenefits,
}

/// A tier's benefits in machine-readable form, for a checkout or a campaign to act on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBenefits {
    #[serde(default)]
    pub free_shipping: bool,
    /// Members see sales and launches this many hours early; 0: no early access.
    #[serde(default)]
    pub early_access_hours: i32,
    /// Birthday points multiplied by this, in basis points (20000 doubles them); 0: none.
    #[serde(default)]
    pub birthday_multiplier_bp: i32,
    /// Shop-defined flags, e.g. `free_returns`.
    #[serde(default)]
    pub flags: Vec<String>,
}

impl From<tiers_pb::TierBenefits> for TierBenefits {
    fn from(b: tiers_pb::TierBenefits) -> Self {
        Self {
            free_shipping: b.free_shipping,
            early_access_hours: b.early_access_hours,
            birthday_multiplier_bp: b.birthday_multiplier_bp,
            flags: b.flags,
        }
    }
}

impl From<TierBenefits> for tiers_pb::TierBenefits {
    fn from(b: TierBenefits) -> Self {
        Self {
            free_shipping: b.free_shipping,
            early_access_hours: b.early_access_hours,
            birthday_multiplier_bp: b.birthday_multiplier_bp,
            flags: b.flags,
        }
    }
}

/// Which earned points qualify.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierWindow {
    pub kind: WindowKind,
    /// For `rolling_days`.
    #[serde(default)]
    pub days: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DowngradePolicy {
    pub kind: DowngradeKind,
    /// For `grace_days`.
    #[serde(default)]
    pub grace_days: i32,
}

/// The program's tier ladder, lowest tier first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LadderBody {
    /// Lowest first; thresholds strictly increase among visible tiers.
    pub tiers: Vec<Tier>,
    pub window: TierWindow,
    pub downgrade: DowngradePolicy,
    /// Absent: `all_earned`. Changing it re-evaluates every member from the stored history.
    #[serde(default)]
    pub qualification_basis: QualificationBasis,
}

impl LadderBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> tiers_pb::PutLadderRequest {
        let ladder = tiers_pb::Ladder {
            tiers: self
                .tiers
                .into_iter()
                .map(|t| tiers_pb::Tier {
                    tier_id: t.tier_id,
                    name: t.name,
                    threshold: t.threshold,
                    multiplier_bp: t.multiplier_bp,
                    perks: t.perks,
                    hidden: t.hidden,
                    benefits: Some(t.benefits.into()),
                })
                .collect(),
            window: Some(tiers_pb::Window {
                kind: match self.window.kind {
                    WindowKind::CalendarYear => tiers_pb::WindowKind::CalendarYear,
                    WindowKind::RollingDays => tiers_pb::WindowKind::RollingDays,
                    WindowKind::Lifetime => tiers_pb::WindowKind::Lifetime,
                } as i32,
                days: self.window.days,
            }),
            downgrade: Some(tiers_pb::DowngradePolicy {
                kind: match self.downgrade.kind {
                    DowngradeKind::Immediate => tiers_pb::DowngradeKind::Immediate,
                    DowngradeKind::GraceDays => tiers_pb::DowngradeKind::GraceDays,
                    DowngradeKind::EndOfNextPeriod => tiers_pb::DowngradeKind::EndOfNextPeriod,
                } as i32,
                grace_days: self.downgrade.grace_days,
            }),
            version: 0,
            qualification_basis: self.qualification_basis.into_proto() as i32,
        };
        tiers_pb::PutLadderRequest {
            program_id: program_id.to_owned(),
            ladder: Some(ladder),
            actor,
            idempotency_key: key,
        }
    }
}

/// The ladder as stored; `version` grows with every change (0: never set, no tiers).
#[derive(Debug, Serialize, ToSchema)]
pub struct Ladder {
    pub tiers: Vec<Tier>,
    pub window: TierWindow,
    pub downgrade: DowngradePolicy,
    pub version: i64,
    pub qualification_basis: QualificationBasis,
}

impl Ladder {
    pub fn from_proto(l: Option<tiers_pb::Ladder>) -> Self {
        let l = l.unwrap_or_default();
        let window = l.window.unwrap_or_default();
        let downgrade = l.downgrade.unwrap_or_default();
        Self {
            tiers: l
                .tiers
                .into_iter()
                .map(|t| Tier {
                    tier_id: t.tier_id,
                    name: t.name,
                    threshold: t.threshold,
                    multiplier_bp: t.multiplier_bp,
                    perks: t.perks,
                    hidden: t.hidden,
                    benefits: t.benefits.unwrap_or_default().into(),
                })
                .collect(),
            window: TierWindow {
                kind: match tiers_pb::WindowKind::try_from(window.kind) {
                    Ok(tiers_pb::WindowKind::CalendarYear) => WindowKind::CalendarYear,
                    Ok(tiers_pb::WindowKind::RollingDays) => WindowKind::RollingDays,
                    _ => WindowKind::Lifetime,
                },
                days: window.days,
            },
            downgrade: DowngradePolicy {
                kind: match tiers_pb::DowngradeKind::try_from(downgrade.kind) {
                    Ok(tiers_pb::DowngradeKind::GraceDays) => DowngradeKind::GraceDays,
                    Ok(tiers_pb::DowngradeKind::EndOfNextPeriod) => DowngradeKind::EndOfNextPeriod,
                    _ => DowngradeKind::Immediate,
                },
                grace_days: downgrade.grace_days,
            },
            version: l.version,
            qualification_basis: QualificationBasis::from_proto(l.qualification_basis),
        }
    }
}

pub fn ladder_request(program_id: &str) -> tiers_pb::GetLadderRequest {
    tiers_pb::GetLadderRequest { program_id: program_id.to_owned() }
}

/// A customer's tier and the progress to the next one. Without `tier_id` the customer has no tier yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    pub customer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_name: Option<String>,
    /// Earn multiplier in basis points: 10000 is 1x.
    pub multiplier_bp: i32,
    /// Qualifying points in the current window (minor units under the `spend` basis).
    pub qualifying_points: i64,
    /// What `qualifying_points` and `points_to_next_tier` count.
    pub qualification_basis: QualificationBasis,
    /// The current tier's benefits; absent without a tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benefits: Option<TierBenefits>,
    /// The current tier's free-text perks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub perks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub window_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_tier_name: Option<String>,
    /// Qualifying points still needed for the next tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_to_next_tier: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub next_review_at: Option<String>,
    /// The tier was assigned by hand.
    pub assigned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub assignment_ends_at: Option<String>,
    /// Set while below the threshold under a grace policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub downgrade_at: Option<String>,
}

impl Membership {
    pub fn from_proto(customer_id: String, m: Option<tiers_pb::Membership>) -> Self {
        let m = m.unwrap_or_default();
        let has_next = !m.next_tier_id.is_empty();
        Self {
            customer_id,
            tier_id: non_empty(m.tier_id),
            tier_name: non_empty(m.tier_name),
            multiplier_bp: m.multiplier_bp,
            qualifying_points: m.qualifying_points,
            qualification_basis: QualificationBasis::from_proto(m.qualification_basis),
            benefits: m.benefits.map(TierBenefits::from),
            perks: m.perks,
            window_start: time_out(m.window_start.as_ref()),
            next_tier_id: non_empty(m.next_tier_id),
            next_tier_name: non_empty(m.next_tier_name),
            points_to_next_tier: has_next.then_some(m.points_to_next_tier),
            since: time_out(m.since.as_ref()),
            next_review_at: time_out(m.next_review_at.as_ref()),
            assigned: m.assigned,
            assignment_ends_at: time_out(m.assignment_ends_at.as_ref()),
            downgrade_at: time_out(m.downgrade_at.as_ref()),
        }
    }
}

/// Puts the customer in a tier by hand (hidden tiers included); it wins over the ladder while it lasts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    pub tier_id: String,
    /// Absent: until removed.
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
}

impl AssignmentBody {
    pub fn into_proto(
        self,
        program_id: &str,
        customer_id: String,
        actor: String,
        key: String,
    ) -> Result<tiers_pb::AssignTierRequest, Problem> {
        let ends_at = self.ends_at.as_deref().map(|t| time_in("ends_at", t)).transpose()?;
        Ok(tiers_pb::AssignTierRequest {
            program_id: program_id.to_owned(),
            customer_id,
            tier_id: self.tier_id,
            ends_at,
            actor,
            idempotency_key: key,
        })
    }
}

pub fn remove_assignment_request(
    program_id: &str,
    customer_id: String,
    actor: String,
    key: String,
) -> tiers_pb::RemoveAssignmentRequest {
    tiers_pb::RemoveAssignmentRequest { program_id: program_id.to_owned(), customer_id, actor, idempotency_key: key }
}
