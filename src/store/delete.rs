//! Forgetting memories: one transaction that removes the selected memories from LMDB, logs the
//! deletion for BM25 and the vector builder, and drops them from the exact-scan vectors.

use super::StoreError;
use super::codec::{self, Op};
use super::lmdb;
use super::state::{StoreState, begin_write};

pub(crate) fn delete_older_than_shared(
    s: &StoreState,
    cutoff_ms: i64,
) -> Result<usize, StoreError> {
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
pub(crate) fn delete_where(
    s: &StoreState,
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
        s.hidden.invalidate(ns);
    }
    s.signal.notify();
    Ok(removed)
}
