//! One search: resolve the namespace's candidate set and filters, run the vector and BM25 lists
//! with those filters inside them, name each memory once (its best chunk), fuse.

use std::collections::HashMap;
use std::rc::Rc;

use heed::RoTxn;
use roaring::RoaringBitmap;
use voicerag_actors::messages::{
    Hit, Retrieved, SearchFilter, SearchMode, SearchRequest, TimeWindowUse,
};

use super::bm25::{Bm25Filter, Heard};
use super::codec::{self, ChunkRecord, MemoryRecord};
use super::hidden::Hidden;
use super::lmdb::{self, Dbs};
use super::state::StoreState;
use super::{Fusion, RetrievalConfig, recency, time_window};
use super::{StoreError, vector};
use crate::fusion::{RankedList, Scored, convex_with, reciprocal_rank};

/// A memory found by one list: its key, best chunk and that chunk's score.
struct Found {
    key: Rc<[u8]>,
    chunk: u32,
    score: f32,
}

/// A chunk's memory key (shared, not copied, by every list that finds the chunk); `None` when
/// the chunk is gone or foreign.
type ChunkSlot = Option<Rc<[u8]>>;

/// Memory records read during one search (each at most once).
struct Records<'a> {
    dbs: &'a Dbs,
    rtxn: &'a RoTxn<'a>,
    namespace: &'a str,
    /// chunk -> memory key
    chunks: HashMap<u32, ChunkSlot>,
    memories: HashMap<Vec<u8>, MemoryRecord>,
    /// Chunks left out of this search (superseded, expired).
    hidden: &'a Hidden,
}

impl<'a> Records<'a> {
    /// The memory key of a chunk, if the chunk still exists in this namespace. Reads only the
    /// small chunk record: memory records are read for the final hits alone.
    fn memory_of(&mut self, chunk: u32) -> Result<Option<Rc<[u8]>>, StoreError> {
        if self.hidden.contains(chunk) {
            return Ok(None);
        }
        if !self.chunks.contains_key(&chunk) {
            let found = match self.dbs.chunks.get(self.rtxn, &chunk.to_be_bytes())? {
                Some(bytes) => {
                    let rec = ChunkRecord::decode(bytes)?;
                    // Defence in depth: a chunk of another namespace never leaves this search.
                    let (ns, _) = codec::split_memory_key(rec.memory)?;
                    // The chunk's own text is read again for the final hits only.
                    (ns == self.namespace).then(|| Rc::from(rec.memory))
                }
                // Deleted (BM25 may still hold it for a moment).
                None => None,
            };
            self.chunks.insert(chunk, found);
        }
        Ok(self.chunks.get(&chunk).and_then(Clone::clone))
    }

    /// Keeps each memory's first (best) chunk; drops chunks that no longer exist.
    fn dedupe(&mut self, hits: Vec<(u32, f32)>, n: usize) -> Result<Vec<Found>, StoreError> {
        let mut out: Vec<Found> = Vec::with_capacity(n);
        for (chunk, score) in hits {
            if out.len() == n {
                break;
            }
            if let Some(key) = self.memory_of(chunk)?
                && !out.iter().any(|f| f.key == key)
            {
                out.push(Found { key, chunk, score });
            }
        }
        Ok(out)
    }

    /// The timestamp of the memory at `key`, read once per search.
    fn ts_ms(&mut self, key: &[u8]) -> Result<i64, StoreError> {
        self.record(key).map(|rec| rec.ts_ms)
    }

    fn record(&mut self, key: &[u8]) -> Result<&MemoryRecord, StoreError> {
        if !self.memories.contains_key(key) {
            // A chunk and its memory live and die in the same transaction: this snapshot has it.
            let bytes = self
                .dbs
                .memories
                .get(self.rtxn, key)?
                .ok_or_else(|| codec::corrupt("memory record missing"))?;
            let rec: MemoryRecord = codec::decode(bytes, "memory record")?;
            self.memories.insert(key.into(), rec);
        }
        self.memories
            .get(key)
            .ok_or_else(|| codec::corrupt("memory record missing"))
    }

