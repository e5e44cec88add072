//! Supervision: ractor reports stage failures, this module decides what happens next.
//!
//! A stage that panics, stops or hangs past `restart.unresponsive_ms` is restarted after a backoff
//! (doubling from `backoff_initial_ms` up to `backoff_max_ms`). More than `max_restarts` failures in
//! `window_ms` and the stage stays down: the coordinator degrades around it, and the stage is started
//! again after `retry_down_after_ms` with a fresh window. The policy is applied by `restart`; stage
//! references live in the `registry`'s slots.

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use crate::config::RestartPolicy;
use crate::health::{StageState, record_restart};
use crate::registry::{Registry, StageKind};
use crate::restart::{Decision, RestartTracker};
use crate::stage_actor::{StageActor, StageArgs};
use crate::writer::{WriterActor, WriterArgs};
pub(crate) struct SupervisorArgs {
    pub registry: Arc<Registry>,
    pub policy: RestartPolicy,
    pub writer: WriterArgs,
    /// Searches the retriever runs at the same time (`pipeline.search_parallel`).
    pub search_parallel: usize,
    /// Embedder runs at the same time (`pipeline.embed_parallel`).
    pub embed_parallel: usize,
    /// The reranker's thread priority (`PipelineConfig::rerank_nice`; 0: the blocking pool).
    pub rerank_nice: i32,
}

pub(crate) enum SupervisorMsg {
    /// Start a stage again (after its backoff, or after being down).
    Start { kind: StageKind, after_down: bool },
    /// Stop every stage for good; replies once they have stopped.
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// Embedder runs at the same time: as configured, at most one per session the engine has.
pub(crate) fn embed_runs(configured: usize, embedder: &dyn crate::stages::Embedder) -> usize {
    configured.min(embedder.parallel_runs()).max(1)
}

pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    trackers: HashMap<StageKind, RestartTracker>,
    ids: HashMap<ActorId, StageKind>,
}

pub(crate) struct Supervisor;

impl Supervisor {
    async fn spawn_stage(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: StageKind,
        restarted: bool,
    ) -> Result<(), String> {
        let cell: ActorCell = myself.get_cell();
        let unresponsive = Duration::from_millis(state.args.policy.unresponsive_ms);
        let reg = &state.args.registry;
        let id = match kind {
            StageKind::Writer => {
                let (actor, _) =
                    Actor::spawn_linked(None, WriterActor, state.args.writer.clone(), cell)
                        .await
                        .map_err(|e| e.to_string())?;
                let id = actor.get_id();
                reg.writer.set_up(actor, restarted);
                id
            }
            k => {
                let Some(slot) = reg.job_slot(k) else {
                    return Ok(());
                };
                // The store serves concurrent readers; the embedder has a session per run it may
                // start; the reranker's one run at a time takes what the budget leaves.
                let parallel = match k {
                    StageKind::Retriever => state.args.search_parallel,
                    StageKind::Embedder => embed_runs(
                        state.args.embed_parallel,
                        reg.engines.embedder.current().as_ref(),
                    ),
                    _ => 1,
                };
                let args = StageArgs {
                    name: k.name(),
                    unresponsive,
                    abandoned: Arc::clone(&slot.abandoned),
                    parallel,
                    nice: (k == StageKind::Reranker && state.args.rerank_nice > 0)
                        .then_some(state.args.rerank_nice),
                };
                let (actor, _) = Actor::spawn_linked(None, StageActor, args, cell)
                    .await
                    .map_err(|e| e.to_string())?;
                let id = actor.get_id();
                slot.set_up(actor, restarted);
                id
            }
        };
        state.ids.insert(id, kind);
        if restarted {
            record_restart(kind.name());
            tracing::info!(stage = kind.name(), "stage restarted");
        }
        Ok(())
    }

    /// Why `kind` must stay down for now: at the cap of abandoned calls, or hung on an engine with
    /// no fresh instance whose hung call has not returned. Renews the engine after a hang (on the
    /// blocking pool: a model may load), so no new actor calls an instance a hung call holds.
    async fn hold_down(state: &SupervisorState, kind: StageKind) -> Option<String> {
        let reg = &state.args.registry;
        let calls = reg.abandoned(kind)?;
        let cap = state.args.policy.max_abandoned_calls;
        if calls.running() >= cap {
            return Some(format!(
                "{} abandoned calls still running (restart.max_abandoned_calls = {cap})",
                calls.running()
            ));
        }
        if !calls.take_hung() {
            return None;
        }
        let registry = Arc::clone(reg);
        let renewed = tokio::task::spawn_blocking(move || registry.engines.renew(kind))
            .await
            .unwrap_or(false);
        if renewed || calls.running() == 0 {
            if renewed {
                tracing::info!(stage = kind.name(), "engine renewed after a hang");
            }
            return None;
        }
        calls.mark_hung();
        Some("a hung call still holds the engine (no fresh instance)".into())
    }

