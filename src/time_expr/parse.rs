//! The rules: a query is split into lower-case words with their byte offsets, and at each word
//! the patterns are tried longest first; the first word that starts a time expression wins.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use chrono_tz::Tz;

use super::TimeExpr;
use super::window::{Calendar, Part};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

struct Word {
    w: String,
    start: usize,
    end: usize,
}

/// Words of `text`: runs of letters, digits, `'` and `-`; a trailing `'s` is dropped ("today's").
fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    let is_word = |c: char| c.is_alphanumeric() || c == '\'' || c == '’' || c == '-';
    let push = |s: usize, e: usize, out: &mut Vec<Word>| {
        let raw = &text[s..e];
        let trimmed = raw.trim_matches(|c| c == '\'' || c == '’' || c == '-');
        if trimmed.is_empty() {
            return;
        }
        let offset = raw.find(trimmed).unwrap_or(0);
        let mut w = trimmed.to_lowercase();
        for suffix in ["'s", "’s"] {
            if let Some(stem) = w.strip_suffix(suffix) {
                w = stem.to_string();
            }
        }
        out.push(Word {
            w,
            start: s + offset,
            end: s + offset + trimmed.len(),
        });
    };
    for (i, c) in text.char_indices() {
        match (is_word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                push(s, i, &mut out);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        push(s, text.len(), &mut out);
    }
    out
}

/// The first time expression of `query`, read at `now_ms` in `tz`; `None` when it has none.
pub fn find(query: &str, now_ms: i64, tz: Tz) -> Option<TimeExpr> {
    let cal = Calendar::new(now_ms, tz)?;
    let ws = words(query);
    let p = Parser { cal, ws: &ws };
    for i in 0..ws.len() {
        if let Some((len, (start_ms, end_ms))) = p.at(i) {
            let (a, b) = (ws[i].start, ws[i + len - 1].end);
            return Some(TimeExpr {
                start_ms,
                end_ms,
                span: (a, b),
                phrase: query[a..b].to_string(),
            });
        }
    }
    None
}

type Window = (i64, i64);

struct Parser<'a> {
    cal: Calendar,
    ws: &'a [Word],
}

