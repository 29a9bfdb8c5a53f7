//! Where per-key limiter state lives: the [`RateStore`] trait and the in-memory store.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, Ready};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::clock::Nanos;
use super::gcra::{self, Gcra, Rate};

/// Which limiter state a request counts against: an API key's id, or any other dense `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LimitKey(pub u64);

/// One request's ask: admit one request and reserve `tokens`, against the key's rates.
#[derive(Clone, Copy, Debug)]
pub struct Acquire {
    /// Whose state.
    pub key: LimitKey,
    /// The requests rate, if limited.
    pub requests: Option<Rate>,
    /// The tokens rate, if limited.
    pub tokens: Option<Rate>,
    /// Tokens to reserve.
    pub reserve: u64,
    /// The key's token quota, when a store keeps quotas ([`RateStore::reconcile`]): a key
    /// that has used it all is refused ([`Outcome::QuotaExhausted`]). The in-memory store
    /// leaves quotas to the key's [`Quota`](crate::auth::Quota).
    pub quota: Option<u64>,
    /// The time of the request, read once.
    pub now: Nanos,
}

/// The state a decision leaves, for the rate-limit headers: each limit's rate and theoretical
/// arrival time. What remains is worked out only when asked (two divisions the check itself
/// does not need).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    now: Nanos,
    requests: Option<(Rate, Nanos)>,
    tokens: Option<(Rate, Nanos)>,
    fallback: bool,
}

impl Snapshot {
    /// The state at `now`, with no limit recorded yet.
    pub fn at(now: Nanos) -> Self {
        Self {
            now,
            ..Self::default()
        }
    }

    /// Records the requests limit's TAT.
    pub fn with_requests(mut self, rate: Rate, tat: Nanos) -> Self {
        self.requests = Some((rate, tat));
        self
    }

    /// Records the tokens limit's TAT.
    pub fn with_tokens(mut self, rate: Rate, tat: Nanos) -> Self {
        self.tokens = Some((rate, tat));
        self
    }

    /// Requests that could be admitted now, and the time until all could.
    pub fn requests(&self) -> Option<(u64, Nanos)> {
        self.requests
            .map(|(rate, tat)| gcra::remaining(rate, tat, self.now))
    }

    /// Tokens that could be reserved now, and the time until all could.
    pub fn tokens(&self) -> Option<(u64, Nanos)> {
        self.tokens
            .map(|(rate, tat)| gcra::remaining(rate, tat, self.now))
    }

    /// Marks the state as its store's fallback's: a server store failing open decided in
    /// memory, so the admission's reconciliation goes there ([`Reconcile::fallback`]).
    ///
    /// ```
    /// use tower_maas::limit::Snapshot;
    ///
    /// assert!(!Snapshot::at(0).decided_by_fallback());
    /// assert!(Snapshot::at(0).by_fallback().decided_by_fallback());
    /// ```
    #[must_use]
    pub fn by_fallback(mut self) -> Self {
        self.fallback = true;
        self
    }

    /// The state is the fallback's (see [`by_fallback`](Self::by_fallback)).
    pub fn decided_by_fallback(&self) -> bool {
        self.fallback
    }
}

/// Which limit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// Requests per minute (81101).
    Requests,
    /// Tokens per minute (81103).
    Tokens,
}

/// The decision on an [`Acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted; the tokens are reserved.
    Admitted(Snapshot),
    /// Refused; nothing is held. Retry after `wait` nanoseconds.
    Refused {
        /// The limit that refused.
        exceeded: Exceeded,
        /// Time until the request would be admitted.
        wait: Nanos,
        /// The state, for headers.
        snapshot: Snapshot,
    },
    /// The reservation is larger than the token bucket: it can never be admitted.
    Oversized,
    /// The key's quota, kept by the store, is used up (81005).
    QuotaExhausted,
    /// The store could not decide (a server store that is down or slow, failing closed).
    Unavailable,
}

/// A decision now, or one that needs a round trip.
#[derive(Debug)]
pub enum Acquired<F> {
    /// Decided in memory.
    Now(Outcome),
    /// Decided by a server; the future resolves to the outcome.
    Later(F),
}

