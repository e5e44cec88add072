//! Rust futures as asyncio futures: the work runs on voicerag's tokio runtime, with the GIL
//! released, and the loop never blocks and no Python thread waits on Rust.
//!
//! Hand-off: a finished future never takes the GIL on its tokio thread. It puts its outcome in the
//! loop's [`Inbox`] and, only if the inbox was empty, writes one byte to a socket the loop watches
//! (`add_reader`). The loop, woken like any I/O, drains the inbox in one callback: converts the
//! values to Python objects and completes the futures. This costs one wake-up per batch and no
//! GIL hand-over between threads (taking the GIL on a tokio thread, as `call_soon_threadsafe`
//! needs, wakes the loop only to make it wait for the GIL). A loop that cannot watch a socket or
//! hold the inbox (no `add_reader`, no instance attributes) gets `call_soon_threadsafe`.
//!
//! Two ways to run a future: [`spawn`] makes it a tokio task (any work); [`spawn_on_loop`] has
//! the loop's thread poll it, GIL released, first inside the call and then each time it is woken
//! (through the same inbox), for calls that hand a request to the pipeline and wait for the reply
//! (`query`, `context`): no tokio task is woken to start them or to pass their result on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};

use futures::FutureExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::errors::panic_error;
use crate::trace;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The loop attribute holding its [`LoopInbox`].
const INBOX_ATTR: &str = "_voicerag_inbox";

/// The process's tokio runtime for every pipeline and bus client (started on first use).
pub fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("voicerag-tokio")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))?;
    // Two threads may race here: the loser's runtime is dropped unused.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// A value a finished Rust future hands to Python (converted on the event loop's thread, which
/// holds the GIL already).
pub trait ToPython: Send + 'static {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>>;
}

impl ToPython for () {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py.None())
    }
}

impl ToPython for u64 {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.into_pyobject(py)?.into_any().unbind())
    }
}

impl ToPython for Vec<f64> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.into_pyobject(py)?.into_any().unbind())
    }
}

impl ToPython for serde_json::Value {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::values::json_to_python(py, &self)
    }
}

impl<T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>> + Send + 'static> ToPython for Wrap<T> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self.0)?.into_any())
    }
}

/// A pyclass value returned from a future.
pub struct Wrap<T>(pub T);

type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// How a future ended: its value, still to be converted to Python, or its exception.
enum Outcome {
    Value(Convert),
    Error(PyErr),
}

/// A finished future's outcome on its way to the asyncio future awaiting it.
struct Completion {
    future: Py<PyAny>,
    outcome: Outcome,
    #[cfg_attr(not(feature = "latency-trace"), allow(dead_code))]
    call: u64,
}

impl Completion {
    /// Completes the asyncio future (on its loop's thread), unless it was cancelled meanwhile:
    /// the caller stopped waiting, and the work itself (a memory written, a query served) is done.
    fn resolve(self, py: Python<'_>) {
        let future = self.future.bind(py);
        trace::mark(self.call, "loop: resolving");
        match future.call_method0("done").and_then(|d| d.is_truthy()) {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => return e.write_unraisable(py, Some(future)),
        }
        let converted = match self.outcome {
            // A panic while converting must neither abort Python nor strand the other futures of
            // the batch: it becomes this future's exception.
            Outcome::Value(convert) => std::panic::catch_unwind(AssertUnwindSafe(|| convert(py)))
                .unwrap_or_else(|p| Err(panic_error(p))),
            Outcome::Error(e) => Err(e),
        };
        trace::mark(self.call, "loop: converted");
        let done = match converted {
            Ok(value) => future.call_method1("set_result", (value,)),
            Err(e) => future.call_method1("set_exception", (e.into_value(py),)),
        };
        if let Err(e) = done {
            e.write_unraisable(py, Some(future));
        }
        trace::mark(self.call, "loop: resolved");
    }
}

