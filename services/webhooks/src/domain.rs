//! What the webhooks service works with, free of storage and transport:
//! the event types, Standard Webhooks signatures, secrets, the retry
//! schedule and a subscription's rules.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use loyalty_common::clock::{MICROS_PER_SECOND, Micros};
use loyalty_common::validate::FieldViolation;

pub use loyalty_proto::webhooks::EVENT_TYPES;

/// Whether `name` is a known event type.
pub fn is_event_type(name: &str) -> bool {
    EVENT_TYPES.iter().any(|(known, _)| *known == name)
}

/// The prefix of every signing secret, as the Standard Webhooks libraries expect it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// A new id with `prefix` (`sub_`, `evt_`, `dlv_`): a UUIDv7, so ids sort by creation.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// The `webhook-signature` header's value for one message: `v1,<base64>`
/// per secret, space-separated (both secrets during a rotation's overlap).
pub fn signature(secrets: &[&str], message_id: &str, timestamp_secs: i64, body: &str) -> String {
    let content = format!("{message_id}.{timestamp_secs}.{body}");
    let signatures: Vec<String> = secrets
        .iter()
        .map(|secret| {
            let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)).unwrap_or_default();
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
            mac.update(content.as_bytes());
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect();
    signatures.join(" ")
}

/// When attempts are made: the first at once, then one after each delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// About three days in all: 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h six times.
    pub const DEFAULT: &'static str = "5s,5m,30m,2h,5h,10h,10h,10h,10h,10h,10h";

    /// Attempts in all, the first included.
    pub fn attempts(&self) -> i32 {
        i32::try_from(self.0.len() + 1).unwrap_or(i32::MAX)
    }

    /// When the attempt after `attempts_made` attempts is due, with up to
    /// ±20 % jitter so a recovering endpoint is not hit by every retry at
    /// once; `None` when the schedule is spent.
    pub fn next(&self, attempts_made: i32, now: Micros) -> Option<Micros> {
        let delay = self.0.get(usize::try_from(attempts_made).ok()?.checked_sub(1)?)?;
        let micros = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
        let jitter = micros / 5;
        let offset = if jitter > 0 { rand::random_range(-jitter..=jitter) } else { 0 };
        Some(now.saturating_add(micros).saturating_add(offset))
    }
}

impl std::str::FromStr for RetrySchedule {
    type Err = String;

    /// `5s,5m,30m,2h,…`: delays in seconds, minutes, hours or days.
    fn from_str(text: &str) -> Result<Self, String> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 50 {
            return Err("at most 50 retries".into());
        }
        Ok(Self(delays))
    }
}

/// `30s`, `5m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a number with a unit (s, m, h, d)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?} needs a unit: s, m, h or d")),
    };
    let total = number.checked_mul(seconds).filter(|&s| s <= 30 * 86_400);
    total.map(Duration::from_secs).ok_or_else(|| format!("{text:?} is longer than 30 days"))
}

/// Longest endpoint URL.
pub const MAX_URL_CHARS: usize = 2_000;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest overlap of a rotation.
pub const MAX_OVERLAP_SECS: i64 = 7 * 86_400;
/// The overlap when none is given.
pub const DEFAULT_OVERLAP_SECS: i64 = 86_400;

/// What can be set of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub ordered: bool,
    pub enabled: bool,
}

impl Endpoint {
    /// Every bad field; `plain_http` says whether the operator allows `http://`.
    pub fn validate(&mut self, plain_http: bool) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        if let Err(description) = check_url(&self.url, plain_http) {
            violations.push(FieldViolation::new("url", description));
        }
        for (i, name) in self.event_types.iter().enumerate() {
            if !is_event_type(name) {
                violations.push(FieldViolation::new(
                    format!("event_types[{i}]"),
                    format!("{name:?} is not an event type (ListEventTypes)"),
                ));
            }
        }
        self.event_types.sort();
        self.event_types.dedup();
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            violations.push(FieldViolation::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        violations
    }

    /// Whether events of `event_type` go to this endpoint.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// An absolute `https://` URL (or `http://` where allowed) with a host,
/// no credentials and no fragment.
pub fn check_url(text: &str, plain_http: bool) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if plain_http => {}
        "http" => return Err("must be https (plain http is not allowed by the operator)".into()),
        _ => return Err("must be an https URL".into()),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(())
}

/// The overlap of a rotation in microseconds, from the request's seconds (0: the default).
pub fn overlap(seconds: i64) -> Result<Micros, FieldViolation> {
    match seconds {
        0 => Ok(DEFAULT_OVERLAP_SECS * MICROS_PER_SECOND),
        1..=MAX_OVERLAP_SECS => Ok(seconds * MICROS_PER_SECOND),
        _ => Err(FieldViolation::new("overlap_seconds", format!("must be between 0 and {MAX_OVERLAP_SECS}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_hmac_sha256_of_id_timestamp_and_body() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let signature = signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn both_secrets_sign_during_an_overlap() {
        let (old, new) = (new_secret(), new_secret());
        let both = signature(&[&new, &old], "msg_1", 1, "{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts, [signature(&[&new], "msg_1", 1, "{}"), signature(&[&old], "msg_1", 1, "{}")]);
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_are_prefixed_random_and_long_enough() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with(SECRET_PREFIX));
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a[SECRET_PREFIX.len()..]).unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn the_default_schedule_spans_about_three_days() {
        let schedule: RetrySchedule = RetrySchedule::DEFAULT.parse().unwrap();
        let total: Duration = schedule.0.iter().sum();
        assert!(total > Duration::from_secs(60 * 3600) && total < Duration::from_secs(72 * 3600), "{total:?}");
        assert_eq!(schedule.attempts(), 12);
        let now = 1_000 * MICROS_PER_SECOND;
        let next = schedule.next(1, now).unwrap();
        assert!((now + 4 * MICROS_PER_SECOND..=now + 6 * MICROS_PER_SECOND).contains(&next), "{next}");
        assert_eq!(schedule.next(12, now), None);
        assert_eq!(schedule.next(0, now), None);
        assert!("5x".parse::<RetrySchedule>().is_err());
        assert!("31d".parse::<RetrySchedule>().is_err());
        assert_eq!("1s, 2m".parse::<RetrySchedule>().unwrap().0, [Duration::from_secs(1), Duration::from_secs(120)]);
    }

    #[test]
    fn urls_are_https_with_a_host_and_nothing_hidden() {
        assert!(check_url("https://shop.example/hooks", false).is_ok());
        assert!(check_url("http://shop.example/hooks", false).is_err());
        assert!(check_url("http://127.0.0.1:8080/hooks", true).is_ok());
        assert!(check_url("ftp://shop.example/", true).is_err());
        assert!(check_url("https://user:pw@shop.example/", false).is_err());
        assert!(check_url("https://shop.example/#x", false).is_err());
        assert!(check_url("/hooks", false).is_err());
        assert!(check_url("", false).is_err());
    }

    #[test]
    fn event_types_are_checked_sorted_and_deduplicated() {
        let mut endpoint = Endpoint {
            url: "https://shop.example/".into(),
            event_types: vec!["points.spent".into(), "points.earned".into(), "points.spent".into()],
            description: String::new(),
            ordered: false,
            enabled: true,
        };
        assert!(endpoint.validate(false).is_empty());
        assert_eq!(endpoint.event_types, ["points.earned", "points.spent"]);
        assert!(endpoint.wants("points.spent") && !endpoint.wants("points.expired"));
        endpoint.event_types.push("points.stolen".into());
        let violations = endpoint.validate(false);
        assert_eq!(violations.len(), 1, "{violations:?}");
    }
}
