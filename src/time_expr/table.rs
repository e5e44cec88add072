//! The phrasings table: each query with its exact window, read at one fixed "now"
//! (Wednesday 2026-03-18 15:30, Europe/Berlin, UTC+1 until DST on 29 March), expected bounds
//! written as local wall times and converted by chrono-tz (not by the parser's calendar code).

use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use super::find;

const NOW: &str = "2026-03-18 15:30";
const ZONE: Tz = chrono_tz::Europe::Berlin;

fn ms(local: &str, tz: Tz) -> i64 {
    let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M")
        .unwrap_or_else(|e| panic!("bad table time {local:?}: {e}"));
    tz.from_local_datetime(&t)
        .earliest()
        .unwrap_or_else(|| panic!("{local} does not exist in {tz}"))
        .timestamp_millis()
}

/// (query, expected phrase, start, end); "" start means "not time".
const TABLE: &[(&str, &str, &str, &str)] = &[
    // days
    (
        "what did I tell you yesterday?",
        "yesterday",
        "2026-03-17 00:00",
        "2026-03-18 00:00",
    ),
    (
        "Yesterday, I told you about the vet",
        "Yesterday",
        "2026-03-17 00:00",
        "2026-03-18 00:00",
    ),
    (
        "yesterday morning",
        "yesterday morning",
        "2026-03-17 05:00",
        "2026-03-17 12:00",
    ),
    (
        "what did we discuss yesterday afternoon",
        "yesterday afternoon",
        "2026-03-17 12:00",
        "2026-03-17 18:00",
    ),
    (
        "yesterday evening at dinner",
        "yesterday evening",
        "2026-03-17 18:00",
        "2026-03-18 00:00",
    ),
    (
        "what did I say last night",
        "last night",
        "2026-03-17 18:00",
        "2026-03-18 06:00",
    ),
    (
        "what's on today",
        "today",
        "2026-03-18 00:00",
        "2026-03-19 00:00",
    ),
    (
        "today's appointment",
        "today's",
        "2026-03-18 00:00",
        "2026-03-19 00:00",
    ),
    (
        "what did I say earlier today",
        "earlier today",
        "2026-03-18 00:00",
        NOW,
    ),
    (
        "this morning I mentioned a recipe",
        "this morning",
        "2026-03-18 05:00",
        "2026-03-18 12:00",
    ),
    (
        "this afternoon",
        "this afternoon",
        "2026-03-18 12:00",
        "2026-03-18 18:00",
    ),
    (
        "plans for this evening",
        "this evening",
        "2026-03-18 18:00",
        "2026-03-19 00:00",
    ),
    (
        "what are we doing tonight",
        "tonight",
        "2026-03-18 18:00",
        "2026-03-19 06:00",
    ),
    (
        "the day before yesterday",
        "the day before yesterday",
        "2026-03-16 00:00",
        "2026-03-17 00:00",
    ),
    (
        "what did I say two days ago",
        "two days ago",
        "2026-03-16 00:00",
        "2026-03-17 00:00",
    ),
    (
        "3 days ago",
        "3 days ago",
        "2026-03-15 00:00",
        "2026-03-16 00:00",
    ),
    (
        "a day ago",
        "a day ago",
        "2026-03-17 00:00",
        "2026-03-18 00:00",
    ),
    (
        "one day ago",
        "one day ago",
        "2026-03-17 00:00",
        "2026-03-18 00:00",
    ),
    (
        "a couple of days ago",
        "a couple of days ago",
        "2026-03-16 00:00",
        "2026-03-17 00:00",
    ),
    (
        "a couple days ago",
        "a couple days ago",
        "2026-03-16 00:00",
        "2026-03-17 00:00",
    ),
    (
        "a few days ago you said",
        "a few days ago",
        "2026-03-13 00:00",
        "2026-03-17 00:00",
    ),
    (
        "ten days ago",
        "ten days ago",
        "2026-03-08 00:00",
        "2026-03-09 00:00",
    ),
    (
        "12 days ago",
        "12 days ago",
        "2026-03-06 00:00",
        "2026-03-07 00:00",
    ),
    (
        "about two weeks ago",
        "about two weeks ago",
        "2026-03-01 00:00",
        "2026-03-08 00:00",
    ),
    (
        "around 3 days ago",
        "around 3 days ago",
        "2026-03-15 00:00",
        "2026-03-16 00:00",
    ),
    (
        "the other day I mentioned",
        "the other day",
        "2026-03-11 00:00",
        "2026-03-18 00:00",
    ),
    // weeks, months, years ago
    (
        "a week ago",
        "a week ago",
        "2026-03-08 00:00",
        "2026-03-15 00:00",
    ),
    (
        "two weeks ago",
        "two weeks ago",
        "2026-03-01 00:00",
        "2026-03-08 00:00",
    ),
    (
        "a few weeks ago",
        "a few weeks ago",
        "2026-02-11 00:00",
        "2026-03-04 00:00",
    ),
    (
        "a month ago",
        "a month ago",
        "2026-02-01 00:00",
        "2026-03-01 00:00",
    ),
    (
        "two months ago",
        "two months ago",
        "2026-01-01 00:00",
        "2026-02-01 00:00",
    ),
    (
        "three months ago",
        "three months ago",
        "2025-12-01 00:00",
        "2026-01-01 00:00",
    ),
    (
        "a year ago",
        "a year ago",
        "2025-01-01 00:00",
        "2026-01-01 00:00",
    ),
    // hours and minutes
    ("an hour ago", "an hour ago", "2026-03-18 13:30", NOW),
    (
        "3 hours ago",
        "3 hours ago",
        "2026-03-18 11:30",
        "2026-03-18 13:30",
    ),
    (
        "five minutes ago",
        "five minutes ago",
        "2026-03-18 15:20",
        NOW,
    ),
    (
        "a few minutes ago",
        "a few minutes ago",
        "2026-03-18 15:00",
        NOW,
    ),
    ("a moment ago", "a moment ago", "2026-03-18 15:00", NOW),
    (
        "what did I just now say",
        "just now",
        "2026-03-18 15:00",
        NOW,
    ),
    // calendar weeks (Monday first), months, years
    (
        "this week",
        "this week",
        "2026-03-16 00:00",
        "2026-03-23 00:00",
    ),
    (
        "earlier this week",
        "earlier this week",
        "2026-03-16 00:00",
        NOW,
    ),
    (
        "the appointment I mentioned last week",
        "last week",
        "2026-03-09 00:00",
        "2026-03-16 00:00",
    ),
    (
        "the week before last",
        "the week before last",
        "2026-03-02 00:00",
        "2026-03-09 00:00",
    ),
    (
        "the previous week",
        "previous week",
        "2026-03-09 00:00",
        "2026-03-16 00:00",
    ),
    (
        "this past week",
        "this past week",
        "2026-03-09 00:00",
        "2026-03-16 00:00",
    ),
    (
        "this month",
        "this month",
        "2026-03-01 00:00",
        "2026-04-01 00:00",
    ),
    (
        "earlier this month",
        "earlier this month",
        "2026-03-01 00:00",
        NOW,
    ),
    (
        "last month",
        "last month",
        "2026-02-01 00:00",
        "2026-03-01 00:00",
    ),
    (
        "this year",
        "this year",
        "2026-01-01 00:00",
        "2027-01-01 00:00",
    ),
    (
        "earlier this year",
        "earlier this year",
        "2026-01-01 00:00",
        NOW,
    ),
    (
        "last year",
        "last year",
        "2025-01-01 00:00",
        "2026-01-01 00:00",
    ),
    ("in 2025", "in 2025", "2025-01-01 00:00", "2026-01-01 00:00"),
    // weekends (Saturday and Sunday)
    (
        "last weekend",
        "last weekend",
        "2026-03-14 00:00",
        "2026-03-16 00:00",
    ),
    (
        "this weekend",
        "this weekend",
        "2026-03-14 00:00",
        "2026-03-16 00:00",
    ),
    (
        "over the weekend",
        "over the weekend",
        "2026-03-14 00:00",
        "2026-03-16 00:00",
    ),
    (
        "at the weekend",
        "at the weekend",
        "2026-03-14 00:00",
        "2026-03-16 00:00",
    ),
    (
        "on the weekend",
        "on the weekend",
        "2026-03-14 00:00",
        "2026-03-16 00:00",
    ),
    (
        "what did we do the weekend",
        "the weekend",
        "2026-03-14 00:00",
        "2026-03-16 00:00",
    ),
    // weekdays: the most recent one before today
    (
        "on Monday",
        "on Monday",
        "2026-03-16 00:00",
        "2026-03-17 00:00",
    ),
    (
        "on Tuesday",
        "on Tuesday",
        "2026-03-17 00:00",
        "2026-03-18 00:00",
    ),
    (
        "on Wednesday",
        "on Wednesday",
        "2026-03-11 00:00",
        "2026-03-12 00:00",
    ),
    (
        "on Thursday",
        "on Thursday",
        "2026-03-12 00:00",
        "2026-03-13 00:00",
    ),
    (
        "what did I say on Friday",
        "on Friday",
        "2026-03-13 00:00",
        "2026-03-14 00:00",
    ),
    (
        "on Saturday",
        "on Saturday",
        "2026-03-14 00:00",
        "2026-03-15 00:00",
    ),
    (
        "on sunday",
        "on sunday",
        "2026-03-15 00:00",
        "2026-03-16 00:00",
    ),
    (
        "last Friday",
        "last Friday",
        "2026-03-13 00:00",
        "2026-03-14 00:00",
    ),
    (
        "last Monday",
        "last Monday",
        "2026-03-16 00:00",
        "2026-03-17 00:00",
    ),
    (
        "this Monday",
        "this Monday",
        "2026-03-16 00:00",
        "2026-03-17 00:00",
    ),
    (
        "this Friday",
        "this Friday",
        "2026-03-20 00:00",
        "2026-03-21 00:00",
    ),
    (
        "Monday morning",
        "Monday morning",
        "2026-03-16 05:00",
        "2026-03-16 12:00",
    ),
    (
        "on Friday evening",
        "on Friday evening",
        "2026-03-13 18:00",
        "2026-03-14 00:00",
    ),
    (
        "last Tuesday afternoon",
        "last Tuesday afternoon",
        "2026-03-17 12:00",
        "2026-03-17 18:00",
    ),
    (
        "Sunday night",
        "Sunday night",
        "2026-03-15 18:00",
        "2026-03-16 06:00",
    ),
    // since
    ("since Monday", "since Monday", "2026-03-16 00:00", NOW),
    (
        "since yesterday",
        "since yesterday",
        "2026-03-17 00:00",
        NOW,
    ),
    (
        "since last week",
        "since last week",
        "2026-03-09 00:00",
        NOW,
    ),
    ("since March", "since March", "2026-03-01 00:00", NOW),
    // the last N ...
    (
        "in the last two days",
        "in the last two days",
        "2026-03-16 00:00",
        NOW,
    ),
    (
        "in the past 3 hours",
        "in the past 3 hours",
        "2026-03-18 12:30",
        NOW,
    ),
    (
        "over the past week",
        "over the past week",
        "2026-03-11 00:00",
        NOW,
    ),
    (
        "for the last 10 days",
        "the last 10 days",
        "2026-03-08 00:00",
        NOW,
    ),
    (
        "during the past two weeks",
        "during the past two weeks",
        "2026-03-04 00:00",
        NOW,
    ),
    (
        "in the last month",
        "in the last month",
        "2026-02-18 00:00",
        NOW,
    ),
    (
        "in the past 30 minutes",
        "in the past 30 minutes",
        "2026-03-18 15:00",
        NOW,
    ),
    (
        "within the last hour",
        "within the last hour",
        "2026-03-18 14:30",
        NOW,
    ),
    // months
    (
        "what did I say in March",
        "in March",
        "2026-03-01 00:00",
        "2026-04-01 00:00",
    ),
    (
        "in February",
        "in February",
        "2026-02-01 00:00",
        "2026-03-01 00:00",
    ),
    (
        "in December",
        "in December",
        "2025-12-01 00:00",
        "2026-01-01 00:00",
    ),
    ("in May", "in May", "2025-05-01 00:00", "2025-06-01 00:00"),
    (
        "during January",
        "during January",
        "2026-01-01 00:00",
        "2026-02-01 00:00",
    ),
    (
        "last March",
        "last March",
        "2025-03-01 00:00",
        "2025-04-01 00:00",
    ),
    (
        "last December",
        "last December",
        "2025-12-01 00:00",
        "2026-01-01 00:00",
    ),
    (
        "in March 2025",
        "in March 2025",
        "2025-03-01 00:00",
        "2025-04-01 00:00",
    ),
    (
        "back in January",
        "back in January",
        "2026-01-01 00:00",
        "2026-02-01 00:00",
    ),
    (
        "in early February",
        "in early February",
        "2026-02-01 00:00",
        "2026-02-11 00:00",
    ),
    (
        "in late January",
        "in late January",
        "2026-01-21 00:00",
        "2026-02-01 00:00",
    ),
    // dates
    (
        "on March 3rd",
        "on March 3rd",
        "2026-03-03 00:00",
        "2026-03-04 00:00",
    ),
    ("March 3", "March 3", "2026-03-03 00:00", "2026-03-04 00:00"),
    (
        "on the 3rd of March",
        "on the 3rd of March",
        "2026-03-03 00:00",
        "2026-03-04 00:00",
    ),
    (
        "on 3 March",
        "on 3 March",
        "2026-03-03 00:00",
        "2026-03-04 00:00",
    ),
    (
        "on the 10th",
        "on the 10th",
        "2026-03-10 00:00",
        "2026-03-11 00:00",
    ),
    (
        "on the 25th",
        "on the 25th",
        "2026-02-25 00:00",
        "2026-02-26 00:00",
    ),
    (
        "on 2026-02-14",
        "on 2026-02-14",
        "2026-02-14 00:00",
        "2026-02-15 00:00",
    ),
    (
        "2025-12-24",
        "2025-12-24",
        "2025-12-24 00:00",
        "2025-12-25 00:00",
    ),
    (
        "on December 24th",
        "on December 24th",
        "2025-12-24 00:00",
        "2025-12-25 00:00",
    ),
    (
        "March 3, 2025",
        "March 3, 2025",
        "2025-03-03 00:00",
        "2025-03-04 00:00",
    ),
    (
        "on Feb 2nd",
        "on Feb 2nd",
        "2026-02-02 00:00",
        "2026-02-03 00:00",
    ),
    // in a longer question: the first expression wins
    (
        "what did Marta say about the trip last week?",
        "last week",
        "2026-03-09 00:00",
        "2026-03-16 00:00",
    ),
    (
        "remind me what the vet said yesterday or the day before",
        "yesterday",
        "2026-03-17 00:00",
        "2026-03-18 00:00",
    ),
    // not time
    ("I have time", "", "", ""),
    ("Friday the cat is sick", "", "", ""),
    ("March forward", "", "", ""),
    ("what time is it", "", "", ""),
    ("the last time we talked about Rex", "", "", ""),
    ("May I ask something", "", "", ""),
    ("I may have mentioned the vet", "", "", ""),
    ("it took two days", "", "", ""),
    ("see you in two days", "", "", ""),
    ("see you in a week", "", "", ""),
    ("the weekday schedule", "", "", ""),
    ("we go to Sunday school", "", "", ""),
    ("in the morning I run", "", "", ""),
    ("Mondays are hard", "", "", ""),
    ("the second time", "", "", ""),
    ("in time for dinner", "", "", ""),
    ("I march every day", "", "", ""),
    ("walk past the station", "", "", ""),
    ("the last one", "", "", ""),
    ("at last", "", "", ""),
    ("a long day", "", "", ""),
    ("what day is it", "", "", ""),
    ("last but not least", "", "", ""),
    ("my friend August called", "", "", ""),
    ("Jan told me a story", "", "", ""),
    ("it takes 3 days", "", "", ""),
    ("I was in Paris", "", "", ""),
    ("since you asked", "", "", ""),
    ("earlier you said", "", "", ""),
    ("on the 3 trains", "", "", ""),
    ("", "", "", ""),
];

