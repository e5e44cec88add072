//! Retrieval evaluation (`voicerag eval SET_DIR`): a set is `corpus.jsonl` (memories, as for
//! `voicerag ingest`) and `queries.jsonl` (`{"id", "text", "relevant": [memory ids]}`, where
//! `"relevant": []` marks a question nothing in the corpus answers). The corpus is ingested into
//! a temporary store and every query runs through the real pipeline, one at a time.
//!
//! Metrics, over answerable queries: MRR@10, recall@k (share of a query's relevant memories in
//! its top k, averaged), nDCG@10 (binary gains). Over no-answer queries: hits returned, on
//! average (a relevance floor should make it small). Latency: the pipeline's own total per query.
//!
//! Conversational sets (`fixtures/eval/conversational`) add, per query, optional `group`
//! (metrics are also reported per group), `namespace` (several users in one set), `now` (RFC
//! 3339: when the question is asked, for time expressions and expiry), `time_zone`, and `stale`
//! (ids of memories the answer replaced: a stale id ranked above every relevant one counts in
//! `stale_outranks`). Corpus lines that carry `ts` keep it; others get 0, as before.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voicerag_actors::{QueryRequest, SearchFilter, SearchMode, SearchRequest, TimeReading};

use crate::config::Config;
use crate::engines::{Engines, StoreAccess};
use crate::ingest;

/// Memories embedded and committed together while loading a set.
const LOAD_BATCH: usize = 256;
/// Candidates per list written by `dump_lists`.
const DUMP_DEPTH: usize = 100;

/// Something wrong with an eval set or its run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {reason}")]
    Set { path: PathBuf, reason: String },
    #[error(transparent)]
    Engine(#[from] crate::engines::EngineStartError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("query {id}: {reason}")]
    Query { id: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One query of a set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct EvalQuery {
    pub id: String,
    pub text: String,
    /// Memory ids that answer it; empty for a no-answer query.
    pub relevant: Vec<String>,
    /// What it tests ("time", "changed", "misheard"): metrics are also given per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The user asking (default: the namespace of the corpus's first memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// When it is asked, RFC 3339 (default: the clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// The asker's IANA time zone (default: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Ids of memories the answer replaced: must never rank above it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
}

/// A set read from its directory.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub dir: PathBuf,
    pub corpus: Vec<voicerag_actors::Memory>,
    pub queries: Vec<EvalQuery>,
}

impl EvalSet {
    /// The namespace the corpus is stored in (its first memory's; sets use one).
    pub fn namespace(&self) -> String {
        self.corpus
            .first()
            .map_or_else(|| "default".into(), |m| m.namespace.clone())
    }

    /// Reads `corpus.jsonl` and `queries.jsonl` of `dir`; a bad line is an error naming it.
    pub fn load(dir: &Path, max_text_bytes: usize) -> Result<Self, EvalError> {
        let read = |name: &str| -> Result<(PathBuf, String), EvalError> {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|t| (path.clone(), t))
                .map_err(|e| EvalError::Set {
                    path,
                    reason: e.to_string(),
                })
        };
        let (cpath, ctext) = read("corpus.jsonl")?;
        let mut corpus = Vec::new();
        for (i, line) in ctext.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut m = ingest::parse_line(line, max_text_bytes).map_err(|e| EvalError::Set {
                path: cpath.clone(),
                reason: format!("line {}: {e}", i + 1),
            })?;
            // Without a timestamp of its own, a memory gets 0 (not the clock): two runs store
            // the same data.
            let has_ts = serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|v| v.get("ts").is_some_and(|t| !t.is_null()));
            if !has_ts {
                m.ts_ms = 0;
            }
            corpus.push(m);
        }
        let (qpath, qtext) = read("queries.jsonl")?;
        let mut queries = Vec::new();
        for (i, line) in qtext.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let q: EvalQuery = serde_json::from_str(line).map_err(|e| EvalError::Set {
                path: qpath.clone(),
                reason: format!("line {}: {e}", i + 1),
            })?;
            if let Some(now) = &q.now
                && chrono::DateTime::parse_from_rfc3339(now).is_err()
            {
                return Err(EvalError::Set {
                    path: qpath.clone(),
                    reason: format!("line {}: \"now\" {now:?} is not RFC 3339", i + 1),
                });
            }
            if let Some(z) = &q.time_zone
                && crate::time_expr::zone(z).is_none()
            {
                return Err(EvalError::Set {
                    path: qpath.clone(),
                    reason: format!("line {}: unknown time zone {z:?}", i + 1),
                });
            }
            queries.push(q);
        }
        if corpus.is_empty() || queries.is_empty() {
            return Err(EvalError::Set {
                path: dir.to_path_buf(),
                reason: "needs at least one memory and one query".into(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            corpus,
            queries,
        })
    }
}

