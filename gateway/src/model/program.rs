//! The program's rules: settings, campaigns and their audit trail.

use super::*;

// ---------------------------------------------------------------- settings

/// The settings' parts that are the points service's messages and enums as they are: their JSON
/// (read and written) and schemas are derived in loyalty-proto.
pub use pb::{CapPeriod, EarnRate, ExpiryPolicy, ExpiryPolicyKind as ExpiryKind, Rounding};

// Not the message as it is: `active` reads as true when absent, `cap_period` may be absent.
/// Points for an action such as `signup`, `birthday`, `review`, `social_follow` or a shop-defined one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityRule {
    pub activity_type: String,
    pub points: i64,
    #[serde(default = "yes")]
    pub active: bool,
    /// At most this many awards per customer per `cap_period`; 0 means no cap.
    #[serde(default)]
    pub cap_count: i32,
    /// Required when `cap_count` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_period: Option<CapPeriod>,
    /// At most one award per `activity_ref`.
    #[serde(default)]
    pub once_per_ref: bool,
}

fn yes() -> bool {
    true
}

impl From<pb::ActivityRule> for ActivityRule {
    fn from(r: pb::ActivityRule) -> Self {
        Self {
            cap_period: Some(CapPeriod::shown(r.cap_period)),
            activity_type: r.activity_type,
            points: r.points,
            active: r.active,
            cap_count: r.cap_count,
            once_per_ref: r.once_per_ref,
        }
    }
}

impl From<ActivityRule> for pb::ActivityRule {
    fn from(r: ActivityRule) -> Self {
        Self {
            activity_type: r.activity_type,
            points: r.points,
            active: r.active,
            cap_count: r.cap_count,
            // Absent: unspecified (0).
            cap_period: r.cap_period.map_or(0, i32::from),
            once_per_ref: r.once_per_ref,
        }
    }
}

/// A program's earning rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// ISO 4217 currency of orders; empty accepts any.
    #[serde(default)]
    pub currency: String,
    pub earn_rate: EarnRate,
    pub rounding: Rounding,
    /// Orders below this amount earn nothing.
    #[serde(default)]
    pub minimum_order_minor: i64,
    /// Return window: order points stay pending this many days (0: active at once).
    #[serde(default)]
    pub pending_days: i32,
    pub expiry: ExpiryPolicy,
    /// How many days before points expire the customer is reminded (the webhooks' `points.expiring_soon`,
    /// once per lot); absent or 0: 14.
    #[serde(default)]
    pub expiry_reminder_days: i32,
    #[serde(default)]
    pub activity_rules: Vec<ActivityRule>,
    /// Points at checkout (`POST /v1/orders/{order_id}/points`); absent: points cannot pay for orders.
    pub checkout: Option<pb::CheckoutPoints>,
    /// When set, the change is refused (409 `VERSION_MISMATCH`) unless the stored version still matches.
    pub expected_version: Option<i64>,
}

impl SettingsBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> pb::PutProgramSettingsRequest {
        let settings = pb::ProgramSettings {
            currency: self.currency,
            earn_rate: Some(self.earn_rate),
            rounding: self.rounding.into(),
            minimum_order_minor: self.minimum_order_minor,
            pending_days: self.pending_days,
            expiry: Some(self.expiry),
            activity_rules: self.activity_rules.into_iter().map(pb::ActivityRule::from).collect(),
            version: 0,
            expiry_reminder_days: self.expiry_reminder_days,
            checkout: self.checkout,
        };
        pb::PutProgramSettingsRequest {
            program_id: program_id.to_owned(),
            settings: Some(settings),
            actor,
            idempotency_key: key,
            expected_version: self.expected_version,
        }
    }
}

/// A program's earning rules as stored; `version` grows with every change.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    pub currency: String,
    pub earn_rate: EarnRate,
    pub rounding: Rounding,
    pub minimum_order_minor: i64,
    pub pending_days: i32,
    pub expiry: ExpiryPolicy,
    /// Days before points expire that the customer is reminded (0: 14).
    pub expiry_reminder_days: i32,
    pub activity_rules: Vec<ActivityRule>,
    /// Points at checkout; absent: points cannot pay for orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout: Option<pb::CheckoutPoints>,
    pub version: i64,
}

