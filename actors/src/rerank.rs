//! Deadline-aware reranking math: an online cost model and the choice of how many candidates fit.
//!
//! Cost is modelled as time per token of (query, passage) pairs, the tokens being what the reranker
//! says it would run ([`crate::Reranker::pair_tokens`]). The model is seeded at start by timing a few
//! runs of synthetic pairs ([`calibration_runs`]), and kept honest after that:
//! - every finished run updates the estimate, and one far off it (a cold prior, a CPU-starved
//!   stretch that has passed) replaces it outright;
//! - a run stopped at its deadline at least doubles the estimate, so an estimate that is too low
//!   costs a few timeouts, not dozens;
//! - when nothing fits, nothing would be measured again, so after a few skips for budget in a row
//!   one pair is run as a probe; a probe that times out makes the next one wait twice as long.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::messages::Hit;
use crate::stages::Reranker;

/// Weight of the newest run in the moving average.
const ALPHA: f64 = 0.3;
/// A finished run more than this many times off the estimate replaces it: the estimate was stale.
const JUMP: f64 = 2.0;
/// Skips for budget in a row before one pair is run as a probe.
const PROBE_EVERY: u32 = 8;
/// Most skips between probes, however many probes timed out.
const PROBE_MAX: u32 = 64;
/// Plans leave room for this many spreads of the runs' cost around the estimate.
const SPREAD_ROOM: f64 = 2.0;
/// Most spread counted: planning never assumes more than 1 + SPREAD_ROOM * SPREAD_MAX times the
/// estimate.
const SPREAD_MAX: f64 = 0.25;

/// Online estimate of the reranker's cost per pair token.
#[derive(Debug, Clone)]
pub struct RerankCost {
    ns_per_token: f64,
    /// Spread of finished runs' cost around the estimate (root mean square of sample/estimate - 1,
    /// moving): runs vary with pair lengths and the machine, and a plan that fills the budget at
    /// the mean estimate runs past it on every slower run.
    spread: f64,
    runs: u64,
    /// Skips for budget since the last run.
    skips: u32,
    /// Skips before the next probe: doubles when a run times out, reset by a finished run.
    probe_after: u32,
}

impl RerankCost {
    pub fn new(initial_ns_per_token: u64) -> Self {
        Self {
            ns_per_token: initial_ns_per_token.max(1) as f64,
            spread: 0.0,
            runs: 0,
            skips: 0,
            probe_after: PROBE_EVERY,
        }
    }

    /// Current estimate, in nanoseconds per token.
    pub fn ns_per_token(&self) -> f64 {
        self.ns_per_token
    }

    /// Relative spread of runs' cost around the estimate (0.1: runs typically 10% off).
    pub fn spread(&self) -> f64 {
        self.spread
    }

    /// Runs observed so far.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Predicted time to score pairs of `tokens` tokens in all.
    pub fn predict(&self, tokens: usize) -> Duration {
        Duration::from_nanos((self.ns_per_token * tokens as f64) as u64)
    }

    /// Seeds the estimate from timed runs (tokens, time) at start; returns whether any was usable.
    /// A calibration stopped at its time limit before any run finished says the cost is at least
    /// that run's time per token.
    pub fn calibrate(&mut self, calibration: &Calibration) -> bool {
        let tokens: usize = calibration.runs.iter().map(|r| r.0).sum();
        if tokens > 0 {
            let ns: f64 = calibration.runs.iter().map(|r| r.1.as_nanos() as f64).sum();
            self.ns_per_token = (ns / tokens as f64).max(1.0);
            let deviations: Vec<f64> = calibration
                .runs
                .iter()
                .filter(|r| r.0 > 0)
                .map(|r| (r.1.as_nanos() as f64 / r.0 as f64 / self.ns_per_token - 1.0).powi(2))
                .collect();
            self.spread = (deviations.iter().sum::<f64>() / deviations.len().max(1) as f64)
                .sqrt()
                .min(SPREAD_MAX);
            self.runs += 1;
            return true;
        }
        match calibration.cut {
            Some((tokens, elapsed)) if tokens > 0 => {
                self.observe_lower_bound(tokens, elapsed);
                true
            }
            _ => false,
        }
    }

