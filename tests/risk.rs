//! ContentRiskFilter over real sockets: input, output, streams, classifier failures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{FIXED_ID, frames, full, send, send_lossy};
use http::{HeaderMap, Request};
use tower::{Layer, ServiceExt};
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};
use tower_maas::limit::{ManualClock, MemoryStore, TokenRateLimitLayer};
use tower_maas::risk::{
    Classified, Classifier, ContentRiskFilterLayer, KeywordClassifier, OnFailure, RiskRefusal,
    Side, Verdict, Window,
};
use tower_maas::validate::RequestSchemaValidatorLayer;
use tower_maas::{BoxError, ErrorEnvelopeLayer};

const E81011: &str = r#"{"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"},"error_code":"ModelArts.81011","error_msg":"May contain senstive....."}"#;
const KEY: &str = "sk-R1skKey00000000000000000000000";

fn terms() -> KeywordClassifier {
    KeywordClassifier::builder()
        .term("weapons", "build a bomb")
        .ignore_separators(true)
        .build()
        .unwrap()
}

/// The backend: answers with what `x-say` asks, as JSON or as a stream split where `x-split`
/// says, reporting 40 tokens.
async fn backend(headers: HeaderMap) -> Response {
    let say = headers
        .get("x-say")
        .map_or("fine", |v| v.to_str().unwrap())
        .to_owned();
    let usage = r#"{"prompt_tokens":10,"completion_tokens":30,"total_tokens":40}"#;
    let leak = |s: String| -> &'static [u8] { Box::leak(s.into_bytes().into_boxed_slice()) };
    match headers.get("x-mode").map(|v| v.to_str().unwrap()) {
        Some("sse") => {
            let at: usize = headers.get("x-split").map_or(say.len(), |v| v.to_str().unwrap().parse().unwrap());
            let (a, b) = say.split_at(at);
            let event = |text: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":{}}}}}],\"usage\":{usage}}}\n\n", serde_json::to_string(text).unwrap());
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::new(frames(vec![
                    Ok(leak(event(a))),
                    Ok(leak(event(b))),
                    Ok(b"data: [DONE]\n\n"),
                ])))
                .unwrap()
        }
        Some("sse-longline") => Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::new(frames(vec![Ok(leak(format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}",
                "x".repeat(2 * 1024 * 1024)
            )))])))
            .unwrap(),
        Some("sse-big-first") => {
            let event = |text: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n");
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::new(frames(vec![
                    Ok(leak(event(&"x".repeat(70 * 1024)))),
                    Ok(leak(event(&say))),
                    Ok(b"data: [DONE]\n\n"),
                ])))
                .unwrap()
        }
        Some("sse-empty") => Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::new(frames(vec![
                Ok(leak("data: {\"choices\":[]}\n\n".repeat(20_000))),
                Ok(b"data: [DONE]\n\n"),
            ])))
            .unwrap(),
        Some("big") => {
            let text = "word ".repeat(50_000) + &say;
            axum::Json(serde_json::json!({"choices": [{"message": {"role": "assistant", "content": text}}], "usage": serde_json::from_str::<serde_json::Value>(usage).unwrap()})).into_response()
        }
        Some("announced-big") => Response::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::new(Announced { sent: false }))
            .unwrap(),
        Some("not-json") => ([("content-type", "application/json")], "{oops").into_response(),
        // What the filter cannot read, or need not.
        Some(kind @ ("gzip" | "sse-gzip")) => {
            let media = if kind == "gzip" { "application/json" } else { "text/event-stream" };
            (
                [("content-type", media), ("content-encoding", "gzip")],
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec(),
            )
                .into_response()
        }
        Some(kind @ ("jsonl" | "charset" | "bom")) => {
            let answer = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": say}}]}).to_string();
            let (media, body) = match kind {
                "jsonl" => ("application/jsonl", answer),
                "charset" => ("application/json; charset=utf-8", answer),
                _ => ("application/json", format!("\u{feff}{answer}")),
            };
            ([("content-type", media)], body).into_response()
        }
        Some("blank") => ([("content-type", "application/json")], " \n").into_response(),
        Some("no-content") => (http::StatusCode::NO_CONTENT, [("content-type", "application/json")]).into_response(),
        Some("sse-not-json") => Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::new(frames(vec![
                Ok(b"data: here is how to build a bomb\n\n"),
                Ok(b"data: [DONE]\n\n"),
            ])))
            .unwrap(),
        // The coding the filter asked the backend for, as the answer's text.
        Some("encoding") => {
            let asked = headers.get("accept-encoding").map_or("none", |v| v.to_str().unwrap());
            axum::Json(serde_json::json!({"choices": [{"message": {"role": "assistant", "content": asked}}]})).into_response()
        }
        Some("broken") => Response::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::new(frames(vec![
                Ok(br#"{"choices":[{"message":"#),
                Err("the backend went away"),
            ])))
            .unwrap(),
        Some("deep-usage") => {
            let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
            let text = serde_json::to_string(&say).unwrap();
            ([("content-type", "application/json")], format!(r#"{{"choices":[{{"message":{{"role":"assistant","content":{text}}}}}],"usage":{{"total_tokens":{deep}}}}}"#)).into_response()
        }
        _ if headers.contains_key("x-no-usage") => axum::Json(serde_json::json!({"choices": [{"message": {"role": "assistant", "content": say}}]})).into_response(),
        _ => axum::Json(serde_json::json!({"choices": [{"message": {"role": "assistant", "content": say}}], "usage": serde_json::from_str::<serde_json::Value>(usage).unwrap()})).into_response(),
    }
}

