//! The JSON Schema of each webhook event type's delivery body, as
//! `docs/events/` holds them, compiled in: the gateway serves them at
//! `GET /v1/webhooks/event-types/{event_type}/schema`.

/// The schema of `event_type` (draft 2020-12, JSON text), if it is one.
pub fn schema(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "points.activated" => include_str!("../../../docs/events/points.activated.v1.schema.json"),
        "points.adjusted" => include_str!("../../../docs/events/points.adjusted.v1.schema.json"),
        "points.earned" => include_str!("../../../docs/events/points.earned.v1.schema.json"),
        "points.expired" => include_str!("../../../docs/events/points.expired.v1.schema.json"),
        "points.expiring_soon" => include_str!("../../../docs/events/points.expiring_soon.v1.schema.json"),
        "points.restored" => include_str!("../../../docs/events/points.restored.v1.schema.json"),
        "points.reversed" => include_str!("../../../docs/events/points.reversed.v1.schema.json"),
        "points.spent" => include_str!("../../../docs/events/points.spent.v1.schema.json"),
        "points.statement" => include_str!("../../../docs/events/points.statement.v1.schema.json"),
        "redemption.cancelled" => include_str!("../../../docs/events/redemption.cancelled.v1.schema.json"),
        "referral.completed" => include_str!("../../../docs/events/referral.completed.v1.schema.json"),
        "referral.reversed" => include_str!("../../../docs/events/referral.reversed.v1.schema.json"),
        "reward.granted" => include_str!("../../../docs/events/reward.granted.v1.schema.json"),
        "reward.redeemed" => include_str!("../../../docs/events/reward.redeemed.v1.schema.json"),
        "segment.changed" => include_str!("../../../docs/events/segment.changed.v1.schema.json"),
        "subscription.disabled" => include_str!("../../../docs/events/subscription.disabled.v1.schema.json"),
        "tier.assigned" => include_str!("../../../docs/events/tier.assigned.v1.schema.json"),
        "tier.downgraded" => include_str!("../../../docs/events/tier.downgraded.v1.schema.json"),
        "tier.ended" => include_str!("../../../docs/events/tier.ended.v1.schema.json"),
        "tier.upgraded" => include_str!("../../../docs/events/tier.upgraded.v1.schema.json"),
        "voucher.consumed" => include_str!("../../../docs/events/voucher.consumed.v1.schema.json"),
        "voucher.expiring_soon" => include_str!("../../../docs/events/voucher.expiring_soon.v1.schema.json"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_its_schema_and_every_schema_a_type() {
        for (name, _) in loyalty_proto::webhooks::EVENT_TYPES {
            let schema: serde_json::Value = serde_json::from_str(schema(name).expect(name)).expect(name);
            assert_eq!(schema["properties"]["type"]["const"], *name, "the schema of {name} is its own");
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events");
        let files = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok());
        let documented: Vec<String> =
            files.filter_map(|f| Some(f.strip_suffix(".v1.schema.json")?.to_owned())).collect();
        assert_eq!(documented.len(), loyalty_proto::webhooks::EVENT_TYPES.len(), "{documented:?}");
        assert!(documented.iter().all(|name| schema(name).is_some()), "{documented:?}");
        assert_eq!(schema("points.unknown"), None);
    }
}
