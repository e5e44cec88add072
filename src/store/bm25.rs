//! The BM25 side: a tantivy index of chunks (English analyser), its filtered queries, and the
//! replay of LMDB's op log into it. The last replayed LMDB sequence is the commit payload, so the
//! index always knows how far behind LMDB it is.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, TantivyDocument, Term,
};

use super::StoreError;
use super::analysis::{self, ANALYZER, ANALYZER_V1};
use super::codec::MemoryRecord;
use super::hidden::Hidden;
use super::phonetic::{self, PHONETIC_ANALYZER, PhoneticEncoder};
/// tantivy's smallest per-thread indexing budget is 15 MB; one thread is plenty for utterances.
const WRITER_HEAP_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Copy)]
struct Fields {
    chunk: Field,
    ns: Field,
    id: Field,
    conversation: Field,
    speaker: Field,
    ts: Field,
    text: Field,
    /// The chunk's phonetic codes (see `phonetic`); the last field, so an index from before it
    /// has every other field at the same place.
    phonetic: Field,
    /// Each content word with each of its codes, in its namespace ([`phonetic::sound_term`]):
    /// the vocabulary a misheard word is corrected from. After `phonetic`, for the same reason.
    sounds: Field,
}

/// Filters every BM25 query carries (the namespace always).
pub struct Bm25Filter<'a> {
    pub namespace: &'a str,
    pub conversation: Option<&'a str>,
    pub speaker: Option<&'a str>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Memory ids to leave out (the most recent turns).
    pub exclude_ids: &'a [String],
    /// Chunks to leave out (superseded, expired): ranked below every visible document as they
    /// are collected and dropped after, so the top `n` are `n` visible ones when there are.
    pub hidden: &'a Arc<Hidden>,
}

/// A query's words as the namespace's memories hear them (see [`Bm25::hear`]).
#[derive(Debug, Default)]
pub struct Heard {
    /// The query's content words (lower-cased, folded).
    words: Vec<String>,
    /// Those no live memory of the namespace has.
    pub unknown: Vec<String>,
    /// For unknown words written like names, the word of the namespace's memories each most
    /// likely stands for: what a recogniser that misheard a name was told.
    pub sound_alikes: Vec<String>,
}

pub struct Bm25 {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    phonetic: PhoneticEncoder,
    /// False for an index built before the phonetic field (a read-only process may see one
    /// until the writer rebuilds it): phonetic search then finds nothing.
    has_phonetic: bool,
    /// False for an index built before the sound-alike field: misheard words are then not
    /// corrected.
    has_sounds: bool,
    /// Present in the writer process only.
    writer: Option<Mutex<IndexWriter<TantivyDocument>>>,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        chunk: b.add_u64_field("chunk", INDEXED | FAST),
        ns: b.add_text_field("ns", STRING),
        id: b.add_text_field("id", STRING),
        conversation: b.add_text_field("conversation", STRING),
        speaker: b.add_text_field("speaker", STRING),
        ts: b.add_i64_field("ts", INDEXED | FAST),
        text: b.add_text_field("text", text_opts),
        phonetic: b.add_text_field(
            "phonetic",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(PHONETIC_ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        ),
        sounds: b.add_text_field("sounds", STRING),
    };
    (b.build(), fields)
}

/// The analyzer an index's text field was built with.
fn index_analyzer(index: &Index) -> Result<String, StoreError> {
    field_analyzer(index, "text")?.ok_or_else(|| super::codec::corrupt("BM25 text field missing"))
}

/// The analyzer of an index's text field `name`; `None` when the index has no such field.
fn field_analyzer(index: &Index, name: &str) -> Result<Option<String>, StoreError> {
    let schema = index.schema();
    let Ok(field) = schema.get_field(name) else {
        return Ok(None);
    };
    match schema.get_field_entry(field).field_type() {
        tantivy::schema::FieldType::Str(opts) => Ok(Some(
            opts.get_indexing_options()
                .map(|o| o.tokenizer().to_string())
                .unwrap_or_default(),
        )),
        _ => Err(super::codec::corrupt(&format!(
            "BM25 {name} field is not text"
        ))),
    }
}

/// True when the index was built by the current analysis, phonetic fields included.
fn is_current(index: &Index) -> Result<bool, StoreError> {
    Ok(index_analyzer(index)? == ANALYZER
        && field_analyzer(index, "phonetic")?.as_deref() == Some(PHONETIC_ANALYZER)
        && index.schema().get_field("sounds").is_ok())
}