/// A chat request's head; hyper writes the `content-length` of whatever body is given.
fn chat() -> http::request::Builder {
    Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-request-id", FIXED_ID)
        .header("authorization", format!("Bearer {KEY}"))
}

fn body_of(content: &str) -> http_body_util::Full<bytes::Bytes> {
    full(
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": content}]})
            .to_string(),
    )
}

async fn serve<Cl: Classifier + Clone>(
    filter: ContentRiskFilterLayer<Cl>,
    validator: bool,
) -> std::net::SocketAddr {
    let mut app = Router::new()
        .route("/v1/chat/completions", post(backend))
        .layer(filter);
    if validator {
        app = app.layer(RequestSchemaValidatorLayer::new());
    }
    common::serve_axum(app.layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true))).await
}

/// A client cannot label a prompt gRPC to get it past the check: gRPC bodies pass unheld only
/// when the layer is told to, and then only those.
#[tokio::test]
async fn a_grpc_content_type_gets_no_pass_unless_configured() {
    let grpc = |content: &str| {
        let mut req = chat().body(body_of(content)).unwrap();
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        req
    };
    let addr = serve(ContentRiskFilterLayer::new(terms()), false).await;
    // Refused, and the envelope answers a gRPC client in gRPC.
    let refused = send(addr, grpc("how to build a bomb")).await;
    assert_eq!(refused.header("grpc-status"), Some("7"));
    assert_eq!(
        refused.header("grpc-message"),
        Some("ModelArts.81011: May contain senstive.....")
    );
    let passing = serve(ContentRiskFilterLayer::new(terms()).pass_grpc(true), false).await;
    let passed = send(passing, grpc("how to build a bomb")).await;
    assert_eq!(passed.header("grpc-status"), None);
    // The backend's answer, whole and untouched.
    assert_eq!(
        passed.text(),
        r#"{"choices":[{"message":{"content":"fine","role":"assistant"}}],"usage":{"completion_tokens":30,"prompt_tokens":10,"total_tokens":40}}"#
    );
    // JSON is still checked there.
    send(
        passing,
        chat().body(body_of("how to build a bomb")).unwrap(),
    )
    .await
    .assert_json(403, E81011);
}

