//! Rust futures as asyncio futures: the work runs on voicerag's tokio runtime, with the GIL
//! released; the result is handed to the awaiting event loop with `call_soon_threadsafe`, so the
//! loop never blocks and no Python thread waits on Rust.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use futures::FutureExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::errors::panic_error;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

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

/// A value a finished Rust future hands to Python (converted with the GIL held, on the tokio
/// thread that finished it).
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

/// Resolves an asyncio future unless it was cancelled meanwhile (runs on the event loop).
#[pyfunction]
fn resolve_future(future: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?;
    } else {
        future.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

/// Runs `work` on the tokio runtime and returns an asyncio future of the running loop that
/// completes with its value or exception. Raises at once when called outside a running loop.
pub fn spawn<'py, T, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    T: ToPython,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
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
    let resolve = RESOLVE
        .get_or_try_init(py, || {
            wrap_pyfunction!(resolve_future, py).map(|f| f.into_any().unbind())
        })?
        .clone_ref(py);
    let future = event_loop.call_method0("create_future")?;
    let future_ref = future.clone().unbind();
    let loop_ref = event_loop.unbind();
    runtime()?.spawn(async move {
        let outcome = AssertUnwindSafe(work).catch_unwind().await;
        Python::attach(|py| {
            let (ok, value) = match outcome {
                Ok(Ok(v)) => match v.to_python(py) {
                    Ok(obj) => (true, obj),
                    Err(e) => (false, e.into_value(py).into_any()),
                },
                Ok(Err(e)) => (false, e.into_value(py).into_any()),
                Err(panic) => (false, panic_error(panic).into_value(py).into_any()),
            };
            // A closed loop refuses the call: nobody can await the future any more, and the
            // work itself (a memory written, a query served) is already done.
            let _ = loop_ref
                .bind(py)
                .call_method1("call_soon_threadsafe", (resolve, future_ref, ok, value));
        });
    });
    Ok(future)
}
