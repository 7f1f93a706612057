//! Generates Rust code for every `.proto` under `loyalty/`, plus one file
//! descriptor set that the servers hand to gRPC reflection. With the `json`
//! feature, the messages and enums listed in [`JSON_MESSAGES`] and
//! [`JSON_ENUMS`] also derive serde and the OpenAPI schema (utoipa): the
//! gateway serves them as they are. Only messages whose JSON is one-to-one
//! are listed; the gateway writes the shapes that differ by hand.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh machine has no protoc: use the vendored one unless PROTOC says otherwise.
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-env-changed=PROTOC");

    let root = Path::new("loyalty");
    let mut protos = Vec::new();
    collect_protos(root, &mut protos)?;
    protos.sort();
    // The directory too, so that a new .proto file triggers a rebuild.
    println!("cargo:rerun-if-changed=loyalty");
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let builder = tonic_prost_build::configure().file_descriptor_set_path(out_dir.join("loyalty_descriptor.bin"));
    json_attributes(builder).compile_protos(&protos, &[PathBuf::from(".")])?;
    Ok(())
}

/// How a field's JSON departs from what serde makes of its Rust type, by
/// the gateway's conventions. Fields not listed are serde's: numbers,
/// booleans, text and lists as they are.
#[derive(Clone, Copy)]
enum Field {
    /// A `google.protobuf.Timestamp`: RFC 3339 text, left out when absent.
    Instant,
    /// Text left out when empty (an id the message may not have).
    OptionalText,
    /// An enum field (the enum's name in the message's package): its value's name.
    Enum(&'static str),
    /// An enum field left out when unspecified.
    OptionalEnum(&'static str),
    /// A message field (its name in the package), with its defaults when absent.
    Message(&'static str),
    /// Absent from a request body: 0, false or empty.
    Defaulted,
}

/// A message whose JSON is the message itself.
struct JsonMessage {
    /// Fully qualified.
    message: &'static str,
    /// The OpenAPI schema's (and serde's) name, when it is not the message's.
    name: Option<&'static str>,
    /// The gateway also reads it (in a request body): `Deserialize`, unknown fields refused.
    read: bool,
    fields: &'static [(&'static str, Field)],
}

impl JsonMessage {
    /// Written only (an answer or a part of one).
    const fn written(message: &'static str, fields: &'static [(&'static str, Field)]) -> Self {
        Self { message, name: None, read: false, fields }
    }

    /// Read and written (a part of a request body and of the answer).
    const fn read(message: &'static str, fields: &'static [(&'static str, Field)]) -> Self {
        Self { message, name: None, read: true, fields }
    }

    const fn named(self, name: &'static str) -> Self {
        Self { name: Some(name), ..self }
    }
}

/// What the gateway's JSON shows for an enum's unspecified value (0).
enum Unspecified {
    /// `unknown`: a state the gateway passes on.
    Unknown,
    /// Nothing: it is not a value of the JSON enum. Numbers without a name
    /// show as the enum's `JsonEnum::FALLBACK` (src/json).
    Hidden,
}

/// An enum shown by name, in snake_case without its prefix.
struct JsonEnum {
    /// Fully qualified.
    name: &'static str,
    /// The OpenAPI schema's (and serde's) name, when it is not the enum's.
    schema: Option<&'static str>,
    /// The gateway also reads it.
    read: bool,
    unspecified: Unspecified,
}

impl JsonEnum {
    /// A state the gateway shows: written only, 0 is `unknown`.
    const fn state(name: &'static str) -> Self {
        Self { name, schema: None, read: false, unspecified: Unspecified::Unknown }
    }

    /// Written only, 0 hidden.
    const fn written(name: &'static str) -> Self {
        Self { name, schema: None, read: false, unspecified: Unspecified::Hidden }
    }

    /// A setting: read and written, 0 hidden.
    const fn read(name: &'static str) -> Self {
        Self { name, schema: None, read: true, unspecified: Unspecified::Hidden }
    }

    const fn named(self, schema: &'static str) -> Self {
        Self { schema: Some(schema), ..self }
    }

    /// The unspecified value's name in the .proto file: `ENTRY_KIND_UNSPECIFIED` for `EntryKind`.
    fn unspecified_value(&self) -> String {
        let short = self.name.rsplit('.').next().unwrap_or(self.name);
        let mut value = String::new();
        for (i, c) in short.chars().enumerate() {
            if i > 0 && c.is_ascii_uppercase() {
                value.push('_');
            }
            value.push(c.to_ascii_uppercase());
        }
        value + "_UNSPECIFIED"
    }
}

use Field::*;

const JSON_MESSAGES: &[JsonMessage] = &[
    JsonMessage::written(".loyalty.points.v1.Balance", &[("next_expiry_at", Instant)]),
    JsonMessage::written(
        ".loyalty.points.v1.PointsBreakdown",
        &[("tier_id", OptionalText), ("no_points_reason", OptionalEnum("NoPointsReason"))],
    )
    .named("Breakdown"),
    JsonMessage::written(".loyalty.points.v1.ExpiringPoints", &[("expires_at", Instant)]),
    JsonMessage::written(".loyalty.points.v1.MarketingConsent", &[("changed_at", Instant)]),
    JsonMessage::written(
        ".loyalty.points.v1.MemberProfile",
        &[
            ("enrolled_at", Instant),
            ("updated_at", Instant),
            ("enrollment_channel", OptionalText),
            ("locale", OptionalText),
            ("time_zone", OptionalText),
        ],
    ),
    JsonMessage::written(
        ".loyalty.points.v1.RefundOrderResponse",
        &[("transaction_id", OptionalText), ("balance", Message("Balance")), ("restore_transaction_id", OptionalText)],
    )
    .named("Refunded"),
    JsonMessage::read(".loyalty.points.v1.CheckoutPoints", &[("min_points", Defaulted), ("step_points", Defaulted)]),
    JsonMessage::written(".loyalty.points.v1.QuoteCheckoutPointsResponse", &[("rule", Message("CheckoutPoints"))])
        .named("CheckoutQuote"),
    JsonMessage::written(".loyalty.points.v1.ApplyCheckoutPointsResponse", &[("balance", Message("Balance"))])
        .named("CheckoutApplied"),
    JsonMessage::written(
        ".loyalty.points.v1.RecordActivityResponse",
        &[("breakdown", Message("PointsBreakdown")), ("balance", Message("Balance"))],
    )
    .named("ActivityRecorded"),
    JsonMessage::written(".loyalty.points.v1.AdjustResponse", &[("balance", Message("Balance"))]).named("Adjusted"),
    JsonMessage::written(".loyalty.points.v1.PreviewOrderResponse", &[("breakdown", Message("PointsBreakdown"))])
        .named("Preview"),
    JsonMessage::read(".loyalty.points.v1.EarnRate", &[]),
    JsonMessage::read(".loyalty.points.v1.ExpiryPolicy", &[("kind", Enum("ExpiryPolicyKind")), ("count", Defaulted)]),
    JsonMessage::written(
        ".loyalty.insights.v1.CustomerInsight",
        &[("first_order_at", Instant), ("last_order_at", Instant), ("segment", Enum("Segment"))],
    ),
    JsonMessage::written(".loyalty.insights.v1.SegmentCount", &[("segment", Enum("Segment"))]),
    JsonMessage::written(".loyalty.insights.v1.GetSegmentCountsResponse", &[]).named("SegmentCounts"),
    JsonMessage::written(".loyalty.insights.v1.InsightSettings", &[("win_back_tier_id", OptionalText)]),
    JsonMessage::written(
        ".loyalty.insights.v1.SegmentChange",
        &[("from_segment", OptionalEnum("Segment")), ("to_segment", Enum("Segment")), ("changed_at", Instant)],
    ),
    JsonMessage::written(".loyalty.insights.v1.ListSegmentChangesResponse", &[]).named("SegmentChanges"),
    JsonMessage::written(
        ".loyalty.insights.v1.SurveyResponse",
        &[("kind", Enum("SurveyKind")), ("comment", OptionalText), ("answered_at", Instant)],
    ),
    JsonMessage::written(".loyalty.insights.v1.Kpis", &[("from", Instant), ("to", Instant)]),
    JsonMessage::written(
        ".loyalty.insights.v1.GetProgramKpisResponse",
        &[("granularity", Enum("Granularity")), ("total", Message("Kpis")), ("referrals", Message("ReferralFunnel"))],
    )
    .named("ProgramKpis"),
    JsonMessage::written(".loyalty.insights.v1.ReferralFunnel", &[]),
    JsonMessage::written(".loyalty.insights.v1.Cohort", &[("month", Instant)]),
    JsonMessage::written(".loyalty.insights.v1.GetCohortRetentionResponse", &[]).named("CohortRetention"),
    JsonMessage::written(".loyalty.insights.v1.NpsScore", &[]),
    JsonMessage::written(".loyalty.insights.v1.CsatScore", &[]),
    JsonMessage::written(
        ".loyalty.insights.v1.GetSurveyScoresResponse",
        &[("from", Instant), ("to", Instant), ("nps", Message("NpsScore")), ("csat", Message("CsatScore"))],
    )
    .named("SurveyScores"),
    JsonMessage::written(".loyalty.referral.v1.GetReferralStatsResponse", &[]).named("ReferralStats"),
    JsonMessage::written(
        ".loyalty.referral.v1.Referral",
        &[
            ("status", Enum("ReferralStatus")),
            ("created_at", Instant),
            ("completed_at", Instant),
            ("reversed_at", Instant),
            ("qualifying_order_id", OptionalText),
        ],
    ),
    JsonMessage::written(
        ".loyalty.referral.v1.ReferralSettings",
        &[("referee_reward_id", OptionalText), ("referrer_reward_id", OptionalText)],
    ),
    JsonMessage::written(
        ".loyalty.rewards.v1.Redemption",
        &[
            ("status", Enum("RedemptionStatus")),
            ("voucher_code", OptionalText),
            ("created_at", Instant),
            ("voucher_expires_at", Instant),
            ("consumed_order_id", OptionalText),
            ("granted_by", OptionalText),
            ("grant_reason", OptionalText),
            ("batch_id", OptionalText),
        ],
    ),
    JsonMessage::written(
        ".loyalty.webhooks.v1.Subscription",
        &[
            ("status", Enum("SubscriptionStatus")),
            ("created_at", Instant),
            ("failing_since", Instant),
            ("previous_secret_until", Instant),
        ],
    ),
    JsonMessage::written(
        ".loyalty.webhooks.v1.CreateSubscriptionResponse",
        &[("subscription", Message("Subscription"))],
    )
    .named("SubscriptionCreated"),
    JsonMessage::written(".loyalty.webhooks.v1.RotateSecretResponse", &[("subscription", Message("Subscription"))])
        .named("SecretRotated"),
    JsonMessage::written(".loyalty.webhooks.v1.ListSubscriptionsResponse", &[("next_page_token", OptionalText)])
        .named("SubscriptionPage"),
    JsonMessage::written(
        ".loyalty.webhooks.v1.Attempt",
        &[("attempted_at", Instant), ("response", OptionalText), ("error", OptionalText)],
    ),
    JsonMessage::written(
        ".loyalty.webhooks.v1.Delivery",
        &[
            ("state", Enum("DeliveryState")),
            ("created_at", Instant),
            ("next_attempt_at", Instant),
            ("customer_id", OptionalText),
        ],
    ),
    JsonMessage::written(".loyalty.webhooks.v1.ListDeliveriesResponse", &[("next_page_token", OptionalText)])
        .named("DeliveryPage"),
    JsonMessage::written(".loyalty.webhooks.v1.EventType", &[]),
    JsonMessage::written(".loyalty.webhooks.v1.ListEventTypesResponse", &[]).named("EventTypes"),
    JsonMessage::written(".loyalty.tiers.v1.TierCount", &[]),
    JsonMessage::written(
        ".loyalty.tiers.v1.MembershipChange",
        &[("reason", Enum("ChangeReason")), ("changed_at", Instant), ("actor", OptionalText)],
    ),
    JsonMessage::written(".loyalty.tiers.v1.ListMembershipHistoryResponse", &[("next_page_token", OptionalText)])
        .named("TierHistory"),
    JsonMessage::written(".loyalty.referral.v1.ListReferralsResponse", &[("next_page_token", OptionalText)])
        .named("ReferralPage"),
    JsonMessage::written(".loyalty.tiers.v1.GetTierDistributionResponse", &[]).named("TierDistribution"),
    JsonMessage::read(
        ".loyalty.tiers.v1.TierBenefits",
        &[
            ("free_shipping", Defaulted),
            ("early_access_hours", Defaulted),
            ("birthday_multiplier_bp", Defaulted),
            ("flags", Defaulted),
        ],
    ),
    JsonMessage::read(".loyalty.tiers.v1.Window", &[("kind", Enum("WindowKind")), ("days", Defaulted)])
        .named("TierWindow"),
    JsonMessage::read(
        ".loyalty.tiers.v1.DowngradePolicy",
        &[("kind", Enum("DowngradeKind")), ("grace_days", Defaulted)],
    ),
];

const JSON_ENUMS: &[JsonEnum] = &[
    JsonEnum::state(".loyalty.points.v1.EntryKind"),
    JsonEnum::written(".loyalty.points.v1.NoPointsReason"),
    JsonEnum::read(".loyalty.points.v1.Rounding"),
    JsonEnum::read(".loyalty.points.v1.ExpiryPolicyKind").named("ExpiryKind"),
    JsonEnum::read(".loyalty.points.v1.CapPeriod"),
    JsonEnum::read(".loyalty.points.v1.CampaignKind"),
    JsonEnum::read(".loyalty.insights.v1.Segment"),
    JsonEnum::read(".loyalty.insights.v1.CustomerOrder"),
    JsonEnum::read(".loyalty.insights.v1.SurveyKind"),
    JsonEnum::read(".loyalty.insights.v1.Granularity"),
    JsonEnum::state(".loyalty.referral.v1.ReferralStatus"),
    JsonEnum::state(".loyalty.tiers.v1.ChangeReason"),
    JsonEnum::read(".loyalty.rewards.v1.RewardKind"),
    JsonEnum::state(".loyalty.rewards.v1.RedemptionStatus"),
    // Has its own UNKNOWN value, which unspecified ones show as.
    JsonEnum::written(".loyalty.rewards.v1.VoucherState"),
    JsonEnum::state(".loyalty.webhooks.v1.SubscriptionStatus"),
    JsonEnum::read(".loyalty.webhooks.v1.DeliveryState"),
    JsonEnum::read(".loyalty.tiers.v1.WindowKind"),
    JsonEnum::read(".loyalty.tiers.v1.DowngradeKind"),
    JsonEnum::read(".loyalty.tiers.v1.QualificationBasis"),
];

/// `#[cfg_attr(feature = "json", ...)]`: without the feature the services build no serde code.
fn json(attribute: &str) -> String {
    format!("#[cfg_attr(feature = \"json\", {attribute})]")
}

/// The serde and utoipa attributes of [`JSON_MESSAGES`] and [`JSON_ENUMS`]; the helpers they name
/// are in src/json.
fn json_attributes(mut builder: tonic_prost_build::Builder) -> tonic_prost_build::Builder {
    for m in JSON_MESSAGES {
        let derive = if m.read { "serde::Serialize, serde::Deserialize" } else { "serde::Serialize" };
        builder = builder.message_attribute(m.message, json(&format!("derive({derive}, utoipa::ToSchema)")));
        if m.read {
            builder = builder.message_attribute(m.message, json("serde(deny_unknown_fields)"));
        }
        if let Some(name) = m.name {
            builder =
                builder.message_attribute(m.message, json(&format!("serde(rename = \"{name}\"), schema(as = {name})")));
        }
        for &(field, kind) in m.fields {
            let attribute = match kind {
                Instant => "serde(serialize_with = \"crate::json::instant\", skip_serializing_if = \"crate::json::no_instant\"), \
                            schema(value_type = Option<String>, format = DateTime)"
                    .to_owned(),
                OptionalText => {
                    "serde(skip_serializing_if = \"String::is_empty\"), schema(value_type = Option<String>)".to_owned()
                }
                Enum(name) if m.read => format!(
                    "serde(serialize_with = \"crate::json::enumeration::<{name}, _>\", \
                     deserialize_with = \"crate::json::read_enumeration::<{name}, _>\"), schema(value_type = {name})"
                ),
                Enum(name) => format!(
                    "serde(serialize_with = \"crate::json::enumeration::<{name}, _>\"), schema(value_type = {name})"
                ),
                OptionalEnum(name) => format!(
                    "serde(serialize_with = \"crate::json::enumeration::<{name}, _>\", \
                     skip_serializing_if = \"crate::json::unspecified::<{name}>\"), schema(value_type = Option<{name}>)"
                ),
                Message(name) => {
                    format!("serde(serialize_with = \"crate::json::or_default\"), schema(value_type = {name})")
                }
                Defaulted => "serde(default)".to_owned(),
            };
            assert!(
                !m.read || matches!(kind, Enum(_) | Defaulted),
                "{}.{field}: only enums and defaults are read from JSON",
                m.message
            );
            builder = builder.field_attribute(format!("{}.{field}", m.message), json(&attribute));
        }
    }
    for e in JSON_ENUMS {
        let derive = if e.read { "serde::Serialize, serde::Deserialize" } else { "serde::Serialize" };
        builder = builder.enum_attribute(e.name, json(&format!("derive({derive}, utoipa::ToSchema)")));
        builder = builder.enum_attribute(e.name, json("serde(rename_all = \"snake_case\")"));
        if let Some(schema) = e.schema {
            builder =
                builder.enum_attribute(e.name, json(&format!("serde(rename = \"{schema}\"), schema(as = {schema})")));
        }
        let unspecified = match e.unspecified {
            Unspecified::Unknown => "serde(rename = \"unknown\")",
            Unspecified::Hidden => "serde(skip)",
        };
        builder = builder.field_attribute(format!("{}.{}", e.name, e.unspecified_value()), json(unspecified));
    }
    builder
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