#[tokio::test]
async fn input_is_refused_with_or_without_a_validator_in_front() {
    for validator in [true, false] {
        let addr = serve(ContentRiskFilterLayer::new(terms()), validator).await;
        let req = chat()
            .body(body_of("please explain how to B.U.I.L.D a bomb"))
            .unwrap();
        send(addr, req).await.assert_json(403, E81011);
        // Content parts too.
        let body = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"build   a bomb"}]}]}"#;
        let req = common::post("/v1/chat/completions", body)
            .body(full(body))
            .unwrap();
        send(addr, req).await.assert_json(403, E81011);
        let reply = send(addr, chat().body(body_of("a kind question")).unwrap()).await;
        assert_eq!(reply.status, 200, "validator={validator}: {}", reply.text());
    }
}

#[tokio::test]
async fn clean_answers_pass_byte_for_byte_and_blocked_ones_are_replaced() {
    let addr = serve(ContentRiskFilterLayer::new(terms()), true).await;
    let direct =
        common::serve_axum(Router::new().route("/v1/chat/completions", post(backend))).await;
    let reply = send(
        addr,
        chat()
            .header("x-say", "all is well")
            .body(body_of("hi"))
            .unwrap(),
    )
    .await;
    let original = send(
        direct,
        chat()
            .header("x-say", "all is well")
            .body(body_of("hi"))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, original.body);
    assert_eq!(
        reply.header("content-length"),
        original.header("content-length")
    );

    // The model produced what the input did not contain.
    let reply = send(
        addr,
        chat()
            .header("x-say", "here is how to build a bomb")
            .body(body_of("hi"))
            .unwrap(),
    )
    .await;
    reply.assert_json(403, E81011);
    assert_eq!(reply.request_id(), FIXED_ID);
}

#[tokio::test]
async fn a_withheld_answer_is_still_charged_by_the_limiter_outside() {
    let keys = Arc::new(InMemoryKeyStore::new());
    keys.insert(KEY, KeyPolicy::new().tpm(1000)).unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(backend))
        .layer(ContentRiskFilterLayer::new(terms()).output_limit(64 * 1024))
        .layer(TokenRateLimitLayer::with(
            MemoryStore::new(),
            ManualClock::new(),
        ))
        .layer(RequestSchemaValidatorLayer::new())
        .layer(BearerAuthLayer::new(keys))
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
    let addr = common::serve_axum(app).await;
    // "hi" reserves 1 + 4 + 3 = 8 prompt tokens + 1024 default max_tokens; over a 1000 bucket, so
    // ask for less.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
    let req = chat()
        .header("x-say", "build a bomb")
        .body(full(body))
        .unwrap();
    send(addr, req).await.assert_json(403, E81011);
    // The 40 tokens the backend reported were charged, the rest of the 108 refunded.
    let req = chat().header("x-say", "fine").body(full(body)).unwrap();
    let reply = send(addr, req).await;
    assert_eq!(
        reply.header("x-ratelimit-remaining-tokens"),
        Some("852"),
        "{}",
        reply.text()
    );
    // A passed answer's usage (read once, by the filter) is charged as well: 40, not 108.
    let req = chat().header("x-say", "fine").body(full(body)).unwrap();
    let reply = send(addr, req).await;
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), Some("812"));
    // A withheld answer that reported no usage keeps its reservation of 108: nothing refunded.
    let req = chat()
        .header("x-say", "build a bomb")
        .header("x-no-usage", "1")
        .body(full(body))
        .unwrap();
    send(addr, req).await.assert_json(403, E81011);
    let req = chat().header("x-say", "fine").body(full(body)).unwrap();
    let reply = send(addr, req).await;
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), Some("664"));
    // An answer refused because it cannot be read was generated all the same: its reservation
    // of 108 stands, whether it did not parse, announced more than can be held, or came to
    // more.
    for (mode, remaining) in [
        ("not-json", "516"),
        ("announced-big", "368"),
        ("big", "220"),
    ] {
        let req = chat().header("x-mode", mode).body(full(body)).unwrap();
        send(addr, req).await.assert_json(403, E81011);
        let req = chat().header("x-say", "fine").body(full(body)).unwrap();
        let reply = send(addr, req).await;
        assert_eq!(
            reply.header("x-ratelimit-remaining-tokens"),
            Some(remaining),
            "{mode}"
        );
    }
}