impl From<pb::ProgramSettings> for Settings {
    fn from(s: pb::ProgramSettings) -> Self {
        Self {
            currency: s.currency,
            earn_rate: s.earn_rate.unwrap_or_default(),
            rounding: Rounding::shown(s.rounding),
            minimum_order_minor: s.minimum_order_minor,
            pending_days: s.pending_days,
            expiry: s.expiry.unwrap_or_default(),
            expiry_reminder_days: s.expiry_reminder_days,
            activity_rules: s.activity_rules.into_iter().map(ActivityRule::from).collect(),
            checkout: s.checkout,
            version: s.version,
        }
    }
}

pub fn settings_request(program_id: &str) -> pb::GetProgramSettingsRequest {
    pb::GetProgramSettingsRequest { program_id: program_id.to_owned() }
}

// ---------------------------------------------------------------- campaigns

/// Read and written by name; an unspecified or unknown kind shows as `bonus`.
pub use pb::CampaignKind;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    pub name: String,
    pub kind: CampaignKind,
    /// For `multiplier`, in basis points: 20000 is 2x.
    pub multiplier_bp: Option<i32>,
    /// For `bonus`.
    pub bonus_points: Option<i64>,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    /// Only members of these tiers; empty: everyone.
    #[serde(default)]
    pub tier_ids: Vec<String>,
    /// `order` and/or activity types it applies to; empty: every earn.
    #[serde(default)]
    pub applies_to: Vec<String>,
    /// Only customers in these lifecycle segments (`new`, `active`, `loyal`, `at_risk`,
    /// `churned`) when they earn, as the insights service tells them; empty: everyone.
    #[serde(default)]
    pub segment_ids: Vec<String>,
}

