//! The LMDB side: the environment, its databases, and the record-level writes (insert and
//! remove a memory with every secondary structure) done inside one write transaction.

use std::collections::HashMap;
use std::path::Path;

use arroy::distances::Cosine;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, OnCommit, RwTxn, WithoutTls};
use roaring::RoaringBitmap;

use super::StoreError;
use super::codec::{self, ChunkRecord, MemoryRecord, Op};
use voicerag_actors::messages::Memory;

/// A chunk's text and unit-length vector.
pub type UnitChunk = (String, Vec<f32>);

/// The store's on-disk schema version (bump on incompatible layout changes).
/// 2: memory records may carry `supersedes`, `expires_at_ms`, `superseded_by` (schema-1 records
/// decode unchanged), and the `superseded` and `expiries` databases exist. A writer opening a
/// schema-1 store creates them (empty: schema 1 had neither) and records version 2.
pub const SCHEMA_VERSION: u32 = 2;

/// Databases added by schema 2: a schema-1 store lacks them until a writer opens it.
const SCHEMA_2_DATABASES: [&str; 2] = ["superseded", "expiries"];

pub type Raw = Database<'static, Bytes, Bytes>;
pub type Vectors = arroy::Database<'static, Cosine>;

/// Every LMDB database of the store.
#[derive(Clone, Copy)]
pub struct Dbs {
    /// Schema version, model, counters.
    pub meta: Raw,
    /// `(ns, id)` -> [`MemoryRecord`].
    pub memories: Raw,
    /// chunk id -> [`ChunkRecord`].
    pub chunks: Raw,
    /// ns -> arroy index (u16).
    pub ns_index: Raw,
    /// ns -> live chunk ids (the namespace's candidate set).
    pub ns_chunks: Raw,
    /// `(ns, conversation)` -> chunk ids.
    pub conv_chunks: Raw,
    /// `(ns, speaker)` -> chunk ids.
    pub speaker_chunks: Raw,
    /// `(ns, ts, chunk)` -> ().
    pub times: Raw,
    /// `(ns, conversation, ts, id)` -> ().
    pub turns: Raw,
    /// `(index, chunk)` -> vector not yet in arroy's trees (searched by exact scan).
    pub pending: Raw,
    /// `(index, chunk)` -> (): vectors deleted from the store, still to remove from arroy.
    pub vec_deletes: Raw,
    /// seq -> [`Op`]: what BM25 has to replay.
    pub oplog: Raw,
    /// `(ns, id)` -> re-embedded chunks during `reindex`.
    pub staging: Raw,
    /// ns -> chunks of memories another memory superseded (left out of default results).
    pub superseded: Raw,
    /// `(ns, expires_at, chunk)` -> (): when memories leave default results.
    pub expiries: Raw,
    /// arroy's items and trees.
    pub vectors: Vectors,
}

const NAMES: [&str; 15] = [
    "meta",
    "memories",
    "chunks",
    "ns_index",
    "ns_chunks",
    "conv_chunks",
    "speaker_chunks",
    "times",
    "turns",
    "pending",
    "vec_deletes",
    "oplog",
    "staging",
    "superseded",
    "expiries",
];

pub const META_SCHEMA: &[u8] = b"schema_version";
pub const META_MODEL: &[u8] = b"model_name";
pub const META_DIM: &[u8] = b"dimension";
const META_NEXT_CHUNK: &[u8] = b"next_chunk";
const META_NEXT_SEQ: &[u8] = b"next_seq";
const META_NEXT_INDEX: &[u8] = b"next_index";

/// arroy indexes are u16: one per namespace until they run out, then namespaces share (searches
/// always pass the namespace's candidate set, so sharing never mixes namespaces).
const INDEX_COUNT: u32 = 1 << 16;

