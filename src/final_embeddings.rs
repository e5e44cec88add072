//! [`FinalEmbeddings`]: the query embeddings of recent finals, handed from the pipeline to the memory
//! writer, so a final's text is embedded once, not again when it becomes a memory.
//!
//! The pipeline offers a final's vector (through [`OfferingWriter`]) before it queues the final as a
//! memory; the store writer takes it when it commits that memory, in process or when the bus's
//! memory consumer brings back a memory this replica published. Other replicas miss and embed. An
//! entry is used only for the same namespace, memory id, exact text and embedding model; it is
//! removed when used, and the oldest go first once `capacity` wait. A miss is always safe: the
//! memory is embedded as before.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use voicerag_actors::{AfterHang, Memory, MemoryWriter, StageError};

/// Entries kept by default: a few seconds of finals at hundreds a second, about 1.5 KB each with
/// a 384-dimension model.
pub const DEFAULT_CAPACITY: usize = 4096;

/// (namespace, memory id, hash of the text).
type Key = (String, String, u64);

struct Entry {
    text: String,
    vector: Vec<f32>,
    /// Which offer this is, so an old place in the eviction order never evicts a newer offer.
    seq: u64,
}

#[derive(Default)]
struct Recent {
    entries: HashMap<Key, Entry>,
    /// Offers oldest first; entries taken since are skipped when evicting.
    order: VecDeque<(Key, u64)>,
    next_seq: u64,
}

/// Recent finals' query embeddings, bounded, for one embedding model.
pub struct FinalEmbeddings {
    /// The identity of the model the vectors come from ([`crate::models::SentenceEmbedder::identity`]).
    model: String,
    capacity: usize,
    recent: Mutex<Recent>,
    offered: AtomicU64,
    taken: AtomicU64,
}