/// Per-key limiter state: requests and tokens decided together, then reconciled.
///
/// The in-memory [`MemoryStore`] answers [`Acquired::Now`]; a store on a server (Redis) answers
/// [`Acquired::Later`] with one round trip that decides both limits atomically, or
/// [`Acquired::Now`] when it decides without the server (`RedisStore` while it pauses its
/// asking). Reconciliation
/// ([`reconcile`](RateStore::reconcile)) never waits: a server store sends it in the
/// background, one round trip per response.
///
/// A store of your own, here one that counts the refusals of the store it wraps:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_maas::limit::{
///     Acquire, Acquired, LimitKey, MemoryStore, MonotonicClock, Outcome, Rate, RateStore,
///     Reconcile, TokenRateLimitLayer,
/// };
///
/// #[derive(Default)]
/// struct Counted {
///     inner: MemoryStore,
///     refused: AtomicU64,
/// }
///
/// impl RateStore for Counted {
///     // Decided in memory: never pending.
///     type Pending = std::future::Ready<Outcome>;
///
///     fn acquire(&self, ask: Acquire) -> Acquired<Self::Pending> {
///         let outcome = match self.inner.acquire(ask) {
///             Acquired::Now(outcome) => outcome,
///             Acquired::Later(ready) => ready.into_inner(),
///         };
///         if matches!(outcome, Outcome::Refused { .. }) {
///             self.refused.fetch_add(1, Ordering::Relaxed);
///         }
///         Acquired::Now(outcome)
///     }
///
///     fn reconcile(&self, settled: Reconcile) {
///         self.inner.reconcile(settled)
///     }
/// }
///
/// let store = Counted::default();
/// let ask = || Acquire {
///     key: LimitKey(1),
///     requests: Some(Rate::per_minute(1, 1)),
///     tokens: None,
///     reserve: 0,
///     quota: None,
///     now: 1,
/// };
/// assert!(matches!(store.acquire(ask()), Acquired::Now(Outcome::Admitted(_))));
/// assert!(matches!(store.acquire(ask()), Acquired::Now(Outcome::Refused { .. })));
/// assert_eq!(store.refused.load(Ordering::Relaxed), 1);
/// let layer = TokenRateLimitLayer::with(store, MonotonicClock::new());
/// # let _ = layer;
/// ```
pub trait RateStore: Send + Sync + 'static {
    /// The future of a decision that needs a round trip.
    type Pending: Future<Output = Outcome> + Send + 'static;

    /// Decides one request: the request slot and the token reservation together. When the
    /// tokens are refused, the request slot is given back.
    fn acquire(&self, ask: Acquire) -> Acquired<Self::Pending>;

    /// Reconciles one admitted request once its answer is known, in one call, never waiting:
    /// corrects its token reservation by what was used (`used > reserved` charges the
    /// difference, `used < reserved` refunds it, never above the limit), gives its request slot
    /// back when a limiter further in refused it (it never reached the model), and charges
    /// the key's quota, for stores that keep quotas shared between gateway replicas (the key's
    /// own [`Quota`](crate::auth::Quota) is charged in any case). Each only when asked.
    ///
    /// A store on a server sends the whole reconciliation in one round trip, applied
    /// atomically.
    ///
    /// ```
    /// use tower_maas::limit::{LimitKey, MemoryStore, Rate, RateStore, Reconcile};
    ///
    /// let store = MemoryStore::new();
    /// // 500 tokens were reserved at admission; the answer reported 60.
    /// let mut settled = Reconcile::new(LimitKey(7), 1_000_000);
    /// settled.tokens = Some(Rate::per_minute(10_000, 0));
    /// settled.reserved = 500;
    /// settled.used = 60;
    /// settled.quota = Some(60);
    /// store.reconcile(settled);
    /// ```
    fn reconcile(&self, settled: Reconcile);
}

/// One admitted request's reconciliation, once its answer is known: see
/// [`RateStore::reconcile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconcile {
    /// Whose state.
    pub key: LimitKey,
    /// The tokens' rate, when the reservation is corrected from `reserved` to `used`; `None`
    /// leaves the reservation standing (no usage reported, a stream cut short).
    pub tokens: Option<Rate>,
    /// Tokens reserved at admission.
    pub reserved: u64,
    /// Tokens used (0 for a request withdrawn or refused further in). Read only with `tokens`.
    pub used: u64,
    /// The requests' rate, when the request slot goes back (a limiter further in refused).
    pub release: Option<Rate>,
    /// Tokens to charge to the key's quota, when the key has one; may be 0.
    pub quota: Option<u64>,
    /// The admission was its store's fallback's ([`Snapshot::decided_by_fallback`]): a server
    /// store failing open reconciles its rate state in that memory alone, never on the
    /// server, which did not hold it (and may have given back an admission that came too late
    /// already). A quota, which counts the tokens used, is sent to the server all the same.
    pub fallback: bool,
    /// When, by the limiter's clock.
    pub now: Nanos,
}

