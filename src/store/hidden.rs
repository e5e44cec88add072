//! The chunks default results leave out (superseded, expired), kept in RAM per namespace so a
//! search pays a binary search and a bit test per chunk, not an LMDB read and a set build.
//!
//! A namespace's entry holds its superseded chunks and its expiries sorted by time; "expired at
//! `now`" is the prefix of that list up to `now`, found by binary search. The set a search tests
//! ([`Hidden`]: superseded plus that prefix, as a dense bitset over chunk ids) is built when the
//! prefix moves and shared by every search until it moves again.
//!
//! Kept current like the exact-scan vectors: the writer process drops a namespace's entry after
//! each commit that touched it (loaded again from a fresh transaction by the next search); a
//! read-only process reloads an entry when LMDB's sequence has moved since it was loaded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use heed::RoTxn;
use roaring::RoaringBitmap;

use super::StoreError;
use super::lmdb::{self, Dbs};
use super::superseded;

/// Namespaces whose hidden chunks are kept at most; the least recently searched leave first.
const MAX_NAMESPACES: usize = 4096;

/// Chunks one search leaves out.
#[derive(Default)]
pub(crate) struct Hidden {
    /// Bit `i` of word `w`: chunk `base + 64 * w + i`.
    bits: Vec<u64>,
    base: u32,
    set: RoaringBitmap,
}

impl Hidden {
    pub(super) fn new(set: RoaringBitmap) -> Self {
        let (Some(lo), Some(hi)) = (set.min(), set.max()) else {
            return Self::default();
        };
        let base = lo & !63;
        let mut bits = vec![0u64; ((hi - base) / 64 + 1) as usize];
        for c in &set {
            let i = c - base;
            bits[(i / 64) as usize] |= 1 << (i % 64);
        }
        Self { bits, base, set }
    }

    /// Whether `chunk` is left out: one bounds check and one bit test.
    #[inline]
    pub fn contains(&self, chunk: u32) -> bool {
        let Some(i) = chunk.checked_sub(self.base) else {
            return false;
        };
        self.bits
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The same chunks as a bitmap (for set operations with the other filters).
    pub fn bitmap(&self) -> &RoaringBitmap {
        &self.set
    }
}

/// One namespace's superseded chunks and expiries, as stored at `seq`.
struct NsHidden {
    superseded: RoaringBitmap,
    /// `(expires_at_ms, chunk)`, by time.
    expiries: Vec<(i64, u32)>,
    /// LMDB sequence this copy reflects (read-only processes compare it).
    seq: u64,
    /// The last set built: how many expiries it holds, and the set.
    view: Mutex<Option<(usize, Arc<Hidden>)>>,
    used: AtomicU64,
}

impl NsHidden {
    /// Left out at `now_ms` (an expiry is the first instant the memory no longer holds).
    fn at(&self, now_ms: i64) -> Arc<Hidden> {
        let expired = self.expiries.partition_point(|&(at, _)| at <= now_ms);
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, set)) = view.as_ref()
            && *n == expired
        {
            return Arc::clone(set);
        }
        let mut set = self.superseded.clone();
        set.extend(self.expiries[..expired].iter().map(|&(_, c)| c));
        let set = Arc::new(Hidden::new(set));
        *view = Some((expired, Arc::clone(&set)));
        set
    }
}

/// The hidden chunks of recently searched namespaces.
pub(crate) struct HiddenChunks {
    writer: bool,
    tick: AtomicU64,
    spaces: RwLock<HashMap<String, NsHidden>>,
}

impl HiddenChunks {
    pub fn new(writer: bool) -> Self {
        Self {
            writer,
            tick: AtomicU64::new(0),
            spaces: RwLock::new(HashMap::new()),
        }
    }

    /// Chunks of `ns` left out of default results at `now_ms`, as of `rtxn` (or, in the
    /// writer, as of its last commit).
    pub fn at(
        &self,
        env: &heed::Env<heed::WithoutTls>,
        dbs: &Dbs,
        rtxn: &RoTxn,
        ns: &str,
        now_ms: i64,
    ) -> Result<Arc<Hidden>, StoreError> {
        // Only a read-only copy needs LMDB's sequence: the writer drops what its commits change.
        let seq = if self.writer {
            0
        } else {
            lmdb::last_seq(dbs, rtxn)?
        };
        {
            let spaces = self.spaces.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = spaces.get(ns)
                && (self.writer || h.seq == seq)
            {
                h.used
                    .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                return Ok(h.at(now_ms));
            }
        }
        let mut spaces = self.spaces.write().unwrap_or_else(|p| p.into_inner());
        let stale = match spaces.get(ns) {
            None => true,
            Some(h) => !self.writer && h.seq != seq,
        };
        if stale {
            // The writer loads from a transaction opened under the lock: a commit before it is
            // in the load, and one after it drops the entry once committed.
            let (superseded, expiries) = if self.writer {
                let fresh = env.read_txn()?;
                superseded::load(dbs, &fresh, ns)?
            } else {
                superseded::load(dbs, rtxn, ns)?
            };
            if spaces.len() >= MAX_NAMESPACES
                && let Some(oldest) = spaces
                    .iter()
                    .min_by_key(|(_, h)| h.used.load(Ordering::Relaxed))
                    .map(|(k, _)| k.clone())
            {
                spaces.remove(&oldest);
            }
            spaces.insert(
                ns.to_string(),
                NsHidden {
                    superseded,
                    expiries,
                    seq,
                    view: Mutex::new(None),
                    used: AtomicU64::new(0),
                },
            );
        }
        let h = spaces
            .get(ns)
            .ok_or_else(|| super::codec::corrupt("hidden chunks"))?;
        h.used
            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Ok(h.at(now_ms))
    }

    /// After a commit that added, superseded or deleted memories of `ns` (writer only): its
    /// next search loads it again.
    pub fn invalidate(&self, ns: &str) {
        self.spaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ns);
    }

    /// After a commit that may have touched any namespace (a reindex).
    pub fn invalidate_all(&self) {
        self.spaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dense_set_holds_exactly_the_bitmaps_chunks() {
        let set: RoaringBitmap = [70u32, 71, 128, 1000, 1_000_000].into_iter().collect();
        let h = Hidden::new(set.clone());
        for c in 0..1_000_100u32 {
            assert_eq!(h.contains(c), set.contains(c), "chunk {c}");
        }
        assert!(!h.contains(u32::MAX));
        assert!(Hidden::new(RoaringBitmap::new()).bits.is_empty());
        assert!(!Hidden::default().contains(0));
    }

    #[test]
    fn expiries_join_the_set_as_now_passes_them() {
        let ns = NsHidden {
            superseded: [1u32].into_iter().collect(),
            expiries: vec![(100, 7), (200, 3), (200, 9)],
            seq: 0,
            view: Mutex::new(None),
            used: AtomicU64::new(0),
        };
        let ids = |now| ns.at(now).bitmap().iter().collect::<Vec<u32>>();
        assert_eq!(ids(99), [1]);
        assert_eq!(ids(100), [1, 7]);
        assert_eq!(ids(199), [1, 7]);
        assert_eq!(ids(200), [1, 3, 7, 9]);
        // Back in time (another request's `now`): the set follows.
        assert_eq!(ids(0), [1]);
        // The same prefix shares the set built for it.
        assert!(Arc::ptr_eq(&ns.at(150), &ns.at(160)));
    }
}
