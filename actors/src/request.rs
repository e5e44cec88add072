//! Serving one request: embed, search, rerank, cap, always by the deadline.
//!
//! Every stage call is awaited only until a point derived from the request's deadline; a stage
//! that is down, fails, crashes or is late makes the result degraded (and says why) instead of late.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::cancel::CancelToken;
use crate::embed_batch::lane;
use crate::messages::{
    ContextResult, Hit, RerankOutcome, SearchFilter, SearchMode, SearchRequest, StageTimings,
    TimeWindowUse,
};
use crate::registry::Slot;
use crate::rerank::{apply_scores, cap_hits, floor_hits};
use crate::speculation::{Retrieval, SharedRetrieval};
use crate::stage_actor::Job;
use crate::stages::StageError;
use crate::state::{PipelineState, now};

/// What a request asks for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub namespace: String,
    pub conversation: String,
    pub utterance: String,
    pub text: String,
    pub is_final: bool,
    pub received_at: std::time::Instant,
    pub deadline: Instant,
    pub top_k: usize,
    pub mode: SearchMode,
    pub filter: SearchFilter,
    /// Whether `max_context_chars` applies (context for a prompt) or not (a one-off query).
    pub cap_context: bool,
    /// The id of the memory this request's text becomes (a user's final), if it becomes one.
    pub memory_id: Option<String>,
}

/// How a stage call ended.
pub(crate) enum Call<T> {
    Done(T),
    Failed(String),
    /// The stage died with the call queued or running.
    Crashed,
    Down,
    TimedOut,
}

/// Sends `work` to the stage's current actor and waits for its answer until `by`. On timeout the
/// call's token is cancelled (a queued call is then skipped; a running reranker stops).
async fn call<T: Send + 'static>(
    slot: &Slot<Job>,
    token: CancelToken,
    by: Instant,
    work: impl FnOnce() -> Result<T, StageError> + Send + 'static,
) -> Call<T> {
    let Some(actor) = slot.current() else {
        return Call::Down;
    };
    let (tx, rx) = oneshot::channel();
    let job = Job {
        cancel: token.clone(),
        work: Box::new(move || drop(tx.send(work()))),
        finished: None,
    };
    if actor.send_message(job).is_err() {
        return Call::Down;
    }
    match timeout_at(by, rx).await {
        Ok(Ok(Ok(v))) => Call::Done(v),
        Ok(Ok(Err(e))) => Call::Failed(e.0),
        Ok(Err(_)) => Call::Crashed,
        Err(_) => {
            token.cancel();
            Call::TimedOut
        }
    }
}

/// A per-call token that is also cancelled when the request's token is.
fn child_of(parent: &CancelToken) -> CancelToken {
    let child = CancelToken::new();
    let c = child.clone();
    parent.on_cancel(move || c.cancel());
    child
}

/// Embeds (unless BM25 mode) and searches. The embedder is awaited until `embed_by` at most, so a
/// late embedder still leaves time for a BM25-only search, awaited until `search_by`. The embedding
/// is batched with others waiting at the same moment, in the lane `urgent` says (finals and queries
/// first; a speculation is promoted when a final takes it over).
pub(crate) async fn retrieve(
    state: &PipelineState,
    req: &Request,
    embed_by: Instant,
    search_by: Instant,
    cancel: &CancelToken,
    searching: &AtomicBool,
    urgent: &Arc<AtomicBool>,
) -> Retrieval {
    let mut out = Retrieval::default();
    let span =
        tracing::info_span!("embed", conversation = %req.conversation, utterance = %req.utterance);
    let embedding = if req.mode == SearchMode::Bm25 {
        None
    } else {
        let started = now();
        let r = state
            .embeds
            .embed(
                req.text.clone(),
                req.memory_id
                    .as_ref()
                    .map(|id| (req.namespace.clone(), id.clone())),
                Arc::clone(urgent),
                child_of(cancel),
                embed_by,
            )
            .instrument(span)
            .await;
        out.embed = now() - started;
        match r {
            Call::Done(v) => Some(v),
            other => {
                out.degraded.push(match other {
                    Call::Down => "embedder down",
                    Call::TimedOut => "embedder timeout",
                    _ => "embedder failed",
                });
                if let Call::Failed(e) = other {
                    tracing::warn!(conversation = %req.conversation, utterance = %req.utterance, error = %e, "embedder failed; BM25 only");
                }
                None
            }
        }
    };
    out.embedding = embedding.clone();
    let search = SearchRequest {
        namespace: req.namespace.clone(),
        text: req.text.clone(),
        embedding,
        mode: req.mode,
        top_n: state.config.candidates.max(req.top_k),
        filter: req.filter.clone(),
    };
    searching.store(true, Ordering::SeqCst);
    // The engine is read when the call runs: after a hang it may have been renewed.
    let registry = Arc::clone(&state.registry);
    let span =
        tracing::info_span!("search", conversation = %req.conversation, utterance = %req.utterance);
    let started = now();
    let r = call(
        &state.registry.retriever,
        child_of(cancel),
        search_by,
        move || registry.engines.retriever.current().retrieve(&search),
    )
    .instrument(span)
    .await;
    out.search = now() - started;
    match r {
        Call::Done(found) => {
            // A question only about time relates to its memories by time alone: no floor.
            let only_time = found
                .time_window
                .as_ref()
                .is_some_and(|w| w.applied_as == TimeWindowUse::Only);
            out.time_window = found.time_window;
            let floor = if only_time {
                f32::NEG_INFINITY
            } else {
                state.config.min_similarity
            };
            (out.hits, out.floored) = floor_hits(found.hits, floor, req.top_k)
        }
        Call::Down => out.degraded.push("retriever down"),
        Call::TimedOut => out.degraded.push("retriever timeout"),
        Call::Crashed => out.degraded.push("retriever failed"),
        Call::Failed(e) => {
            tracing::warn!(conversation = %req.conversation, utterance = %req.utterance, error = %e, "retriever failed; no hits");
            out.degraded.push("retriever failed");
        }
    }
    out
}

