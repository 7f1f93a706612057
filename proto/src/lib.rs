//! Rust types and gRPC stubs for the loyalty services, generated at build time.

/// Encoded `FileDescriptorSet` of every loyalty proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/loyalty_descriptor.bin"));

#[cfg(feature = "json")]
pub mod json;

pub mod insights {
    pub mod v1 {
        tonic::include_proto!("loyalty.insights.v1");
    }
}

pub mod referral {
    pub mod v1 {
        tonic::include_proto!("loyalty.referral.v1");
    }
}

pub mod rewards {
    pub mod v1 {
        tonic::include_proto!("loyalty.rewards.v1");
    }
}

pub mod tiers {
    pub mod v1 {
        tonic::include_proto!("loyalty.tiers.v1");
    }
}

pub mod points {
    pub mod v1 {
        tonic::include_proto!("loyalty.points.v1");
    }
}

pub mod webhooks {
    pub mod v1 {
        tonic::include_proto!("loyalty.webhooks.v1");
    }

    /// Every event type a subscription can ask for, with what it means: the
    /// `type` of the events' bodies (version `v1`).
    pub const EVENT_TYPES: &[(&str, &str)] = &[
        (
            "points.earned",
            "Points earned: an order, an activity, a referral or a bonus (pending until the return window ends)",
        ),
        ("points.activated", "Pending points became spendable"),
        ("points.spent", "Points spent: a reward redeemed or a checkout"),
        ("points.restored", "A spend given back: a voucher cancelled or a redemption that failed"),
        ("points.reversed", "Points taken back by a refund"),
        ("points.adjusted", "Points added or taken by hand, with the reason"),
        ("points.expired", "Points expired"),
        (
            "points.expiring_soon",
            "Points will expire soon: once per lot, the program's expiry_reminder_days before, with the points still left",
        ),
        (
            "points.statement",
            "A member's monthly statement: balance, what expires next, tier progress; once per member with points and month",
        ),
        ("segment.changed", "A customer's lifecycle segment changed (new, active, loyal, at_risk, churned)"),
        ("subscription.disabled", "A subscription of the program was disabled after failing for days"),
    ];
}
