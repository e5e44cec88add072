//! `voicerag.BusClient`: the same calls as `Pipeline` (submit, context, reply, query, forget), made
//! to a `voicerag serve` deployment over NATS with wire v2, for agents that do not embed the models.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::StreamExt;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use voicerag::actors::{Memory, memory_id};
use voicerag::bus::wire::{MemoryMsg, QueryMsg, TranscriptMsg, dedupe_id, validate_token};
use voicerag::bus::{Forget, ForgetScope, NatsConfig, Subjects, request_forget};
use voicerag::config::Config;

use crate::bridge::{ToPython, Wrap, spawn};
use crate::errors::{BusError, ConfigError, PipelineClosedError};
use crate::result::{ContextResult, Hit, Timings};
use crate::values::{overrides_as_env, transcript_from};

type Waiters = HashMap<String, VecDeque<oneshot::Sender<Value>>>;

/// One conversation's `voice.context.<namespace>.<conversation>` subscription and its waiters,
/// keyed by utterance. Dropping it ends the subscription: its dispatch task unsubscribes when
/// `stop` is dropped.
struct ContextSubscription {
    waiters: Arc<Mutex<Waiters>>,
    /// When a waiter was last registered: idle subscriptions are closed after `context_idle`.
    last_used: Instant,
    _stop: oneshot::Sender<()>,
}

impl ContextSubscription {
    /// Whether a `context()` call still waits on it (a waiter whose caller went away counts not).
    fn in_use(&self) -> bool {
        lock(&self.waiters)
            .values()
            .any(|queue| queue.iter().any(|tx| !tx.is_closed()))
    }
}

