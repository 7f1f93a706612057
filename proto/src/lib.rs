//! Rust types and gRPC stubs for the loyalty services, generated at build time.

/// Encoded `FileDescriptorSet` of every loyalty proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/loyalty_descriptor.bin"));

#[cfg(feature = "json")]
pub mod json;

pub mod events {
    pub mod v1 {
        tonic::include_proto!("loyalty.events.v1");
    }
}

pub mod insights {
    pub mod v1 {
        tonic::include_proto!("loyalty.insights.v1");
    }
}

pub mod privacy {
    pub mod v1 {
        tonic::include_proto!("loyalty.privacy.v1");
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
        ("tier.upgraded", "A customer moved up the ladder (qualifying points reached a higher tier)"),
        ("tier.downgraded", "A customer moved down the ladder (a window or grace ended, or points were reversed)"),
        ("tier.assigned", "A customer was put in a tier by hand (hidden tiers included)"),
        (
            "tier.ended",
            "A tier assigned by hand ended or was removed; the customer is back where their points put them",
        ),
        ("reward.redeemed", "A reward was redeemed with points: the voucher is ready to use"),
        (
            "reward.granted",
            "A reward was given without points (a gift), with who gave it and why: the voucher is ready to use",
        ),
        ("voucher.consumed", "A voucher was used at checkout, with the order"),
        (
            "voucher.expiring_soon",
            "An unused voucher will expire soon: once per voucher, the rewards service's VOUCHER_REMINDER_DAYS before",
        ),
        ("redemption.cancelled", "An unused voucher was cancelled; its points go back to the customer"),
        ("referral.completed", "A referred friend's qualifying order completed a referral: the referrer's reward"),
        ("referral.reversed", "A completed referral was reversed by a refund of the qualifying order"),
        ("segment.changed", "A customer's lifecycle segment changed (new, active, loyal, at_risk, churned)"),
        ("subscription.disabled", "A subscription of the program was disabled after failing for days"),
    ];
}
