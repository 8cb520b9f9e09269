//! Brute-force backoff for logins.
//!
//! Failures are counted per account and per client IP in a fixed window (store, atomic).
//! Up to the threshold nothing happens. Past it, each further attempt must wait
//! `base * 2^(failures - threshold)` seconds after the last failure, capped at the window: the
//! wait grows fast for a guesser, but nobody is locked out for longer than one window, so an
//! attacker cannot lock a real user out for good. Unknown accounts are counted the same way,
//! so the answer never reveals whether an account exists.

use crate::clock::UnixTime;
use crate::store::FailureCount;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub threshold: u32,
    pub base_secs: i64,
    pub window_secs: i64,
}

impl Backoff {
    /// Seconds the caller must still wait, or `None` when an attempt is allowed now.
    pub fn retry_after(&self, failures: FailureCount, now: UnixTime) -> Option<i64> {
        if failures.count < self.threshold {
            return None;
        }
        let doublings = (failures.count - self.threshold).min(20);
        let wait = self
            .base_secs
            .saturating_mul(1_i64 << doublings)
            .min(self.window_secs);
        let until = failures.last_failure_at + wait;
        (now < until).then_some(until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_threshold_doubles_and_is_capped() {
        let b = Backoff {
            threshold: 5,
            base_secs: 30,
            window_secs: 900,
        };
        let at = |count, last| FailureCount {
            count,
            last_failure_at: last,
        };
        assert_eq!(b.retry_after(at(4, 1000), 1000), None);
        assert_eq!(b.retry_after(at(5, 1000), 1000), Some(30));
        assert_eq!(b.retry_after(at(5, 1000), 1030), None);
        assert_eq!(b.retry_after(at(6, 1000), 1000), Some(60));
        assert_eq!(b.retry_after(at(7, 1000), 1010), Some(110));
        assert_eq!(b.retry_after(at(40, 1000), 1000), Some(900));
    }
}
