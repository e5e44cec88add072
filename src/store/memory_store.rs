//! [`MemoryStore`]: opening a data directory (locks, schema and model checks, catch-up of both
//! indexes), adding, forgetting, and re-embedding memories.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fs4::fs_std::FileExt;
use heed::{Env, WithoutTls};
use voicerag_actors::messages::{Hit, Memory, SearchRequest};
use voicerag_actors::{Retriever, StageError};

use super::background::{self, Signal};
use super::bm25::Bm25;
use super::codec::{self, MemoryRecord, Op};
use super::exact::ExactVectors;
use super::lmdb::{self, Dbs, StoredModel, UnitChunk, WriteBatch};
use super::{
    AddReport, ChunkInput, ModelInfo, NewMemory, RetrievalConfig, StoreConfig, StoreError, vector,
};

const LOCK_FILE: &str = "voicerag.lock";
const LMDB_DIR: &str = "lmdb";
const BM25_DIR: &str = "bm25";

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
    pub model: String,
    pub dimension: usize,
}

/// What `reindex` did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReindexReport {
    pub memories: u64,
    pub chunks: u64,
    pub from_model: Option<String>,
    pub to_model: String,
}

/// State shared with the background threads.
pub(crate) struct Shared {
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
    /// In-RAM vectors of the namespaces searched exactly.
    pub exact: ExactVectors,
}

/// Counts a writer as waiting until the write transaction is obtained.
fn begin_write<'t>(s: &'t Shared) -> Result<WriteBatch<'t>, StoreError> {
    s.writers_waiting.fetch_add(1, Ordering::AcqRel);
    let wb = WriteBatch::begin(&s.env, s.dbs, s.model.dimension);
    s.writers_waiting.fetch_sub(1, Ordering::AcqRel);
    wb
}

