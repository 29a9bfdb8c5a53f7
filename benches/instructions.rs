//! Deterministic companion to `benches/validate.rs`: runs one variant a fixed number of times,
//! for counting instructions under callgrind, which this noisy VM cannot disturb.
//!
//! ```sh
//! cargo bench --bench instructions --no-run
//! for v in serde loads layer; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/deps/instructions-* $v 64k 200 2>&1 | grep refs
//! done
//! ```
//! Run each with 0 iterations too and subtract, to leave out start-up.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (variant, size, iterations) = match args.as_slice() {
        [_, v, s, n, ..] => (v.as_str(), s.as_str(), n.parse::<usize>().unwrap_or(0)),
        _ => {
            eprintln!("usage: instructions serde|loads|layer 1k|64k ITERATIONS");
            return;
        }
    };
    let body = chat_body::chat_body(if size == "64k" { 64 * 1024 } else { 1024 });
    let mut layer = RequestSchemaValidatorLayer::new()
        .models(ModelCatalog::new().model("DeepSeek-V3", 1 << 20))
        .layer(Bare);
    for _ in 0..iterations {
        match variant {
            "serde" => {
                black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
            }
            "loads" => {
                black_box(loads(&body).unwrap());
            }
            _ => {
                let req = Request::post("/v1/chat/completions")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let mut cx = Context::from_waker(Waker::noop());
                assert!(
                    Service::<Request<Full<Bytes>>>::poll_ready(&mut layer, &mut cx).is_ready()
                );
                let mut future = pin!(layer.call(req));
                let Poll::Ready(Ok(res)) = future.as_mut().poll(&mut cx) else {
                    panic!("the layer completes at once on a full body");
                };
                assert_eq!(res.status(), 200);
            }
        }
    }
}
