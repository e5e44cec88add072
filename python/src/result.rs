//! Typed results for Python: `ContextResult`, `Hit`, `Timings`, each with `to_dict()`.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};

use voicerag::actors::{ContextResult as RustResult, Hit as RustHit};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A recalled memory.
#[pyclass(module = "voicerag._native", name = "Hit", frozen, get_all)]
#[derive(Clone)]
pub struct Hit {
    /// The memory's id (`<conversation>/<utterance>` for transcripts and replies).
    pub id: String,
    pub text: String,
    /// Fused score (or the single list's score in vector / bm25 mode).
    pub score: f32,
    pub rerank_score: Option<f32>,
    pub vector_rank: Option<usize>,
    pub bm25_rank: Option<usize>,
    pub similarity: Option<f32>,
    pub conversation: String,
    pub speaker: String,
    pub ts_ms: i64,
}

impl From<&RustHit> for Hit {
    fn from(h: &RustHit) -> Self {
        Hit {
            id: h.id.clone(),
            text: h.text.clone(),
            score: h.score,
            rerank_score: h.rerank_score,
            vector_rank: h.vector_rank,
            bm25_rank: h.bm25_rank,
            similarity: h.similarity,
            conversation: h.conversation.clone(),
            speaker: h.speaker.clone(),
            ts_ms: h.ts_ms,
        }
    }
}

#[pymethods]
impl Hit {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("text", &self.text)?;
        d.set_item("score", self.score)?;
        d.set_item("rerank_score", self.rerank_score)?;
        d.set_item("vector_rank", self.vector_rank)?;
        d.set_item("bm25_rank", self.bm25_rank)?;
        d.set_item("similarity", self.similarity)?;
        d.set_item("conversation", &self.conversation)?;
        d.set_item("speaker", &self.speaker)?;
        d.set_item("ts_ms", self.ts_ms)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Hit(id={:?}, score={:.4}, text={:?})",
            self.id, self.score, self.text
        )
    }
}

/// Wall time per stage, in milliseconds.
#[pyclass(module = "voicerag._native", name = "Timings", frozen, get_all)]
#[derive(Clone)]
pub struct Timings {
    pub embed_ms: f64,
    pub search_ms: f64,
    pub rerank_ms: f64,
    /// From receipt to the result's completion.
    pub total_ms: f64,
}

#[pymethods]
impl Timings {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("embed_ms", self.embed_ms)?;
        d.set_item("search_ms", self.search_ms)?;
        d.set_item("rerank_ms", self.rerank_ms)?;
        d.set_item("total_ms", self.total_ms)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Timings(embed_ms={:.3}, search_ms={:.3}, rerank_ms={:.3}, total_ms={:.3})",
            self.embed_ms, self.search_ms, self.rerank_ms, self.total_ms
        )
    }
}

/// The context recalled for one final transcript or one query.
#[pyclass(module = "voicerag._native", name = "ContextResult", frozen)]
pub struct ContextResult {
    #[pyo3(get)]
    pub namespace: String,
    #[pyo3(get)]
    pub conversation: String,
    #[pyo3(get)]
    pub utterance: String,
    #[pyo3(get)]
    pub is_final: bool,
    /// The text that was searched.
    #[pyo3(get)]
    pub text: String,
    /// Read from Python through the `hits` getter (Python objects made on first read).
    pub hits: Vec<Hit>,
    /// Hits within top_k cut by `pipeline.max_context_chars`.
    #[pyo3(get)]
    pub capped: usize,
    /// Hits fewer than top_k because of the relevance floor.
    #[pyo3(get)]
    pub floored: usize,
    /// "off" | "full" | "partial" | "skipped" | "failed".
    #[pyo3(get)]
    pub rerank: String,
    /// Reranked count ("partial") or the reason ("skipped", "failed"), else None.
    #[pyo3(get)]
    pub rerank_detail: Option<String>,
    /// Why the result is degraded ("shed", "embedder down", ...), or None.
    #[pyo3(get)]
    pub degraded: Option<String>,
    #[pyo3(get)]
    pub timings: Timings,
    #[pyo3(get)]
    pub deadline_met: bool,
    /// The `Hit` objects, made once on the first read of `hits` (a result handed to Python costs
    /// one object until its hits are read; reading them twice does not copy them twice).
    pub hit_objects: PyOnceLock<Vec<Py<Hit>>>,
}

impl From<&RustResult> for ContextResult {
    fn from(r: &RustResult) -> Self {
        let detail = match r.rerank.detail() {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        };
        ContextResult {
            namespace: r.namespace.clone(),
            conversation: r.conversation.clone(),
            utterance: r.utterance.clone(),
            is_final: r.is_final,
            text: r.text.clone(),
            hits: r.hits.iter().map(Hit::from).collect(),
            capped: r.capped,
            floored: r.floored,
            rerank: r.rerank.kind().to_string(),
            rerank_detail: detail,
            degraded: r.degraded.clone(),
            timings: Timings {
                embed_ms: ms(r.timings.embed),
                search_ms: ms(r.timings.search),
                rerank_ms: ms(r.timings.rerank),
                total_ms: ms(r.timings.total),
            },
            deadline_met: r.deadline_met(),
            hit_objects: PyOnceLock::new(),
        }
    }
}

#[pymethods]
impl ContextResult {
    /// The recalled memories, best first (a new list each read, of the same `Hit` objects).
    #[getter]
    fn hits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let objects = self.hit_objects.get_or_try_init(py, || {
            self.hits
                .iter()
                .map(|h| Py::new(py, h.clone()))
                .collect::<PyResult<Vec<_>>>()
        })?;
        PyList::new(py, objects.iter().map(|o| o.bind(py)))
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("namespace", &self.namespace)?;
        d.set_item("conversation", &self.conversation)?;
        d.set_item("utterance", &self.utterance)?;
        d.set_item("is_final", self.is_final)?;
        d.set_item("text", &self.text)?;
        let hits = PyList::empty(py);
        for h in &self.hits {
            hits.append(h.to_dict(py)?)?;
        }
        d.set_item("hits", hits)?;
        d.set_item("capped", self.capped)?;
        d.set_item("floored", self.floored)?;
        d.set_item("rerank", &self.rerank)?;
        d.set_item("rerank_detail", &self.rerank_detail)?;
        d.set_item("degraded", &self.degraded)?;
        d.set_item("timings", self.timings.to_dict(py)?)?;
        d.set_item("deadline_met", self.deadline_met)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "ContextResult(namespace={:?}, conversation={:?}, utterance={:?}, hits={}, rerank={:?}, \
             degraded={:?}, deadline_met={}, total_ms={:.3})",
            self.namespace,
            self.conversation,
            self.utterance,
            self.hits.len(),
            self.rerank,
            self.degraded,
            self.deadline_met,
            self.timings.total_ms
        )
    }
}