    /// Learns from a finished run over `tokens` tokens that took `elapsed`.
    pub fn observe(&mut self, tokens: usize, elapsed: Duration) {
        if tokens == 0 {
            return;
        }
        let sample = elapsed.as_nanos() as f64 / tokens as f64;
        let ratio = sample / self.ns_per_token;
        // The first measurement replaces the configured guess outright, and so does one that says
        // the estimate is stale rather than noisy.
        self.ns_per_token = if self.runs == 0 || !(1.0 / JUMP..=JUMP).contains(&ratio) {
            // A stale estimate, not noise: the spread learns nothing from it.
            sample
        } else {
            let variance = ALPHA * (ratio - 1.0).powi(2) + (1.0 - ALPHA) * self.spread.powi(2);
            self.spread = variance.sqrt().min(SPREAD_MAX);
            ALPHA * sample + (1.0 - ALPHA) * self.ns_per_token
        };
        self.ns_per_token = self.ns_per_token.max(1.0);
        self.runs += 1;
        self.skips = 0;
        self.probe_after = PROBE_EVERY;
    }

    /// Learns from a run stopped for another reason than its deadline after `elapsed`: it cost at
    /// least that much.
    pub fn observe_lower_bound(&mut self, tokens: usize, elapsed: Duration) {
        if tokens == 0 {
            return;
        }
        let sample = elapsed.as_nanos() as f64 / tokens as f64;
        if sample > self.ns_per_token {
            self.ns_per_token = sample;
        }
    }

    /// Learns from a run over `tokens` tokens that was still going at its deadline, `elapsed` after
    /// it started: the estimate was wrong, so it at least doubles (more if the time already spent
    /// says so), and the next probe waits longer.
    pub fn observe_timeout(&mut self, tokens: usize, elapsed: Duration) {
        let spent = elapsed.as_nanos() as f64 / tokens.max(1) as f64;
        self.ns_per_token = (2.0 * self.ns_per_token).max(spent);
        self.skips = 0;
        self.probe_after = (self.probe_after * 2).min(PROBE_MAX);
    }

    /// How many of the top candidates (in order, with these pair token counts) can be reranked in
    /// `time_left`, leaving room for a run slower than the estimate by the spread seen so far. 0
    /// means none fits.
    pub fn choose(&self, pair_tokens: &[usize], time_left: Duration) -> usize {
        let budget_ns = time_left.as_nanos() as f64;
        let per_token = self.ns_per_token * (1.0 + SPREAD_ROOM * self.spread);
        let mut total = 0.0;
        for (i, &t) in pair_tokens.iter().enumerate() {
            total += t as f64 * per_token;
            if total > budget_ns {
                return i;
            }
        }
        pair_tokens.len()
    }

    /// [`Self::choose`] for a request about to run: when nothing fits, counts a skip for budget, and
    /// every so many skips in a row answers 1 (a probe) so the estimate can learn it was too high.
    pub fn plan(&mut self, pair_tokens: &[usize], time_left: Duration) -> usize {
        let m = self.choose(pair_tokens, time_left);
        if m > 0 || pair_tokens.is_empty() || time_left.is_zero() {
            return m;
        }
        self.skips += 1;
        if self.skips >= self.probe_after {
            self.skips = 0;
            return 1;
        }
        0
    }
}

/// What timing the reranker at start measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calibration {
    /// (pair tokens, time) of each finished run after the warm-up.
    pub runs: Vec<(usize, Duration)>,
    /// A run stopped at the time limit: (pair tokens, time until it stopped).
    pub cut: Option<(usize, Duration)>,
}

/// Synthetic query and passage words: everyday speech, so a tokenizer splits them as it would a
/// memory.
const CALIBRATION_QUERY: &str = "what did we decide about the trip to the lake next weekend";
const CALIBRATION_WORDS: &[&str] = &[
    "we",
    "talked",
    "about",
    "driving",
    "to",
    "the",
    "lake",
    "on",
    "saturday",
    "morning",
    "and",
    "my",
    "sister",
    "said",
    "she",
    "would",
    "bring",
    "sandwiches",
    "for",
    "everyone",
    "because",
    "the",
    "kids",
    "always",
    "get",
    "hungry",
    "after",
    "swimming",
    "in",
    "cold",
    "water",
];
/// (pairs, words a passage) of each run; the first is a warm-up and is not counted unless it is
/// the only run that finishes. About 1,000 pair tokens in all.
const CALIBRATION_RUNS: &[(usize, usize)] = &[(1, 8), (1, 8), (2, 24), (4, 48), (4, 96)];