impl Bm25 {
    /// Opens (or, when `writable`, creates) the index in `dir`.
    pub fn open(dir: &Path, writable: bool) -> Result<Self, StoreError> {
        let (schema, fields) = schema();
        let mut existing = dir.join("meta.json").exists();
        if existing && writable && !is_current(&Index::open_in_dir(dir)?)? {
            // Built by an older analysis (or before the phonetic field): start afresh; the
            // writer's catch-up finds the op log behind it and rebuilds the index from LMDB's
            // records.
            tracing::info!(dir = %dir.display(), "BM25 analysis changed; rebuilding the index");
            std::fs::remove_dir_all(dir)
                .map_err(|e| StoreError::io(format!("remove {}", dir.display()), e))?;
            existing = false;
        }
        let index = if existing {
            Index::open_in_dir(dir)?
        } else if writable {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
            Index::create_in_dir(dir, schema)?
        } else {
            return Err(super::codec::corrupt(&format!(
                "BM25 index {} is missing",
                dir.display()
            )));
        };
        index.tokenizers().register(ANALYZER, analysis::analyzer());
        index
            .tokenizers()
            .register(ANALYZER_V1, analysis::analyzer_v1());
        index
            .tokenizers()
            .register(PHONETIC_ANALYZER, phonetic::field_analyzer());
        let has_phonetic =
            field_analyzer(&index, "phonetic")?.as_deref() == Some(PHONETIC_ANALYZER);
        let has_sounds = index.schema().get_field("sounds").is_ok();
        // Queries are analysed as the index was (a read-only process may see an old index).
        let analyzer = if index_analyzer(&index)? == ANALYZER_V1 {
            analysis::analyzer_v1()
        } else {
            analysis::analyzer()
        };
        let reader = index
            .reader_builder()
            // The writer reloads right after each commit; a read-only process follows the files.
            .reload_policy(if writable {
                ReloadPolicy::Manual
            } else {
                ReloadPolicy::OnCommitWithDelay
            })
            .try_into()?;
        let writer = if writable {
            Some(Mutex::new(
                index.writer_with_num_threads(1, WRITER_HEAP_BYTES)?,
            ))
        } else {
            None
        };
        Ok(Self {
            index,
            reader,
            fields,
            analyzer,
            phonetic: PhoneticEncoder::default(),
            has_phonetic,
            has_sounds,
            writer,
        })
    }

    /// The LMDB sequence the index holds (0: nothing).
    pub fn watermark(&self) -> Result<u64, StoreError> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    /// The analysed terms of `text` (deduplicated, in first-seen order).
    pub fn terms(&self, text: &str) -> Vec<String> {
        analysis::terms(&self.analyzer, text)
    }

    /// Top `n` chunks for `text`, and for the words `also` (a misheard word's sound-alikes),
    /// under `filter`: `(chunk id, score)`, best first.
    pub fn search(
        &self,
        text: &str,
        also: &[String],
        filter: &Bm25Filter,
        n: usize,
    ) -> Result<Vec<(u32, f32)>, StoreError> {
        let mut terms = self.terms(text);
        for word in also {
            for t in self.terms(word) {
                if !terms.contains(&t) {
                    terms.push(t);
                }
            }
        }
        self.search_terms(self.fields.text, &terms, filter, n)
    }

    /// Reads `text`'s content words against `namespace`'s memories: which of them no memory
    /// has (a misheard name is, as heard, such a word: "Martha" when the user says "Marta"),
    /// and, when `correct`, for each of those written like a name (see
    /// [`PhoneticEncoder::name_like_words`]), the word of the user's own memories it most
    /// likely stands for ([`Heard::sound_alikes`]).
    pub fn hear(&self, text: &str, namespace: &str, correct: bool) -> Result<Heard, StoreError> {
        let searcher = self.reader.searcher();
        let words = self.phonetic.content_words(text);
        let names = if correct && self.has_sounds {
            Some(self.phonetic.name_like_words(text))
        } else {
            None
        };
        let mut heard = Heard::default();
        for word in &words {
            let mut known = false;
            for term in self.terms(word) {
                known |= self.in_namespace(&searcher, &term, namespace)?;
            }
            if known {
                continue;
            }
            heard.unknown.push(word.clone());
            let alike = match &names {
                Some(names) if names.as_ref().is_none_or(|n| n.contains(word)) => {
                    self.sound_alike_of(&searcher, word, namespace)?
                }
                _ => None,
            };
            if let Some(w) = alike
                && !heard.sound_alikes.contains(&w)
            {
                heard.sound_alikes.push(w);
            }
        }
        heard.words = words;
        Ok(heard)
    }

