//! Per-request overhead of ErrorEnvelope and BearerAuth against the bare service, side by side
//! in one run (compare ratios, not absolute times).
//!
//! `cargo bench --bench overhead`

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};
use tower_maas::ErrorEnvelopeLayer;
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};

const KEY: &str = "sk-bench-0123456789abcdef0123456789abcdef";

/// The inner service: answers at once, so only the layers' work is measured.
#[derive(Clone, Copy)]
struct Bare;

impl<B> Service<Request<B>> for Bare {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

/// Readies, calls and polls once: every service here completes without waiting.
fn run<S, B>(service: &mut S, req: Request<B>) -> S::Response
where
    S: Service<Request<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = pin!(service.call(req));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(res) => res.unwrap(),
        Poll::Pending => unreachable!("the bare service answers at once"),
    }
}

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

    let mut bare = Bare;
    group.bench_function("bare service", |b| {
        b.iter_batched(
            || request(&allowed),
            |req| black_box(run(&mut bare, req)),
            BatchSize::SmallInput,
        )
    });

    let mut envelope = ErrorEnvelopeLayer::new().layer(Bare);
    group.bench_function("ErrorEnvelope", |b| {
        b.iter_batched(
            || request(&allowed),
            |req| black_box(run(&mut envelope, req)),
            BatchSize::SmallInput,
        )
    });

    for keys in [1, 100_000] {
        let mut auth = BearerAuthLayer::new(store(keys)).layer(Bare);
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

    let mut stack = ErrorEnvelopeLayer::new().layer(BearerAuthLayer::new(store(1)).layer(Bare));
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
