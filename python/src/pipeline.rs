//! `voicerag.Pipeline`: the in-process pipeline (models, memory store, supervised actors) for an
//! asyncio program. Every call that waits is an awaitable served on the tokio runtime.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::Mutex as AsyncMutex;

use voicerag::actors::{
    AgentReply, Memory, PipelineHandle, QueryRequest, SearchFilter, SearchMode, Transcript,
};
use voicerag::bus::{Forget, ForgetScope, MemorySink};
use voicerag::config::Config;
use voicerag::engines::{Engines, StoreAccess, StoreWriter};
use voicerag::store::StoreClosed;

use crate::bridge::{ToPython, Wrap, runtime, spawn, spawn_on_loop};
use crate::errors::{ConfigError, PipelineClosedError, VoiceragError, guard, pipeline_error};
use crate::finals::FinalWaiters;
use crate::result::ContextResult;
use crate::values::{json_to_python, overrides_as_env, transcript_from};

struct Running {
    /// `None` after shutdown: dropping it lets the stages, and with them the store (its LMDB lock,
    /// its background threads), go, so the data directory can be opened again.
    handle: Mutex<Option<PipelineHandle>>,
    /// Direct, durable writes (`remember`) and deletes (`forget`); `None` after shutdown.
    store: Mutex<Option<Arc<StoreWriter>>>,
    finals: Arc<FinalWaiters>,
    closed: AtomicBool,
    /// Whether the store is closed: the last stage or request to let go of it may be a task
    /// still finishing on another thread when the pipeline's shutdown returns, and the store's
    /// drop then joins its threads before it releases the data directory.
    store_closed: StoreClosed,
    /// How long `shutdown()` waits for the store to close (`pipeline.shutdown_timeout_ms`).
    close_timeout: Duration,
}

/// A running in-process pipeline. Start it with `await Pipeline.start(...)`.
#[pyclass(module = "voicerag._native", name = "Pipeline", frozen)]
pub struct Pipeline {
    inner: Arc<Running>,
}

