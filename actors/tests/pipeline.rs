//! Focused behaviour tests of the pipeline with fake stages. Deadline assertions run on tokio's
//! paused clock: a blocking stage call holds the clock still, so these tests move it by hand.

mod common;

use common::*;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;
use voicerag_actors::*;

const MS: Duration = Duration::from_millis(1);

async fn next(results: &mut ResultStream) -> ContextResult {
    tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .expect("a result in time")
        .expect("stream open")
}

/// Moves the paused clock forward 1 ms at a time, letting timers fire where they are due.
async fn advance_ms(n: u64) {
    for _ in 0..n {
        tokio::time::advance(MS).await;
        tokio::task::yield_now().await;
    }
}

/// A pipeline whose reranker holds every run at a gate until the gate opens (when the returned
/// guard drops), with the configured cost estimate rather than a calibrated one.
async fn start_with_held_reranker() -> (Fakes, Arc<Gate>, OpenOnDrop, PipelineHandle) {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let release = OpenOnDrop(gate.clone());
    *f.reranker.gate.lock().unwrap() = Some(gate.clone());
    let config = PipelineConfig {
        rerank_initial_ns_per_token: 1,
        // The estimate under test is the configured one, not a calibrated one.
        rerank_calibration_ms: 0,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(true), config).await.unwrap();
    (f, gate, release, p)
}

