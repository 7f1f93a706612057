//! Program rules between their proto and domain forms, validating on the way in.

use loyalty_common::clock::{Micros, to_timestamp};
use loyalty_common::validate::{self, FieldViolation};
use loyalty_proto::points::v1 as pb;

use crate::domain::profile::Profile;
use crate::domain::rules::{
    ActivityRule, Breakdown, Campaign, CampaignKind, CapPeriod, CheckoutPoints, ExpiryPolicy, ProgramSettings, Rounding,
};
use crate::store::program::AuditRecord;

pub fn settings_from_proto(s: pb::ProgramSettings, bad: &mut Vec<FieldViolation>) -> ProgramSettings {
    let rate = s.earn_rate.unwrap_or_default();
    let rounding = match pb::Rounding::try_from(s.rounding) {
        Ok(pb::Rounding::Down) => Rounding::Down,
        Ok(pb::Rounding::Nearest) => Rounding::Nearest,
        _ => {
            bad.push(FieldViolation::new("settings.rounding", "must be ROUNDING_DOWN or ROUNDING_NEAREST"));
            Rounding::Down
        }
    };
    let expiry = s.expiry.unwrap_or_default();
    let expiry = match pb::ExpiryPolicyKind::try_from(expiry.kind) {
        Ok(pb::ExpiryPolicyKind::Never) => ExpiryPolicy::Never,
        Ok(pb::ExpiryPolicyKind::DaysAfterEarn) => ExpiryPolicy::DaysAfterEarn(expiry.count),
        Ok(pb::ExpiryPolicyKind::EndOfNthMonth) => ExpiryPolicy::EndOfNthMonth(expiry.count),
        _ => {
            bad.push(FieldViolation::new(
                "settings.expiry.kind",
                "must be set (NEVER, DAYS_AFTER_EARN, END_OF_NTH_MONTH)",
            ));
            ExpiryPolicy::Never
        }
    };
    let activity_rules = s
        .activity_rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let cap_period = match pb::CapPeriod::try_from(r.cap_period) {
                Ok(pb::CapPeriod::Lifetime) => CapPeriod::Lifetime,
                Ok(pb::CapPeriod::Year) => CapPeriod::Year,
                Ok(pb::CapPeriod::Month) => CapPeriod::Month,
                Ok(pb::CapPeriod::Week) => CapPeriod::Week,
                Ok(pb::CapPeriod::Day) => CapPeriod::Day,
                Ok(pb::CapPeriod::Unspecified) if r.cap_count == 0 => CapPeriod::Lifetime,
                _ => {
                    bad.push(FieldViolation::new(
                        format!("settings.activity_rules[{i}].cap_period"),
                        "must be set when cap_count is",
                    ));
                    CapPeriod::Lifetime
                }
            };
            ActivityRule {
                activity_type: r.activity_type,
                points: r.points,
                active: r.active,
                cap_count: r.cap_count,
                cap_period,
                once_per_ref: r.once_per_ref,
            }
        })
        .collect();
    let settings = ProgramSettings {
        currency: s.currency,
        earn_points: rate.points,
        earn_per_amount_minor: rate.per_amount_minor,
        rounding,
        minimum_order_minor: s.minimum_order_minor,
        pending_days: s.pending_days,
        expiry,
        activity_rules,
        version: 0,
        expiry_reminder_days: s.expiry_reminder_days,
        checkout: s.checkout.map(checkout_from_proto),
    };
    bad.extend(settings.validate());
    settings
}

fn checkout_from_proto(c: pb::CheckoutPoints) -> CheckoutPoints {
    CheckoutPoints {
        points: c.points,
        amount_minor: c.amount_minor,
        min_points: c.min_points,
        max_share_bp: i64::from(c.max_share_bp),
        step_points: c.step_points,
    }
}

pub fn checkout_to_proto(c: &CheckoutPoints) -> pb::CheckoutPoints {
    pb::CheckoutPoints {
        points: c.points,
        amount_minor: c.amount_minor,
        min_points: c.min_points,
        // Validated to 1..=10000 on the way in.
        max_share_bp: i32::try_from(c.max_share_bp).unwrap_or(i32::MAX),
        step_points: c.step_points,
    }
}

