//! Latency tracing of the Python bridge (feature `latency-trace`, for diagnosis only): timestamps
//! on the clock Python's `time.monotonic_ns()` reads, per bridged call, at each hand-over between
//! the caller's thread, the tokio runtime and the event loop. Without the feature every mark is a
//! no-op and nothing is recorded.

#[cfg(feature = "latency-trace")]
mod on {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use pyo3::prelude::*;

    static NEXT: AtomicU64 = AtomicU64::new(1);
    static ON: AtomicBool = AtomicBool::new(false);
    static EVENTS: Mutex<Vec<(u64, &'static str, u64)>> = Mutex::new(Vec::new());

    pub fn next_call() -> u64 {
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// CLOCK_MONOTONIC in nanoseconds, as `time.monotonic_ns()` and `time.perf_counter_ns()`.
    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given and nothing else.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    pub fn mark(call: u64, point: &'static str) {
        if ON.load(Ordering::Relaxed) {
            let t = now_ns();
            EVENTS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((call, point, t));
        }
    }

    /// Starts (`on`) or stops recording; returns the events recorded so far, and clears them:
    /// `(call id, point, monotonic ns)`.
    #[pyfunction]
    #[pyo3(signature = (on, *, threadsafe=false))]
    pub fn _trace(on: bool, threadsafe: bool) -> Vec<(u64, &'static str, u64)> {
        ON.store(on, Ordering::SeqCst);
        crate::bridge::FORCE_THREADSAFE.store(threadsafe, Ordering::SeqCst);
        std::mem::take(&mut *EVENTS.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(feature = "latency-trace")]
pub use on::{_trace, mark, next_call};

#[cfg(not(feature = "latency-trace"))]
#[inline(always)]
pub fn next_call() -> u64 {
    0
}

#[cfg(not(feature = "latency-trace"))]
#[inline(always)]
pub fn mark(_call: u64, _point: &'static str) {}
