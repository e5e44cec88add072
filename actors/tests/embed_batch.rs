//! Micro-batching of embeddings, on the paused clock with fake stages: requests waiting for the
//! embedder at the same moment share one run, finals before partials, and supervision, cancellation
//! and deadlines still hold per request.

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

/// One embedder run at a time: what is batched while the only run is busy is then exact.
fn one_run() -> PipelineConfig {
    PipelineConfig {
        embed_parallel: 1,
        ..PipelineConfig::default()
    }
}

/// Submits finals `u{i}` ("q{i} hello") of conversation "c" for each `i` in `ids`.
fn submit_finals(p: &PipelineHandle, ids: std::ops::Range<usize>) {
    for i in ids {
        p.submit(transcript(
            "c",
            &format!("u{i}"),
            &format!("q{i} hello"),
            true,
        ))
        .unwrap();
    }
}

/// Submits `q0` alone and waits until the embedder is busy with it, behind `gate`.
async fn busy_with_q0(f: &Fakes, p: &PipelineHandle, gate: &Arc<Gate>) {
    *f.embedder.gate.lock().unwrap() = Some(gate.clone());
    p.submit(transcript("c", "u0", "q0 first", true)).unwrap();
    assert!(
        until(|| gate.entered.load(SeqCst) == 1, 20_000).await,
        "the embedder never started"
    );
}

