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

use std::hint::black_box;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower::Layer;

use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer, loads};

#[macro_use]
#[path = "common/five_layers.rs"]
mod five_layers;
use five_layers::KEY;
#[path = "common/service.rs"]
mod service;
use service::{Bare, run};

#[path = "common/chat_body.rs"]
mod chat_body;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (variant, size, iterations) = match args.as_slice() {
        [_, v, s, n, ..] => (v.as_str(), s.as_str(), n.parse::<usize>().unwrap_or(0)),
        _ => {
            eprintln!("usage: instructions serde|loads|layer|stack 1k|64k ITERATIONS");
            return;
        }
    };
    let body = chat_body::chat_body(if size == "64k" { 64 * 1024 } else { 1024 });
    let mut layer = RequestSchemaValidatorLayer::new()
        .models(ModelCatalog::new().model("DeepSeek-V3", 1 << 20))
        .layer(Bare::<Full<Bytes>>::new());
    // Built only when measured: the limiter's clock calibrates itself for a varying time.
    let mut stack = None;
    for _ in 0..iterations {
        match variant {
            "serde" => {
                black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
            }
            "loads" => {
                black_box(loads(&body).unwrap());
            }
            "stack" => {
                let stack = stack.get_or_insert_with(|| five_layers!(Bare::<Full<Bytes>>::new()));
                let req = Request::post("/v1/chat/completions")
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let res = run(stack, req);
                assert_eq!(res.status(), 200);
            }
            _ => {
                let req = Request::post("/v1/chat/completions")
                    .header("content-type", "application/json")
                    .header("content-length", body.len())
                    .body(Full::new(body.clone()))
                    .unwrap();
                let res = run(&mut layer, req);
                assert_eq!(res.status(), 200);
            }
        }
    }
}