    fn hit(
        &mut self,
        found: &Found,
        score: f32,
        vector_rank: Option<usize>,
        bm25_rank: Option<usize>,
    ) -> Result<Hit, StoreError> {
        let own_text = match self.dbs.chunks.get(self.rtxn, &found.chunk.to_be_bytes())? {
            Some(bytes) => ChunkRecord::decode(bytes)?.text.map(str::to_string),
            None => None,
        };
        let (_, id) = codec::split_memory_key(&found.key)?;
        let rec = self.record(&found.key)?;
        Ok(Hit {
            id: id.to_string(),
            text: own_text.unwrap_or_else(|| rec.text.clone()),
            score,
            rerank_score: None,
            vector_rank,
            bm25_rank,
            similarity: None,
            conversation: rec.conversation.clone(),
            speaker: rec.speaker.clone(),
            ts_ms: rec.ts_ms,
        })
    }
}

pub(crate) fn search(
    s: &StoreState,
    retrieval: &RetrievalConfig,
    req: &SearchRequest,
) -> Result<Retrieved, StoreError> {
    if req.top_n == 0 || req.namespace.is_empty() {
        return Ok(Retrieved::default());
    }
    let want_vector = req.mode != SearchMode::Bm25;
    let want_bm25 = req.mode != SearchMode::Vector;
    let query_vec = match (&req.embedding, want_vector) {
        (Some(e), true) => {
            if e.len() != s.model.dimension {
                return Err(StoreError::QueryDimension {
                    expected: s.model.dimension,
                    got: e.len(),
                });
            }
            vector::normalized(e)
        }
        (None, true) if req.mode == SearchMode::Vector => {
            return Err(StoreError::InvalidRequest(
                "vector mode needs a query embedding".into(),
            ));
        }
        _ => None,
    };
    let n = if req.mode == SearchMode::Hybrid {
        retrieval.candidates.max(req.top_n)
    } else {
        req.top_n
    };
    let rtxn = s.env.read_txn()?;
    let dbs = &s.dbs;
    let ns = req.namespace.as_str();
    let now_ms = req
        .filter
        .time
        .now_ms
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    // Kept in RAM per namespace (see `hidden`); shared with the BM25 collectors, which must own
    // what they test.
    let hidden = if req.filter.include_superseded {
        std::sync::Arc::new(Hidden::default())
    } else {
        s.hidden.at(&s.env, dbs, &rtxn, ns, now_ms)?
    };
    let time = time_window::apply(retrieval, dbs, &rtxn, req, now_ms, &hidden)?;
    // A filtering window narrows the request's own time bounds.
    let mut narrowed;
    let f: &SearchFilter = match &time {
        Some(t) if t.boosted.is_empty() => {
            narrowed = req.filter.clone();
            let (a, b) = (t.window.start_ms, t.window.end_ms);
            narrowed.since_ms = Some(narrowed.since_ms.map_or(a, |x| x.max(a)));
            narrowed.until_ms = Some(narrowed.until_ms.map_or(b, |x| x.min(b)));
            &narrowed
        }
        _ => &req.filter,
    };

    let exclude_ids = recent_turns(dbs, &rtxn, ns, f.exclude_recent.as_ref())?;
    let mut records = Records {
        dbs,
        rtxn: &rtxn,
        namespace: ns,
        chunks: HashMap::new(),
        memories: HashMap::new(),
        hidden: &hidden,
    };

    let index = namespace_index(dbs, &rtxn, ns)?;
    // A chunk's cosine to a unit query, from its stored vector (for chunks no vector list scored).
    // From the vectors in RAM when the exact scan holds the namespace, else read from LMDB.
    let cosine_of = |query: Option<&[f32]>, chunk: u32| -> Result<Option<f32>, StoreError> {
        match (query, index) {
            (Some(q), Some(index)) => {
                if let Some(cosine) = s.exact.cosine(dbs, &rtxn, ns, q, chunk)? {
                    return Ok(cosine);
                }
                Ok(
                    vector::chunk_vector(dbs, &rtxn, index, s.model.dimension, chunk)?
                        .map(|v| crate::store::exact::dot(q, &v)),
                )
            }
            _ => Ok(None),
        }
    };
    let vector_list = match &query_vec {
        Some(q) => {
            let mut hits = Vec::new();
            if let Some(index) = index {
                let (ns_len, mut cands) = candidates(dbs, &rtxn, ns, f, &exclude_ids)?;
                // Narrowed by a filter other than the hidden chunks (those the scan skips).
                let filtered = cands.len() < ns_len;
                hits = if s.exact.covers(ns_len) {
                    let only = filtered.then_some(&cands);
                    s.exact
                        .search(&s.env, dbs, &rtxn, ns, index, q, only, &hidden, n)?
                } else {
                    cands -= hidden.bitmap();
                    let count = s.store_cfg.vector_search_count;
                    vector::search(dbs, &rtxn, index, s.model.dimension, q, &cands, n, count)?
                };
            }
            records.dedupe(hits, n)?
        }
        None => Vec::new(),
    };
    let filter = Bm25Filter {
        namespace: ns,
        conversation: f.conversation.as_deref(),
        speaker: f.speaker.as_deref(),
        since_ms: f.since_ms,
        until_ms: f.until_ms,
        exclude_ids: &exclude_ids,
        hidden: &hidden,
    };
    // Words are matched without the query's time phrase (it names no fact).
    let words = time
        .as_ref()
        .map_or(req.text.as_str(), |t| t.words.as_str());
    // Names the recogniser misheard: the query's words the user's memories do not have, and
    // the memories' words that sound like them (searched as words too).
    let phonetic_ranking = req.mode == SearchMode::Hybrid && retrieval.phonetic_weight > 0.0;
    let correct = want_bm25 && retrieval.sound_alike_words;
    let heard = if phonetic_ranking || correct {
        s.bm25.hear(words, ns, correct)?
    } else {
        Heard::default()
    };
    let bm25_list = if want_bm25 {
        // Hidden chunks never reach the page (the filter drops them as BM25 collects).
        let hits = s.bm25.search(words, &heard.sound_alikes, &filter, n)?;
        records.dedupe(hits, n)?
    } else {
        Vec::new()
    };
    // The third ranking, by how the words sound (hybrid only; weight 0 skips it).
    let phonetic_list = if phonetic_ranking {
        let hits = s.bm25.search_phonetic(&heard, &filter, n)?;
        records.dedupe(hits, n)?
    } else {
        Vec::new()
    };

    let mut out = Vec::with_capacity(req.top_n);
    match req.mode {
        SearchMode::Vector => {
            for (i, found) in vector_list.iter().take(req.top_n).enumerate() {
                let mut hit = records.hit(found, found.score, Some(i + 1), None)?;
                hit.similarity = Some(found.score);
                out.push(hit);
            }
        }
        SearchMode::Bm25 => {
            // A caller that passes an embedding anyway (an evaluation) gets each hit's
            // similarity too; the pipeline embeds nothing in BM25 mode.
            let query = req
                .embedding
                .as_deref()
                .filter(|e| e.len() == s.model.dimension)
                .and_then(vector::normalized);
            for (i, found) in bm25_list.iter().take(req.top_n).enumerate() {
                let mut hit = records.hit(found, found.score, None, Some(i + 1))?;
                hit.similarity = cosine_of(query.as_deref(), found.chunk)?;
                out.push(hit);
            }
        }
        SearchMode::Hybrid => {
            // The vector list's chunk is the semantically best one; else BM25's.
            let mut cands: Vec<Candidate> = Vec::new();
            let mut slot: HashMap<&[u8], usize> = HashMap::new();
            for (i, f) in vector_list.iter().enumerate() {
                slot.insert(&f.key, cands.len());
                cands.push(Candidate {
                    found: f,
                    vector_rank: Some(i + 1),
                    bm25_rank: None,
                    cosine: Some(f.score),
                    bm25: None,
                    phonetic_rank: None,
                    phonetic: None,
                });
            }
            for (i, f) in bm25_list.iter().enumerate() {
                match slot.get(&*f.key) {
                    Some(&c) => {
                        cands[c].bm25_rank = Some(i + 1);
                        cands[c].bm25 = Some(f.score);
                    }
                    None => {
                        // Found by words alone: its similarity still counts, for fusion and
                        // for the relevance floor.
                        slot.insert(&f.key, cands.len());
                        cands.push(Candidate {
                            found: f,
                            vector_rank: None,
                            bm25_rank: Some(i + 1),
                            cosine: cosine_of(query_vec.as_deref(), f.chunk)?,
                            bm25: Some(f.score),
                            phonetic_rank: None,
                            phonetic: None,
                        });
                    }
                }
            }
            for (i, f) in phonetic_list.iter().enumerate() {
                match slot.get(&*f.key) {
                    Some(&c) => {
                        cands[c].phonetic_rank = Some(i + 1);
                        cands[c].phonetic = Some(f.score);
                    }
                    None => {
                        // Found by sound alone (a misheard name): as for words alone.
                        cands.push(Candidate {
                            found: f,
                            vector_rank: None,
                            bm25_rank: None,
                            cosine: cosine_of(query_vec.as_deref(), f.chunk)?,
                            bm25: None,
                            phonetic_rank: Some(i + 1),
                            phonetic: Some(f.score),
                        });
                    }
                }
            }
            let mut fused = fuse(retrieval, &cands);
            if let Some(t) = time.as_ref().filter(|t| !t.boosted.is_empty()) {
                for (c, score) in &mut fused {
                    if t.boosted.contains(cands[*c].found.chunk) {
                        *score += retrieval.time_boost;
                    }
                }
                fused.sort_by(|a, b| b.1.total_cmp(&a.1));
            }
            let half_life_ms = retrieval.recency_half_life_s as f64 * 1000.0;
            if half_life_ms > 0.0 {
                // Ages from the request's `now`, as time windows read it: a replay (`--now`)
                // ranks as it would have then.
                fused = recency::reweigh(
                    fused,
                    req.top_n,
                    retrieval.recency_weight,
                    |c| records.ts_ms(&cands[c].found.key),
                    |ts_ms| {
                        let age = now_ms.saturating_sub(ts_ms).max(0) as f64;
                        0.5f64.powf(age / half_life_ms) as f32
                    },
                )?;
            }
            for (c, score) in fused.into_iter().take(req.top_n) {
                let c = &cands[c];
                let mut hit = records.hit(c.found, score, c.vector_rank, c.bm25_rank)?;
                hit.similarity = c.cosine;
                out.push(hit);
            }
        }
    }
    if time
        .as_ref()
        .is_some_and(|t| t.window.applied_as == TimeWindowUse::Only)
    {
        // Nothing but the time relates these memories to the question: tell them in order.
        out.sort_by(|a, b| b.ts_ms.cmp(&a.ts_ms).then_with(|| a.id.cmp(&b.id)));
    }
    Ok(Retrieved {
        hits: out,
        time_window: time.map(|t| t.window),
    })
}