/// How long a conversation's context subscription lives without a `context()` call, and how many
/// conversations keep one at most (the least recently used idle one goes first).
#[derive(Clone, Copy)]
struct SubscriptionLimits {
    idle: Duration,
    max: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A message to publish, in submission order.
enum Outgoing {
    Core {
        subject: String,
        payload: Vec<u8>,
    },
    Memory {
        subject: String,
        msg_id: String,
        payload: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
}

struct BusInner {
    client: async_nats::Client,
    subjects: Subjects,
    nats: NatsConfig,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    contexts: tokio::sync::Mutex<HashMap<(String, String), ContextSubscription>>,
    limits: SubscriptionLimits,
    timeout: Duration,
    closed: AtomicBool,
}

/// A connection to `voicerag serve` over NATS. Connect with `await BusClient.connect(url)`.
#[pyclass(module = "voicerag._native", name = "BusClient", frozen)]
pub struct BusClient {
    inner: Arc<BusInner>,
}

impl ToPython for BusClient {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

fn bus_error(e: impl std::fmt::Display) -> PyErr {
    BusError::new_err(e.to_string())
}

fn token(field: &'static str, value: &str) -> PyResult<()> {
    validate_token(field, value).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn f64_field(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn opt_f32(v: &Value, key: &str) -> Option<f32> {
    v.get(key).and_then(Value::as_f64).map(|x| x as f32)
}

fn opt_usize(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A context or query answer (a `voicerag query --json` line) as a `ContextResult`.
fn result_from_json(v: &Value, text: &str, is_final: bool) -> PyResult<ContextResult> {
    if let Some(error) = v.get("error").and_then(Value::as_str) {
        return Err(PyValueError::new_err(format!(
            "voicerag serve refused the request: {error}"
        )));
    }
    let hits = v
        .get("hits")
        .and_then(Value::as_array)
        .ok_or_else(|| bus_error(format!("the answer has no hits list: {v}")))?
        .iter()
        .map(|h| Hit {
            id: str_field(h, "id"),
            text: str_field(h, "text"),
            score: opt_f32(h, "score").unwrap_or(0.0),
            rerank_score: opt_f32(h, "rerank_score"),
            vector_rank: opt_usize(h, "vector_rank"),
            bm25_rank: opt_usize(h, "bm25_rank"),
            similarity: opt_f32(h, "similarity"),
            conversation: str_field(h, "conversation"),
            speaker: str_field(h, "speaker"),
            ts_ms: h.get("ts_ms").and_then(Value::as_i64).unwrap_or(0),
        })
        .collect();
    let timings = v.get("timings_ms").cloned().unwrap_or(Value::Null);
    Ok(ContextResult {
        namespace: str_field(v, "namespace"),
        conversation: str_field(v, "conversation"),
        utterance: str_field(v, "utterance"),
        is_final,
        text: text.to_string(),
        hits,
        capped: opt_usize(v, "capped").unwrap_or(0),
        floored: opt_usize(v, "floored").unwrap_or(0),
        rerank: str_field(v, "rerank"),
        rerank_detail: match v.get("rerank_detail") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        },
        degraded: v
            .get("degraded")
            .and_then(Value::as_str)
            .map(str::to_string),
        timings: Timings {
            embed_ms: f64_field(&timings, "embed"),
            search_ms: f64_field(&timings, "search"),
            rerank_ms: f64_field(&timings, "rerank"),
            total_ms: f64_field(&timings, "total"),
        },
        deadline_met: v
            .get("deadline_met")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        hit_objects: pyo3::sync::PyOnceLock::new(),
    })
}

/// Publishes in order: a conversation's partials and final must reach voicerag in order.
async fn publisher(
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Core { subject, payload } => {
                // Core NATS is at-most-once: a transcript nobody hears gets no context, and the
                // caller's `context()` times out and carries on without memories.
                let _ = client.publish(subject, payload.into()).await;
            }
            Outgoing::Memory {
                subject,
                msg_id,
                payload,
                done,
            } => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id.as_str());
                let acked = match jetstream
                    .publish_with_headers(subject, headers, payload.into())
                    .await
                {
                    Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = done.send(acked);
            }
        }
    }
}

/// Closes least recently used idle subscriptions until a new one fits under `max`. Subscriptions
/// with a waiter are never closed, so while more than `max` conversations await a context at once
/// the count exceeds `max` until their answers (or timeouts) come.
fn make_room(contexts: &mut HashMap<(String, String), ContextSubscription>, max: usize) {
    while contexts.len() >= max {
        let oldest_idle = contexts
            .iter()
            .filter(|(_, sub)| !sub.in_use())
            .min_by_key(|(_, sub)| sub.last_used)
            .map(|(key, _)| key.clone());
        match oldest_idle {
            Some(key) => drop(contexts.remove(&key)),
            None => break,
        }
    }
}

/// Hands each final context on the conversation's subscription to the waiter of its utterance;
/// unsubscribes when the subscription is closed (`stopped` fires or its sender is dropped).
async fn dispatch_contexts(
    mut sub: async_nats::Subscriber,
    waiters: Arc<Mutex<Waiters>>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
            _ = &mut stopped => {
                let _ = sub.unsubscribe().await;
                return;
            }
        };
        let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) else {
            continue;
        };
        if v.get("final").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let utt = str_field(&v, "utterance");
        let sender = {
            let mut map = lock(&waiters);
            let s = map.get_mut(&utt).and_then(VecDeque::pop_front);
            if map.get(&utt).is_some_and(VecDeque::is_empty) {
                map.remove(&utt);
            }
            s
        };
        if let Some(tx) = sender {
            let _ = tx.send(v);
        }
    }
}

/// Closes idle context subscriptions every half idle period, for as long as the client lives.
async fn close_idle_subscriptions(inner: Weak<BusInner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::SeqCst) {
            inner.contexts.lock().await.clear();
            return;
        }
        inner.close_idle().await;
    }
}

