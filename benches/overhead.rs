//! Per-request overhead of ErrorEnvelope and BearerAuth against the bare service, side by side
//! in one run (compare ratios, not absolute times).
//!
//! `cargo bench --bench overhead`

#[path = "common/service.rs"]
mod service;
use service::{Bare, run};

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::Layer;
use tower_maas::ErrorEnvelopeLayer;
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};

const KEY: &str = "sk-bench-0123456789abcdef0123456789abcdef";

fn request(authorization: &str) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn store(keys: usize) -> Arc<InMemoryKeyStore> {
    let store = Arc::new(InMemoryKeyStore::new());
    store.insert(KEY, KeyPolicy::new().rpm(60)).unwrap();
    for i in 1..keys {
        store
            .insert(&format!("sk-other-{i:032}"), KeyPolicy::new())
            .unwrap();
    }
    store
}

fn overhead(c: &mut Criterion) {
    let allowed = format!("Bearer {KEY}");
    let unknown = "Bearer sk-unknown-0123456789abcdef0123456789ab";
    let mut group = c.benchmark_group("per_request");

    let mut bare = Bare::<Full<Bytes>>::new();
    group.bench_function("bare service", |b| {
        b.iter_batched(
            || request(&allowed),
            |req| black_box(run(&mut bare, req)),
            BatchSize::SmallInput,
        )
    });

    let mut envelope = ErrorEnvelopeLayer::new().layer(Bare::<Full<Bytes>>::new());
    group.bench_function("ErrorEnvelope", |b| {
        b.iter_batched(
            || request(&allowed),
            |req| black_box(run(&mut envelope, req)),
            BatchSize::SmallInput,
        )
    });

    for keys in [1, 100_000] {
        let mut auth = BearerAuthLayer::new(store(keys)).layer(Bare::<Full<Bytes>>::new());
        group.bench_function(format!("BearerAuth allow ({keys} keys)"), |b| {
            b.iter_batched(
                || request(&allowed),
                |req| black_box(run(&mut auth, req)),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("BearerAuth refuse 81003 ({keys} keys)"), |b| {
            b.iter_batched(
                || request(unknown),
                |req| black_box(run(&mut auth, req)),
                BatchSize::SmallInput,
            )
        });
    }

    let mut stack = ErrorEnvelopeLayer::new()
        .layer(BearerAuthLayer::new(store(1)).layer(Bare::<Full<Bytes>>::new()));
    group.bench_function("ErrorEnvelope + BearerAuth allow", |b| {
        b.iter_batched(
            || request(&allowed),
            |req| black_box(run(&mut stack, req)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ErrorEnvelope + BearerAuth refuse 81002", |b| {
        b.iter_batched(
            || {
                let mut req = request(&allowed);
                req.headers_mut().remove("authorization");
                req
            },
            |req| black_box(run(&mut stack, req)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = overhead
}
criterion_main!(benches);
