//! The coordinator: owns every transcript from the queue to its result.
//!
//! It keeps per-utterance speculative state (partials start retrieval early; a newer partial
//! supersedes an older one; a final with the same text reuses it), bounds the work in flight,
//! sheds requests whose deadline passed while they queued, and spawns one task per final that
//! sends exactly one result, whatever the stages do (a panic in our own code included).

use futures::FutureExt;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout_at};

use crate::cancel::CancelToken;
use crate::embed_batch::lane;
use crate::health::ResultKind;
use crate::messages::{ContextResult, SearchFilter, Transcript, memory_id};
use crate::request::{Request, assemble, retrieve, serve};
use crate::speculation::{Retrieval, SharedRetrieval};
use crate::state::{PipelineState, becomes_memory, now};

pub(crate) enum Control {
    /// Serve what is queued, wait for everything in flight, then reply.
    Drain(oneshot::Sender<()>),
}

struct Speculation {
    text: String,
    cancel: CancelToken,
    abort: AbortHandle,
    shared: SharedRetrieval,
    /// Its embedding's lane: set when a final takes the speculation over.
    urgent: Arc<AtomicBool>,
    /// The task that emits the partial's result (with `emit_partials`).
    emit: Option<AbortHandle>,
}

impl Speculation {
    fn stop(self) {
        self.cancel.cancel();
        self.abort.abort();
        if let Some(e) = self.emit {
            e.abort();
        }
    }

    /// Hands the retrieval to the final of the same text: its embedding becomes as urgent as a
    /// final's, and the partial's result is not emitted any more (it could arrive after the final's).
    fn take_over(self) -> SharedRetrieval {
        self.urgent.store(true, Ordering::SeqCst);
        if let Some(e) = self.emit {
            e.abort();
        }
        self.shared
    }
}

#[derive(Default)]
struct Utterance {
    finalized: bool,
    speculation: Option<Speculation>,
    touched: Option<Instant>,
}

type Key = (String, String, String);

pub(crate) struct Coordinator {
    state: Arc<PipelineState>,
    utterances: HashMap<Key, Utterance>,
}

/// Builds the request for a transcript under the pipeline's settings.
pub(crate) fn request_for(state: &PipelineState, t: &Transcript) -> Request {
    let mut filter = SearchFilter::default();
    if state.config.exclude_recent_turns > 0 {
        filter.exclude_recent = Some((t.conversation.clone(), state.config.exclude_recent_turns));
    }
    Request {
        namespace: t.namespace.clone(),
        conversation: t.conversation.clone(),
        utterance: t.utterance.clone(),
        text: t.text.clone(),
        is_final: t.is_final,
        received_at: t.received_at,
        deadline: Instant::from_std(t.received_at + state.config.budget()),
        top_k: state.config.top_k,
        mode: state.config.mode,
        filter,
        cap_context: true,
        memory_id: becomes_memory(t).then(|| memory_id(&t.conversation, &t.utterance)),
    }
}

/// Runs `serve` so that a panic in it still yields a (degraded) result.
pub(crate) async fn serve_guarded(
    state: &PipelineState,
    req: &Request,
    speculative: Option<SharedRetrieval>,
) -> ContextResult {
    match AssertUnwindSafe(serve(state, req, speculative))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(conversation = %req.conversation, utterance = %req.utterance, "request task panicked; degraded result");
            let rerank = state.no_rerank("internal");
            assemble(
                state,
                req,
                Retrieval::failed("internal"),
                Vec::new(),
                rerank,
                None,
                Duration::ZERO,
            )
        }
    }
}

impl Coordinator {
    pub(crate) fn new(state: Arc<PipelineState>) -> Self {
        Self {
            state,
            utterances: HashMap::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut intake: mpsc::Receiver<Transcript>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let ttl = self.state.config.speculative_ttl();
        let mut sweep = tokio::time::interval((ttl / 4).max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(Control::Drain(reply)) = control.recv() => {
                    intake.close();
                    while let Some(t) = intake.recv().await {
                        self.on_transcript(t).await;
                    }
                    self.drain().await;
                    let _ = reply.send(());
                    return;
                }
                msg = intake.recv() => match msg {
                    Some(t) => self.on_transcript(t).await,
                    None => {
                        self.drain().await;
                        return;
                    }
                },
                _ = sweep.tick() => self.expire(now()),
            }
            self.state
                .utterances_tracked
                .store(self.utterances.len(), Ordering::Relaxed);
        }
    }

    async fn drain(&mut self) {
        for (_, u) in self.utterances.drain() {
            if let Some(s) = u.speculation {
                s.stop();
            }
        }
        let all = self.state.config.max_in_flight as u32;
        // Every request task holds a permit until its result is sent.
        let _ = self.state.permits.acquire_many(all).await;
    }