impl BusInner {
    fn open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(PipelineClosedError::new_err(
                "the bus client has been closed",
            ));
        }
        Ok(())
    }

    /// Subscribes to the conversation's contexts (once while in use) and registers a waiter for
    /// `utterance`.
    async fn wait_for(
        &self,
        namespace: &str,
        conversation: &str,
        utterance: &str,
    ) -> PyResult<oneshot::Receiver<Value>> {
        let mut contexts = self.contexts.lock().await;
        let key = (namespace.to_string(), conversation.to_string());
        if !contexts.contains_key(&key) {
            make_room(&mut contexts, self.limits.max);
            let sub = self
                .client
                .subscribe(self.subjects.context(namespace, conversation))
                .await
                .map_err(bus_error)?;
            // The SUB must reach the server before the final is published on this connection.
            self.client.flush().await.map_err(bus_error)?;
            let waiters: Arc<Mutex<Waiters>> = Arc::default();
            let (stop, stopped) = oneshot::channel();
            tokio::spawn(dispatch_contexts(sub, Arc::clone(&waiters), stopped));
            contexts.insert(
                key.clone(),
                ContextSubscription {
                    waiters,
                    last_used: Instant::now(),
                    _stop: stop,
                },
            );
        }
        let (tx, rx) = oneshot::channel();
        if let Some(sub) = contexts.get_mut(&key) {
            sub.last_used = Instant::now();
            lock(&sub.waiters)
                .entry(utterance.to_string())
                .or_default()
                .push_back(tx);
        }
        Ok(rx)
    }

    /// Closes the subscriptions of conversations without a `context()` call for `idle`.
    async fn close_idle(&self) {
        let idle = self.limits.idle;
        let now = Instant::now();
        self.contexts
            .lock()
            .await
            .retain(|_, sub| now.duration_since(sub.last_used) < idle || sub.in_use());
    }

    /// Drops the waiters of an utterance whose context never came (timed out).
    async fn forget_waiter(&self, namespace: &str, conversation: &str, utterance: &str) {
        let contexts = self.contexts.lock().await;
        if let Some(sub) = contexts.get(&(namespace.to_string(), conversation.to_string())) {
            let mut map = lock(&sub.waiters);
            if let Some(queue) = map.get_mut(utterance) {
                queue.retain(|tx| !tx.is_closed());
                if queue.is_empty() {
                    map.remove(utterance);
                }
            }
        }
    }

    fn publish_transcript(&self, t: &voicerag::actors::Transcript) -> PyResult<()> {
        token("namespace", &t.namespace)?;
        token("conversation", &t.conversation)?;
        if t.utterance.is_empty() {
            return Err(PyValueError::new_err("utterance is empty"));
        }
        let msg = TranscriptMsg {
            v: 2,
            namespace: None,
            conversation: None,
            utterance: t.utterance.clone(),
            speaker: Some(t.speaker.clone()),
            text: t.text.clone(),
            is_final: t.is_final,
            ts: None,
        };
        let payload = serde_json::to_vec(&msg).map_err(bus_error)?;
        self.outgoing
            .send(Outgoing::Core {
                subject: self.subjects.transcript(&t.namespace, &t.conversation),
                payload,
            })
            .map_err(|_| PipelineClosedError::new_err("the bus client has been closed"))
    }
}

