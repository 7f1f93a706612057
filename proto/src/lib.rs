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
}
