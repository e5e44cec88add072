//! [`MemoryStore`]: the handle on an open store: adding, searching, forgetting, stats, flush.
//! Opening is in `open`, deletion in `delete`, re-embedding in `reindex`.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use voicerag_actors::messages::{Hit, Memory, Retrieved, SearchRequest};
use voicerag_actors::{AfterHang, Retriever, StageError};

use super::background;
use super::closed::{SetOnDrop, StoreClosed};
use super::codec::{self, MemoryRecord, Op};
use super::delete;
use super::lmdb::{self, StoredModel, UnitChunk};
use super::open::{BM25_DIR, LMDB_DIR, Mode, looks_like_store_or_empty, open_shared};
use super::state::{StoreState, begin_write};
use super::{AddReport, ModelInfo, NewMemory, RetrievalConfig, StoreConfig, StoreError, vector};

/// Counts and lags, for `stats` and monitoring.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoreStats {
    pub memories: u64,
    pub chunks: u64,
    pub namespaces: u64,
    /// Bytes on disk under the data directory.
    pub disk_bytes: u64,
    /// Bytes of LMDB pages in use (the file also holds free pages kept for reuse).
    pub lmdb_used_bytes: u64,
    /// Bytes on disk of the BM25 index.
    pub bm25_bytes: u64,
    /// Vectors stored but not yet built into arroy's trees (found by exact scan meanwhile).
    pub pending_vectors: u64,
    /// Deleted vectors still to remove from arroy (never returned: searches exclude them).
    pub pending_vector_deletes: u64,
    /// Last LMDB operation sequence.
    pub lmdb_seq: u64,
    /// LMDB sequence the BM25 index holds.
    pub bm25_watermark: u64,
    /// Operations BM25 has yet to apply.
    pub bm25_lag: u64,
    pub bm25_docs: u64,
    /// Vectors held in RAM for exact search (`dimension * 4` bytes each): grows with the
    /// memories of small namespaces, up to `store.exact_cache_vectors`.
    pub exact_cached_vectors: u64,
    /// Heap bytes the exact-search cache holds: its vectors' blocks (filled or not), chunk ids
    /// and row maps.
    pub exact_cache_bytes: u64,
    /// arroy index builds by this process since open: only indexes holding a namespace past
    /// half of `store.exact_scan_max` get trees.
    pub vector_tree_builds: u64,
    pub model: String,
    pub dimension: usize,
}

/// The durable hybrid memory of voicerag. `Send + Sync`: share it as `Arc<MemoryStore>`.
///
/// - `add` returns once records and vectors are committed to LMDB (durable, acknowledged);
///   vector search finds them at once, BM25 within `store.bm25_commit_ms` (+ commit time).
/// - Every search is confined to one namespace; filters apply inside each list before top-N.
/// - One process writes a data directory ([`MemoryStore::open`] takes a lock file); any number
///   of [`MemoryStore::open_read_only`] handles may search it meanwhile.
pub struct MemoryStore {
    shared: Arc<StoreState>,
    threads: Vec<JoinHandle<()>>,
    lock: Option<File>,
    /// Last: dropped after everything above (see [`StoreClosed`]).
    closed: SetOnDrop,
}

impl MemoryStore {
    /// Opens the store in `dir` for writing (creating it in a missing or empty directory), takes
    /// the writer lock, checks schema and model, brings BM25 up to LMDB, and starts the
    /// background BM25 committer and vector builder.
    pub fn open(
        dir: &Path,
        store: &StoreConfig,
        retrieval: &RetrievalConfig,
        model: &ModelInfo,
    ) -> Result<Self, StoreError> {
        let (shared, lock) = open_shared(dir, store, retrieval, model, Mode::Writer)?;
        let shared = Arc::new(shared);
        let threads = background::spawn(&shared)?;
        Ok(Self {
            shared,
            threads,
            lock,
            closed: SetOnDrop::default(),
        })
    }