/// What a rerank run answered.
enum RerankRun {
    /// Nothing fitted in the time left.
    Budget,
    Scored(Vec<f32>),
}

/// Reranks as many top candidates as fit before the deadline; hybrid order otherwise.
pub(crate) async fn rerank(
    state: &PipelineState,
    req: &Request,
    hits: Vec<Hit>,
    cancel: &CancelToken,
) -> (Vec<Hit>, RerankOutcome, Option<&'static str>, Duration) {
    let (Some(slot), true) = (
        state.registry.reranker.as_ref(),
        state.registry.engines.reranker.is_some(),
    ) else {
        return (hits, RerankOutcome::Off, None, Duration::ZERO);
    };
    if state.memories_backlogged() {
        // Optional work yields to memories waiting to become durable.
        return (
            hits,
            RerankOutcome::Skipped("backlog".into()),
            None,
            Duration::ZERO,
        );
    }
    let registry = Arc::clone(&state.registry);
    if hits.is_empty() {
        return (
            hits,
            RerankOutcome::Skipped("no candidates".into()),
            None,
            Duration::ZERO,
        );
    }
    let stop_by = state.stop_by(req.deadline);
    let plan_by = stop_by
        .checked_sub(state.config.rerank_safety_margin())
        .unwrap_or(stop_by);
    let passages: Vec<String> = hits.iter().map(|h| h.text.clone()).collect();
    let query = req.text.clone();
    let cost = Arc::clone(&state.cost);
    let token = child_of(cancel);
    let run_token = token.clone();
    // Whether the run began before the deadline: a timeout then means it overran ("timeout"), and
    // otherwise that it waited behind other reranks the whole time ("busy").
    let began = Arc::new(AtomicBool::new(false));
    let run_began = Arc::clone(&began);
    let work = move || -> Result<RerankRun, StageError> {
        run_began.store(true, Ordering::SeqCst);
        // Read when the run starts: after a hang it may have been renewed.
        let Some(reranker) = registry.engines.reranker.as_ref().map(|c| c.current()) else {
            return Err(StageError::new("no reranker"));
        };
        let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
        let tokens = reranker.pair_tokens(&query, &refs);
        if tokens.len() != refs.len() {
            return Err(StageError::new(format!(
                "pair_tokens gave {} counts for {} passages",
                tokens.len(),
                refs.len()
            )));
        }
        // Time left is measured when the run starts, after any wait in the mailbox.
        let left = plan_by.saturating_duration_since(Instant::now());
        let m = cost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan(&tokens, left);
        if m == 0 {
            return Ok(RerankRun::Budget);
        }
        let total: usize = tokens[..m].iter().sum();
        let started = std::time::Instant::now();
        let result = reranker.score(&query, &refs[..m], &run_token);
        let elapsed = started.elapsed();
        let mut cost = cost.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(scores) if scores.len() == m => {
                cost.observe(total, elapsed);
                Ok(RerankRun::Scored(scores))
            }
            Ok(scores) => Err(StageError::new(format!(
                "reranker gave {} scores for {m} passages",
                scores.len()
            ))),
            Err(e) => {
                if run_token.is_cancelled() {
                    if Instant::now() >= stop_by {
                        cost.observe_timeout(total, elapsed);
                    } else {
                        cost.observe_lower_bound(total, elapsed);
                    }
                }
                Err(e)
            }
        }
    };
    let span =
        tracing::info_span!("rerank", conversation = %req.conversation, utterance = %req.utterance);
    let started = now();
    let r = call(slot, token, stop_by, work).instrument(span).await;
    let took = now() - started;
    match r {
        Call::Done(RerankRun::Budget) => {
            (hits, RerankOutcome::Skipped("budget".into()), None, took)
        }
        Call::Done(RerankRun::Scored(scores)) => {
            let m = scores.len();
            let outcome = if m >= hits.len() {
                RerankOutcome::Full
            } else {
                RerankOutcome::Partial(m)
            };
            (apply_scores(hits, &scores), outcome, None, took)
        }
        Call::Failed(e) => {
            tracing::warn!(conversation = %req.conversation, utterance = %req.utterance, error = %e, "rerank failed; hybrid order");
            (hits, RerankOutcome::Failed(e), None, took)
        }
        Call::Crashed => (
            hits,
            RerankOutcome::Failed("reranker crashed".into()),
            None,
            took,
        ),
        Call::Down => (
            hits,
            RerankOutcome::Skipped("down".into()),
            Some("reranker down"),
            took,
        ),
        // Late scores are discarded: the reply channel is gone and the run was told to stop.
        Call::TimedOut => {
            let why = if began.load(Ordering::SeqCst) {
                "timeout"
            } else {
                "busy"
            };
            (hits, RerankOutcome::Skipped(why.into()), None, took)
        }
    }
}

