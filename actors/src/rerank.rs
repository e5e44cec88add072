//! Deadline-aware reranking math: an online cost model and the choice of how many candidates fit.
//!
//! Cost is modelled as time per token of (query, passage) pairs, the tokens being what the reranker
//! says it would run ([`crate::Reranker::pair_tokens`]). Every run updates the estimate; a run that was
//! cancelled only ever raises it (its time is a lower bound of the real cost).

use std::time::Duration;

use crate::messages::Hit;

/// Weight of the newest run in the moving average.
const ALPHA: f64 = 0.3;

/// Online estimate of the reranker's cost per pair token.
#[derive(Debug, Clone)]
pub struct RerankCost {
    ns_per_token: f64,
    runs: u64,
}

impl RerankCost {
    pub fn new(initial_ns_per_token: u64) -> Self {
        Self {
            ns_per_token: initial_ns_per_token.max(1) as f64,
            runs: 0,
        }
    }

    /// Current estimate, in nanoseconds per token.
    pub fn ns_per_token(&self) -> f64 {
        self.ns_per_token
    }

    /// Runs observed so far.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Predicted time to score pairs of `tokens` tokens in all.
    pub fn predict(&self, tokens: usize) -> Duration {
        Duration::from_nanos((self.ns_per_token * tokens as f64) as u64)
    }

    /// Learns from a finished run over `tokens` tokens that took `elapsed`.
    pub fn observe(&mut self, tokens: usize, elapsed: Duration) {
        if tokens == 0 {
            return;
        }
        let sample = elapsed.as_nanos() as f64 / tokens as f64;
        // The first measurement replaces the configured guess outright.
        self.ns_per_token = if self.runs == 0 {
            sample
        } else {
            ALPHA * sample + (1.0 - ALPHA) * self.ns_per_token
        };
        self.ns_per_token = self.ns_per_token.max(1.0);
        self.runs += 1;
    }

    /// Learns from a run stopped after `elapsed`: it cost at least that much.
    pub fn observe_lower_bound(&mut self, tokens: usize, elapsed: Duration) {
        if tokens == 0 {
            return;
        }
        let sample = elapsed.as_nanos() as f64 / tokens as f64;
        if sample > self.ns_per_token {
            self.observe(tokens, elapsed);
        }
    }

    /// How many of the top candidates (in order, with these pair token counts) can be reranked in
    /// `time_left`. 0 means none fits.
    pub fn choose(&self, pair_tokens: &[usize], time_left: Duration) -> usize {
        let budget_ns = time_left.as_nanos() as f64;
        let mut total = 0.0;
        for (i, &t) in pair_tokens.iter().enumerate() {
            total += t as f64 * self.ns_per_token;
            if total > budget_ns {
                return i;
            }
        }
        pair_tokens.len()
    }
}

/// Puts the first `scores.len()` hits in rerank order (best first) above the rest, which keep their
/// hybrid order, and records each reranked hit's score.
pub fn apply_scores(mut hits: Vec<Hit>, scores: &[f32]) -> Vec<Hit> {
    let m = scores.len().min(hits.len());
    let rest = hits.split_off(m);
    for (hit, &s) in hits.iter_mut().zip(scores) {
        hit.rerank_score = Some(s);
    }
    // Stable sort: equal scores keep hybrid order. NaN sorts last.
    hits.sort_by(|a, b| {
        let (a, b) = (
            a.rerank_score.unwrap_or(f32::NAN),
            b.rerank_score.unwrap_or(f32::NAN),
        );
        b.partial_cmp(&a)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
    });
    hits.extend(rest);
    hits
}

/// Caps hits at `top_k` and at `max_chars` characters of text in all. A first hit longer than the
/// cap is cut to it, so a result is never empty only because one memory is long.
/// Returns the hits kept and how many of the first `top_k` the character cap cut.
pub fn cap_hits(mut hits: Vec<Hit>, top_k: usize, max_chars: usize) -> (Vec<Hit>, usize) {
    hits.truncate(top_k);
    let offered = hits.len();
    let mut used = 0usize;
    let mut keep = 0usize;
    for hit in hits.iter_mut() {
        let len = hit.text.chars().count();
        if used + len <= max_chars {
            used += len;
            keep += 1;
        } else if keep == 0 {
            hit.text = hit.text.chars().take(max_chars).collect();
            keep = 1;
            break;
        } else {
            break;
        }
    }
    hits.truncate(keep);
    (hits, offered - keep)
}