impl ToPython for Pipeline {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

/// Waits until the last holder of the store has let it go (its threads joined, its lock file
/// released), so the data directory can be opened again as soon as `shutdown()` returns.
async fn wait_closed(store: &StoreClosed, timeout: Duration) -> PyResult<()> {
    let until = Instant::now() + timeout;
    while !store.is_closed() {
        if Instant::now() >= until {
            return Err(VoiceragError::new_err(format!(
                "shutdown: the memory store is still in use after {} ms; its data directory \
                 stays locked until it is released",
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn load_config(path: Option<PathBuf>, overrides: Option<&Bound<'_, PyDict>>) -> PyResult<Config> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.extend(overrides_as_env(overrides)?);
    let config =
        Config::load(path.as_deref(), env).map_err(|e| ConfigError::new_err(e.to_string()))?;
    config
        .check_files()
        .map_err(|e| ConfigError::new_err(e.to_string()))?;
    Ok(config)
}

fn parse_mode(mode: Option<&str>) -> PyResult<Option<SearchMode>> {
    mode.map(|m| m.parse::<SearchMode>().map_err(PyValueError::new_err))
        .transpose()
}

fn budget(budget_ms: Option<f64>) -> PyResult<Option<Duration>> {
    match budget_ms {
        None => Ok(None),
        Some(ms) if ms.is_finite() && ms > 0.0 => Ok(Some(Duration::from_secs_f64(ms / 1000.0))),
        Some(ms) => Err(PyValueError::new_err(format!(
            "budget_ms must be a positive number, not {ms}"
        ))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data stays valid if a panic poisoned the lock (panics are caught at the boundary).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Running {
    fn open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(PipelineClosedError::new_err(
                "the pipeline has been shut down",
            ));
        }
        Ok(())
    }

    fn handle(&self) -> PyResult<PipelineHandle> {
        lock(&self.handle)
            .clone()
            .ok_or_else(|| PipelineClosedError::new_err("the pipeline has been shut down"))
    }

    fn store(&self) -> PyResult<Arc<StoreWriter>> {
        self.open()?;
        lock(&self.store)
            .clone()
            .ok_or_else(|| PipelineClosedError::new_err("the pipeline has been shut down"))
    }

    /// Submits a final and waits for its result.
    async fn context(self: Arc<Self>, t: Transcript) -> PyResult<ContextResult> {
        let handle = self.handle()?;
        let rx = self
            .finals
            .wait_for(&handle, &t.namespace, &t.conversation, &t.utterance);
        let (ns, conv, utt) = (
            t.namespace.clone(),
            t.conversation.clone(),
            t.utterance.clone(),
        );
        if let Err(e) = handle.submit(t) {
            self.finals.cancel(&ns, &conv, &utt);
            return Err(pipeline_error(e));
        }
        rx.await
            .map(|r| ContextResult::from(&r))
            .map_err(|_| PipelineClosedError::new_err("the pipeline stopped before the result"))
    }
}

#[pymethods]
impl Pipeline {
    /// Loads the models, opens the memory store and starts the pipeline (awaitable).
    #[staticmethod]
    #[pyo3(signature = (config=None, **overrides))]
    fn start<'py>(
        py: Python<'py>,
        config: Option<PathBuf>,
        overrides: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let config = load_config(config, overrides)?;
        spawn(py, async move {
            let loaded = config.clone();
            let engines = tokio::task::spawn_blocking(move || {
                Engines::load(&loaded, StoreAccess::ReadWrite, true)
            })
            .await
            .map_err(|e| VoiceragError::new_err(format!("loading the engines failed: {e}")))?
            .map_err(|e| VoiceragError::new_err(e.to_string()))?;
            let writer = engines.store_writer();
            let store_closed = engines.store.closed_signal();
            let close_timeout = config.pipeline.shutdown_timeout();
            let handle = engines
                .start(&config, writer.clone())
                .await
                .map_err(|e| VoiceragError::new_err(e.to_string()))?;
            Ok(Pipeline {
                inner: Arc::new(Running {
                    handle: Mutex::new(Some(handle)),
                    store: Mutex::new(Some(writer)),
                    finals: Arc::default(),
                    closed: AtomicBool::new(false),
                    store_closed,
                    close_timeout,
                }),
            })
        })
    }

    /// Queues a transcript (partial or final); never blocks. Its result, for a final, arrives on
    /// `results()`; use `context()` to await it instead.
    fn submit(&self, py: Python<'_>, transcript: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(|| {
            let t = transcript_from(transcript)?;
            let _rt = runtime()?.enter();
            let handle = self.inner.handle()?;
            py.detach(|| handle.submit(t)).map_err(pipeline_error)
        })
    }

    /// Submits a final transcript and returns its result (awaitable).
    fn context<'py>(
        &self,
        py: Python<'py>,
        transcript: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = transcript_from(transcript)?;
        if !t.is_final {
            return Err(PyValueError::new_err(
                "context() serves a final transcript (is_final=True); submit() partials",
            ));
        }
        self.inner.open()?;
        let inner = Arc::clone(&self.inner);
        spawn_on_loop(py, async move { inner.context(t).await.map(Wrap) })
    }

    /// Remembers what the agent said (speaker "agent"), once per utterance id; never blocks.
    #[pyo3(signature = (text, *, namespace, conversation, utterance))]
    fn reply(
        &self,
        py: Python<'_>,
        text: String,
        namespace: String,
        conversation: String,
        utterance: String,
    ) -> PyResult<()> {
        guard(|| {
            let _rt = runtime()?.enter();
            let handle = self.inner.handle()?;
            py.detach(|| {
                handle.reply(AgentReply {
                    namespace,
                    conversation,
                    utterance,
                    text,
                })
            })
            .map_err(pipeline_error)
        })
    }

    /// The results of finals (and of partials with `pipeline.emit_partials`), as an async
    /// iterator that ends after shutdown.
    fn results(&self) -> PyResult<ResultStream> {
        guard(|| {
            let _rt = runtime()?.enter();
            Ok(ResultStream {
                stream: Arc::new(AsyncMutex::new(self.inner.handle()?.results())),
            })
        })
    }

    /// A one-off search, served like a final but never remembered (awaitable).
    #[pyo3(signature = (text, *, namespace, top_k=None, conversation=None, mode=None, budget_ms=None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per query field
    fn query<'py>(
        &self,
        py: Python<'py>,
        text: String,
        namespace: String,
        top_k: Option<usize>,
        conversation: Option<String>,
        mode: Option<&str>,
        budget_ms: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = QueryRequest {
            namespace,
            conversation: conversation.clone(),
            text,
            top_k,
            mode: parse_mode(mode)?,
            budget: budget(budget_ms)?,
            filter: SearchFilter {
                conversation,
                ..SearchFilter::default()
            },
        };
        let handle = self.inner.handle()?;
        spawn_on_loop(py, async move {
            handle
                .query(request)
                .await
                .map(|r| Wrap(ContextResult::from(&r)))
                .map_err(pipeline_error)
        })
    }

    /// Stores a memory durably: returns once it is committed (awaitable). Re-adding an id is a
    /// no-op. Raises ValueError when the memory can never be stored (empty or oversized text).
    #[pyo3(signature = (text, *, namespace, id, conversation="", speaker="user", ts_ms=None))]
    #[allow(clippy::too_many_arguments)]
    fn remember<'py>(
        &self,
        py: Python<'py>,
        text: String,
        namespace: String,
        id: String,
        conversation: &str,
        speaker: &str,
        ts_ms: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        for (name, value) in [("namespace", &namespace), ("id", &id)] {
            if value.is_empty() {
                return Err(PyValueError::new_err(format!("{name} is empty")));
            }
        }
        let store = self.inner.store()?;
        let memory = Memory {
            id,
            namespace,
            conversation: conversation.to_string(),
            speaker: speaker.to_string(),
            text,
            ts_ms: ts_ms.unwrap_or_else(now_ms),
            supersedes: Vec::new(),
            expires_at_ms: None,
        };
        spawn(py, async move {
            let refused = tokio::task::spawn_blocking(move || store.commit(&[memory]))
                .await
                .map_err(|e| VoiceragError::new_err(format!("remember failed: {e}")))?
                .map_err(VoiceragError::new_err)?;
            match refused.first() {
                Some(r) => Err(PyValueError::new_err(format!(
                    "memory refused: {}",
                    r.reason
                ))),
                None => Ok(()),
            }
        })
    }

    /// Forgets one memory (`id`), a conversation, or the whole namespace; returns how many
    /// memories were removed (awaitable).
    #[pyo3(signature = (*, namespace, id=None, conversation=None))]
    fn forget<'py>(
        &self,
        py: Python<'py>,
        namespace: String,
        id: Option<String>,
        conversation: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if namespace.is_empty() {
            return Err(PyValueError::new_err("namespace is empty"));
        }
        let scope = match (id, conversation) {
            (Some(_), Some(_)) => {
                return Err(PyTypeError::new_err(
                    "forget takes id or conversation, not both",
                ));
            }
            (Some(id), None) => ForgetScope::Id(id),
            (None, Some(c)) => ForgetScope::Conversation(c),
            (None, None) => ForgetScope::Namespace,
        };
        let store = self.inner.store()?;
        let forget = Forget { namespace, scope };
        spawn(py, async move {
            tokio::task::spawn_blocking(move || store.forget(&forget))
                .await
                .map_err(|e| VoiceragError::new_err(format!("forget failed: {e}")))?
                .map_err(|e| VoiceragError::new_err(e.0))
        })
    }

    /// Stage states, counters and latency, as a dict.
    fn health(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let handle = self.inner.handle()?;
            let health = py.detach(|| serde_json::to_value(handle.health()));
            let value = health.map_err(|e| VoiceragError::new_err(e.to_string()))?;
            json_to_python(py, &value)
        })
    }

    /// Serves everything queued, writes every pending memory and stops (awaitable, idempotent).
    fn shutdown<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = Arc::clone(&self.inner);
        let handle = lock(&inner.handle).clone();
        spawn(py, async move {
            let Some(handle) = handle else {
                return Ok(()); // already shut down
            };
            let outcome = handle.shutdown().await;
            inner.closed.store(true, Ordering::SeqCst);
            lock(&inner.store).take();
            lock(&inner.handle).take();
            drop(handle);
            wait_closed(&inner.store_closed, inner.close_timeout).await?;
            outcome.map_err(pipeline_error)
        })
    }

    /// Whether `shutdown()` has completed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Benchmark support: serves `n` queries (kind "query") or finals (kind "final", each a new
    /// utterance of `conversation`) from Rust, cycling through `texts`, and returns each one's
    /// latency in microseconds as measured in Rust around the same call Python makes.
    /// `pause_ms` sleeps between calls (an agent that calls now and then, so the runtime's
    /// threads go idle between calls, as they do between Python's calls); with `stages`, each
    /// entry is `(latency_us, embed_ms, search_ms, rerank_ms, total_ms)` of that call.
    #[pyo3(signature = (kind, texts, namespace, conversation, n, *, pause_ms=0.0, stages=false))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn _bench_rust<'py>(
        &self,
        py: Python<'py>,
        kind: String,
        texts: Vec<String>,
        namespace: String,
        conversation: String,
        n: usize,
        pause_ms: f64,
        stages: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if texts.is_empty() || !(kind == "query" || kind == "final") {
            return Err(PyValueError::new_err(
                "_bench_rust needs kind \"query\" or \"final\" and at least one text",
            ));
        }
        if !(pause_ms.is_finite() && pause_ms >= 0.0) {
            return Err(PyValueError::new_err("pause_ms must be >= 0"));
        }
        let pause = Duration::from_secs_f64(pause_ms / 1000.0);
        let inner = Arc::clone(&self.inner);
        spawn(py, async move {
            let mut latencies = Vec::with_capacity(n);
            let mut per_stage = Vec::with_capacity(if stages { n } else { 0 });
            for i in 0..n {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let text = texts[i % texts.len()].clone();
                let started = Instant::now();
                // (embed, search, rerank, total) in ms; the query's result is not converted to
                // Python's type, as before, so the baseline is unchanged.
                let timings = if kind == "query" {
                    let q = QueryRequest {
                        namespace: namespace.clone(),
                        text,
                        ..QueryRequest::default()
                    };
                    let r = inner.handle()?.query(q).await.map_err(pipeline_error)?;
                    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                    let t = &r.timings;
                    [ms(t.embed), ms(t.search), ms(t.rerank), ms(t.total)]
                } else {
                    let t = Transcript {
                        namespace: namespace.clone(),
                        conversation: conversation.clone(),
                        utterance: format!("rust-bench-{i}"),
                        speaker: "user".into(),
                        text,
                        is_final: true,
                        received_at: started,
                    };
                    let t = Arc::clone(&inner).context(t).await?.timings;
                    [t.embed_ms, t.search_ms, t.rerank_ms, t.total_ms]
                };
                let micros = started.elapsed().as_secs_f64() * 1e6;
                latencies.push(micros);
                if stages {
                    per_stage.push(vec![micros, timings[0], timings[1], timings[2], timings[3]]);
                }
            }
            Ok(BenchOutcome(if stages {
                BenchRows::Stages(per_stage)
            } else {
                BenchRows::Latencies(latencies)
            }))
        })
    }

    fn __repr__(&self) -> String {
        format!("Pipeline(closed={})", self.closed())
    }
}