/// The final step: cap the hits and stamp the times.
pub(crate) fn assemble(
    state: &PipelineState,
    req: &Request,
    retrieval: Retrieval,
    hits: Vec<Hit>,
    rerank: RerankOutcome,
    extra_degraded: Option<&'static str>,
    rerank_time: Duration,
) -> ContextResult {
    let mut degraded = retrieval.degraded;
    degraded.extend(extra_degraded);
    let max_chars = if req.cap_context {
        state.config.max_context_chars
    } else {
        usize::MAX
    };
    let (hits, capped) = cap_hits(hits, req.top_k, max_chars);
    let finished_at = now().into_std();
    ContextResult {
        namespace: req.namespace.clone(),
        conversation: req.conversation.clone(),
        utterance: req.utterance.clone(),
        is_final: req.is_final,
        text: req.text.clone(),
        hits,
        capped,
        floored: retrieval.floored,
        rerank,
        time_window: retrieval.time_window,
        degraded: (!degraded.is_empty()).then(|| degraded.join(", ")),
        timings: StageTimings {
            embed: retrieval.embed,
            search: retrieval.search,
            rerank: rerank_time,
            total: finished_at.saturating_duration_since(req.received_at),
        },
        deadline: req.deadline.into_std(),
        finished_at,
    }
}

/// Serves a final transcript or a query: reuses speculative retrieval when given one.
pub(crate) async fn serve(
    state: &PipelineState,
    req: &Request,
    speculative: Option<SharedRetrieval>,
) -> ContextResult {
    let cancel = CancelToken::new();
    let stop_by = state.stop_by(req.deadline);
    let searching = AtomicBool::new(false);
    let urgent = lane(true);
    let embed_by = stop_by
        .checked_sub(state.config.search_reserve())
        .unwrap_or(stop_by);
    let retrieval = if req.text.trim().is_empty() {
        Retrieval::default()
    } else {
        match speculative {
            None => retrieve(state, req, embed_by, stop_by, &cancel, &searching, &urgent).await,
            Some(spec) => match timeout_at(embed_by, spec.result.clone()).await {
                Ok(Some(r)) => r,
                // Aborted (cannot happen while we hold it, but be safe): start afresh.
                Ok(None) => {
                    retrieve(state, req, embed_by, stop_by, &cancel, &searching, &urgent).await
                }
                // Searching already: its search is as good as a new one.
                Err(_) if spec.searching.load(Ordering::SeqCst) => {
                    match timeout_at(stop_by, spec.result).await {
                        Ok(Some(r)) => r,
                        _ => Retrieval::failed("retriever timeout"),
                    }
                }
                // Still embedding at the point a fresh request would give up on the embedder:
                // search BM25-only in the time kept for it.
                Err(_) => retrieve(state, req, now(), stop_by, &cancel, &searching, &urgent).await,
            },
        }
    };
    offer_embedding(state, req, &retrieval);
    let candidates = retrieval.hits.clone();
    let (hits, outcome, extra, took) = if req.text.trim().is_empty() {
        (candidates, state.no_rerank("empty"), None, Duration::ZERO)
    } else {
        rerank(state, req, candidates, &cancel).await
    };
    // Whatever is still queued for this request is stale now.
    cancel.cancel();
    let result = assemble(state, req, retrieval, hits, outcome, extra, took);
    state.observe_stop(stop_by, result.finished_at);
    result
}

/// Hands a final's query embedding to the memory writer, so the memory the final becomes need not
/// be embedded again. A speculation a final reuses was embedded from the same text.
fn offer_embedding(state: &PipelineState, req: &Request, retrieval: &Retrieval) {
    if let (Some(id), Some(vector)) = (&req.memory_id, &retrieval.embedding) {
        state.registry.engines.writer.current().offer_embedding(
            &req.namespace,
            id,
            &req.text,
            vector,
        );
    }
}