    fn expire(&mut self, at: Instant) {
        let ttl = self.state.config.speculative_ttl();
        self.utterances.retain(|_, u| {
            let live = u.touched.is_some_and(|t| at.duration_since(t) < ttl);
            if !live && let Some(s) = u.speculation.take() {
                s.stop();
            }
            live
        });
    }

    async fn on_transcript(&mut self, t: Transcript) {
        let key = (
            t.namespace.clone(),
            t.conversation.clone(),
            t.utterance.clone(),
        );
        if t.is_final {
            self.on_final(key, t).await
        } else {
            self.on_partial(key, t)
        }
    }

    async fn on_final(&mut self, key: Key, t: Transcript) {
        let u = self.utterances.entry(key).or_default();
        u.finalized = true;
        u.touched = Some(now());
        let reuse = match u.speculation.take() {
            Some(s) if s.text == t.text => Some(s.take_over()),
            Some(s) => {
                s.stop();
                None
            }
            None => None,
        };
        let state = Arc::clone(&self.state);
        let req = request_for(&state, &t);
        let stop_by = state.stop_by(req.deadline);
        let queued_past_stop = now() >= stop_by;
        // A permit is awaited only until the deadline: a final never leaves late for want of one.
        let permit = match timeout_at(stop_by, Arc::clone(&state.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_)) => return, // closed: the pipeline is gone
            Err(_) => None,
        };
        let Some(permit) = permit.filter(|_| now() < stop_by) else {
            // Its deadline passed while it queued: answer now rather than late.
            let shed = state.shed_result(&t);
            if !queued_past_stop {
                // It woke at its stop point: how late that ran is the lag to keep.
                state.observe_stop(stop_by, shed.finished_at);
            }
            state.emit(shed, ResultKind::Final);
            state.remember_transcript(&t);
            return;
        };
        tokio::spawn(async move {
            let result = serve_guarded(&state, &req, reuse).await;
            state.emit(result, ResultKind::Final);
            // Remembered after the result has left: writing never delays a result.
            state.remember_transcript(&t);
            drop(permit);
        });
    }

    fn on_partial(&mut self, key: Key, t: Transcript) {
        let u = self.utterances.entry(key).or_default();
        if u.finalized {
            self.state.stats.partial_ignored();
            return;
        }
        u.touched = Some(now());
        if u.speculation.as_ref().is_some_and(|s| s.text == t.text) {
            return;
        }
        if let Some(old) = u.speculation.take() {
            old.stop();
        }
        if self.state.permits.available_permits() == 0
            || self.state.memories_backlogged()
            || t.text.trim().is_empty()
        {
            return; // speculation is optional work: skip it when overloaded
        }
        let state = Arc::clone(&self.state);
        let req = request_for(&state, &t);
        let cancel = CancelToken::new();
        // Speculative work has no deadline of its own: a final may reuse it well after the partial's.
        let until = Instant::from_std(t.received_at) + state.config.speculative_ttl();
        let searching = Arc::new(AtomicBool::new(false));
        let urgent = lane(false);
        let task = {
            let (state, req, cancel, searching, urgent) = (
                Arc::clone(&state),
                req.clone(),
                cancel.clone(),
                Arc::clone(&searching),
                Arc::clone(&urgent),
            );
            tokio::spawn(async move {
                retrieve(&state, &req, until, until, &cancel, &searching, &urgent).await
            })
        };
        let abort = task.abort_handle();
        let shared = SharedRetrieval {
            result: async move { task.await.ok() }.boxed().shared(),
            searching,
        };
        let emit = state.config.emit_partials.then(|| {
            let (shared, cancel) = (shared.clone(), cancel.clone());
            tokio::spawn(async move {
                let stop_by = state.stop_by(req.deadline);
                let retrieval = match timeout_at(stop_by, shared.result).await {
                    Ok(Some(r)) => r,
                    Ok(None) => return, // superseded
                    Err(_) => Retrieval::failed("timeout"),
                };
                if cancel.is_cancelled() {
                    return; // superseded: never emit stale text
                }
                let hits = retrieval.hits.clone();
                let result = assemble(
                    &state,
                    &req,
                    retrieval,
                    hits,
                    state.no_rerank("partial"),
                    None,
                    Duration::ZERO,
                );
                state.observe_stop(stop_by, result.finished_at);
                state.emit(result, ResultKind::Partial);
            })
            .abort_handle()
        });
        u.speculation = Some(Speculation {
            text: t.text,
            cancel,
            abort,
            shared,
            urgent,
            emit,
        });
    }
}