/// Two filters checking streams in `window`s, behind the validator: one refusing what it
/// cannot check (the default), one letting it through.
async fn closed_and_open(window: Option<Window>) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let closed = serve(ContentRiskFilterLayer::new(terms()).streaming(window), true).await;
    let open = serve(
        ContentRiskFilterLayer::new(terms())
            .streaming(window)
            .on_failure(OnFailure::Allow),
        true,
    )
    .await;
    (closed, open)
}

/// What the filter cannot read is refused under `OnFailure::Block` and passed as it came under
/// `Allow`; what it need not read passes either way; and it asks the backend for answers it
/// can read.
#[tokio::test]
async fn answers_that_cannot_be_read_go_by_the_failure_policy() {
    let window = Some(Window {
        window: 64,
        overlap: 32,
    });
    let (closed, open) = closed_and_open(window).await;
    let direct =
        common::serve_axum(Router::new().route("/v1/chat/completions", post(backend))).await;
    let req = |mode: &str| {
        chat()
            .header("x-mode", mode)
            .header("x-say", "here is how to build a bomb")
            .body(body_of("hi"))
            .unwrap()
    };
    // In a stream, the refusal is an SSE event of OpenAI's error object.
    let stream_refusal = concat!(
        r#"data: {"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"}}"#,
        "\n\ndata: [DONE]\n\n"
    );
    // Compressed, or a stream's data line that is not JSON: refused, or passed whole.
    for mode in ["gzip", "sse-gzip"] {
        send(closed, req(mode)).await.assert_json(403, E81011);
    }
    let reply = send(closed, req("sse-not-json")).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, stream_refusal));
    for mode in ["gzip", "sse-gzip", "sse-not-json"] {
        let (through, original) = (send(open, req(mode)).await, send(direct, req(mode)).await);
        assert_eq!(
            (through.status, &through.body),
            (original.status, &original.body),
            "{mode}"
        );
    }
    // JSON with parameters, or after a byte order mark, is read and checked: refused even
    // where what cannot be read passes.
    for mode in ["charset", "bom"] {
        send(open, req(mode)).await.assert_json(403, E81011);
    }
    // Not JSON by its type, empty, or without content: nothing to check, passed whole.
    for mode in ["jsonl", "blank", "no-content"] {
        let (through, original) = (send(closed, req(mode)).await, send(direct, req(mode)).await);
        assert_eq!(
            (through.status, &through.body),
            (original.status, &original.body),
            "{mode}"
        );
    }
    // A client that takes compressed answers has the backend asked for one it need not
    // decode; one that names no coding asks nothing.
    for (accepted, asked) in [(Some("gzip, br"), "identity"), (None, "none")] {
        let mut request = chat().header("x-mode", "encoding");
        if let Some(accepted) = accepted {
            request = request.header("accept-encoding", accepted);
        }
        let reply = send(closed, request.body(body_of("hi")).unwrap()).await;
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], asked);
    }
}

#[tokio::test]
async fn streams_are_checked_in_windows_and_a_split_term_is_caught() {
    let filter = ContentRiskFilterLayer::new(terms()).streaming(Some(Window {
        window: 1,
        overlap: 32,
    }));
    let addr = serve(filter, true).await;
    // "build a bomb" split between two events.
    let req = chat()
        .header("x-mode", "sse")
        .header("x-say", "ok, to build a b")
        .header("x-split", "12")
        .body(body_of("hi"))
        .unwrap();
    let said = "ok, to build a bomb";
    let req2 = chat()
        .header("x-mode", "sse")
        .header("x-say", said)
        .header("x-split", "15")
        .body(body_of("hi"))
        .unwrap();
    let event = |text: &str| {
        format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":30,\"total_tokens\":40}}}}\n\n"
        )
    };
    let (status, _, body) = send_lossy(addr, req).await;
    assert_eq!(status, 200);
    let clean = event("ok, to build") + &event(" a b") + "data: [DONE]\n\n";
    assert_eq!(String::from_utf8_lossy(&body), clean);

    let (status, _, body) = send_lossy(addr, req2).await;
    assert_eq!(status, 200);
    // The first half went out; the event that completed the term did not, and the stream ends
    // with the refusal as an SSE error event, then `[DONE]`.
    let refused = event("ok, to build a ")
        + r#"data: {"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"}}"#
        + "\n\ndata: [DONE]\n\n";
    assert_eq!(String::from_utf8_lossy(&body), refused);
}

