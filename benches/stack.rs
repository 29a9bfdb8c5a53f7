//! The whole MaaS stack in process, on a 1 KB chat body, against the bare service; and the
//! same with every layer alone, to see where the time goes.
//!
//! `cargo bench --bench stack`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::Layer;
use tower_maas::ErrorEnvelopeLayer;
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};
use tower_maas::limit::TokenRateLimitLayer;
use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier};
use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer};

#[path = "common/chat_body.rs"]
mod chat_body;
#[path = "common/service.rs"]
mod service;
use service::{Bare, run};

const KEY: &str = "sk-stack-000000000000000000000000";

fn stack(c: &mut Criterion) {
    let body = chat_body::chat_body(1024);
    let keys = Arc::new(InMemoryKeyStore::new());
    keys.insert(KEY, KeyPolicy::new().rpm(1 << 40).tpm(1 << 40))
        .unwrap();
    let terms = KeywordClassifier::builder()
        .terms_from_text("forbidden phrase one\nforbidden phrase two\n")
        .build()
        .unwrap();
    let request = || {
        Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap()
    };

    let mut group = c.benchmark_group("stack, 1 KB chat body");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut bare = Bare::<Full<Bytes>>::new();
    group.bench_function("bare service", |b| {
        b.iter_batched(
            request,
            |r| drop(black_box(run(&mut bare, r))),
            BatchSize::SmallInput,
        )
    });
    let mut five = ErrorEnvelopeLayer::new().layer(
        BearerAuthLayer::new(keys.clone()).layer(
            RequestSchemaValidatorLayer::new()
                .models(ModelCatalog::new().model("DeepSeek-V3", 1 << 20))
                .layer(TokenRateLimitLayer::new().layer(
                    ContentRiskFilterLayer::new(terms.clone()).layer(Bare::<Full<Bytes>>::new()),
                )),
        ),
    );
    group.bench_function(
        "ErrorEnvelope + BearerAuth + validator + TokenRateLimit + risk",
        |b| {
            b.iter_batched(
                request,
                |r| drop(black_box(run(&mut five, r))),
                BatchSize::SmallInput,
            )
        },
    );
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
