//! Calendar arithmetic in a time zone: local days, weeks (Monday first), months, parts of a day,
//! turned into unix-ms bounds. DST-safe: a local time that does not exist (spring forward) is
//! taken an hour later, an ambiguous one (fall back) at its first occurrence.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

/// Parts of a day, as local hours `[from, to)` (to may pass midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Morning,
    Afternoon,
    Evening,
    Night,
}

impl Part {
    pub fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "morning" => Part::Morning,
            "afternoon" => Part::Afternoon,
            "evening" => Part::Evening,
            "night" => Part::Night,
            _ => return None,
        })
    }

    fn hours(self) -> (i64, i64) {
        match self {
            Part::Morning => (5, 12),
            Part::Afternoon => (12, 18),
            Part::Evening => (18, 24),
            Part::Night => (18, 30),
        }
    }
}

/// The calendar around "now" in one zone.
#[derive(Debug, Clone, Copy)]
pub struct Calendar {
    pub tz: Tz,
    pub now_ms: i64,
    pub today: NaiveDate,
}

impl Calendar {
    pub fn new(now_ms: i64, tz: Tz) -> Option<Self> {
        let now = tz.timestamp_millis_opt(now_ms).single()?;
        Some(Self {
            tz,
            now_ms,
            today: now.date_naive(),
        })
    }

    /// Unix ms of a local wall time.
    pub fn local_ms(&self, t: NaiveDateTime) -> i64 {
        match self.tz.from_local_datetime(&t).earliest() {
            Some(d) => d.timestamp_millis(),
            // In a DST gap: the same wall time an hour later exists.
            None => self
                .tz
                .from_local_datetime(&(t + Duration::hours(1)))
                .earliest()
                .map_or(t.and_utc().timestamp_millis(), |d| d.timestamp_millis()),
        }
    }

    /// Unix ms of a local midnight.
    pub fn day_start(&self, d: NaiveDate) -> i64 {
        self.local_ms(d.and_time(NaiveTime::MIN))
    }

    /// `[d, d + days)`.
    pub fn days(&self, d: NaiveDate, days: i64) -> (i64, i64) {
        (self.day_start(d), self.day_start(d + Duration::days(days)))
    }

    pub fn today_plus(&self, days: i64) -> NaiveDate {
        self.today + Duration::days(days)
    }

    pub fn part(&self, d: NaiveDate, part: Part) -> (i64, i64) {
        let (a, b) = part.hours();
        let at = |h: i64| self.local_ms(d.and_time(NaiveTime::MIN) + Duration::hours(h));
        (at(a), at(b))
    }

    /// Monday of the week holding `d`.
    pub fn week_start(d: NaiveDate) -> NaiveDate {
        d - Duration::days(d.weekday().num_days_from_monday() as i64)
    }

    /// The calendar month `back` months before the current one: `[first, first of next)`.
    pub fn month(&self, year: i32, month: u32) -> Option<(i64, i64)> {
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let (ny, nm) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        let next = NaiveDate::from_ymd_opt(ny, nm, 1)?;
        Some((self.day_start(first), self.day_start(next)))
    }

    /// `(year, month)` of the month `back` months before the current one.
    pub fn month_back(&self, back: i64) -> (i32, u32) {
        let idx = self.today.year() as i64 * 12 + self.today.month0() as i64 - back;
        (idx.div_euclid(12) as i32, idx.rem_euclid(12) as u32 + 1)
    }

    pub fn year(&self, year: i32) -> Option<(i64, i64)> {
        let a = NaiveDate::from_ymd_opt(year, 1, 1)?;
        let b = NaiveDate::from_ymd_opt(year + 1, 1, 1)?;
        Some((self.day_start(a), self.day_start(b)))
    }
}