#[tokio::test]
async fn streams_pass_untouched_when_clean_or_when_not_checked() {
    let direct =
        common::serve_axum(Router::new().route("/v1/chat/completions", post(backend))).await;
    for filter in [
        ContentRiskFilterLayer::new(terms()),
        ContentRiskFilterLayer::new(terms()).streaming(Some(Window::default())),
    ] {
        let addr = serve(filter, true).await;
        let req = || {
            chat()
                .header("x-mode", "sse")
                .header("x-say", "nothing to see")
                .header("x-split", "4")
                .body(body_of("hi"))
                .unwrap()
        };
        let (_, _, through) = send_lossy(addr, req()).await;
        let (_, _, original) = send_lossy(direct, req()).await;
        assert_eq!(through, original);
    }
}

/// A remote classifier: fails, is slow, or decides, as its text asks.
#[derive(Clone)]
struct Remote;

impl Classifier for Remote {
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Verdict, BoxError>> + Send>>;

    fn classify(&self, _: Side, text: &str) -> Classified<Self::Future> {
        let text = text.to_owned();
        Classified::Later(Box::pin(async move {
            if text.contains("slow") {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            if text.contains("fail") {
                return Err("moderation service down".into());
            }
            Ok(if text.contains("bad") {
                Verdict::Block {
                    category: "remote".into(),
                }
            } else {
                Verdict::Pass
            })
        }))
    }
}

#[tokio::test]
async fn remote_classifiers_time_out_and_fail_by_policy() {
    let closed = serve(
        ContentRiskFilterLayer::new(Remote).timeout(Duration::from_millis(100)),
        true,
    )
    .await;
    let open = serve(
        ContentRiskFilterLayer::new(Remote)
            .timeout(Duration::from_millis(100))
            .on_failure(OnFailure::Allow),
        true,
    )
    .await;
    for (content, closed_status, open_status) in [
        ("a bad thing", 403, 403),
        ("please fail", 403, 200),
        ("slow down", 403, 200),
        ("all good", 200, 200),
    ] {
        let reply = send(closed, chat().body(body_of(content)).unwrap()).await;
        assert_eq!(reply.status, closed_status, "{content}");
        if closed_status == 403 {
            reply.assert_json(403, E81011);
        }
        let reply = send(open, chat().body(body_of(content)).unwrap()).await;
        assert_eq!(reply.status, open_status, "{content}");
    }
}

/// A JSON answer that announces a megabyte, sends its first bytes and then nothing more, as a
/// stalled upstream does.
struct Announced {
    sent: bool,
}

impl http_body::Body for Announced {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if std::mem::replace(&mut self.sent, true) {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            br#"{"choices":["#,
        )))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(1 << 20)
    }
}

/// An answer that announces more than can be held is decided at its head, not after holding
/// the limit's worth of it: refused at once when unchecked answers are refused, passed on at
/// once when they are allowed.
#[tokio::test]
async fn an_answer_announced_too_large_to_hold_is_decided_at_once() {
    let layer = || ContentRiskFilterLayer::new(terms()).output_limit(64 * 1024);
    let closed = serve(layer(), true).await;
    let open = serve(layer().on_failure(OnFailure::Allow), true).await;
    let req = || {
        chat()
            .header("x-mode", "announced-big")
            .body(body_of("hi"))
            .unwrap()
    };
    tokio::time::timeout(Duration::from_secs(5), send(closed, req()))
        .await
        .expect("refused at once")
        .assert_json(403, E81011);
    let (head, _connection) = tokio::time::timeout(Duration::from_secs(5), async {
        let stream = tokio::net::TcpStream::connect(open).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        let connection = tokio::spawn(connection);
        (sender.send_request(req()).await.unwrap(), connection)
    })
    .await
    .expect("passed on at once");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "1048576");
}