    /// Opens an existing store for searching only, without the writer lock: works while another
    /// process writes it. BM25 follows the writer's commits; writes return [`StoreError::ReadOnly`].
    /// If BM25 lags and no writer runs (it crashed), BM25 is first caught up (briefly taking the
    /// writer lock), so a `query` after a crash sees every acknowledged memory.
    pub fn open_read_only(
        dir: &Path,
        store: &StoreConfig,
        retrieval: &RetrievalConfig,
        model: &ModelInfo,
    ) -> Result<Self, StoreError> {
        if looks_like_store_or_empty(dir)? && !dir.join(LMDB_DIR).join("data.mdb").exists() {
            // No memories yet (nothing ingested, nothing served): an empty store answers with
            // no hits rather than "not a store". Creating it takes the writer's role briefly;
            // a writer creating it right now does the same.
            match open_shared(dir, store, retrieval, model, Mode::Writer) {
                Ok(writer) => drop(writer),
                Err(StoreError::Locked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (shared, lock) = open_shared(dir, store, retrieval, model, Mode::ReadOnly)?;
        let lag = {
            let rtxn = shared.env.read_txn()?;
            lmdb::last_seq(&shared.dbs, &rtxn)? != shared.bm25.watermark()?
        };
        if !lag {
            return Ok(Self {
                shared: Arc::new(shared),
                threads: Vec::new(),
                lock,
                closed: SetOnDrop::default(),
            });
        }
        // BM25 lags LMDB. A live writer catches it up within its commit cadence; with no
        // writer (it crashed) nobody would, so take the writer's role for the catch-up only
        // (derived data; memories are untouched) and reopen read-only. When a writer holds
        // the lock, or the directory is not writable, search as is.
        drop(shared);
        match open_shared(dir, store, retrieval, model, Mode::Writer) {
            Ok(writer) => drop(writer),
            Err(StoreError::Locked { .. } | StoreError::Io { .. }) => {}
            Err(e) => return Err(e),
        }
        let (shared, lock) = open_shared(dir, store, retrieval, model, Mode::ReadOnly)?;
        Ok(Self {
            shared: Arc::new(shared),
            threads: Vec::new(),
            lock,
            closed: SetOnDrop::default(),
        })
    }

    /// Set once this store is dropped with everything it opened, so its data directory can be
    /// opened again (the writer lock released, LMDB and tantivy closed).
    pub fn closed_signal(&self) -> StoreClosed {
        self.closed.signal()
    }

    /// The model whose vectors this store holds.
    pub fn model(&self) -> ModelInfo {
        ModelInfo {
            name: self.shared.model.name.clone(),
            dimension: self.shared.model.dimension,
        }
    }

    /// Adds a batch in one LMDB transaction; returns once it is durable. Bad records are
    /// rejected with a reason and the rest stored; an id already present in its namespace is
    /// reported as a duplicate and left unchanged.
    pub fn add(&self, batch: Vec<NewMemory>) -> Result<AddReport, StoreError> {
        let s = &*self.shared;
        if s.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut report = AddReport::default();
        let mut valid = Vec::with_capacity(batch.len());
        for (i, nm) in batch.into_iter().enumerate() {
            match validate(nm, &s.store_cfg, &s.model) {
                Ok(v) => valid.push(v),
                Err(reason) => report.rejected.push((i, reason)),
            }
        }
        if valid.is_empty() {
            return Ok(report);
        }
        let full = super::error::map_full(s.store_cfg.map_size_mib);
        let mut wb = begin_write(s)?;
        let mut added = Vec::new();
        let mut fresh: Vec<(String, Vec<UnitChunk>, Vec<u32>)> = Vec::new();
        for (memory, chunks) in valid {
            if wb.memory_exists(&memory.namespace, &memory.id)? {
                report.duplicates.push(memory.id);
                continue;
            }
            let ids = wb.insert(&memory, &chunks).map_err(&full)?;
            added.extend(ids.iter().copied());
            fresh.push((memory.namespace, chunks, ids));
            report.stored.push(memory.id);
        }
        if !added.is_empty() {
            wb.log(Op::Add(added));
        }
        wb.commit().map_err(&full)?;
        // Before `add` returns, so an acknowledged memory is found by the very next search.
        s.exact.apply_adds(fresh.iter().map(|(ns, chunks, ids)| {
            let vectors = ids
                .iter()
                .zip(chunks)
                .map(|(id, (_, v))| (*id, v.as_slice()));
            (ns.as_str(), vectors)
        }));
        // New chunks may be superseded already, expire, or supersede others.
        for (ns, _, _) in &fresh {
            s.hidden.invalidate(ns);
        }
        s.signal.notify();
        Ok(report)
    }

    /// Searches one namespace (hybrid, vector or BM25); hits best first, at most `top_n`.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, StoreError> {
        Ok(self.retrieve(req)?.hits)
    }

    /// [`MemoryStore::search`], also saying which time window it read from the query and how it
    /// applied it.
    pub fn retrieve(&self, req: &SearchRequest) -> Result<Retrieved, StoreError> {
        super::search::search(&self.shared, &self.shared.retrieval, req)
    }

    /// [`MemoryStore::retrieve`] with `retrieval` instead of the store's settings: a comparison
    /// of a capability on and off, query by query, on one open store (`bench store`).
    pub fn retrieve_with(
        &self,
        req: &SearchRequest,
        retrieval: &RetrievalConfig,
    ) -> Result<Retrieved, StoreError> {
        super::search::search(&self.shared, retrieval, req)
    }

    /// Forgets these ids of namespace `ns`; returns how many existed.
    pub fn delete_ids(&self, ns: &str, ids: &[String]) -> Result<usize, StoreError> {
        self.delete_where(|_| Ok(ids.iter().map(|id| (ns.to_string(), id.clone())).collect()))
    }

    /// Forgets every turn of one conversation of `ns`.
    pub fn delete_conversation(&self, ns: &str, conversation: &str) -> Result<usize, StoreError> {
        let dbs = self.shared.dbs;
        self.delete_where(|txn| {
            let mut out = Vec::new();
            for entry in dbs
                .turns
                .prefix_iter(txn, &codec::ns_name_key(ns, conversation))?
            {
                let (key, _) = entry?;
                out.push((ns.to_string(), codec::turn_key_id(key)?.to_string()));
            }
            Ok(out)
        })
    }

    /// Forgets a whole namespace.
    pub fn delete_namespace(&self, ns: &str) -> Result<usize, StoreError> {
        let dbs = self.shared.dbs;
        self.delete_where(|txn| {
            let mut out = Vec::new();
            for entry in dbs.memories.prefix_iter(txn, &codec::ns_key(ns))? {
                let (key, _) = entry?;
                let (kns, id) = codec::split_memory_key(key)?;
                out.push((kns.to_string(), id.to_string()));
            }
            Ok(out)
        })
    }

    /// Forgets every memory (all namespaces) with a timestamp before `cutoff_ms` (retention).
    pub fn delete_older_than(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        delete::delete_older_than_shared(&self.shared, cutoff_ms)
    }

    fn delete_where(
        &self,
        select: impl FnOnce(&heed::RoTxn) -> Result<Vec<(String, String)>, StoreError>,
    ) -> Result<usize, StoreError> {
        delete::delete_where(&self.shared, select)
    }

    /// Number of memories (all namespaces).
    pub fn len(&self) -> Result<u64, StoreError> {
        let rtxn = self.shared.env.read_txn()?;
        Ok(self.shared.dbs.memories.len(&rtxn)?)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let s = &*self.shared;
        let rtxn = s.env.read_txn()?;
        let (pending, deletes) = vector::backlog(&s.dbs, &rtxn)?;
        let lmdb_seq = lmdb::last_seq(&s.dbs, &rtxn)?;
        let watermark = if s.read_only {
            s.bm25.watermark()?
        } else {
            s.bm25_applied.load(Ordering::Acquire)
        };
        Ok(StoreStats {
            memories: s.dbs.memories.len(&rtxn)?,
            chunks: s.dbs.chunks.len(&rtxn)?,
            namespaces: s.dbs.ns_chunks.len(&rtxn)?,
            disk_bytes: dir_size(&s.dir),
            lmdb_used_bytes: lmdb::used_bytes(&s.dbs, &rtxn)?,
            bm25_bytes: dir_size(&s.dir.join(BM25_DIR)),
            pending_vectors: pending,
            pending_vector_deletes: deletes,
            lmdb_seq,
            bm25_watermark: watermark,
            bm25_lag: lmdb_seq.saturating_sub(watermark),
            bm25_docs: s.bm25.num_docs(),
            exact_cached_vectors: s.exact.cached_vectors(),
            exact_cache_bytes: s.exact.cached_bytes(),
            vector_tree_builds: s.tree_builds.load(Ordering::Relaxed),
            model: s.model.name.clone(),
            dimension: s.model.dimension,
        })
    }

    /// The last `n` turns of a conversation of `ns`, oldest first, without a search: for an
    /// agent that puts the conversation so far into its prompt itself.
    pub fn recent_turns(
        &self,
        ns: &str,
        conversation: &str,
        n: usize,
    ) -> Result<Vec<Memory>, StoreError> {
        let s = &*self.shared;
        let rtxn = s.env.read_txn()?;
        let ids =
            super::search::recent_turns(&s.dbs, &rtxn, ns, Some(&(conversation.to_string(), n)))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.iter().rev() {
            let key = codec::ns_name_key(ns, id);
            if let Some(value) = s.dbs.memories.get(&rtxn, &key)? {
                out.push(to_memory(&key, value)?);
            }
        }
        Ok(out)
    }

    /// Calls `f` with every memory (of `namespace`, or all), in key order, until it breaks.
    pub fn for_each_memory(
        &self,
        namespace: Option<&str>,
        mut f: impl FnMut(&Memory) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let s = &*self.shared;
        let rtxn = s.env.read_txn()?;
        let prefix = namespace.map(codec::ns_key).unwrap_or_default();
        for entry in s.dbs.memories.prefix_iter(&rtxn, &prefix)? {
            let (key, value) = entry?;
            let m = to_memory(key, value)?;
            if f(&m).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Commits BM25 and builds every pending vector now (tests, benchmarks, shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        let s = &*self.shared;
        if s.read_only {
            return Ok(());
        }
        background::catch_up_bm25(s)?;
        while {
            let step = vector::build_step(
                &s.env,
                &s.dbs,
                s.model.dimension,
                vector::BuildParams::from_config(&s.store_cfg),
                &|| false,
            )?;
            s.tree_builds
                .fetch_add(step.trees_built as u64, Ordering::Relaxed);
            step.added + step.deleted > 0
        } {}
        Ok(())
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.shared.signal.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The lock goes last: no other writer may start while our threads still write.
        drop(self.lock.take());
    }
}

impl Retriever for MemoryStore {
    fn search(&self, request: &SearchRequest) -> Result<Vec<Hit>, StageError> {
        MemoryStore::search(self, request).map_err(|e| StageError::new(e.to_string()))
    }

    fn retrieve(&self, request: &SearchRequest) -> Result<Retrieved, StageError> {
        MemoryStore::retrieve(self, request).map_err(|e| StageError::new(e.to_string()))
    }

    /// Searches read LMDB transactions and tantivy searchers and take no exclusive lock, so a hung
    /// search holds nothing a later one needs.
    fn after_hang(&self) -> Result<AfterHang<dyn Retriever>, StageError> {
        Ok(AfterHang::Reuse)
    }
}

pub(crate) fn to_memory(key: &[u8], value: &[u8]) -> Result<Memory, StoreError> {
    let (ns, id) = codec::split_memory_key(key)?;
    let rec: MemoryRecord = codec::decode(value, "memory record")?;
    Ok(Memory {
        id: id.to_string(),
        namespace: ns.to_string(),
        conversation: rec.conversation,
        speaker: rec.speaker,
        text: rec.text,
        ts_ms: rec.ts_ms,
        supersedes: rec.supersedes,
        expires_at_ms: rec.expires_at_ms,
    })
}

/// Checks one record; returns it with unit-length chunk vectors, or why it is refused.
pub(crate) fn validate(
    nm: NewMemory,
    cfg: &StoreConfig,
    model: &StoredModel,
) -> Result<(Memory, Vec<UnitChunk>), String> {
    let m = nm.memory;
    let name_ok = |what: &str, v: &str, required: bool| -> Result<(), String> {
        if required && v.trim().is_empty() {
            return Err(format!("missing {what}"));
        }
        if v.len() > codec::MAX_NAME_BYTES {
            return Err(format!(
                "{what} is {} bytes, longer than {}",
                v.len(),
                codec::MAX_NAME_BYTES
            ));
        }
        Ok(())
    };
    name_ok("id", &m.id, true)?;
    name_ok("namespace", &m.namespace, true)?;
    name_ok("conversation", &m.conversation, false)?;
    name_ok("speaker", &m.speaker, false)?;
    if m.text.trim().is_empty() {
        return Err("empty text".into());
    }
    if m.text.len() > cfg.max_text_bytes {
        return Err(format!(
            "text is {} bytes, over the limit of {} (store.max_text_bytes)",
            m.text.len(),
            cfg.max_text_bytes
        ));
    }
    if nm.chunks.is_empty() {
        return Err("no chunks: every memory needs at least one embedded chunk".into());
    }
    let mut chunks = Vec::with_capacity(nm.chunks.len());
    for (i, c) in nm.chunks.into_iter().enumerate() {
        if c.text.trim().is_empty() {
            return Err(format!("chunk {i}: empty text"));
        }
        if c.embedding.len() != model.dimension {
            return Err(format!(
                "chunk {i}: embedding has {} dimensions, the store's model {:?} has {}",
                c.embedding.len(),
                model.name,
                model.dimension
            ));
        }
        let v = vector::normalized(&c.embedding)
            .ok_or_else(|| format!("chunk {i}: embedding is zero or not finite"))?;
        chunks.push((c.text, v));
    }
    Ok((m, chunks))
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