fn text_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl FinalEmbeddings {
    /// Vectors of the model `model` identifies; at most `capacity` kept (0 keeps none).
    pub fn new(model: impl Into<String>, capacity: usize) -> Self {
        Self {
            model: model.into(),
            capacity,
            recent: Mutex::default(),
            offered: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `vector` as the embedding of memory `id` of `namespace` with exactly `text`.
    pub fn offer(&self, namespace: &str, id: &str, text: &str, vector: &[f32]) {
        if self.capacity == 0 || vector.is_empty() {
            return;
        }
        self.offered.fetch_add(1, Ordering::Relaxed);
        let key = (namespace.to_string(), id.to_string(), text_hash(text));
        let mut recent = self.lock();
        let seq = recent.next_seq;
        recent.next_seq += 1;
        recent.entries.insert(
            key.clone(),
            Entry {
                text: text.to_string(),
                vector: vector.to_vec(),
                seq,
            },
        );
        recent.order.push_back((key, seq));
        while recent.entries.len() > self.capacity {
            let Some((old, old_seq)) = recent.order.pop_front() else {
                break;
            };
            if recent.entries.get(&old).is_some_and(|e| e.seq == old_seq) {
                recent.entries.remove(&old);
            }
        }
        // Places of entries taken since their offer: dropped once they outnumber the live ones.
        if recent.order.len() > 2 * self.capacity.max(1) {
            let Recent { entries, order, .. } = &mut *recent;
            order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// The vector offered for memory `id` of `namespace` with exactly `text`, by a model of
    /// identity `model` and `dimension`; removed when returned. `None` for anything else.
    pub fn take(
        &self,
        model: &str,
        dimension: usize,
        namespace: &str,
        id: &str,
        text: &str,
    ) -> Option<Vec<f32>> {
        if model != self.model {
            return None;
        }
        let key = (namespace.to_string(), id.to_string(), text_hash(text));
        let mut recent = self.lock();
        // The hash only finds the entry: the text itself must be the same.
        if !recent
            .entries
            .get(&key)
            .is_some_and(|e| e.text == text && e.vector.len() == dimension)
        {
            return None;
        }
        let entry = recent.entries.remove(&key)?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(entry.vector)
    }

    /// Entries waiting to be taken.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vectors offered and taken since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.offered.load(Ordering::Relaxed),
            self.taken.load(Ordering::Relaxed),
        )
    }
}

/// The pipeline's memory writer with the hand-off: writes go to `inner`, finals' embeddings to
/// `embeddings` (which the store writer reads).
pub struct OfferingWriter {
    inner: Arc<dyn MemoryWriter>,
    embeddings: Arc<FinalEmbeddings>,
}

impl OfferingWriter {
    pub fn new(inner: Arc<dyn MemoryWriter>, embeddings: Arc<FinalEmbeddings>) -> Self {
        Self { inner, embeddings }
    }
}

impl MemoryWriter for OfferingWriter {
    fn write(&self, batch: &[Memory]) -> Result<(), StageError> {
        self.inner.write(batch)
    }

    fn offer_embedding(&self, namespace: &str, id: &str, text: &str, vector: &[f32]) {
        self.embeddings.offer(namespace, id, text, vector);
    }

    fn after_hang(&self) -> Result<AfterHang<dyn MemoryWriter>, StageError> {
        Ok(match self.inner.after_hang()? {
            AfterHang::Fresh(inner) => AfterHang::Fresh(Arc::new(OfferingWriter {
                inner,
                embeddings: Arc::clone(&self.embeddings),
            })),
            AfterHang::Reuse => AfterHang::Reuse,
            AfterHang::Wait => AfterHang::Wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "m";

    fn offered() -> FinalEmbeddings {
        let e = FinalEmbeddings::new(MODEL, 8);
        e.offer("alice", "c1/u1", "my dog is Rex", &[0.6, 0.8]);
        e
    }

    #[test]
    fn the_same_memory_takes_the_vector_once() {
        let e = offered();
        assert_eq!(
            e.take(MODEL, 2, "alice", "c1/u1", "my dog is Rex"),
            Some(vec![0.6, 0.8])
        );
        assert_eq!(e.take(MODEL, 2, "alice", "c1/u1", "my dog is Rex"), None);
        assert!(e.is_empty());
        assert_eq!(e.counts(), (1, 1));
    }

    #[test]
    fn another_namespace_id_text_model_or_dimension_never_takes_it() {
        let e = offered();
        for (model, dim, ns, id, text) in [
            ("other", 2, "alice", "c1/u1", "my dog is Rex"),
            (MODEL, 3, "alice", "c1/u1", "my dog is Rex"),
            (MODEL, 2, "bob", "c1/u1", "my dog is Rex"),
            (MODEL, 2, "alice", "c1/u2", "my dog is Rex"),
            (MODEL, 2, "alice", "c1/u1", "my dog is Rex "),
            (MODEL, 2, "alice", "c1/u1", "my cat is Rex"),
        ] {
            assert_eq!(
                e.take(model, dim, ns, id, text),
                None,
                "{model} {dim} {ns} {id} {text:?}"
            );
        }
        // Still there for the right one.
        assert!(
            e.take(MODEL, 2, "alice", "c1/u1", "my dog is Rex")
                .is_some()
        );
    }

    #[test]
    fn the_oldest_go_first_and_a_reoffer_is_not_evicted_by_its_old_place() {
        let e = FinalEmbeddings::new(MODEL, 2);
        e.offer("n", "a", "t", &[1.0]);
        e.offer("n", "b", "t", &[1.0]);
        assert!(e.take(MODEL, 1, "n", "a", "t").is_some());
        e.offer("n", "a", "t", &[2.0]); // offered again after it was taken
        e.offer("n", "c", "t", &[3.0]); // over capacity: "b" is the oldest live entry
        assert_eq!(e.len(), 2);
        assert_eq!(e.take(MODEL, 1, "n", "b", "t"), None);
        assert_eq!(e.take(MODEL, 1, "n", "a", "t"), Some(vec![2.0]));
        assert_eq!(e.take(MODEL, 1, "n", "c", "t"), Some(vec![3.0]));
        for i in 0..100 {
            e.offer("n", &format!("x{i}"), "t", &[1.0]);
            let _ = e.take(MODEL, 1, "n", &format!("x{i}"), "t");
        }
        assert!(e.lock().order.len() <= 4, "eviction order stays bounded");
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let e = FinalEmbeddings::new(MODEL, 0);
        e.offer("n", "a", "t", &[1.0]);
        assert_eq!(e.take(MODEL, 1, "n", "a", "t"), None);
    }
}