#[tokio::test(start_paused = true)]
async fn hung_reranker_result_leaves_by_the_deadline_in_hybrid_order_and_the_run_is_cancelled() {
    let (f, gate, _release, p) = start_with_held_reranker().await;
    let mut results = p.results();
    let t = transcript("c", "u1", "q1 hello", true);
    let deadline = t.received_at + Duration::from_millis(100);
    p.submit(t).unwrap();
    assert!(
        until(|| gate.entered.load(SeqCst) == 1, 20_000).await,
        "reranker never started"
    );
    advance_ms(100).await;
    let r = next(&mut results).await;
    assert_eq!(r.rerank, RerankOutcome::Skipped("timeout".into()));
    assert_eq!(r.degraded, None);
    assert!(
        r.deadline_met(),
        "finished {:?} after the deadline",
        r.finished_at - r.deadline
    );
    assert_eq!(r.deadline, deadline);
    let ids: Vec<_> = r.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["q1-m0", "q1-m1", "q1-m2", "q1-m3", "q1-m4"]);
    assert!(
        r.hits.iter().all(|h| h.rerank_score.is_none()),
        "late scores must be discarded"
    );
    assert!(
        until(|| f.reranker.counts.cancelled.load(SeqCst) == 1, 20_000).await,
        "the run was not cancelled"
    );
    assert_eq!(p.health().counters.rerank_skipped, 1);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rerank_still_waiting_behind_another_at_its_deadline_is_skipped_as_busy() {
    let (f, gate, _release, p) = start_with_held_reranker().await;
    let mut results = p.results();
    p.submit(transcript("c1", "u1", "q1 hello", true)).unwrap();
    assert!(
        until(|| gate.entered.load(SeqCst) == 1, 20_000).await,
        "reranker never started"
    );
    p.submit(transcript("c2", "u1", "q2 hello", true)).unwrap();
    assert!(
        until(|| f.retriever.counts.calls.load(SeqCst) == 2, 20_000).await,
        "the second final was never searched"
    );
    advance_ms(100).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let r = next(&mut results).await;
        assert!(r.deadline_met(), "{} late", r.conversation);
        assert_eq!(r.degraded, None);
        outcomes.insert(r.conversation.clone(), r.rerank);
    }
    // The first overran its deadline; the second never began.
    assert_eq!(outcomes["c1"], RerankOutcome::Skipped("timeout".into()));
    assert_eq!(outcomes["c2"], RerankOutcome::Skipped("busy".into()));
    assert_eq!(gate.entered.load(SeqCst), 1);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reranker_reranks_what_fits_then_learns_its_real_cost() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    // 100 tokens a pair at 0.1 ms a token: 10 ms a pair; 100 - 2 (guard) - 5 (margin) = 93 ms left.
    let reranker = FakeReranker::new(no_faults(), 100);
    let stages = Stages {
        reranker: Some(reranker.clone()),
        ..f.stages(false)
    };
    let config = PipelineConfig {
        rerank_initial_ns_per_token: 100_000,
        rerank_calibration_ms: 0,
        top_k: 20,
        max_context_chars: 100_000,
        ..Default::default()
    };
    let p = Pipeline::start(stages, config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 where is my key", true))
        .unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.rerank, RerankOutcome::Partial(9));
    assert_eq!(r.hits.len(), 20);
    for h in &r.hits[..9] {
        assert_eq!(
            h.rerank_score,
            Some(expected_score("q1 where is my key", &h.text))
        );
    }
    assert!(
        r.hits[..9]
            .windows(2)
            .all(|w| w[0].rerank_score >= w[1].rerank_score),
        "reranked part sorted"
    );
    let rest: Vec<_> = r.hits[9..].iter().map(|h| h.id.clone()).collect();
    let hybrid: Vec<_> = (9..20).map(|i| format!("q1-m{i}")).collect();
    assert_eq!(rest, hybrid, "the rest keeps hybrid order");
    // The fake costs microseconds: measured once, everything fits.
    p.submit(transcript("c", "u2", "q2 where is my key", true))
        .unwrap();
    assert_eq!(next(&mut results).await.rerank, RerankOutcome::Full);
    assert_eq!(*reranker.scored.lock().unwrap(), vec![9, 20]);
    let c = p.health().counters;
    assert_eq!((c.rerank_partial, c.rerank_full), (1, 1));
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn nothing_fits_means_skipped_for_budget_without_running_the_model() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let config = PipelineConfig {
        rerank_initial_ns_per_token: 1_000_000_000,
        rerank_calibration_ms: 0,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(true), config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.rerank, RerankOutcome::Skipped("budget".into()));
    assert_eq!(r.hits.len(), 5);
    assert!(f.reranker.scored.lock().unwrap().is_empty());
    assert_eq!(p.health().counters.rerank_skipped_budget, 1);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_reranker_is_off_and_hits_are_capped_by_count_and_characters() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let config = PipelineConfig {
        top_k: 5,
        max_context_chars: 40,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.rerank, RerankOutcome::Off);
    // "memory 0 for q1" is 15 characters: two fit in 40, and the result says three were cut.
    assert_eq!(r.hits.len(), 2);
    assert_eq!(r.capped, 3);
    assert!(r.hits.iter().map(|h| h.text.chars().count()).sum::<usize>() <= 40);
    // A one-off query is not a prompt's context: top_k means top_k, whatever the cap.
    let all = p
        .query(QueryRequest {
            namespace: "ns".into(),
            text: "q8 hi".into(),
            top_k: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((all.hits.len(), all.capped), (5, 0));
    let q = p
        .query(QueryRequest {
            namespace: "ns".into(),
            text: "q7 hi".into(),
            top_k: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(q.hits.len(), 1);
    assert_eq!(q.hits[0].id, "q7-m0");
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn embedder_past_its_restart_limit_stays_down_gives_bm25_results_then_comes_back() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    f.embedder.broken.store(true, SeqCst);
    let restart = RestartPolicy {
        max_restarts: 2,
        window_ms: 60_000,
        backoff_initial_ms: 10,
        backoff_max_ms: 10,
        unresponsive_ms: 2_000,
        retry_down_after_ms: 1_000,
        ..Default::default()
    };
    let p = Pipeline::start(
        f.stages(false),
        PipelineConfig {
            restart,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut results = p.results();
    for i in 0..3u64 {
        p.submit(transcript("c", &format!("u{i}"), &format!("q{i} hi"), true))
            .unwrap();
        let r = next(&mut results).await;
        assert_eq!(r.degraded.as_deref(), Some("embedder failed"), "q{i}");
        assert_eq!(r.hits.len(), 5, "BM25 hits still served");
        assert!(f.retriever.bm25_only.lock().unwrap().contains(&i));
        tokio::time::sleep(Duration::from_millis(50)).await; // past the backoff
    }
    let h = p.health();
    let embedder = &h.stages[0];
    assert_eq!(
        (embedder.name, embedder.state, embedder.restarts),
        ("embedder", StageState::Down, 2)
    );
    assert!(h.degraded);
    assert!(
        embedder
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("embedder broken")
    );
    let calls = f.embedder.counts.calls.load(SeqCst);
    p.submit(transcript("c", "u3", "q3 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded.as_deref(), Some("embedder down"));
    assert!(f.retriever.bm25_only.lock().unwrap().contains(&3));
    assert_eq!(
        f.embedder.counts.calls.load(SeqCst),
        calls,
        "a down stage is not called"
    );
    f.embedder.broken.store(false, SeqCst);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // retry_down_after
    assert_eq!(p.health().stages[0].state, StageState::Up);
    p.submit(transcript("c", "u4", "q4 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded, None);
    assert!(!f.retriever.bm25_only.lock().unwrap().contains(&4));
    assert_eq!(p.health().stages[0].restarts, 3);
    assert_eq!(p.health().counters.degraded, 4);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retriever_and_reranker_down_are_marked() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    f.retriever.broken.store(true, SeqCst);
    f.reranker.broken.store(true, SeqCst);
    let restart = RestartPolicy {
        max_restarts: 0,
        ..Default::default()
    };
    let p = Pipeline::start(
        f.stages(true),
        PipelineConfig {
            restart,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded.as_deref(), Some("retriever failed"));
    assert!(r.hits.is_empty());
    tokio::time::sleep(Duration::from_millis(10)).await;
    p.submit(transcript("c", "u2", "q2 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded.as_deref(), Some("retriever down"));
    assert_eq!(p.health().stages[1].state, StageState::Down);
    // Retriever back (after its retry), reranker now fails once and goes down.
    f.retriever.broken.store(false, SeqCst);
    tokio::time::sleep(Duration::from_secs(31)).await;
    p.submit(transcript("c", "u3", "q3 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.rerank, RerankOutcome::Failed("reranker crashed".into()));
    assert_eq!(r.hits.len(), 5, "hybrid order still served");
    tokio::time::sleep(Duration::from_millis(10)).await;
    p.submit(transcript("c", "u4", "q4 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.rerank, RerankOutcome::Skipped("down".into()));
    assert_eq!(r.degraded.as_deref(), Some("reranker down"));
    assert_eq!(
        r.hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>()[0],
        "q4-m0"
    );
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn final_reuses_speculative_retrieval_of_identical_text() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 hello", false)).unwrap();
    p.submit(transcript("c", "u1", "q1 hello there", false))
        .unwrap();
    tokio::time::sleep(MS).await;
    p.submit(transcript("c", "u1", "q1 hello there", true))
        .unwrap();
    let r = next(&mut results).await;
    assert!(r.is_final);
    assert_eq!(r.degraded, None);
    assert_eq!(r.hits.len(), 5);
    assert_eq!(
        f.embedder.calls_for("q1 hello there"),
        1,
        "the final reused the partial's work"
    );
    // A partial after its final is ignored.
    p.submit(transcript("c", "u1", "q1 hello there again", false))
        .unwrap();
    tokio::time::sleep(MS).await;
    assert_eq!(f.embedder.calls_for("q1 hello there again"), 0);
    let h = p.health();
    assert_eq!(h.counters.partials_ignored, 1);
    assert_eq!(
        h.counters.partial_results, 0,
        "partials emit nothing unless configured"
    );
    p.shutdown().await.unwrap();
    assert!(
        results.next().await.is_none(),
        "exactly one result for the one final"
    );
}

#[tokio::test(start_paused = true)]
async fn superseded_partials_are_never_run_on_stale_text() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    *f.embedder.gate.lock().unwrap() = Some(gate.clone());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 a", false)).unwrap();
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    // The embedder is busy with "q1 a": the next partial queues, then is superseded.
    p.submit(transcript("c", "u1", "q1 a b", false)).unwrap();
    p.submit(transcript("c", "u1", "q1 a b c", false)).unwrap();
    p.submit(transcript("c", "u1", "q1 a b c", true)).unwrap();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    gate.open();
    let r = next(&mut results).await;
    assert_eq!(r.text, "q1 a b c");
    assert_eq!(
        f.embedder.calls_for("q1 a b"),
        0,
        "stale text must not reach the model"
    );
    assert_eq!(f.embedder.calls_for("q1 a b c"), 1);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn speculative_state_expires_after_its_ttl() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let config = PipelineConfig {
        speculative_ttl_ms: 1_000,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u2", "q2 x", false)).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(f.embedder.calls_for("q2 x"), 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    p.submit(transcript("c", "u2", "q2 x", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.degraded, None);
    assert_eq!(
        f.embedder.calls_for("q2 x"),
        2,
        "expired work is not reused"
    );
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn partial_results_are_emitted_when_configured() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let config = PipelineConfig {
        emit_partials: true,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(true), config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 hi", false)).unwrap();
    let r = next(&mut results).await;
    assert!(!r.is_final);
    assert_eq!(r.rerank, RerankOutcome::Skipped("partial".into()));
    p.submit(transcript("c", "u1", "q1 hi", true)).unwrap();
    let r = next(&mut results).await;
    assert!(r.is_final);
    assert_eq!(r.rerank, RerankOutcome::Full);
    assert_eq!(f.embedder.calls_for("q1 hi"), 1);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn overload_sheds_requests_whose_deadline_passed_and_answers_every_final() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.retriever.gate.lock().unwrap() = Some(gate.clone());
    let config = PipelineConfig {
        queue_capacity: 1,
        max_in_flight: 1,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 a", true)).unwrap();
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    p.submit(transcript("c", "u2", "q2 a", true)).unwrap(); // taken, waits for a slot
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    p.submit(transcript("c", "u3", "q3 a", true)).unwrap(); // queued
    p.submit(transcript("c", "u4", "q4 a", true)).unwrap(); // queue full: shed at once
    let r = next(&mut results).await;
    assert_eq!(
        (r.utterance.as_str(), r.degraded.as_deref()),
        ("u4", Some("shed"))
    );
    advance_ms(100).await;
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(next(&mut results).await);
    }
    rest.sort_by(|a, b| a.utterance.cmp(&b.utterance));
    assert_eq!(rest[0].degraded.as_deref(), Some("retriever timeout"));
    assert!(rest[0].deadline_met());
    assert_eq!(rest[1].degraded.as_deref(), Some("shed"));
    assert_eq!(rest[2].degraded.as_deref(), Some("shed"));
    assert_eq!(p.health().counters.shed, 3);
    gate.open();
    p.shutdown().await.unwrap();
    assert_eq!(f.writer.ids().len(), 4, "shed finals are still remembered");
}

#[tokio::test(start_paused = true)]
async fn late_embedder_leaves_time_for_a_bm25_search() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.embedder.gate.lock().unwrap() = Some(gate.clone());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 a", true)).unwrap();
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    // 100 ms budget - 2 ms guard - 20 ms search reserve: the embedder is given up on at 78 ms.
    advance_ms(77).await;
    assert_eq!(f.retriever.counts.calls.load(SeqCst), 0);
    advance_ms(1).await;
    let r = next(&mut results).await;
    assert_eq!(r.degraded.as_deref(), Some("embedder timeout"));
    assert!(f.retriever.bm25_only.lock().unwrap().contains(&1));
    assert_eq!(r.hits.len(), 5);
    assert!(r.deadline_met());
    gate.open();
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_every_pending_memory_through_write_failures() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let writer = FakeWriter::new(3, no_faults());
    let stages = Stages {
        writer: writer.clone(),
        ..f.stages(false)
    };
    let config = PipelineConfig {
        writer_flush_ms: 600_000,
        ..Default::default()
    };
    let p = Pipeline::start(stages, config).await.unwrap();
    let mut results = p.results();
    for i in 0..5 {
        p.submit(transcript(
            "c",
            &format!("u{i}"),
            &format!("q{i} text"),
            true,
        ))
        .unwrap();
    }
    let mut agent = transcript("c", "a1", "q9 agent speech", true);
    agent.speaker = "agent".into();
    p.submit(agent).unwrap();
    for i in 0..2 {
        let r = AgentReply {
            namespace: "ns".into(),
            conversation: "c".into(),
            utterance: format!("r{i}"),
            text: "sure".into(),
        };
        p.reply(r).unwrap();
    }
    for _ in 0..6 {
        next(&mut results).await;
    }
    assert!(
        writer.ids().is_empty(),
        "nothing written before the flush interval"
    );
    assert_eq!(p.health().memories_pending, 7);
    p.shutdown().await.unwrap();
    let expected: std::collections::HashSet<String> =
        ["c/u0", "c/u1", "c/u2", "c/u3", "c/u4", "c/r0", "c/r1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(writer.ids(), expected);
    {
        let stored = writer.stored.lock().unwrap();
        assert_eq!(stored["c/u2"].text, "q2 text");
        assert_eq!(stored["c/u2"].speaker, "user");
        assert_eq!(stored["c/r1"].speaker, "agent");
        assert_eq!(stored["c/r1"].namespace, "ns");
    }
    assert_eq!(p.health().counters.memory_write_failures, 3);
    assert_eq!(
        p.submit(transcript("c", "u9", "q9", true)),
        Err(PipelineError::ShuttingDown)
    );
    assert!(results.next().await.is_none());
    assert_eq!(p.shutdown().await, Ok(()), "shutdown is idempotent");
}

#[tokio::test(start_paused = true)]
async fn memories_are_written_in_batches_in_the_background_and_queries_are_not_remembered() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let writer = FakeWriter::new(2, no_faults());
    let stages = Stages {
        writer: writer.clone(),
        ..f.stages(false)
    };
    let config = PipelineConfig {
        writer_batch_size: 2,
        writer_flush_ms: 50,
        writer_retry_ms: 10,
        ..Default::default()
    };
    let p = Pipeline::start(stages, config).await.unwrap();
    let mut results = p.results();
    for i in 0..3 {
        p.submit(transcript(
            "c",
            &format!("u{i}"),
            &format!("q{i} text"),
            true,
        ))
        .unwrap();
    }
    for _ in 0..3 {
        next(&mut results).await;
    }
    let q = p
        .query(QueryRequest {
            namespace: "ns".into(),
            text: "q5 what".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(q.hits.len(), 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        writer.ids().len(),
        3,
        "written (after 2 failed attempts) without a shutdown"
    );
    let h = p.health();
    assert_eq!(
        (
            h.counters.memories_written,
            h.counters.memory_write_failures,
            h.memories_pending
        ),
        (3, 2, 0)
    );
    assert_eq!(h.counters.query_results, 1);
    p.shutdown().await.unwrap();
    assert_eq!(writer.ids().len(), 3, "the query was not remembered");
    assert!(
        results.next().await.is_none(),
        "the query's result went to its caller only"
    );
}

#[tokio::test]
async fn bad_input_is_rejected_with_a_clear_error() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let bad = PipelineConfig {
        top_k: 0,
        ..Default::default()
    };
    match Pipeline::start(f.stages(false), bad).await {
        Err(PipelineError::Config(m)) => assert_eq!(m, "pipeline.top_k: must be > 0"),
        other => panic!("expected a config error, got {:?}", other.err()),
    }
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let mut t = transcript("c", "u1", "q1", true);
    t.namespace.clear();
    assert!(
        matches!(p.submit(t), Err(PipelineError::InvalidRequest(m)) if m.contains("namespace"))
    );
    let q = QueryRequest {
        namespace: "ns".into(),
        text: "x".into(),
        top_k: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        p.query(q).await,
        Err(PipelineError::InvalidRequest(_))
    ));
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stage_hung_past_the_unresponsive_limit_is_restarted() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.embedder.gate.lock().unwrap() = Some(gate.clone());
    let restart = RestartPolicy {
        unresponsive_ms: 150,
        backoff_initial_ms: 10,
        ..Default::default()
    };
    let p = Pipeline::start(
        f.stages(false),
        PipelineConfig {
            restart,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 a", true)).unwrap();
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    advance_ms(78).await; // the request gives up on the embedder and searches BM25-only
    assert_eq!(
        next(&mut results).await.degraded.as_deref(),
        Some("embedder timeout")
    );
    assert_eq!(
        p.health().stages[0].state,
        StageState::Up,
        "not yet past the limit"
    );
    advance_ms(73).await; // 150 ms into the call: killed
    assert_eq!(p.health().stages[0].state, StageState::Restarting);
    assert_eq!(p.health().stages[0].abandoned_calls, 1);
    advance_ms(11).await; // backoff
    // The fake has no fresh instance to give: the stage stays down while the hung call runs,
    // rather than start an actor that would call the engine the hung call may hold.
    assert!(until(|| p.health().stages[0].state == StageState::Down, 20_000).await);
    p.submit(transcript("c", "u2", "q2 a", true)).unwrap();
    assert_eq!(
        next(&mut results).await.degraded.as_deref(),
        Some("embedder down")
    );
    assert_eq!(
        gate.entered.load(SeqCst),
        1,
        "nothing called the held engine"
    );
    // The hung call returns: the stage starts again within a few backoffs.
    *f.embedder.gate.lock().unwrap() = None;
    gate.open();
    assert!(until(|| p.health().stages[0].abandoned_calls == 0, 20_000).await);
    for _ in 0..10 {
        advance_ms(1_000).await;
        if p.health().stages[0].state == StageState::Up {
            break;
        }
    }
    let h = p.health();
    assert_eq!(h.stages[0].state, StageState::Up, "{:?}", h.stages[0]);
    assert_eq!(h.stages[0].restarts, 1);
    assert_eq!(h.stages[0].abandoned_total, 1);
    assert!(
        h.stages[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("hung call"),
        "{:?}",
        h.stages[0]
    );
    p.submit(transcript("c", "u3", "q3 a", true)).unwrap();
    assert_eq!(next(&mut results).await.degraded, None);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn results_sent_before_anyone_listens_are_kept_for_the_first_stream() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    for i in 0..3 {
        p.submit(transcript("c", &format!("u{i}"), &format!("q{i} a"), true))
            .unwrap();
    }
    assert!(until(|| p.health().counters.results == 3, 20_000).await);
    let mut late = p.results();
    let mut got: Vec<String> = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut late).await.utterance);
    }
    got.sort();
    assert_eq!(got, ["u0", "u1", "u2"]);
    // Two streams open: both get every result.
    let mut second = p.results();
    p.submit(transcript("c", "u3", "q3 a", true)).unwrap();
    assert_eq!(next(&mut late).await.utterance, "u3");
    assert_eq!(next(&mut second).await.utterance, "u3");
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_serves_everything_already_submitted() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let config = PipelineConfig {
        max_in_flight: 2,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(true), config).await.unwrap();
    let mut results = p.results();
    for i in 0..20 {
        p.submit(transcript("c", &format!("u{i}"), &format!("q{i} a"), true))
            .unwrap();
    }
    p.shutdown().await.unwrap();
    let mut got = Vec::new();
    while let Some(r) = results.next().await {
        assert_eq!(r.degraded, None, "{}", r.utterance);
        got.push(r.utterance);
    }
    assert_eq!(got.len(), 20);
    assert_eq!(f.writer.ids().len(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_final_whose_speculative_work_is_stuck_embedding_falls_back_to_bm25_in_time() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.embedder.gate.lock().unwrap() = Some(gate.clone());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 a", false)).unwrap();
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    p.submit(transcript("c", "u1", "q1 a", true)).unwrap();
    advance_ms(78).await; // 100 - 2 (guard) - 20 (search reserve)
    let r = next(&mut results).await;
    assert_eq!(r.degraded.as_deref(), Some("embedder timeout"));
    assert_eq!(r.hits.len(), 5);
    assert!(f.retriever.bm25_only.lock().unwrap().contains(&1));
    assert!(r.deadline_met());
    assert_eq!(
        f.embedder.calls_for("q1 a"),
        1,
        "no second embedding of the same text"
    );
    gate.open();
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_relevance_floor_drops_weak_hits_and_says_how_many() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    f.retriever.similarity.store(true, SeqCst);
    let config = PipelineConfig {
        top_k: 10,
        min_similarity: 0.3,
        max_context_chars: 100_000,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 hi", true)).unwrap();
    let r = next(&mut results).await;
    // Similarities 1, 1/2, 1/3, 1/4, ...: three are at or above 0.3.
    assert_eq!(r.hits.len(), 3, "{:?}", r.hits);
    assert_eq!(r.floored, f.retriever.n.min(10) - 3);
    assert!(r.hits.iter().all(|h| h.similarity.unwrap() >= 0.3));
    p.shutdown().await.unwrap();

    // Without an embedding (BM25 only) there is no similarity to judge: nothing is floored.
    let f = Fakes::new(Arc::new(|stage: &str, _| {
        if stage == "embed" {
            Fault::Error
        } else {
            Fault::None
        }
    }));
    f.retriever.similarity.store(true, SeqCst);
    let config = PipelineConfig {
        top_k: 10,
        min_similarity: 0.3,
        max_context_chars: 100_000,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let q = p
        .query(QueryRequest {
            namespace: "ns".into(),
            text: "q2 hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(q.floored, 0);
    assert_eq!(q.hits.len(), 10.min(f.retriever.n));
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_question_only_about_time_is_spared_the_relevance_floor() {
    quiet_injected_panics();
    for (applied_as, kept) in [(TimeWindowUse::Filter, 3), (TimeWindowUse::Only, 10)] {
        let f = Fakes::new(no_faults());
        f.retriever.similarity.store(true, SeqCst);
        let window = TimeWindow {
            phrase: "this morning".into(),
            start_ms: 1,
            end_ms: 2,
            time_zone: "UTC".into(),
            applied_as,
        };
        *f.retriever.time_window.lock().unwrap() = Some(window.clone());
        let config = PipelineConfig {
            top_k: 10,
            min_similarity: 0.3,
            max_context_chars: 100_000,
            ..Default::default()
        };
        let p = Pipeline::start(f.stages(false), config).await.unwrap();
        let q = p
            .query(QueryRequest {
                namespace: "ns".into(),
                text: "q3 what did I say this morning".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        // Similarities 1, 1/2, 1/3, ...: the floor keeps three, unless the window is the answer.
        assert_eq!(q.hits.len(), kept.min(f.retriever.n), "{applied_as:?}");
        assert_eq!(
            q.time_window,
            Some(window),
            "the result says what was applied"
        );
        p.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_final_waiting_for_a_permit_is_shed_by_its_deadline() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.retriever.gate.lock().unwrap() = Some(gate.clone());
    let config = PipelineConfig {
        max_in_flight: 1,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    // A query with a long budget holds the only permit.
    let query = tokio::spawn({
        let p = p.clone();
        async move {
            let q = QueryRequest {
                namespace: "ns".into(),
                text: "q9 long".into(),
                budget: Some(Duration::from_secs(1)),
                ..Default::default()
            };
            p.query(q).await
        }
    });
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    p.submit(transcript("c", "u1", "q1 waits", true)).unwrap();
    advance_ms(100).await;
    // The query's search blocks the paused clock: the result must be there already.
    let mut shed = None;
    assert!(
        until(
            || {
                shed = results.next().now_or_never().flatten();
                shed.is_some()
            },
            20_000
        )
        .await,
        "no result by the deadline"
    );
    let r = shed.unwrap();
    assert_eq!(r.degraded.as_deref(), Some("shed"));
    assert!(
        r.deadline_met(),
        "finished {:?} after the deadline",
        r.finished_at - r.deadline
    );
    gate.open();
    assert!(query.await.unwrap().is_ok());
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_query_keeps_its_permit_until_served_even_if_its_caller_stops_waiting() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.retriever.gate.lock().unwrap() = Some(gate.clone());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let caller = tokio::spawn({
        let p = p.clone();
        async move {
            let q = QueryRequest {
                namespace: "ns".into(),
                text: "q1 abandoned".into(),
                ..Default::default()
            };
            p.query(q).await
        }
    });
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    assert_eq!(p.health().in_flight, 1);
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        p.health().in_flight,
        1,
        "the request is still being served: its permit is still taken"
    );
    advance_ms(100).await;
    assert!(until(|| p.health().in_flight == 0, 20_000).await);
    gate.open();
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_final_that_takes_over_a_partial_cancels_the_partials_result() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.embedder.gate.lock().unwrap() = Some(gate.clone());
    let config = PipelineConfig {
        emit_partials: true,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    p.submit(transcript("c", "u1", "q1 hi", false)).unwrap();
    assert!(until(|| gate.entered.load(SeqCst) == 1, 20_000).await);
    p.submit(transcript("c", "u1", "q1 hi", true)).unwrap();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    gate.open();
    let r = next(&mut results).await;
    assert!(r.is_final);
    assert_eq!(r.degraded, None);
    assert_eq!(
        f.embedder.calls_for("q1 hi"),
        1,
        "the final reused the work"
    );
    p.shutdown().await.unwrap();
    assert!(
        results.next().await.is_none(),
        "no partial result once its final took over"
    );
    assert_eq!(p.health().counters.partial_results, 0);
}

#[tokio::test]
async fn a_slow_memory_write_is_not_taken_for_a_hung_writer() {
    quiet_injected_panics();
    // The first write takes longer than a stage call may, as a publish ack can under a leader change.
    let plan: Plan = Arc::new(|stage, attempt| match (stage, attempt) {
        ("write", 0) => Fault::Slow(Duration::from_millis(300)),
        _ => Fault::None,
    });
    let f = Fakes::new(plan);
    let config = PipelineConfig {
        writer_flush_ms: 1,
        restart: RestartPolicy {
            unresponsive_ms: 50,
            ..Default::default()
        },
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    p.reply(AgentReply {
        namespace: "ns".into(),
        conversation: "c".into(),
        utterance: "r1".into(),
        text: "noted".into(),
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let writer = &p.health().stages[3];
    assert_eq!((writer.name, writer.restarts), ("writer", 0), "{writer:?}");
    assert_eq!(f.writer.ids().len(), 1);
    assert_eq!(
        f.writer.attempts.load(SeqCst),
        1,
        "written once, not retried"
    );
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_memory_queue_refuses_new_memories_and_reports_none_written_until_durable() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let writer = FakeWriter::new(0, no_faults());
    writer.down.store(true, SeqCst);
    let stages = Stages {
        writer: writer.clone(),
        ..f.stages(false)
    };
    let config = PipelineConfig {
        memory_queue_max: 3,
        writer_batch_size: 2,
        writer_flush_ms: 50,
        writer_retry_ms: 10,
        ..Default::default()
    };
    let p = Pipeline::start(stages, config).await.unwrap();
    let mut results = p.results();
    for i in 0..3 {
        p.submit(transcript(
            "c",
            &format!("u{i}"),
            &format!("q{i} text"),
            true,
        ))
        .unwrap();
        next(&mut results).await;
    }
    assert!(until(|| p.health().memories_pending == 3, 1000).await);
    advance_ms(200).await;
    assert!(p.health().counters.memory_write_failures > 0);

    // Full: a new reply and a new final are refused, clearly; a partial and a query still run.
    let reply = |u: &str| AgentReply {
        namespace: "ns".into(),
        conversation: "c".into(),
        utterance: u.into(),
        text: "noted".into(),
    };
    assert_eq!(
        p.reply(reply("r0")),
        Err(PipelineError::MemoryBacklog { pending: 3 })
    );
    let fact = Memory {
        id: "c/f0".into(),
        namespace: "ns".into(),
        conversation: "c".into(),
        speaker: "user".into(),
        text: "the vet moved it".into(),
        ts_ms: 1,
        supersedes: vec!["c/u0".into()],
        expires_at_ms: None,
    };
    assert_eq!(
        p.remember(fact),
        Err(PipelineError::MemoryBacklog { pending: 3 })
    );
    assert_eq!(
        p.submit(transcript("c", "u3", "q3 text", true)),
        Err(PipelineError::MemoryBacklog { pending: 3 })
    );
    p.submit(transcript("c", "u4", "q4 partial", false))
        .unwrap();
    let q = p
        .query(QueryRequest {
            namespace: "ns".into(),
            text: "q1 what".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!q.hits.is_empty());
    // Held in RAM only: nothing is reported written.
    let h = p.health();
    assert_eq!(
        (
            h.counters.memories_written,
            h.counters.memories_refused_backlog,
            h.memories_pending
        ),
        (0, 3, 3)
    );
    assert!(writer.ids().is_empty());

    // The store is back: the queued memories are written, and room returns.
    writer.down.store(false, SeqCst);
    advance_ms(6000).await;
    assert!(until(|| p.health().memories_pending == 0, 1000).await);
    let written: std::collections::HashSet<String> = ["c/u0", "c/u1", "c/u2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(writer.ids(), written, "the refused final was never queued");
    assert_eq!(p.health().counters.memories_written, 3);
    p.reply(reply("r1")).unwrap();
    p.shutdown().await.unwrap();
    assert!(writer.ids().contains("c/r1"));
    assert!(!writer.ids().contains("c/r0"));
}

#[tokio::test(start_paused = true)]
async fn remember_stores_a_fact_with_what_it_replaces() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let p = Pipeline::start(f.stages(false), PipelineConfig::default())
        .await
        .unwrap();
    let fact = Memory {
        id: "c/u9".into(),
        namespace: "ns".into(),
        conversation: "c".into(),
        speaker: "user".into(),
        text: "the vet moved the appointment to Friday".into(),
        ts_ms: 5,
        supersedes: vec!["c/u3".into()],
        expires_at_ms: Some(99),
    };
    for bad in [
        Memory {
            namespace: String::new(),
            ..fact.clone()
        },
        Memory {
            id: String::new(),
            ..fact.clone()
        },
        Memory {
            text: " ".into(),
            ..fact.clone()
        },
    ] {
        assert!(matches!(
            p.remember(bad),
            Err(PipelineError::InvalidRequest(_))
        ));
    }
    p.remember(fact.clone()).unwrap();
    // Shutdown flushes the writer's queue.
    p.shutdown().await.unwrap();
    let stored = f.writer.stored.lock().unwrap();
    assert_eq!(stored.len(), 1, "only the valid one");
    assert_eq!(
        stored["c/u9"], fact,
        "stored as given, supersedes and expiry included"
    );
}

#[tokio::test(start_paused = true)]
async fn a_memory_backlog_sheds_reranking_and_speculation_until_the_writer_catches_up() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let writer = FakeWriter::new(0, no_faults());
    writer.down.store(true, SeqCst);
    let stages = Stages {
        writer: writer.clone(),
        ..f.stages(true)
    };
    let config = PipelineConfig {
        memory_queue_max: 100,
        shed_optional_at: 2,
        writer_batch_size: 2,
        writer_flush_ms: 50,
        writer_retry_ms: 10,
        ..Default::default()
    };
    let p = Pipeline::start(stages, config).await.unwrap();
    let mut results = p.results();
    let backlog = RerankOutcome::Skipped("backlog".into());
    // One memory waiting: below the mark, the final is reranked.
    p.submit(transcript("c", "u0", "q0 text", true)).unwrap();
    assert_ne!(next(&mut results).await.rerank, backlog);
    p.submit(transcript("c", "u1", "q1 text", true)).unwrap();
    next(&mut results).await;
    assert!(until(|| p.health().memories_pending == 2, 1000).await);

    // At the mark: a partial starts no speculation, and the final is answered unreranked.
    p.submit(transcript("c", "u2", "q2 partial words", false))
        .unwrap();
    advance_ms(50).await;
    assert!(
        !f.embedder
            .texts
            .lock()
            .unwrap()
            .contains_key("q2 partial words"),
        "a partial speculated during a memory backlog"
    );
    p.submit(transcript("c", "u2", "q2 text", true)).unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.rerank, backlog);
    assert!(r.degraded.is_none(), "{:?}", r.degraded);
    assert!(!r.hits.is_empty());

    // The writer is back and drains the queue: reranking returns.
    writer.down.store(false, SeqCst);
    advance_ms(6000).await;
    assert!(until(|| p.health().memories_pending < 2, 1000).await);
    p.submit(transcript("c", "u3", "q3 text", true)).unwrap();
    assert_ne!(next(&mut results).await.rerank, backlog);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn utterance_state_leaves_after_its_ttl_however_many_conversations_came() {
    // A deployment sees new conversations without end: what the coordinator keeps per utterance
    // (speculation, "already final") must leave with time, not pile up.
    let f = Fakes::new(no_faults());
    let config = PipelineConfig {
        speculative_ttl_ms: 1_000,
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    for c in 0..300 {
        let conv = format!("c{c}");
        p.submit(transcript(&conv, "u1", "q1 where is my key", false))
            .unwrap();
        p.submit(transcript(&conv, "u1", "q1 where is my key", true))
            .unwrap();
        let r = next(&mut results).await;
        assert_eq!(r.conversation, conv);
    }
    assert!(
        until(|| p.health().utterances_tracked == 300, 10_000).await,
        "{:?}",
        p.health()
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(p.health().utterances_tracked, 0);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_users_final_offers_its_query_embedding_for_its_memory_and_nothing_else_does() {
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
    let p = Pipeline::start(stages, PipelineConfig::default())
        .await
        .unwrap();
    let mut results = p.results();
    // A final embedded afresh, and one that takes over its partial's embedding.
    p.submit(transcript("c", "u1", "q1 my dog is Rex", true))
        .unwrap();
    next(&mut results).await;
    p.submit(transcript("c", "u2", "q2 the vet on Friday", false))
        .unwrap();
    tokio::time::sleep(MS).await;
    p.submit(transcript("c", "u2", "q2 the vet on Friday", true))
        .unwrap();
    next(&mut results).await;
    // Nothing to offer: an agent's final, a one-off query, a partial without its final.
    let mut agent = transcript("c", "u3", "q3 noted", true);
    agent.speaker = "agent".into();
    p.submit(agent).unwrap();
    next(&mut results).await;
    p.query(QueryRequest {
        namespace: "ns".into(),
        text: "q4 what pets".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    p.submit(transcript("c", "u5", "q5 unfinished", false))
        .unwrap();
    tokio::time::sleep(MS).await;
    p.shutdown().await.unwrap();

    let offers = writer.offers.lock().unwrap().clone();
    let fake_vector = |text: &str| vec![text.len() as f32, 1.0];
    assert_eq!(
        offers,
        vec![
            (
                "ns".to_string(),
                memory_id("c", "u1"),
                "q1 my dog is Rex".to_string(),
                fake_vector("q1 my dog is Rex")
            ),
            (
                "ns".to_string(),
                memory_id("c", "u2"),
                "q2 the vet on Friday".to_string(),
                fake_vector("q2 the vet on Friday")
            ),
        ]
    );
    assert_eq!(
        f.embedder.calls_for("q2 the vet on Friday"),
        1,
        "the offered vector is the partial's, not a second run"
    );
    // What was offered is what became the memory: same namespace, id and text.
    let stored = f.writer.stored.lock().unwrap();
    for (ns, id, text, _) in &offers {
        let m = &stored[id];
        assert_eq!((&m.namespace, &m.text), (ns, text));
    }
}