#[tokio::test]
async fn huge_and_malformed_answers_neither_hang_nor_grow() {
    let closed = serve(
        ContentRiskFilterLayer::new(terms()).output_limit(64 * 1024),
        true,
    )
    .await;
    let open = serve(
        ContentRiskFilterLayer::new(terms())
            .output_limit(64 * 1024)
            .on_failure(OnFailure::Allow),
        true,
    )
    .await;
    let direct =
        common::serve_axum(Router::new().route("/v1/chat/completions", post(backend))).await;
    let req = || {
        chat()
            .header("x-mode", "big")
            .header("x-say", "done")
            .body(body_of("hi"))
            .unwrap()
    };
    send(closed, req()).await.assert_json(403, E81011);
    // Allowed through unchecked, and whole.
    let through = send(open, req()).await;
    let original = send(direct, req()).await;
    assert_eq!(through.status, 200);
    assert_eq!(through.body, original.body);
    // An answer announced as JSON that does not parse cannot be checked: refused, or let
    // through as it came.
    let not_json = || {
        chat()
            .header("x-mode", "not-json")
            .body(body_of("hi"))
            .unwrap()
    };
    send(closed, not_json()).await.assert_json(403, E81011);
    let reply = send(open, not_json()).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "{oops"));
    // An answer whose usage is nested too deep to read is still checked for its text.
    let reply = send(
        closed,
        chat()
            .header("x-mode", "deep-usage")
            .header("x-say", "here is how to build a bomb")
            .body(body_of("hi"))
            .unwrap(),
    )
    .await;
    reply.assert_json(403, E81011);
}

/// A backend, in process, that answers every request with `answer` as JSON.
fn answering<B>(
    answer: &'static str,
) -> impl tower::Service<
    Request<B>,
    Response = http::Response<http_body_util::Full<bytes::Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_: Request<B>| async move {
        Ok(http::Response::builder()
            .header("content-type", "application/json")
            .body(full(answer))
            .unwrap())
    })
}

/// What a filter in front of a backend answering `answer` makes of a chat saying `content`:
/// its status, and the refusal it says outside the body, if any.
async fn refusal_of(answer: &'static str, content: &str) -> (u16, Option<RiskRefusal>) {
    let filter = ContentRiskFilterLayer::new(terms()).layer(answering(answer));
    let response = filter
        .oneshot(
            Request::post("/v1/chat/completions")
                .body(body_of(content))
                .unwrap(),
        )
        .await
        .unwrap();
    let refusal = response.extensions().get::<RiskRefusal>().cloned();
    (response.status().as_u16(), refusal)
}

