//! Fuzz target for the whole validation check: `RequestSchemaValidatorLayer` over a trivial
//! service, driven without an async runtime (a full body makes the future complete at once, as
//! in `benches/instructions.rs`).
//!
//! Each input is a request body, sent as a `POST` through several validators: the three
//! built-in routes (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`) in both
//! dialects, with `Content-Type: application/json`; `/v1/chat/completions` with
//! `text/plain` (the bytes are echoed in a Python `repr`); and `/v1/chat/completions` with a
//! 64-byte body limit (413 for longer bodies). The catalog holds a model with a roomy context
//! and one with a tiny context, so that the context-length check is reached.
//!
//! Properties:
//!
//! 1. Nothing panics; the future is ready at the first poll, and so is the response body.
//! 2. The status is 200, 400, 404 or 413.
//! 3. On 200 the body is the inner service's (`ok`), and `loads` accepted the body as an
//!    object; otherwise the body is valid JSON.

#![no_main]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service};
use tower_maas::validate::{
    Json, ModelCatalog, RequestSchemaValidator, RequestSchemaValidatorLayer, ValidationDialect,
    loads,
};

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

/// One way of sending the body: a validator, a path and a `Content-Type`.
struct Setup {
    service: RequestSchemaValidator<Bare>,
    path: &'static str,
    content_type: &'static str,
}

static SETUPS: LazyLock<Vec<Setup>> = LazyLock::new(|| {
    let catalog = ModelCatalog::new()
        .model("DeepSeek-V3", 65_536)
        .model("mock-model", 4_096)
        .model("tiny", 8);
    let layer = |dialect| {
        RequestSchemaValidatorLayer::new()
            .models(catalog.clone())
            .dialect(dialect)
    };
    let mut setups = Vec::new();
    for dialect in [ValidationDialect::Gateway, ValidationDialect::Backend] {
        for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"] {
            setups.push(Setup {
                service: layer(dialect).layer(Bare),
                path,
                content_type: "application/json",
            });
        }
    }
    setups.push(Setup {
        service: layer(ValidationDialect::Gateway).layer(Bare),
        path: "/v1/chat/completions",
        content_type: "text/plain",
    });
    setups.push(Setup {
        service: layer(ValidationDialect::Gateway)
            .body_limit(64)
            .layer(Bare),
        path: "/v1/chat/completions",
        content_type: "application/json",
    });
    setups
});

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    for setup in SETUPS.iter() {
        let mut service = setup.service.clone();
        let req = Request::post(setup.path)
            .header("content-type", setup.content_type)
            .body(Full::new(body.clone()))
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Service::<Request<Full<Bytes>>>::poll_ready(&mut service, &mut cx).is_ready());
        let mut future = pin!(service.call(req));
        let Poll::Ready(Ok(res)) = future.as_mut().poll(&mut cx) else {
            panic!("the layer completes at once on a full body");
        };
        let status = res.status().as_u16();
        let mut collect = pin!(res.into_body().collect());
        let Poll::Ready(Ok(collected)) = collect.as_mut().poll(&mut cx) else {
            panic!("the response body is ready at once");
        };
        let bytes = collected.to_bytes();
        match status {
            200 => {
                assert_eq!(&bytes[..], b"ok", "200 with a body not the inner service's");
                assert!(
                    matches!(loads(data), Ok(Json::Dict(_))),
                    "{} {}: 200 for a body loads does not read as an object",
                    setup.path,
                    setup.content_type,
                );
            }
            400 | 404 | 413 => {
                if let Err(err) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    panic!(
                        "{} {}: {status} with a body that is not JSON ({err}): {:?}",
                        setup.path,
                        setup.content_type,
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
            _ => panic!(
                "{} {}: unexpected status {status}, body {:?}",
                setup.path,
                setup.content_type,
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
});
