//! The retriever runs `pipeline.search_parallel` searches at once (the store serves concurrent
//! readers): a slow search does not hold up every other, and no more than that many run. A panic in
//! one of them still restarts the stage and degrades its request. Paused clock, fake stages.

mod common;

use common::*;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;
use voicerag_actors::*;

async fn next(results: &mut ResultStream) -> ContextResult {
    tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .expect("a result in time")
        .expect("stream open")
}

async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// Submits `n` finals while every search waits at a gate; returns how many searches were inside
/// the retriever at once, then opens the gate and checks that every final was answered.
async fn searches_inside_at_once(parallel: usize, n: usize) -> usize {
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.retriever.gate.lock().unwrap() = Some(gate.clone());
    let config = PipelineConfig {
        search_parallel: parallel,
        ..PipelineConfig::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    for i in 0..n {
        p.submit(transcript(
            &format!("c{i}"),
            "u",
            &format!("q{i} hello"),
            true,
        ))
        .unwrap();
    }
    // Ready when as many searches as may run are inside (or, one at a time, the first is).
    let want = parallel.min(n);
    assert!(
        until(|| gate.entered.load(SeqCst) >= want, 20_000).await,
        "only {} searches started",
        gate.entered.load(SeqCst)
    );
    settle().await;
    let inside = gate.entered.load(SeqCst);
    gate.open();
    for _ in 0..n {
        let r = next(&mut results).await;
        assert_eq!(r.degraded, None, "{r:?}");
        assert!(!r.hits.is_empty());
    }
    p.shutdown().await.unwrap();
    inside
}

#[tokio::test(start_paused = true)]
async fn searches_run_side_by_side_up_to_search_parallel() {
    assert_eq!(searches_inside_at_once(2, 4).await, 2);
    assert_eq!(searches_inside_at_once(3, 5).await, 3);
}

#[tokio::test(start_paused = true)]
async fn one_at_a_time_when_search_parallel_is_one() {
    assert_eq!(searches_inside_at_once(1, 3).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_search_among_parallel_ones_restarts_the_retriever() {
    quiet_injected_panics();
    let f = Fakes::new(Arc::new(|stage: &str, id: u64| {
        if stage == "search" && id == 0 {
            Fault::Panic
        } else {
            Fault::None
        }
    }));
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let mut results = p.results();
    p.submit(transcript("c0", "u", "q0 boom", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded.as_deref(), Some("retriever failed"), "{r:?}");
    // The restart comes after its backoff: let the (paused) clock run until it has.
    let restarted = || {
        p.health()
            .stages
            .iter()
            .any(|s| s.name == "retriever" && s.restarts == 1 && s.state == StageState::Up)
    };
    for _ in 0..1000 {
        if restarted() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(restarted(), "not restarted: {:?}", p.health().stages);
    p.submit(transcript("c1", "u", "q1 fine", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded, None, "{r:?}");
    p.shutdown().await.unwrap();
}
