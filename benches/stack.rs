//! The whole MaaS stack in process, on a 1 KB chat body, against the bare service; and the
//! same with every layer alone, to see where the time goes.
//!
//! `cargo bench --bench stack`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;

#[path = "common/chat_body.rs"]
mod chat_body;
#[macro_use]
#[path = "common/five_layers.rs"]
mod five_layers;
#[path = "common/service.rs"]
mod service;
use service::{Bare, run};

use five_layers::KEY;

fn stack(c: &mut Criterion) {
    let body = chat_body::chat_body(1024);
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
    let mut five = five_layers!(Bare::<Full<Bytes>>::new());
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

    // The same, with the service answering a JSON completion (about 600 bytes) whose text the
    // filter checks and whose usage the limiter settles: the answer's side of the stack, and
    // the same answer from a bare service for the baseline.
    // And once more with the answer's non-ASCII text escaped.
    for (name, answer) in [
        ("JSON answer", ANSWER),
        ("ASCII-escaped JSON answer", ANSWER_ASCII),
    ] {
        let mut answering_bare = Answering(answer);
        group.bench_function(format!("bare service, {name}"), |b| {
            b.iter_batched(
                request,
                |r| drop(black_box(run(&mut answering_bare, r))),
                BatchSize::SmallInput,
            )
        });
        let mut answered = five_layers!(Answering(answer));
        group.bench_function(format!("the five layers, {name}"), |b| {
            b.iter_batched(
                request,
                |r| drop(black_box(run(&mut answered, r))),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A chat completion of about 600 bytes, as a model server sends it.
const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1732200000,"model":"DeepSeek-V3","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog; 快速的棕色狐狸跳过了懒狗。 The quick brown fox jumps over the lazy dog; 快速的棕色狐狸跳过了懒狗。 The quick brown fox jumps over the lazy dog; 快速的棕色狐狸跳过了懒狗。"},"finish_reason":"stop"}],"usage":{"prompt_tokens":180,"completion_tokens":60,"total_tokens":240}}"#;

/// [`ANSWER`] as a server that writes ASCII only sends it (Python's `json.dumps` by default):
/// every non-ASCII character a `\u` escape.
const ANSWER_ASCII: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1732200000,"model":"DeepSeek-V3","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog; \u5feb\u901f\u7684\u68d5\u8272\u72d0\u72f8\u8df3\u8fc7\u4e86\u61d2\u72d7\u3002 The quick brown fox jumps over the lazy dog; \u5feb\u901f\u7684\u68d5\u8272\u72d0\u72f8\u8df3\u8fc7\u4e86\u61d2\u72d7\u3002 The quick brown fox jumps over the lazy dog; \u5feb\u901f\u7684\u68d5\u8272\u72d0\u72f8\u8df3\u8fc7\u4e86\u61d2\u72d7\u3002"},"finish_reason":"stop"}],"usage":{"prompt_tokens":180,"completion_tokens":60,"total_tokens":240}}"#;

/// Answers every request with its answer at once.
#[derive(Clone, Copy)]
struct Answering(&'static str);

impl<R> tower::Service<Request<R>> for Answering {
    type Response = http::Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<R>) -> Self::Future {
        std::future::ready(Ok(http::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(self.0.as_bytes())))
            .unwrap_or_default()))
    }
}

criterion_group!(benches, stack);
criterion_main!(benches);
