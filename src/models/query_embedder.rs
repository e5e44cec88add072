//! [`QueryEmbedder`]: the pipeline's embedder stage. A micro-batch of two or more texts (requests
//! queued while the last run was busy) is split over `runtime.query_sessions` sessions running side
//! by side, one thread each, so queued queries use more than one core; a single text runs on one
//! session at once, with no added thread.

use std::sync::Arc;
use voicerag_actors::{AfterHang, Embedder, StageError};

use super::error::ModelError;
use super::{EmbedderConfig, RuntimeConfig, SentenceEmbedder};

pub struct QueryEmbedder {
    /// The first is the engines' own embedder; the others are loaded for this.
    sessions: Vec<Arc<SentenceEmbedder>>,
    loaded_from: (RuntimeConfig, EmbedderConfig),
}

impl QueryEmbedder {
    /// `first` and `runtime.query_sessions - 1` more sessions of the same model (at least one).
    pub fn load(
        first: Arc<SentenceEmbedder>,
        runtime: &RuntimeConfig,
        config: &EmbedderConfig,
    ) -> Result<Self, ModelError> {
        let mut sessions = vec![first];
        for _ in 1..runtime.query_sessions.max(1) {
            sessions.push(Arc::new(SentenceEmbedder::load(runtime, config)?));
        }
        Ok(Self {
            sessions,
            loaded_from: (runtime.clone(), config.clone()),
        })
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn embed_split(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let parts = self.sessions.len().min(texts.len());
        if parts <= 1 {
            return self.sessions[0].embed(texts);
        }
        let size = texts.len().div_ceil(parts);
        let mut chunks = texts.chunks(size).zip(&self.sessions);
        let Some((mine, session)) = chunks.next() else {
            return Ok(Vec::new());
        };
        std::thread::scope(|scope| {
            let others: Vec<_> = chunks
                .map(|(part, session)| scope.spawn(move || session.embed(part)))
                .collect();
            let mut out = session.embed(mine)?;
            for other in others {
                // A panic on a helper thread is this call's panic, as if it had run here.
                match other.join() {
                    Ok(vectors) => out.extend(vectors?),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok(out)
        })
    }
}

impl Embedder for QueryEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        self.embed_split(texts).map_err(StageError::from)
    }

    /// A hung run holds a session's lock: fresh sessions, all of them (same model).
    fn after_hang(&self) -> Result<AfterHang<dyn Embedder>, StageError> {
        let (runtime, config) = &self.loaded_from;
        let first = SentenceEmbedder::load(runtime, config).map_err(StageError::from)?;
        let fresh =
            QueryEmbedder::load(Arc::new(first), runtime, config).map_err(StageError::from)?;
        Ok(AfterHang::Fresh(Arc::new(fresh)))
    }
}
