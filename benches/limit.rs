//! The limiter's hot path against governor (the keyed check) and tower_governor (the layer),
//! side by side in one run. Compare ratios, not absolute times.
//!
//! `cargo bench --bench limit`

#[path = "common/service.rs"]
mod service;
use service::{Bare, run};

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use governor::clock::{QuantaInstant, QuantaUpkeepClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::Request;
use tower::Layer;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_maas::auth::{InMemoryKeyStore, KeyPolicy, Principal};
use tower_maas::limit::{
    Acquire, Acquired, Clock, CoarseClock, LimitKey, MemoryStore, MonotonicClock, Outcome, Rate,
    RateStore, TokenRateLimitLayer,
};

const KEYS: u64 = 100_000;
/// Limits so high that the allow path is what is measured.
const HIGH: u32 = 1_000_000_000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// One RPM+TPM decision in our store, clock read included (as governor reads its own).
#[inline]
fn ours(store: &MemoryStore, clock: &impl Clock, key: u64, rpm: Rate, tpm: Rate) -> bool {
    let ask = Acquire {
        key: LimitKey(key),
        requests: Some(rpm),
        tokens: Some(tpm),
        reserve: 1,
        quota: None,
        now: clock.now(),
    };
    matches!(store.acquire(ask), Acquired::Now(Outcome::Admitted(_)))
}

fn checks(c: &mut Criterion) {
    let high_rpm = Rate::per_minute(u64::from(HIGH), u64::from(HIGH));
    let high_tpm = Rate::per_minute(u64::from(HIGH), u64::from(HIGH));
    let clock = MonotonicClock::new();
    let store = MemoryStore::new();
    let governor = RateLimiter::keyed(Quota::per_minute(nz(HIGH)).allow_burst(nz(HIGH)));

    let mut group = c.benchmark_group("check");
    group.bench_function("one key: governor check_key (RPM only)", |b| {
        b.iter(|| black_box(governor.check_key(&black_box(7u64)).is_ok()))
    });
    group.bench_function("one key: tower-maas RPM+TPM", |b| {
        b.iter(|| black_box(ours(&store, &clock, black_box(7), high_rpm, high_tpm)))
    });
    // Both on a clock read from memory, updated every millisecond by a thread: governor's
    // `QuantaUpkeepClock` and our `CoarseClock`.
    let upkeep = QuantaUpkeepClock::from_interval(Duration::from_millis(1)).unwrap();
    let governor_upkeep: RateLimiter<
        u64,
        DefaultKeyedStateStore<u64>,
        QuantaUpkeepClock,
        NoOpMiddleware<QuantaInstant>,
    > = RateLimiter::new(
        Quota::per_minute(nz(HIGH)).allow_burst(nz(HIGH)),
        DefaultKeyedStateStore::<u64>::default(),
        upkeep,
    );
    let coarse = CoarseClock::new();
    group.bench_function(
        "one key, coarse clock: governor check_key (RPM only)",
        |b| b.iter(|| black_box(governor_upkeep.check_key(&black_box(7u64)).is_ok())),
    );
    group.bench_function("one key, coarse clock: tower-maas RPM+TPM", |b| {
        b.iter(|| black_box(ours(&store, &coarse, black_box(7), high_rpm, high_tpm)))
    });
    // The two parts of the line above, to show where its time goes: the clock read that
    // governor pays as well, and the decision given the time.
    group.bench_function("part: MonotonicClock::now alone", |b| {
        b.iter(|| black_box(clock.now()))
    });
    let mut now = clock.now();
    group.bench_function("part: tower-maas RPM+TPM, time given", |b| {
        b.iter(|| {
            now += 1_000;
            let ask = Acquire {
                key: LimitKey(black_box(7)),
                requests: Some(high_rpm),
                tokens: Some(high_tpm),
                reserve: 1,
                quota: None,
                now: black_box(now),
            };
            black_box(matches!(
                store.acquire(ask),
                Acquired::Now(Outcome::Admitted(_))
            ))
        })
    });

    for key in 0..KEYS {
        let _ = governor.check_key(&key);
        ours(&store, &clock, key, high_rpm, high_tpm);
    }
    let mut i = 0u64;
    group.bench_function("100k keys: governor check_key (RPM only)", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(governor.check_key(&i).is_ok())
        })
    });
    group.bench_function("100k keys: tower-maas RPM+TPM", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(ours(&store, &clock, i, high_rpm, high_tpm))
        })
    });

    // Rejections: a key at its limit.
    let tight = Rate::per_minute(1, 1);
    let tight_governor = RateLimiter::keyed(Quota::per_minute(nz(1)));
    let _ = tight_governor.check_key(&1u64);
    ours(&store, &clock, 1, tight, high_tpm);
    group.bench_function("reject: governor check_key", |b| {
        b.iter(|| black_box(tight_governor.check_key(&black_box(1u64)).is_err()))
    });
    group.bench_function("reject: tower-maas RPM+TPM", |b| {
        b.iter(|| black_box(!ours(&store, &clock, black_box(1), tight, high_tpm)))
    });

    // A key never seen before.
    let mut fresh = 1_000_000u64;
    group.bench_function("new key: governor check_key", |b| {
        b.iter(|| {
            fresh += 1;
            black_box(governor.check_key(&fresh).is_ok())
        })
    });
    let mut fresh = KEYS;
    group.bench_function("new key: tower-maas RPM+TPM", |b| {
        b.iter(|| {
            fresh += 1;
            black_box(ours(&store, &clock, fresh % (1 << 22), high_rpm, high_tpm))
        })
    });
    group.finish();

    // Two threads, each on its own key or both on one key; time per check.
    let mut group = c.benchmark_group("two threads");
    let store = Arc::new(MemoryStore::new());
    let governor = Arc::new(RateLimiter::keyed(
        Quota::per_minute(nz(HIGH)).allow_burst(nz(HIGH)),
    ));
    for (name, keys) in [("distinct keys", [1u64, 2]), ("one key", [3u64, 3])] {
        let g = governor.clone();
        group.bench_function(format!("{name}: governor"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, keys, {
                    let g = g.clone();
                    move |k| {
                        black_box(g.check_key(&k).is_ok());
                    }
                })
            })
        });
        let s = store.clone();
        let shared_clock = Arc::new(clock.clone());
        group.bench_function(format!("{name}: tower-maas"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, keys, {
                    let (s, clock) = (s.clone(), shared_clock.clone());
                    move |k| {
                        black_box(ours(&s, &*clock, k, high_rpm, high_tpm));
                    }
                })
            })
        });
    }
    group.finish();
}

