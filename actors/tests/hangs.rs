//! Hangs that cannot pile up. The fake embedder fails the way a model session does: a call holds
//! the session's lock for its whole run, so a hung call keeps the lock, and any later call on the
//! same instance waits behind it. Over thousands of finals on the paused clock, the threads stuck
//! in the engine stay within `restart.max_abandoned_calls` (+1 for the call of the live actor), no
//! call ever waits on a lock a hung call holds, and every final is answered, on time, marked.

mod common;

use common::*;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use voicerag_actors::*;

/// What every instance of one fake engine shares (instances come and go; counts stay).
#[derive(Default)]
struct Shared {
    /// Released by the test: until then a hanging call blocks (holding its session's lock).
    gate: Arc<Gate>,
    /// Threads inside `embed` now, and the most ever.
    in_call: AtomicUsize,
    max_in_call: AtomicUsize,
    /// Calls that found their session's lock taken (waited behind another call).
    contended: AtomicUsize,
    instances: AtomicUsize,
    hangs: AtomicUsize,
}

/// One "model session": a lock held for the whole run, as `ModelSession::run` does.
struct SessionEmbedder {
    session: Mutex<()>,
    shared: Arc<Shared>,
    /// Whether `after_hang` hands out a fresh instance (else the stage must wait).
    fresh: bool,
    hang_every: u64,
}

impl SessionEmbedder {
    fn new(shared: Arc<Shared>, fresh: bool, hang_every: u64) -> Arc<Self> {
        shared.instances.fetch_add(1, SeqCst);
        Arc::new(Self {
            session: Mutex::new(()),
            shared,
            fresh,
            hang_every,
        })
    }
}

struct InCall<'a>(&'a Shared);

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.0.in_call.fetch_sub(1, SeqCst);
    }
}

impl Embedder for SessionEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        let now = self.shared.in_call.fetch_add(1, SeqCst) + 1;
        self.shared.max_in_call.fetch_max(now, SeqCst);
        let _in_call = InCall(&self.shared);
        let _session = match self.session.try_lock() {
            Ok(g) => g,
            Err(_) => {
                self.shared.contended.fetch_add(1, SeqCst);
                self.session.lock().unwrap_or_else(|p| p.into_inner())
            }
        };
        if texts.iter().any(|t| id_of(t) % self.hang_every == 7) {
            self.shared.hangs.fetch_add(1, SeqCst);
            self.shared.gate.wait(); // with the session's lock held
        }
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }

    fn after_hang(&self) -> Result<AfterHang<dyn Embedder>, StageError> {
        Ok(if self.fresh {
            AfterHang::Fresh(SessionEmbedder::new(
                Arc::clone(&self.shared),
                true,
                self.hang_every,
            ))
        } else {
            AfterHang::Wait
        })
    }
}

const CAP: usize = 3;

fn config() -> PipelineConfig {
    PipelineConfig {
        max_in_flight: 8,
        queue_capacity: 4096,
        writer_flush_ms: 20,
        writer_retry_ms: 5,
        restart: RestartPolicy {
            max_restarts: 100_000,
            backoff_initial_ms: 1,
            backoff_max_ms: 5,
            unresponsive_ms: 150,
            retry_down_after_ms: 100,
            max_abandoned_calls: CAP,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Drives the paused clock 1 ms at a time while stage calls run on real threads.
fn drive_clock(driving: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while driving.load(SeqCst) {
            tokio::time::advance(Duration::from_millis(1)).await;
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(100));
        }
    })
}

/// Submits finals `ids` in waves of 20, checks each result, returns them by utterance.
async fn serve_finals(
    p: &PipelineHandle,
    results: &mut ResultStream,
    ids: std::ops::Range<u64>,
    shared: &Shared,
) -> HashMap<String, ContextResult> {
    let mut got = HashMap::new();
    let ids: Vec<u64> = ids.collect();
    for wave in ids.chunks(20) {
        for &id in wave {
            p.submit(transcript(
                "c",
                &format!("u{id}"),
                &format!("q{id} words"),
                true,
            ))
            .unwrap();
        }
        for _ in wave {
            let r = tokio::time::timeout(Duration::from_secs(120), results.next())
                .await
                .expect("a result is missing")
                .expect("stream open");
            assert!(r.deadline_met(), "{} late", r.utterance);
            let previous = got.insert(r.utterance.clone(), r);
            assert!(previous.is_none(), "two results for one final");
        }
        assert!(
            shared.in_call.load(SeqCst) <= CAP + 1,
            "threads stuck in the engine: {}",
            shared.in_call.load(SeqCst)
        );
    }
    got
}

