//! A member's profile, free of transport and storage: enrolment, birthday
//! (month and day, no year), locale, time zone, marketing consents and the
//! shop's own attributes, with the rules a write must meet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use loyalty_common::clock::Micros;
use loyalty_common::validate::{self, FieldViolation};

/// The shop's attributes per member, at most; keys and values bounded.
pub const MAX_ATTRIBUTES: usize = 50;
const MAX_ATTRIBUTE_KEY: usize = 64;
const MAX_ATTRIBUTE_VALUE: usize = 500;
const MAX_CONSENTS: usize = 20;
const MAX_CHANNEL: usize = 32;
const MAX_LOCALE: usize = 35;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// When the profile was first written: the enrolment.
    pub enrolled_at: Micros,
    /// Where the customer enrolled (`web`, `store`, `app`…); set once.
    pub enrollment_channel: String,
    /// 1 to 12 and a day of that month (29 February included); 0 and 0: unknown.
    pub birth_month: u32,
    pub birth_day: u32,
    /// BCP 47 (`de-CH`); empty: the program's.
    pub locale: String,
    /// IANA (`Europe/Berlin`); empty: UTC.
    pub time_zone: String,
    pub consents: Vec<Consent>,
    pub attributes: BTreeMap<String, String>,
    pub version: i64,
    pub updated_at: Micros,
}

/// A marketing consent on one channel, as the customer last gave or withdrew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub channel: String,
    pub granted: bool,
    pub changed_at: Micros,
}

/// What a write may set: everything but the enrolment time, the version and the update time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProfileChange {
    pub enrollment_channel: String,
    pub birth_month: u32,
    pub birth_day: u32,
    pub locale: String,
    pub time_zone: String,
    /// Each consent with when it was given or withdrawn (`None`: not said, which is refused).
    pub consents: Vec<(String, bool, Option<Micros>)>,
    pub attributes: BTreeMap<String, String>,
}

impl ProfileChange {
    /// Every bad field, named as the request names it; `now` bounds consent times.
    pub fn validate(&self, now: Micros) -> Vec<FieldViolation> {
        let mut bad = Vec::new();
        let mut push = |field: String, description: String| bad.push(FieldViolation::new(field, description));
        if !self.enrollment_channel.is_empty() && !is_token(&self.enrollment_channel, MAX_CHANNEL) {
            push("profile.enrollment_channel".into(), token_rule(MAX_CHANNEL));
        }
        match (self.birth_month, self.birth_day) {
            (0, 0) => {}
            (month @ 1..=12, day) if (1..=days_in_month(month)).contains(&day) => {}
            (month @ 1..=12, _) => {
                push("profile.birth_day".into(), format!("must be 1 to {} for month {month}", days_in_month(month)))
            }
            (0, _) => push("profile.birth_month".into(), "must be given with the day (1 to 12)".into()),
            _ => push("profile.birth_month".into(), "must be 1 to 12 (0 with day 0: unknown)".into()),
        }
        if !self.locale.is_empty() && !is_locale(&self.locale) {
            push("profile.locale".into(), "must be a BCP 47 language tag such as de or de-CH".into());
        }
        if !self.time_zone.is_empty() && jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            push("profile.time_zone".into(), "must be an IANA time zone such as Europe/Berlin".into());
        }
        if self.consents.len() > MAX_CONSENTS {
            push("profile.consents".into(), format!("must be at most {MAX_CONSENTS}"));
        }
        for (i, (channel, _, changed_at)) in self.consents.iter().enumerate() {
            let field = |name: &str| format!("profile.consents[{i}].{name}");
            if !is_token(channel, MAX_CHANNEL) {
                push(field("channel"), token_rule(MAX_CHANNEL));
            }
            if self.consents[..i].iter().any(|(earlier, _, _)| earlier == channel) {
                push(field("channel"), "appears twice".into());
            }
            match changed_at {
                None => push(field("changed_at"), "is required: when the customer gave or withdrew it".into()),
                Some(at) if *at > now => push(field("changed_at"), "must not be in the future".into()),
                Some(at) => {
                    if let Err(violation) = validate::instant(&field("changed_at"), *at, now) {
                        push(violation.field, violation.description);
                    }
                }
            }
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            push("profile.attributes".into(), format!("must hold at most {MAX_ATTRIBUTES}"));
        }
        for (key, value) in &self.attributes {
            if !is_token(key, MAX_ATTRIBUTE_KEY) {
                push(format!("profile.attributes[{key}]"), token_rule(MAX_ATTRIBUTE_KEY));
            } else if value.chars().count() > MAX_ATTRIBUTE_VALUE || value.chars().any(char::is_control) {
                push(
                    format!("profile.attributes[{key}]"),
                    format!("must be at most {MAX_ATTRIBUTE_VALUE} characters, none of them control characters"),
                );
            }
        }
        bad
    }

    /// The profile after this change to `current` (`None`: the enrolment).
    pub fn apply(self, current: Option<&Profile>, now: Micros) -> Profile {
        let (enrolled_at, channel, version) = match current {
            // The enrolment's channel stays what it was once set.
            Some(p) if !p.enrollment_channel.is_empty() => (p.enrolled_at, p.enrollment_channel.clone(), p.version),
            Some(p) => (p.enrolled_at, self.enrollment_channel, p.version),
            None => (now, self.enrollment_channel, 0),
        };
        Profile {
            enrolled_at,
            enrollment_channel: channel,
            birth_month: self.birth_month,
            birth_day: self.birth_day,
            locale: self.locale,
            time_zone: self.time_zone,
            consents: self
                .consents
                .into_iter()
                .map(|(channel, granted, at)| Consent { channel, granted, changed_at: at.unwrap_or(now) })
                .collect(),
            attributes: self.attributes,
            version: version + 1,
            updated_at: now,
        }
    }
}

