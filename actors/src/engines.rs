//! Each stage's current engine instance. Calls read it when they start, so after a hang the
//! supervisor can swap in a fresh instance ([`AfterHang::Fresh`]) and no later call waits on the
//! lock the hung call holds.

use std::sync::{Arc, Mutex};

use crate::pipeline::Stages;
use crate::registry::StageKind;
use crate::stages::{AfterHang, Embedder, MemoryWriter, Reranker, Retriever, StageError};

/// One stage's current instance.
pub(crate) struct EngineCell<T: ?Sized>(Mutex<Arc<T>>);

impl<T: ?Sized> EngineCell<T> {
    fn new(engine: Arc<T>) -> Self {
        Self(Mutex::new(engine))
    }

    pub(crate) fn current(&self) -> Arc<T> {
        Arc::clone(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn replace(&self, engine: Arc<T>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = engine;
    }

    /// Asks the current instance what to run after a hang, and installs a fresh one if given.
    /// Returns false when the stage must wait for the hung call.
    fn renew(&self, after_hang: impl FnOnce(&T) -> Result<AfterHang<T>, StageError>) -> bool {
        match after_hang(&self.current()) {
            Ok(AfterHang::Fresh(engine)) => {
                self.replace(engine);
                true
            }
            Ok(AfterHang::Reuse) => true,
            Ok(AfterHang::Wait) => false,
            Err(e) => {
                tracing::warn!(error = %e, "no fresh engine instance after a hang; waiting for the hung call");
                false
            }
        }
    }
}

/// The stages' current engine instances.
pub(crate) struct StageEngines {
    pub embedder: EngineCell<dyn Embedder>,
    pub retriever: EngineCell<dyn Retriever>,
    pub reranker: Option<EngineCell<dyn Reranker>>,
    /// Shared with the writer's args (the writer actor and the shutdown flush).
    pub writer: Arc<EngineCell<dyn MemoryWriter>>,
}

impl StageEngines {
    pub(crate) fn new(stages: &Stages) -> Self {
        Self {
            embedder: EngineCell::new(Arc::clone(&stages.embedder)),
            retriever: EngineCell::new(Arc::clone(&stages.retriever)),
            reranker: stages.reranker.clone().map(EngineCell::new),
            writer: Arc::new(EngineCell::new(Arc::clone(&stages.writer))),
        }
    }

    /// Renews `kind`'s engine after a hang (blocking: may load a model). False: the stage must
    /// wait for its hung call to return.
    pub(crate) fn renew(&self, kind: StageKind) -> bool {
        match kind {
            StageKind::Embedder => self.embedder.renew(|e| e.after_hang()),
            StageKind::Retriever => self.retriever.renew(|r| r.after_hang()),
            StageKind::Reranker => self
                .reranker
                .as_ref()
                .is_none_or(|r| r.renew(|r| r.after_hang())),
            StageKind::Writer => self.writer.renew(|w| w.after_hang()),
        }
    }
}