impl Reconcile {
    /// Nothing to reconcile yet for `key` at `now`: set the parts that apply.
    ///
    /// ```
    /// use tower_maas::limit::{LimitKey, Reconcile};
    ///
    /// let settled = Reconcile::new(LimitKey(1), 0);
    /// assert!(settled.tokens.is_none() && settled.release.is_none() && settled.quota.is_none());
    /// ```
    #[must_use]
    pub const fn new(key: LimitKey, now: Nanos) -> Self {
        Self {
            key,
            tokens: None,
            reserved: 0,
            used: 0,
            release: None,
            quota: None,
            fallback: false,
            now,
        }
    }
}

/// Keys below this are kept in a flat array indexed by the key: no hashing, no lock.
const DENSE_KEYS: u64 = 1 << 22;
const SEGMENT: usize = 1024;

/// The state of one key: the requests TAT and the tokens TAT, on a cache line of their own so
/// that two keys updated from two cores do not contend.
#[repr(align(64))]
#[derive(Default)]
struct Cell {
    requests: AtomicU64,
    tokens: AtomicU64,
}

/// A hasher for keys that are already well spread (`u64` ids): a multiply, no rounds.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// One shard of the sparse map, and its size after its last sweep.
#[derive(Default)]
struct Sparse {
    cells: HashMap<u64, Box<Cell>, BuildHasherDefault<IdHasher>>,
    swept_at: usize,
}

const SPARSE_SHARDS: usize = 16;

