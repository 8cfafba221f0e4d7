//! Scheduled actions (`put-scheduled-update-group-action`): a group's sizes changed at a
//! given time, once or on a cron schedule. Each action records when it fires next; the
//! reconcile loop applies what is due and moves that time on in the same compare-and-set
//! change, so a daemon killed at any moment applies each occurrence once.

use serde::{Deserialize, Serialize};

use super::AutoScalingError;
use crate::state::clock;

/// Scheduled actions per group (AWS's limit).
pub const MAX_SCHEDULED_ACTIONS: usize = 125;
/// The longest cron expression taken.
const MAX_CRON_LENGTH: usize = 256;
/// How far ahead the next occurrence is looked for, in days (a February 29th comes
/// within eight years).
const SEARCH_DAYS: i64 = 8 * 366;

/// A cron schedule in UTC: minute, hour, day of month, month, day of week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Both day fields are restricted: either matching is enough, as in cron.
    either_day: bool,
}

/// The set of values one field allows, as bits.
fn field(text: &str, low: u32, high: u32, what: &str) -> Result<u64, AutoScalingError> {
    let invalid = || AutoScalingError::Validation(format!("the cron {what} field {text:?} is not valid"));
    let number = |s: &str| s.parse::<u32>().ok().filter(|n| (low..=high).contains(n)).ok_or_else(invalid);
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, step.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(invalid)?),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (low, high),
            _ => match range.split_once('-') {
                Some((from, to)) => (number(from)?, number(to)?),
                // "5/15": from 5 to the end, every 15.
                None if part.contains('/') => (number(range)?, high),
                None => {
                    let n = number(range)?;
                    (n, n)
                }
            },
        };
        if from > to {
            return Err(invalid());
        }
        bits |= (from..=to).step_by(step as usize).fold(0, |b, n| b | 1 << n);
    }
    Ok(bits)
}

impl std::str::FromStr for Cron {
    type Err = AutoScalingError;

    fn from_str(text: &str) -> Result<Self, AutoScalingError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if text.len() > MAX_CRON_LENGTH || fields.len() != 5 {
            return Err(AutoScalingError::Validation(format!(
                "the recurrence {text:?} is not a cron expression of five fields (minute hour day month weekday)"
            )));
        }
        let mut weekdays = field(fields[4], 0, 7, "day of week")?;
        // 7 is Sunday too.
        if weekdays & 1 << 7 != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            minutes: field(fields[0], 0, 59, "minute")?,
            hours: field(fields[1], 0, 23, "hour")?,
            days: field(fields[2], 1, 31, "day of month")?,
            months: field(fields[3], 1, 12, "month")?,
            weekdays,
            either_day: fields[2] != "*" && fields[4] != "*",
        })
    }
}

impl Cron {
    fn day_matches(&self, days: i64) -> bool {
        let (_, month, day) = clock::civil_from_days(days);
        let weekday = clock::weekday(days);
        let by_date = self.days & 1 << day != 0;
        let by_weekday = self.weekdays & 1 << weekday != 0;
        let day_ok = if self.either_day { by_date || by_weekday } else { by_date && by_weekday };
        self.months & 1 << month != 0 && day_ok
    }

    /// The first time it fires strictly after `after` (seconds since the epoch), within
    /// [`SEARCH_DAYS`].
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let after = i64::try_from(after).ok()?;
        let first_day = after.div_euclid(86_400);
        (first_day..first_day + SEARCH_DAYS).filter(|d| self.day_matches(*d)).find_map(|day| {
            let times = (0..24).filter(|h| self.hours & 1 << h != 0).flat_map(|hour| {
                (0..60)
                    .filter(|m| self.minutes & 1 << m != 0)
                    .map(move |minute| day * 86_400 + hour * 3600 + minute * 60)
            });
            times.into_iter().find(|t| *t > after).and_then(|t| u64::try_from(t).ok())
        })
    }
}

/// One scheduled action of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledAction {
    /// Unique in its group.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// When it first fires (seconds since the epoch).
    pub start_time: Option<u64>,
    /// After this it fires no more.
    pub end_time: Option<u64>,
    /// A cron expression in UTC (none: once).
    pub recurrence: Option<String>,
    /// The min size it sets.
    pub min_size: Option<u32>,
    /// The max size it sets.
    pub max_size: Option<u32>,
    /// The desired capacity it sets.
    pub desired_capacity: Option<u32>,
    /// When it fires next (none: never again, and it goes).
    pub next_run: Option<u64>,
}