    /// The word of `namespace`'s live memories that `word` most likely stands for: of those
    /// that share a Double Metaphone code with it and are spelt with fewer edits than half their
    /// letters ("tiago" for "diego"; not "compressed" for "compare", whose four-letter codes
    /// agree, nor "new" for "neve"), the one most of the user's memories use (a recogniser's
    /// "Linuks" is the user's "linux", not their "links"), then the nearest spelling.
    fn sound_alike_of(
        &self,
        searcher: &tantivy::Searcher,
        word: &str,
        namespace: &str,
    ) -> Result<Option<String>, StoreError> {
        // (word, live in some segment, memories using it, edit distance)
        let mut found: Vec<(String, bool, u32, usize)> = Vec::new();
        // The prefixes of the word's codes; each ends in the separator 0x1F, so every term
        // with it sorts below the same prefix ending in 0x20.
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = self
            .phonetic
            .word_codes(word)
            .iter()
            .map(|code| {
                let prefix = phonetic::sound_prefix(namespace, code).into_bytes();
                let mut end = prefix.clone();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                (prefix, end)
            })
            .collect();
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.fields.sounds)?;
            let alive = segment.alive_bitset();
            // A word reached through two of its codes is counted once per segment.
            let mut counted: Vec<usize> = Vec::new();
            for (prefix, end) in &ranges {
                let mut terms = inverted
                    .terms()
                    .range()
                    .ge(prefix)
                    .lt(end)
                    .into_stream()
                    .map_err(tantivy::TantivyError::from)?;
                while terms.advance() {
                    let Some(candidate) = terms
                        .key()
                        .strip_prefix(prefix.as_slice())
                        .and_then(|w| std::str::from_utf8(w).ok())
                    else {
                        continue;
                    };
                    let distance = phonetic::edit_distance(word, candidate);
                    if candidate == word || 2 * distance >= word.len().max(candidate.len()) {
                        continue;
                    }
                    let i = match found.iter().position(|f| f.0 == candidate) {
                        Some(i) => i,
                        None => {
                            found.push((candidate.to_string(), false, 0, distance));
                            found.len() - 1
                        }
                    };
                    if counted.contains(&i) {
                        continue;
                    }
                    counted.push(i);
                    let info = terms.value();
                    found[i].2 += info.doc_freq;
                    // Deleted documents stay in the dictionary until a merge: a word counts
                    // only while a live chunk holds it.
                    if !found[i].1 {
                        let mut docs = inverted
                            .read_postings_from_terminfo(info, IndexRecordOption::Basic)
                            .map_err(tantivy::TantivyError::from)?;
                        let mut doc = docs.doc();
                        while doc != TERMINATED {
                            if alive.is_none_or(|a| a.is_alive(doc)) {
                                found[i].1 = true;
                                break;
                            }
                            doc = docs.advance();
                        }
                    }
                }
            }
        }
        Ok(found
            .into_iter()
            .filter(|f| f.1)
            .min_by(|a, b| b.2.cmp(&a.2).then(a.3.cmp(&b.3)).then(a.0.cmp(&b.0)))
            .map(|f| f.0))
    }

    /// Top `n` chunks whose words sound like the heard query's (BM25 over phonetic codes),
    /// under `filter`: `(chunk id, score)`, best first; nothing when every word of the query
    /// occurs in the namespace's memories.
    ///
    /// A query whose words all occur in the namespace has nothing the phonetic ranking could
    /// add that BM25 does not already find, so it runs no phonetic search at all (and clean
    /// queries rank exactly as without it). Once a word is unknown, every word is sounded out:
    /// the misheard name's code alone would rank by one term, and in a set where the name is
    /// on every memory (Debian in the Debian FAQ) that one term is noise. It runs when the
    /// word was corrected too: measured, skipping it then lost recall (the conversational
    /// set's misheard group, recall@1 0.955 to 0.864).
    pub fn search_phonetic(
        &self,
        heard: &Heard,
        filter: &Bm25Filter,
        n: usize,
    ) -> Result<Vec<(u32, f32)>, StoreError> {
        if !self.has_phonetic || n == 0 || heard.unknown.is_empty() {
            return Ok(Vec::new());
        }
        let mut codes: Vec<String> = Vec::new();
        for c in heard.words.iter().flat_map(|w| self.phonetic.word_codes(w)) {
            if !codes.contains(&c) {
                codes.push(c);
            }
        }
        self.search_terms(self.fields.phonetic, &codes, filter, n)
    }

    /// True when a live chunk of `namespace` holds the analysed `term`. Stops at the first one.
    fn in_namespace(
        &self,
        searcher: &tantivy::Searcher,
        term: &str,
        namespace: &str,
    ) -> Result<bool, StoreError> {
        let term = Term::from_field_text(self.fields.text, term);
        let ns = Term::from_field_text(self.fields.ns, namespace);
        // The two postings lists walked side by side, segment by segment: what a boolean
        // query of the two terms would do, without building its weight and scorers for each
        // of the query's words (about 3 µs a word).
        for segment in searcher.segment_readers() {
            let (Some(mut docs), Some(mut in_ns)) =
                (postings(segment, &term)?, postings(segment, &ns)?)
            else {
                continue;
            };
            let alive = segment.alive_bitset();
            // Each list only moves forward, to the other's document when it is behind.
            let (mut doc, mut other) = (docs.doc(), in_ns.doc());
            while doc != TERMINATED && other != TERMINATED {
                if doc < other {
                    doc = docs.seek(other);
                } else if other < doc {
                    other = in_ns.seek(doc);
                } else if alive.is_none_or(|a| a.is_alive(doc)) {
                    return Ok(true);
                } else {
                    doc = docs.advance();
                }
            }
        }
        Ok(false)
    }

    /// Top `n` chunks holding any of `terms` in `field` under `filter`, by BM25.
    fn search_terms(
        &self,
        field: Field,
        terms: &[String],
        filter: &Bm25Filter,
        n: usize,
    ) -> Result<Vec<(u32, f32)>, StoreError> {
        if terms.is_empty() || n == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let should: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(field, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(should)))];
        // Filters restrict the matching set before top-n and add nothing to the score.
        let mut must_filter = |field: Field, value: &str| {
            let q = TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            );
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(q), 0.0)),
            ));
        };
        must_filter(f.ns, filter.namespace);
        if let Some(c) = filter.conversation {
            must_filter(f.conversation, c);
        }
        if let Some(s) = filter.speaker {
            must_filter(f.speaker, s);
        }
        if filter.since_ms.is_some() || filter.until_ms.is_some() {
            let lo = filter.since_ms.map_or(Bound::Unbounded, |v| {
                Bound::Included(Term::from_field_i64(f.ts, v))
            });
            let hi = filter.until_ms.map_or(Bound::Unbounded, |v| {
                Bound::Excluded(Term::from_field_i64(f.ts, v))
            });
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(RangeQuery::new(lo, hi)), 0.0)),
            ));
        }
        if !filter.exclude_ids.is_empty() {
            let ids = filter
                .exclude_ids
                .iter()
                .map(|id| Term::from_field_text(f.id, id));
            clauses.push((Occur::MustNot, Box::new(TermSetQuery::new(ids))));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        // Equal scores are ordered by chunk id, lowest first, not by where tantivy's segments
        // (whose layout depends on commit timing) happen to hold them: the same data ranks the
        // same, ingest after ingest. The chunk id read for that also tells a hidden chunk, which
        // ranks below every visible one (and is dropped below): one fast-field read and one bit
        // test per matching document, no second collector.
        let hidden = Arc::clone(filter.hidden);
        let collector =
            TopDocs::with_limit(n).tweak_score(move |segment: &tantivy::SegmentReader| {
                let chunks = segment
                    .fast_fields()
                    .u64("chunk")
                    .ok()
                    .map(|c| c.first_or_default_col(u64::MAX));
                let hidden = Arc::clone(&hidden);
                move |doc: tantivy::DocId, score: tantivy::Score| {
                    let chunk = chunks.as_ref().map_or(u64::MAX, |c| c.get_val(doc));
                    let left_out = u32::try_from(chunk).is_ok_and(|c| hidden.contains(c));
                    let score = if left_out { f32::NEG_INFINITY } else { score };
                    (score, std::cmp::Reverse(chunk))
                }
            });
        let top = searcher.search(&query, &collector)?;
        Ok(top
            .into_iter()
            .filter(|((score, chunk), _)| chunk.0 != u64::MAX && *score != f32::NEG_INFINITY)
            .map(|((score, chunk), _)| (chunk.0 as u32, score))
            .collect())
    }

    fn writer(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, IndexWriter<TantivyDocument>>, StoreError> {
        self.writer
            .as_ref()
            .ok_or(StoreError::ReadOnly)?
            .lock()
            .map_err(|_| StoreError::Corrupt("BM25 writer lock poisoned".into()))
    }

    /// Queues one chunk document.
    pub fn add_chunk(
        &self,
        chunk: u32,
        ns: &str,
        id: &str,
        rec: &MemoryRecord,
        text: &str,
    ) -> Result<(), StoreError> {
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.chunk, chunk as u64);
        doc.add_text(f.ns, ns);
        doc.add_text(f.id, id);
        doc.add_text(f.conversation, &rec.conversation);
        doc.add_text(f.speaker, &rec.speaker);
        doc.add_i64(f.ts, rec.ts_ms);
        doc.add_text(f.text, text);
        // One pass over the words serves both fields.
        let words = self.phonetic.words(text);
        doc.add_text(f.phonetic, phonetic::field_text(&words));
        for (word, codes) in &words {
            for code in codes {
                doc.add_text(f.sounds, phonetic::sound_term(ns, code, word));
            }
        }
        self.writer()?.add_document(doc)?;
        Ok(())
    }

    /// Queues the deletion of one chunk document.
    pub fn delete_chunk(&self, chunk: u32) -> Result<(), StoreError> {
        self.writer()?
            .delete_term(Term::from_field_u64(self.fields.chunk, chunk as u64));
        Ok(())
    }

    /// Queues the deletion of everything (before a rebuild).
    pub fn delete_all(&self) -> Result<(), StoreError> {
        self.writer()?.delete_all_documents()?;
        Ok(())
    }

    /// Commits what was queued with `watermark` as payload, then makes it searchable.
    pub fn commit(&self, watermark: u64) -> Result<(), StoreError> {
        {
            let mut w = self.writer()?;
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&watermark.to_string());
            prepared.commit()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Number of live documents (chunks) searchable now.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

/// The documents of `segment` that hold `term` (in the term's own field), if any.
fn postings(
    segment: &tantivy::SegmentReader,
    term: &Term,
) -> Result<Option<tantivy::postings::SegmentPostings>, StoreError> {
    Ok(segment
        .inverted_index(term.field())?
        .read_postings(term, IndexRecordOption::Basic)
        .map_err(tantivy::TantivyError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts_ms: i64) -> MemoryRecord {
        MemoryRecord {
            conversation: "c".into(),
            speaker: "user".into(),
            text: String::new(),
            ts_ms,
            chunks: Vec::new(),
            supersedes: Vec::new(),
            expires_at_ms: None,
            superseded_by: None,
        }
    }

    #[test]
    fn a_word_is_known_only_where_a_live_chunk_of_the_namespace_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let bm25 = Bm25::open(dir.path(), true).unwrap();
        // Namespaces interleaved in one segment, so each postings list has to catch up with
        // the other both ways.
        let docs = [
            (0, "a", "kettle whistle"),
            (1, "b", "garden hose"),
            (2, "a", "garden gnome"),
            (3, "c", "kettle"),
            (4, "b", "kettle spout"),
            (5, "c", "lantern"),
            (6, "b", "lantern"),
        ];
        for (chunk, ns, text) in docs {
            bm25.add_chunk(chunk, ns, &format!("m{chunk}"), &record(0), text)
                .unwrap();
        }
        bm25.commit(1).unwrap();
        let searcher = bm25.reader.searcher();
        let known = |word: &str, ns: &str| {
            let term = &bm25.terms(word)[0];
            bm25.in_namespace(&searcher, term, ns).unwrap()
        };
        assert!(known("kettle", "a") && known("kettle", "b") && known("kettle", "c"));
        assert!(known("garden", "a") && known("garden", "b") && !known("garden", "c"));
        assert!(known("lantern", "b") && known("lantern", "c") && !known("lantern", "a"));
        assert!(!known("whistle", "b") && !known("spout", "a") && !known("gnome", "d"));
        // A deleted chunk no longer makes its word known.
        bm25.delete_chunk(4).unwrap();
        bm25.commit(2).unwrap();
        let searcher = bm25.reader.searcher();
        assert!(
            !bm25
                .in_namespace(&searcher, &bm25.terms("spout")[0], "b")
                .unwrap()
        );
        assert!(
            bm25.in_namespace(&searcher, &bm25.terms("kettle")[0], "a")
                .unwrap()
        );
    }
}
