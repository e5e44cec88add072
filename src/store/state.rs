//! [`StoreState`]: the state of an open store, shared by the [`MemoryStore`](super::MemoryStore) handle
//! and its background threads, and the [`Signal`] that wakes and stops those threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use heed::{Env, WithoutTls};

use super::bm25::Bm25;
use super::exact::ExactVectors;
use super::hidden::HiddenChunks;
use super::lmdb::{Dbs, StoredModel, WriteBatch};
use super::{RetrievalConfig, StoreConfig, StoreError};

/// State shared with the background threads.
pub(crate) struct StoreState {
    pub dir: PathBuf,
    pub env: Env<WithoutTls>,
    pub dbs: Dbs,
    pub model: StoredModel,
    pub bm25: Bm25,
    pub store_cfg: StoreConfig,
    pub retrieval: RetrievalConfig,
    pub read_only: bool,
    pub signal: Signal,
    /// LMDB sequence BM25 has committed (writer: kept here to avoid reading meta.json per tick).
    pub bm25_applied: AtomicU64,
    /// One BM25 catch-up at a time (background committer, `flush`, open).
    pub bm25_sync: Mutex<()>,
    /// Writers waiting for LMDB's write lock: a background tree build gives way to them.
    pub writers_waiting: AtomicUsize,
    /// arroy index builds since open (an index of small namespaces is never built).
    pub tree_builds: AtomicU64,
    /// In-RAM vectors of the namespaces searched exactly.
    pub exact: ExactVectors,
    /// Superseded and expired chunks of recently searched namespaces.
    pub hidden: HiddenChunks,
}

/// Counts a writer as waiting until the write transaction is obtained.
pub(crate) fn begin_write<'t>(s: &'t StoreState) -> Result<WriteBatch<'t>, StoreError> {
    s.writers_waiting.fetch_add(1, Ordering::AcqRel);
    let wb = WriteBatch::begin(&s.env, s.dbs, s.model.dimension);
    s.writers_waiting.fetch_sub(1, Ordering::AcqRel);
    wb
}

/// Wakes and stops the background threads.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<(bool, u64)>,
    cv: Condvar,
}

impl Signal {
    /// Something was written.
    pub fn notify(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.1 += 1;
        }
        self.cv.notify_all();
    }

    pub fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = true;
        }
        self.cv.notify_all();
    }

    /// Sleeps up to `d` (less if stopped); returns false once stopped.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let Ok(guard) = self.state.lock() else {
            return false;
        };
        if guard.0 {
            return false;
        }
        match self.cv.wait_timeout_while(guard, d, |s| !s.0) {
            Ok((g, _)) => !g.0,
            Err(_) => false,
        }
    }
}
