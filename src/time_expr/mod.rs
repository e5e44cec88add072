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

/// Words that ask about a conversation without naming what it was about.
const ASKING: &[&str] = &[
    "a",
    "about",
    "again",
    "and",
    "any",
    "anything",
    "ask",
    "asked",
    "did",
    "discuss",
    "discussed",
    "do",
    "does",
    "else",
    "happen",
    "happened",
    "hear",
    "heard",
    "i",
    "it",
    "me",
    "mention",
    "mentioned",
    "remind",
    "said",
    "say",
    "so",
    "something",
    "talk",
    "talked",
    "tell",
    "that",
    "the",
    "there",
    "to",
    "told",
    "us",
    "was",
    "we",
    "were",
    "what",
    "whats",
    "you",
];

/// True when `rest` (a query without its time phrase) names nothing but the asking: "what did I
/// say", "what did I tell you". Such a question is only about time: the window is its answer.
pub fn asks_only_time(rest: &str) -> bool {
    rest.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .all(|w| {
            let w = w.to_lowercase().replace('\'', "");
            ASKING.contains(&w.as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::asks_only_time;

    #[test]
    fn a_question_only_about_time_names_nothing_else() {
        for q in [
            "What did I say",
            "what did I tell you?",
            "What's",
            "",
            "anything else I mentioned",
        ] {
            assert!(asks_only_time(q), "{q:?}");
        }
        for q in [
            "What did I buy",
            "what did the vet say",
            "what did Marta tell you",
        ] {
            assert!(!asks_only_time(q), "{q:?}");
        }
    }
}
