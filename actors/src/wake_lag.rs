//! [`WakeLag`]: how late the pipeline's own wake-ups at a request's stop point run.
//!
//! A request stops waiting for its stages at `deadline - deadline_guard`; the guard covers the
//! timer's millisecond granularity and building the result. On saturated cores more threads are
//! runnable than there are cores, and a task woken at its stop point may run several milliseconds
//! later, past the guard: its result leaves late. Results that ran to their stop point show that
//! lag; the worst recent one beyond the guard is added to it, decaying by half every
//! [`HALF_LIFE`] once the lag is gone, so the pipeline stops early enough only while it must.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How fast the allowance fades once wake-ups are on time again.
pub(crate) const HALF_LIFE: Duration = Duration::from_secs(2);

/// Extra time kept before the deadline beyond what a late wake-up overran, for the next one.
const HEADROOM: Duration = Duration::from_millis(1);

pub(crate) struct WakeLag {
    /// The configured guard: lags within it need nothing extra.
    guard: Duration,
    /// Most extra time ever kept (a share of the budget, so some is left for the work).
    cap: Duration,
    /// The allowance and when it was last raised.
    state: Mutex<(Duration, Instant)>,
}

impl WakeLag {
    pub(crate) fn new(guard: Duration, cap: Duration) -> Self {
        Self {
            guard,
            cap,
            state: Mutex::new((Duration::ZERO, Instant::now())),
        }
    }

    /// Time to stop before the deadline on top of the guard, at `at`.
    pub(crate) fn allowance(&self, at: Instant) -> Duration {
        let (allowance, since) = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        decayed(allowance, at.saturating_duration_since(since))
    }

    /// A result whose request stopped waiting at `stop_by` was finished at `finished`.
    pub(crate) fn observe(&self, stop_by: Instant, finished: Instant) {
        let over = finished.saturating_duration_since(stop_by);
        if over <= self.guard {
            return; // on time: the guard covered it
        }
        let needed = (over - self.guard + HEADROOM).min(self.cap);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if needed > decayed(state.0, finished.saturating_duration_since(state.1)) {
            *state = (needed, finished);
        }
    }
}

fn decayed(allowance: Duration, elapsed: Duration) -> Duration {
    let halvings = elapsed.as_secs_f64() / HALF_LIFE.as_secs_f64();
    allowance.mul_f64(0.5f64.powf(halvings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn lags_within_the_guard_add_nothing() {
        let lag = WakeLag::new(2 * MS, 25 * MS);
        let t = Instant::now();
        lag.observe(t, t + 2 * MS);
        lag.observe(t + MS, t);
        assert_eq!(lag.allowance(t), Duration::ZERO);
    }

    #[test]
    fn a_late_wake_up_is_kept_then_fades_and_the_cap_holds() {
        let lag = WakeLag::new(2 * MS, 25 * MS);
        let t = Instant::now();
        // 9 ms past the stop point: 7 beyond the guard, plus headroom.
        lag.observe(t, t + 9 * MS);
        let at = t + 9 * MS;
        assert_eq!(lag.allowance(at), 8 * MS);
        // A smaller lag does not lower it.
        lag.observe(at, at + 4 * MS);
        assert_eq!(lag.allowance(at), 8 * MS);
        let later = lag.allowance(at + HALF_LIFE);
        assert!(later > 3 * MS && later < 5 * MS, "{later:?}");
        assert!(lag.allowance(at + 20 * HALF_LIFE) < Duration::from_micros(10));
        lag.observe(at, at + Duration::from_secs(1));
        assert_eq!(lag.allowance(at + Duration::from_secs(1)), 25 * MS);
    }
}