/// One memory found by either list, with what each list said of it.
struct Candidate<'a> {
    found: &'a Found,
    vector_rank: Option<usize>,
    bm25_rank: Option<usize>,
    cosine: Option<f32>,
    bm25: Option<f32>,
    phonetic_rank: Option<usize>,
    phonetic: Option<f32>,
}

/// Indexes into `cands` with their fused scores, best first.
fn fuse(cfg: &RetrievalConfig, cands: &[Candidate]) -> Vec<(usize, f32)> {
    match cfg.fusion {
        Fusion::Convex => {
            let scored: Vec<Scored<usize>> = cands
                .iter()
                .enumerate()
                .map(|(i, c)| Scored {
                    item: i,
                    vector: c.cosine,
                    bm25: c.bm25,
                })
                .collect();
            let phonetic: Vec<Option<f32>> = cands.iter().map(|c| c.phonetic).collect();
            convex_with(
                &scored,
                &phonetic,
                cfg.phonetic_weight,
                cfg.convex_vector_weight,
                cfg.normalization,
            )
        }
        Fusion::Rrf => {
            let ranked = |rank: fn(&Candidate) -> Option<usize>| {
                let mut items: Vec<(usize, usize)> = cands
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| rank(c).map(|r| (r, i)))
                    .collect();
                items.sort_unstable();
                items.into_iter().map(|(_, i)| i).collect::<Vec<usize>>()
            };
            let (v, b) = (ranked(|c| c.vector_rank), ranked(|c| c.bm25_rank));
            let p = ranked(|c| c.phonetic_rank);
            reciprocal_rank(
                &[
                    RankedList {
                        items: &v,
                        weight: cfg.vector_weight,
                    },
                    RankedList {
                        items: &b,
                        weight: cfg.bm25_weight,
                    },
                    RankedList {
                        items: &p,
                        weight: cfg.phonetic_weight,
                    },
                ],
                cfg.rrf_k,
            )
            .into_iter()
            .map(|f| (f.item, f.score))
            .collect()
        }
    }
}

