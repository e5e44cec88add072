//! The reranker's cost model against a fake cross-encoder whose cost the test sets: calibrated at
//! start, it does not time out from a cold start, and an estimate far too high recovers.
//!
//! The pipeline runs on tokio's paused clock and the fake spends real time, as a model would. The
//! clock does not move during a request, so a run has exactly `budget - deadline_guard` (98 ms) before
//! its timeout. A run whose cost does not fit in that spends it, then waits, like a model still
//! running at the deadline, until the test moves the clock past the deadline and the pipeline
//! cancels it: a real timeout, measured as a model's would be.

mod common;

use common::*;
use futures::{FutureExt, StreamExt};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voicerag_actors::*;

const MS: Duration = Duration::from_millis(1);
/// Pair tokens of every candidate, about a memory's.
const PAIR_TOKENS: usize = 60;
/// The L-12 bench cross-encoder's cost per pair token.
const L12_NS_PER_TOKEN: u64 = 220_000;

/// Costs `ns_per_token` of real time a pair token; runs that do not fit in `window` overrun.
struct CostedReranker {
    ns_per_token: AtomicU64,
    /// Time before the pipeline's timeout fires; `None` (during calibration) never overruns.
    window: Mutex<Option<Duration>>,
    /// Set while a run waits at its deadline for the test to move the clock.
    at_deadline: AtomicBool,
    overruns: AtomicUsize,
    /// Pairs of each call.
    calls: Mutex<Vec<usize>>,
}

impl CostedReranker {
    fn new(ns_per_token: u64) -> Arc<Self> {
        Arc::new(Self {
            ns_per_token: AtomicU64::new(ns_per_token),
            window: Mutex::new(None),
            at_deadline: AtomicBool::new(false),
            overruns: AtomicUsize::new(0),
            calls: Mutex::default(),
        })
    }
}

/// Sleeps until `until` on the real clock; false if cancelled first.
fn spend(until: Instant, cancel: &CancelToken) -> bool {
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(MS));
    }
}

impl Reranker for CostedReranker {
    fn pair_tokens(&self, _query: &str, passages: &[&str]) -> Vec<usize> {
        vec![PAIR_TOKENS; passages.len()]
    }

    fn score(
        &self,
        query: &str,
        passages: &[&str],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, StageError> {
        let started = Instant::now();
        self.calls.lock().unwrap().push(passages.len());
        let tokens = (PAIR_TOKENS * passages.len()) as u64;
        let cost = Duration::from_nanos(self.ns_per_token.load(SeqCst) * tokens);
        let window = *self.window.lock().unwrap();
        let cancelled = || Err(StageError::new("cancelled"));
        match window {
            Some(w) if cost > w => {
                self.overruns.fetch_add(1, SeqCst);
                if spend(started + w, cancel) {
                    self.at_deadline.store(true, SeqCst);
                    // Still running: only the pipeline's cancel stops it (bounded, should it not).
                    spend(started + Duration::from_secs(30), cancel);
                }
                cancelled()
            }
            _ if spend(started + cost, cancel) => {
                Ok(passages.iter().map(|p| expected_score(query, p)).collect())
            }
            _ => cancelled(),
        }
    }
}

/// Serves `n` finals one after the other; moves the paused clock past the deadline only when a
/// run is waiting there.
async fn serve(
    p: &PipelineHandle,
    results: &mut ResultStream,
    fake: &CostedReranker,
    n: usize,
) -> Vec<ContextResult> {
    let mut out = Vec::new();
    for i in 0..n {
        p.submit(transcript(
            "c",
            &format!("u{i}"),
            &format!("q{i} where did I park"),
            true,
        ))
        .unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        let r = loop {
            if let Some(r) = results.next().now_or_never() {
                break r.expect("stream open");
            }
            if fake.at_deadline.swap(false, SeqCst) {
                for _ in 0..100 {
                    tokio::time::advance(MS).await;
                    tokio::task::yield_now().await;
                }
            }
            assert!(Instant::now() < give_up, "no result for request {i}");
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(200));
        };
        out.push(r);
    }
    out
}

async fn start(fake: &Arc<CostedReranker>, config: PipelineConfig) -> PipelineHandle {
    // The fake's cost is real time: at a lowered priority a loaded machine would stretch it more
    // than it stretches the test's clock moves. Priority is tested in rerank_priority.rs.
    let config = PipelineConfig {
        rerank_nice: 0,
        ..config
    };
    let f = Fakes::new(no_faults());
    let stages = Stages {
        reranker: Some(fake.clone()),
        ..f.stages(false)
    };
    let window = config.budget() - config.deadline_guard();
    let p = Pipeline::start(stages, config).await.unwrap();
    *fake.window.lock().unwrap() = Some(window);
    p
}

fn reranked(r: &ContextResult) -> usize {
    match r.rerank {
        RerankOutcome::Full => r.hits.len(),
        RerankOutcome::Partial(m) => m,
        _ => 0,
    }
}