#[test]
fn every_phrasing_reads_as_its_window() {
    assert!(TABLE.len() >= 100, "{} rows", TABLE.len());
    let now = ms(NOW, ZONE);
    let mut failures = Vec::new();
    for &(query, phrase, start, end) in TABLE {
        let got = find(query, now, ZONE).map(|t| (t.phrase, t.start_ms, t.end_ms));
        let want =
            (!start.is_empty()).then(|| (phrase.to_string(), ms(start, ZONE), ms(end, ZONE)));
        if got != want {
            failures.push(format!("{query:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {}:\n{}",
        failures.len(),
        TABLE.len(),
        failures.join("\n")
    );
}

#[test]
fn windows_follow_the_zone_and_its_dst() {
    // 2026-03-30 12:00 Berlin: yesterday (29 March) lost an hour to DST.
    let now = ms("2026-03-30 12:00", ZONE);
    let t = find("yesterday", now, ZONE).expect("yesterday");
    assert_eq!(t.end_ms - t.start_ms, 23 * 3_600_000);
    // The same instant is still the 30th in New York, 6 hours behind: "today" starts there.
    let ny = chrono_tz::America::New_York;
    let t = find("today", now, ny).expect("today");
    assert_eq!(t.start_ms, ms("2026-03-30 00:00", ny));
    // 01:30 UTC on the 31st is the 30th in New York: "yesterday" is the 29th there.
    let late = ms("2026-03-31 01:30", chrono_tz::UTC);
    let t = find("yesterday", late, ny).expect("yesterday");
    assert_eq!(t.start_ms, ms("2026-03-29 00:00", ny));
}

#[test]
fn the_phrase_is_cut_out_for_word_matching() {
    let now = ms(NOW, ZONE);
    let q = "what did the vet say last week about Rex?";
    let t = find(q, now, ZONE).expect("last week");
    assert_eq!(t.strip_from(q), "what did the vet say about Rex?");
}