/// What the loop finds in its inbox: a finished future's outcome, or a loop-polled future that
/// was woken and must be polled again.
enum Entry {
    Done(Completion),
    Woken(Arc<LoopTask>),
}

/// Completions waiting for one loop, and the socket that wakes it.
struct Inbox {
    /// The entries, and whether a wake-up byte is on its way since the loop last drained.
    pending: Mutex<(Vec<Entry>, bool)>,
    #[cfg(unix)]
    bell: std::os::unix::net::UnixStream,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Entry>, bool)> {
        // Only pushes and takes happen under the lock: the queue stays valid even if poisoned.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an entry; wakes the loop unless a wake-up is already on its way (no GIL).
    fn deliver(&self, entry: Entry) {
        let ring = {
            let mut pending = self.lock();
            pending.0.push(entry);
            !std::mem::replace(&mut pending.1, true)
        };
        if ring {
            #[cfg(unix)]
            {
                use std::io::Write;
                // WouldBlock means the socket holds unread bytes already: the loop will wake.
                let _ = (&self.bell).write(&[1]);
            }
        }
    }
}

/// The [`Inbox`] of one event loop, kept on the loop (attribute `_voicerag_inbox`) so it lives
/// exactly as long as the loop and is found with one attribute lookup.
#[pyclass(module = "voicerag._native", name = "_LoopInbox", frozen)]
struct LoopInbox {
    inbox: Arc<Inbox>,
    #[cfg(unix)]
    reader: std::os::unix::net::UnixStream,
}