pub fn settings_to_proto(s: &ProgramSettings) -> pb::ProgramSettings {
    let (kind, count) = match s.expiry {
        ExpiryPolicy::Never => (pb::ExpiryPolicyKind::Never, 0),
        ExpiryPolicy::DaysAfterEarn(days) => (pb::ExpiryPolicyKind::DaysAfterEarn, days),
        ExpiryPolicy::EndOfNthMonth(months) => (pb::ExpiryPolicyKind::EndOfNthMonth, months),
    };
    pb::ProgramSettings {
        currency: s.currency.clone(),
        earn_rate: Some(pb::EarnRate { points: s.earn_points, per_amount_minor: s.earn_per_amount_minor }),
        rounding: match s.rounding {
            Rounding::Down => pb::Rounding::Down,
            Rounding::Nearest => pb::Rounding::Nearest,
        } as i32,
        minimum_order_minor: s.minimum_order_minor,
        pending_days: s.pending_days,
        expiry_reminder_days: s.expiry_reminder_days,
        checkout: s.checkout.as_ref().map(checkout_to_proto),
        expiry: Some(pb::ExpiryPolicy { kind: kind as i32, count }),
        activity_rules: s
            .activity_rules
            .iter()
            .map(|r| pb::ActivityRule {
                activity_type: r.activity_type.clone(),
                points: r.points,
                active: r.active,
                cap_count: r.cap_count,
                cap_period: match r.cap_period {
                    CapPeriod::Lifetime => pb::CapPeriod::Lifetime,
                    CapPeriod::Year => pb::CapPeriod::Year,
                    CapPeriod::Month => pb::CapPeriod::Month,
                    CapPeriod::Week => pb::CapPeriod::Week,
                    CapPeriod::Day => pb::CapPeriod::Day,
                } as i32,
                once_per_ref: r.once_per_ref,
            })
            .collect(),
        version: s.version,
    }
}

/// `now` is the service's clock, which bounds `starts_at` and `ends_at`.
pub fn campaign_from_proto(c: pb::Campaign, bad: &mut Vec<FieldViolation>, now: Micros) -> Campaign {
    let kind = match pb::CampaignKind::try_from(c.kind) {
        Ok(pb::CampaignKind::Multiplier) => CampaignKind::Multiplier { multiplier_bp: i64::from(c.multiplier_bp) },
        Ok(pb::CampaignKind::Bonus) => CampaignKind::Bonus { points: c.bonus_points },
        _ => {
            bad.push(FieldViolation::new("campaign.kind", "must be CAMPAIGN_KIND_MULTIPLIER or CAMPAIGN_KIND_BONUS"));
            CampaignKind::Bonus { points: 1 }
        }
    };
    let mut instant = |field: &str, ts: Option<prost_types::Timestamp>| -> Micros {
        let Some(ts) = ts else {
            bad.push(FieldViolation::new(field, "is required"));
            return 0;
        };
        validate::timestamp(field, &ts, now).unwrap_or_else(|violation| {
            bad.push(violation);
            0
        })
    };
    let starts_at = instant("campaign.starts_at", c.starts_at);
    let ends_at = instant("campaign.ends_at", c.ends_at);
    let campaign = Campaign {
        campaign_id: c.campaign_id,
        name: c.name,
        kind,
        starts_at,
        ends_at,
        tier_ids: c.tier_ids,
        applies_to: c.applies_to,
        segment_ids: c.segment_ids,
    };
    bad.extend(campaign.validate());
    campaign
}

pub fn campaign_to_proto(c: &Campaign) -> pb::Campaign {
    let (kind, multiplier_bp, bonus_points) = match c.kind {
        CampaignKind::Multiplier { multiplier_bp } => {
            (pb::CampaignKind::Multiplier, i32::try_from(multiplier_bp).unwrap_or(i32::MAX), 0)
        }
        CampaignKind::Bonus { points } => (pb::CampaignKind::Bonus, 0, points),
    };
    pb::Campaign {
        campaign_id: c.campaign_id.clone(),
        name: c.name.clone(),
        kind: kind as i32,
        multiplier_bp,
        bonus_points,
        starts_at: Some(to_timestamp(c.starts_at)),
        ends_at: Some(to_timestamp(c.ends_at)),
        tier_ids: c.tier_ids.clone(),
        applies_to: c.applies_to.clone(),
        segment_ids: c.segment_ids.clone(),
    }
}