/// The durable hybrid memory of voicerag. `Send + Sync`: share it as `Arc<MemoryStore>`.
///
/// - `add` returns once records and vectors are committed to LMDB (durable, acknowledged);
///   vector search finds them at once, BM25 within `store.bm25_commit_ms` (+ commit time).
/// - Every search is confined to one namespace; filters apply inside each list before top-N.
/// - One process writes a data directory ([`MemoryStore::open`] takes a lock file); any number
///   of [`MemoryStore::open_read_only`] handles may search it meanwhile.
pub struct MemoryStore {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    lock: Option<File>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Writer,
    ReadOnly,
    /// Writer that accepts a stored model different from the configured one (reindex only).
    Reindex,
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
        })
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
        for (ns, chunks, ids) in &fresh {
            let vectors: Vec<(u32, &[f32])> = ids
                .iter()
                .zip(chunks)
                .map(|(id, (_, v))| (*id, v.as_slice()))
                .collect();
            s.exact.apply_add(ns, &vectors);
        }
        s.signal.notify();
        Ok(report)
    }

    /// Searches one namespace (hybrid, vector or BM25); hits best first, at most `top_n`.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, StoreError> {
        super::search::search(&self.shared, req)
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
        delete_older_than_shared(&self.shared, cutoff_ms)
    }

    fn delete_where(
        &self,
        select: impl FnOnce(&heed::RoTxn) -> Result<Vec<(String, String)>, StoreError>,
    ) -> Result<usize, StoreError> {
        delete_where(&self.shared, select)
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
            model: s.model.name.clone(),
            dimension: s.model.dimension,
        })
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
            step.added + step.deleted > 0
        } {}
        Ok(())
    }

    /// Re-embeds every stored memory with `model` (what `voicerag reindex` runs), then switches
    /// the store's model. `embed` gets batches of up to `batch_size` memories and returns each
    /// one's chunks. Takes the writer lock. The switch is one LMDB transaction: a failure or crash
    /// before it leaves the old model's store intact, so two models' vectors never mix.
    pub fn reindex(
        dir: &Path,
        store: &StoreConfig,
        retrieval: &RetrievalConfig,
        model: &ModelInfo,
        batch_size: usize,
        mut embed: impl FnMut(&[Memory]) -> Result<Vec<Vec<ChunkInput>>, String>,
    ) -> Result<ReindexReport, StoreError> {
        let (shared, _lock) = open_shared(dir, store, retrieval, model, Mode::Reindex)?;
        let s = &shared;
        let full = super::error::map_full(s.store_cfg.map_size_mib);
        let from_model = {
            let rtxn = s.env.read_txn()?;
            lmdb::stored_model(&s.dbs, &rtxn)?.map(|m| m.name)
        };
        let target = StoredModel {
            name: model.name.clone(),
            dimension: model.dimension,
        };
        // Stage the new chunks batch by batch (bounded memory), leaving the live data alone.
        {
            let mut wtxn = s.env.write_txn()?;
            s.dbs.staging.clear(&mut wtxn)?;
            wtxn.commit()?;
        }
        let keys: Vec<Vec<u8>> = {
            let rtxn = s.env.read_txn()?;
            let mut keys = Vec::new();
            for entry in s.dbs.memories.iter(&rtxn)? {
                keys.push(entry?.0.to_vec());
            }
            keys
        };
        let mut chunk_count = 0u64;
        for batch in keys.chunks(batch_size.max(1)) {
            let memories = {
                let rtxn = s.env.read_txn()?;
                let mut out = Vec::with_capacity(batch.len());
                for key in batch {
                    if let Some(v) = s.dbs.memories.get(&rtxn, key)? {
                        out.push(to_memory(key, v)?);
                    }
                }
                out
            };
            let embedded = embed(&memories).map_err(StoreError::Reindex)?;
            if embedded.len() != memories.len() {
                return Err(StoreError::Reindex(format!(
                    "the embedder returned {} results for {} memories",
                    embedded.len(),
                    memories.len()
                )));
            }
            let mut wtxn = s.env.write_txn()?;
            for (m, chunks) in memories.iter().zip(embedded) {
                let nm = NewMemory {
                    memory: m.clone(),
                    chunks,
                };
                let (_, chunks) = validate(nm, &s.store_cfg, &target).map_err(|reason| {
                    StoreError::Reindex(format!("memory {:?}: {reason}", m.id))
                })?;
                chunk_count += chunks.len() as u64;
                s.dbs
                    .staging
                    .put(
                        &mut wtxn,
                        &codec::ns_name_key(&m.namespace, &m.id),
                        &encode_staged(&chunks),
                    )
                    .map_err(|e| full(e.into()))?;
            }
            wtxn.commit()?;
        }
        // The switch: drop every derived structure of the old model and insert the staged
        // chunks, all in one transaction.
        let mut wb = WriteBatch::begin(&s.env, s.dbs, model.dimension)?;
        for db in [
            s.dbs.pending,
            s.dbs.vec_deletes,
            s.dbs.chunks,
            s.dbs.ns_chunks,
            s.dbs.conv_chunks,
            s.dbs.speaker_chunks,
            s.dbs.times,
        ] {
            db.clear(&mut wb.wtxn)?;
        }
        s.dbs.vectors.clear(&mut wb.wtxn)?;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut page = Vec::new();
            {
                let lower = match &after {
                    Some(k) => std::ops::Bound::Excluded(k.as_slice()),
                    None => std::ops::Bound::Unbounded,
                };
                let range = (lower, std::ops::Bound::Unbounded);
                for entry in s.dbs.staging.range(&wb.wtxn, &range)?.take(1000) {
                    let (k, v) = entry?;
                    page.push((k.to_vec(), v.to_vec()));
                }
            }
            let Some(last) = page.last().map(|p| p.0.clone()) else {
                break;
            };
            for (key, staged) in page {
                let Some(value) = s.dbs.memories.get(&wb.wtxn, &key)? else {
                    continue;
                };
                let memory = to_memory(&key, value)?;
                let chunks = decode_staged(&staged)?;
                wb.insert(&memory, &chunks).map_err(&full)?;
            }
            after = Some(last);
        }
        s.dbs.staging.clear(&mut wb.wtxn)?;
        lmdb::write_model(&s.dbs, &mut wb.wtxn, &target)?;
        wb.log(Op::Rebuild);
        wb.commit().map_err(&full)?;
        let count = {
            let rtxn = s.env.read_txn()?;
            s.dbs.memories.len(&rtxn)?
        };
        background::catch_up_bm25(s)?;
        while vector::build_step(
            &s.env,
            &s.dbs,
            model.dimension,
            vector::BuildParams::from_config(&s.store_cfg),
            &|| false,
        )?
        .added
            > 0
        {}
        Ok(ReindexReport {
            memories: count,
            chunks: chunk_count,
            from_model,
            to_model: model.name.clone(),
        })
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
}

