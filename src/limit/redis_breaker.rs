//! When a [`RedisStore`](super::RedisStore) stops asking Redis: after some decisions in a row
//! have failed, the next ones go straight to the store's policy for a pause, then one decision
//! tries Redis again.
//!
//! Without it, a Redis that is slow or cut off by the network (packets dropped: no refusal
//! comes) costs every request the whole timeout before the policy decides, 50 ms by default:
//! failing open, a replica's latency grows by that much and its connections stay busy as long,
//! and each request leaves a call waiting for a late answer.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Decisions failed in a row that stop the asking: a single slow moment (a fork for a
/// snapshot) does not, an outage does within its first few requests.
pub(super) const FAILURES: u32 = 5;

/// How long decisions skip Redis before one tries it again.
pub(super) const PAUSE: Duration = Duration::from_secs(1);

/// Whether decisions ask Redis now.
#[derive(Default)]
pub(super) struct Breaker {
    /// Decisions failed since the last one answered in time.
    failures: AtomicU32,
    /// Whether decisions skip Redis (`Paused` holds until when): read by every decision, so
    /// the lock is taken only while Redis is failing.
    paused: AtomicBool,
    pause: Mutex<Paused>,
}

#[derive(Default)]
struct Paused {
    until: Option<Instant>,
    /// The decision sent to see whether Redis is back, and when: the others keep skipping
    /// until it is answered, or has had its timeout.
    trial: Option<Instant>,
}

/// What a decision does.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// Asks Redis.
    Redis,
    /// Asks Redis to see whether it is back, the others skipping meanwhile: its end must be
    /// reported ([`Breaker::answered`], [`Breaker::failed`] or [`Breaker::trial_over`]).
    Trial,
    /// Goes to the store's policy without asking.
    Skip,
}

impl Breaker {
    /// Whether the decision starting now asks Redis. Once the pause is over, one decision
    /// at a time is let through to try it (another when it has ended, or has had its
    /// `timeout` or the pause's length, the shorter).
    pub(super) fn ask(&self, timeout: Duration) -> Ask {
        if !self.paused.load(Ordering::Acquire) {
            return Ask::Redis;
        }
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let over = pause.until.is_none_or(|until| now >= until);
        let trial_out = pause
            .trial
            .is_some_and(|sent| now.duration_since(sent) < timeout.min(PAUSE));
        if over && !trial_out {
            pause.trial = Some(now);
            Ask::Trial
        } else {
            Ask::Skip
        }
    }

    /// A trial ended without saying whether Redis is there (its request gone, a connection
    /// replaced): the next decision may try.
    pub(super) fn trial_over(&self) {
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        pause.trial = None;
    }

    /// A decision was answered in time: Redis is there.
    pub(super) fn answered(&self) {
        // Read first: no write, on the shared line, for every decision of a healthy store.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.paused.load(Ordering::Acquire) {
            let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
            *pause = Paused::default();
            self.paused.store(false, Ordering::Release);
        }
    }

    /// A decision failed (no answer in time, or no connection). Whether this began a pause
    /// (or lengthened one, its trial having failed).
    pub(super) fn failed(&self) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < FAILURES {
            return false;
        }
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Failures that come during a pause, of decisions sent before it, do not lengthen it.
        if pause.until.is_some_and(|until| now < until) {
            return false;
        }
        *pause = Paused {
            until: Some(now + PAUSE),
            trial: None,
        };
        self.paused.store(true, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Longer than any pause of the test's thread: a trial sent is still out at the next call.
    const TIMEOUT: Duration = Duration::from_secs(1);

    #[test]
    fn failures_in_a_row_pause_the_asking_and_an_answer_ends_it() {
        let breaker = Breaker::default();
        for _ in 1..FAILURES {
            assert!(!breaker.failed());
            assert_eq!(breaker.ask(TIMEOUT), Ask::Redis);
        }
        assert!(breaker.failed());
        assert_eq!(breaker.ask(TIMEOUT), Ask::Skip);
        // Late failures of decisions sent before the pause do not lengthen it.
        assert!(!breaker.failed());
        breaker.answered();
        // Every decision asks again, not one trial at a time.
        assert_eq!(breaker.ask(TIMEOUT), Ask::Redis);
        assert_eq!(breaker.ask(TIMEOUT), Ask::Redis);
        assert!(!breaker.failed(), "the count began again");
    }

    #[test]
    fn an_answer_in_between_resets_the_count() {
        let breaker = Breaker::default();
        for _ in 1..FAILURES {
            assert!(!breaker.failed());
        }
        breaker.answered();
        for _ in 1..FAILURES {
            assert!(!breaker.failed());
        }
        assert_eq!(breaker.ask(TIMEOUT), Ask::Redis);
    }

    #[test]
    fn after_the_pause_one_decision_tries_at_a_time() {
        let breaker = Breaker::default();
        for _ in 0..FAILURES {
            breaker.failed();
        }
        // The pause, over.
        breaker
            .pause
            .lock()
            .unwrap()
            .until
            .replace(Instant::now() - Duration::from_millis(1));
        assert_eq!(breaker.ask(TIMEOUT), Ask::Trial);
        assert_eq!(breaker.ask(TIMEOUT), Ask::Skip, "the trial is out");
        // It ended without a word: another may try at once.
        breaker.trial_over();
        assert_eq!(breaker.ask(TIMEOUT), Ask::Trial);
        assert_eq!(breaker.ask(TIMEOUT), Ask::Skip);
        // The trial had its timeout without an answer: another may try.
        breaker
            .pause
            .lock()
            .unwrap()
            .trial
            .replace(Instant::now() - TIMEOUT);
        assert_eq!(breaker.ask(TIMEOUT), Ask::Trial);
        // It failed: a new pause.
        assert!(breaker.failed());
        assert_eq!(breaker.ask(TIMEOUT), Ask::Skip);
    }
}
