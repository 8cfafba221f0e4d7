//! The proleptic Gregorian calendar in UTC, in plain numbers: the VMM's real-time clock
//! shows it to guests, Auto Scaling's schedules fire on it, and the CLI reads and writes
//! times as AWS spells them (`2026-12-03T12:00:00Z`).

/// A broken-down UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// The year.
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    /// 0 to 59.
    pub minute: u32,
    /// 0 to 59.
    pub second: u32,
}

/// Days since 1970-01-01 of a date (month 1..=12, day 1..=31).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years start in March, so the leap day is the last day of the shifted year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of day `days` since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    // Both within their ranges by construction.
    let day = u32::try_from(day_of_year - (153 * shifted_month + 2) / 5 + 1).unwrap_or(1);
    let month =
        u32::try_from(if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 }).unwrap_or(1);
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// 0 (Sunday) to 6 of day `days` since 1970-01-01, a Thursday.
pub fn weekday(days: i64) -> u32 {
    u32::try_from((days + 4).rem_euclid(7)).unwrap_or(0)
}

/// The days of `month` in `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl DateTime {
    /// The time `seconds` after the epoch.
    pub fn from_unix(seconds: i64) -> Self {
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let of_day = u32::try_from(seconds.rem_euclid(86_400)).unwrap_or(0);
        Self { year, month, day, hour: of_day / 3600, minute: of_day / 60 % 60, second: of_day % 60 }
    }

    /// Seconds since the epoch, or None when a field is out of its range.
    pub fn to_unix(self) -> Option<i64> {
        let valid = (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        valid.then(|| {
            days_from_civil(self.year, self.month, self.day) * 86_400
                + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
        })
    }
}

/// `seconds` since the epoch as ISO 8601 in UTC: `2026-12-03T12:00:00Z`.
pub fn format_utc(seconds: u64) -> String {
    let t = DateTime::from_unix(i64::try_from(seconds).unwrap_or(i64::MAX));
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

/// Reads `2026-12-03T12:00:00Z` (seconds optional; `Z` or `+00:00`), as the aws CLI
/// writes times, into seconds since the epoch.
pub fn parse_utc(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<u32>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut time = time.splitn(3, ':').map(str::parse::<u32>);
    let (hour, minute) = (time.next()?.ok()?, time.next()?.ok()?);
    let second = time.next().transpose().ok()?.unwrap_or(0);
    let t = DateTime { year: i64::from(year), month, day, hour, minute, second };
    u64::try_from(t.to_unix()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for seconds in [0, 951_782_400, 1_709_164_800, 1_796_299_200, 4_107_542_400, -86_400, 253_402_300_799]
        {
            let time = DateTime::from_unix(seconds);
            assert_eq!(time.to_unix(), Some(seconds), "{time:?}");
        }
        assert_eq!(
            DateTime::from_unix(951_782_400),
            DateTime { year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0 }
        );
        assert_eq!(weekday(1_796_299_200 / 86_400), 4, "2026-12-03 is a Thursday");
        assert_eq!(DateTime { year: 2023, month: 2, day: 29, hour: 0, minute: 0, second: 0 }.to_unix(), None);
    }

    #[test]
    fn times_read_and_write_as_aws_spells_them() {
        assert_eq!(format_utc(1_796_299_200), "2026-12-03T12:00:00Z");
        assert_eq!(parse_utc("2026-12-03T12:00:00Z"), Some(1_796_299_200));
        assert_eq!(parse_utc("2026-12-03T12:00Z"), Some(1_796_299_200));
        assert_eq!(parse_utc("2026-12-03T12:00:05+00:00"), Some(1_796_299_205));
        for bad in [
            "",
            "2026-12-03",
            "2026-12-03T12:00:00",
            "2026-02-30T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "x-1-1T0:0Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }
}