/// Opens (or creates, when writable) the environment in `dir`.
/// `store_dir` names the store in errors. A store of a newer schema is refused before anything
/// is created in it.
pub fn open_env(
    dir: &Path,
    map_size_mib: usize,
    read_only: bool,
    store_dir: &Path,
) -> Result<(Env<WithoutTls>, Dbs), StoreError> {
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(map_size_mib.max(1) * 1024 * 1024)
        .max_dbs(NAMES.len() as u32 + 2)
        .max_readers(254);
    if read_only {
        // SAFETY: READ_ONLY only restricts what this handle may do.
        unsafe { opts.flags(EnvFlags::READ_ONLY) };
    }
    // SAFETY: the store's own lock file keeps a second writer process away, and the data file is
    // only ever modified through LMDB.
    let env = unsafe { opts.open(dir) }.map_err(|e| match e {
        heed::Error::EnvAlreadyOpened => StoreError::InvalidRequest(format!(
            "the store {} is already open in this process; share the MemoryStore (Arc) instead",
            dir.display()
        )),
        heed::Error::Mdb(heed::MdbError::Invalid | heed::MdbError::VersionMismatch) => {
            StoreError::NotAStore {
                path: store_dir.to_path_buf(),
            }
        }
        other => StoreError::Lmdb(other),
    })?;
    check_schema(&env, store_dir)?;
    let dbs = if read_only {
        let rtxn = env.read_txn()?;
        env.open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_, StoreError> {
            let mut raw = Vec::with_capacity(NAMES.len());
            for name in NAMES {
                match dbo.open_database::<Bytes, Bytes>(rtxn, Some(name))? {
                    Some(db) => raw.push(db),
                    None if SCHEMA_2_DATABASES.contains(&name) => {
                        return Err(StoreError::InvalidRequest(format!(
                            "the store {} has schema 1 (written by an older voicerag): open \
                             it once for writing to upgrade it, then read-only opens work",
                            store_dir.display()
                        )));
                    }
                    None => return Err(codec::corrupt(&format!("database {name} is missing"))),
                }
            }
            let vectors = dbo
                .open_database(rtxn, Some("vectors"))?
                .ok_or_else(|| codec::corrupt("database vectors is missing"))?;
            Ok(CommitOrAbort::<_, ()>::Commit(assemble(&raw, vectors)))
        })?
    } else {
        let wtxn = env.write_txn()?;
        env.create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, StoreError> {
            let mut raw = Vec::with_capacity(NAMES.len());
            for name in NAMES {
                raw.push(dbo.create_database::<Bytes, Bytes>(wtxn, Some(name))?);
            }
            let vectors = dbo.create_database(wtxn, Some("vectors"))?;
            Ok(CommitOrAbort::<_, ()>::Commit(assemble(&raw, vectors)))
        })?
    };
    match dbs {
        CommitOrAbort::Commit(dbs) => Ok((env, dbs)),
        CommitOrAbort::Abort(()) => Err(codec::corrupt("database creation aborted")),
    }
}

// The databases are opened inside heed's closure with a local lifetime; they are handles that
// become 'static once the transaction commits (heed's `OnCommit`), so `Dbs` is built from them.
fn assemble<'e>(
    raw: &[Database<'e, Bytes, Bytes>],
    vectors: arroy::Database<'e, Cosine>,
) -> DbsLocal<'e> {
    DbsLocal {
        raw: raw.to_vec(),
        vectors,
    }
}

pub struct DbsLocal<'e> {
    raw: Vec<Database<'e, Bytes, Bytes>>,
    vectors: arroy::Database<'e, Cosine>,
}

impl OnCommit for DbsLocal<'_> {
    type Committed = Dbs;
    fn on_commit(self, token: &heed::CommitToken) -> Dbs {
        let r: Vec<Raw> = self.raw.into_iter().map(|db| db.on_commit(token)).collect();
        Dbs {
            meta: r[0],
            memories: r[1],
            chunks: r[2],
            ns_index: r[3],
            ns_chunks: r[4],
            conv_chunks: r[5],
            speaker_chunks: r[6],
            times: r[7],
            turns: r[8],
            pending: r[9],
            vec_deletes: r[10],
            oplog: r[11],
            staging: r[12],
            superseded: r[13],
            expiries: r[14],
            vectors: self.vectors.on_commit(token),
        }
    }
}

