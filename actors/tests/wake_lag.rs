//! Results leave by their deadline when the pipeline's own wake-ups run late, as on saturated
//! cores where more threads are runnable than there are cores. Real time: the starvation is real.

mod common;

use common::*;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;
use voicerag_actors::*;

const FINALS: usize = 40;
/// Results the pipeline may take to learn how late its wake-ups run.
const LEARNING: usize = 10;

/// The runtime thread is held 8 ms at a time (a busy worker on a saturated core): a timer due at a
/// request's stop point fires up to 8 ms late, past the 2 ms guard. Every search hangs, so every
/// result is built at its stop point.
#[tokio::test(flavor = "current_thread")]
async fn results_leave_on_time_when_wake_ups_run_late() {
    quiet_injected_panics();
    let f = Fakes::new(no_faults());
    let gate = Arc::new(Gate::default());
    let _release = OpenOnDrop(gate.clone());
    *f.retriever.gate.lock().unwrap() = Some(gate.clone());
    let mut config = PipelineConfig::default();
    // The hung search is waited on, not restarted, for the whole test.
    config.restart.unresponsive_ms = 600_000;
    let p = Pipeline::start(f.stages(false), config).await.unwrap();
    let mut results = p.results();
    let hog = tokio::spawn(async {
        loop {
            std::thread::sleep(Duration::from_millis(8));
            tokio::task::yield_now().await;
        }
    });
    let mut late = Vec::new();
    for i in 0..FINALS {
        p.submit(transcript(
            "c",
            &format!("u{i}"),
            &format!("q{i} where"),
            true,
        ))
        .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(60), results.next())
            .await
            .expect("a result")
            .expect("stream open");
        assert_eq!(r.degraded.as_deref(), Some("retriever timeout"));
        if !r.deadline_met() {
            late.push((i, r.finished_at - r.deadline));
        }
    }
    hog.abort();
    assert!(gate.entered.load(SeqCst) >= 1);
    let late_after_learning = late.iter().filter(|(i, _)| *i >= LEARNING).count();
    // Without the lag kept, about three in four are late by up to 6 ms; a stray sleep longer
    // than any before it may still be late once.
    assert!(
        late_after_learning <= (FINALS - LEARNING) / 10,
        "late after learning: {late:?}"
    );
    gate.open();
    p.shutdown().await.unwrap();
}
