//! The JSON of the messages that the gateway serves as they are (the
//! `json` feature): the helpers that `build.rs` names in the serde
//! attributes it puts on them, and how each enum shows a value it has no
//! name for. The conventions are the gateway's: instants are RFC 3339 text,
//! enums are snake_case names, an absent instant is left out.

use prost_types::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    insights::v1 as insights, points::v1 as points, referral::v1 as referral, rewards::v1 as rewards,
    tiers::v1 as tiers, webhooks::v1 as webhooks,
};

pub mod rfc3339;

/// A protobuf enum as JSON shows it: by name (`rename_all = "snake_case"`
/// from `build.rs`). A field holds the number, which may be 0 or one this
/// build does not know; such a number shows as [`JsonEnum::FALLBACK`].
pub trait JsonEnum: Copy + TryFrom<i32> + Serialize {
    /// What 0 (unspecified) and unknown numbers show as.
    const FALLBACK: Self;

    /// The value a field's number shows as.
    fn shown(number: i32) -> Self {
        match Self::try_from(number) {
            Ok(value) if number != 0 => value,
            _ => Self::FALLBACK,
        }
    }
}

/// The fallbacks, as the gateway has always shown them: `unknown` for
/// states, one of the values for settings and kinds.
macro_rules! fallbacks {
    ($($enum:ty => $fallback:ident,)*) => {
        $(impl JsonEnum for $enum {
            const FALLBACK: Self = Self::$fallback;
        })*
    };
}

fallbacks! {
    // Unspecified is renamed `unknown` (build.rs).
    points::EntryKind => Unspecified,
    rewards::RedemptionStatus => Unspecified,
    referral::ReferralStatus => Unspecified,
    tiers::ChangeReason => Unspecified,
    webhooks::SubscriptionStatus => Unspecified,
    // Never shown: the field is left out instead (`unspecified`).
    points::NoPointsReason => Unspecified,
    points::Rounding => Down,
    points::ExpiryPolicyKind => Never,
    points::CapPeriod => Lifetime,
    points::CampaignKind => Bonus,
    rewards::RewardKind => Custom,
    rewards::VoucherState => Unknown,
    tiers::WindowKind => Lifetime,
    tiers::DowngradeKind => Immediate,
    tiers::QualificationBasis => AllEarned,
    insights::Segment => New,
    insights::CustomerOrder => Spend,
    insights::SurveyKind => Nps,
    insights::Granularity => Day,
    // A delivery always has a state; the query reads it.
    webhooks::DeliveryState => Pending,
}

/// An enum field by name (`serialize_with`).
pub fn enumeration<E: JsonEnum, S: Serializer>(number: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    E::shown(*number).serialize(serializer)
}

/// An enum field read by name (`deserialize_with`).
pub fn read_enumeration<'de, E: Deserialize<'de> + Into<i32>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<i32, D::Error> {
    E::deserialize(deserializer).map(Into::into)
}

/// Leaves out an enum field that has no name to show (`skip_serializing_if`).
pub fn unspecified<E: TryFrom<i32>>(number: &i32) -> bool {
    *number == 0 || E::try_from(*number).is_err()
}

/// A timestamp as RFC 3339 text (`serialize_with`); [`no_instant`] leaves out the rest.
pub fn instant<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match at.as_ref().and_then(micros) {
        Some(micros) => serializer.serialize_str(&rfc3339::format(micros)),
        None => serializer.serialize_none(),
    }
}

/// An absent timestamp, or one out of range (`skip_serializing_if`).
pub fn no_instant(at: &Option<Timestamp>) -> bool {
    at.as_ref().and_then(micros).is_none()
}

/// A message field that proto3 may leave absent, shown with its defaults
/// then, as a reader of the message sees it (`serialize_with`).
pub fn or_default<T: Serialize + Default, S: Serializer>(value: &Option<T>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(serializer),
        None => T::default().serialize(serializer),
    }
}

/// As `loyalty_common::clock::from_timestamp`, which this crate cannot use:
/// `None` when out of range.
fn micros(at: &Timestamp) -> Option<rfc3339::Micros> {
    if !(0..1_000_000_000).contains(&at.nanos) {
        return None;
    }
    at.seconds.checked_mul(1_000_000)?.checked_add(i64::from(at.nanos / 1_000))
}
