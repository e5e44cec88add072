//! The vector side: nearest chunks from arroy's trees plus an exact scan of the vectors not yet
//! built into them, and the bounded background step that moves pending vectors into the trees.
//!
//! arroy refuses to read an index while items wait for a build (`NeedBuild`). Vectors therefore
//! enter arroy only inside the transaction that also builds: readers see either the pending copy
//! or the built one, never an unreadable index.

use std::num::NonZeroUsize;

use arroy::distances::Cosine;
use arroy::{Reader, Writer};
use arroy_rand::SeedableRng;
use arroy_rand::rngs::SmallRng;
use heed::{Env, RoTxn, WithoutTls};
use roaring::RoaringBitmap;

use super::StoreError;
use super::codec;
use super::lmdb::Dbs;

/// Scales `v` to unit length (cosine similarity is then a dot product). `None` for a zero or
/// non-finite vector, which has no direction to compare.
pub fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    if v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm <= f32::EPSILON {
        return None;
    }
    Some(v.iter().map(|x| x / norm).collect())
}

/// Dot product with a stored little-endian vector, read in place (no allocation per item).
fn dot_le_bytes(q: &[f32], bytes: &[u8]) -> f32 {
    q.iter()
        .zip(bytes.chunks_exact(4))
        .map(|(x, c)| x * f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .sum()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_and_slices_give_the_same_dot_product() {
        let a = [0.5f32, -1.25, 3.0];
        let b = [2.0f32, 0.5, -0.25];
        assert_eq!(dot_le_bytes(&a, &codec::vector_bytes(&b)), dot(&a, &b));
        assert_eq!(dot(&a, &b), 1.0 - 0.625 - 0.75);
    }

    #[test]
    fn normalisation_refuses_zero_and_non_finite_vectors() {
        assert!(normalized(&[0.0, 0.0]).is_none());
        assert!(normalized(&[1.0, f32::NAN]).is_none());
        let v = normalized(&[3.0, 4.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}

/// The `n` chunks of `candidates` nearest to `query` (unit length) as `(chunk, cosine)`, best
/// first, asking the trees for at least `min_count` neighbours.
#[allow(clippy::too_many_arguments)]
pub fn search(
    dbs: &Dbs,
    rtxn: &RoTxn,
    index: u16,
    dim: usize,
    query: &[f32],
    candidates: &RoaringBitmap,
    n: usize,
    min_count: usize,
) -> Result<Vec<(u32, f32)>, StoreError> {
    if n == 0 || candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut hits: Vec<(u32, f32)> = Vec::new();
    // Fresh vectors: exact scan (the builder keeps this set small).
    for entry in dbs.pending.prefix_iter(rtxn, &index.to_be_bytes())? {
        let (key, value) = entry?;
        let (_, chunk) = codec::split_index_chunk_key(key)?;
        if candidates.contains(chunk) {
            hits.push((chunk, dot_le_bytes(query, value)));
        }
    }
    match Reader::<Cosine>::open(rtxn, index, dbs.vectors) {
        Ok(reader) => {
            // A tree walk for very few neighbours visits too few leaves (arroy's search_k is
            // count x trees): ask for at least `min_count` and keep the best n.
            let mut q = reader.nns(n.max(min_count).max(1));
            q.candidates(candidates);
            // Filters thin out what a tree walk finds: look further the more they remove.
            let share = candidates.len() as f64 / reader.n_items().max(1) as f64;
            if share < 1.0 {
                let factor = (1.0 / share.max(0.25)).ceil() as usize;
                q.oversampling(NonZeroUsize::new(factor).unwrap_or(NonZeroUsize::MIN));
            }
            for (chunk, distance) in q.by_vector(rtxn, query)? {
                // arroy's cosine distance is (1 - cos) / 2.
                hits.push((chunk, 1.0 - 2.0 * distance));
            }
        }
        // No trees: the index was never worth building (its namespaces stayed under
        // `trees_from`, e.g. with a larger `exact_scan_max` then), or only a foreign writer
        // could leave this state. Stay correct with an exact scan of the stored items.
        Err(arroy::Error::MissingMetadata(_) | arroy::Error::NeedBuild(_)) => {
            let writer = Writer::<Cosine>::new(dbs.vectors, index, dim);
            for chunk in candidates {
                if let Some(v) = writer.item_vector(rtxn, chunk)? {
                    hits.push((chunk, dot(query, &v)));
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.dedup_by_key(|h| h.0);
    hits.truncate(n);
    Ok(hits)
}

/// Every tree build starts from this seed, so trees depend on the data alone (and on how it
/// was split into build steps), never on a clock.
const TREE_SEED: u64 = 0x766f_6963_6572_6167;

/// The stored (unit) vector of one chunk: pending, or in arroy's trees.
pub fn chunk_vector(
    dbs: &Dbs,
    rtxn: &RoTxn,
    index: u16,
    dim: usize,
    chunk: u32,
) -> Result<Option<Vec<f32>>, StoreError> {
    if let Some(bytes) = dbs
        .pending
        .get(rtxn, &codec::index_chunk_key(index, chunk))?
    {
        return Ok(Some(codec::vector_from(bytes)));
    }
    Ok(Writer::<Cosine>::new(dbs.vectors, index, dim).item_vector(rtxn, chunk)?)
}

/// What one build step did.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuildStep {
    pub added: usize,
    pub deleted: usize,
    /// The build gave way to a waiting writer; nothing was written.
    pub yielded: bool,
    /// Indexes whose trees were built.
    pub trees_built: usize,
}

/// How trees are built.
#[derive(Debug, Clone, Copy)]
pub struct BuildParams {
    /// Most vectors moved (and deletions applied) per transaction.
    pub batch: usize,
    /// Trees per index (fixed: arroy's default grows them with the corpus, which makes every
    /// incremental build and every search walk hundreds of trees).
    pub trees: usize,
    /// Most items in a tree leaf.
    pub split_after: usize,
    /// An index gets trees once one of its namespaces holds more chunks than this (half of
    /// `store.exact_scan_max`, so they are ready before the namespace outgrows the exact
    /// scan). Smaller namespaces are only ever searched exactly: building their trees would be
    /// work no search uses (about a tenth of the process's CPU under steady writes).
    pub trees_from: u64,
}

impl BuildParams {
    pub fn from_config(cfg: &super::StoreConfig) -> Self {
        Self {
            batch: cfg.vector_build_batch.max(1),
            trees: cfg.vector_trees.max(1),
            split_after: cfg.vector_leaf_size.max(2),
            trees_from: cfg.exact_scan_max as u64 / 2,
        }
    }
}

/// Moves up to `batch` pending vectors into arroy (and applies up to `batch` pending deletions),
/// building the touched indexes, in one write transaction. `give_way` is polled during the
/// build: when it says so, the build is abandoned (nothing written) so a waiting ingest gets
/// LMDB's write lock at once; the step reports `yielded`.
pub fn build_step(
    env: &Env<WithoutTls>,
    dbs: &Dbs,
    dim: usize,
    params: BuildParams,
    give_way: &(dyn Fn() -> bool + Sync + Send),
) -> Result<BuildStep, StoreError> {
    let batch = params.batch;
    let mut wtxn = env.write_txn()?;
    let mut deletes = Vec::new();
    for entry in dbs.vec_deletes.iter(&wtxn)?.take(batch) {
        let (key, _) = entry?;
        deletes.push(codec::split_index_chunk_key(key)?);
    }
    let mut adds = Vec::new();
    for entry in dbs.pending.iter(&wtxn)?.take(batch) {
        let (key, value) = entry?;
        let (index, chunk) = codec::split_index_chunk_key(key)?;
        adds.push((index, chunk, codec::vector_from(value)));
    }
    if deletes.is_empty() && adds.is_empty() {
        return Ok(BuildStep::default());
    }
    let mut touched: Vec<u16> = Vec::new();
    for &(index, chunk) in &deletes {
        Writer::<Cosine>::new(dbs.vectors, index, dim).del_item(&mut wtxn, chunk)?;
        dbs.vec_deletes
            .delete(&mut wtxn, &codec::index_chunk_key(index, chunk))?;
        touched.push(index);
    }
    for (index, chunk, vector) in &adds {
        Writer::<Cosine>::new(dbs.vectors, *index, dim).add_item(&mut wtxn, *chunk, vector)?;
        dbs.pending
            .delete(&mut wtxn, &codec::index_chunk_key(*index, *chunk))?;
        touched.push(*index);
    }
    touched.sort_unstable();
    touched.dedup();
    let mut rng = SmallRng::seed_from_u64(TREE_SEED);
    let mut trees_built = 0;
    for index in touched {
        if !needs_trees(dbs, &wtxn, index, &adds, params.trees_from)? {
            continue;
        }
        trees_built += 1;
        let built = Writer::<Cosine>::new(dbs.vectors, index, dim)
            .builder(&mut rng)
            .n_trees(params.trees)
            .split_after(params.split_after)
            .cancel(give_way)
            .build(&mut wtxn);
        match built {
            Ok(()) => {}
            // Dropping the transaction aborts it: the vectors stay pending, found by exact scan.
            Err(arroy::Error::BuildCancelled) => {
                return Ok(BuildStep {
                    yielded: true,
                    ..BuildStep::default()
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    wtxn.commit()?;
    Ok(BuildStep {
        added: adds.len(),
        deleted: deletes.len(),
        yielded: false,
        trees_built,
    })
}

/// Whether `index` is built in this step: it has trees already (they are kept current), or a
/// namespace that just got a vector in it holds more than `trees_from` chunks. Indexes are
/// shared only past 65,536 namespaces; then one large namespace builds the whole index.
fn needs_trees(
    dbs: &Dbs,
    rtxn: &RoTxn,
    index: u16,
    adds: &[(u16, u32, Vec<f32>)],
    trees_from: u64,
) -> Result<bool, StoreError> {
    if trees_from == 0 {
        return Ok(true);
    }
    match Reader::<Cosine>::open(rtxn, index, dbs.vectors) {
        Err(arroy::Error::MissingMetadata(_)) => {}
        Ok(_) | Err(arroy::Error::NeedBuild(_)) => return Ok(true),
        Err(e) => return Err(e.into()),
    }
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for &(_, chunk, _) in adds.iter().filter(|a| a.0 == index) {
        let Some(bytes) = dbs.chunks.get(rtxn, &chunk.to_be_bytes())? else {
            continue;
        };
        let (ns, _) = codec::split_memory_key(codec::ChunkRecord::decode(bytes)?.memory)?;
        let key = codec::ns_key(ns);
        if seen.contains(&key) {
            continue;
        }
        let len = match dbs.ns_chunks.get(rtxn, &key)? {
            Some(b) => codec::bitmap_from(b)?.len(),
            None => 0,
        };
        if len > trees_from {
            return Ok(true);
        }
        seen.push(key);
    }
    Ok(false)
}

/// Vectors waiting for a build, and deletions waiting to reach arroy.
pub fn backlog(dbs: &Dbs, rtxn: &RoTxn) -> Result<(u64, u64), StoreError> {
    Ok((dbs.pending.len(rtxn)?, dbs.vec_deletes.len(rtxn)?))
}