#[tokio::test(start_paused = true)]
async fn finals_waiting_for_the_embedder_together_are_embedded_in_one_run() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    let p = Pipeline::start(f.stages(false), one_run()).await.unwrap();
    let mut results = p.results();
    busy_with_q0(&f, &p, &gate).await;
    submit_finals(&p, 1..8);
    settle().await;
    gate.open();
    let mut answered = Vec::new();
    for _ in 0..8 {
        let r = next(&mut results).await;
        assert_eq!(r.degraded, None, "{}", r.utterance);
        assert_eq!(r.hits.len(), 5);
        assert!(r.deadline_met());
        answered.push(r.utterance);
    }
    answered.sort();
    assert_eq!(
        answered,
        (0..8).map(|i| format!("u{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        f.embedder.sizes(),
        [1, 7],
        "the first final went at once, the other seven together"
    );
    p.shutdown().await.unwrap();
}

/// With `embed_parallel` 2 and an embedder of `sessions` sessions: holds the first run at a gate,
/// submits a second final, then six more, and returns the run sizes in call order.
async fn runs_beside_a_busy_one(sessions: usize) -> Vec<usize> {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    f.embedder.sessions.store(sessions, SeqCst);
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    let config = PipelineConfig {
        embed_parallel: 2,
        ..PipelineConfig::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    busy_with_q0(&f, &p, &gate).await;
    p.submit(transcript("c", "u1", "q1 second", true)).unwrap();
    if sessions >= 2 {
        // A slot is free: the next final does not wait for the first run.
        assert!(
            until(|| gate.entered.load(SeqCst) == 2, 20_000).await,
            "the second run never started beside the first"
        );
    }
    // Every slot busy: these wait, and go together.
    submit_finals(&p, 2..8);
    settle().await;
    assert_eq!(
        gate.entered.load(SeqCst),
        sessions.min(2),
        "runs inside the embedder while the first is held"
    );
    gate.open();
    for _ in 0..8 {
        let r = next(&mut results).await;
        assert_eq!(r.degraded, None, "{}", r.utterance);
    }
    p.shutdown().await.unwrap();
    f.embedder.sizes()
}

#[tokio::test(start_paused = true)]
async fn a_second_run_starts_on_a_free_session_while_the_first_is_busy() {
    assert_eq!(runs_beside_a_busy_one(2).await, [1, 1, 6]);
}

#[tokio::test(start_paused = true)]
async fn an_embedder_with_one_session_gets_one_run_at_a_time_whatever_embed_parallel_says() {
    assert_eq!(runs_beside_a_busy_one(1).await, [1, 7]);
}

#[tokio::test(start_paused = true)]
async fn an_idle_embedder_takes_a_single_final_at_once() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 alone", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded, None);
    assert_eq!(f.embedder.sizes(), [1]);
    assert_eq!(
        r.timings.embed,
        Duration::ZERO,
        "no wait added for company (the paused clock only moves for timers)"
    );
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn runs_are_bounded_by_embed_batch_max() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    let config = PipelineConfig {
        embed_batch_max: 4,
        ..one_run()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    busy_with_q0(&f, &p, &gate).await;
    submit_finals(&p, 1..20);
    settle().await;
    gate.open();
    for _ in 0..20 {
        assert_eq!(next(&mut results).await.degraded, None);
    }
    assert_eq!(f.embedder.sizes(), [1, 4, 4, 4, 4, 3]);
    // Health counts the same runs, so the mean batch under load can be read off a live service.
    let counters = p.health().counters;
    assert_eq!((counters.embed_runs, counters.embedded_texts), (6, 20));
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn finals_run_before_partials_and_a_speculation_a_final_takes_over_runs_with_finals() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    let p = Pipeline::start(f.stages(false), one_run()).await.unwrap();
    let mut results = p.results();
    busy_with_q0(&f, &p, &gate).await;
    p.submit(transcript("c", "u1", "q1 taken over", false))
        .unwrap();
    p.submit(transcript("c", "u2", "q2 still partial", false))
        .unwrap();
    settle().await;
    p.submit(transcript("c", "u1", "q1 taken over", true))
        .unwrap();
    p.submit(transcript("c", "u3", "q3 final", true)).unwrap();
    settle().await;
    gate.open();
    let mut answered = Vec::new();
    for _ in 0..3 {
        let r = next(&mut results).await;
        assert_eq!(r.degraded, None, "{}", r.utterance);
        answered.push(r.utterance);
    }
    answered.sort();
    assert_eq!(answered, ["u0", "u1", "u3"]);
    assert!(until(|| f.embedder.sizes().len() == 3, 20_000).await);
    let mut runs = f.embedder.batches.lock().unwrap().clone();
    runs[1].sort();
    assert_eq!(
        runs,
        [
            vec!["q0 first"],
            vec!["q1 taken over", "q3 final"],
            vec!["q2 still partial"]
        ],
        "finals (and the speculation a final reuses) first; partials never share their run"
    );
    assert_eq!(f.embedder.calls_for("q1 taken over"), 1);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_final_whose_deadline_passes_while_queued_for_the_embedder_is_never_embedded() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    let p = Pipeline::start(f.stages(false), one_run()).await.unwrap();
    let mut results = p.results();
    busy_with_q0(&f, &p, &gate).await;
    p.submit(transcript("c", "u1", "q1 queued", true)).unwrap();
    settle().await;
    for _ in 0..78 {
        // 100 - 2 (guard) - 20 (search reserve): both give up on the embedder.
        tokio::time::advance(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
    }
    for _ in 0..2 {
        let r = next(&mut results).await;
        assert_eq!(r.degraded.as_deref(), Some("embedder timeout"));
        assert_eq!(r.hits.len(), 5, "BM25 hits still served");
        assert!(r.deadline_met());
    }
    gate.open();
    settle().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        f.embedder.calls_for("q1 queued"),
        0,
        "stale work never runs"
    );
    assert_eq!(f.embedder.sizes(), [1]);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_run_degrades_every_request_in_it_and_the_stage_restarts() {
    quiet_injected_panics();
    let plan: Plan = Arc::new(|stage, id| {
        if stage == "embed" && id == 2 {
            Fault::Panic
        } else {
            Fault::None
        }
    });
    let f = Fakes::new(plan);
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    let p = Pipeline::start(f.stages(false), one_run()).await.unwrap();
    let mut results = p.results();
    busy_with_q0(&f, &p, &gate).await;
    submit_finals(&p, 1..4);
    settle().await;
    gate.open();
    let mut got = Vec::new();
    for _ in 0..4 {
        let r = next(&mut results).await;
        assert!(r.deadline_met());
        assert_eq!(r.hits.len(), 5, "BM25 hits still served");
        got.push((r.utterance, r.degraded));
    }
    got.sort();
    let failed = Some("embedder failed".to_string());
    assert_eq!(
        got,
        [
            ("u0".to_string(), None),
            ("u1".to_string(), failed.clone()),
            ("u2".to_string(), failed.clone()),
            ("u3".to_string(), failed),
        ]
    );
    assert_eq!(f.embedder.sizes(), [1, 3]);
    tokio::time::sleep(Duration::from_millis(100)).await; // past the restart backoff
    let embedder = &p.health().stages[0];
    assert_eq!((embedder.state, embedder.restarts), (StageState::Up, 1));
    p.submit(transcript("c", "u4", "q4 hello", true)).unwrap();
    assert_eq!(next(&mut results).await.degraded, None);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_finals_vector_ready_after_its_cut_off_still_goes_to_its_memory() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let writer = Arc::new(OfferedWriter {
        inner: f.writer.clone(),
        offers: Default::default(),
    });
    let stages = Stages {
        writer: writer.clone(),
        ..f.stages(false)
    };
    let p = Pipeline::start(stages, one_run()).await.unwrap();
    let mut results = p.results();
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    // The run starts while the final still waits for it, and ends after its caller gave up.
    busy_with_q0(&f, &p, &gate).await;
    tokio::time::advance(Duration::from_millis(500)).await;
    let r = next(&mut results).await;
    assert!(
        r.degraded
            .as_deref()
            .is_some_and(|d| d.starts_with("embedder timeout")),
        "{r:?}"
    );
    assert!(writer.offers.lock().unwrap().is_empty());
    gate.open();
    assert!(
        until(|| !writer.offers.lock().unwrap().is_empty(), 20_000).await,
        "the late vector was thrown away"
    );
    assert_eq!(
        writer.offers.lock().unwrap().clone(),
        vec![(
            "ns".to_string(),
            memory_id("c", "u0"),
            "q0 first".to_string(),
            vec!["q0 first".len() as f32, 1.0]
        )]
    );
    assert_eq!(f.embedder.calls_for("q0 first"), 1);
    p.shutdown().await.unwrap();
}
