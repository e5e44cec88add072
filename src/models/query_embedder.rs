//! [`QueryEmbedder`]: the pipeline's embedder stage. A micro-batch (requests queued while the last
//! run was busy) is split over up to `runtime.query_sessions` sessions running side by side, so a
//! backlog uses more than one core; each session gets at least `runtime.query_split_min` texts,
//! because a text embedded in a larger batch costs less CPU (a batch split too finely spends the
//! cores it was meant to save). A batch too small to split runs on one session.
//! Runs may overlap (`pipeline.embed_parallel`): each claims the sessions that are free, so a second
//! run takes the session the first left idle instead of queueing on a busy one's lock. A run's
//! first part runs on the calling thread, its other parts on the claimed sessions' own threads,
//! started with them and kept until the embedder is dropped, so splitting a batch starts no thread
//! (a thread per batch made the process's thread count move with load).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use voicerag_actors::{AfterHang, Embedder, StageError};

use super::error::ModelError;
use super::{EmbedderConfig, RuntimeConfig, SentenceEmbedder};

type Vectors = Result<Vec<Vec<f32>>, ModelError>;

/// One part of a batch for a session thread, and where its vectors (or its panic) go.
struct Part {
    texts: Vec<String>,
    reply: mpsc::SyncSender<std::thread::Result<Vectors>>,
}

/// A session with a thread of its own: it embeds the parts sent to it, in order, and ends when
/// this (the sender) is dropped and the part in hand is done.
struct SessionThread {
    parts: mpsc::Sender<Part>,
}

impl SessionThread {
    fn start(session: Arc<SentenceEmbedder>, index: usize) -> Result<Self, ModelError> {
        let (parts, inbox) = mpsc::channel::<Part>();
        let name = format!("voicerag-qemb{index}");
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                while let Ok(Part { texts, reply }) = inbox.recv() {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let out = std::panic::catch_unwind(AssertUnwindSafe(|| session.embed(&texts)));
                    let _ = reply.send(out);
                }
            })
            .map_err(|e| ModelError::SessionThread(format!("{name}: {e}")))?;
        Ok(Self { parts })
    }

    /// Sends `texts` to the thread; the vectors come on the returned receiver.
    fn send(
        &self,
        texts: &[&str],
    ) -> Result<mpsc::Receiver<std::thread::Result<Vectors>>, ModelError> {
        let (reply, wait) = mpsc::sync_channel(1);
        let texts = texts.iter().map(|t| (*t).to_string()).collect();
        self.parts
            .send(Part { texts, reply })
            .map_err(|_| ModelError::SessionThread("ended".into()))?;
        Ok(wait)
    }
}

pub struct QueryEmbedder {
    /// Every session; the first is the engines' own embedder.
    sessions: Vec<Arc<SentenceEmbedder>>,
    /// `threads[i]` runs parts for `sessions[i + 1]`.
    threads: Vec<SessionThread>,
    /// Whether a run holds `sessions[i]`.
    claimed: Vec<AtomicBool>,
    /// Fewest texts per session when a batch is split.
    split_min: usize,
    loaded_from: (RuntimeConfig, EmbedderConfig),
}

/// Sessions a run holds; released when the run ends, panics included.
struct Claim<'a> {
    flags: &'a [AtomicBool],
    held: Vec<usize>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        for &i in &self.held {
            self.flags[i].store(false, Ordering::Release);
        }
    }
}

impl QueryEmbedder {
    /// `first` and `runtime.query_sessions - 1` more sessions of the same model (at least one).
    pub fn load(
        first: Arc<SentenceEmbedder>,
        runtime: &RuntimeConfig,
        config: &EmbedderConfig,
    ) -> Result<Self, ModelError> {
        let mut sessions = vec![first];
        let mut threads = Vec::new();
        for index in 1..runtime.query_sessions.max(1) {
            let session = Arc::new(SentenceEmbedder::load(runtime, config)?);
            threads.push(SessionThread::start(Arc::clone(&session), index)?);
            sessions.push(session);
        }
        let claimed = sessions.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(Self {
            sessions,
            threads,
            claimed,
            split_min: runtime.query_split_min.max(1),
            loaded_from: (runtime.clone(), config.clone()),
        })
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Claims up to `want` free sessions, lowest first.
    fn claim(&self, want: usize) -> Claim<'_> {
        let mut held = Vec::new();
        for (i, flag) in self.claimed.iter().enumerate() {
            if held.len() == want {
                break;
            }
            if flag
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                held.push(i);
            }
        }
        Claim {
            flags: &self.claimed,
            held,
        }
    }

    fn embed_split(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let claim = self.claim(sessions_for(texts.len(), self.sessions(), self.split_min));
        let Some((&mine, others)) = claim.held.split_first() else {
            // Every session is held (a hung run keeps its claim until the stage renews the
            // embedder): wait for the first one's lock.
            return self.sessions[0].embed(texts);
        };
        if others.is_empty() {
            return self.sessions[mine].embed(texts);
        }
        let size = texts.len().div_ceil(claim.held.len());
        let mut chunks = texts.chunks(size);
        let Some(first_part) = chunks.next() else {
            return Ok(Vec::new());
        };
        // Claimed lowest first: every other one is past the first session, so it has a thread.
        let waits: Vec<_> = chunks
            .zip(others)
            .map(|(part, &i)| self.threads[i - 1].send(part))
            .collect::<Result<_, _>>()?;
        let mut out = self.sessions[mine].embed(first_part)?;
        for wait in waits {
            match wait.recv() {
                Ok(Ok(vectors)) => out.extend(vectors?),
                // A panic on a session thread is this call's panic, as if it had run here.
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => return Err(ModelError::SessionThread("ended mid-batch".into())),
            }
        }
        Ok(out)
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

    fn parallel_runs(&self) -> usize {
        self.sessions()
    }

    /// A hung run holds a session's lock: fresh sessions, all of them (same model). The old
    /// sessions' threads end once their hung part returns.
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