/// What one query returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    pub hits: Vec<String>,
    pub total_ms: f64,
}

/// The figures `voicerag eval` prints (`--json`: these keys, one line).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub queries: usize,
    pub answerable: usize,
    pub noanswer: usize,
    #[serde(rename = "mrr@10")]
    pub mrr10: f64,
    #[serde(rename = "recall@1")]
    pub recall1: f64,
    #[serde(rename = "recall@3")]
    pub recall3: f64,
    #[serde(rename = "recall@5")]
    pub recall5: f64,
    #[serde(rename = "recall@10")]
    pub recall10: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg10: f64,
    /// Hits returned per no-answer query, on average (0 when the set has none).
    pub noanswer_hits_mean: f64,
    pub total_ms_p50: f64,
    pub total_ms_p99: f64,
    /// Queries where a `stale` (replaced) memory ranked above every relevant one.
    pub stale_outranks: usize,
    /// The same figures per query group, for sets whose queries name one.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub groups: std::collections::BTreeMap<String, Metrics>,
}

/// Scores `answers` against `queries` (matched by id; a query without an answer counts as
/// answered with nothing).
pub fn score(queries: &[EvalQuery], answers: &[Answer]) -> Metrics {
    let by_id: std::collections::HashMap<&str, &Answer> =
        answers.iter().map(|a| (a.id.as_str(), a)).collect();
    let (mut rr, mut r1, mut r3, mut r5, mut r10, mut ndcg) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let mut stale_outranks = 0usize;
    let (mut answerable, mut noanswer, mut noanswer_hits) = (0usize, 0usize, 0usize);
    for q in queries {
        let hits: &[String] = by_id.get(q.id.as_str()).map_or(&[], |a| &a.hits);
        let first_relevant = hits.iter().position(|id| q.relevant.contains(id));
        let first_stale = hits.iter().position(|id| q.stale.contains(id));
        if let Some(st) = first_stale
            && first_relevant.is_none_or(|r| st < r)
        {
            stale_outranks += 1;
        }
        if q.relevant.is_empty() {
            noanswer += 1;
            noanswer_hits += hits.len();
            continue;
        }
        answerable += 1;
        let top = &hits[..hits.len().min(10)];
        let relevant = |id: &String| q.relevant.contains(id);
        if let Some(rank) = top.iter().position(relevant) {
            rr += 1.0 / (rank + 1) as f64;
        }
        let recall = |k: usize| {
            top.iter().take(k).filter(|id| relevant(id)).count() as f64 / q.relevant.len() as f64
        };
        r1 += recall(1);
        r3 += recall(3);
        r5 += recall(5);
        r10 += recall(10);
        let gain = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
        let dcg: f64 = top
            .iter()
            .enumerate()
            .filter(|(_, id)| relevant(id))
            .map(|(r, _)| gain(r))
            .sum();
        let ideal: f64 = (0..q.relevant.len().min(10)).map(gain).sum();
        ndcg += dcg / ideal;
    }
    let mut lat: Vec<f64> = answers.iter().map(|a| a.total_ms).collect();
    lat.sort_by(f64::total_cmp);
    let per = |x: f64| round4(x / answerable.max(1) as f64);
    Metrics {
        queries: queries.len(),
        answerable,
        noanswer,
        mrr10: per(rr),
        recall1: per(r1),
        recall3: per(r3),
        recall5: per(r5),
        recall10: per(r10),
        ndcg10: per(ndcg),
        noanswer_hits_mean: round4(noanswer_hits as f64 / noanswer.max(1) as f64),
        total_ms_p50: round4(crate::bench::stats::percentile(&lat, 0.50)),
        total_ms_p99: round4(crate::bench::stats::percentile(&lat, 0.99)),
        stale_outranks,
        groups: std::collections::BTreeMap::new(),
    }
}

