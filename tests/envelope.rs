//! ErrorEnvelope over real sockets: inside an axum router and inside a bare hyper server.

mod common;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::routing::{get, post};
use bytes::Bytes;
use common::{FIXED_ID, empty, full, send, send_h2, serve_axum, serve_hyper};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{Layer, ServiceBuilder};
use tower_maas::{
    BackendTimeout, Dialect, ErrorEnvelope, ErrorEnvelopeLayer, MaasError, RequestId,
};

const APIG_0101_PREFIX: &str = r#"{"error_msg":"The API does not exist or has not been published in the environment","error_code":"APIG.0101","request_id":""#;

fn router() -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|Extension(id): Extension<RequestId>| async move { id.to_string() }),
        )
        .route(
            "/upstream-404",
            get(|| async { (StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#) }),
        )
        .route(
            "/refusal",
            get(|| async {
                MaasError::RpmExceeded { rpm: 60 }
                    .to_response(Dialect::Dual, &RequestId::generate())
            }),
        )
}

fn get_req(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "localhost")
        .body(empty())
        .unwrap()
}

#[tokio::test]
async fn every_response_gets_a_fresh_request_id_seen_by_the_handler() {
    let addr = serve_axum(router().layer(ErrorEnvelopeLayer::new())).await;
    let req = || {
        common::post("/v1/chat/completions", "{}")
            .body(full("{}"))
            .unwrap()
    };
    let first = send(addr, req()).await;
    let second = send(addr, req()).await;
    assert_eq!(first.status, 200);
    assert!(RequestId::is_valid(first.request_id().as_bytes()));
    // The handler saw the id the client got.
    assert_eq!(first.text(), first.request_id());
    assert_ne!(first.request_id(), second.request_id());
}

#[tokio::test]
async fn incoming_ids_are_kept_only_when_trusted_and_valid() {
    let untrusting = serve_axum(router().layer(ErrorEnvelopeLayer::new())).await;
    let trusting =
        serve_axum(router().layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true))).await;
    let with_id = |id: &str| {
        common::post("/v1/chat/completions", "{}")
            .header("x-request-id", id)
            .body(full("{}"))
            .unwrap()
    };

    let reply = send(untrusting, with_id(FIXED_ID)).await;
    assert_ne!(reply.request_id(), FIXED_ID);
    // The handler (and any upstream) sees the replacement, not what the client wrote.
    assert_eq!(reply.text(), reply.request_id());

    let reply = send(trusting, with_id(FIXED_ID)).await;
    assert_eq!(reply.request_id(), FIXED_ID);
    assert_eq!(reply.text(), FIXED_ID);

    for invalid in [
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef",
        "0123456789abcdef0123456789abcdef00",
        "<script>alert(1)</script>",
    ] {
        let reply = send(trusting, with_id(invalid)).await;
        assert!(RequestId::is_valid(reply.request_id().as_bytes()));
        assert_ne!(reply.request_id(), invalid);
    }
}

#[tokio::test]
async fn a_bare_404_becomes_apig_0101_with_the_request_id() {
    let addr = serve_axum(router().layer(ErrorEnvelopeLayer::new())).await;
    let reply = send(addr, get_req("/v2/nowhere")).await;
    let expected = format!("{APIG_0101_PREFIX}{}\"}}", reply.request_id());
    reply.assert_json(404, &expected);
}

#[tokio::test]
async fn a_404_with_a_body_is_the_upstreams_answer_and_passes_unchanged() {
    let addr = serve_axum(router().layer(ErrorEnvelopeLayer::new())).await;
    let reply = send(addr, get_req("/upstream-404")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), r#"{"detail":"Not Found"}"#);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(RequestId::is_valid(reply.request_id().as_bytes()));
}

#[tokio::test]
async fn a_405_becomes_fastapis_detail_and_keeps_allow() {
    let addr = serve_axum(router().layer(ErrorEnvelopeLayer::new())).await;
    let reply = send(addr, get_req("/v1/chat/completions")).await;
    reply.assert_json(405, r#"{"detail":"Method Not Allowed"}"#);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert!(RequestId::is_valid(reply.request_id().as_bytes()));
}

#[tokio::test]
async fn inner_refusals_are_re_rendered_in_the_configured_dialect() {
    let cases = [
        (
            Dialect::Dual,
            r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 60 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 60 times per minute."}"#,
        ),
        (
            Dialect::Flat,
            r#"{"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 60 times per minute."}"#,
        ),
        (
            Dialect::OpenAi,
            r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 60 times per minute.","param":null,"type":"TooManyRequests"}}"#,
        ),
    ];
    for (dialect, expected) in cases {
        let addr = serve_axum(router().layer(ErrorEnvelopeLayer::new().dialect(dialect))).await;
        let reply = send(addr, get_req("/refusal")).await;
        reply.assert_json(429, expected);
    }
}

/// A service that fails the way a caller asks, for the error-mapping tests.
#[derive(Clone)]
struct Failing;

#[derive(Debug)]
struct SecretFailure;

impl std::fmt::Display for SecretFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("db password hunter2 at 10.0.0.7")
    }
}