#[pymethods]
impl LoopInbox {
    /// The loop's reader callback: completes every queued future.
    fn _drain(&self, py: Python<'_>) {
        #[cfg(unix)]
        {
            use std::io::Read;
            // Read the wake-up bytes before taking the queue: a completion queued after the take
            // rings again, so none waits for a wake-up that was already consumed.
            let mut buf = [0u8; 64];
            loop {
                match (&self.reader).read(&mut buf) {
                    Ok(n) if n > 0 => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
        }
        let batch = {
            let mut pending = self.inbox.lock();
            pending.1 = false;
            std::mem::take(&mut pending.0)
        };
        for entry in batch {
            match entry {
                Entry::Done(c) => c.resolve(py),
                Entry::Woken(task) => task.poll_on_loop(py),
            }
        }
    }
}

/// A completion handed over with `call_soon_threadsafe` (loops without an inbox).
#[pyclass(module = "voicerag._native", name = "_Completion", frozen)]
struct ThreadsafeCompletion(Mutex<Option<Completion>>);

#[pymethods]
impl ThreadsafeCompletion {
    fn __call__(&self, py: Python<'_>) {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = taken {
            c.resolve(py);
        }
    }
}

/// Where a future's completion goes.
enum Target {
    Inbox(Arc<Inbox>),
    Threadsafe(Py<PyAny>),
}

impl Target {
    /// Called on a tokio thread when the work is done.
    fn deliver(self, c: Completion) {
        match self {
            Target::Inbox(inbox) => inbox.deliver(Entry::Done(c)),
            Target::Threadsafe(event_loop) => Python::attach(|py| {
                let handoff = ThreadsafeCompletion(Mutex::new(Some(c)));
                let sent = Py::new(py, handoff).and_then(|h| {
                    event_loop
                        .bind(py)
                        .call_method1("call_soon_threadsafe", (h,))
                        .map(drop)
                });
                // A closed loop refuses the call: nobody can await the future any more.
                drop(sent);
            }),
        }
    }
}

/// Whether the old hand-off (`call_soon_threadsafe` from the tokio thread, with the GIL) is
/// forced: for A/B latency comparisons only (feature `latency-trace`).
#[cfg(feature = "latency-trace")]
pub static FORCE_THREADSAFE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The loop's inbox, made and registered on first use; `None` for a loop that cannot have one.
fn inbox_of(event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Inbox>>> {
    #[cfg(feature = "latency-trace")]
    if FORCE_THREADSAFE.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(None);
    }
    if let Ok(found) = event_loop.getattr(INBOX_ATTR)
        && let Ok(inbox) = found.cast::<LoopInbox>()
    {
        return Ok(Some(Arc::clone(&inbox.get().inbox)));
    }
    new_inbox(event_loop)
}

#[cfg(unix)]
fn new_inbox(event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Inbox>>> {
    use std::os::fd::AsRawFd;
    let py = event_loop.py();
    let socket_error = |e: std::io::Error| {
        PyRuntimeError::new_err(format!(
            "voicerag: cannot make the loop's wake-up socket: {e}"
        ))
    };
    let (reader, bell) = std::os::unix::net::UnixStream::pair().map_err(socket_error)?;
    reader.set_nonblocking(true).map_err(socket_error)?;
    bell.set_nonblocking(true).map_err(socket_error)?;
    let fd = reader.as_raw_fd();
    let inbox = Arc::new(Inbox {
        pending: Mutex::new((Vec::new(), false)),
        bell,
    });
    let holder = Bound::new(
        py,
        LoopInbox {
            inbox: Arc::clone(&inbox),
            reader,
        },
    )?;
    if event_loop
        .call_method1("add_reader", (fd, holder.getattr("_drain")?))
        .is_err()
    {
        return Ok(None);
    }
    if event_loop.setattr(INBOX_ATTR, &holder).is_err() {
        let _ = event_loop.call_method1("remove_reader", (fd,));
        return Ok(None);
    }
    Ok(Some(inbox))
}

#[cfg(not(unix))]
fn new_inbox(_event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Inbox>>> {
    Ok(None)
}

/// The running event loop, or the error a call outside a running (or on a closed) loop raises.
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let get_loop = GET_RUNNING_LOOP.get_or_try_init(py, || {
        py.import("asyncio")?
            .getattr("get_running_loop")
            .map(Bound::unbind)
    })?;
    let event_loop = get_loop.bind(py).call0().map_err(|_| {
        PyRuntimeError::new_err(
            "voicerag: this call must be awaited inside a running asyncio event loop",
        )
    })?;
    if event_loop.call_method0("is_closed")?.is_truthy()? {
        return Err(PyRuntimeError::new_err(
            "voicerag: the event loop is closed",
        ));
    }
    Ok(event_loop)
}

/// Runs `work` on the tokio runtime and returns an asyncio future of the running loop that
/// completes with its value or exception. Raises at once when called outside a running loop.
pub fn spawn<'py, T, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    T: ToPython,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let call = trace::next_call();
    trace::mark(call, "py: spawn entered");
    let event_loop = running_loop(py)?;
    spawn_task(&event_loop, call, work)
}

fn spawn_task<'py, T, F>(
    event_loop: &Bound<'py, PyAny>,
    call: u64,
    work: F,
) -> PyResult<Bound<'py, PyAny>>
where
    T: ToPython,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let target = match inbox_of(event_loop)? {
        Some(inbox) => Target::Inbox(inbox),
        None => Target::Threadsafe(event_loop.clone().unbind()),
    };
    let future = event_loop.call_method0("create_future")?;
    let future_ref = future.clone().unbind();
    runtime()?.spawn(async move {
        trace::mark(call, "tokio: task started");
        let outcome = match AssertUnwindSafe(work).catch_unwind().await {
            Ok(Ok(v)) => Outcome::Value(Box::new(move |py: Python<'_>| v.to_python(py))),
            Ok(Err(e)) => Outcome::Error(e),
            Err(panic) => Outcome::Error(panic_error(panic)),
        };
        trace::mark(call, "tokio: work done");
        target.deliver(Completion {
            future: future_ref,
            outcome,
            call,
        });
        trace::mark(call, "tokio: delivered");
    });
    trace::mark(call, "py: spawned");
    Ok(future)
}

type LoopFuture = std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A future the event loop's thread polls itself (with the GIL released, inside the runtime's
/// context): first in the call that makes it, then from the loop's inbox each time it is woken.
/// No tokio task carries it, so no thread is woken to start it and none to finish it: whatever
/// wakes it (a reply channel's sender, a join handle) rings the loop directly.
struct LoopTask {
    work: Mutex<Option<LoopFuture>>,
    /// The asyncio future awaiting it.
    future: Py<PyAny>,
    inbox: Arc<Inbox>,
    #[cfg_attr(not(feature = "latency-trace"), allow(dead_code))]
    call: u64,
}

impl std::task::Wake for LoopTask {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // For latency-trace: the last wake-up is the one that finishes the work.
        trace::mark(self.call, "tokio: work done");
        self.inbox.deliver(Entry::Woken(Arc::clone(self)));
        trace::mark(self.call, "tokio: delivered");
    }
}

