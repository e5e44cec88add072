//! Micro-batching of embeddings: requests waiting for the embedder at the same moment are embedded
//! in one run.
//!
//! Up to `embed_parallel` runs at a time go to the embedder stage (a model session each, one core's
//! worth of work). A request that finds a run slot free is sent at once, with no added wait; requests
//! that arrive while every slot is busy are gathered and sent together in the next run, at most
//! `embed_batch_max` of them. With one slot, a second core would idle while a small run holds the
//! only one and the next requests queue behind it. Finals and queries come first: partials' speculative embeddings run
//! in batches of their own, only when no final or query is waiting (a speculation a final has taken
//! over is promoted to the finals' lane). A request whose caller gave up (cancelled, or past its
//! `by`) is dropped before its run. Runs go through the supervised stage actor, so a batch that
//! panics closes every member's reply channel (each request degrades, "embedder failed") and the
//! stage restarts; a hung run is abandoned when the actor is, and the next batch goes to its
//! successor. A final's vector that is ready after its caller gave up is not thrown away: it is
//! offered to the memory writer, so the memory the final becomes is not embedded a second time
//! (under overload, that second embedding is what would push more finals past their cut-off).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::cancel::CancelToken;
use crate::health::Stats;
use crate::registry::Registry;
use crate::request::Call;
use crate::stage_actor::Job;
use crate::stages::{Embedder, MemoryWriter};
use crate::state::now;
use crate::supervisor::embed_runs;

/// What the batcher answers one request.
enum Answer {
    Vector(Vec<f32>),
    Failed(String),
    Down,
    /// Its caller gave up before its run.
    Expired,
}

struct EmbedRequest {
    text: String,
    /// `(namespace, memory id)` of the memory this text becomes (a user's final), if any.
    memory: Option<(String, String)>,
    /// Set: a final's or a query's (the first lane); clear: a partial's speculation.
    urgent: Arc<AtomicBool>,
    cancel: CancelToken,
    by: Instant,
    reply: oneshot::Sender<Answer>,
}

impl EmbedRequest {
    fn live(&self, at: Instant) -> bool {
        !self.cancel.is_cancelled() && at < self.by
    }
}

/// The lane flag of a request: `true` for a final or a query.
pub(crate) fn lane(urgent: bool) -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(urgent))
}

/// Where request tasks ask for embeddings. Cheap to clone.
#[derive(Clone)]
pub(crate) struct EmbedQueue {
    tx: mpsc::UnboundedSender<EmbedRequest>,
}

impl EmbedQueue {
    /// Starts the batcher task; it ends when every queue handle is dropped.
    pub(crate) fn start(
        registry: Arc<Registry>,
        stats: Arc<Stats>,
        max: usize,
        parallel: usize,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let batcher = Batcher {
            registry,
            stats,
            max: max.max(1),
            parallel: parallel.max(1),
            urgent: VecDeque::new(),
            speculative: VecDeque::new(),
        };
        tokio::spawn(batcher.run(rx));
        Self { tx }
    }

    /// Embeds `text` in the next run it fits in, waiting until `by` at most. On timeout `cancel` is
    /// cancelled, so a request still queued is never embedded.
    pub(crate) async fn embed(
        &self,
        text: String,
        memory: Option<(String, String)>,
        urgent: Arc<AtomicBool>,
        cancel: CancelToken,
        by: Instant,
    ) -> Call<Vec<f32>> {
        let (reply, rx) = oneshot::channel();
        let request = EmbedRequest {
            text,
            memory,
            urgent,
            cancel: cancel.clone(),
            by,
            reply,
        };
        if self.tx.send(request).is_err() {
            return Call::Down;
        }
        match timeout_at(by, rx).await {
            Ok(Ok(Answer::Vector(v))) => Call::Done(v),
            Ok(Ok(Answer::Failed(e))) => Call::Failed(e),
            Ok(Ok(Answer::Down)) => Call::Down,
            Ok(Ok(Answer::Expired)) | Err(_) => {
                cancel.cancel();
                Call::TimedOut
            }
            // The stage died with the batch queued or running.
            Ok(Err(_)) => Call::Crashed,
        }
    }
}

