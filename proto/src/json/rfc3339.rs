//! Instants in JSON as RFC 3339 text (`2025-11-24T09:30:00Z`), converted to
//! and from the integer microseconds the services speak, with the `time`
//! crate's calendar and RFC 3339 parser. Here rather than in the gateway:
//! the derived JSON of the messages' timestamps is compiled in this crate.

use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Microseconds since the Unix epoch: `loyalty_common::clock::Micros` (that crate depends on this one).
pub type Micros = i64;

const SECONDS: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
const MICROSECONDS: &[BorrowedFormatItem<'_>] = format_description!(".[subsecond digits:6]");

/// `2025-11-24T09:30:00Z`, with `.ffffff` only when there are microseconds.
/// Always UTC; an instant past 9999 (no service answers one) is shown as the
/// last microsecond of 9999.
pub fn format(micros: Micros) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).unwrap_or(if micros < 0 {
        PrimitiveDateTime::MIN.assume_utc()
    } else {
        PrimitiveDateTime::MAX.assume_utc()
    });
    let mut text = at.format(SECONDS).expect("a UTC instant formats");
    if at.microsecond() != 0 {
        text.push_str(&at.format(MICROSECONDS).expect("a UTC instant formats"));
    }
    text.push('Z');
    text
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`); digits past
/// the microsecond are dropped. `None` for anything else, leap seconds included.
pub fn parse(text: &str) -> Option<Micros> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    // The parser reads 23:59:60 as the last instant of 23:59:59; no service keeps leap seconds.
    if text.get(17..19) == Some("60") {
        return None;
    }
    Micros::try_from(at.unix_timestamp_nanos().div_euclid(1_000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICROS_PER_SECOND: Micros = 1_000_000;

    /// 2025-11-24T00:00:00Z.
    const T0: Micros = 1_763_942_400_000_000;

    #[test]
    fn formats_utc_with_microseconds_only_when_present() {
        assert_eq!(format(T0), "2025-11-24T00:00:00Z");
        assert_eq!(format(T0 + 1_500_000), "2025-11-24T00:00:01.500000Z");
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format(951_782_400 * MICROS_PER_SECOND), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for micros in [T0, T0 + 1, -1, 0, 951_782_400 * MICROS_PER_SECOND, 253_402_300_799 * MICROS_PER_SECOND] {
            assert_eq!(parse(&format(micros)), Some(micros), "{}", format(micros));
        }
        assert_eq!(parse("2025-11-24T01:00:00+01:00"), Some(T0));
        assert_eq!(parse("2025-11-23t23:30:00-00:30"), Some(T0));
        assert_eq!(parse("2025-11-24T00:00:00.1234567Z"), Some(T0 + 123_456));
        assert_eq!(parse("2025-11-24 00:00:00Z"), Some(T0), "RFC 3339's note allows a space");
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "",
            "2025-11-24",
            "2025-11-24T00:00:00",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-11-24T24:00:00Z",
            "2025-11-24T23:59:60Z",
            "2025-11-24T00:00:00.Z",
            "2025-11-24T00:00:00+0100",
            "2025-11-24T00:00:00Zjunk",
            "２025-11-24T00:00:00Z",
            "2025-06-30T23:59:60Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