fn stage<'a>(h: &'a Health, name: &str) -> &'a StageHealth {
    h.stages.iter().find(|s| s.name == name).unwrap()
}

async fn wait_for(p: &PipelineHandle, what: &str, cond: impl Fn(&Health) -> bool) {
    for _ in 0..200_000 {
        if cond(&p.health()) {
            return;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(50));
    }
    panic!("{what}: {:?}", p.health());
}

fn embedder_degraded(r: &ContextResult) -> bool {
    r.degraded.as_deref().unwrap_or("").contains("embedder")
}

#[tokio::test(start_paused = true)]
async fn hung_sessions_are_replaced_and_bounded_by_the_cap() {
    quiet_injected_panics();
    let shared = Arc::new(Shared::default());
    let _release = OpenOnDrop(shared.gate.clone());
    let fakes = Fakes::new(no_faults());
    let mut stages = fakes.stages(false);
    stages.embedder = SessionEmbedder::new(Arc::clone(&shared), true, 50);
    let p = Pipeline::start(stages, config()).await.unwrap();
    let mut results = p.results();
    let driving = Arc::new(AtomicBool::new(true));
    let driver = drive_clock(driving.clone());

    const N: u64 = 2_000;
    let got = serve_finals(&p, &mut results, 0..N, &shared).await;
    assert_eq!(got.len() as u64, N, "every final answered once");
    // Each hang was abandoned; the first CAP got a fresh session each, then the stage stayed down.
    let h = p.health();
    let embedder = stage(&h, "embedder");
    assert_eq!(embedder.abandoned_calls, CAP, "{h:?}");
    assert_eq!(h.abandoned_calls, CAP);
    assert_eq!(embedder.state, StageState::Down, "{h:?}");
    assert_eq!(shared.hangs.load(SeqCst), CAP, "no call after the cap");
    assert_eq!(
        shared.instances.load(SeqCst),
        CAP,
        "one fresh session per hang below the cap"
    );
    assert_eq!(
        shared.contended.load(SeqCst),
        0,
        "no call waited on a hung call's lock"
    );
    assert!(shared.max_in_call.load(SeqCst) <= CAP + 1);
    // Once down, finals degrade at once, marked.
    let down = got
        .values()
        .filter(|r| r.degraded.as_deref() == Some("embedder down"))
        .count();
    assert!(down as u64 > N / 2, "{down} of {N} marked embedder down");
    for r in got.values() {
        let id: u64 = r.utterance[1..].parse().unwrap();
        if id % 50 == 7 {
            assert!(embedder_degraded(r), "a hung embed is marked: {r:?}");
        }
    }

    // The hung calls return: the stage comes back on a fresh session and serves again.
    shared.gate.open();
    wait_for(&p, "embedder back up", |h| {
        let e = stage(h, "embedder");
        e.state == StageState::Up && e.abandoned_calls == 0
    })
    .await;
    let after = serve_finals(&p, &mut results, N..N + 200, &shared).await;
    assert_eq!(after.len(), 200);
    assert!(
        after.values().any(|r| r.degraded.is_none()),
        "the renewed embedder serves"
    );
    assert_eq!(shared.contended.load(SeqCst), 0);
    driving.store(false, SeqCst);
    driver.await.unwrap();
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_a_fresh_session_the_stage_waits_down_for_the_hung_call() {
    quiet_injected_panics();
    let shared = Arc::new(Shared::default());
    let _release = OpenOnDrop(shared.gate.clone());
    let fakes = Fakes::new(no_faults());
    let mut stages = fakes.stages(false);
    stages.embedder = SessionEmbedder::new(Arc::clone(&shared), false, 50);
    let p = Pipeline::start(stages, config()).await.unwrap();
    let mut results = p.results();
    let driving = Arc::new(AtomicBool::new(true));
    let driver = drive_clock(driving.clone());

    const N: u64 = 1_000;
    let got = serve_finals(&p, &mut results, 0..N, &shared).await;
    assert_eq!(got.len() as u64, N);
    let h = p.health();
    let embedder = stage(&h, "embedder");
    assert_eq!(embedder.state, StageState::Down, "{h:?}");
    assert_eq!(embedder.abandoned_calls, 1, "{h:?}");
    assert_eq!(shared.hangs.load(SeqCst), 1);
    assert_eq!(shared.instances.load(SeqCst), 1);
    assert_eq!(
        shared.contended.load(SeqCst),
        0,
        "no restart called the engine the hung call holds"
    );
    assert_eq!(shared.max_in_call.load(SeqCst), 1);
    assert!(got.values().filter(|r| embedder_degraded(r)).count() as u64 > N / 2);

    shared.gate.open();
    wait_for(&p, "embedder back up", |h| {
        let e = stage(h, "embedder");
        e.state == StageState::Up && e.abandoned_calls == 0
    })
    .await;
    assert_eq!(shared.instances.load(SeqCst), 1);
    driving.store(false, SeqCst);
    driver.await.unwrap();
    p.shutdown().await.unwrap();
}

/// A memory writer with one "transaction lock" held for a whole write, like LMDB's write lock.
struct LockedWriter {
    lock: Mutex<()>,
    shared: Arc<Shared>,
    stored: Mutex<HashMap<String, Memory>>,
}

impl MemoryWriter for LockedWriter {
    fn write(&self, batch: &[Memory]) -> Result<(), StageError> {
        let now = self.shared.in_call.fetch_add(1, SeqCst) + 1;
        self.shared.max_in_call.fetch_max(now, SeqCst);
        let _in_call = InCall(&self.shared);
        let _tx = match self.lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                self.shared.contended.fetch_add(1, SeqCst);
                self.lock.lock().unwrap_or_else(|p| p.into_inner())
            }
        };
        if self.shared.hangs.fetch_add(1, SeqCst) == 0 {
            self.shared.gate.wait(); // the first write hangs, holding the lock
        }
        let mut stored = self.stored.lock().unwrap();
        for m in batch {
            stored.insert(m.id.clone(), m.clone());
        }
        Ok(())
    }
    // No `after_hang`: the default waits for the hung write, as the store's writer does.
}