impl Parser<'_> {
    fn w(&self, i: usize) -> &str {
        self.ws.get(i).map_or("", |w| w.w.as_str())
    }

    fn words_are(&self, i: usize, seq: &[&str]) -> bool {
        seq.iter().enumerate().all(|(k, s)| self.w(i + k) == *s)
    }

    /// The expression starting at word `i`: its length in words and its window.
    fn at(&self, i: usize) -> Option<(usize, Window)> {
        let w = self.w(i);
        match w {
            "since" => {
                let (len, (start, _)) = self
                    .simple(i + 1)
                    .or_else(|| weekday(self.w(i + 1)).map(|wd| self.weekday_phrase(i + 1, wd, 0)))
                    .or_else(|| self.month_phrase(i + 1, false))?;
                return Some((len + 1, (start, self.cal.now_ms)));
            }
            "earlier" => {
                if self.w(i + 1) == "today" {
                    let start = self.cal.day_start(self.cal.today);
                    return Some((2, (start, self.cal.now_ms)));
                }
                if self.w(i + 1) == "this"
                    && let Some(unit) = Unit::calendar(self.w(i + 2))
                {
                    let (start, _) = self.this(unit);
                    return Some((3, (start, self.cal.now_ms)));
                }
                return None;
            }
            "in" | "over" | "during" | "within" if self.w(i + 1) == "the" => {
                if let Some(r) = self.last_n(i + 2) {
                    return Some((r.0 + 2, r.1));
                }
            }
            "back" if self.w(i + 1) == "in" => {
                let (len, win) = self.month_phrase(i + 2, false)?;
                return Some((len + 2, win));
            }
            _ => {}
        }
        if matches!(w, "the" | "for" | "about" | "around" | "roughly" | "like")
            && let Some(r) = self.last_n(i + 1).or_else(|| self.ago(i + 1))
        {
            return Some((r.0 + 1, r.1));
        }
        self.simple(i)
    }

    /// Expressions that may follow "since".
    fn simple(&self, i: usize) -> Option<(usize, Window)> {
        let cal = &self.cal;
        let w = self.w(i);
        match w {
            "today" => return Some((1, cal.days(cal.today, 1))),
            "tonight" => return Some((1, cal.part(cal.today, Part::Night))),
            "yesterday" => {
                let d = cal.today_plus(-1);
                if let Some(part) = Part::from_word(self.w(i + 1)) {
                    return Some((2, cal.part(d, part)));
                }
                return Some((1, cal.days(d, 1)));
            }
            "just" if self.w(i + 1) == "now" => {
                return Some((2, (cal.now_ms - 30 * MINUTE, cal.now_ms)));
            }
            "the" => {
                if self.words_are(i + 1, &["day", "before", "yesterday"]) {
                    return Some((4, cal.days(cal.today_plus(-2), 1)));
                }
                if self.words_are(i + 1, &["other", "day"]) {
                    let start = cal.day_start(cal.today_plus(-7));
                    return Some((3, (start, cal.day_start(cal.today))));
                }
                if self.words_are(i + 1, &["week", "before", "last"]) {
                    let mon = Calendar::week_start(cal.today) - Duration::days(14);
                    return Some((4, cal.days(mon, 7)));
                }
                if self.w(i + 1) == "weekend" {
                    return Some((2, self.weekend(false)));
                }
                return None;
            }
            "this" | "last" | "previous" | "past" => {
                return self.modified(i);
            }
            "on" | "at" | "over" => {
                if self.words_are(i + 1, &["the", "weekend"]) {
                    return Some((3, self.weekend(false)));
                }
                if w == "on" {
                    if let Some(wd) = weekday(self.w(i + 1)) {
                        return Some(self.weekday_phrase(i + 1, wd, 1));
                    }
                    if self.w(i + 1) == "the" {
                        // "on the 3rd", "on the 3rd of March"
                        let (len, win) = self.day_of_month(i + 2)?;
                        return Some((len + 2, win));
                    }
                    let (len, win) = self.dated(i + 1)?;
                    return Some((len + 1, win));
                }
                return None;
            }
            "in" | "during" => {
                if let Some(y) = year(self.w(i + 1)) {
                    return Some((2, cal.year(y)?));
                }
                let (len, win) = self.month_phrase(i + 1, false)?;
                return Some((len + 1, win));
            }
            _ => {}
        }
        if let Some(wd) = weekday(w) {
            // A bare weekday is time only with a part of the day ("Friday the cat" is not).
            if Part::from_word(self.w(i + 1)).is_some() {
                return Some(self.weekday_phrase(i, wd, 0));
            }
            return None;
        }
        if let Some(r) = self.ago(i) {
            return Some(r);
        }
        // "March 3rd", "3 March", ISO dates: a day number makes a month name time.
        self.dated(i)
    }

    /// "this|last|previous|past ..." at `i`.
    fn modified(&self, i: usize) -> Option<(usize, Window)> {
        let cal = &self.cal;
        let m = self.w(i);
        // "this past week" reads as "last week".
        let (m, skip) = if m == "this" && self.w(i + 1) == "past" {
            ("last", 1)
        } else {
            (m, 0)
        };
        let j = i + 1 + skip;
        let next = self.w(j);
        if m == "this" {
            if let Some(part) = Part::from_word(next)
                && part != Part::Night
            {
                return Some((2 + skip, cal.part(cal.today, part)));
            }
            if next == "weekend" {
                return Some((2 + skip, self.weekend(false)));
            }
            if let Some(unit) = Unit::calendar(next) {
                return Some((2 + skip, self.this(unit)));
            }
            if let Some(wd) = weekday(next) {
                let d = Calendar::week_start(cal.today)
                    + Duration::days(wd.num_days_from_monday() as i64);
                return Some((2 + skip, cal.days(d, 1)));
            }
            return None;
        }
        // last / previous / past
        if next == "night" && m == "last" {
            return Some((2 + skip, cal.part(cal.today_plus(-1), Part::Night)));
        }
        if next == "weekend" {
            return Some((2 + skip, self.weekend(true)));
        }
        if let Some(unit) = Unit::calendar(next) {
            let (a, b) = self.this(unit);
            let win = match unit {
                Unit::Week => {
                    let mon = Calendar::week_start(cal.today) - Duration::days(7);
                    cal.days(mon, 7)
                }
                Unit::Month => {
                    let (y, mo) = cal.month_back(1);
                    cal.month(y, mo)?
                }
                Unit::Year => cal.year(cal.today.year() - 1)?,
                _ => (a, b),
            };
            return Some((2 + skip, win));
        }
        if let Some(wd) = weekday(next) {
            return Some(self.weekday_phrase(j, wd, 1 + skip));
        }
        if m == "last" {
            let (len, win) = self.month_phrase(j, true)?;
            return Some((len + 1 + skip, win));
        }
        None
    }

    /// The current week, month or year: `[start, end)` of the calendar unit.
    fn this(&self, unit: Unit) -> Window {
        let cal = &self.cal;
        match unit {
            Unit::Month => {
                let (y, m) = cal.month_back(0);
                cal.month(y, m).unwrap_or((cal.now_ms, cal.now_ms))
            }
            Unit::Year => cal
                .year(cal.today.year())
                .unwrap_or((cal.now_ms, cal.now_ms)),
            _ => cal.days(Calendar::week_start(cal.today), 7),
        }
    }

    /// The most recent weekend (Saturday and Sunday): the current one if today is in it, unless
    /// `before` (then the one before it).
    fn weekend(&self, before: bool) -> Window {
        let cal = &self.cal;
        let dow = cal.today.weekday().num_days_from_monday() as i64; // Mon 0 .. Sun 6
        let mut sat = cal.today - Duration::days(dow - 5);
        if sat > cal.today || (before && dow >= 5) {
            sat -= Duration::days(7);
        }
        cal.days(sat, 2)
    }

    /// A weekday at word `i` (with `before` words already taken): the most recent such day
    /// before today, or a part of it ("Monday morning").
    fn weekday_phrase(&self, i: usize, wd: Weekday, before: usize) -> (usize, Window) {
        let cal = &self.cal;
        let back = (cal.today.weekday().num_days_from_monday() as i64
            - wd.num_days_from_monday() as i64)
            .rem_euclid(7);
        let d = cal.today_plus(-if back == 0 { 7 } else { back });
        match Part::from_word(self.w(i + 1)) {
            Some(part) => (before + 2, cal.part(d, part)),
            None => (before + 1, cal.days(d, 1)),
        }
    }

    /// "(the) last|past N units" at `i` (without "in the"): `[now - N units, now)`, whole days
    /// for days and longer.
    fn last_n(&self, i: usize) -> Option<(usize, Window)> {
        if !matches!(self.w(i), "last" | "past") {
            return None;
        }
        let (n, nlen) = count(self, i + 1).unwrap_or((1, 0));
        let unit = Unit::from_word(self.w(i + 1 + nlen))?;
        if nlen == 0 && self.w(i + 1).ends_with('s') {
            // "the past days": no number, no window.
            return None;
        }
        let cal = &self.cal;
        let start = match unit {
            Unit::Minute => cal.now_ms - n * MINUTE,
            Unit::Hour => cal.now_ms - n * HOUR,
            Unit::Day => cal.day_start(cal.today_plus(-n)),
            Unit::Week => cal.day_start(cal.today_plus(-7 * n)),
            Unit::Month => {
                let (y, m) = cal.month_back(n);
                let d = NaiveDate::from_ymd_opt(y, m, cal.today.day().min(28))?;
                cal.day_start(d)
            }
            Unit::Year => {
                let d = NaiveDate::from_ymd_opt(cal.today.year() - n as i32, 1, 1)?;
                cal.day_start(d.with_ordinal(cal.today.ordinal().min(365))?)
            }
        };
        Some((2 + nlen, (start, cal.now_ms)))
    }

    /// "N units ago" at `i`.
    fn ago(&self, i: usize) -> Option<(usize, Window)> {
        let cal = &self.cal;
        if self.words_are(i, &["a", "moment", "ago"]) {
            return Some((3, (cal.now_ms - 30 * MINUTE, cal.now_ms)));
        }
        if self.words_are(i, &["a", "few"]) {
            let unit = Unit::from_word(self.w(i + 2))?;
            if self.w(i + 3) != "ago" {
                return None;
            }
            let win = match unit {
                Unit::Minute => (cal.now_ms - 30 * MINUTE, cal.now_ms),
                Unit::Hour => (cal.now_ms - 6 * HOUR, cal.now_ms - HOUR),
                Unit::Day => (
                    cal.day_start(cal.today_plus(-5)),
                    cal.day_start(cal.today_plus(-1)),
                ),
                Unit::Week => (
                    cal.day_start(cal.today_plus(-35)),
                    cal.day_start(cal.today_plus(-14)),
                ),
                Unit::Month => {
                    let (y0, m0) = cal.month_back(5);
                    let (y1, m1) = cal.month_back(1);
                    (cal.month(y0, m0)?.0, cal.month(y1, m1)?.0)
                }
                Unit::Year => return None,
            };
            return Some((4, win));
        }
        let (n, nlen) = count(self, i)?;
        let unit = Unit::from_word(self.w(i + nlen))?;
        if self.w(i + nlen + 1) != "ago" {
            return None;
        }
        let len = nlen + 2;
        let win = match unit {
            Unit::Minute => (cal.now_ms - 2 * n * MINUTE, cal.now_ms),
            Unit::Hour => (
                cal.now_ms - (n + 1) * HOUR,
                (cal.now_ms - (n - 1) * HOUR).min(cal.now_ms),
            ),
            Unit::Day => cal.days(cal.today_plus(-n), 1),
            // A week centred on the day N weeks back.
            Unit::Week => cal.days(cal.today_plus(-7 * n - 3), 7),
            Unit::Month => {
                let (y, m) = cal.month_back(n);
                cal.month(y, m)?
            }
            Unit::Year => cal.year(cal.today.year() - n as i32)?,
        };
        Some((len, win))
    }

    /// A month name at `i`, with an optional year: the most recent such month up to now
    /// (`strictly_before`: before the current month).
    fn month_phrase(&self, i: usize, strictly_before: bool) -> Option<(usize, Window)> {
        let cal = &self.cal;
        let (i, early_late) = match self.w(i) {
            "early" => (i + 1, Some(true)),
            "late" => (i + 1, Some(false)),
            _ => (i, None),
        };
        let extra = usize::from(early_late.is_some());
        let month = month(self.w(i))?;
        let (year, len) = match year(self.w(i + 1)) {
            Some(y) => (y, 2),
            None => {
                let this = cal.today.month();
                let y = if month < this || (month == this && !strictly_before) {
                    cal.today.year()
                } else {
                    cal.today.year() - 1
                };
                (y, 1)
            }
        };
        let (a, b) = cal.month(year, month)?;
        let win = match early_late {
            None => (a, b),
            Some(true) => {
                let d = NaiveDate::from_ymd_opt(year, month, 11)?;
                (a, cal.day_start(d))
            }
            Some(false) => {
                let d = NaiveDate::from_ymd_opt(year, month, 21)?;
                (cal.day_start(d), b)
            }
        };
        Some((len + extra, win))
    }

    /// A date at `i`: "March 3(rd)( 2025)", "3(rd) (of) March( 2025)", "2026-03-03".
    fn dated(&self, i: usize) -> Option<(usize, Window)> {
        let cal = &self.cal;
        let w = self.w(i);
        if let Some(d) = iso_date(w) {
            return Some((1, cal.days(d, 1)));
        }
        if let Some(m) = month(w)
            && let Some(day) = day_number(self.w(i + 1))
        {
            let (d, ylen) = self.resolve(m, day, i + 2)?;
            return Some((2 + ylen, cal.days(d, 1)));
        }
        if let Some(day) = day_number(w) {
            let of = usize::from(self.w(i + 1) == "of");
            if let Some(m) = month(self.w(i + 1 + of)) {
                let (d, ylen) = self.resolve(m, day, i + 2 + of)?;
                return Some((2 + of + ylen, cal.days(d, 1)));
            }
        }
        None
    }

    /// "3rd (of March)" after "on the": a day of the current (or previous) month if no month.
    fn day_of_month(&self, i: usize) -> Option<(usize, Window)> {
        let cal = &self.cal;
        let day = day_number(self.w(i))?;
        if !self.w(i).ends_with(|c: char| c.is_alphabetic()) {
            // "on the 3" is not a date; "on the 3rd" is.
            return None;
        }
        if let Some(r) = self.dated(i) {
            return Some(r);
        }
        let (y, m) = cal.month_back(0);
        let mut d = NaiveDate::from_ymd_opt(y, m, day);
        if d.is_none_or(|d| d > cal.today) {
            let (y, m) = cal.month_back(1);
            d = NaiveDate::from_ymd_opt(y, m, day);
        }
        Some((1, cal.days(d?, 1)))
    }

    /// A month and day with an optional year at `year_at`: the most recent such date up to
    /// today when no year is given.
    fn resolve(&self, month: u32, day: u32, year_at: usize) -> Option<(NaiveDate, usize)> {
        let cal = &self.cal;
        if let Some(y) = year(self.w(year_at)) {
            return Some((NaiveDate::from_ymd_opt(y, month, day)?, 1));
        }
        let this = NaiveDate::from_ymd_opt(cal.today.year(), month, day);
        match this {
            Some(d) if d <= cal.today => Some((d, 0)),
            _ => Some((
                NaiveDate::from_ymd_opt(cal.today.year() - 1, month, day)?,
                0,
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "minute" | "minutes" | "min" | "mins" => Unit::Minute,
            "hour" | "hours" => Unit::Hour,
            "day" | "days" => Unit::Day,
            "week" | "weeks" => Unit::Week,
            "month" | "months" => Unit::Month,
            "year" | "years" => Unit::Year,
            _ => return None,
        })
    }

    /// Week, month or year in the singular ("this week").
    fn calendar(w: &str) -> Option<Self> {
        match w {
            "week" => Some(Unit::Week),
            "month" => Some(Unit::Month),
            "year" => Some(Unit::Year),
            _ => None,
        }
    }
}

