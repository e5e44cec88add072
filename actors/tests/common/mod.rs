//! Fake stages for the pipeline tests: deterministic, with faults chosen per request.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use voicerag_actors::*;

/// What a fake does on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Panic,
    Error,
    /// Blocks (real time) this long, or until cancelled where the stage can be.
    Hang(Duration),
    /// Sleeps (real time) this long, then answers.
    Slow(Duration),
}

/// Opens the gate when dropped, so a failing test never leaves a blocking thread (and with it
/// the runtime's shutdown) waiting forever.
pub struct OpenOnDrop(pub Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Chooses a fault for (stage, request id); must be a pure function for reproducibility.
pub type Plan = Arc<dyn Fn(&str, u64) -> Fault + Send + Sync>;

pub fn no_faults() -> Plan {
    Arc::new(|_, _| Fault::None)
}

/// splitmix64: a seeded, stateless hash, so faults depend only on (seed, stage, id).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The request id a test put in a text: "q<id> ...".
pub fn id_of(text: &str) -> u64 {
    text.trim_start_matches('q')
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// A gate the test opens to release blocked fakes.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    pub entered: AtomicUsize,
}

impl Gate {
    pub fn wait(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

fn act(
    stage: &str,
    plan: &Plan,
    id: u64,
    counts: &Counts,
    cancel: Option<&CancelToken>,
) -> Result<(), StageError> {
    match plan(stage, id) {
        Fault::None => Ok(()),
        Fault::Panic => {
            counts.panics.fetch_add(1, Ordering::SeqCst);
            panic!("injected {stage} panic on q{id}");
        }
        Fault::Error => Err(StageError::new(format!("injected {stage} error on q{id}"))),
        Fault::Hang(d) => {
            counts.hangs.fetch_add(1, Ordering::SeqCst);
            let until = std::time::Instant::now() + d;
            while std::time::Instant::now() < until {
                if cancel.is_some_and(|c| c.is_cancelled()) {
                    counts.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(StageError::new("cancelled"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
        Fault::Slow(d) => {
            std::thread::sleep(d);
            Ok(())
        }
    }
}

#[derive(Default)]
pub struct Counts {
    pub calls: AtomicUsize,
    pub panics: AtomicUsize,
    pub hangs: AtomicUsize,
    pub cancelled: AtomicUsize,
}

pub struct FakeEmbedder {
    pub plan: Plan,
    pub counts: Counts,
    /// Calls per text.
    pub texts: Mutex<HashMap<String, usize>>,
    /// If set, every call blocks on it first.
    pub gate: Mutex<Option<Arc<Gate>>>,
    /// While set, every call panics.
    pub broken: AtomicBool,
    /// The texts of each call, in call order.
    pub batches: Mutex<Vec<Vec<String>>>,
    /// Sessions it claims to have: calls it serves at once (1 unless a test sets more).
    pub sessions: AtomicUsize,
}

impl FakeEmbedder {
    pub fn new(plan: Plan) -> Arc<Self> {
        Arc::new(Self {
            plan,
            counts: Counts::default(),
            texts: Mutex::default(),
            gate: Mutex::new(None),
            broken: AtomicBool::new(false),
            batches: Mutex::default(),
            sessions: AtomicUsize::new(1),
        })
    }
    pub fn calls_for(&self, text: &str) -> usize {
        self.texts.lock().unwrap().get(text).copied().unwrap_or(0)
    }
    /// The number of texts in each call, in call order.
    pub fn sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }
}

impl Embedder for FakeEmbedder {
    fn parallel_runs(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        self.counts.calls.fetch_add(1, Ordering::SeqCst);
        for t in texts {
            *self.texts.lock().unwrap().entry(t.to_string()).or_default() += 1;
        }
        self.batches
            .lock()
            .unwrap()
            .push(texts.iter().map(|t| t.to_string()).collect());
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            g.wait();
        }
        if self.broken.load(Ordering::SeqCst) {
            self.counts.panics.fetch_add(1, Ordering::SeqCst);
            panic!("embedder broken");
        }
        // A model run fails as a whole: as the first text the plan faults says, if any.
        let id = texts
            .iter()
            .map(|t| id_of(t))
            .find(|&id| {
                matches!(
                    (self.plan)("embed", id),
                    Fault::Panic | Fault::Error | Fault::Hang(_)
                )
            })
            .unwrap_or_else(|| id_of(texts[0]));
        act("embed", &self.plan, id, &self.counts, None)?;
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }
}

/// Returns `n` hits per query, ids "q<id>-m<i>", hybrid score decreasing.
pub struct FakeRetriever {
    pub plan: Plan,
    pub counts: Counts,
    pub n: usize,
    /// Ids of requests searched without an embedding (BM25 only).
    pub bm25_only: Mutex<HashSet<u64>>,
    /// Texts searched without an embedding.
    pub bm25_texts: Mutex<HashSet<String>>,
    pub requests: Mutex<Vec<SearchRequest>>,
    pub broken: AtomicBool,
    pub gate: Mutex<Option<Arc<Gate>>>,
    /// Give embedded searches' hits a similarity (their score), as the real store does.
    pub similarity: AtomicBool,
    /// The time window every search says it applied (the real store reads it from the query).
    pub time_window: Mutex<Option<TimeWindow>>,
}

impl FakeRetriever {
    pub fn new(plan: Plan, n: usize) -> Arc<Self> {
        Arc::new(Self {
            plan,
            counts: Counts::default(),
            n,
            bm25_only: Mutex::default(),
            bm25_texts: Mutex::default(),
            requests: Mutex::default(),
            broken: AtomicBool::new(false),
            gate: Mutex::new(None),
            similarity: AtomicBool::new(false),
            time_window: Mutex::new(None),
        })
    }
}

pub fn hit(id: String, text: String, score: f32) -> Hit {
    Hit {
        id,
        text,
        score,
        rerank_score: None,
        vector_rank: None,
        bm25_rank: None,
        similarity: None,
        conversation: "c".into(),
        speaker: "user".into(),
        ts_ms: 0,
    }
}

impl Retriever for FakeRetriever {
    fn search(&self, r: &SearchRequest) -> Result<Vec<Hit>, StageError> {
        self.counts.calls.fetch_add(1, Ordering::SeqCst);
        let id = id_of(&r.text);
        if r.embedding.is_none() {
            self.bm25_only.lock().unwrap().insert(id);
            self.bm25_texts.lock().unwrap().insert(r.text.clone());
        }
        self.requests.lock().unwrap().push(r.clone());
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            g.wait();
        }
        if self.broken.load(Ordering::SeqCst) {
            self.counts.panics.fetch_add(1, Ordering::SeqCst);
            panic!("retriever broken");
        }
        act("search", &self.plan, id, &self.counts, None)?;
        let similarity = r.embedding.is_some() && self.similarity.load(Ordering::SeqCst);
        Ok((0..self.n.min(r.top_n))
            .map(|i| {
                let mut h = hit(
                    format!("q{id}-m{i}"),
                    format!("memory {i} for q{id}"),
                    1.0 / (i as f32 + 1.0),
                );
                h.similarity = similarity.then_some(h.score);
                h
            })
            .collect())
    }

    fn retrieve(&self, r: &SearchRequest) -> Result<Retrieved, StageError> {
        Ok(Retrieved {
            hits: self.search(r)?,
            time_window: self.time_window.lock().unwrap().clone(),
        })
    }

    /// Like the store: a search holds no lock a later one needs.
    fn after_hang(&self) -> Result<AfterHang<dyn Retriever>, StageError> {
        Ok(AfterHang::Reuse)
    }
}

/// The fake cross-encoder's score: a pure function of (query, passage), so a test can tell a
/// score that belongs to its own request from a late one.
pub fn expected_score(query: &str, passage: &str) -> f32 {
    let mut h = 0u64;
    for b in query.bytes().chain([0]).chain(passage.bytes()) {
        h = mix(h ^ b as u64);
    }
    (h % 10_000) as f32 / 10_000.0
}

pub struct FakeReranker {
    pub plan: Plan,
    pub counts: Counts,
    pub tokens_per_pair: usize,
    /// Passages scored per call.
    pub scored: Mutex<Vec<usize>>,
    pub gate: Mutex<Option<Arc<Gate>>>,
    pub broken: AtomicBool,
}

impl FakeReranker {
    pub fn new(plan: Plan, tokens_per_pair: usize) -> Arc<Self> {
        Arc::new(Self {
            plan,
            counts: Counts::default(),
            tokens_per_pair,
            scored: Mutex::default(),
            gate: Mutex::new(None),
            broken: AtomicBool::new(false),
        })
    }
}

impl Reranker for FakeReranker {
    fn pair_tokens(&self, _query: &str, passages: &[&str]) -> Vec<usize> {
        vec![self.tokens_per_pair; passages.len()]
    }
    fn score(
        &self,
        query: &str,
        passages: &[&str],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, StageError> {
        self.counts.calls.fetch_add(1, Ordering::SeqCst);
        self.scored.lock().unwrap().push(passages.len());
        if self.broken.load(Ordering::SeqCst) {
            self.counts.panics.fetch_add(1, Ordering::SeqCst);
            panic!("reranker broken");
        }
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            // Blocks like a hung ONNX run until terminated through the token.
            let g2 = g.clone();
            cancel.on_cancel(move || g2.open());
            g.wait();
            if cancel.is_cancelled() {
                self.counts.cancelled.fetch_add(1, Ordering::SeqCst);
                return Err(StageError::new("cancelled"));
            }
        }
        act(
            "rerank",
            &self.plan,
            id_of(query),
            &self.counts,
            Some(cancel),
        )?;
        Ok(passages.iter().map(|p| expected_score(query, p)).collect())
    }
}

/// Stores memories; fails the first `fail_first` write attempts (and panics on the ones `plan` says).
pub struct FakeWriter {
    pub stored: Mutex<HashMap<String, Memory>>,
    pub attempts: AtomicUsize,
    pub fail_first: usize,
    pub plan: Plan,
    pub counts: Counts,
    /// While set, every write fails and stores nothing (the durable store is unreachable).
    pub down: std::sync::atomic::AtomicBool,
}

impl FakeWriter {
    pub fn new(fail_first: usize, plan: Plan) -> Arc<Self> {
        Arc::new(Self {
            stored: Mutex::default(),
            attempts: AtomicUsize::new(0),
            fail_first,
            plan,
            counts: Counts::default(),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }
    pub fn ids(&self) -> HashSet<String> {
        self.stored.lock().unwrap().keys().cloned().collect()
    }
}

impl MemoryWriter for FakeWriter {
    fn write(&self, batch: &[Memory]) -> Result<(), StageError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StageError::new("stream unreachable"));
        }
        if attempt < self.fail_first {
            return Err(StageError::new("store unavailable"));
        }
        act("write", &self.plan, attempt as u64, &self.counts, None)?;
        let mut s = self.stored.lock().unwrap();
        for m in batch {
            s.insert(m.id.clone(), m.clone());
        }
        Ok(())
    }
}

pub struct Fakes {
    pub embedder: Arc<FakeEmbedder>,
    pub retriever: Arc<FakeRetriever>,
    pub reranker: Arc<FakeReranker>,
    pub writer: Arc<FakeWriter>,
}

impl Fakes {
    pub fn new(plan: Plan) -> Self {
        Self {
            embedder: FakeEmbedder::new(plan.clone()),
            retriever: FakeRetriever::new(plan.clone(), 20),
            reranker: FakeReranker::new(plan.clone(), 50),
            writer: FakeWriter::new(0, plan),
        }
    }
    pub fn stages(&self, with_reranker: bool) -> Stages {
        Stages {
            embedder: self.embedder.clone(),
            retriever: self.retriever.clone(),
            reranker: with_reranker.then(|| self.reranker.clone() as Arc<dyn Reranker>),
            writer: self.writer.clone(),
        }
    }
}

/// A transcript received now (on tokio's clock, so paused-clock tests work).
pub fn transcript(conv: &str, utt: &str, text: &str, is_final: bool) -> Transcript {
    Transcript {
        namespace: "ns".into(),
        conversation: conv.into(),
        utterance: utt.into(),
        speaker: "user".into(),
        text: text.into(),
        is_final,
        received_at: tokio::time::Instant::now().into_std(),
    }
}

/// Yields to the runtime until `cond` holds (at most `tries` times).
pub async fn until(mut cond: impl FnMut() -> bool, tries: usize) -> bool {
    for _ in 0..tries {
        if cond() {
            return true;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(200));
    }
    cond()
}

/// Keeps injected panics out of the test output (real panics still print).
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !(msg.starts_with("injected ") || msg.ends_with(" broken")) {
                default(info);
            }
        }));
    });
}

/// An offered embedding: namespace, memory id, text, vector.
pub type Offer = (String, String, String, Vec<f32>);

/// Records the embeddings the pipeline offers for memories to come, and stores like [`FakeWriter`].
pub struct OfferedWriter {
    pub inner: Arc<FakeWriter>,
    pub offers: Mutex<Vec<Offer>>,
}

impl MemoryWriter for OfferedWriter {
    fn write(&self, batch: &[Memory]) -> Result<(), StageError> {
        self.inner.write(batch)
    }
    fn offer_embedding(&self, namespace: &str, id: &str, text: &str, vector: &[f32]) {
        self.offers.lock().unwrap().push((
            namespace.into(),
            id.into(),
            text.into(),
            vector.to_vec(),
        ));
    }
}