pub(crate) fn delete_older_than_shared(s: &Shared, cutoff_ms: i64) -> Result<usize, StoreError> {
    let dbs = s.dbs;
    delete_where(s, |txn| {
        let mut chunks = Vec::new();
        for entry in dbs.times.iter(txn)? {
            let (key, _) = entry?;
            let mut pos = 0;
            codec::read_str(key, &mut pos)?;
            let ts = codec::u64_from(
                key.get(pos..pos + 8)
                    .ok_or_else(|| codec::corrupt("time key"))?,
            )?;
            if ((ts ^ (1 << 63)) as i64) < cutoff_ms {
                chunks.push(codec::u32_from(&key[pos + 8..])?);
            }
        }
        let mut out = Vec::new();
        for chunk in chunks {
            if let Some(owner) = lmdb::chunk_memory(&dbs, txn, chunk)? {
                out.push((owner.namespace, owner.id));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    })
}

/// Removes the memories `select` names, in one transaction.
fn delete_where(
    s: &Shared,
    select: impl FnOnce(&heed::RoTxn) -> Result<Vec<(String, String)>, StoreError>,
) -> Result<usize, StoreError> {
    if s.read_only {
        return Err(StoreError::ReadOnly);
    }
    let full = super::error::map_full(s.store_cfg.map_size_mib);
    let mut wb = begin_write(s)?;
    let targets = select(&wb.wtxn)?;
    let mut removed = 0;
    let mut chunks = Vec::new();
    let mut gone: Vec<(String, Vec<u32>)> = Vec::new();
    for (ns, id) in targets {
        if let Some(c) = wb.remove(&ns, &id).map_err(&full)? {
            removed += 1;
            chunks.extend(c.iter().copied());
            gone.push((ns, c));
        }
    }
    if removed == 0 {
        return Ok(0);
    }
    wb.log(Op::Delete(chunks));
    wb.commit().map_err(&full)?;
    for (ns, c) in &gone {
        s.exact.apply_delete(ns, c);
    }
    s.signal.notify();
    Ok(removed)
}

fn to_memory(key: &[u8], value: &[u8]) -> Result<Memory, StoreError> {
    let (ns, id) = codec::split_memory_key(key)?;
    let rec: MemoryRecord = codec::decode(value, "memory record")?;
    Ok(Memory {
        id: id.to_string(),
        namespace: ns.to_string(),
        conversation: rec.conversation,
        speaker: rec.speaker,
        text: rec.text,
        ts_ms: rec.ts_ms,
    })
}

/// Checks one record; returns it with unit-length chunk vectors, or why it is refused.
fn validate(
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

fn encode_staged(chunks: &[UnitChunk]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(chunks.len() as u32).to_be_bytes());
    for (text, v) in chunks {
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(&codec::vector_bytes(v));
    }
    out
}

fn decode_staged(bytes: &[u8]) -> Result<Vec<UnitChunk>, StoreError> {
    let bad = || codec::corrupt("staged chunks");
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let s = bytes.get(pos..pos + n).ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let count = codec::u32_from(take(4)?)? as usize;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let tl = codec::u32_from(take(4)?)? as usize;
        let text = String::from_utf8(take(tl)?.to_vec()).map_err(|_| bad())?;
        let vl = codec::u32_from(take(4)?)? as usize;
        let v = codec::vector_from(take(vl * 4)?);
        out.push((text, v));
    }
    Ok(out)
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

/// True when `dir` holds nothing, or only what a voicerag store holds.
fn looks_like_store_or_empty(dir: &Path) -> Result<bool, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::io(format!("read {}", dir.display()), e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| StoreError::io(format!("read {}", dir.display()), e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(true);
    }
    if names
        .iter()
        .any(|n| n != LOCK_FILE && n != LMDB_DIR && n != BM25_DIR)
    {
        return Ok(false);
    }
    // Ours only if the LMDB environment is there (or nothing was created yet but the lock).
    Ok(dir.join(LMDB_DIR).join("data.mdb").exists() || names.iter().all(|n| n == LOCK_FILE))
}

fn open_shared(
    dir: &Path,
    store: &StoreConfig,
    retrieval: &RetrievalConfig,
    model: &ModelInfo,
    mode: Mode,
) -> Result<(Shared, Option<File>), StoreError> {
    let read_only = mode == Mode::ReadOnly;
    let not_a_store = || StoreError::NotAStore {
        path: dir.to_path_buf(),
    };
    if read_only {
        if !dir.join(LMDB_DIR).join("data.mdb").exists() {
            return Err(not_a_store());
        }
    } else if !looks_like_store_or_empty(dir)? {
        return Err(not_a_store());
    }
    let lock = if read_only {
        None
    } else {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let path = dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        let locked = file
            .try_lock_exclusive()
            .map_err(|e| StoreError::io(format!("lock {}", path.display()), e))?;
        if !locked {
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
            });
        }
        Some(file)
    };
    let lmdb_dir = dir.join(LMDB_DIR);
    if !read_only {
        std::fs::create_dir_all(&lmdb_dir)
            .map_err(|e| StoreError::io(format!("create {}", lmdb_dir.display()), e))?;
    }
    let (env, dbs) = lmdb::open_env(&lmdb_dir, store.map_size_mib, read_only, dir)?;
    if !read_only {
        // Reader slots of killed processes would pin old pages (the file would only grow).
        env.clear_stale_readers()?;
    }
    let requested = StoredModel {
        name: model.name.clone(),
        dimension: model.dimension,
    };
    let stored = {
        let rtxn = env.read_txn()?;
        let schema = lmdb::schema_version(&dbs, &rtxn)?;
        let stored = lmdb::stored_model(&dbs, &rtxn)?;
        if schema.is_none() && !dbs.memories.is_empty(&rtxn)? {
            return Err(not_a_store());
        }
        stored
    };
    let model = match (stored, mode) {
        (Some(s), Mode::Writer | Mode::ReadOnly) if s != requested => {
            return Err(StoreError::ModelMismatch {
                path: dir.to_path_buf(),
                stored_model: s.name,
                stored_dim: s.dimension,
                requested_model: requested.name,
                requested_dim: requested.dimension,
            });
        }
        (Some(s), Mode::Writer | Mode::ReadOnly) => s,
        (Some(s), Mode::Reindex) => s,
        (None, Mode::ReadOnly) => requested,
        (None, _) => {
            let mut wtxn = env.write_txn()?;
            lmdb::write_model(&dbs, &mut wtxn, &requested)?;
            wtxn.commit()?;
            requested
        }
    };
    let bm25 = Bm25::open(&dir.join(BM25_DIR), !read_only)?;
    let watermark = bm25.watermark()?;
    let exact = ExactVectors::new(model.dimension, store.exact_scan_max, !read_only);
    let shared = Shared {
        dir: dir.to_path_buf(),
        env,
        dbs,
        model,
        bm25,
        store_cfg: store.clone(),
        retrieval: retrieval.clone(),
        read_only,
        signal: Signal::default(),
        bm25_applied: AtomicU64::new(watermark),
        bm25_sync: Mutex::new(()),
        writers_waiting: AtomicUsize::new(0),
        exact,
    };
    if !read_only {
        // BM25 may lag LMDB after a crash: bring it up before anyone searches.
        background::catch_up_bm25(&shared)?;
    }
    Ok((shared, lock))
}