/// What `_bench_rust` returns: latencies alone, or rows with each call's stage timings.
enum BenchRows {
    Latencies(Vec<f64>),
    Stages(Vec<Vec<f64>>),
}

struct BenchOutcome(BenchRows);

impl ToPython for BenchOutcome {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.0 {
            BenchRows::Latencies(v) => v.to_python(py),
            BenchRows::Stages(rows) => Ok(rows.into_pyobject(py)?.into_any().unbind()),
        }
    }
}

/// An async iterator of `ContextResult`s (`async for r in pipeline.results()`).
#[pyclass(module = "voicerag._native", name = "ResultStream", frozen)]
pub struct ResultStream {
    stream: Arc<AsyncMutex<voicerag::actors::ResultStream>>,
}

/// The end of a results stream, raised as `StopAsyncIteration` by `__anext__`.
struct StreamItem(Option<ContextResult>);

impl ToPython for StreamItem {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.0 {
            Some(r) => Ok(Py::new(py, r)?.into_any()),
            None => Err(pyo3::exceptions::PyStopAsyncIteration::new_err(())),
        }
    }
}

#[pymethods]
impl ResultStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = Arc::clone(&self.stream);
        spawn(py, async move {
            let next = stream.lock().await.next().await;
            Ok(StreamItem(next.as_ref().map(ContextResult::from)))
        })
    }
}
