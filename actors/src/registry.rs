//! The stage registry: each supervised stage's [`Slot`] (its current actor and health), so the
//! coordinator always reaches the current instance (a restarted stage is a new actor).

use ractor::ActorRef;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::abandoned::AbandonedCalls;
use crate::engines::StageEngines;
use crate::health::{StageHealth, StageState};
use crate::pipeline::Stages;
use crate::stage_actor::Job;
use crate::writer::WriterMsg;

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
    /// Calls of this stage given up on whose threads still run.
    pub abandoned: Arc<AbandonedCalls>,
}

impl<M: ractor::Message> Slot<M> {
    pub(crate) fn new(kind: StageKind) -> Self {
        Self {
            kind,
            inner: Mutex::new(SlotInner {
                actor: None,
                state: StageState::Restarting,
                restarts: 0,
                last_error: None,
            }),
            abandoned: Arc::new(AbandonedCalls::new(kind.name())),
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
            abandoned_calls: self.abandoned.running(),
            abandoned_total: self.abandoned.total(),
        }
    }

    pub(crate) fn set_up(&self, actor: ActorRef<M>, restarted: bool) {
        let mut s = self.lock();
        s.actor = Some(actor);
        s.state = StageState::Up;
        if restarted {
            s.restarts += 1;
        }
    }

    pub(crate) fn set_failed(&self, state: StageState, error: String) {
        let mut s = self.lock();
        s.actor = None;
        s.state = state;
        s.last_error = Some(error);
    }

    pub(crate) fn take(&self) -> Option<ActorRef<M>> {
        self.lock().actor.take()
    }
}

/// Every stage's slot, shared by the supervisor (writes) and the coordinator (reads).
pub(crate) struct Registry {
    pub embedder: Slot<Job>,
    pub retriever: Slot<Job>,
    pub reranker: Option<Slot<Job>>,
    pub writer: Slot<WriterMsg>,
    /// The instances the stage calls run on (renewed after a hang).
    pub engines: StageEngines,
    pub(crate) shutting_down: AtomicBool,
}

impl Registry {
    pub(crate) fn new(stages: &Stages) -> Self {
        Self {
            embedder: Slot::new(StageKind::Embedder),
            retriever: Slot::new(StageKind::Retriever),
            reranker: stages
                .reranker
                .is_some()
                .then(|| Slot::new(StageKind::Reranker)),
            writer: Slot::new(StageKind::Writer),
            engines: StageEngines::new(stages),
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
                abandoned_calls: 0,
                abandoned_total: 0,
            },
        });
        v.push(self.writer.health());
        v
    }

    pub(crate) fn job_slot(&self, kind: StageKind) -> Option<&Slot<Job>> {
        match kind {
            StageKind::Embedder => Some(&self.embedder),
            StageKind::Retriever => Some(&self.retriever),
            StageKind::Reranker => self.reranker.as_ref(),
            StageKind::Writer => None,
        }
    }

    /// `kind`'s calls given up on.
    pub(crate) fn abandoned(&self, kind: StageKind) -> Option<&Arc<AbandonedCalls>> {
        match kind {
            StageKind::Writer => Some(&self.writer.abandoned),
            k => self.job_slot(k).map(|s| &s.abandoned),
        }
    }

    pub(crate) fn set_failed(&self, kind: StageKind, state: StageState, error: String) {
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