pub fn breakdown_to_proto(b: &Breakdown) -> pb::PointsBreakdown {
    pb::PointsBreakdown {
        base_points: b.base_points,
        tier_bonus_points: b.tier_bonus_points,
        campaign_bonus_points: b.campaign_bonus_points,
        total_points: b.total_points,
        tier_multiplier_bp: i32::try_from(b.tier_multiplier_bp).unwrap_or(i32::MAX),
        tier_id: b.tier_id.clone(),
        campaign_ids: b.campaign_ids.clone(),
        no_points_reason: if b.below_minimum {
            pb::NoPointsReason::BelowMinimumOrder
        } else {
            pb::NoPointsReason::Unspecified
        } as i32,
    }
}

pub fn audit_to_proto(a: &AuditRecord) -> pb::AuditEntry {
    use pb::audit_entry::{After, Before};
    let before = audit_value(a, &a.old_value).map(|value| match value {
        AuditValue::Settings(s) => Before::SettingsBefore(s),
        AuditValue::Campaign(c) => Before::CampaignBefore(c),
        AuditValue::Profile(p) => Before::ProfileBefore(p),
    });
    let after = audit_value(a, &a.new_value).map(|value| match value {
        AuditValue::Settings(s) => After::SettingsAfter(s),
        AuditValue::Campaign(c) => After::CampaignAfter(c),
        AuditValue::Profile(p) => After::ProfileAfter(p),
    });
    pb::AuditEntry {
        audit_id: a.audit_id,
        actor: a.actor.clone(),
        changed_at: Some(to_timestamp(a.changed_at)),
        entity: a.entity.clone(),
        entity_id: a.entity_id.clone(),
        old_value: a.old_value.clone(),
        new_value: a.new_value.clone(),
        before,
        after,
    }
}

enum AuditValue {
    Settings(pb::ProgramSettings),
    Campaign(pb::Campaign),
    Profile(pb::MemberProfile),
}

/// A stored audit value as the message the RPCs use; `None` when there is
/// none (a creation's "before") or it cannot be read as its entity.
fn audit_value(entry: &AuditRecord, stored: &str) -> Option<AuditValue> {
    if stored.is_empty() {
        return None;
    }
    let entity = entry.entity.as_str();
    let value = match entity {
        "settings" => serde_json::from_str(stored).map(|s| AuditValue::Settings(settings_to_proto(&s))),
        "campaign" => serde_json::from_str(stored).map(|c| AuditValue::Campaign(campaign_to_proto(&c))),
        "profile" => serde_json::from_str(stored).map(|p| AuditValue::Profile(profile_to_proto(&entry.entity_id, &p))),
        _ => return None,
    };
    value.inspect_err(|error| tracing::warn!(entity, %error, "an audit value does not read as its entity")).ok()
}

/// A profile as the RPCs answer it.
pub fn profile_to_proto(customer_id: &str, p: &Profile) -> pb::MemberProfile {
    pb::MemberProfile {
        customer_id: customer_id.to_owned(),
        enrolled_at: Some(to_timestamp(p.enrolled_at)),
        enrollment_channel: p.enrollment_channel.clone(),
        birth_month: i32::try_from(p.birth_month).unwrap_or(0),
        birth_day: i32::try_from(p.birth_day).unwrap_or(0),
        locale: p.locale.clone(),
        time_zone: p.time_zone.clone(),
        consents: p
            .consents
            .iter()
            .map(|c| pb::MarketingConsent {
                channel: c.channel.clone(),
                granted: c.granted,
                changed_at: Some(to_timestamp(c.changed_at)),
            })
            .collect(),
        attributes: p.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        version: p.version,
        updated_at: Some(to_timestamp(p.updated_at)),
    }
}
