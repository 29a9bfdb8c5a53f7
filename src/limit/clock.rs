//! Time, injected: limiters take a clock so tests drive time by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Nanoseconds since an arbitrary origin, as a clock counts them.
pub type Nanos = u64;

/// A monotonic clock in nanoseconds.
///
/// Read once per request. Construct it once and share it: a clock built per call (per refusal,
/// say) turns every 429 into a system call or worse.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the clock's origin.
    fn now(&self) -> Nanos;
}

/// A monotonic clock read from the CPU's time-stamp counter where it is reliable (through
/// [`quanta`](https://docs.rs/quanta), as governor does), else from the system's monotonic
/// clock; its origin is when it was made.
///
/// Building one calibrates the counter: build it once and share it (the layers do).
#[derive(Clone, Debug)]
pub struct MonotonicClock {
    clock: quanta::Clock,
    origin: quanta::Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.now();
        Self { clock, origin }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Nanos {
        // Starts at one so that zero can mean "never seen" in limiter state.
        self.clock.now().duration_since(self.origin).as_nanos() as u64 + 1
    }
}

/// A clock that moves only when told to: for tests and property tests.
///
/// ```
/// use std::time::Duration;
/// use tower_maas::limit::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now() - t0, 1_500_000_000);
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at one nanosecond.
    pub fn new() -> Self {
        Self {
            now: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}