impl ScheduledAction {
    /// Checks a new action and sets when it first fires, as of `now`.
    pub fn checked(self, now: u64) -> Result<Self, AutoScalingError> {
        let invalid = |why: String| Err(AutoScalingError::Validation(why));
        if self.name.is_empty() || self.name.chars().count() > 255 || self.name.chars().any(char::is_control)
        {
            return invalid(format!("scheduled action name {:?}: 1 to 255 characters", self.name));
        }
        if self.min_size.is_none() && self.max_size.is_none() && self.desired_capacity.is_none() {
            return invalid(
                "a scheduled action sets at least one of the min size, max size and desired capacity".into(),
            );
        }
        if let (Some(min), Some(max)) = (self.min_size, self.max_size) {
            if min > max {
                return invalid(format!("the min size {min} is more than the max size {max}"));
            }
        }
        let cron = self.recurrence.as_deref().map(str::parse::<Cron>).transpose()?;
        if let (Some(start), Some(end)) = (self.start_time, self.end_time) {
            if end <= start {
                return invalid("the end time is not after the start time".into());
            }
        }
        let next_run = match (&cron, self.start_time) {
            (None, None) => {
                return invalid("a scheduled action needs a start time, a recurrence or both".into())
            }
            (None, Some(start)) if start < now => return invalid("the start time is in the past".into()),
            (None, Some(start)) => Some(start),
            // A recurring action fires on its schedule from its start time on.
            (Some(cron), start) => cron.next_after(start.unwrap_or(now).max(now).saturating_sub(1)),
        };
        if self.end_time.is_some_and(|end| end <= now) {
            return invalid("the end time is in the past".into());
        }
        Ok(Self { next_run, ..self })
    }

    /// Whether it is due at `now`.
    pub fn due(&self, now: u64) -> bool {
        self.next_run.is_some_and(|at| at <= now)
    }

    /// Moves it on past `now`: its next occurrence, none once it is past its end or fires
    /// once.
    pub fn advance(&mut self, now: u64) {
        let next =
            self.recurrence.as_deref().and_then(|r| r.parse::<Cron>().ok()).and_then(|c| c.next_after(now));
        self.next_run = next.filter(|at| self.end_time.map_or(true, |end| *at <= end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03 12:00:00 UTC, a Thursday.
    const NOON: u64 = 1_796_299_200;

    fn cron(text: &str) -> Cron {
        text.parse().unwrap()
    }

    #[test]
    fn cron_finds_the_next_occurrence() {
        assert_eq!(cron("0 12 * * 4").next_after(NOON - 1), Some(NOON), "a Thursday noon");
        assert_eq!(cron("* * * * *").next_after(NOON), Some(NOON + 60));
        assert_eq!(cron("*/15 * * * *").next_after(NOON + 1), Some(NOON + 15 * 60));
        assert_eq!(cron("30 9 * * *").next_after(NOON), Some(NOON + 86_400 - 2 * 3600 - 30 * 60));
        assert_eq!(cron("0 8 * * 1-5").next_after(NOON), Some(NOON + 86_400 - 4 * 3600), "Friday 08:00");
        assert_eq!(cron("0 8 * * 6,7").next_after(NOON), Some(NOON + 2 * 86_400 - 4 * 3600), "Saturday");
        assert_eq!(cron("0 0 1 1 *").next_after(NOON), Some(1_798_761_600), "2027-01-01");
        assert_eq!(cron("0 0 29 2 *").next_after(NOON), Some(1_835_395_200), "2028-02-29");
        assert_eq!(cron("0 0 31 2 *").next_after(NOON), None, "never");
        // Both day fields: either one.
        assert_eq!(cron("0 0 25 * 5").next_after(NOON), Some(NOON + 86_400 - 12 * 3600), "Friday the 4th");
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "a * * * *",
        ] {
            assert!(bad.parse::<Cron>().is_err(), "{bad:?}");
        }
    }

    fn action(start: Option<u64>, recurrence: Option<&str>) -> ScheduledAction {
        ScheduledAction {
            name: "night".into(),
            arn: String::new(),
            start_time: start,
            end_time: None,
            recurrence: recurrence.map(str::to_owned),
            min_size: None,
            max_size: None,
            desired_capacity: Some(1),
            next_run: None,
        }
    }

    #[test]
    fn actions_fire_once_or_on_their_schedule_until_their_end() {
        let once = action(Some(NOON + 30), None).checked(NOON).unwrap();
        assert_eq!(once.next_run, Some(NOON + 30));
        assert!(!once.due(NOON + 29) && once.due(NOON + 30));
        let mut fired = once.clone();
        fired.advance(NOON + 30);
        assert_eq!(fired.next_run, None, "a one-off action is done");

        let mut hourly = ScheduledAction { end_time: Some(NOON + 7200), ..action(None, Some("0 * * * *")) }
            .checked(NOON + 10)
            .unwrap();
        assert_eq!(hourly.next_run, Some(NOON + 3600));
        hourly.advance(NOON + 3600);
        assert_eq!(hourly.next_run, Some(NOON + 7200));
        hourly.advance(NOON + 7200);
        assert_eq!(hourly.next_run, None, "past its end");

        let starting = action(Some(NOON + 7200), Some("0 * * * *")).checked(NOON).unwrap();
        assert_eq!(starting.next_run, Some(NOON + 7200), "from its start time on");

        let refused = [
            action(None, None),
            action(Some(NOON - 1), None),
            action(None, Some("bad")),
            ScheduledAction { desired_capacity: None, ..action(Some(NOON + 1), None) },
            ScheduledAction { min_size: Some(3), max_size: Some(1), ..action(Some(NOON + 1), None) },
            ScheduledAction { end_time: Some(NOON + 1), ..action(Some(NOON + 2), None) },
            ScheduledAction { name: String::new(), ..action(Some(NOON + 1), None) },
        ];
        for bad in refused {
            assert!(bad.clone().checked(NOON).is_err(), "{bad:?}");
        }
    }
}
