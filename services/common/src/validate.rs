//! Edge validation shared by every service: ids, keys, free text and instants.

use crate::clock::{MICROS_PER_DAY, Micros};

/// Longest id we accept (program, customer, idempotency key, reference), in characters
/// (Unicode scalar values, as JSON Schema's `maxLength` counts them).
pub const MAX_ID_CHARS: usize = 128;
/// Longest free-text reason we keep, in characters.
pub const MAX_REASON_CHARS: usize = 512;

/// A field that failed validation, with a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// Earliest instant a request may carry: the Unix epoch, 1970-01-01T00:00:00Z. Nothing in a
/// loyalty program happened before it; an earlier one is a zero or default date (year 0001).
pub const EARLIEST_INSTANT: Micros = 0;
/// How far past the service's clock a request's instant may lie: 3,660 days (ten years), beyond
/// any expiry, campaign, reward or tier assignment a program sets; a later one is a typo or a
/// "never" sentinel such as 9999-12-31, which callers express by leaving the field unset.
pub const MAX_DAYS_AHEAD: i64 = 3_660;

/// A required, printable id of at most [`MAX_ID_CHARS`]. White space alone names nothing, and an
/// id that only differs from another by it would be a second, invisible account; so would one
/// that differs by an invisible format character (a zero-width space, a direction mark).
///
/// Ids are the shop's own and are compared byte for byte: no Unicode normalisation, since an id
/// we rewrote would no longer match the one the shop's systems hold.
pub fn id(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if value.trim().is_empty() {
        return Err(FieldViolation::new(field, "must not be only white space"));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(FieldViolation::new(field, format!("must be at most {MAX_ID_CHARS} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "must not contain control characters"));
    }
    if let Some(invisible) = value.chars().find(|&c| is_format_character(c)) {
        let code = u32::from(invisible);
        return Err(FieldViolation::new(field, format!("must not contain invisible format characters (U+{code:04X})")));
    }
    Ok(())
}

/// Unicode's format characters (general category Cf, Unicode 15.1): invisible, yet part of the
/// bytes, such as U+200B ZERO WIDTH SPACE, U+200E LEFT-TO-RIGHT MARK and U+FEFF. Inclusive ranges;
/// the gateway states the same set in its OpenAPI patterns.
pub const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Control characters (general category Cc): what [`char::is_control`] means.
pub const CONTROL_CHARACTERS: &[(char, char)] = &[('\u{0000}', '\u{001F}'), ('\u{007F}', '\u{009F}')];

/// Unicode's White_Space: what [`str::trim`] takes away and [`char::is_whitespace`] means.
pub const WHITE_SPACE: &[(char, char)] = &[
    ('\u{0009}', '\u{000D}'),
    ('\u{0020}', '\u{0020}'),
    ('\u{0085}', '\u{0085}'),
    ('\u{00A0}', '\u{00A0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{3000}', '\u{3000}'),
];

fn is_format_character(c: char) -> bool {
    FORMAT_CHARACTERS.iter().any(|&(low, high)| (low..=high).contains(&c))
}

/// Optional free text of at most [`MAX_REASON_CHARS`].
pub fn text(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.chars().count() > MAX_REASON_CHARS {
        return Err(FieldViolation::new(field, format!("must be at most {MAX_REASON_CHARS} characters")));
    }
    Ok(())
}

/// An instant no earlier than [`EARLIEST_INSTANT`] and at most [`MAX_DAYS_AHEAD`] days after `now`
/// (the service's clock).
pub fn instant(field: &str, at: Micros, now: Micros) -> Result<(), FieldViolation> {
    if at < EARLIEST_INSTANT {
        return Err(FieldViolation::new(field, "must not be before 1970-01-01T00:00:00Z"));
    }
    if at > now.saturating_add(MAX_DAYS_AHEAD * MICROS_PER_DAY) {
        return Err(FieldViolation::new(field, format!("must not be more than {MAX_DAYS_AHEAD} days from now")));
    }
    Ok(())
}

/// A protobuf timestamp, converted and held to [`instant`]'s bounds.
pub fn timestamp(field: &str, value: &prost_types::Timestamp, now: Micros) -> Result<Micros, FieldViolation> {
    let micros =
        crate::clock::from_timestamp(value).ok_or_else(|| FieldViolation::new(field, "is not a valid timestamp"))?;
    instant(field, micros, now)?;
    Ok(micros)
}

/// Default page size of every list RPC.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// Largest page size of every list RPC.
pub const MAX_PAGE_SIZE: i32 = 200;

/// Collects every bad field of a request before answering.
#[derive(Debug, Default)]
pub struct Check(pub Vec<FieldViolation>);

impl Check {
    pub fn add(&mut self, result: Result<(), FieldViolation>) -> &mut Self {
        if let Err(violation) = result {
            self.0.push(violation);
        }
        self
    }

    pub fn id(&mut self, field: &str, value: &str) -> &mut Self {
        self.add(id(field, value))
    }

    pub fn text(&mut self, field: &str, value: &str) -> &mut Self {
        self.add(text(field, value))
    }

    /// An optional timestamp, converted; a malformed or out-of-bounds one ([`instant`]) is a violation.
    pub fn timestamp(&mut self, field: &str, value: Option<&prost_types::Timestamp>, now: Micros) -> Option<Micros> {
        match timestamp(field, value?, now) {
            Ok(micros) => Some(micros),
            Err(violation) => {
                self.0.push(violation);
                None
            }
        }
    }

    /// Page size (0: the default) and the position a page token encodes.
    pub fn page(&mut self, page_size: i32, page_token: &str) -> Page {
        if !(0..=MAX_PAGE_SIZE).contains(&page_size) {
            self.0.push(FieldViolation::new("page_size", format!("must be between 0 and {MAX_PAGE_SIZE}")));
        }
        let before = if page_token.is_empty() {
            None
        } else {
            let parsed = Some(page_token).and_then(position).filter(|&p| p > 0);
            if parsed.is_none() {
                self.0.push(FieldViolation::new("page_token", "is not a token from a previous page"));
            }
            parsed
        };
        let size = if page_size <= 0 { DEFAULT_PAGE_SIZE } else { page_size.min(MAX_PAGE_SIZE) };
        Page { size: i64::from(size), before }
    }

    /// Every violation found, if any.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }

    /// INVALID_ARGUMENT naming every bad field, in the caller's error domain.
    pub fn done(self, domain: &str) -> Result<(), tonic::Status> {
        self.finish().map_err(|violations| crate::status::invalid_argument(domain, &violations))
    }
}

/// A list position as a page token writes it: a number of at most 18
/// digits, no sign, no leading zero (`0` itself is one).
pub fn position(token: &str) -> Option<i64> {
    let canonical = token.len() <= 18
        && (token == "0" || token.starts_with(|c: char| ('1'..='9').contains(&c)))
        && token.bytes().all(|b| b.is_ascii_digit());
    token.parse().ok().filter(|_| canonical)
}

/// One page of a list: its size and the position it starts after.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub size: i64,
    pub before: Option<i64>,
}

impl Page {
    /// Trims the extra row fetched beyond the page and makes the next token
    /// from the last row kept (fetch `size + 1` rows to know whether more follow).
    pub fn cut<T, P: ToString>(&self, mut rows: Vec<T>, position: impl Fn(&T) -> P) -> (Vec<T>, String) {
        let size = usize::try_from(self.size).unwrap_or(0);
        let more = rows.len() > size;
        rows.truncate(size);
        let token =
            if more { rows.last().map(|row| position(row).to_string()).unwrap_or_default() } else { String::new() };
        (rows, token)
    }
}

/// A strictly positive amount no larger than `max`.
pub fn positive(field: &str, value: i64, max: i64) -> Result<(), FieldViolation> {
    if value <= 0 {
        return Err(FieldViolation::new(field, "must be greater than zero"));
    }
    if value > max {
        return Err(FieldViolation::new(field, format!("must be at most {max}")));
    }
    Ok(())
}

/// A non-zero amount of either sign, at most `max` either way (an adjustment).
pub fn nonzero(field: &str, value: i64, max: i64) -> Result<(), FieldViolation> {
    if value == 0 {
        return Err(FieldViolation::new(field, "must not be zero"));
    }
    if !(-max..=max).contains(&value) {
        return Err(FieldViolation::new(field, format!("must be between -{max} and {max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stated_character_sets_are_the_ones_the_checks_use() {
        let within = |set: &[(char, char)], c: char| set.iter().any(|&(low, high)| (low..=high).contains(&c));
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(within(CONTROL_CHARACTERS, c), c.is_control(), "{c:?}");
            assert_eq!(within(WHITE_SPACE, c), c.is_whitespace(), "{c:?}");
        }
    }

    #[test]
    fn ids_are_checked_for_emptiness_length_and_control_characters() {
        assert!(id("program_id", "shop-1").is_ok());
        assert_eq!(id("program_id", "").unwrap_err().field, "program_id");
        assert!(id("x", &"a".repeat(MAX_ID_CHARS)).is_ok());
        assert!(id("x", &"a".repeat(MAX_ID_CHARS + 1)).is_err());
        assert!(id("x", "a\nb").is_err());
    }

    #[test]
    fn ids_with_invisible_format_characters_are_refused() {
        for invisible in ["anna\u{200B}", "\u{FEFF}anna", "an\u{200E}na", "an\u{AD}na", "x\u{E0041}"] {
            let violation = id("customer_id", invisible).unwrap_err();
            assert!(violation.description.starts_with("must not contain invisible format characters"), "{invisible:?}");
        }
        let named = id("customer_id", "anna\u{200B}").unwrap_err();
        assert_eq!(named.description, "must not contain invisible format characters (U+200B)");
        // Visible non-ASCII ids are the shop's business, byte for byte: composed and decomposed
        // forms are two ids, as they are in the shop's own systems.
        assert!(id("customer_id", "zoë").is_ok());
        assert!(id("customer_id", "zoe\u{308}").is_ok());
        assert!(id("customer_id", "山田").is_ok());
    }

    #[test]
    fn ids_of_only_white_space_are_refused() {
        for blank in [" ", "   ", "\u{a0}", "\u{3000}"] {
            let violation = id("customer_id", blank).unwrap_err();
            assert_eq!(violation, FieldViolation::new("customer_id", "must not be only white space"), "{blank:?}");
        }
        // Inner and surrounding spaces in a real id stay the caller's business.
        assert!(id("order_id", "order 1").is_ok());
        assert!(id("order_id", " 1 ").is_ok());
    }

    /// 2025-11-24T00:00:00Z.
    const NOW: Micros = 1_763_942_400_000_000;

    #[test]
    fn instants_are_bounded_by_the_epoch_and_the_horizon() {
        assert!(instant("at", EARLIEST_INSTANT, NOW).is_ok());
        assert!(instant("at", NOW, NOW).is_ok());
        let horizon = NOW + MAX_DAYS_AHEAD * MICROS_PER_DAY;
        assert!(instant("at", horizon, NOW).is_ok());
        let late = instant("expires_at", horizon + 1, NOW).unwrap_err();
        assert_eq!(late.field, "expires_at");
        assert!(late.description.contains("3660 days"), "{late:?}");
        let early = instant("occurred_at", -1, NOW).unwrap_err();
        assert_eq!(early, FieldViolation::new("occurred_at", "must not be before 1970-01-01T00:00:00Z"));
        assert!(instant("at", i64::MAX, i64::MAX).is_ok(), "no overflow near the end of time");
    }

    #[test]
    fn timestamps_are_converted_then_bounded() {
        let ts = |seconds: i64, nanos: i32| prost_types::Timestamp { seconds, nanos };
        assert_eq!(timestamp("at", &ts(NOW / 1_000_000, 5_000), NOW), Ok(NOW + 5));
        // 0001-01-01T00:00:00Z, what an unset date in many languages serialises as.
        assert!(timestamp("occurred_at", &ts(-62_135_596_800, 0), NOW).is_err());
        // 9999-12-31T23:59:59Z.
        assert!(timestamp("ends_at", &ts(253_402_300_799, 0), NOW).is_err());
        assert_eq!(timestamp("at", &ts(0, -1), NOW).unwrap_err().description, "is not a valid timestamp");

        let mut check = Check::default();
        assert_eq!(check.timestamp("a", None, NOW), None);
        assert_eq!(check.timestamp("b", Some(&ts(1, 0)), NOW), Some(crate::clock::MICROS_PER_SECOND));
        assert_eq!(check.timestamp("c", Some(&ts(-1, 0)), NOW), None);
        let fields: Vec<_> = check.finish().unwrap_err().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["c"]);
    }

    #[test]
    fn amounts_must_be_positive_and_bounded() {
        assert!(positive("points", 1, 10).is_ok());
        assert!(positive("points", 0, 10).is_err());
        assert!(positive("points", -3, 10).is_err());
        assert!(positive("points", 11, 10).is_err());
    }

    #[test]
    fn signed_amounts_must_be_nonzero_and_bounded_either_way() {
        assert!(nonzero("points", -10, 10).is_ok() && nonzero("points", 10, 10).is_ok());
        assert_eq!(nonzero("points", 0, 10).unwrap_err().description, "must not be zero");
        for far in [11, -11, i64::MIN, i64::MAX] {
            assert_eq!(nonzero("points", far, 10).unwrap_err().description, "must be between -10 and 10", "{far}");
        }
    }
}