    /// Keeps `kind` down for `reason` and checks again after the longest backoff.
    fn stay_down(
        myself: &ActorRef<SupervisorMsg>,
        state: &SupervisorState,
        kind: StageKind,
        reason: String,
    ) {
        tracing::warn!(stage = kind.name(), %reason, "stage held down");
        state
            .args
            .registry
            .set_failed(kind, StageState::Down, reason);
        let after = Duration::from_millis(state.args.policy.backoff_max_ms);
        myself.send_after(after, move || SupervisorMsg::Start {
            kind,
            after_down: false,
        });
    }

    /// Applies the policy to a failure of `kind`.
    fn on_failure(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: StageKind,
        error: String,
    ) {
        let at_cap = state
            .args
            .registry
            .abandoned(kind)
            .is_some_and(|c| c.running() >= state.args.policy.max_abandoned_calls);
        if at_cap {
            // Down at once: requests degrade now instead of queueing for an actor that would only
            // add another stuck thread.
            return Self::stay_down(myself, state, kind, error);
        }
        let tracker = state
            .trackers
            .entry(kind)
            .or_insert_with(|| RestartTracker::new(state.args.policy.clone()));
        match tracker.on_failure(Instant::now()) {
            Decision::RestartAfter(after) => {
                tracing::warn!(stage = kind.name(), %error, backoff = ?after, "stage failed; restarting");
                state
                    .args
                    .registry
                    .set_failed(kind, StageState::Restarting, error);
                myself.send_after(after, move || SupervisorMsg::Start {
                    kind,
                    after_down: false,
                });
            }
            Decision::DownFor(after) => {
                tracing::error!(stage = kind.name(), %error, retry_in = ?after, "stage past its restart limit; down, pipeline degraded");
                state
                    .args
                    .registry
                    .set_failed(kind, StageState::Down, error);
                myself.send_after(after, move || SupervisorMsg::Start {
                    kind,
                    after_down: true,
                });
            }
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            args,
            trackers: HashMap::new(),
            ids: HashMap::new(),
        };
        let mut kinds = vec![StageKind::Embedder, StageKind::Retriever, StageKind::Writer];
        if state.args.registry.reranker.is_some() {
            kinds.push(StageKind::Reranker);
        }
        for kind in kinds {
            Self::spawn_stage(&myself, &mut state, kind, false)
                .await
                .map_err(|e| format!("cannot start the {} stage: {e}", kind.name()))?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start { kind, after_down } => {
                if state.args.registry.shutting_down.load(Ordering::SeqCst) {
                    return Ok(());
                }
                if after_down {
                    tracing::info!(stage = kind.name(), "retrying a stage that was down");
                    if let Some(t) = state.trackers.get_mut(&kind) {
                        t.reset();
                    }
                }
                if let Some(reason) = Self::hold_down(state, kind).await {
                    Self::stay_down(&myself, state, kind, reason);
                    return Ok(());
                }
                if let Err(e) = Self::spawn_stage(&myself, state, kind, true).await {
                    Self::on_failure(&myself, state, kind, format!("restart failed: {e}"));
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                let reg = &state.args.registry;
                reg.shutting_down.store(true, Ordering::SeqCst);
                let mut cells: Vec<ActorCell> = Vec::new();
                for slot in [
                    Some(&reg.embedder),
                    Some(&reg.retriever),
                    reg.reranker.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    if let Some(a) = slot.take() {
                        cells.push(a.get_cell());
                    }
                }
                if let Some(a) = reg.writer.take() {
                    cells.push(a.get_cell());
                }
                for cell in cells {
                    // A stage stuck in a call cannot finish it: give it a moment, then kill it.
                    if cell
                        .stop_and_wait(None, Some(Duration::from_secs(1)))
                        .await
                        .is_err()
                    {
                        cell.kill();
                    }
                }
                let _ = reply.send(());
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, error) = match &evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                reason.clone().unwrap_or_else(|| "stopped".to_string()),
            ),
            _ => return Ok(()),
        };
        let Some(kind) = state.ids.remove(&id) else {
            return Ok(());
        };
        if state.args.registry.shutting_down.load(Ordering::SeqCst) {
            return Ok(());
        }
        Self::on_failure(&myself, state, kind, error);
        Ok(())
    }
}