struct Batcher {
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    max: usize,
    /// Runs in flight at most (`pipeline.embed_parallel`; never more than the embedder's sessions).
    parallel: usize,
    urgent: VecDeque<EmbedRequest>,
    speculative: VecDeque<EmbedRequest>,
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<EmbedRequest>) {
        // Each run in flight sends one message here once the stage actor is done with it
        // (answered, panicked, hung past its limit, or the actor died with it queued).
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
        let mut running = 0usize;
        let mut open = true;
        loop {
            let waiting = !(self.urgent.is_empty() && self.speculative.is_empty());
            // Read each time: a renewed embedder may have other sessions.
            let slots = embed_runs(
                self.parallel,
                self.registry.engines.embedder.current().as_ref(),
            );
            if !waiting || running >= slots {
                if !open && !waiting && running == 0 {
                    return;
                }
                tokio::select! {
                    r = rx.recv(), if open => match r {
                        Some(r) => self.push(r),
                        None => open = false,
                    },
                    Some(()) = done_rx.recv(), if running > 0 => running -= 1,
                }
                continue;
            }
            // Everything that arrived meanwhile (during the last runs, or with the first request)
            // is a candidate for this run.
            while let Ok(r) = rx.try_recv() {
                self.push(r);
            }
            let batch = self.next_batch(now());
            if batch.is_empty() {
                continue;
            }
            if let Some(finished) = self.dispatch(batch) {
                running += 1;
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let _ = finished.await;
                    let _ = done.send(());
                });
            }
        }
    }

    fn push(&mut self, r: EmbedRequest) {
        if r.urgent.load(Ordering::SeqCst) {
            self.urgent.push_back(r);
        } else {
            self.speculative.push_back(r);
        }
    }

    /// The next run: up to `max` finals and queries, or, if none waits, up to `max` speculations.
    fn next_batch(&mut self, at: Instant) -> Vec<EmbedRequest> {
        // A speculation a final took over is as urgent as the final.
        let (promoted, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.speculative)
            .into_iter()
            .partition(|r| r.urgent.load(Ordering::SeqCst));
        self.speculative = rest;
        self.urgent.extend(promoted);
        // Whoever gave up is answered now and never embedded.
        for lane in [&mut self.urgent, &mut self.speculative] {
            for r in std::mem::take(lane) {
                if r.live(at) {
                    lane.push_back(r);
                } else {
                    let _ = r.reply.send(Answer::Expired);
                }
            }
        }
        let lane = if self.urgent.is_empty() {
            &mut self.speculative
        } else {
            &mut self.urgent
        };
        let n = lane.len().min(self.max);
        lane.drain(..n).collect()
    }

    /// Sends one run to the embedder stage; `None` if it could not be sent (its requests are
    /// answered "down").
    fn dispatch(&self, batch: Vec<EmbedRequest>) -> Option<oneshot::Receiver<()>> {
        let Some(actor) = self.registry.embedder.current() else {
            answer_down(batch);
            return None;
        };
        let members = Arc::new(Mutex::new(Some(batch)));
        let taken = Arc::clone(&members);
        let registry = Arc::clone(&self.registry);
        let stats = Arc::clone(&self.stats);
        let (finished, rx) = oneshot::channel();
        let job = Job {
            // Members are checked one by one when the run starts.
            cancel: CancelToken::new(),
            work: Box::new(move || {
                let batch = taken.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(batch) = batch {
                    // Read when the run starts: after a hang it may have been renewed.
                    let embedder = registry.engines.embedder.current();
                    let writer = registry.engines.writer.current();
                    run_batch(embedder.as_ref(), writer.as_ref(), &stats, batch);
                }
            }),
            finished: Some(finished),
        };
        if actor.send_message(job).is_err() {
            let batch = members.lock().unwrap_or_else(|p| p.into_inner()).take();
            answer_down(batch.unwrap_or_default());
            return None;
        }
        // From here only the job holds the members: if it is dropped unrun, their channels close.
        drop(members);
        Some(rx)
    }
}

fn answer_down(batch: Vec<EmbedRequest>) {
    for r in batch {
        let _ = r.reply.send(Answer::Down);
    }
}

/// One embedder call for every member still waiting; runs on the stage actor's blocking thread. A
/// panic here drops every member's reply sender, which their callers see as a crash. A vector whose
/// caller is gone by now goes to `writer` if its text becomes a memory.
fn run_batch(
    embedder: &dyn Embedder,
    writer: &dyn MemoryWriter,
    stats: &Stats,
    batch: Vec<EmbedRequest>,
) {
    let (live, stale): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.live(now()));
    for r in stale {
        let _ = r.reply.send(Answer::Expired);
    }
    if live.is_empty() {
        return;
    }
    stats.embed_run(live.len());
    let result = {
        let texts: Vec<&str> = live.iter().map(|r| r.text.as_str()).collect();
        embedder.embed(&texts)
    };
    match result {
        Ok(vectors) if vectors.len() == live.len() => {
            for (r, v) in live.into_iter().zip(vectors) {
                if let Err(Answer::Vector(v)) = r.reply.send(Answer::Vector(v))
                    && let Some((namespace, id)) = &r.memory
                {
                    writer.offer_embedding(namespace, id, &r.text, &v);
                }
            }
        }
        Ok(vectors) => {
            let e = format!(
                "embedder returned {} vectors for {} texts",
                vectors.len(),
                live.len()
            );
            for r in live {
                let _ = r.reply.send(Answer::Failed(e.clone()));
            }
        }
        Err(e) => {
            for r in live {
                let _ = r.reply.send(Answer::Failed(e.0.clone()));
            }
        }
    }
}