#[tokio::test(start_paused = true)]
async fn a_hung_writer_waits_down_and_loses_no_memory() {
    quiet_injected_panics();
    let shared = Arc::new(Shared::default());
    let _release = OpenOnDrop(shared.gate.clone());
    let fakes = Fakes::new(no_faults());
    let mut stages = fakes.stages(false);
    let writer = Arc::new(LockedWriter {
        lock: Mutex::new(()),
        shared: Arc::clone(&shared),
        stored: Mutex::default(),
    });
    stages.writer = writer.clone();
    let p = Pipeline::start(
        stages,
        PipelineConfig {
            writer_unresponsive_ms: 150,
            ..config()
        },
    )
    .await
    .unwrap();
    let mut results = p.results();
    let driving = Arc::new(AtomicBool::new(true));
    let driver = drive_clock(driving.clone());

    const N: u64 = 1_000;
    let got = serve_finals(&p, &mut results, 0..N, &shared).await;
    assert_eq!(got.len() as u64, N);
    wait_for(&p, "writer held down", |h| {
        let w = stage(h, "writer");
        w.state == StageState::Down && w.abandoned_calls == 1
    })
    .await;
    assert_eq!(
        shared.contended.load(SeqCst),
        0,
        "no write waited on the hung one's lock"
    );
    assert_eq!(shared.max_in_call.load(SeqCst), 1);
    assert!(p.health().memories_pending > 0);

    shared.gate.open();
    wait_for(&p, "every memory written", |h| {
        stage(h, "writer").state == StageState::Up && h.memories_pending == 0
    })
    .await;
    driving.store(false, SeqCst);
    driver.await.unwrap();
    p.shutdown().await.unwrap();
    let stored = writer.stored.lock().unwrap();
    for id in 0..N {
        assert!(
            stored.contains_key(&format!("c/u{id}")),
            "memory u{id} lost"
        );
    }
}
