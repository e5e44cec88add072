//! What the soak's load generator keeps of the answers it receives, in memory that does not grow
//! with their number: the soak measures the process's memory over minutes, and the generator runs
//! in that process. A set of every answered key and a list of every latency (about 110 bytes an
//! answer) were half of the "not the store" growth it reported.

use hdrhistogram::Histogram;
use roaring::RoaringBitmap;
use std::collections::HashSet;

use super::stats::{latency_histogram, percentile_ms};

/// Latencies as histograms; answered keys `{run}-c{conversation}/u{n}` as one bitmap of `n` per
/// conversation (any other key in a plain set).
pub struct AnswerLog {
    prefix: String,
    answered: Vec<RoaringBitmap>,
    other: HashSet<String>,
    totals: Histogram<u64>,
    embeds: Histogram<u64>,
}

impl AnswerLog {
    /// For the keys of soak `run`.
    pub fn new(run: &str) -> anyhow::Result<Self> {
        Ok(Self {
            prefix: format!("{run}-c"),
            answered: Vec::new(),
            other: HashSet::new(),
            totals: latency_histogram()?,
            embeds: latency_histogram()?,
        })
    }

    /// `(conversation, n)` of a key of this run's shape.
    fn slot(&self, key: &str) -> Option<(usize, u32)> {
        let (c, n) = key.strip_prefix(&self.prefix)?.split_once("/u")?;
        Some((c.parse().ok()?, n.parse().ok()?))
    }

    /// Whether `key` was answered before.
    pub fn was_answered(&self, key: &str) -> bool {
        match self.slot(key) {
            Some((c, n)) => self.answered.get(c).is_some_and(|b| b.contains(n)),
            None => self.other.contains(key),
        }
    }

    /// Notes the first answer to `key`, with its total and embed times.
    pub fn answer(&mut self, key: &str, total_ms: f64, embed_ms: f64) {
        match self.slot(key) {
            Some((c, n)) => {
                if self.answered.len() <= c {
                    self.answered.resize_with(c + 1, RoaringBitmap::new);
                }
                self.answered[c].insert(n);
            }
            None => {
                self.other.insert(key.to_string());
            }
        }
        let us = |ms: f64| ((ms * 1000.0).round() as u64).max(1);
        self.totals.saturating_record(us(total_ms));
        self.embeds.saturating_record(us(embed_ms));
    }

    /// Total time at quantile `q`, in ms.
    pub fn total_ms(&self, q: f64) -> f64 {
        percentile_ms(&self.totals, q)
    }

    pub fn total_ms_max(&self) -> f64 {
        self.totals.max() as f64 / 1000.0
    }

    /// Embed time at quantile `q`, in ms.
    pub fn embed_ms(&self, q: f64) -> f64 {
        percentile_ms(&self.embeds, q)
    }

    /// Bytes the answered-key records hold (bitmaps serialised, and the plain set's strings).
    pub fn key_bytes(&self) -> usize {
        self.answered
            .iter()
            .map(RoaringBitmap::serialized_size)
            .sum::<usize>()
            + self.other.iter().map(String::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::AnswerLog;

    #[test]
    fn duplicates_are_found_and_a_long_run_keeps_little() {
        let mut log = AnswerLog::new("soak42").unwrap();
        for c in 0..16 {
            for n in 0..10_000 {
                let key = format!("soak42-c{c}/u{n}");
                assert!(!log.was_answered(&key));
                log.answer(&key, f64::from(n % 100) + 0.5, 2.0);
                assert!(log.was_answered(&key));
            }
        }
        assert!(!log.was_answered("soak42-c3/u10000"));
        assert!(!log.was_answered("soak42-c16/u0"));
        assert!(!log.was_answered("soak7-c3/u5"), "another run's key");
        // 160,000 answers: 8 KiB of bitmap per conversation, where a set of the keys held about
        // 16 MB.
        assert!(log.key_bytes() <= 16 * 8300, "{} bytes", log.key_bytes());
        // A key of another shape still counts.
        log.answer("odd-key", 1.0, 1.0);
        assert!(log.was_answered("odd-key"));
        // Quantiles within the histogram's precision.
        assert!(
            (log.total_ms(0.5) - 50.0).abs() <= 0.6,
            "{}",
            log.total_ms(0.5)
        );
        assert!((log.total_ms_max() - 99.5).abs() < 0.1);
        assert!((log.embed_ms(0.99) - 2.0).abs() < 0.01);
    }
}
