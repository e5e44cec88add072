//! Supervision: ractor reports stage failures, this module decides what happens next.
//!
//! A stage that panics, stops or hangs past `restart.unresponsive_ms` is restarted after a backoff
//! (doubling from `backoff_initial_ms` up to `backoff_max_ms`). More than `max_restarts` failures in
//! `window_ms` and the stage stays down: the coordinator degrades around it, and the stage is started
//! again after `retry_down_after_ms` with a fresh window. Stage references live in [`Slot`]s, so the
//! coordinator always reaches the current instance (a restarted stage is a new actor).

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::config::RestartPolicy;
use crate::health::{StageHealth, StageState, record_restart};
use crate::stage_actor::{Job, StageActor, StageArgs};
use crate::writer::{WriterActor, WriterArgs, WriterMsg};

/// The supervised stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StageKind {
    Embedder,
    Retriever,
    Reranker,
    Writer,
}

impl StageKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StageKind::Embedder => "embedder",
            StageKind::Retriever => "retriever",
            StageKind::Reranker => "reranker",
            StageKind::Writer => "writer",
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    RestartAfter(Duration),
    /// Past the limit: stay down, try again after this long.
    DownFor(Duration),
}

/// Counts one stage's failures in the window and applies the policy.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            failures: VecDeque::new(),
        }
    }

    pub(crate) fn on_failure(&mut self, now: Instant) -> Decision {
        let window = Duration::from_millis(self.policy.window_ms);
        while self
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let n = self.failures.len() as u32;
        if n > self.policy.max_restarts {
            return Decision::DownFor(Duration::from_millis(self.policy.retry_down_after_ms));
        }
        let factor = 1u64 << (n.saturating_sub(1)).min(20);
        let ms = self
            .policy
            .backoff_initial_ms
            .saturating_mul(factor)
            .min(self.policy.backoff_max_ms);
        Decision::RestartAfter(Duration::from_millis(ms))
    }

    /// A retry after being down starts a fresh window.
    pub(crate) fn reset(&mut self) {
        self.failures.clear();
    }
}

struct SlotInner<M: ractor::Message> {
    actor: Option<ActorRef<M>>,
    state: StageState,
    restarts: u64,
    last_error: Option<String>,
}

/// Where the coordinator finds a stage's current actor.
pub(crate) struct Slot<M: ractor::Message> {
    kind: StageKind,
    inner: Mutex<SlotInner<M>>,
}

impl<M: ractor::Message> Slot<M> {
    fn new(kind: StageKind) -> Self {
        Self {
            kind,
            inner: Mutex::new(SlotInner {
                actor: None,
                state: StageState::Restarting,
                restarts: 0,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner<M>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running actor, or `None` while restarting or down.
    pub(crate) fn current(&self) -> Option<ActorRef<M>> {
        self.lock().actor.clone()
    }

    pub(crate) fn health(&self) -> StageHealth {
        let s = self.lock();
        StageHealth {
            name: self.kind.name(),
            state: s.state,
            restarts: s.restarts,
            last_error: s.last_error.clone(),
        }
    }

    fn set_up(&self, actor: ActorRef<M>, restarted: bool) {
        let mut s = self.lock();
        s.actor = Some(actor);
        s.state = StageState::Up;
        if restarted {
            s.restarts += 1;
        }
    }

    fn set_failed(&self, state: StageState, error: String) {
        let mut s = self.lock();
        s.actor = None;
        s.state = state;
        s.last_error = Some(error);
    }

    fn take(&self) -> Option<ActorRef<M>> {
        self.lock().actor.take()
    }
}

/// Every stage's slot, shared by the supervisor (writes) and the coordinator (reads).
pub(crate) struct Registry {
    pub embedder: Slot<Job>,
    pub retriever: Slot<Job>,
    pub reranker: Option<Slot<Job>>,
    pub writer: Slot<WriterMsg>,
    shutting_down: AtomicBool,
}

impl Registry {
    pub(crate) fn new(with_reranker: bool) -> Self {
        Self {
            embedder: Slot::new(StageKind::Embedder),
            retriever: Slot::new(StageKind::Retriever),
            reranker: with_reranker.then(|| Slot::new(StageKind::Reranker)),
            writer: Slot::new(StageKind::Writer),
            shutting_down: AtomicBool::new(false),
        }
    }

    pub(crate) fn health(&self) -> Vec<StageHealth> {
        let mut v = vec![self.embedder.health(), self.retriever.health()];
        v.push(match &self.reranker {
            Some(s) => s.health(),
            None => StageHealth {
                name: "reranker",
                state: StageState::Off,
                restarts: 0,
                last_error: None,
            },
        });
        v.push(self.writer.health());
        v
    }

    fn job_slot(&self, kind: StageKind) -> Option<&Slot<Job>> {
        match kind {
            StageKind::Embedder => Some(&self.embedder),
            StageKind::Retriever => Some(&self.retriever),
            StageKind::Reranker => self.reranker.as_ref(),
            StageKind::Writer => None,
        }
    }

    fn set_failed(&self, kind: StageKind, state: StageState, error: String) {
        match kind {
            StageKind::Writer => self.writer.set_failed(state, error),
            k => {
                if let Some(s) = self.job_slot(k) {
                    s.set_failed(state, error)
                }
            }
        }
    }
}

pub(crate) struct SupervisorArgs {
    pub registry: Arc<Registry>,
    pub policy: RestartPolicy,
    pub writer: WriterArgs,
}

pub(crate) enum SupervisorMsg {
    /// Start a stage again (after its backoff, or after being down).
    Start { kind: StageKind, after_down: bool },
    /// Stop every stage for good; replies once they have stopped.
    Shutdown(tokio::sync::oneshot::Sender<()>),
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
                let args = StageArgs {
                    name: k.name(),
                    unresponsive,
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

    /// Applies the policy to a failure of `kind`.
    fn on_failure(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: StageKind,
        error: String,
    ) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window_ms: 1_000,
            backoff_initial_ms: 10,
            backoff_max_ms: 25,
            unresponsive_ms: 100,
            retry_down_after_ms: 5_000,
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_then_the_stage_goes_down() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(10))
        );
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(20))
        );
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(25))
        );
        assert_eq!(
            t.on_failure(now),
            Decision::DownFor(Duration::from_millis(5_000))
        );
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut t = RestartTracker::new(policy());
        let start = Instant::now();
        for _ in 0..3 {
            t.on_failure(start);
        }
        let later = start + Duration::from_millis(1_000);
        assert_eq!(
            t.on_failure(later),
            Decision::RestartAfter(Duration::from_millis(10))
        );
    }

    #[test]
    fn reset_gives_a_fresh_window() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        for _ in 0..4 {
            t.on_failure(now);
        }
        t.reset();
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(10))
        );
    }
}