fn calibration_passage(words: usize) -> String {
    CALIBRATION_WORDS
        .iter()
        .cycle()
        .take(words)
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Times the reranker on synthetic pairs of a few sizes, within `limit` in all: a run that would
/// not fit in what is left of it is not started, and one still going at the limit is cancelled.
/// Blocking; a reranker that fails gives what was measured before.
pub fn calibration_runs(reranker: &dyn Reranker, limit: Duration) -> Calibration {
    let started = Instant::now();
    let cancel = CancelToken::new();
    // A watchdog on the real clock: the reranker's cost is real time whatever clock tests run on.
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            if finished.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
                cancel.cancel();
            }
        })
    };
    let mut out = Calibration::default();
    let mut warm_up = None;
    for (i, &(pairs, words)) in CALIBRATION_RUNS.iter().enumerate() {
        let passage = calibration_passage(words);
        let passages = vec![passage.as_str(); pairs];
        let tokens: usize = reranker
            .pair_tokens(CALIBRATION_QUERY, &passages)
            .iter()
            .sum();
        // Predict this run from what was measured so far; stop before it would pass the limit.
        let measured = out.runs.iter().chain(warm_up.iter());
        let (t, ns) = measured.fold((0usize, 0f64), |(t, ns), r| {
            (t + r.0, ns + r.1.as_nanos() as f64)
        });
        if t > 0 {
            let predicted = Duration::from_nanos((ns / t as f64 * tokens as f64) as u64);
            if started.elapsed() + predicted > limit {
                break;
            }
        }
        let run_started = Instant::now();
        let result = reranker.score(CALIBRATION_QUERY, &passages, &cancel);
        let elapsed = run_started.elapsed();
        match result {
            Ok(scores) if scores.len() == pairs => {
                if i == 0 {
                    warm_up = Some((tokens, elapsed));
                } else {
                    out.runs.push((tokens, elapsed));
                }
            }
            _ => {
                if cancel.is_cancelled() {
                    out.cut = Some((tokens, elapsed));
                }
                break;
            }
        }
    }
    drop(done);
    let _ = watchdog.join();
    if out.runs.is_empty() {
        out.runs.extend(warm_up);
    }
    out
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
/// was not embedded, so there is no such evidence to judge). Returns the rest and how many hits
/// fewer than `top_k` the result has because of it.
pub fn floor_hits(mut hits: Vec<Hit>, min: f32, top_k: usize) -> (Vec<Hit>, usize) {
    let before = hits.len().min(top_k);
    hits.retain(|h| h.similarity.is_none_or(|s| s >= min));
    let dropped = before - hits.len().min(top_k);
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
    fn a_timeout_at_least_doubles_the_estimate() {
        let mut cost = RerankCost::new(1_000);
        cost.observe_timeout(1000, Duration::from_micros(500)); // spent 0.5 µs/token: doubles
        assert!((cost.ns_per_token() - 2_000.0).abs() < 1.0);
        cost.observe_timeout(100, Duration::from_millis(1)); // spent 10 µs/token: takes that
        assert!((cost.ns_per_token() - 10_000.0).abs() < 1.0);
    }

    #[test]
    fn a_finished_run_far_off_the_estimate_replaces_it() {
        let mut cost = RerankCost::new(1_000);
        cost.observe(100, Duration::from_micros(100)); // first: 1 µs/token
        cost.observe(100, Duration::from_micros(150)); // within 2x: averaged
        let e = cost.ns_per_token();
        assert!(e > 1_000.0 && e < 1_500.0, "{e}");
        cost.observe(100, Duration::from_millis(10)); // 100 µs/token: stale, replaced
        assert!((cost.ns_per_token() - 100_000.0).abs() < 1.0);
        cost.observe(100, Duration::from_millis(1)); // 10 µs/token: stale the other way
        assert!((cost.ns_per_token() - 10_000.0).abs() < 1.0);
    }

    #[test]
    fn skips_for_budget_lead_to_a_probe_of_one_pair_and_failed_probes_back_off() {
        let mut cost = RerankCost::new(1_000_000); // 100 ms a pair of 100 tokens
        let tokens = [100; 20];
        let left = Duration::from_millis(50);
        let skips =
            |cost: &mut RerankCost| (0..).take_while(|_| cost.plan(&tokens, left) == 0).count();
        assert_eq!(skips(&mut cost), PROBE_EVERY as usize - 1);
        // The probe times out: the next one waits twice as long, and so on up to PROBE_MAX.
        cost.observe_timeout(100, Duration::from_millis(50));
        assert_eq!(skips(&mut cost), 2 * PROBE_EVERY as usize - 1);
        for _ in 0..10 {
            cost.observe_timeout(100, Duration::from_millis(50));
        }
        assert_eq!(skips(&mut cost), PROBE_MAX as usize - 1);
        // A probe that finishes teaches the real cost, and the next request reranks what fits.
        cost.observe(100, Duration::from_millis(1));
        assert_eq!(cost.plan(&tokens, left), 20);
        // Nothing to rerank or no time at all is never a probe.
        assert_eq!(cost.plan(&[], left), 0);
        let mut cold = RerankCost::new(1_000_000);
        assert!((0..100).all(|_| cold.plan(&tokens, Duration::ZERO) == 0));
    }

    #[test]
    fn calibration_seeds_the_estimate_from_all_its_runs() {
        let mut cost = RerankCost::new(20_000);
        let runs = vec![
            (100, Duration::from_millis(30)),
            (300, Duration::from_millis(50)),
        ];
        assert!(cost.calibrate(&Calibration { runs, cut: None }));
        assert!((cost.ns_per_token() - 200_000.0).abs() < 1.0); // 80 ms / 400 tokens
        // Nothing finished before the limit: the cut run's time is a lower bound.
        let mut cost = RerankCost::new(20_000);
        let cut = Some((10, Duration::from_millis(500)));
        assert!(cost.calibrate(&Calibration { runs: vec![], cut }));
        assert!((cost.ns_per_token() - 50_000_000.0).abs() < 1.0);
        assert!(!RerankCost::new(1).calibrate(&Calibration::default()));
    }

    /// Requests at a 100 ms budget (93 ms to plan, a timeout at 98 ms) over 20 candidates of 60
    /// tokens, against a reranker costing `true_ns` a token. Returns each request's pairs run and
    /// whether the run timed out.
    fn simulate(cost: &mut RerankCost, true_ns: u64, requests: usize) -> Vec<(usize, bool)> {
        let (plan, stop) = (Duration::from_millis(93), Duration::from_millis(98));
        let tokens = [60; 20];
        (0..requests)
            .map(|_| {
                let m = cost.plan(&tokens, plan);
                if m == 0 {
                    return (0, false);
                }
                let took = Duration::from_nanos(true_ns * 60 * m as u64);
                if took > stop {
                    cost.observe_timeout(60 * m, stop);
                    (m, true)
                } else {
                    cost.observe(60 * m, took);
                    (m, false)
                }
            })
            .collect()
    }

    #[test]
    fn cold_start_calibrated_never_times_out_and_uncalibrated_only_a_few_times() {
        // The L-12 bench model: about 220 µs a token.
        let mut calibrated = RerankCost::new(20_000);
        let runs = vec![(120, Duration::from_micros(120 * 220))];
        calibrated.calibrate(&Calibration { runs, cut: None });
        let out = simulate(&mut calibrated, 220_000, 50);
        assert!(out.iter().all(|&(m, late)| m == 7 && !late), "{out:?}");

        let mut cold = RerankCost::new(20_000);
        let out = simulate(&mut cold, 220_000, 50);
        let late: Vec<_> = (0..50).filter(|&i| out[i].1).collect();
        assert!(late.len() <= 3 && late.iter().all(|&i| i < 5), "{out:?}");
        assert!(out[10..].iter().all(|&(m, _)| m >= 6), "{out:?}");
    }

    #[test]
    fn an_estimate_ten_times_too_high_recovers_within_twenty_requests() {
        let mut cost = RerankCost::new(2_200_000);
        let out = simulate(&mut cost, 220_000, 20);
        let first = out
            .iter()
            .position(|&(m, _)| m > 0)
            .expect("reranked again");
        assert!(first < 20 && out.iter().all(|&(_, late)| !late), "{out:?}");
        assert_eq!(out[first + 1].0, 7, "{out:?}");
    }

    /// [`simulate`] against a reranker whose cost varies from run to run: `true_ns` times 1 plus a
    /// fixed pseudo-random draw in [-noise, noise]. With `mean_only` every plan ignores the spread.
    /// Returns the runs that timed out.
    fn simulate_noisy(
        cost: &mut RerankCost,
        true_ns: u64,
        noise: f64,
        requests: usize,
        mean_only: bool,
    ) -> usize {
        let (plan, stop) = (Duration::from_millis(93), Duration::from_millis(98));
        let tokens = [60; 20];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut timeouts = 0;
        for _ in 0..requests {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let draw = (seed >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
            if mean_only {
                cost.spread = 0.0;
            }
            let m = cost.plan(&tokens, plan);
            if m == 0 {
                continue;
            }
            let ns = true_ns as f64 * (1.0 + noise * (2.0 * draw - 1.0)) * (60 * m) as f64;
            let took = Duration::from_nanos(ns as u64);
            if took > stop {
                cost.observe_timeout(60 * m, stop);
                timeouts += 1;
            } else {
                cost.observe(60 * m, took);
            }
        }
        timeouts
    }

    #[test]
    fn runs_that_vary_leave_room_for_the_slower_ones() {
        // The cost varies by up to 15% from run to run: a plan that fills 93 ms at the mean
        // estimate runs past 98 ms whenever a run is more than about 6% slow.
        let calibrated = |spread_runs: &[(usize, u64)]| {
            let mut cost = RerankCost::new(20_000);
            let runs = spread_runs
                .iter()
                .map(|&(t, ns)| (t, Duration::from_nanos(t as u64 * ns)))
                .collect();
            cost.calibrate(&Calibration { runs, cut: None });
            cost
        };
        // Calibration runs that differ say so from the start.
        let mut cost = calibrated(&[(120, 200_000), (240, 240_000), (480, 220_000)]);
        assert!(cost.spread() > 0.05, "{}", cost.spread());
        let timeouts = simulate_noisy(&mut cost, 220_000, 0.15, 300, false);
        assert!(timeouts <= 2, "{timeouts} timeouts in 300");
        assert!(cost.spread() > 0.05 && cost.spread() <= SPREAD_MAX);
        // Planning at the mean alone (what spread 0 gives) times out again and again.
        let mut mean_only = calibrated(&[(120, 220_000)]);
        let late = simulate_noisy(&mut mean_only, 220_000, 0.15, 300, true);
        assert!(late >= 20, "{late} timeouts in 300 at the mean");
    }

    /// Spends `ns_per_token` of real time a pair token, stopping when cancelled.
    struct Timed {
        ns_per_token: u64,
        calls: std::sync::Mutex<Vec<usize>>,
    }

    impl Reranker for Timed {
        fn pair_tokens(&self, query: &str, passages: &[&str]) -> Vec<usize> {
            let words = |s: &str| s.split_whitespace().count();
            passages
                .iter()
                .map(|p| words(query) + words(p) + 3)
                .collect()
        }
        fn score(
            &self,
            query: &str,
            passages: &[&str],
            cancel: &CancelToken,
        ) -> Result<Vec<f32>, crate::StageError> {
            let tokens: usize = self.pair_tokens(query, passages).iter().sum();
            self.calls.lock().unwrap().push(tokens);
            let until = Instant::now() + Duration::from_nanos(self.ns_per_token * tokens as u64);
            while Instant::now() < until {
                if cancel.is_cancelled() {
                    return Err(crate::StageError::new("cancelled"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(vec![0.0; passages.len()])
        }
    }

    #[test]
    fn calibration_times_growing_runs_and_keeps_within_its_limit() {
        let fast = Timed {
            ns_per_token: 1_000,
            calls: Default::default(),
        };
        let c = calibration_runs(&fast, Duration::from_millis(500));
        let calls = fast.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), CALIBRATION_RUNS.len(), "{calls:?}");
        assert!(calls.windows(2).all(|w| w[0] <= w[1]), "{calls:?}");
        // The warm-up is left out.
        assert_eq!(c.runs.len(), CALIBRATION_RUNS.len() - 1);
        assert_eq!(c.runs.iter().map(|r| r.0).collect::<Vec<_>>(), calls[1..]);
        assert!(
            c.runs
                .iter()
                .all(|&(t, d)| d >= Duration::from_nanos(1_000 * t as u64))
        );
        assert_eq!(c.cut, None);

        // 1 ms a token: the warm-up and the second run (23 tokens each) fit in 100 ms, the third
        // (about 64 tokens) is predicted not to.
        let slow = Timed {
            ns_per_token: 1_000_000,
            calls: Default::default(),
        };
        let started = Instant::now();
        let c = calibration_runs(&slow, Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(slow.calls.lock().unwrap().len(), 2);
        assert_eq!(c.runs.len(), 1);

        // 10 ms a token: the warm-up itself is cut at the limit.
        let starved = Timed {
            ns_per_token: 10_000_000,
            calls: Default::default(),
        };
        let c = calibration_runs(&starved, Duration::from_millis(50));
        assert!(c.runs.is_empty());
        let (tokens, took) = c.cut.expect("cut at the limit");
        assert!(tokens > 0 && took >= Duration::from_millis(50), "{took:?}");
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
        let (kept, dropped) = floor_hits(hits.clone(), 0.3, 10);
        let ids: Vec<_> = kept.iter().map(|h| h.id.as_str()).collect();
        assert_eq!((ids, dropped), (vec!["a", "c"], 1));
        // Counted against top_k: with top_k 1 the result still has its one hit.
        assert_eq!(floor_hits(hits, 0.3, 1).1, 0);
    }
}