#[tokio::test]
async fn the_refusal_says_which_side_and_category_outside_the_body() {
    let said = r#"{"choices":[{"message":{"content":"build a bomb"}}]}"#;
    let refused = |side, category: &str| {
        Some(RiskRefusal {
            side,
            category: category.into(),
        })
    };
    assert_eq!(
        refusal_of(said, "hi").await,
        (403, refused(Side::Output, "weapons"))
    );
    assert_eq!(
        refusal_of(said, "build a bomb").await,
        (403, refused(Side::Input, "weapons"))
    );
    // An answer that cannot be read, refused as unchecked: said so, apart from a term's.
    assert_eq!(
        refusal_of(r#"{"choices":[{"text":"build a bomb"}]} and more"#, "hi").await,
        (403, refused(Side::Output, "answer-unreadable"))
    );
}

#[tokio::test]
async fn input_and_output_checks_switch_off_independently() {
    let no_input = serve(ContentRiskFilterLayer::new(terms()).input(false), true).await;
    let reply = send(no_input, chat().body(body_of("build a bomb")).unwrap()).await;
    assert_eq!(reply.status, 200);
    send(
        no_input,
        chat()
            .header("x-say", "build a bomb")
            .body(body_of("hi"))
            .unwrap(),
    )
    .await
    .assert_json(403, E81011);

    let no_output = serve(ContentRiskFilterLayer::new(terms()).output(false), true).await;
    send(no_output, chat().body(body_of("build a bomb")).unwrap())
        .await
        .assert_json(403, E81011);
    let reply = send(
        no_output,
        chat()
            .header("x-say", "build a bomb")
            .body(body_of("hi"))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_remote_classifier_judges_streams_too() {
    let filter = ContentRiskFilterLayer::new(Remote).streaming(Some(Window {
        window: 1,
        overlap: 8,
    }));
    let addr = serve(filter.input(false), true).await;
    let req = chat()
        .header("x-mode", "sse")
        .header("x-say", "fine then bad")
        .header("x-split", "5")
        .body(body_of("hi"))
        .unwrap();
    let (status, _, body) = send_lossy(addr, req).await;
    assert_eq!(status, 200);
    let expected = r#"data: {"choices":[{"delta":{"content":"fine "}}],"usage":{"prompt_tokens":10,"completion_tokens":30,"total_tokens":40}}"#.to_owned()
        + "\n\n"
        + r#"data: {"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"}}"#
        + "\n\ndata: [DONE]\n\n";
    assert_eq!(String::from_utf8_lossy(&body), expected);
}

#[test]
fn terms_load_from_a_file() {
    let path = std::env::temp_dir().join(format!("tower-maas-terms-{}.txt", std::process::id()));
    std::fs::write(
        &path,
        "# demo list\n[weapons]\nbuild a bomb\n[fraud]\nstolen card numbers\n",
    )
    .unwrap();
    let classifier = KeywordClassifier::builder()
        .terms_from_file(&path)
        .unwrap()
        .build()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let Classified::Now(verdict) = classifier.classify(Side::Input, "sell STOLEN card numbers")
    else {
        unreachable!()
    };
    assert_eq!(
        verdict.unwrap(),
        Verdict::Block {
            category: "fraud".into()
        }
    );
    assert!(
        KeywordClassifier::builder()
            .terms_from_file("/nonexistent/terms")
            .is_err()
    );
}

#[tokio::test]
async fn streams_never_hold_without_bound() {
    let window = Some(Window::default());
    let (closed, open) = closed_and_open(window).await;
    let req = |mode: &str| chat().header("x-mode", mode).body(body_of("hi")).unwrap();
    // A line of 2 MiB with no end cannot be checked: refused, or passed whole, by policy.
    let (_, _, body) = send_lossy(closed, req("sse-longline")).await;
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"data: {"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"}}"#.to_owned()
            + "\n\ndata: [DONE]\n\n"
    );
    let (_, _, body) = send_lossy(open, req("sse-longline")).await;
    let line = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}",
        "x".repeat(2 * 1024 * 1024)
    );
    assert!(body == line.as_bytes(), "{} bytes", body.len());
    // An event too large to hold whole goes out before its blank line; a refusal after it
    // first ends that event, so that the error event is an event of its own.
    let reply = chat()
        .header("x-mode", "sse-big-first")
        .header("x-say", "build a bomb")
        .body(body_of("hi"))
        .unwrap();
    let (_, _, body) = send_lossy(closed, reply).await;
    let expected = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(70 * 1024)
    ) + r#"data: {"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"}}"#
        + "\n\ndata: [DONE]\n\n";
    assert!(
        body == expected.as_bytes(),
        "{:?}",
        String::from_utf8_lossy(&body[70 * 1024..])
    );
    // Events without text are released in bounded batches, and all of them arrive.
    let (_, _, body) = send_lossy(closed, req("sse-empty")).await;
    assert_eq!(
        body.len(),
        "data: {\"choices\":[]}\n\n".len() * 20_000 + "data: [DONE]\n\n".len()
    );
}

