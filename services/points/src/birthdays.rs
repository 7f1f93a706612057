//! Automatic birthdays: the `birthday` activity awarded on the member's
//! birthday in their own time zone (29 February on 28 February in other
//! years), with the same rule, caps, tier perk and campaigns as a birthday
//! the shop reports. Once per customer and year: the award's idempotency
//! key is `birthday:<customer>:<year>`, so a run repeated, a restart or two
//! replicas running at once award it once.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use loyalty_common::clock::Micros;
use loyalty_common::shutdown::ShutdownSignal;

use crate::domain::RuleViolation;
use crate::domain::rules::BIRTHDAY_ACTIVITY;
use crate::error::Error;
use crate::service::Ledger;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BirthdayRun {
    /// Members whose birthday it is today, in their time zone.
    pub due: u64,
    /// Awards made now (not replays of an earlier run's).
    pub awarded: u64,
}

/// The members' calendar day at `now` in `time_zone` (UTC when empty or unknown).
pub fn local_date(now: Micros, time_zone: &str) -> Option<Date> {
    let zone = match time_zone {
        "" => TimeZone::UTC,
        name => TimeZone::get(name).unwrap_or(TimeZone::UTC),
    };
    Some(zone.to_datetime(Timestamp::from_microsecond(now).ok()?).date())
}

/// Whether `date` is the birthday of someone born on `month`/`day`: 29
/// February is celebrated on 28 February in a year without it.
pub fn is_birthday(date: Date, month: u32, day: u32) -> bool {
    let (month, day) = match (month, day) {
        (2, 29) if !date.in_leap_year() => (2, 28),
        birthday => birthday,
    };
    u32::try_from(date.month()).ok() == Some(month) && u32::try_from(date.day()).ok() == Some(day)
}

/// The (month, day) pairs that may be someone's birthday somewhere at
/// `now`: the UTC day and the days either side (time zones run from −12 to
/// +14 hours), and 29 February on a 28 February of a common year.
pub fn candidate_days(now: Micros) -> Vec<(u32, u32)> {
    let Some(today) = local_date(now, "") else { return Vec::new() };
    let mut days = Vec::new();
    for date in [today.yesterday(), Ok(today), today.tomorrow()].into_iter().flatten() {
        let pair = (date.month() as u32, date.day() as u32);
        days.push(pair);
        if pair == (2, 28) && !date.in_leap_year() {
            days.push((2, 29));
        }
    }
    days.sort_unstable();
    days.dedup();
    days
}

impl Ledger {
    /// Awards the birthdays due now; returns what it did.
    pub async fn run_birthdays(self: &Arc<Self>) -> Result<BirthdayRun, Error> {
        let now = self.now();
        let mut run = BirthdayRun::default();
        for (month, day) in candidate_days(now) {
            for member in self.programs().birthdays_on(month, day).await? {
                let Some(date) = local_date(now, &member.time_zone) else { continue };
                if !is_birthday(date, month, day) {
                    continue;
                }
                run.due += 1;
                let key = format!("birthday:{}:{}", member.customer_id, date.year());
                let year = date.year().to_string();
                let awarded =
                    self.record_activity(&member.program_id, &member.customer_id, BIRTHDAY_ACTIVITY, &year, &key).await;
                match awarded {
                    Ok(execution) => run.awarded += u64::from(!execution.replayed),
                    // No birthday rule in this program, or its cap reached: nothing to award.
                    Err(Error::Rule(
                        RuleViolation::ActivityNotRewarded { .. } | RuleViolation::ActivityCapReached { .. },
                    )) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(run)
    }

    /// Background job: [`Ledger::run_birthdays`] every `interval` until shutdown.
    pub async fn birthday_job(self: Arc<Self>, interval: Duration, shutdown: ShutdownSignal) {
        loyalty_common::shutdown::every(interval, shutdown, || async {
            match self.run_birthdays().await {
                Ok(run) if run.awarded > 0 => tracing::info!(awarded = run.awarded, "birthdays awarded"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "birthday run failed, will retry"),
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i16, m: i8, d: i8) -> Date {
        Date::new(y, m, d).unwrap()
    }

    #[test]
    fn a_leap_day_birthday_falls_on_28_february_in_common_years() {
        assert!(is_birthday(date(2027, 2, 28), 2, 29));
        assert!(!is_birthday(date(2028, 2, 28), 2, 29));
        assert!(is_birthday(date(2028, 2, 29), 2, 29));
        assert!(!is_birthday(date(2027, 3, 1), 2, 29));
        assert!(is_birthday(date(2027, 12, 31), 12, 31));
    }

    #[test]
    fn the_day_is_the_members_own() {
        // 2027-01-01T05:00:00Z: still 31 December in Honolulu (UTC−10), 1 January in Berlin.
        let now = 1_798_779_600_000_000;
        assert_eq!(local_date(now, "Pacific/Honolulu"), Some(date(2026, 12, 31)));
        assert_eq!(local_date(now, "Europe/Berlin"), Some(date(2027, 1, 1)));
        assert_eq!(local_date(now, ""), Some(date(2027, 1, 1)));
        let days = candidate_days(now);
        assert!(days.contains(&(12, 31)) && days.contains(&(1, 1)) && days.contains(&(1, 2)), "{days:?}");
    }
}
