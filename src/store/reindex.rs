//! Re-embedding every memory with another model (`voicerag reindex`): staged batch by batch, then
//! switched in one LMDB transaction.

use std::path::Path;

use voicerag_actors::messages::Memory;

use super::background;
use super::codec::{self, Op};
use super::lmdb::{self, StoredModel, UnitChunk, WriteBatch};
use super::memory_store::{MemoryStore, to_memory, validate};
use super::open::{Mode, open_shared};
use super::{ChunkInput, ModelInfo, NewMemory, RetrievalConfig, StoreConfig, StoreError, vector};

/// What `reindex` did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReindexReport {
    pub memories: u64,
    pub chunks: u64,
    pub from_model: Option<String>,
    pub to_model: String,
}

impl MemoryStore {
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
            s.dbs.superseded,
            s.dbs.expiries,
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
        // Every memory has new chunk ids, the superseded ones included.
        s.hidden.invalidate_all();
        let count = {
            let rtxn = s.env.read_txn()?;
            s.dbs.memories.len(&rtxn)?
        };
        background::catch_up_bm25(s)?;
        while {
            let step = vector::build_step(
                &s.env,
                &s.dbs,
                model.dimension,
                vector::BuildParams::from_config(&s.store_cfg),
                &|| false,
            )?;
            s.tree_builds.fetch_add(
                step.trees_built as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            step.added > 0
        } {}
        Ok(ReindexReport {
            memories: count,
            chunks: chunk_count,
            from_model,
            to_model: model.name.clone(),
        })
    }
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