/// A request with no text to check (a body that is not JSON) asks no classifier: with one
/// that is down and failing closed, it still passes, while any text is refused.
#[tokio::test]
async fn no_text_asks_no_classifier() {
    #[derive(Clone)]
    struct Down;
    impl Classifier for Down {
        type Future = std::future::Ready<Result<Verdict, BoxError>>;
        fn classify(&self, _: Side, _: &str) -> Classified<Self::Future> {
            Classified::Later(std::future::ready(Err("moderation service down".into())))
        }
    }
    let addr = serve(ContentRiskFilterLayer::new(Down).output(false), false).await;
    let reply = send(addr, chat().body(full("not json at all")).unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    send(addr, chat().body(body_of("any text")).unwrap())
        .await
        .assert_json(403, E81011);
}

/// The held answer is passed on without being copied when the backend sent it as one frame,
/// as backends send most JSON answers; frames are joined in order otherwise. In process, so
/// that the frame's address can be compared.
#[tokio::test]
async fn a_held_answer_of_one_frame_is_passed_on_as_that_frame() {
    use http_body_util::BodyExt;

    const ANSWER: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":"all is well"}}],"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}"#;
    let (head, tail) = ANSWER.split_at(40);
    let leaked: &'static [&'static [u8]] = Box::leak(Box::new([head, tail]));
    for pieces in [&[ANSWER][..], leaked] {
        let filter = ContentRiskFilterLayer::new(terms()).layer(tower::service_fn(
            move |_: Request<_>| async move {
                let body = frames(pieces.iter().map(|piece| Ok(*piece)).collect());
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap(),
                )
            },
        ));
        let response = filter
            .oneshot(chat().body(body_of("hi")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame, ANSWER);
        if pieces.len() == 1 {
            assert_eq!(
                frame.as_ptr(),
                ANSWER.as_ptr(),
                "the frame itself, not a copy"
            );
        }
        assert!(body.frame().await.is_none());
    }
}

/// The filter's own refusals, when no validator read the body before it: a body over its
/// bound is 413 APIG.0201 (declared or found while reading), a body the client broke off is
/// FastAPI's 400, and an answer the backend broke off while it was held is 502.
#[tokio::test]
async fn the_filters_own_refusals_have_their_whole_bodies() {
    let addr = serve(ContentRiskFilterLayer::new(terms()).body_limit(64), false).await;
    let apig = |code: &str, message: &str| {
        format!(r#"{{"error_msg":"{message}","error_code":"{code}","request_id":"{FIXED_ID}"}}"#)
    };
    let too_large = apig("APIG.0201", "Request entity too large.");
    // Declared too large: refused before a byte is read.
    send(addr, chat().body(body_of(&"a".repeat(100))).unwrap())
        .await
        .assert_json(413, &too_large);
    // Chunked, found too large while read.
    let chunked = chat()
        .body(axum::body::Body::new(frames(vec![
            Ok(br#"{"model":"m","messages":[{"role":"user","#),
            Ok(br#""content":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]}"#),
        ])))
        .unwrap();
    send(addr, chunked).await.assert_json(413, &too_large);

    // The backend broke off the answer the filter held.
    send(
        addr,
        chat()
            .header("x-mode", "broken")
            .body(body_of("hi"))
            .unwrap(),
    )
    .await
    .assert_json(502, &apig("APIG.0201", "Backend unavailable."));

    // The client broke off its body: 10 of the 40 bytes it declared, then the end of its side.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nx-request-id: {FIXED_ID}\r\ncontent-length: 40\r\n\r\n{{\"model\":"
    );
    let answer = common::raw_http1(addr, &head, true).await;
    let body = common::UNPARSABLE;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with(&format!("\r\n\r\n{body}")), "{answer}");
    assert!(
        answer.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
        "{answer}"
    );
}
