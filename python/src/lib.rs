//! The `voicerag` Python package's native module (`voicerag._native`): the in-process pipeline
//! and the NATS bus client, for asyncio. The Python side (`python/voicerag/`) adds the Pipecat
//! processor and the LiveKit hook on top.
//!
//! - [`pipeline`]: `Pipeline` and `ResultStream`.
//! - [`bus`]: `BusClient`, the same calls over NATS to `voicerag serve`.
//! - [`result`]: `ContextResult`, `Hit`, `Timings`.
//! - [`bridge`]: the tokio runtime and Rust futures as asyncio futures.
//! - [`finals`]: awaiting one final's result.
//! - [`values`]: transcripts, overrides and JSON values in and out of Python.
//! - [`errors`]: the exceptions, and panics caught at the boundary.

mod bridge;
mod bus;
mod errors;
mod finals;
mod pipeline;
mod result;
mod trace;
mod values;

use pyo3::prelude::*;

/// Test hook: panics inside a synchronous call (`where_ == "sync"`), inside a Rust future on tokio
/// (`"async"`), or inside a future the loop polls itself, in its first step (`"inline"`) or after
/// a wait (`"inline-woken"`); the last three return an awaitable. Shows a panic becomes
/// `VoiceragError` and never aborts the interpreter.
#[pyfunction]
fn _panic_for_tests<'py>(py: Python<'py>, where_: &str) -> PyResult<Bound<'py, PyAny>> {
    match where_ {
        "sync" => return errors::guard(|| panic!("test panic in a synchronous call")),
        "inline" => {
            return bridge::spawn_on_loop(py, async {
                if where_is_async() {
                    panic!("test panic in the first step of a loop-polled future");
                }
                Ok(())
            });
        }
        "inline-woken" => {
            return bridge::spawn_on_loop(py, async {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                if where_is_async() {
                    panic!("test panic in a loop-polled future after a wait");
                }
                Ok(())
            });
        }
        _ => {}
    }
    bridge::spawn(py, async {
        if where_is_async() {
            panic!("test panic in a Rust future");
        }
        Ok(())
    })
}

/// Benchmark support: an awaitable served by the tokio runtime with no work at all, so awaiting it
/// times the bridge alone (the caller's thread to tokio and back to the event loop).
#[pyfunction]
fn _bench_roundtrip(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    bridge::spawn(py, async { Ok(()) })
}

/// Test and benchmark support: an awaitable the loop polls itself (as `query` and `context` are)
/// that waits `ms` milliseconds on tokio's timer and returns `value`; with `ms == 0`, it is ready
/// in its first step, so the returned future is already done.
#[pyfunction]
#[pyo3(signature = (value, ms=0))]
fn _loop_polled_for_tests(py: Python<'_>, value: u64, ms: u64) -> PyResult<Bound<'_, PyAny>> {
    bridge::spawn_on_loop(py, async move {
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Ok(value)
    })
}

/// Keeps the compiler from seeing the async panic as unconditional.
fn where_is_async() -> bool {
    std::hint::black_box(true)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<pipeline::Pipeline>()?;
    m.add_class::<bus::BusClient>()?;
    m.add_class::<pipeline::ResultStream>()?;
    m.add_class::<result::ContextResult>()?;
    m.add_class::<result::Hit>()?;
    m.add_class::<result::Timings>()?;
    m.add("VoiceragError", py.get_type::<errors::VoiceragError>())?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add(
        "PipelineClosedError",
        py.get_type::<errors::PipelineClosedError>(),
    )?;
    m.add("BusError", py.get_type::<errors::BusError>())?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(_bench_roundtrip, m)?)?;
    m.add_function(wrap_pyfunction!(_loop_polled_for_tests, m)?)?;
    #[cfg(feature = "latency-trace")]
    m.add_function(wrap_pyfunction!(trace::_trace, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