impl std::error::Error for SecretFailure {}

/// An error of the user's own that wraps the timeout marker.
#[derive(Debug)]
struct UpstreamGaveUp(BackendTimeout);

impl std::fmt::Display for UpstreamGaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream gave up")
    }
}

impl std::error::Error for UpstreamGaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl tower::Service<Request<Incoming>> for Failing {
    type Response = Response<Full<Bytes>>;
    type Error = common::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        Box::pin(async move {
            match req.uri().path() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Response::new(full("late")))
                }
                "/marked-timeout" => Err(Box::new(UpstreamGaveUp(BackendTimeout)) as _),
                "/io-timeout" => {
                    Err(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)) as _)
                }
                "/secret" => Err(Box::new(SecretFailure) as _),
                _ => Ok(Response::new(full("fine"))),
            }
        })
    }
}

#[tokio::test]
async fn timeouts_become_apig_0203_and_other_errors_a_500_that_leaks_nothing() {
    let service = ServiceBuilder::new()
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true))
        .timeout(Duration::from_millis(100))
        .service(Failing);
    let addr = serve_hyper(service).await;
    let req = |uri: &str| {
        Request::get(uri)
            .header("host", "localhost")
            .header("x-request-id", FIXED_ID)
            .body(empty())
            .unwrap()
    };
    let timeout = format!(
        r#"{{"error_msg":"Backend timeout","error_code":"APIG.0203","request_id":"{FIXED_ID}"}}"#
    );
    for uri in ["/slow", "/marked-timeout", "/io-timeout"] {
        let reply = send(addr, req(uri)).await;
        reply.assert_json(504, &timeout);
        assert_eq!(reply.request_id(), FIXED_ID);
    }
    let reply = send(addr, req("/secret")).await;
    reply.assert_json(
        500,
        &format!(
            r#"{{"error_msg":"Internal server error.","error_code":"APIG.0201","request_id":"{FIXED_ID}"}}"#
        ),
    );
    let reply = send(addr, req("/fine")).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "fine"));
}

/// A service whose readiness fails: tower's contract lets it, and the envelope must still
/// answer instead of dropping the connection.
#[derive(Clone)]
struct NeverReady;

impl tower::Service<Request<Incoming>> for NeverReady {
    type Response = Response<Full<Bytes>>;
    type Error = SecretFailure;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Err(SecretFailure))
    }

    fn call(&mut self, _: Request<Incoming>) -> Self::Future {
        ready(Ok(Response::new(full("must not be called"))))
    }
}

#[tokio::test]
async fn a_readiness_failure_is_answered_with_a_500() {
    let addr = serve_hyper(ErrorEnvelope::new(NeverReady)).await;
    let reply = send(addr, get_req("/")).await;
    let expected = format!(
        r#"{{"error_msg":"Internal server error.","error_code":"APIG.0201","request_id":"{}"}}"#,
        reply.request_id()
    );
    reply.assert_json(500, &expected);
}

#[tokio::test]
async fn works_alone_in_a_bare_hyper_server_over_http1_and_http2() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        Ok::<_, Infallible>(match req.uri().path() {
            "/ok" => Response::new(full("hello")),
            _ => {
                let mut res = Response::new(empty());
                *res.status_mut() = StatusCode::NOT_FOUND;
                res
            }
        })
    });
    let addr = serve_hyper(ErrorEnvelope::new(service)).await;
    for http2 in [false, true] {
        let reply = if http2 {
            send_h2(
                addr,
                Request::get("http://localhost/ok").body(empty()).unwrap(),
            )
            .await
        } else {
            send(addr, get_req("/ok")).await
        };
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "hello"));
        assert!(RequestId::is_valid(reply.request_id().as_bytes()));
        let reply = if http2 {
            send_h2(
                addr,
                Request::get("http://localhost/missing")
                    .body(empty())
                    .unwrap(),
            )
            .await
        } else {
            send(addr, get_req("/missing")).await
        };
        let expected = format!("{APIG_0101_PREFIX}{}\"}}", reply.request_id());
        reply.assert_json(404, &expected);
    }
}

