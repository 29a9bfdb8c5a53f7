//! RequestSchemaValidator on 1 KB and 64 KB chat bodies against a bare
//! `serde_json::from_slice::<serde_json::Value>` of the same bytes, in one run.
//!
//! `cargo bench --bench validate`

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};
use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer, loads};

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

#[path = "common/chat_body.rs"]
mod chat_body;
use chat_body::chat_body;

fn run<S>(service: &mut S, req: Request<Full<Bytes>>) -> S::Response
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = pin!(service.call(req));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(res) => res.unwrap(),
        Poll::Pending => unreachable!("a full body and a ready service complete at once"),
    }
}

fn validate(c: &mut Criterion) {
    let mut layer = RequestSchemaValidatorLayer::new()
        .models(ModelCatalog::new().model("DeepSeek-V3", 1 << 20))
        .layer(Bare);
    for (name, size) in [("1KB", 1024), ("64KB", 64 * 1024)] {
        let body = chat_body(size);
        let mut group = c.benchmark_group(format!("chat_{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("serde_json::from_slice::<Value>", |b| {
            b.iter(|| {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
            })
        });
        group.bench_function("loads (Python-exact decoder)", |b| {
            b.iter(|| black_box(loads(black_box(&body)).unwrap()))
        });
        group.bench_function("RequestSchemaValidator (whole layer)", |b| {
            b.iter_batched(
                || {
                    Request::post("/v1/chat/completions")
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .unwrap()
                },
                |req| {
                    let res = run(&mut layer, req);
                    assert_eq!(res.status(), 200);
                    black_box(res)
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = validate
}
criterion_main!(benches);