/// Runs `iters` checks split over two threads; the wall time divided by the total.
fn two_threads(
    iters: u64,
    keys: [u64; 2],
    check: impl Fn(u64) + Send + Sync + Clone + 'static,
) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let check = check.clone();
            std::thread::spawn(move || {
                for _ in 0..iters / 2 {
                    check(key);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

/// tower_governor keyed by the authenticated key, as ours is.
#[derive(Clone)]
struct ByPrincipal;

impl KeyExtractor for ByPrincipal {
    type Key = u64;

    fn extract<T>(&self, req: &Request<T>) -> Result<u64, tower_governor::GovernorError> {
        req.extensions()
            .get::<Principal>()
            .map(|p| p.key_id().0)
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}

fn layers(c: &mut Criterion) {
    let keys = InMemoryKeyStore::new();
    let open = keys
        .insert(
            "sk-open",
            KeyPolicy::new().rpm(u64::from(HIGH)).tpm(u64::from(HIGH)),
        )
        .unwrap();
    let shut = keys
        .insert("sk-shut", KeyPolicy::new().rpm(1).tpm(u64::from(HIGH)))
        .unwrap();
    let request = |id| {
        let mut req = Request::new(axum::body::Body::empty());
        req.extensions_mut().insert(keys.get(id).unwrap());
        req
    };

    let mut group = c.benchmark_group("layer");
    let mut bare = Bare::<axum::body::Body>::new();
    group.bench_function("bare service", |b| {
        b.iter_batched(
            || request(open),
            |r| black_box(run(&mut bare, r)),
            BatchSize::SmallInput,
        )
    });

    // One token per request, as a parsed request for a short prompt would reserve.
    let mut maas = TokenRateLimitLayer::new()
        .default_reservation(1)
        .layer(Bare::<axum::body::Body>::new());
    group.bench_function("tower-maas TokenRateLimit, headers: allow", |b| {
        b.iter_batched(
            || request(open),
            |r| black_box(run(&mut maas, r)),
            BatchSize::SmallInput,
        )
    });
    let _ = run(&mut maas, request(shut));
    group.bench_function("tower-maas TokenRateLimit, headers: reject", |b| {
        b.iter_batched(
            || request(shut),
            |r| black_box(run(&mut maas, r)),
            BatchSize::SmallInput,
        )
    });

    let mut maas_quiet = TokenRateLimitLayer::new()
        .default_reservation(1)
        .headers(false)
        .layer(Bare::<axum::body::Body>::new());
    group.bench_function("tower-maas TokenRateLimit, no headers: allow", |b| {
        b.iter_batched(
            || request(open),
            |r| black_box(run(&mut maas_quiet, r)),
            BatchSize::SmallInput,
        )
    });

    let config = GovernorConfigBuilder::default()
        .key_extractor(ByPrincipal)
        .per_millisecond(1)
        .burst_size(HIGH)
        .finish()
        .unwrap();
    let mut governed = GovernorLayer::new(config).layer(Bare::<axum::body::Body>::new());
    group.bench_function("tower_governor, no headers: allow", |b| {
        b.iter_batched(
            || request(open),
            |r| black_box(run(&mut governed, r)),
            BatchSize::SmallInput,
        )
    });
    let config = GovernorConfigBuilder::default()
        .key_extractor(ByPrincipal)
        .per_millisecond(1)
        .burst_size(HIGH)
        .use_headers()
        .finish()
        .unwrap();
    let mut governed_headers = GovernorLayer::new(config).layer(Bare::<axum::body::Body>::new());
    group.bench_function("tower_governor, headers: allow", |b| {
        b.iter_batched(
            || request(open),
            |r| black_box(run(&mut governed_headers, r)),
            BatchSize::SmallInput,
        )
    });
    let config = GovernorConfigBuilder::default()
        .key_extractor(ByPrincipal)
        .per_second(60)
        .burst_size(1)
        .finish()
        .unwrap();
    let mut governed_shut = GovernorLayer::new(config).layer(Bare::<axum::body::Body>::new());
    let _ = run(&mut governed_shut, request(shut));
    group.bench_function("tower_governor, no headers: reject", |b| {
        b.iter_batched(
            || request(shut),
            |r| black_box(run(&mut governed_shut, r)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = checks, layers
}
criterion_main!(benches);