/// A count at `i`: digits, a number word, "a"/"an", "a couple of": `(n, words)`.
fn count(p: &Parser, i: usize) -> Option<(i64, usize)> {
    let w = p.w(i);
    if p.words_are(i, &["a", "couple", "of"]) {
        return Some((2, 3));
    }
    if p.words_are(i, &["a", "couple"]) {
        return Some((2, 2));
    }
    let n = match w {
        "a" | "an" | "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "fifteen" => 15,
        "twenty" => 20,
        "thirty" => 30,
        _ if !w.is_empty() && w.len() <= 3 && w.bytes().all(|b| b.is_ascii_digit()) => {
            w.parse().ok()?
        }
        _ => return None,
    };
    (n > 0).then_some((n, 1))
}

fn weekday(w: &str) -> Option<Weekday> {
    Some(match w {
        "monday" => Weekday::Mon,
        "tuesday" => Weekday::Tue,
        "wednesday" => Weekday::Wed,
        "thursday" => Weekday::Thu,
        "friday" => Weekday::Fri,
        "saturday" => Weekday::Sat,
        "sunday" => Weekday::Sun,
        _ => return None,
    })
}

fn month(w: &str) -> Option<u32> {
    Some(match w {
        "january" | "jan" => 1,
        "february" | "feb" => 2,
        "march" | "mar" => 3,
        "april" | "apr" => 4,
        "may" => 5,
        "june" | "jun" => 6,
        "july" | "jul" => 7,
        "august" | "aug" => 8,
        "september" | "sep" | "sept" => 9,
        "october" | "oct" => 10,
        "november" | "nov" => 11,
        "december" | "dec" => 12,
        _ => return None,
    })
}

/// "3", "3rd", "21st": a day of a month.
fn day_number(w: &str) -> Option<u32> {
    let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &w[digits.len()..];
    if digits.is_empty() || digits.len() > 2 || !matches!(suffix, "" | "st" | "nd" | "rd" | "th") {
        return None;
    }
    let d: u32 = digits.parse().ok()?;
    (1..=31).contains(&d).then_some(d)
}

/// A four-digit year from 1900 to 2199.
fn year(w: &str) -> Option<i32> {
    if w.len() != 4 || !w.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = w.parse().ok()?;
    (1900..2200).contains(&y).then_some(y)
}

/// "2026-03-03".
fn iso_date(w: &str) -> Option<NaiveDate> {
    if w.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(w, "%Y-%m-%d").ok()
}