/// Drops hits whose similarity to the query is below `min` (hits without one are kept: the query
/// was not embedded, so there is no such evidence to judge); returns the rest and how many went.
pub fn floor_hits(mut hits: Vec<Hit>, min: f32) -> (Vec<Hit>, usize) {
    let before = hits.len();
    hits.retain(|h| h.similarity.is_none_or(|s| s >= min));
    let dropped = before - hits.len();
    (hits, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, text: &str) -> Hit {
        Hit {
            id: id.into(),
            text: text.into(),
            score: 0.0,
            rerank_score: None,
            vector_rank: None,
            bm25_rank: None,
            similarity: None,
            conversation: "c".into(),
            speaker: "user".into(),
            ts_ms: 0,
        }
    }

    #[test]
    fn choose_takes_the_prefix_that_fits() {
        let cost = RerankCost::new(1_000); // 1 µs per token
        let tokens = [100, 100, 100, 100];
        assert_eq!(cost.choose(&tokens, Duration::from_micros(250)), 2);
        assert_eq!(cost.choose(&tokens, Duration::from_micros(400)), 4);
        assert_eq!(cost.choose(&tokens, Duration::from_micros(99)), 0);
        assert_eq!(cost.choose(&[], Duration::from_micros(1)), 0);
    }

    #[test]
    fn estimate_follows_measured_runs() {
        let mut cost = RerankCost::new(1_000);
        cost.observe(1000, Duration::from_millis(10)); // 10 µs/token measured
        assert!((cost.ns_per_token() - 10_000.0).abs() < 1.0);
        cost.observe(1000, Duration::from_millis(20)); // moves toward 20 µs/token
        let e = cost.ns_per_token();
        assert!(e > 10_000.0 && e < 20_000.0, "{e}");
        assert_eq!(cost.predict(100), Duration::from_nanos((e * 100.0) as u64));
    }

    #[test]
    fn cancelled_runs_only_raise_the_estimate() {
        let mut cost = RerankCost::new(1_000);
        cost.observe(100, Duration::from_micros(500)); // 5 µs/token
        cost.observe_lower_bound(100, Duration::from_micros(100)); // 1 µs/token: ignored
        assert!((cost.ns_per_token() - 5_000.0).abs() < 1.0);
        cost.observe_lower_bound(100, Duration::from_millis(5)); // 50 µs/token: raises
        assert!(cost.ns_per_token() > 5_000.0);
    }

    #[test]
    fn scores_reorder_the_top_and_keep_the_rest() {
        let hits = vec![hit("a", "a"), hit("b", "b"), hit("c", "c"), hit("d", "d")];
        let out = apply_scores(hits, &[0.1, 0.9]);
        let ids: Vec<_> = out.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c", "d"]);
        assert_eq!(out[0].rerank_score, Some(0.9));
        assert_eq!(out[2].rerank_score, None);
    }

    #[test]
    fn caps_by_count_and_characters() {
        let hits = vec![hit("a", "12345"), hit("b", "12345"), hit("c", "1")];
        // The count limit is top_k, not a cut by the cap.
        assert_eq!(cap_hits(hits.clone(), 2, 100).0.len(), 2);
        assert_eq!(cap_hits(hits.clone(), 2, 100).1, 0);
        let (capped, cut) = cap_hits(hits.clone(), 5, 10);
        assert_eq!((capped.len(), cut), (2, 1));
        let (one, cut) = cap_hits(hits, 5, 3);
        assert_eq!((one.len(), cut), (1, 2));
        assert_eq!(one[0].text, "123");
    }

    #[test]
    fn the_floor_drops_weak_similarity_and_keeps_unjudged_hits() {
        let mut hits = vec![hit("a", "a"), hit("b", "b"), hit("c", "c")];
        hits[0].similarity = Some(0.6);
        hits[1].similarity = Some(0.1);
        let (kept, dropped) = floor_hits(hits, 0.3);
        let ids: Vec<_> = kept.iter().map(|h| h.id.as_str()).collect();
        assert_eq!((ids, dropped), (vec!["a", "c"], 1));
    }
}
