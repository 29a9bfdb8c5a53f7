//! Invariants of the limiter over arbitrary arrival sequences.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use tower_maas::limit::{
    Acquire, Acquired, LimitKey, MemoryStore, Outcome, Rate, RateStore, Reconcile,
};

const MINUTE: u64 = 60_000_000_000;
const MS: u64 = 1_000_000;

fn admit(
    store: &MemoryStore,
    key: u64,
    requests: Option<Rate>,
    tokens: Option<Rate>,
    reserve: u64,
    now: u64,
) -> bool {
    let ask = Acquire {
        key: LimitKey(key),
        requests,
        tokens,
        reserve,
        now,
        quota: None,
    };
    match store.acquire(ask) {
        Acquired::Now(outcome) => matches!(outcome, Outcome::Admitted(_)),
        Acquired::Later(_) => unreachable!("the memory store decides at once"),
    }
}

/// The most admissions inside any window `[t, t + 60 s)`.
fn busiest_minute(mut admitted: Vec<u64>) -> usize {
    admitted.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..admitted.len() {
        while admitted[end] - admitted[start] >= MINUTE {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Corrects key 3's reservation of `reserved` tokens by the `used` an answer reported.
fn adjust(store: &MemoryStore, rate: Rate, reserved: u64, used: u64, now: u64) {
    let mut settled = Reconcile::new(LimitKey(3), now);
    (settled.tokens, settled.reserved, settled.used) = (Some(rate), reserved, used);
    store.reconcile(settled);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_minute_admits_more_than_the_limit_plus_the_burst(
        rpm in 1u64..600,
        burst in 1u64..30,
        gaps in prop::collection::vec(prop_oneof![Just(0u64), 0..50u64, 0..5_000u64], 1..600),
    ) {
        let store = MemoryStore::new();
        let rate = Rate::per_minute(rpm, burst);
        let mut now = MINUTE;
        let mut admitted = Vec::new();
        for gap in gaps {
            now += gap * MS;
            if admit(&store, 7, Some(rate), None, 0, now) {
                admitted.push(now);
            }
        }
        prop_assert!(busiest_minute(admitted) as u64 <= rpm + burst);
    }

    #[test]
    fn tokens_in_any_minute_stay_within_the_bucket_plus_a_minute(
        tpm in 10u64..5_000,
        asks in prop::collection::vec((0..3_000u64, 1..200u64), 1..300),
    ) {
        let store = MemoryStore::new();
        let rate = Rate::per_minute(tpm, tpm);
        let mut now = MINUTE;
        let mut admitted = Vec::new();
        for (gap, tokens) in asks {
            now += gap * MS;
            if admit(&store, 7, None, Some(rate), tokens, now) {
                admitted.push((now, tokens));
            }
        }
        for &(start, _) in &admitted {
            let in_window: u64 = admitted
                .iter()
                .filter(|(t, _)| *t >= start && *t < start + MINUTE)
                .map(|(_, n)| n)
                .sum();
            prop_assert!(in_window <= 2 * tpm, "{in_window} > 2 x {tpm}");
        }
    }

    #[test]
    fn refunds_never_raise_capacity_above_the_limit(
        tpm in 10u64..1_000,
        ops in prop::collection::vec((0..2_000u64, 1..100u64, 0..150u64), 1..100),
    ) {
        let store = MemoryStore::new();
        let rate = Rate::per_minute(tpm, tpm);
        let mut now = MINUTE;
        for (gap, reserve, used) in ops {
            now += gap * MS;
            if admit(&store, 3, None, Some(rate), reserve, now) {
                // The backend reports anything from nothing to more than reserved.
                adjust(&store, rate, reserve, used, now);
            }
            // Right now, no more than the whole bucket can be taken, one token at a time.
            let mut taken = 0;
            while taken <= tpm && admit(&store, 3, None, Some(rate), 1, now) {
                taken += 1;
            }
            prop_assert!(taken <= tpm, "took {taken} of a {tpm} bucket");
            // Put it back for the next round (a refund at `now` cannot exceed the bucket).
            adjust(&store, rate, taken, 0, now);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn two_threads_on_one_key_never_admit_more_than_the_limit_plus_the_burst(
        rpm in 1u64..300,
        burst in 1u64..20,
        gaps in prop::collection::vec(0..400u64, 200..800),
    ) {
        let store = Arc::new(MemoryStore::new());
        let rate = Rate::per_minute(rpm, burst);
        // One clock for both threads: each request takes the next instant.
        let clock = Arc::new(AtomicU64::new(MINUTE));
        let gaps = Arc::new(gaps);
        let run = |offset: usize| {
            let (store, clock, gaps) = (store.clone(), clock.clone(), gaps.clone());
            std::thread::spawn(move || {
                let mut admitted = Vec::new();
                for gap in gaps.iter().skip(offset).step_by(2) {
                    let now = clock.fetch_add(gap * MS + 1, Ordering::SeqCst);
                    if admit(&store, 11, Some(rate), None, 0, now) {
                        admitted.push(now);
                    }
                }
                admitted
            })
        };
        let (a, b) = (run(0), run(1));
        let mut admitted = a.join().unwrap();
        admitted.extend(b.join().unwrap());
        prop_assert!(busiest_minute(admitted) as u64 <= rpm + burst);
    }
}