/// Days of `month` in a leap year: a birthday on 29 February is a birthday.
pub fn days_in_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Lower-case letters, digits, `_` and `-`, 1 to `max` of them.
fn is_token(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn token_rule(max: usize) -> String {
    format!("must be 1 to {max} lower-case letters, digits, _ or -")
}

/// A BCP 47 tag's shape: a 2-3 letter language, then subtags of 1 to 8 letters or digits.
fn is_locale(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    tag.len() <= MAX_LOCALE
        && (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_763_942_400_000_000;

    fn fields(change: &ProfileChange) -> Vec<String> {
        change.validate(NOW).into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn impossible_birthdays_and_timeless_consents_are_refused_by_field() {
        let ok = ProfileChange {
            birth_month: 2,
            birth_day: 29,
            locale: "de-CH".into(),
            time_zone: "Europe/Zurich".into(),
            consents: vec![("email".into(), true, Some(NOW - 1))],
            ..ProfileChange::default()
        };
        assert_eq!(fields(&ok), Vec::<String>::new(), "29 February is a birthday");
        let bad = ProfileChange {
            birth_month: 4,
            birth_day: 31,
            locale: "german".into(),
            time_zone: "Europe/Atlantis".into(),
            consents: vec![("email".into(), true, None), ("sms".into(), true, Some(NOW + 1))],
            ..ProfileChange::default()
        };
        assert_eq!(
            fields(&bad),
            [
                "profile.birth_day",
                "profile.locale",
                "profile.time_zone",
                "profile.consents[0].changed_at",
                "profile.consents[1].changed_at"
            ]
        );
        let day_only = ProfileChange { birth_day: 3, ..ProfileChange::default() };
        assert_eq!(fields(&day_only), ["profile.birth_month"]);
        let month_13 = ProfileChange { birth_month: 13, birth_day: 1, ..ProfileChange::default() };
        assert_eq!(fields(&month_13), ["profile.birth_month"]);
    }

    #[test]
    fn attributes_are_bounded() {
        let mut attributes: BTreeMap<String, String> =
            (0..=MAX_ATTRIBUTES).map(|i| (format!("k{i}"), "v".into())).collect();
        attributes.insert("Bad Key".into(), "v".into());
        attributes.insert("note".into(), "line\nbreak".into());
        let change = ProfileChange { attributes, ..ProfileChange::default() };
        assert_eq!(fields(&change), ["profile.attributes", "profile.attributes[Bad Key]", "profile.attributes[note]"]);
    }

    #[test]
    fn the_enrolment_stays_and_the_version_grows() {
        let first = ProfileChange { enrollment_channel: "store".into(), ..ProfileChange::default() }.apply(None, NOW);
        assert_eq!((first.enrolled_at, first.enrollment_channel.as_str(), first.version), (NOW, "store", 1));
        let later = ProfileChange { enrollment_channel: "web".into(), locale: "tr".into(), ..ProfileChange::default() }
            .apply(Some(&first), NOW + 5);
        assert_eq!((later.enrolled_at, later.enrollment_channel.as_str()), (NOW, "store"), "enrolment is history");
        assert_eq!((later.version, later.updated_at, later.locale.as_str()), (2, NOW + 5, "tr"));
    }
}
