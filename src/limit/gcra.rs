//! The generic cell rate algorithm on one atomic theoretical arrival time (TAT).
//!
//! A rate is an emission interval `t` (nanoseconds per unit) and a capacity: how far the TAT may
//! run ahead of now. A request for `n` units is admitted when
//! `max(tat, now) + n·t − now ≤ capacity`, and moves the TAT there; over any window of length
//! `w`, admitted units never exceed `w / t + capacity / t`. Integers only, one compare-exchange
//! per decision, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

use super::clock::Nanos;

/// One minute in nanoseconds.
pub(crate) const MINUTE: Nanos = 60_000_000_000;

/// A rate: `per_unit` nanoseconds between units, and how many units may come at once.
///
/// ```
/// use tower_maas::limit::Rate;
///
/// // RPM 600 with MaaS's smoothing: a burst of 600 / 30, one more every 100 ms.
/// let rpm = Rate::per_minute(600, 600 / 30);
/// assert_eq!(rpm.per_unit(), 100_000_000);
/// assert_eq!(rpm.burst(), 20);
/// // A limit of 0 admits nothing.
/// assert_eq!(Rate::per_minute(0, 10).burst(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    per_unit: Nanos,
    capacity: Nanos,
    limit: u64,
    /// `capacity / per_unit`, kept so that no check divides.
    burst: u64,
}

impl Rate {
    /// `limit` units per minute, `burst` of them at once (at least one; none for a `limit` of
    /// 0).
    pub fn per_minute(limit: u64, burst: u64) -> Self {
        Self::per(limit, MINUTE, burst)
    }

    /// `limit` units per `window` nanoseconds, `burst` of them at once (at least one). A
    /// `limit` of 0 admits nothing: it has no capacity, so every unit waits for ever and a
    /// request of any units can never fit.
    pub fn per(limit: u64, window: Nanos, burst: u64) -> Self {
        if limit == 0 {
            return Self {
                per_unit: window.max(1),
                capacity: 0,
                limit: 0,
                burst: 0,
            };
        }
        let per_unit = (window / limit).max(1);
        let burst = burst.max(1);
        let (capacity, burst) = match per_unit.checked_mul(burst) {
            Some(capacity) => (capacity, burst),
            None => (Nanos::MAX, Nanos::MAX / per_unit),
        };
        Self {
            per_unit,
            capacity,
            limit,
            burst,
        }
    }

    /// The limit per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The largest request that can ever be admitted, in units.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Nanoseconds between units (the emission interval).
    pub fn per_unit(&self) -> Nanos {
        self.per_unit
    }

    /// How far, in nanoseconds, the theoretical arrival time may run ahead of now.
    pub fn capacity(&self) -> Nanos {
        self.capacity
    }
}

/// What a decision leaves: the new TAT when admitted, or how long until it would be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gcra {
    Admitted { tat: Nanos },
    Refused { wait: Nanos, tat: Nanos },
}

/// Admits `units` at `now` if the rate allows, in one compare-exchange loop.
#[inline]
pub(crate) fn acquire(cell: &AtomicU64, rate: Rate, units: u64, now: Nanos) -> Gcra {
    let cost = rate.per_unit.saturating_mul(units);
    let mut tat = cell.load(Ordering::Acquire);
    loop {
        let new = tat.max(now).saturating_add(cost);
        let ahead = new - now;
        if ahead > rate.capacity {
            return Gcra::Refused {
                wait: ahead - rate.capacity,
                tat,
            };
        }
        match cell.compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Gcra::Admitted { tat: new },
            Err(current) => tat = current,
        }
    }
}

/// Gives `units` back, never below `now`: a refund cannot raise capacity above the limit.
#[inline]
pub(crate) fn refund(cell: &AtomicU64, rate: Rate, units: u64, now: Nanos) {
    let back = rate.per_unit.saturating_mul(units);
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
        (tat > now).then(|| tat.saturating_sub(back).max(now))
    });
}

/// Charges `units` more, admitted or not: usage the backend reported beyond the reservation.
#[inline]
pub(crate) fn charge(cell: &AtomicU64, rate: Rate, units: u64, now: Nanos) {
    let cost = rate.per_unit.saturating_mul(units);
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
        Some(tat.max(now).saturating_add(cost))
    });
}

/// Units that could be admitted at `now` with the TAT at `tat`, and the time until the TAT is
/// back at `now` (all capacity restored).
#[inline]
pub(crate) fn remaining(rate: Rate, tat: Nanos, now: Nanos) -> (u64, Nanos) {
    let ahead = tat.saturating_sub(now);
    ((rate.capacity.saturating_sub(ahead)) / rate.per_unit, ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit of 0 admits nothing, where taken as the least rate (one a window) it admitted
    /// one unit a window; a request of any units can never fit.
    #[test]
    fn a_limit_of_zero_admits_nothing() {
        let rate = Rate::per_minute(0, 5);
        assert_eq!((rate.limit(), rate.burst(), rate.capacity()), (0, 0, 0));
        let cell = AtomicU64::new(0);
        assert!(matches!(acquire(&cell, rate, 1, 0), Gcra::Refused { .. }));
        assert!(matches!(
            acquire(&cell, rate, 1, 10 * MINUTE),
            Gcra::Refused { .. }
        ));
    }

    #[test]
    fn a_burst_then_the_rate() {
        // 60 per minute, 2 at once: one per second with a burst of two.
        let rate = Rate::per_minute(60, 2);
        let cell = AtomicU64::new(0);
        let s = 1_000_000_000;
        assert!(matches!(acquire(&cell, rate, 1, s), Gcra::Admitted { .. }));
        assert!(matches!(acquire(&cell, rate, 1, s), Gcra::Admitted { .. }));
        assert_eq!(
            acquire(&cell, rate, 1, s),
            Gcra::Refused {
                wait: s,
                tat: 3 * s
            }
        );
        assert!(matches!(
            acquire(&cell, rate, 1, 2 * s),
            Gcra::Admitted { .. }
        ));
    }

    #[test]
    fn refunds_never_go_below_now() {
        let rate = Rate::per_minute(60, 2);
        let cell = AtomicU64::new(0);
        let now = 10_000_000_000;
        acquire(&cell, rate, 1, now);
        refund(&cell, rate, 5, now);
        assert_eq!(cell.load(Ordering::Relaxed), now);
        assert_eq!(remaining(rate, now, now), (2, 0));
    }
}