/// A HEAD request's answer has its head, `content-length` included, and no body, also when
/// the envelope wrote the body: over HTTP/2 a body would go out as DATA frames, which a client
/// takes for a protocol error.
#[tokio::test]
async fn a_head_answer_has_no_body() {
    let not_found = tower::service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
    });
    let addr = serve_hyper(
        ErrorEnvelopeLayer::new()
            .trust_incoming_request_id(true)
            .layer(not_found),
    )
    .await;
    let request = |method: &str| {
        Request::builder()
            .method(method)
            .uri(format!("http://{addr}/nowhere"))
            .header("x-request-id", FIXED_ID)
            .body(empty())
            .unwrap()
    };
    let get = send_h2(addr, request("GET")).await;
    get.assert_json(404, &format!("{APIG_0101_PREFIX}{FIXED_ID}\"}}"));
    for head in [
        send_h2(addr, request("HEAD")).await,
        send(addr, request("HEAD")).await,
    ] {
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(head.text(), "");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        assert_eq!(
            head.header("content-length"),
            Some(get.text().len().to_string().as_str())
        );
        assert_eq!(head.request_id(), FIXED_ID);
    }
}

/// A passed-through answer to HEAD keeps the length its body had, and an empty one is given
/// none (a gRPC refusal, an upstream's own HEAD answer): `content-length: 0` would describe a
/// body that a GET would not have.
#[tokio::test]
async fn a_head_answer_keeps_a_known_length_and_invents_none() {
    let inner = tower::service_fn(|req: Request<Incoming>| async move {
        let body = if req.uri().path() == "/full" {
            Full::new(Bytes::from_static(b"hello"))
        } else {
            Full::default()
        };
        Ok::<_, Infallible>(Response::new(body))
    });
    let addr = serve_hyper(ErrorEnvelopeLayer::new().layer(inner)).await;
    let head = |path: &str| {
        Request::builder()
            .method("HEAD")
            .uri(format!("http://{addr}{path}"))
            .body(empty())
            .unwrap()
    };
    for (path, length) in [("/full", Some("5")), ("/empty", None)] {
        for reply in [
            send_h2(addr, head(path)).await,
            send(addr, head(path)).await,
        ] {
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(reply.text(), "", "{path}");
            assert_eq!(reply.header("content-length"), length, "{path}");
        }
    }
}

/// A route's own 404 keeps its head under HEAD as under GET, although axum drops its body
/// for HEAD before the envelope sees it: only a 404 with nothing in it, as a router's fallback
/// gives, is APIG.0101. Inside the router and around it, as the example gateway has it.
#[tokio::test]
async fn a_routes_own_404_answers_head_with_its_own_head() {
    let inside =
        serve_axum(router().layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true))).await;
    let around = serve_hyper(
        ErrorEnvelopeLayer::new()
            .trust_incoming_request_id(true)
            .layer(router()),
    )
    .await;
    for addr in [inside, around] {
        let request = |method: &str, path: &str| {
            Request::builder()
                .method(method)
                .uri(format!("http://{addr}{path}"))
                .header("x-request-id", FIXED_ID)
                .body(empty())
                .unwrap()
        };
        let get = send(addr, request("GET", "/upstream-404")).await;
        assert_eq!(get.status, StatusCode::NOT_FOUND);
        assert_eq!(get.text(), r#"{"detail":"Not Found"}"#);
        for head in [
            send(addr, request("HEAD", "/upstream-404")).await,
            send_h2(addr, request("HEAD", "/upstream-404")).await,
        ] {
            assert_eq!(head.status, StatusCode::NOT_FOUND);
            assert_eq!(head.text(), "");
            assert_eq!(head.header("content-type"), get.header("content-type"));
            assert_eq!(head.header("content-length"), Some("22"));
            assert_eq!(head.request_id(), FIXED_ID);
        }
        // An unknown path is still APIG.0101, its head as GET's.
        let get = send(addr, request("GET", "/nowhere")).await;
        get.assert_json(404, &format!("{APIG_0101_PREFIX}{FIXED_ID}\"}}"));
        let head = send(addr, request("HEAD", "/nowhere")).await;
        assert_eq!((head.status, head.text()), (StatusCode::NOT_FOUND, ""));
        assert_eq!(head.header("content-type"), get.header("content-type"));
        let length = get.text().len().to_string();
        assert_eq!(head.header("content-length"), Some(length.as_str()));
    }
}