impl LoopTask {
    /// Polls the work once (GIL released, runtime entered): its outcome once it has finished,
    /// `None` while it waits (or after it finished: a late wake-up finds nothing to do).
    fn poll_detached(self: &Arc<Self>, py: Python<'_>) -> Option<Outcome> {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => {
                lock_work(&self.work).take();
                return Some(Outcome::Error(e));
            }
        };
        py.detach(|| {
            let _entered = rt.enter();
            let mut slot = lock_work(&self.work);
            let work = slot.as_mut()?;
            let waker = std::task::Waker::from(Arc::clone(self));
            let mut cx = std::task::Context::from_waker(&waker);
            let outcome =
                match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(&mut cx))) {
                    Ok(std::task::Poll::Pending) => return None,
                    Ok(std::task::Poll::Ready(outcome)) => outcome,
                    Err(panic) => Outcome::Error(panic_error(panic)),
                };
            *slot = None;
            Some(outcome)
        })
    }

    /// The inbox's call after a wake-up: polls again and completes the asyncio future when done.
    fn poll_on_loop(self: Arc<Self>, py: Python<'_>) {
        trace::mark(self.call, "loop: polling");
        if let Some(outcome) = self.poll_detached(py) {
            self.complete(py, outcome);
        }
    }

    fn complete(&self, py: Python<'_>, outcome: Outcome) {
        Completion {
            future: self.future.clone_ref(py),
            outcome,
            call: self.call,
        }
        .resolve(py);
    }
}

fn lock_work(m: &Mutex<Option<LoopFuture>>) -> std::sync::MutexGuard<'_, Option<LoopFuture>> {
    // A panic while polling is caught inside the lock: the slot is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Like [`spawn`], for work that only waits on the tokio runtime after its first step and does
/// nothing heavy after any wait (a request handed to the pipeline, then a reply awaited): polled
/// by the calling loop's thread, GIL released, until it finishes (see [`LoopTask`]). The first step
/// runs inside this call, so the request reaches the pipeline without first waking a tokio worker
/// to run a task that would make it; an error found there (or a result ready at once) completes
/// the returned future before it is awaited. Loops without an inbox get [`spawn`].
pub fn spawn_on_loop<'py, T, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    T: ToPython,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let call = trace::next_call();
    trace::mark(call, "py: spawn entered");
    let event_loop = running_loop(py)?;
    let Some(inbox) = inbox_of(&event_loop)? else {
        return spawn_task(&event_loop, call, work);
    };
    let future = event_loop.call_method0("create_future")?;
    let task = Arc::new(LoopTask {
        work: Mutex::new(Some(Box::pin(async move {
            match work.await {
                Ok(v) => Outcome::Value(Box::new(move |py: Python<'_>| v.to_python(py))),
                Err(e) => Outcome::Error(e),
            }
        }))),
        future: future.clone().unbind(),
        inbox,
        call,
    });
    trace::mark(call, "tokio: task started");
    if let Some(outcome) = task.poll_detached(py) {
        trace::mark(call, "tokio: work done");
        trace::mark(call, "tokio: delivered");
        task.complete(py, outcome);
    }
    trace::mark(call, "py: spawned");
    Ok(future)
}