/// The in-memory [`RateStore`].
///
/// Keys under 2²² (the ids [`InMemoryKeyStore`](crate::auth::InMemoryKeyStore) hands out are
/// dense from 0, and ids given to it should be small too) live in an array of 1024-key
/// segments created on first use, reached by indexing: a decision is two loads and one
/// compare-exchange per limit, with no hashing and no lock. Larger keys live in a sharded map whose fully recovered entries are evicted a shard at
/// a time, so its memory is bounded by the keys active in the last minute.
///
/// ```
/// use tower_maas::limit::{Acquire, Acquired, LimitKey, MemoryStore, Outcome, Rate, RateStore};
///
/// let store = MemoryStore::new();
/// // 1000 tokens a minute, all at once; 600 reserved now leaves 400.
/// let ask = |reserve| Acquire {
///     key: LimitKey(7),
///     requests: None,
///     tokens: Some(Rate::per_minute(1000, 1000)),
///     reserve,
///     quota: None,
///     now: 1,
/// };
/// assert!(matches!(store.acquire(ask(600)), Acquired::Now(Outcome::Admitted(_))));
/// assert!(matches!(store.acquire(ask(600)), Acquired::Now(Outcome::Refused { .. })));
/// assert!(matches!(store.acquire(ask(400)), Acquired::Now(Outcome::Admitted(_))));
/// ```
pub struct MemoryStore {
    segments: Box<[OnceLock<Box<[Cell]>>]>,
    sparse: Box<[Mutex<Sparse>]>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            segments: (0..(DENSE_KEYS as usize / SEGMENT))
                .map(|_| OnceLock::new())
                .collect(),
            sparse: (0..SPARSE_SHARDS)
                .map(|_| Mutex::new(Sparse::default()))
                .collect(),
        }
    }

    #[inline]
    fn with_cell<R>(&self, key: LimitKey, now: Nanos, f: impl FnOnce(&Cell) -> R) -> R {
        if key.0 < DENSE_KEYS {
            let segment = self.segments[key.0 as usize / SEGMENT]
                .get_or_init(|| (0..SEGMENT).map(|_| Cell::default()).collect());
            return f(&segment[key.0 as usize % SEGMENT]);
        }
        let shard = (key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SPARSE_SHARDS;
        let mut shard = self.sparse[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Entries whose TATs are behind `now` hold nothing a fresh entry would not: once a shard
        // has doubled since its last sweep they are dropped, so the work is constant per insert
        // and memory stays within twice the keys active in the last minute.
        if shard.cells.len() >= 2 * shard.swept_at.max(32) {
            shard.cells.retain(|_, cell| {
                cell.requests.load(Ordering::Relaxed) > now
                    || cell.tokens.load(Ordering::Relaxed) > now
            });
            shard.swept_at = shard.cells.len();
        }
        f(shard.cells.entry(key.0).or_default())
    }

    /// How many keys beyond the dense range are tracked (for tests and metrics).
    pub fn sparse_len(&self) -> usize {
        self.sparse
            .iter()
            .map(|m| m.lock().map_or(0, |m| m.cells.len()))
            .sum()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

/// Decides both limits on one cell.
#[inline]
pub(crate) fn decide(cell_requests: &AtomicU64, cell_tokens: &AtomicU64, ask: &Acquire) -> Outcome {
    let now = ask.now;
    if let Some(tokens) = ask.tokens {
        if ask.reserve > tokens.burst() {
            return Outcome::Oversized;
        }
    }
    let mut snapshot = Snapshot::at(now);
    if let Some(rate) = ask.requests {
        match gcra::acquire(cell_requests, rate, 1, now) {
            Gcra::Admitted { tat } => snapshot = snapshot.with_requests(rate, tat),
            Gcra::Refused { wait, tat } => {
                snapshot = snapshot.with_requests(rate, tat);
                if let Some(tokens) = ask.tokens {
                    snapshot = snapshot.with_tokens(tokens, cell_tokens.load(Ordering::Acquire));
                }
                return Outcome::Refused {
                    exceeded: Exceeded::Requests,
                    wait,
                    snapshot,
                };
            }
        }
    }
    if let Some(rate) = ask.tokens {
        match gcra::acquire(cell_tokens, rate, ask.reserve, now) {
            Gcra::Admitted { tat } => snapshot = snapshot.with_tokens(rate, tat),
            Gcra::Refused { wait, tat } => {
                // Requests and tokens are decided together: the request slot goes back.
                if let Some(requests) = ask.requests {
                    gcra::refund(cell_requests, requests, 1, now);
                    snapshot =
                        snapshot.with_requests(requests, cell_requests.load(Ordering::Acquire));
                }
                snapshot = snapshot.with_tokens(rate, tat);
                return Outcome::Refused {
                    exceeded: Exceeded::Tokens,
                    wait,
                    snapshot,
                };
            }
        }
    }
    Outcome::Admitted(snapshot)
}

impl RateStore for MemoryStore {
    type Pending = Ready<Outcome>;

    #[inline]
    fn acquire(&self, ask: Acquire) -> Acquired<Self::Pending> {
        Acquired::Now(self.with_cell(ask.key, ask.now, |cell| {
            decide(&cell.requests, &cell.tokens, &ask)
        }))
    }

    /// On the key's one cell; the quota is the key's own, charged by the limiter.
    fn reconcile(&self, settled: Reconcile) {
        let Reconcile {
            key,
            tokens,
            reserved,
            used,
            release,
            now,
            ..
        } = settled;
        let tokens = tokens.filter(|_| used != reserved);
        if tokens.is_none() && release.is_none() {
            return;
        }
        self.with_cell(key, now, |cell| {
            if let Some(rate) = tokens {
                if used > reserved {
                    gcra::charge(&cell.tokens, rate, used - reserved, now);
                } else {
                    gcra::refund(&cell.tokens, rate, reserved - used, now);
                }
            }
            if let Some(requests) = release {
                gcra::refund(&cell.requests, requests, 1, now);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TPM of 0 refuses even a reservation of one token, and an RPM of 0 the first request:
    /// taken as the least rate (one a minute), each admitted one.
    #[test]
    fn a_limit_of_zero_admits_nothing() {
        let store = MemoryStore::new();
        let ask = |requests, tokens| Acquire {
            key: LimitKey(1),
            requests,
            tokens,
            reserve: 1,
            now: 0,
            quota: None,
        };
        let decided = |ask| match store.acquire(ask) {
            Acquired::Now(outcome) => outcome,
            Acquired::Later(_) => unreachable!("memory decides at once"),
        };
        assert_eq!(
            decided(ask(None, Some(Rate::per_minute(0, 0)))),
            Outcome::Oversized
        );
        assert!(matches!(
            decided(ask(Some(Rate::per_minute(0, 1)), None)),
            Outcome::Refused {
                exceeded: Exceeded::Requests,
                ..
            }
        ));
    }
}