fn namespace_index(dbs: &Dbs, rtxn: &RoTxn, ns: &str) -> Result<Option<u16>, StoreError> {
    match dbs.ns_index.get(rtxn, &codec::ns_key(ns))? {
        Some(b) => {
            let arr: [u8; 2] = b.try_into().map_err(|_| codec::corrupt("ns index"))?;
            Ok(Some(u16::from_be_bytes(arr)))
        }
        None => Ok(None),
    }
}

fn bitmap(db: &lmdb::Raw, rtxn: &RoTxn, key: &[u8]) -> Result<RoaringBitmap, StoreError> {
    match db.get(rtxn, key)? {
        Some(b) => codec::bitmap_from(b),
        None => Ok(RoaringBitmap::new()),
    }
}

/// The namespace's number of live chunks, and those chunks narrowed by every filter: what the
/// vector list may return.
fn candidates(
    dbs: &Dbs,
    rtxn: &RoTxn,
    ns: &str,
    f: &SearchFilter,
    exclude_ids: &[String],
) -> Result<(u64, RoaringBitmap), StoreError> {
    let mut cands = bitmap(&dbs.ns_chunks, rtxn, &codec::ns_key(ns))?;
    let ns_len = cands.len();
    if let Some(c) = &f.conversation {
        cands &= bitmap(&dbs.conv_chunks, rtxn, &codec::ns_name_key(ns, c))?;
    }
    if let Some(sp) = &f.speaker {
        cands &= bitmap(&dbs.speaker_chunks, rtxn, &codec::ns_name_key(ns, sp))?;
    }
    if (f.since_ms.is_some() || f.until_ms.is_some()) && !cands.is_empty() {
        let prefix = codec::ns_key(ns);
        let lo = [
            prefix.as_slice(),
            &codec::ts_bytes(f.since_ms.unwrap_or(i64::MIN)),
        ]
        .concat();
        let hi = match f.until_ms {
            Some(u) => [prefix.as_slice(), &codec::ts_bytes(u)].concat(),
            // Just past every key of this namespace.
            None => [prefix.as_slice(), &[0xff; 13]].concat(),
        };
        let range = (
            std::ops::Bound::Included(lo.as_slice()),
            std::ops::Bound::Excluded(hi.as_slice()),
        );
        let mut window = RoaringBitmap::new();
        for entry in dbs.times.range(rtxn, &range)? {
            let (key, _) = entry?;
            window.insert(codec::u32_from(&key[key.len() - 4..])?);
        }
        cands &= window;
    }
    for id in exclude_ids {
        if let Some(v) = dbs.memories.get(rtxn, &codec::ns_name_key(ns, id))? {
            let rec: MemoryRecord = codec::decode(v, "memory record")?;
            for c in rec.chunks {
                cands.remove(c);
            }
        }
    }
    Ok((ns_len, cands))
}

/// Ids of the `n` most recent turns of a conversation (already in the agent's prompt).
pub(crate) fn recent_turns(
    dbs: &Dbs,
    rtxn: &RoTxn,
    ns: &str,
    exclude: Option<&(String, usize)>,
) -> Result<Vec<String>, StoreError> {
    let Some((conversation, n)) = exclude else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(*n);
    if *n == 0 {
        return Ok(out);
    }
    for entry in dbs
        .turns
        .rev_prefix_iter(rtxn, &codec::ns_name_key(ns, conversation))?
    {
        let (key, _) = entry?;
        out.push(codec::turn_key_id(key)?.to_string());
        if out.len() == *n {
            break;
        }
    }
    Ok(out)
}