/// An answer of `content_type` whose body gives `pieces`, a failure after them; it declares
/// their length when `declared`.
fn failing_answer(
    status: StatusCode,
    content_type: &'static str,
    pieces: &'static [&'static str],
    failure: fn() -> tower_maas::BoxError,
    declared: bool,
) -> Response<impl http_body::Body<Data = Bytes, Error = tower_maas::BoxError>> {
    // The pieces at once, the failure a moment later: the head and the pieces go out first.
    let frames = futures_util::stream::unfold(0, move |at| async move {
        let frame = match pieces.get(at) {
            Some(piece) => Ok(http_body::Frame::data(Bytes::from_static(piece.as_bytes()))),
            None if at == pieces.len() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(failure())
            }
            None => return None,
        };
        Some((frame, at + 1))
    });
    let mut answer = Response::builder()
        .status(status)
        .header("content-type", content_type);
    if declared {
        // What the whole answer would have been, had the backend not failed.
        answer = answer.header("content-length", "64");
    }
    answer
        .body(http_body_util::StreamBody::new(frames))
        .unwrap()
}

/// An event stream that fails once its head is out ends as the live service ends one: what
/// went out stays, then the error as an event in OpenAI's shape (504 APIG.0203 for a timeout,
/// else 502 APIG.0201) and `[DONE]`, an event the backend had begun dropped, and the body
/// ends cleanly, over HTTP/1.1 and HTTP/2, with no `content-length` (a declared one would cut
/// the event short). Other bodies, and a stream whose status already says it failed, fail as
/// they did; a `HEAD` answer keeps its head.
#[tokio::test]
async fn a_stream_that_fails_after_its_head_ends_with_an_error_event() {
    let timeout = || -> tower_maas::BoxError { Box::new(BackendTimeout) };
    let reset = || -> tower_maas::BoxError { Box::new(std::io::Error::other("reset")) };
    let service = tower::service_fn(move |req: Request<Incoming>| async move {
        let sse = "text/event-stream; charset=utf-8";
        let event: &'static [&'static str] = &["data: {\"a\":1}\n\n"];
        Ok::<_, Infallible>(match req.uri().path() {
            "/timeout" => failing_answer(StatusCode::OK, sse, event, timeout, false),
            "/reset" => failing_answer(StatusCode::OK, sse, event, reset, false),
            "/declared" => failing_answer(StatusCode::OK, sse, event, reset, true),
            "/begun" => failing_answer(
                StatusCode::OK,
                sse,
                &["data: {\"a\":1}\n\ndata: {\"a\""],
                reset,
                false,
            ),
            "/json" => failing_answer(
                StatusCode::OK,
                "application/json",
                &["{\"a\":"],
                reset,
                false,
            ),
            _ => failing_answer(StatusCode::INTERNAL_SERVER_ERROR, sse, event, reset, false),
        })
    });
    let addr = serve_hyper(ErrorEnvelopeLayer::new().layer(service)).await;
    let done = "data: [DONE]\n\n";
    let timed_out = r#"data: {"error":{"code":"APIG.0203","message":"Backend timeout","param":null,"type":"GatewayTimeout"}}"#;
    let unavailable = r#"data: {"error":{"code":"APIG.0201","message":"Backend unavailable.","param":null,"type":"BadGateway"}}"#;
    let ended = format!("data: {{\"a\":1}}\n\n{unavailable}\n\n{done}");
    for (path, expected) in [
        (
            "/timeout",
            format!("data: {{\"a\":1}}\n\n{timed_out}\n\n{done}"),
        ),
        ("/reset", ended.clone()),
        ("/declared", ended.clone()),
        // The event begun was held back, and is dropped: the client reads whole events.
        ("/begun", ended.clone()),
    ] {
        // `send` and `send_h2` fail on a body that breaks off: these end cleanly.
        for reply in [
            send(addr, get_req(path)).await,
            send_h2(addr, get_req(path)).await,
        ] {
            assert_eq!(
                (reply.status, reply.text()),
                (StatusCode::OK, expected.as_str()),
                "{path}"
            );
            assert_eq!(reply.header("content-length"), None, "{path}");
        }
    }
    // Its head alone, its length as declared.
    let head = send(addr, Request::head("/declared").body(empty()).unwrap()).await;
    assert_eq!((head.status, head.text()), (StatusCode::OK, ""));
    assert_eq!(head.header("content-length"), Some("64"));
    // Broken off, as the inner body was.
    let lossy = |path: &'static str| async move {
        let (status, _, body) = common::send_lossy(addr, get_req(path)).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    assert_eq!(lossy("/json").await, (StatusCode::OK, "{\"a\":".to_owned()));
    assert_eq!(
        lossy("/failed").await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "data: {\"a\":1}\n\n".to_owned()
        )
    );
}