/// [`score`] of the whole set, with each query group scored on its own in `groups`.
pub fn score_by_group(queries: &[EvalQuery], answers: &[Answer]) -> Metrics {
    let mut all = score(queries, answers);
    let mut names: Vec<&str> = queries.iter().filter_map(|q| q.group.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let members: Vec<EvalQuery> = queries
            .iter()
            .filter(|q| q.group.as_deref() == Some(name))
            .cloned()
            .collect();
        all.groups
            .insert(name.to_string(), score(&members, answers));
    }
    all
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// How a set is run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub mode: Option<SearchMode>,
    pub top_k: usize,
    pub budget: Option<std::time::Duration>,
    /// Write each query's vector and BM25 candidate lists (scores included) here, one JSON line
    /// per query, for fusion studies.
    pub dump_lists: Option<PathBuf>,
    /// Read time expressions in queries (`None`: as configured): off, for comparison.
    pub time_windows: Option<bool>,
    /// Return superseded and expired memories too: what facts that change look like without
    /// `supersedes` and `expires_at`, for comparison.
    pub include_superseded: bool,
}

/// Ingests the set into a fresh temporary store and runs every query through the pipeline.
pub async fn run(
    config: &Config,
    set: &EvalSet,
    opts: &EvalOptions,
) -> Result<(Metrics, Vec<Answer>), EvalError> {
    let tmp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.store.data_dir = tmp.path().display().to_string();
    let engines = Engines::load(&config, StoreAccess::ReadWrite, true)?;
    let bulk = ingest::BulkEmbedder::load(&config.runtime, &config.embedder)?;
    for batch in set.corpus.chunks(LOAD_BATCH) {
        let prepared = bulk.embed_memories(batch.to_vec())?;
        let report = engines.store.add(prepared)?;
        if let Some((i, reason)) = report.rejected.first() {
            return Err(EvalError::Set {
                path: set.dir.join("corpus.jsonl"),
                reason: format!("memory {:?} refused: {reason}", batch[*i].id),
            });
        }
    }
    drop(bulk);
    // Every memory searchable by BM25 too before the first query.
    engines.store.flush()?;
    if let Some(path) = &opts.dump_lists {
        dump_lists(&engines, set, path)?;
    }
    let handle = engines.start(&config, engines.store_writer()).await?;
    let mut answers = Vec::with_capacity(set.queries.len());
    let namespace = set.namespace();
    for q in &set.queries {
        let now_ms = q
            .now
            .as_deref()
            .and_then(|n| chrono::DateTime::parse_from_rfc3339(n).ok())
            .map(|t| t.timestamp_millis());
        let request = QueryRequest {
            namespace: q.namespace.clone().unwrap_or_else(|| namespace.clone()),
            conversation: None,
            text: q.text.clone(),
            top_k: Some(opts.top_k),
            mode: opts.mode,
            budget: opts.budget,
            filter: SearchFilter {
                time: TimeReading {
                    enabled: opts.time_windows,
                    time_zone: q.time_zone.clone(),
                    now_ms,
                },
                include_superseded: opts.include_superseded,
                ..Default::default()
            },
        };
        let result = handle.query(request).await.map_err(|e| EvalError::Query {
            id: q.id.clone(),
            reason: e.to_string(),
        })?;
        answers.push(Answer {
            id: q.id.clone(),
            hits: result.hits.iter().map(|h| h.id.clone()).collect(),
            total_ms: result.timings.total.as_secs_f64() * 1000.0,
        });
    }
    handle.shutdown().await.ok();
    Ok((score_by_group(&set.queries, &answers), answers))
}

