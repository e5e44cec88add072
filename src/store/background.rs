//! The writer's background work: the BM25 committer (replays LMDB's op log into tantivy every
//! `bm25_commit_ms`) and the vector builder (moves pending vectors into arroy's trees in bounded
//! steps, and applies retention).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::{self, Op};
use super::lmdb;
use super::state::StoreState;
use super::{StoreError, vector};

pub(crate) fn spawn(shared: &Arc<StoreState>) -> Result<Vec<JoinHandle<()>>, StoreError> {
    let spawn_err = |e| StoreError::io("spawn store thread", e);
    let s = Arc::clone(shared);
    let committer = std::thread::Builder::new()
        .name("voicerag-bm25".into())
        .spawn(move || {
            let every = Duration::from_millis(s.store_cfg.bm25_commit_ms.max(1));
            while s.signal.sleep(every) {
                if let Err(e) = catch_up_bm25(&s) {
                    tracing::warn!(error = %e, "BM25 commit failed; retrying");
                }
            }
            // Shutdown: leave BM25 up to date so the next open has nothing to replay.
            if let Err(e) = catch_up_bm25(&s) {
                tracing::warn!(error = %e, "final BM25 commit failed; it will be replayed on open");
            }
        })
        .map_err(spawn_err)?;
    let s = Arc::clone(shared);
    let builder = std::thread::Builder::new()
        .name("voicerag-vectors".into())
        .spawn(move || vector_loop(&s))
        .map_err(spawn_err)?;
    Ok(vec![committer, builder])
}

fn vector_loop(s: &StoreState) {
    let idle = Duration::from_millis(100);
    let pause = Duration::from_millis(s.store_cfg.vector_build_pause_ms);
    let params = vector::BuildParams::from_config(&s.store_cfg);
    let max_delay = Duration::from_millis(s.store_cfg.vector_build_max_delay_ms);
    let mut next_retention = Instant::now();
    // As if the last build were long ago: the first backlog is built at once.
    let mut last_build = Instant::now()
        .checked_sub(max_delay)
        .unwrap_or_else(Instant::now);
    loop {
        let mut busy = false;
        match backlog(s) {
            // A build costs about the same whatever it adds (arroy walks the whole index), so
            // a trickle of memories waits (found by exact scan) and is built in one go.
            Ok(0) => {}
            Ok(n)
                if n < s.store_cfg.vector_build_min as u64 && last_build.elapsed() < max_delay => {}
            Ok(n) => {
                // A small backlog gives way to ingest; a large one is built regardless, so the
                // exact scan of pending vectors stays cheap.
                let may_yield = n < 2 * params.batch as u64;
                let waiting = &s.writers_waiting;
                let give_way = move || may_yield && waiting.load(Ordering::Acquire) > 0;
                match vector::build_step(&s.env, &s.dbs, s.model.dimension, params, &give_way) {
                    Ok(step) if step.yielded => busy = true,
                    Ok(step) => {
                        s.tree_builds
                            .fetch_add(step.trees_built as u64, Ordering::Relaxed);
                        last_build = Instant::now();
                        busy = step.added + step.deleted > 0;
                    }
                    Err(e) => tracing::warn!(error = %e, "vector build step failed; retrying"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "vector backlog unreadable; retrying"),
        }
        if s.store_cfg.retention_max_age_s > 0 && Instant::now() >= next_retention {
            next_retention =
                Instant::now() + Duration::from_millis(s.store_cfg.retention_check_ms.max(1));
            if let Err(e) = apply_retention(s) {
                tracing::warn!(error = %e, "retention failed");
            }
        }
        if !s.signal.sleep(if busy { pause } else { idle }) {
            return;
        }
    }
}

fn backlog(s: &StoreState) -> Result<u64, StoreError> {
    let rtxn = s.env.read_txn()?;
    let (pending, deletes) = vector::backlog(&s.dbs, &rtxn)?;
    Ok(pending + deletes)
}

fn apply_retention(s: &StoreState) -> Result<(), StoreError> {
    let age_ms = s.store_cfg.retention_max_age_s.saturating_mul(1000) as i64;
    let cutoff = chrono::Utc::now().timestamp_millis() - age_ms;
    // Retention deletes like any delete: through the store's own path (one transaction).
    super::delete::delete_older_than_shared(s, cutoff).map(|_| ())
}

/// Replays LMDB's op log past BM25's watermark into tantivy and commits with the new
/// watermark, then drops the replayed ops. A gap (ops pruned that BM25 never saw, e.g. a
/// deleted `bm25/` directory) or a reindex rebuilds BM25 from LMDB instead.
pub(crate) fn catch_up_bm25(s: &StoreState) -> Result<u64, StoreError> {
    let _one = s
        .bm25_sync
        .lock()
        .map_err(|_| StoreError::Corrupt("BM25 sync lock poisoned".into()))?;
    let watermark = s.bm25_applied.load(Ordering::Acquire);
    let rtxn = s.env.read_txn()?;
    let last = lmdb::last_seq(&s.dbs, &rtxn)?;
    if last == watermark {
        return Ok(0);
    }
    let first_kept = match s.dbs.oplog.first(&rtxn)? {
        Some((k, _)) => codec::u64_from(k)?,
        None => last + 1,
    };
    let mut ops = Vec::new();
    // BM25 ahead of LMDB (a restored LMDB) or missing ops: rebuild from the records.
    let mut rebuild = watermark > last || first_kept > watermark + 1;
    if !rebuild {
        let lo = (watermark + 1).to_be_bytes();
        let range = (
            std::ops::Bound::Included(&lo[..]),
            std::ops::Bound::Unbounded,
        );
        for entry in s.dbs.oplog.range(&rtxn, &range)? {
            let (_, v) = entry?;
            let op: Op = codec::decode(v, "op log entry")?;
            if matches!(op, Op::Rebuild) {
                rebuild = true;
                break;
            }
            ops.push(op);
        }
    }
    let added = |chunk: u32| -> Result<(), StoreError> {
        // The snapshot decides: a chunk deleted since it was logged is not indexed.
        if let Some(o) = lmdb::chunk_memory(&s.dbs, &rtxn, chunk)? {
            let text = o.text.as_deref().unwrap_or(&o.record.text);
            s.bm25
                .add_chunk(chunk, &o.namespace, &o.id, &o.record, text)?;
        }
        Ok(())
    };
    if rebuild {
        s.bm25.delete_all()?;
        for entry in s.dbs.chunks.iter(&rtxn)? {
            let (k, _) = entry?;
            added(codec::u32_from(k)?)?;
        }
    } else {
        for op in ops {
            match op {
                Op::Add(chunks) => {
                    for c in chunks {
                        added(c)?;
                    }
                }
                Op::Delete(chunks) => {
                    for c in chunks {
                        s.bm25.delete_chunk(c)?;
                    }
                }
                Op::Rebuild => {}
            }
        }
    }
    s.bm25.commit(last)?;
    s.bm25_applied.store(last, Ordering::Release);
    drop(rtxn);
    // BM25 holds everything up to `last`: its log entries are no longer needed.
    let mut wtxn = s.env.write_txn()?;
    let hi = last.to_be_bytes();
    let range = (
        std::ops::Bound::Unbounded,
        std::ops::Bound::Included(&hi[..]),
    );
    s.dbs.oplog.delete_range(&mut wtxn, &range)?;
    wtxn.commit()?;
    Ok(last.abs_diff(watermark))
}