impl CampaignBody {
    pub fn into_proto(self, campaign_id: String) -> Result<pb::Campaign, Problem> {
        Ok(pb::Campaign {
            starts_at: Some(time_in("starts_at", &self.starts_at)?),
            ends_at: Some(time_in("ends_at", &self.ends_at)?),
            campaign_id,
            name: self.name,
            kind: self.kind.into(),
            multiplier_bp: self.multiplier_bp.unwrap_or(0),
            bonus_points: self.bonus_points.unwrap_or(0),
            tier_ids: self.tier_ids,
            applies_to: self.applies_to,
            segment_ids: self.segment_ids,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Campaign {
    pub campaign_id: String,
    pub name: String,
    pub kind: CampaignKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier_bp: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bonus_points: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    pub tier_ids: Vec<String>,
    pub applies_to: Vec<String>,
    pub segment_ids: Vec<String>,
}

impl From<pb::Campaign> for Campaign {
    fn from(c: pb::Campaign) -> Self {
        let kind = CampaignKind::shown(c.kind);
        Self {
            campaign_id: c.campaign_id,
            name: c.name,
            kind,
            multiplier_bp: matches!(kind, CampaignKind::Multiplier).then_some(c.multiplier_bp),
            bonus_points: matches!(kind, CampaignKind::Bonus).then_some(c.bonus_points),
            starts_at: time_out(c.starts_at.as_ref()),
            ends_at: time_out(c.ends_at.as_ref()),
            tier_ids: c.tier_ids,
            applies_to: c.applies_to,
            segment_ids: c.segment_ids,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<Campaign>,
}

impl From<pb::ListCampaignsResponse> for CampaignList {
    fn from(r: pb::ListCampaignsResponse) -> Self {
        Self { campaigns: r.campaigns.into_iter().map(Campaign::from).collect() }
    }
}

/// `include_ended=true` lists ended campaigns too.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignQuery {
    pub include_ended: Option<bool>,
}

pub fn campaigns_request(program_id: &str, query: CampaignQuery) -> pb::ListCampaignsRequest {
    pb::ListCampaignsRequest { program_id: program_id.to_owned(), include_ended: query.include_ended.unwrap_or(false) }
}

pub fn create_campaign_request(
    program_id: &str,
    campaign: pb::Campaign,
    actor: String,
    key: String,
) -> pb::CreateCampaignRequest {
    pb::CreateCampaignRequest {
        program_id: program_id.to_owned(),
        campaign: Some(campaign),
        actor,
        idempotency_key: key,
    }
}

pub fn update_campaign_request(
    program_id: &str,
    campaign: pb::Campaign,
    actor: String,
    key: String,
) -> pb::UpdateCampaignRequest {
    pb::UpdateCampaignRequest {
        program_id: program_id.to_owned(),
        campaign: Some(campaign),
        actor,
        idempotency_key: key,
    }
}

pub fn end_campaign_request(
    program_id: &str,
    campaign_id: String,
    actor: String,
    key: String,
) -> pb::EndCampaignRequest {
    pb::EndCampaignRequest { program_id: program_id.to_owned(), campaign_id, actor, idempotency_key: key }
}

// ---------------------------------------------------------------- audit

/// One change to settings or campaigns: who, when, old and new.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub audit_id: i64,
    /// `api-key:<key id>` for changes made through the gateway.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub changed_at: Option<String>,
    /// `settings`, `campaign` or `profile` (then `entity_id` is the customer), `customer_export`
    /// (the customer) or `customer_erasure` (the anonymous id their records moved to).
    pub entity: String,
    pub entity_id: String,
    /// The settings, the campaign or the profile before the change, as `GET` answers them;
    /// absent when the change created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_value: Option<AuditValue>,
    /// The settings, the campaign or the profile after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_value: Option<AuditValue>,
}

/// An audited value, in the shape its own routes use.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AuditValue {
    Settings(Settings),
    Campaign(Campaign),
    Profile(pb::MemberProfile),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<pb::ListAuditEntriesResponse> for AuditPage {
    fn from(r: pb::ListAuditEntriesResponse) -> Self {
        let entries = r
            .entries
            .into_iter()
            .map(|e| AuditEntry {
                audit_id: e.audit_id,
                actor: e.actor,
                changed_at: time_out(e.changed_at.as_ref()),
                entity: e.entity,
                entity_id: e.entity_id,
                old_value: e.before.map(|before| match before {
                    pb::audit_entry::Before::SettingsBefore(s) => AuditValue::Settings(s.into()),
                    pb::audit_entry::Before::CampaignBefore(c) => AuditValue::Campaign(c.into()),
                    pb::audit_entry::Before::ProfileBefore(p) => AuditValue::Profile(p),
                }),
                new_value: e.after.map(|after| match after {
                    pb::audit_entry::After::SettingsAfter(s) => AuditValue::Settings(s.into()),
                    pb::audit_entry::After::CampaignAfter(c) => AuditValue::Campaign(c.into()),
                    pb::audit_entry::After::ProfileAfter(p) => AuditValue::Profile(p),
                }),
            })
            .collect();
        Self { entries, next_page_token: non_empty(r.next_page_token) }
    }
}

/// `GET /v1/audit`'s parameters: a page, and which entries.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries per page, at most 200; absent or 0: 50.
    #[param(minimum = 0, maximum = 200)]
    pub page_size: Option<i32>,
    /// The `next_page_token` of the previous page; absent: the first page.
    pub page_token: Option<String>,
    /// Only this actor's entries (exact), e.g. `api-key:<key id>` or `customer:<id>`; empty:
    /// every actor's.
    pub actor: Option<String>,
    /// Only entries of this kind.
    pub entity: Option<AuditKind>,
}

/// What an audit entry is about.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Settings,
    Campaign,
    Profile,
    CustomerExport,
    CustomerErasure,
}

impl AuditKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Settings => "settings",
            Self::Campaign => "campaign",
            Self::Profile => "profile",
            Self::CustomerExport => "customer_export",
            Self::CustomerErasure => "customer_erasure",
        }
    }
}

pub fn audit_request(program_id: &str, query: AuditQuery) -> pb::ListAuditEntriesRequest {
    pb::ListAuditEntriesRequest {
        program_id: program_id.to_owned(),
        page_size: query.page_size.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
        actor: query.actor.unwrap_or_default(),
        entity: query.entity.map(AuditKind::as_str).unwrap_or_default().to_owned(),
    }
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (alive) or `ready` (can serve).
    pub status: String,
}
