//! Time, injected: limiters take a clock so tests drive time by hand.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

/// Nanoseconds since an arbitrary origin, as a clock counts them.
pub type Nanos = u64;

/// A monotonic clock in nanoseconds.
///
/// Read once per request. Construct it once and share it: a clock built per call (per refusal,
/// say) turns every 429 into a system call or worse.
///
/// A clock of your own, here one that a test (or a simulation) sets:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_maas::limit::{Clock, Nanos, TokenRateLimitLayer};
///
/// #[derive(Clone, Default)]
/// struct SetClock(Arc<AtomicU64>);
///
/// impl Clock for SetClock {
///     fn now(&self) -> Nanos {
///         // Starts at one: limiters take zero for "never seen".
///         self.0.load(Ordering::Relaxed) + 1
///     }
/// }
///
/// let clock = SetClock::default();
/// let layer = TokenRateLimitLayer::with(tower_maas::limit::MemoryStore::new(), clock.clone());
/// clock.0.store(60_000_000_000, Ordering::Relaxed); // a minute later
/// assert_eq!(clock.now(), 60_000_000_001);
/// # let _ = layer;
/// ```
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
/// of one thread that wakes every resolution while the clock is read; governor offers the same
/// trade (`QuantaUpkeepClock`).
///
/// A clock nobody reads costs next to nothing: after 100 ticks without a read the thread
/// parks (waking once a second to see whether the clock still exists), and the next read
/// takes the precise time itself and wakes it; an idle gateway would otherwise wake a thousand
/// times a second for ever. The thread ends within one resolution of the last clone being
/// dropped (within a second while parked). If it cannot be started, the clock reads the
/// precise time instead.
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
    shared: Arc<Ticking>,
    /// The updating thread could not be started: every read takes the precise time.
    unticked: bool,
}

/// Ticks without a read after which the clock's thread parks.
const IDLE_TICKS: u32 = 100;

/// The low bit of a stored time: set while the thread is parked, so that the time stored is
/// stale and a reader takes the precise time instead. (Times are kept even.)
const STALE: Nanos = 1;

/// What the clock's thread and its readers share: the two fields every read touches first, on
/// one cache line.
#[repr(C, align(64))]
#[derive(Debug)]
struct Ticking {
    now: AtomicU64,
    /// Set by readers, cleared by the thread at each tick: whether the clock is still read.
    read: AtomicBool,
    source: MonotonicClock,
    thread: OnceLock<Thread>,
    #[cfg(test)]
    ticks: AtomicU64,
}

impl Ticking {
    fn precise(&self) -> Nanos {
        self.source.now() & !STALE
    }
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
        let source = MonotonicClock::new();
        let shared = Arc::new(Ticking {
            now: AtomicU64::new(source.now() & !STALE),
            read: AtomicBool::new(true),
            source,
            thread: OnceLock::new(),
            #[cfg(test)]
            ticks: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&shared);
        let started = std::thread::Builder::new()
            .name("tower-maas-clock".to_owned())
            .spawn(move || tick(&weak, resolution));
        Self {
            shared,
            unticked: started.is_err(),
        }
    }

    /// The clock was not read for a while and its thread parked: the precise time, stored for
    /// the next readers, and the thread woken (by the reader that stores it).
    #[cold]
    fn wake(&self, stale: Nanos) -> Nanos {
        let now = self.shared.precise();
        match self
            .shared
            .now
            .compare_exchange(stale, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                if let Some(thread) = self.shared.thread.get() {
                    thread.unpark();
                }
                now
            }
            // Another reader stored the time first: that one, so that this reader's next
            // read is not earlier than this one.
            Err(stored) if stored & STALE == 0 => stored,
            Err(_) => now,
        }
    }
}

/// The clock's thread: stores the time every `resolution` while the clock is read, parks when
/// it is not, ends when the clock is dropped.
fn tick(weak: &Weak<Ticking>, resolution: Duration) {
    // Known before the first tick, so that no reader can find the thread parked without a way
    // to wake it.
    if let Some(shared) = weak.upgrade() {
        let _ = shared.thread.set(std::thread::current());
    }
    let mut idle = 0;
    loop {
        std::thread::sleep(resolution);
        let Some(shared) = weak.upgrade() else { return };
        #[cfg(test)]
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        if shared.read.swap(false, Ordering::Relaxed) {
            idle = 0;
        } else {
            idle += 1;
        }
        if idle < IDLE_TICKS {
            shared.now.store(shared.precise(), Ordering::Relaxed);
            continue;
        }
        shared
            .now
            .store(shared.precise() | STALE, Ordering::Relaxed);
        drop(shared);
        // Until a reader stores a fresh time (and unparks), or the clock is dropped.
        loop {
            std::thread::park_timeout(Duration::from_secs(1));
            let Some(shared) = weak.upgrade() else { return };
            if shared.now.load(Ordering::Relaxed) & STALE == 0 {
                break;
            }
        }
        idle = 0;
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
        let shared = &*self.shared;
        if self.unticked {
            return shared.precise();
        }
        // A store only for the first read of a tick: the line stays shared between readers.
        if !shared.read.load(Ordering::Relaxed) {
            shared.read.store(true, Ordering::Relaxed);
        }
        let now = shared.now.load(Ordering::Relaxed);
        if now & STALE != 0 {
            return self.wake(now);
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unread_clock_parks_its_thread_and_a_read_wakes_it() {
        let clock = CoarseClock::with_resolution(Duration::from_millis(1));
        let ticks = || clock.shared.ticks.load(Ordering::Relaxed);
        let parked = || clock.shared.now.load(Ordering::Relaxed) & STALE != 0;
        let t0 = clock.now();
        // Unread, the thread parks (after 100 ticks: deadlines are generous, this machine may
        // be busy).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !parked() {
            assert!(std::time::Instant::now() < deadline, "never parked");
            std::thread::sleep(Duration::from_millis(10));
        }
        let at_park = ticks();
        let stored = clock.shared.now.load(Ordering::Relaxed) & !STALE;
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(ticks(), at_park, "the thread ticked while parked");
        // A read still gives the time, not the one stored when the thread parked…
        let waited = stored + 200_000_000;
        let t1 = clock.now();
        assert!(t1 > t0);
        assert!(t1 >= waited, "{t1} < {waited}");
        // …and wakes the thread, which ticks again while the clock is read.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ticks() < at_park + 10 {
            assert!(std::time::Instant::now() < deadline, "not woken");
            clock.now();
            std::thread::sleep(Duration::from_millis(2));
        }
        // Times stay in order across the wake.
        assert!(clock.now() >= t1);
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