fn check_schema(env: &Env<WithoutTls>, store_dir: &Path) -> Result<(), StoreError> {
    let rtxn = env.read_txn()?;
    let found = env.open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_, StoreError> {
        let version = match dbo.open_database::<Bytes, Bytes>(rtxn, Some("meta"))? {
            Some(meta) => meta
                .get(rtxn, META_SCHEMA)?
                .map(codec::u64_from)
                .transpose()?,
            None => None,
        };
        Ok(CommitOrAbort::<(), _>::Abort(version))
    })?;
    if let CommitOrAbort::Abort(Some(v)) = found
        && v > SCHEMA_VERSION as u64
    {
        return Err(StoreError::SchemaTooNew {
            path: store_dir.to_path_buf(),
            found: v as u32,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// What the metadata says about the stored model.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    pub name: String,
    pub dimension: usize,
}

pub fn read_u64(dbs: &Dbs, txn: &heed::RoTxn, key: &[u8]) -> Result<Option<u64>, StoreError> {
    dbs.meta.get(txn, key)?.map(codec::u64_from).transpose()
}

pub fn schema_version(dbs: &Dbs, txn: &heed::RoTxn) -> Result<Option<u32>, StoreError> {
    Ok(read_u64(dbs, txn, META_SCHEMA)?.map(|v| v as u32))
}

pub fn stored_model(dbs: &Dbs, txn: &heed::RoTxn) -> Result<Option<StoredModel>, StoreError> {
    let name = dbs.meta.get(txn, META_MODEL)?;
    let dim = read_u64(dbs, txn, META_DIM)?;
    match (name, dim) {
        (Some(n), Some(d)) => Ok(Some(StoredModel {
            name: String::from_utf8_lossy(n).into_owned(),
            dimension: d as usize,
        })),
        _ => Ok(None),
    }
}

pub fn write_model(dbs: &Dbs, wtxn: &mut RwTxn, model: &StoredModel) -> Result<(), StoreError> {
    dbs.meta
        .put(wtxn, META_SCHEMA, &(SCHEMA_VERSION as u64).to_be_bytes())?;
    dbs.meta.put(wtxn, META_MODEL, model.name.as_bytes())?;
    dbs.meta
        .put(wtxn, META_DIM, &(model.dimension as u64).to_be_bytes())?;
    Ok(())
}

/// Records the current schema version (a writer upgrading a schema-1 store: its databases were
/// just created by `open_env`, and schema-1 records decode as they are).
pub fn write_schema(dbs: &Dbs, wtxn: &mut RwTxn) -> Result<(), StoreError> {
    dbs.meta
        .put(wtxn, META_SCHEMA, &(SCHEMA_VERSION as u64).to_be_bytes())?;
    Ok(())
}

/// The highest sequence number written to the operation log (0: none yet).
pub fn last_seq(dbs: &Dbs, txn: &heed::RoTxn) -> Result<u64, StoreError> {
    Ok(read_u64(dbs, txn, META_NEXT_SEQ)?.unwrap_or(1) - 1)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum BitmapKind {
    Namespace,
    Conversation,
    Speaker,
    Superseded,
}

impl BitmapKind {
    fn db(self, dbs: &Dbs) -> Raw {
        match self {
            BitmapKind::Namespace => dbs.ns_chunks,
            BitmapKind::Conversation => dbs.conv_chunks,
            BitmapKind::Speaker => dbs.speaker_chunks,
            BitmapKind::Superseded => dbs.superseded,
        }
    }
}

/// One write transaction with the store's bookkeeping: counters, candidate bitmaps (each read
/// and written once per transaction, however many records touch it) and the BM25 op log.
pub struct WriteBatch<'t> {
    pub wtxn: RwTxn<'t>,
    dbs: Dbs,
    dim: usize,
    bitmaps: HashMap<(BitmapKind, Vec<u8>), RoaringBitmap>,
    next_chunk: u64,
    next_seq: u64,
    next_index: u64,
    ops: Vec<Op>,
}

impl<'t> WriteBatch<'t> {
    pub fn begin(env: &'t Env<WithoutTls>, dbs: Dbs, dim: usize) -> Result<Self, StoreError> {
        let wtxn = env.write_txn()?;
        let next_chunk = read_u64(&dbs, &wtxn, META_NEXT_CHUNK)?.unwrap_or(0);
        let next_seq = read_u64(&dbs, &wtxn, META_NEXT_SEQ)?.unwrap_or(1);
        let next_index = read_u64(&dbs, &wtxn, META_NEXT_INDEX)?.unwrap_or(0);
        Ok(Self {
            wtxn,
            dbs,
            dim,
            bitmaps: HashMap::new(),
            next_chunk,
            next_seq,
            next_index,
            ops: Vec::new(),
        })
    }

    pub fn memory_exists(&self, ns: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .dbs
            .memories
            .get(&self.wtxn, &codec::ns_name_key(ns, id))?
            .is_some())
    }

    fn bitmap(&mut self, kind: BitmapKind, key: Vec<u8>) -> Result<&mut RoaringBitmap, StoreError> {
        let db = kind.db(&self.dbs);
        let slot = (kind, key);
        if !self.bitmaps.contains_key(&slot) {
            let bm = match db.get(&self.wtxn, &slot.1)? {
                Some(bytes) => codec::bitmap_from(bytes)?,
                None => RoaringBitmap::new(),
            };
            self.bitmaps.insert(slot.clone(), bm);
        }
        self.bitmaps
            .get_mut(&slot)
            .ok_or_else(|| codec::corrupt("bitmap cache"))
    }

    /// The namespace's arroy index, allocated on first use.
    pub fn index_for(&mut self, ns: &str) -> Result<u16, StoreError> {
        let key = codec::ns_key(ns);
        if let Some(b) = self.dbs.ns_index.get(&self.wtxn, &key)? {
            let arr: [u8; 2] = b.try_into().map_err(|_| codec::corrupt("ns index"))?;
            return Ok(u16::from_be_bytes(arr));
        }
        let index = if self.next_index < INDEX_COUNT as u64 {
            self.next_index += 1;
            (self.next_index - 1) as u16
        } else {
            // Out of indexes: share one, chosen by a stable hash (candidates keep namespaces apart).
            (fnv1a(ns.as_bytes()) % INDEX_COUNT as u64) as u16
        };
        self.dbs
            .ns_index
            .put(&mut self.wtxn, &key, &index.to_be_bytes())?;
        Ok(index)
    }

    /// Stores a validated memory with its chunks; returns the new chunk ids.
    /// Re-inserting a stored memory (reindex) keeps whether another memory superseded it.
    pub fn insert(&mut self, m: &Memory, chunks: &[UnitChunk]) -> Result<Vec<u32>, StoreError> {
        let index = self.index_for(&m.namespace)?;
        let mkey = codec::ns_name_key(&m.namespace, &m.id);
        let superseded_by = match self.dbs.memories.get(&self.wtxn, &mkey)? {
            Some(bytes) => codec::decode::<MemoryRecord>(bytes, "memory record")?.superseded_by,
            None => None,
        };
        let mut ids = Vec::with_capacity(chunks.len());
        for (text, vector) in chunks {
            if self.next_chunk > u32::MAX as u64 {
                return Err(StoreError::InvalidRequest(
                    "chunk ids exhausted (4 billion chunks written)".into(),
                ));
            }
            let id = self.next_chunk as u32;
            self.next_chunk += 1;
            debug_assert_eq!(vector.len(), self.dim);
            let rec = ChunkRecord {
                memory: &mkey,
                text: if chunks.len() == 1 && *text == m.text {
                    None
                } else {
                    Some(text.as_str())
                },
            };
            self.dbs
                .chunks
                .put(&mut self.wtxn, &id.to_be_bytes(), &rec.encode())?;
            self.dbs.pending.put(
                &mut self.wtxn,
                &codec::index_chunk_key(index, id),
                &codec::vector_bytes(vector),
            )?;
            self.dbs.times.put(
                &mut self.wtxn,
                &codec::time_key(&m.namespace, m.ts_ms, id),
                &[],
            )?;
            if let Some(at) = m.expires_at_ms {
                self.dbs.expiries.put(
                    &mut self.wtxn,
                    &codec::expiry_key(&m.namespace, at, id),
                    &[],
                )?;
            }
            ids.push(id);
        }
        for (kind, key) in [
            (BitmapKind::Namespace, codec::ns_key(&m.namespace)),
            (
                BitmapKind::Conversation,
                codec::ns_name_key(&m.namespace, &m.conversation),
            ),
            (
                BitmapKind::Speaker,
                codec::ns_name_key(&m.namespace, &m.speaker),
            ),
        ] {
            self.bitmap(kind, key)?.extend(ids.iter().copied());
        }
        let rec = MemoryRecord {
            conversation: m.conversation.clone(),
            speaker: m.speaker.clone(),
            text: m.text.clone(),
            ts_ms: m.ts_ms,
            chunks: ids.clone(),
            supersedes: m.supersedes.clone(),
            expires_at_ms: m.expires_at_ms,
            superseded_by,
        };
        if rec.superseded_by.is_some() {
            self.bitmap(BitmapKind::Superseded, codec::ns_key(&m.namespace))?
                .extend(ids.iter().copied());
        }
        self.dbs
            .memories
            .put(&mut self.wtxn, &mkey, &codec::encode(&rec))?;
        for old in &m.supersedes {
            self.supersede(&m.namespace, old, &m.id)?;
        }
        self.dbs.turns.put(
            &mut self.wtxn,
            &codec::turn_key(&m.namespace, &m.conversation, m.ts_ms, &m.id),
            &[],
        )?;
        Ok(ids)
    }

    /// Marks memory `old` of namespace `ns` as replaced by `by`: its chunks leave default
    /// results, its record stays. Only `ns` is looked in, so an id of another namespace (another
    /// user's) does nothing; an absent id, or the memory itself, does nothing either.
    fn supersede(&mut self, ns: &str, old: &str, by: &str) -> Result<(), StoreError> {
        if old == by {
            return Ok(());
        }
        let key = codec::ns_name_key(ns, old);
        let Some(bytes) = self.dbs.memories.get(&self.wtxn, &key)? else {
            return Ok(());
        };
        let mut rec: MemoryRecord = codec::decode(bytes, "memory record")?;
        if rec.superseded_by.as_deref() == Some(by) {
            return Ok(());
        }
        rec.superseded_by = Some(by.to_string());
        self.dbs
            .memories
            .put(&mut self.wtxn, &key, &codec::encode(&rec))?;
        // Only chunks that exist: during a reindex a memory not yet re-inserted has none (its
        // new ones join the bitmap when it is).
        let mut live = Vec::with_capacity(rec.chunks.len());
        for c in &rec.chunks {
            if self.dbs.chunks.get(&self.wtxn, &c.to_be_bytes())?.is_some() {
                live.push(*c);
            }
        }
        self.bitmap(BitmapKind::Superseded, codec::ns_key(ns))?
            .extend(live);
        Ok(())
    }

    /// Removes a memory from every structure; returns its chunk ids, or `None` if absent.
    pub fn remove(&mut self, ns: &str, id: &str) -> Result<Option<Vec<u32>>, StoreError> {
        let mkey = codec::ns_name_key(ns, id);
        let Some(bytes) = self.dbs.memories.get(&self.wtxn, &mkey)? else {
            return Ok(None);
        };
        let rec: MemoryRecord = codec::decode(bytes, "memory record")?;
        let index = self.index_for(ns)?;
        self.dbs.memories.delete(&mut self.wtxn, &mkey)?;
        self.dbs.turns.delete(
            &mut self.wtxn,
            &codec::turn_key(ns, &rec.conversation, rec.ts_ms, id),
        )?;
        for &chunk in &rec.chunks {
            self.dbs
                .chunks
                .delete(&mut self.wtxn, &chunk.to_be_bytes())?;
            self.dbs
                .times
                .delete(&mut self.wtxn, &codec::time_key(ns, rec.ts_ms, chunk))?;
            if let Some(at) = rec.expires_at_ms {
                self.dbs
                    .expiries
                    .delete(&mut self.wtxn, &codec::expiry_key(ns, at, chunk))?;
            }
            let key = codec::index_chunk_key(index, chunk);
            // A vector still pending never reached arroy; otherwise arroy must drop it later.
            if !self.dbs.pending.delete(&mut self.wtxn, &key)? {
                self.dbs.vec_deletes.put(&mut self.wtxn, &key, &[])?;
            }
        }
        for (kind, key) in [
            (BitmapKind::Namespace, codec::ns_key(ns)),
            (
                BitmapKind::Conversation,
                codec::ns_name_key(ns, &rec.conversation),
            ),
            (BitmapKind::Speaker, codec::ns_name_key(ns, &rec.speaker)),
        ] {
            let bm = self.bitmap(kind, key)?;
            for c in &rec.chunks {
                bm.remove(*c);
            }
        }
        if rec.superseded_by.is_some() {
            let bm = self.bitmap(BitmapKind::Superseded, codec::ns_key(ns))?;
            for c in &rec.chunks {
                bm.remove(*c);
            }
        }
        Ok(Some(rec.chunks))
    }

    /// Queues an operation for BM25.
    pub fn log(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Writes bitmaps, counters and the op log, then commits: the write is durable on return.
    pub fn commit(mut self) -> Result<(), StoreError> {
        for ((kind, key), bm) in std::mem::take(&mut self.bitmaps) {
            let db = kind.db(&self.dbs);
            if bm.is_empty() {
                db.delete(&mut self.wtxn, &key)?;
            } else {
                db.put(&mut self.wtxn, &key, &codec::bitmap_bytes(&bm))?;
            }
        }
        for op in std::mem::take(&mut self.ops) {
            self.dbs.oplog.put(
                &mut self.wtxn,
                &self.next_seq.to_be_bytes(),
                &codec::encode(&op),
            )?;
            self.next_seq += 1;
        }
        self.dbs.meta.put(
            &mut self.wtxn,
            META_NEXT_CHUNK,
            &self.next_chunk.to_be_bytes(),
        )?;
        self.dbs
            .meta
            .put(&mut self.wtxn, META_NEXT_SEQ, &self.next_seq.to_be_bytes())?;
        self.dbs.meta.put(
            &mut self.wtxn,
            META_NEXT_INDEX,
            &self.next_index.to_be_bytes(),
        )?;
        self.wtxn.commit()?;
        Ok(())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The memory a chunk belongs to.
pub struct ChunkOwner {
    pub namespace: String,
    pub id: String,
    pub record: MemoryRecord,
    /// The chunk's own text (`None`: the whole memory text).
    pub text: Option<String>,
}

/// Reads the memory behind a chunk.
pub fn chunk_memory(
    dbs: &Dbs,
    txn: &heed::RoTxn,
    chunk: u32,
) -> Result<Option<ChunkOwner>, StoreError> {
    let Some(cbytes) = dbs.chunks.get(txn, &chunk.to_be_bytes())? else {
        return Ok(None);
    };
    let crec = ChunkRecord::decode(cbytes)?;
    let Some(mbytes) = dbs.memories.get(txn, crec.memory)? else {
        return Ok(None);
    };
    let rec: MemoryRecord = codec::decode(mbytes, "memory record")?;
    let (ns, id) = codec::split_memory_key(crec.memory)?;
    Ok(Some(ChunkOwner {
        namespace: ns.to_string(),
        id: id.to_string(),
        record: rec,
        text: crec.text.map(str::to_string),
    }))
}

/// Bytes of pages the store's databases use.
pub fn used_bytes(dbs: &Dbs, txn: &heed::RoTxn) -> Result<u64, StoreError> {
    let raw = [
        dbs.meta,
        dbs.memories,
        dbs.chunks,
        dbs.ns_index,
        dbs.ns_chunks,
        dbs.conv_chunks,
        dbs.speaker_chunks,
        dbs.times,
        dbs.turns,
        dbs.pending,
        dbs.vec_deletes,
        dbs.oplog,
        dbs.staging,
        dbs.superseded,
        dbs.expiries,
    ];
    let mut total = dbs.vectors.stat(txn)?.non_free_page_size() as u64;
    for db in raw {
        total += db.stat(txn)?.non_free_page_size() as u64;
    }
    Ok(total)
}