/// One JSON line per query: `{"id", "relevant", "vector": [[id, cosine, cosine], ...], "bm25":
/// [[id, score, cosine], ...]}`, each list as the store ranks it.
fn dump_lists(engines: &Engines, set: &EvalSet, path: &Path) -> Result<(), EvalError> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let namespace = set.namespace();
    for q in &set.queries {
        let embedding = engines.embedder.embed(&[q.text.as_str()])?.pop();
        let list = |mode: SearchMode| -> Result<Vec<(String, f32, Option<f32>)>, EvalError> {
            let req = SearchRequest {
                namespace: namespace.clone(),
                text: q.text.clone(),
                embedding: embedding.clone(),
                top_n: DUMP_DEPTH,
                mode,
                filter: SearchFilter::default(),
            };
            Ok(engines
                .store
                .search(&req)?
                .into_iter()
                .map(|h| (h.id, h.score, h.similarity))
                .collect())
        };
        let line = serde_json::json!({
            "id": q.id, "relevant": q.relevant,
            "vector": list(SearchMode::Vector)?, "bm25": list(SearchMode::Bm25)?,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, relevant: &[&str]) -> EvalQuery {
        EvalQuery {
            id: id.into(),
            text: id.into(),
            relevant: relevant.iter().map(|s| s.to_string()).collect(),
            group: None,
            namespace: None,
            now: None,
            time_zone: None,
            stale: Vec::new(),
        }
    }

    fn a(id: &str, hits: &[&str], ms: f64) -> Answer {
        Answer {
            id: id.into(),
            hits: hits.iter().map(|s| s.to_string()).collect(),
            total_ms: ms,
        }
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let queries = [q("q1", &["a"]), q("q2", &["b", "c"]), q("na", &[])];
        let answers = [
            a("q1", &["x", "a"], 1.0),
            a("q2", &["c", "y", "z", "w", "v", "b"], 2.0),
            a("na", &["x", "y", "z"], 3.0),
        ];
        let m = score(&queries, &answers);
        assert_eq!((m.answerable, m.noanswer), (2, 1));
        assert_eq!(m.mrr10, round4((0.5 + 1.0) / 2.0));
        assert_eq!(m.recall1, round4((0.0 + 0.5) / 2.0));
        assert_eq!(m.recall5, round4((1.0 + 0.5) / 2.0));
        assert_eq!(m.recall10, 1.0);
        let ideal2 = 1.0 + 1.0 / 3f64.log2();
        let ndcg_q1 = 1.0 / 3f64.log2();
        let ndcg_q2 = (1.0 + 1.0 / 7f64.log2()) / ideal2;
        assert_eq!(m.ndcg10, round4((ndcg_q1 + ndcg_q2) / 2.0));
        assert_eq!(m.noanswer_hits_mean, 3.0);
    }

    #[test]
    fn groups_are_scored_alone_and_stale_memories_counted() {
        let mut q1 = q("t1", &["a"]);
        q1.group = Some("time".into());
        let mut q2 = q("c1", &["new"]);
        q2.group = Some("changed".into());
        q2.stale = vec!["old".into()];
        let mut q3 = q("c2", &["new2"]);
        q3.group = Some("changed".into());
        q3.stale = vec!["old2".into()];
        let answers = [
            a("t1", &["a"], 1.0),
            a("c1", &["old", "new"], 1.0),
            a("c2", &["new2", "old2"], 1.0),
        ];
        let m = score_by_group(&[q1, q2, q3], &answers);
        assert_eq!(m.stale_outranks, 1);
        assert_eq!(m.groups["time"].recall1, 1.0);
        assert_eq!(m.groups["time"].queries, 1);
        assert_eq!(m.groups["changed"].stale_outranks, 1);
        assert_eq!(m.groups["changed"].recall1, 0.5);
    }

    #[test]
    fn a_query_left_unanswered_scores_zero() {
        let m = score(&[q("q1", &["a"])], &[]);
        assert_eq!((m.mrr10, m.recall10), (0.0, 0.0));
    }
}
