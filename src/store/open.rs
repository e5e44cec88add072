//! Opening a data directory: the writer lock, schema and model checks, and the catch-up of BM25.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use fs4::fs_std::FileExt;

use super::background;
use super::bm25::Bm25;
use super::exact::ExactVectors;
use super::hidden::HiddenChunks;
use super::lmdb::{self, StoredModel};
use super::state::{Signal, StoreState};
use super::{ModelInfo, RetrievalConfig, StoreConfig, StoreError};

pub(crate) const LOCK_FILE: &str = "voicerag.lock";
pub(crate) const LMDB_DIR: &str = "lmdb";
pub(crate) const BM25_DIR: &str = "bm25";

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Writer,
    ReadOnly,
    /// Writer that accepts a stored model different from the configured one (reindex only).
    Reindex,
}

/// True when `dir` holds nothing, or only what a voicerag store holds.
pub(crate) fn looks_like_store_or_empty(dir: &Path) -> Result<bool, StoreError> {
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

pub(crate) fn open_shared(
    dir: &Path,
    store: &StoreConfig,
    retrieval: &RetrievalConfig,
    model: &ModelInfo,
    mode: Mode,
) -> Result<(StoreState, Option<File>), StoreError> {
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
    let (stored, schema) = {
        let rtxn = env.read_txn()?;
        let schema = lmdb::schema_version(&dbs, &rtxn)?;
        let stored = lmdb::stored_model(&dbs, &rtxn)?;
        if schema.is_none() && !dbs.memories.is_empty(&rtxn)? {
            return Err(not_a_store());
        }
        (stored, schema)
    };
    if !read_only && schema.is_some_and(|v| v < lmdb::SCHEMA_VERSION) {
        // An older schema: its new databases were created by `open_env`; record the upgrade.
        let mut wtxn = env.write_txn()?;
        lmdb::write_schema(&dbs, &mut wtxn)?;
        wtxn.commit()?;
    }
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
    let exact = ExactVectors::new(
        model.dimension,
        store.exact_scan_max,
        store.exact_cache_vectors,
        !read_only,
    );
    let shared = StoreState {
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
        tree_builds: AtomicU64::new(0),
        exact,
        hidden: HiddenChunks::new(!read_only),
    };
    if !read_only {
        // BM25 may lag LMDB after a crash: bring it up before anyone searches.
        background::catch_up_bm25(&shared)?;
    }
    Ok((shared, lock))
}
