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

/// A clock read from memory: a background thread stores the time every `resolution` (1 ms by
/// default), so a read is one load instead of a time-stamp-counter read.
///
/// The time it gives lags behind by up to the resolution (plus the thread's scheduling delay,
/// when the machine is busy). Two readings can therefore be that much closer together or
/// further apart than the real times: over any window a limiter on it admits at most about
/// `lag / interval` more or fewer units than on the precise clock (with 1 ms, nothing for RPMs
/// under 60 000, one request for 60 000). It halves the cost of a limiter check, at the price
/// of one thread that wakes every resolution; governor offers the same trade
/// (`QuantaUpkeepClock`). The thread ends within one resolution of the last clone being
/// dropped. If it cannot be started, the clock reads the precise time instead.
///
/// ```
/// use std::time::Duration;
/// use tower_maas::limit::{Clock, CoarseClock};
///
/// let clock = CoarseClock::with_resolution(Duration::from_millis(1));
/// let t0 = clock.now();
/// std::thread::sleep(Duration::from_millis(20));
/// assert!(clock.now() > t0);
/// ```
#[derive(Clone, Debug)]
pub struct CoarseClock {
    now: Arc<AtomicU64>,
    /// Set only when the updating thread could not be started.
    precise: Option<MonotonicClock>,
}

impl CoarseClock {
    /// A clock updated every millisecond.
    pub fn new() -> Self {
        Self::with_resolution(Duration::from_millis(1))
    }

    /// A clock updated every `resolution` (at least every 100 µs: a shorter period would keep
    /// a core busy for nothing).
    pub fn with_resolution(resolution: Duration) -> Self {
        let resolution = resolution.max(Duration::from_micros(100));
        let precise = MonotonicClock::new();
        let now = Arc::new(AtomicU64::new(precise.now()));
        let weak = Arc::downgrade(&now);
        let source = precise.clone();
        let started = std::thread::Builder::new()
            .name("tower-maas-clock".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(resolution);
                    let Some(now) = weak.upgrade() else { return };
                    now.store(source.now(), Ordering::Relaxed);
                }
            });
        Self {
            now,
            precise: started.is_err().then_some(precise),
        }
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> Nanos {
        match &self.precise {
            None => self.now.load(Ordering::Relaxed),
            Some(precise) => precise.now(),
        }
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
