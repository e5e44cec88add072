//! Time in the question: English time expressions ("yesterday", "last week", "on Monday",
//! "two days ago", "in March") read from a query as a window `[start, end)` of unix ms, in the
//! user's time zone, relative to a given "now". Pure and rule-based: no model, no I/O.
//!
//! The reading is past-oriented (people ask a memory about what was said): "on Monday" is the
//! most recent Monday before today, "in March" the most recent March up to now. Words that are
//! only sometimes about time ("Friday the cat", "March forward", "I have time", "may") are read
//! only with a cue that makes them time: a preposition (`on`, `in`, `last`, `since`, ...) or a
//! part of the day ("Monday morning").

mod parse;
mod window;

#[cfg(test)]
mod table;

pub use parse::find;

use serde::Serialize;

/// A time expression found in a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeExpr {
    /// Inclusive start, unix ms.
    pub start_ms: i64,
    /// Exclusive end, unix ms.
    pub end_ms: i64,
    /// Byte range of the phrase in the query.
    #[serde(skip)]
    pub span: (usize, usize),
    /// The phrase as it appears in the query.
    pub phrase: String,
}

impl TimeExpr {
    /// The query with the phrase cut out (what words are matched on).
    pub fn strip_from(&self, query: &str) -> String {
        let (a, b) = self.span;
        match (query.get(..a), query.get(b..)) {
            (Some(head), Some(tail)) => format!("{} {}", head.trim_end(), tail.trim_start())
                .trim()
                .to_string(),
            _ => query.to_string(),
        }
    }
}

/// The time zone of an IANA name ("UTC", "Europe/Berlin"); `None` if there is no such zone.
pub fn zone(name: &str) -> Option<chrono_tz::Tz> {
    name.parse().ok()
}