fn timed_out(r: &ContextResult) -> bool {
    r.rerank == RerankOutcome::Skipped("timeout".into())
}

fn summary(results: &[ContextResult]) -> String {
    let pairs: Vec<_> = results.iter().map(reranked).collect();
    let late: Vec<_> = (0..results.len())
        .filter(|&i| timed_out(&results[i]))
        .collect();
    format!("pairs reranked {pairs:?}, timeouts at {late:?}")
}

#[tokio::test(start_paused = true)]
async fn calibrated_from_a_cold_start_no_rerank_times_out_in_the_first_fifty() {
    quiet_injected_panics();
    let fake = CostedReranker::new(L12_NS_PER_TOKEN);
    // The defaults: a 100 ms budget, a prior of 20 µs a token (11 times too low), calibration on.
    let config = PipelineConfig::default();
    assert_eq!(config.budget_ms, 100);
    let p = start(&fake, config).await;
    let calibration_calls = fake.calls.lock().unwrap().len();
    assert!(
        calibration_calls >= 2,
        "calibration ran {calibration_calls} calls"
    );
    let mut results = p.results();
    let out = serve(&p, &mut results, &fake, 50).await;
    let s = summary(&out);
    println!("calibrated cold start at 220 µs/token: {s}");
    assert_eq!(fake.overruns.load(SeqCst), 0, "{s}");
    assert!(!out.iter().any(timed_out), "{s}");
    // Every request reranks what fits: about 7 pairs of 13.2 ms in 93 ms.
    assert!(out.iter().all(|r| (1..=7).contains(&reranked(r))), "{s}");
    assert!(out.iter().all(ContextResult::deadline_met), "{s}");
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn uncalibrated_a_timeout_moves_the_estimate_decisively() {
    quiet_injected_panics();
    let fake = CostedReranker::new(L12_NS_PER_TOKEN);
    let config = PipelineConfig {
        rerank_calibration_ms: 0,
        ..Default::default()
    };
    let p = start(&fake, config).await;
    let mut results = p.results();
    let out = serve(&p, &mut results, &fake, 50).await;
    let s = summary(&out);
    println!("uncalibrated cold start at 220 µs/token: {s}");
    // The prior fits all 20 pairs (264 ms): the first run times out, and each timeout at least
    // doubles the estimate, so a few do (the issue saw about 40).
    assert!(timed_out(&out[0]), "{s}");
    let late = out.iter().filter(|r| timed_out(r)).count();
    assert!(late <= 3, "{s}");
    assert!(!out[5..].iter().any(timed_out), "{s}");
    assert!(out[5..].iter().all(|r| reranked(r) >= 1), "{s}");
    assert!(out.iter().all(ContextResult::deadline_met), "{s}");
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_estimate_ten_times_too_high_recovers_within_twenty_requests() {
    quiet_injected_panics();
    let fake = CostedReranker::new(L12_NS_PER_TOKEN);
    let config = PipelineConfig {
        rerank_calibration_ms: 0,
        rerank_initial_ns_per_token: 10 * L12_NS_PER_TOKEN,
        ..Default::default()
    };
    let p = start(&fake, config).await;
    let mut results = p.results();
    let out = serve(&p, &mut results, &fake, 20).await;
    let s = summary(&out);
    println!("estimate 10x too high: {s}");
    // One pair is estimated at 132 ms: skipped for budget, until a probe of one pair measures it.
    assert_eq!(
        out[0].rerank,
        RerankOutcome::Skipped("budget".into()),
        "{s}"
    );
    let first = out.iter().position(|r| reranked(r) > 0).expect(&s);
    assert!(first < 20, "{s}");
    // About 7 fit; the probe's pair is timed on the real clock, which a loaded machine stretches
    // (a 13.2 ms sleep measured at 20 ms fits 4), so only a clear recovery is asserted.
    assert!(reranked(&out[first + 1]) >= 3, "{s}");
    assert!(!out.iter().any(timed_out), "{s}");
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_calibration_in_a_starved_stretch_recovers_once_it_passes() {
    quiet_injected_panics();
    // Ten times slower while calibrating (the CPU busy elsewhere), then the real cost.
    let fake = CostedReranker::new(10 * L12_NS_PER_TOKEN);
    let p = start(&fake, PipelineConfig::default()).await;
    fake.ns_per_token.store(L12_NS_PER_TOKEN, SeqCst);
    let mut results = p.results();
    let out = serve(&p, &mut results, &fake, 20).await;
    let s = summary(&out);
    println!("calibrated in a starved stretch: {s}");
    assert_eq!(
        out[0].rerank,
        RerankOutcome::Skipped("budget".into()),
        "{s}"
    );
    let first = out.iter().position(|r| reranked(r) > 0).expect(&s);
    assert!(first < 20 && reranked(&out[first + 1]) >= 5, "{s}");
    assert!(!out.iter().any(timed_out), "{s}");
    p.shutdown().await.unwrap();
}
