//! RequestSchemaValidator on 1 KB and 64 KB chat bodies against a bare
//! `serde_json::from_slice::<serde_json::Value>` of the same bytes, in one run.
//!
//! `cargo bench --bench validate`

#[path = "common/service.rs"]
mod service;
use service::{Bare, run};

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::Layer;
use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer, loads};

#[path = "common/chat_body.rs"]
mod chat_body;
use chat_body::chat_body;

fn validate(c: &mut Criterion) {
    let mut layer = RequestSchemaValidatorLayer::new()
        .models(ModelCatalog::new().model("DeepSeek-V3", 1 << 20))
        .layer(Bare::<Full<Bytes>>::new());
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
                        .header("content-length", body.len())
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