#[pymethods]
impl BusClient {
    /// Connects to NATS (`url`, comma-separated for several servers) with the `[nats]` settings of
    /// the configuration (auth, TLS, subject prefix), overridable like `Pipeline.start`'s.
    /// `timeout_ms` bounds `context()` and `query()` (voicerag answers by its own deadline; this
    /// guards against a deployment that is down). A conversation's context subscription is closed
    /// after `context_idle_ms` without a `context()` call, and at most `max_conversations` keep one
    /// (the least recently used idle one is closed first), so a long-lived agent does not keep
    /// every conversation it ever served.
    #[staticmethod]
    #[pyo3(signature = (url, config=None, timeout_ms=1000, context_idle_ms=60_000, max_conversations=1024, **overrides))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn connect<'py>(
        py: Python<'py>,
        url: &str,
        config: Option<PathBuf>,
        timeout_ms: u64,
        context_idle_ms: u64,
        max_conversations: usize,
        overrides: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        env.extend(overrides_as_env(overrides)?);
        let config = Config::load(config.as_deref(), env)
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        let mut nats = config.nats.clone();
        nats.urls = url.split(',').map(|s| s.trim().to_string()).collect();
        if timeout_ms == 0 {
            return Err(PyValueError::new_err("timeout_ms must be > 0"));
        }
        if context_idle_ms == 0 {
            return Err(PyValueError::new_err("context_idle_ms must be > 0"));
        }
        if max_conversations == 0 {
            return Err(PyValueError::new_err("max_conversations must be > 0"));
        }
        let limits = SubscriptionLimits {
            idle: Duration::from_millis(context_idle_ms),
            max: max_conversations,
        };
        spawn(py, async move {
            nats.validate()
                .map_err(|e| ConfigError::new_err(e.to_string()))?;
            let client = nats
                .connect_options()
                .await
                .map_err(bus_error)?
                .connect(nats.urls.clone())
                .await
                .map_err(|e| {
                    bus_error(format!(
                        "cannot connect to NATS at {}: {e}",
                        nats.urls.join(",")
                    ))
                })?;
            // The deployment's options retry the first connection in the background (a server
            // restart must not end a service); an agent wants to know now that nobody is there.
            let connect_by = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
            while client.connection_state() != async_nats::connection::State::Connected {
                if tokio::time::Instant::now() >= connect_by {
                    return Err(bus_error(format!(
                        "cannot connect to NATS at {}: not connected within {timeout_ms} ms",
                        nats.urls.join(",")
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(publisher(
                client.clone(),
                async_nats::jetstream::new(client.clone()),
                rx,
            ));
            let inner = Arc::new(BusInner {
                subjects: Subjects::new(&nats.subject_prefix),
                client,
                nats,
                outgoing: tx,
                contexts: tokio::sync::Mutex::new(HashMap::new()),
                limits,
                timeout: Duration::from_millis(timeout_ms),
                closed: AtomicBool::new(false),
            });
            let every = (limits.idle / 2).max(Duration::from_millis(10));
            tokio::spawn(close_idle_subscriptions(Arc::downgrade(&inner), every));
            Ok(BusClient { inner })
        })
    }

    /// Publishes a transcript on `voice.transcript.<namespace>.<conversation>`; never blocks.
    fn submit(&self, transcript: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.open()?;
        let t = transcript_from(transcript)?;
        self.inner.publish_transcript(&t)
    }

    /// Publishes a final and returns its context from `voice.context.<namespace>.<conversation>`.
    fn context<'py>(
        &self,
        py: Python<'py>,
        transcript: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.inner.open()?;
        let t = transcript_from(transcript)?;
        if !t.is_final {
            return Err(PyValueError::new_err(
                "context() serves a final transcript (is_final=True); submit() partials",
            ));
        }
        token("namespace", &t.namespace)?;
        token("conversation", &t.conversation)?;
        let inner = Arc::clone(&self.inner);
        spawn(py, async move {
            let rx = inner
                .wait_for(&t.namespace, &t.conversation, &t.utterance)
                .await?;
            inner.publish_transcript(&t)?;
            let answer = tokio::time::timeout(inner.timeout, rx).await;
            if answer.is_err() {
                inner
                    .forget_waiter(&t.namespace, &t.conversation, &t.utterance)
                    .await;
            }
            let v = answer
                .map_err(|_| {
                    bus_error(format!(
                        "no context for {} within {:?}: is voicerag serve running?",
                        memory_id(&t.conversation, &t.utterance),
                        inner.timeout
                    ))
                })?
                .map_err(|_| bus_error("the context subscription ended"))?;
            result_from_json(&v, &t.text, true).map(Wrap)
        })
    }

    /// Remembers what the agent said through the memory stream (`voice.memory.<namespace>.
    /// <conversation>`, deduplicated by id); returns an awaitable that completes on the stream's ack.
    #[pyo3(signature = (text, *, namespace, conversation, utterance))]
    fn reply<'py>(
        &self,
        py: Python<'py>,
        text: String,
        namespace: String,
        conversation: String,
        utterance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.inner.open()?;
        token("namespace", &namespace)?;
        token("conversation", &conversation)?;
        if utterance.is_empty() {
            return Err(PyValueError::new_err("utterance is empty"));
        }
        let memory = Memory {
            id: memory_id(&conversation, &utterance),
            namespace: namespace.clone(),
            conversation: conversation.clone(),
            speaker: "agent".into(),
            text,
            ts_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            supersedes: Vec::new(),
            expires_at_ms: None,
        };
        let payload = serde_json::to_vec(&MemoryMsg::from_memory(&memory)).map_err(bus_error)?;
        let (done, acked) = oneshot::channel();
        self.inner
            .outgoing
            .send(Outgoing::Memory {
                subject: self.inner.subjects.memory(&namespace, &conversation),
                msg_id: dedupe_id(&namespace, &memory.id),
                payload,
                done,
            })
            .map_err(|_| PipelineClosedError::new_err("the bus client has been closed"))?;
        spawn(py, async move {
            acked
                .await
                .map_err(|_| bus_error("the bus client stopped before the memory was acked"))?
                .map_err(|e| bus_error(format!("the memory stream did not ack the reply: {e}")))
        })
    }

    /// A one-off search on `voice.query.<namespace>` (awaitable).
    #[pyo3(signature = (text, *, namespace, top_k=None, conversation=None, mode=None))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        text: String,
        namespace: String,
        top_k: Option<usize>,
        conversation: Option<String>,
        mode: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.inner.open()?;
        token("namespace", &namespace)?;
        let msg = QueryMsg {
            v: 2,
            id: None,
            text: text.clone(),
            top_k,
            namespace: None,
            conversation,
            mode,
            include_superseded: None,
            time_zone: None,
            time_windows: None,
        };
        let payload = serde_json::to_vec(&msg).map_err(bus_error)?;
        let inner = Arc::clone(&self.inner);
        spawn(py, async move {
            let subject = inner.subjects.query(&namespace);
            let reply = tokio::time::timeout(
                inner.timeout,
                inner.client.request(subject.clone(), payload.into()),
            )
            .await
            .map_err(|_| bus_error(format!("no answer on {subject} within {:?}", inner.timeout)))?
            .map_err(|e| bus_error(format!("{subject}: {e}")))?;
            let v: Value = serde_json::from_slice(&reply.payload)
                .map_err(|e| bus_error(format!("{subject}: the answer is not JSON: {e}")))?;
            result_from_json(&v, &text, true).map(Wrap)
        })
    }

    /// Forgets a memory, a conversation or a namespace in every replica (`voice.forget`);
    /// returns the reply as a dict (awaitable).
    #[pyo3(signature = (*, namespace, id=None, conversation=None))]
    fn forget<'py>(
        &self,
        py: Python<'py>,
        namespace: String,
        id: Option<String>,
        conversation: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.inner.open()?;
        token("namespace", &namespace)?;
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
        let nats = self.inner.nats.clone();
        spawn(py, async move {
            let reply = request_forget(&nats, &Forget { namespace, scope })
                .await
                .map_err(bus_error)?;
            if let Some(error) = reply.get("error").and_then(Value::as_str) {
                return Err(bus_error(format!("forget refused: {error}")));
            }
            Ok(reply)
        })
    }

    /// The `voice.health` answer of one replica, as a dict (awaitable).
    fn health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner.open()?;
        let inner = Arc::clone(&self.inner);
        spawn(py, async move {
            let subject = format!("{}.health", inner.subjects.prefix());
            let reply = tokio::time::timeout(
                inner.timeout,
                inner.client.request(subject.clone(), "".into()),
            )
            .await
            .map_err(|_| bus_error(format!("no answer on {subject} within {:?}", inner.timeout)))?
            .map_err(|e| bus_error(format!("{subject}: {e}")))?;
            serde_json::from_slice::<Value>(&reply.payload)
                .map_err(|e| bus_error(format!("{subject}: the answer is not JSON: {e}")))
        })
    }

    /// Flushes what was published and closes the connection (awaitable, idempotent).
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = Arc::clone(&self.inner);
        spawn(py, async move {
            if !inner.closed.swap(true, Ordering::SeqCst) {
                inner.contexts.lock().await.clear();
                inner.client.flush().await.map_err(bus_error)?;
            }
            Ok(())
        })
    }
}
