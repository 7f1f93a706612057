//! Instants in JSON as RFC 3339 text (`2025-11-24T09:30:00Z`), converted to
//! and from the integer microseconds the services speak. Small enough to
//! keep here rather than pull in a calendar crate.

use loyalty_common::clock::{MICROS_PER_SECOND, Micros};

const SECONDS_PER_DAY: i64 = 86_400;

/// `2025-11-24T09:30:00Z`, with `.ffffff` only when there are microseconds. Always UTC.
pub fn format(micros: Micros) -> String {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    let (days, second_of_day) = (seconds.div_euclid(SECONDS_PER_DAY), seconds.rem_euclid(SECONDS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (second_of_day / 3_600, second_of_day % 3_600 / 60, second_of_day % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if fraction != 0 {
        text.push_str(&format!(".{fraction:06}"));
    }
    text.push('Z');
    text
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; digits past the
/// microsecond are dropped. `None` for anything else, including leap seconds.
pub fn parse(text: &str) -> Option<Micros> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&bytes[0..4])?;
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    let hour = digits(&bytes[11..13])?;
    let minute = digits(&bytes[14..16])?;
    let second = digits(&bytes[17..19])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }

    let mut rest = &bytes[19..];
    let mut fraction = 0i64;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let count = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        for (i, digit) in after_dot[..count].iter().enumerate() {
            if i < 6 {
                fraction = fraction * 10 + i64::from(digit - b'0');
            }
        }
        fraction *= 10i64.pow(6u32.saturating_sub(count as u32));
        rest = &after_dot[count..];
    }
    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3_600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let local = days * SECONDS_PER_DAY + hour * 3_600 + minute * 60 + second;
    (local - offset_seconds).checked_mul(MICROS_PER_SECOND)?.checked_add(fraction)
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, b| b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0')))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
