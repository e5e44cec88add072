//! [`QueryEmbedder`]: the pipeline's embedder stage. A micro-batch (requests queued while the last
//! run was busy) is split over up to `runtime.query_sessions` sessions running side by side, one
//! thread each, so a backlog uses more than one core; each session gets at least
//! `runtime.query_split_min` texts, because a text embedded in a larger batch costs less CPU (a
//! batch split too finely spends the cores it was meant to save). A batch too small to split runs
//! on one session, with no added thread.

use std::sync::Arc;
use voicerag_actors::{AfterHang, Embedder, StageError};

use super::error::ModelError;
use super::{EmbedderConfig, RuntimeConfig, SentenceEmbedder};

pub struct QueryEmbedder {
    /// The first is the engines' own embedder; the others are loaded for this.
    sessions: Vec<Arc<SentenceEmbedder>>,
    /// Fewest texts per session when a batch is split.
    split_min: usize,
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
            split_min: runtime.query_split_min.max(1),
            loaded_from: (runtime.clone(), config.clone()),
        })
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn embed_split(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let parts = sessions_for(texts.len(), self.sessions.len(), self.split_min);
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

/// Sessions a batch of `texts` runs on: as many as give each at least `min_per_session` texts, at
/// most `sessions`, at least one.
fn sessions_for(texts: usize, sessions: usize, min_per_session: usize) -> usize {
    (texts / min_per_session.max(1)).clamp(1, sessions.max(1))
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

#[cfg(test)]
mod tests {
    use super::sessions_for;

    #[test]
    fn small_batches_stay_on_one_session() {
        // Two sessions, at least four texts each.
        let parts: Vec<usize> = (0..=10).map(|n| sessions_for(n, 2, 4)).collect();
        assert_eq!(parts, [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2]);
        // One text per session: every batch of two or more is split (the old behaviour).
        assert_eq!(sessions_for(2, 2, 1), 2);
        assert_eq!(sessions_for(1, 2, 1), 1);
        // Never more sessions than there are, never none.
        assert_eq!(sessions_for(100, 3, 4), 3);
        assert_eq!(sessions_for(0, 2, 0), 1);
        assert_eq!(sessions_for(9, 0, 4), 1);
    }
}
