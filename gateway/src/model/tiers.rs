//! The tier ladder, memberships and manual assignments.

use super::*;

// ---------------------------------------------------------------- tiers

/// The ladder's parts that are the tiers service's messages and enums as they are: their JSON (read
/// and written) and schemas are derived in loyalty-proto.
pub use tiers_pb::{
    DowngradeKind, DowngradePolicy, QualificationBasis, TierBenefits, Window as TierWindow, WindowKind,
};

/// A ladder body without `qualification_basis` keeps the basis of old ladders.
fn all_earned() -> QualificationBasis {
    QualificationBasis::AllEarned
}

// Not the message as it is: a body may leave out all but the id, name and multiplier.
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

impl From<tiers_pb::Tier> for Tier {
    fn from(t: tiers_pb::Tier) -> Self {
        Self {
            tier_id: t.tier_id,
            name: t.name,
            threshold: t.threshold,
            multiplier_bp: t.multiplier_bp,
            perks: t.perks,
            hidden: t.hidden,
            benefits: t.benefits.unwrap_or_default(),
        }
    }
}

impl From<Tier> for tiers_pb::Tier {
    fn from(t: Tier) -> Self {
        Self {
            tier_id: t.tier_id,
            name: t.name,
            threshold: t.threshold,
            multiplier_bp: t.multiplier_bp,
            perks: t.perks,
            hidden: t.hidden,
            benefits: Some(t.benefits),
        }
    }
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
    #[serde(default = "all_earned")]
    pub qualification_basis: QualificationBasis,
    /// When set, the change is refused (409 `VERSION_MISMATCH`) unless the stored version still matches.
    pub expected_version: Option<i64>,
}

impl LadderBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> tiers_pb::PutLadderRequest {
        let ladder = tiers_pb::Ladder {
            tiers: self.tiers.into_iter().map(tiers_pb::Tier::from).collect(),
            window: Some(self.window),
            downgrade: Some(self.downgrade),
            version: 0,
            qualification_basis: self.qualification_basis.into(),
        };
        tiers_pb::PutLadderRequest {
            program_id: program_id.to_owned(),
            ladder: Some(ladder),
            actor,
            idempotency_key: key,
            expected_version: self.expected_version,
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

impl From<tiers_pb::Ladder> for Ladder {
    fn from(l: tiers_pb::Ladder) -> Self {
        Self {
            tiers: l.tiers.into_iter().map(Tier::from).collect(),
            window: l.window.unwrap_or_default(),
            downgrade: l.downgrade.unwrap_or_default(),
            version: l.version,
            qualification_basis: QualificationBasis::shown(l.qualification_basis),
        }
    }
}

pub fn ladder_request(program_id: &str) -> tiers_pb::GetLadderRequest {
    tiers_pb::GetLadderRequest { program_id: program_id.to_owned() }
}

/// How many members hold each tier, and a member's tier changes: the tiers service's answers as they are.
pub use tiers_pb::{
    ChangeReason, GetTierDistributionResponse as TierDistribution, ListMembershipHistoryResponse as TierHistory,
    MembershipChange, TierCount,
};

pub fn history_request(program_id: &str, customer_id: &str, page: PageQuery) -> tiers_pb::ListMembershipHistoryRequest {
    tiers_pb::ListMembershipHistoryRequest {
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        page_size: page.page_size.unwrap_or(0),
        page_token: page.page_token.unwrap_or_default(),
    }
}

pub fn distribution_request(program_id: &str) -> tiers_pb::GetTierDistributionRequest {
    tiers_pb::GetTierDistributionRequest { program_id: program_id.to_owned() }
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
            qualification_basis: QualificationBasis::shown(m.qualification_basis),
            benefits: m.benefits,
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
