//! The package's exceptions, and how Rust errors and panics become them.

use std::any::Any;

use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};

use voicerag::actors::PipelineError;

create_exception!(
    voicerag,
    VoiceragError,
    PyException,
    "Base of every voicerag error; the message is the Rust error's."
);
create_exception!(
    voicerag,
    ConfigError,
    VoiceragError,
    "The configuration is invalid, or a file it names (model, runtime library) is missing."
);
create_exception!(
    voicerag,
    PipelineClosedError,
    VoiceragError,
    "The pipeline is shutting down or has stopped: nothing more can be submitted."
);
create_exception!(
    voicerag,
    BusError,
    VoiceragError,
    "The NATS bus could not be reached or answered with an error."
);

/// A pipeline API error as the Python exception a caller can tell apart.
pub fn pipeline_error(e: PipelineError) -> PyErr {
    match e {
        PipelineError::InvalidRequest(m) => PyValueError::new_err(m),
        PipelineError::ShuttingDown | PipelineError::Stopped => {
            PipelineClosedError::new_err(e.to_string())
        }
        PipelineError::Config(_) => ConfigError::new_err(e.to_string()),
        other => VoiceragError::new_err(other.to_string()),
    }
}

/// A Rust panic caught at the boundary: raised, never unwound into (or aborting) Python.
pub fn panic_error(payload: Box<dyn Any + Send>) -> PyErr {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    VoiceragError::new_err(format!("internal error (a Rust panic, caught): {message}"))
}

/// Runs a synchronous binding body, turning a panic into [`VoiceragError`] (PyO3's own
/// `PanicException` derives from `BaseException`, which `except Exception` does not catch).
pub fn guard<T>(f: impl FnOnce() -> pyo3::PyResult<T>) -> pyo3::PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(panic_error(p)))
}
