//! Restart policy applied: [`RestartTracker`] counts one stage's failures in the window and
//! decides between a restart after a backoff (doubling from `backoff_initial_ms` up to
//! `backoff_max_ms`) and staying down (more than `max_restarts` in `window_ms`).

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

use crate::config::RestartPolicy;

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    RestartAfter(Duration),
    /// Past the limit: stay down, try again after this long.
    DownFor(Duration),
}

/// Counts one stage's failures in the window and applies the policy.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            failures: VecDeque::new(),
        }
    }

    pub(crate) fn on_failure(&mut self, now: Instant) -> Decision {
        let window = Duration::from_millis(self.policy.window_ms);
        while self
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let n = self.failures.len() as u32;
        if n > self.policy.max_restarts {
            return Decision::DownFor(Duration::from_millis(self.policy.retry_down_after_ms));
        }
        let factor = 1u64 << (n.saturating_sub(1)).min(20);
        let ms = self
            .policy
            .backoff_initial_ms
            .saturating_mul(factor)
            .min(self.policy.backoff_max_ms);
        Decision::RestartAfter(Duration::from_millis(ms))
    }

    /// A retry after being down starts a fresh window.
    pub(crate) fn reset(&mut self) {
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window_ms: 1_000,
            backoff_initial_ms: 10,
            backoff_max_ms: 25,
            unresponsive_ms: 100,
            retry_down_after_ms: 5_000,
            max_abandoned_calls: 4,
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_then_the_stage_goes_down() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(10))
        );
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(20))
        );
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(25))
        );
        assert_eq!(
            t.on_failure(now),
            Decision::DownFor(Duration::from_millis(5_000))
        );
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut t = RestartTracker::new(policy());
        let start = Instant::now();
        for _ in 0..3 {
            t.on_failure(start);
        }
        let later = start + Duration::from_millis(1_000);
        assert_eq!(
            t.on_failure(later),
            Decision::RestartAfter(Duration::from_millis(10))
        );
    }

    #[test]
    fn reset_gives_a_fresh_window() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        for _ in 0..4 {
            t.on_failure(now);
        }
        t.reset();
        assert_eq!(
            t.on_failure(now),
            Decision::RestartAfter(Duration::from_millis(10))
        );
    }
}
