//! The example gateway in front of a real upstream server: proxying JSON and streams, renaming
//! the model, never forwarding the client's key, and the proxy's failure modes.

mod common;
mod gateway_app;
use gateway_app::{app, budget, idle, log, log_format, log_writer, mock, proxy, serve};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{FIXED_ID, frames, full, send, send_lossy};
use futures_util::stream::{self, Stream, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

const KEY: &str = "sk-Gatew4yKey000000000000000000000";

/// What the upstream saw of the last request: its headers and body.
type Seen = Arc<Mutex<Option<(http::HeaderMap, Bytes)>>>;

/// An OpenAI-compatible upstream: answers by the user message (`slow`, `stall`, `error`,
/// `stream`).
async fn upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            // What the gateway spoke, for the HTTP/2 test.
            let version = format!("{:?}", parts.version);
            parts
                .headers
                .insert("x-seen-version", version.parse().unwrap());
            // And the path it was asked for.
            parts
                .headers
                .insert("x-seen-path", parts.uri.path().parse().unwrap());
            *record.lock().unwrap() = Some((parts.headers, body.clone()));
            let text = String::from_utf8_lossy(&body).to_string();
            let usage = r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#;
            let response: Response<axum::body::Body> = if text.contains("stall") {
                // The head and a first piece, then nothing, ever.
                let (kind, first): (_, &'static [u8]) = if text.contains("stream") {
                    ("text/event-stream", b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n")
                } else {
                    ("application/json", br#"{"choices":[{"message":"#)
                };
                Response::builder()
                    .header("content-type", kind)
                    .body(axum::body::Body::new(stalled(first)))
                    .unwrap()
            } else if text.contains("slow") {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Response::new("late".into())
            } else if text.contains("error") {
                Response::builder()
                    .status(400)
                    .header("content-type", "application/json")
                    .body(r#"{"object":"error","message":"upstream says no","type":"BadRequestError","param":null,"code":400}"#.into())
                    .unwrap()
            } else if text.contains("stream") {
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::new(frames(vec![
                        Ok(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"),
                        Ok(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n"),
                        Ok(b"data: [DONE]\n\n"),
                    ])))
                    .unwrap()
            } else {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"choices":[{{"message":{{"role":"assistant","content":"from upstream"}}}}],"usage":{usage}}}"#).into())
                    .unwrap()
            };
            Ok::<_, Infallible>(response)
        }
    });
    (common::serve_hyper(service).await, seen)
}

/// A body of the pieces `pieces` gives.
fn body_of(
    pieces: impl Stream<Item = Bytes> + Send + Unpin + 'static,
) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static {
    http_body_util::StreamBody::new(pieces.map(|piece| Ok(http_body::Frame::data(piece))))
}

/// A body that gives its first piece and then nothing, ever: a stalled upstream.
fn stalled(
    first: &'static [u8],
) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static {
    body_of(stream::once(std::future::ready(Bytes::from_static(first))).chain(stream::pending()))
}

/// A body fed through a channel: each piece as it is sent, its end when the sender goes.
fn channel(
    mut received: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static {
    body_of(stream::poll_fn(move |cx| received.poll_recv(cx)))
}

async fn gateway(upstream: SocketAddr) -> SocketAddr {
    let config: app::Config = toml::from_str(&format!(
        r#"
        upstream_timeout_ms = 2000
        trust_request_id = true
        [[keys]]
        key = "{KEY}"
        tpm = 100000
        [[models]]
        name = "up"
        context_length = 4096
        upstream = "http://{upstream}"
        upstream_model = "Qwen/Qwen2.5-7B-Instruct"
        [[models]]
        name = "up2"
        context_length = 4096
        upstream = "http://{upstream}"
        http2 = true
        [[models]]
        name = "dead"
        context_length = 4096
        upstream = "http://127.0.0.1:1"
        [[models]]
        name = "upv1"
        context_length = 4096
        upstream = "http://{upstream}/v1/"
        "#
    ))
    .unwrap();
    let app = app::router(&config).unwrap();
    common::serve_axum_with_peer(app).await
}

fn chat(model: &str, content: &str) -> Request<http_body_util::Full<Bytes>> {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 10}).to_string();
    common::post("/v1/chat/completions", &body)
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-request-id", FIXED_ID)
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn answers_are_proxied_with_the_upstreams_model_name_and_without_the_key() {
    let (up, seen) = upstream().await;
    let gw = gateway(up).await;
    let reply = send(gw, chat("up", "hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        r#"{"choices":[{"message":{"role":"assistant","content":"from upstream"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#
    );
    assert!(reply.headers.contains_key("x-ratelimit-remaining-tokens"));
    let (headers, body) = seen.lock().unwrap().take().unwrap();
    assert!(
        !headers.contains_key("authorization"),
        "the client's key reached the upstream"
    );
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["model"], "Qwen/Qwen2.5-7B-Instruct");

    // Renamed where the model lies, every other byte as sent: a byte-order mark, the order,
    // the spacing, numbers as written.
    let nested = format!("{}1{}", "[".repeat(50), "]".repeat(50));
    let sent = |model: &str| {
        format!(
            "\u{feff}{{ \"model\" : {model},\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}],\n\"temperature\":0.50,\"chat_template_kwargs\":{{\"x\":{nested}}}}}"
        )
    };
    let request = common::post("/v1/chat/completions", &sent("\"up\""))
        .header("authorization", format!("Bearer {KEY}"))
        .body(full(sent("\"up\"")))
        .unwrap();
    let reply = send(gw, request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, body) = seen.lock().unwrap().take().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body),
        sent("\"Qwen/Qwen2.5-7B-Instruct\"")
    );

    // A body the validator reads the exact way is encoded again, its keys in order: its model
    // given twice, or nested deeper than a `serde_json::Value` can hold (the rest kept as sent).
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    for (sent, renamed) in [
        (
            r#"{"model":"x","model":"up","messages":[{"role":"user","content":"hi"}]}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"hi"}],"model":"Qwen/Qwen2.5-7B-Instruct"}"#
                .to_owned(),
        ),
        (
            format!(
                r#"{{"model":"up","messages":[{{"role":"user","content":"hello"}}],"chat_template_kwargs":{{"x":{deep}}}}}"#
            ),
            format!(
                r#"{{"chat_template_kwargs":{{"x":{deep}}},"messages":[{{"role":"user","content":"hello"}}],"model":"Qwen/Qwen2.5-7B-Instruct"}}"#
            ),
        ),
    ] {
        let request = common::post("/v1/chat/completions", &sent)
            .header("authorization", format!("Bearer {KEY}"))
            .body(full(sent.clone()))
            .unwrap();
        assert_eq!(send(gw, request).await.status, 200);
        let (_, body) = seen.lock().unwrap().take().unwrap();
        assert_eq!(String::from_utf8_lossy(&body), renamed);
    }

    // One the validator takes but serde_json cannot (Python's NaN) cannot be renamed: 81001,
    // and the upstream sees nothing.
    let sent =
        r#"{"model":"up","messages":[{"role":"user","content":"hi"}],"logit_bias":{"1":NaN}}"#;
    let request = common::post("/v1/chat/completions", sent)
        .header("authorization", format!("Bearer {KEY}"))
        .body(full(sent.to_owned()))
        .unwrap();
    send(gw, request).await.assert_json(
        400,
        &dual("ModelArts.81001", "Invalid request body.", "BadRequest"),
    );
    assert!(seen.lock().unwrap().take().is_none());
}

/// What belongs to the client's connection stays there: the headers its `Connection` names and
/// the obsolete `Proxy-Connection` do not reach the upstream, and the upstream learns the
/// client's address after any `X-Forwarded-For` or `Forwarded` the client wrote itself, and
/// as the whole of `X-Real-IP`, whatever the client put there.
#[tokio::test]
async fn the_proxy_keeps_hop_by_hop_headers_and_adds_the_client_to_x_forwarded_for() {
    let (up, seen) = upstream().await;
    let gw = gateway(up).await;
    let mut request = chat("up", "hello");
    for (name, value) in [
        ("connection", "keep-alive, x-private"),
        ("x-private", "for the first hop"),
        ("proxy-connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7;proto=https"),
        ("x-real-ip", "203.0.113.7"),
        ("x-kept", "end to end"),
        // The gateway has the whole body before it calls the upstream.
        ("expect", "100-continue"),
    ] {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    // A second line of the list.
    request
        .headers_mut()
        .append("x-forwarded-for", "198.51.100.2".parse().unwrap());
    assert_eq!(send(gw, request).await.status, 200);
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    for gone in ["x-private", "proxy-connection", "authorization", "expect"] {
        assert!(!headers.contains_key(gone), "{gone} reached the upstream");
    }
    assert_eq!(headers["x-kept"], "end to end");
    assert_eq!(
        headers["x-forwarded-for"],
        "203.0.113.7, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(
        headers["forwarded"],
        "for=203.0.113.7;proto=https, for=127.0.0.1"
    );
    assert_eq!(headers.get_all("x-real-ip").iter().count(), 1);
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    // A client that sent none is the whole chain.
    assert_eq!(send(gw, chat("up", "hello")).await.status, 200);
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["forwarded"], "for=127.0.0.1");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
}

/// Behind a trusted proxy (`ip_limit.trusted_proxies`), the upstream's `X-Real-IP` is the
/// client the proxy forwards for, the one the per-IP limit counts, not the proxy; a client's
/// `Forwarded` line that leaves a quoted string open is left out, so that the gateway's own
/// element is not read as part of it.
#[tokio::test]
async fn behind_a_trusted_proxy_the_upstream_learns_the_client() {
    let (up, seen) = upstream().await;
    let config = up_config(
        up,
        "[ip_limit]\nlimit = 1000\nwindow = \"minute\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let app = app::router(&app::parse_config(&config).unwrap()).unwrap();
    let gw = common::serve_axum_with_peer(app).await;
    let mut request = chat("up", "hello");
    request.headers_mut().insert(
        "x-forwarded-for",
        "198.51.100.2, 203.0.113.7".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("forwarded", "for=\"x, by=y".parse().unwrap());
    request.headers_mut().append(
        "forwarded",
        "for=203.0.113.7;proto=\"h\\\"ttp\"".parse().unwrap(),
    );
    assert_eq!(send(gw, request).await.status, 200);
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(headers["x-real-ip"], "203.0.113.7");
    assert_eq!(
        headers["x-forwarded-for"],
        "198.51.100.2, 203.0.113.7, 127.0.0.1"
    );
    assert_eq!(
        headers["forwarded"],
        "for=203.0.113.7;proto=\"h\\\"ttp\", for=127.0.0.1"
    );
}

#[tokio::test]
async fn upstreams_can_be_reached_over_http2() {
    let (up, seen) = upstream().await;
    let gw = gateway(up).await;
    let reply = send(gw, chat("up2", "hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("from upstream"));
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(headers["x-seen-version"], "HTTP/2.0");
    send(gw, chat("up", "hello")).await;
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(headers["x-seen-version"], "HTTP/1.1");
}

#[tokio::test]
async fn streams_pass_through_and_upstream_errors_pass_unchanged() {
    let (up, _) = upstream().await;
    let gw = gateway(up).await;
    let (status, headers, body) = send_lossy(gw, chat("up", "stream please")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.contains_key("x-ratelimit-limit-tokens"));
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    let reply = send(gw, chat("up", "error please")).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.text(),
        r#"{"object":"error","message":"upstream says no","type":"BadRequestError","param":null,"code":400}"#
    );
}

#[tokio::test]
async fn a_slow_upstream_is_504_and_an_unreachable_one_502() {
    let (up, _) = upstream().await;
    let gw = gateway(up).await;
    send(gw, chat("up", "slow please")).await.assert_json(
        504,
        &format!(r#"{{"error_msg":"Backend timeout","error_code":"APIG.0203","request_id":"{FIXED_ID}"}}"#),
    );
    send(gw, chat("dead", "hello")).await.assert_json(
        502,
        &format!(r#"{{"error_msg":"Backend unavailable.","error_code":"APIG.0201","request_id":"{FIXED_ID}"}}"#),
    );
}

/// An upstream that sends its head and then stalls is timed out too (the upstream timeout
/// bounds every wait for its next piece): a held answer is 504 APIG.0203, and a stream ends
/// after what had come with APIG.0203 as an error event and `[DONE]`, rather than either
/// waiting as long as the client does.
#[tokio::test]
async fn an_upstream_that_stalls_mid_answer_is_timed_out() {
    let (up, _) = upstream().await;
    let gw = gateway(up).await;
    let reply = tokio::time::timeout(Duration::from_secs(5), send(gw, chat("up", "stall please")))
        .await
        .expect("the held answer was timed out");
    reply.assert_json(
        504,
        &format!(r#"{{"error_msg":"Backend timeout","error_code":"APIG.0203","request_id":"{FIXED_ID}"}}"#),
    );
    let body = serde_json::json!({"model": "up", "stream": true, "messages": [{"role": "user", "content": "stall the stream"}]}).to_string();
    let request = common::post("/v1/chat/completions", &body)
        .header("authorization", format!("Bearer {KEY}"))
        .body(full(body))
        .unwrap();
    let (status, headers, got) =
        tokio::time::timeout(Duration::from_secs(5), send_lossy(gw, request))
            .await
            .expect("the stream was ended");
    assert_eq!(status, 200);
    assert!(tower_maas::RequestId::is_valid(
        headers["x-request-id"].as_bytes()
    ));
    // What went out stays; the stream ends as MaaS ends one, with the error as an event.
    assert_eq!(
        got,
        concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"error\":{\"code\":\"APIG.0203\",\"message\":\"Backend timeout\",\"param\":null,\"type\":\"GatewayTimeout\"}}\n\n",
            "data: [DONE]\n\n",
        )
    );
}

#[tokio::test]
async fn the_sample_configuration_loads() {
    let text = include_str!("../examples/gateway/gateway.toml");
    let config: app::Config = toml::from_str(text).unwrap();
    assert!(app::router(&config).is_ok());
}

/// A gateway on the demo configuration plus what the catalogue needs.
async fn catalogue_gateway(extra: &str) -> SocketAddr {
    let config: app::Config = toml::from_str(&format!(
        r#"
        trust_request_id = true
        body_limit = 4096
        upstream_timeout_ms = 200
        {extra}
        [[keys]]
        key = "sk-open-000000000000000000000000"
        label = "open"
        [[keys]]
        key = "sk-peer-000000000000000000000000"
        [[keys]]
        key = "sk-slow-000000000000000000000000"
        rpm = 1
        [[keys]]
        key = "sk-tiny-000000000000000000000000"
        tpm = 30
        [[keys]]
        key = "sk-none-000000000000000000000000"
        quota = 0
        [[keys]]
        key = "sk-only-000000000000000000000000"
        models = ["other-model"]
        [[keys]]
        key = "sk-cold-000000000000000000000000"
        frozen = true
        [[models]]
        name = "mock-model"
        context_length = 64
        [[models]]
        name = "other-model"
        context_length = 64
        [risk]
        terms = ["forbidden demo phrase"]
        ignore_separators = true
        "#
    ))
    .unwrap();
    let app = app::router(&config).unwrap();
    common::serve_axum_with_peer(app).await
}

fn dual(code: &str, message: &str, kind: &str) -> String {
    format!(
        r#"{{"error":{{"code":"{code}","message":"{message}","param":null,"type":"{kind}"}},"error_code":"{code}","error_msg":"{message}"}}"#
    )
}

fn apig(code: &str, message: &str) -> String {
    format!(r#"{{"error_msg":"{message}","error_code":"{code}","request_id":"{FIXED_ID}"}}"#)
}

fn request(
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Request<http_body_util::Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-request-id", FIXED_ID);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    req.body(full(body.to_owned())).unwrap()
}

#[tokio::test]
async fn every_inference_catalogue_row_through_the_gateway() {
    let gw = catalogue_gateway("").await;
    let chat = |content: &str, stream: bool| {
        serde_json::json!({"model": "mock-model", "stream": stream, "max_tokens": 5, "messages": [{"role": "user", "content": content}]}).to_string()
    };
    let open = Some("sk-open-000000000000000000000000");
    for stream in [false, true] {
        let body = chat("hello", stream);
        let cases: Vec<(&str, &str, Option<&str>, String, u16, String)> = vec![
            ("POST", "/v1/chat/completions", open, r#"{"model":"","messages":[]}"#.into(), 400, dual("ModelArts.81001", "Invalid request body.", "BadRequest")),
            ("POST", "/v1/chat/completions", None, body.clone(), 400, dual("ModelArts.81002", "Failed to get the authorization header.", "BadRequest")),
            ("POST", "/v1/chat/completions", Some("sk-unknown"), body.clone(), 401, dual("ModelArts.81003", "Invalid authorization header.", "Unauthorized")),
            ("POST", "/v1/chat/completions", Some("sk-only-000000000000000000000000"), body.clone(), 401, dual("ModelArts.81004", "Invalid request because you do not have access to it.", "Unauthorized")),
            ("POST", "/v1/chat/completions", Some("sk-none-000000000000000000000000"), body.clone(), 401, dual("ModelArts.81005", "The free quota has been used up.", "Unauthorized")),
            ("POST", "/v1/chat/completions", Some("sk-cold-000000000000000000000000"), body.clone(), 401, dual("ModelArts.81006", "The resource is frozen.", "Unauthorized")),
            ("POST", "/v1/chat/completions", open, chat("say forbidden demo phrase", stream), 403, dual("ModelArts.81011", "May contain senstive.....", "Forbidden")),
            ("POST", "/v1/chat/completions", open, r#"{"model":"gpt-4","messages":[]}"#.into(), 404, dual("ModelArts.81009", "Invalid model.", "NotFound")),
            ("GET", "/v1/video/generations/task-none", open, String::new(), 404, dual("ModelArts.81108", "Task task-none does not exist", "NotFound")),
            ("GET", "/v2/nothing", open, String::new(), 404, apig("APIG.0101", "The API does not exist or has not been published in the environment")),
            ("POST", "/v1/chat/completions", open, format!(r#"{{"model":"mock-model","messages":[],"user":"{}"}}"#, "a".repeat(5000)), 413, apig("APIG.0201", "Request entity too large.")),
            // Read by the content filter alone, and bounded the same.
            ("POST", "/v1/video/generations", open, format!(r#"{{"model":"v","prompt":"{}"}}"#, "a".repeat(5000)), 413, apig("APIG.0201", "Request entity too large.")),
            ("GET", "/v1/chat/completions", open, String::new(), 405, r#"{"detail":"Method Not Allowed"}"#.into()),
            ("POST", "/v1/chat/completions", open, r#"{"model":"mock-model","messages":[],"test":15}"#.into(), 400, r#"{"object":"error","message":"[{'type': 'extra_forbidden', 'loc': ('body', 'test'), 'msg': 'Extra inputs are not permitted', 'input': 15}]","type":"BadRequestError","param":null,"code":400}"#.into()),
            ("POST", "/v1/chat/completions", open, serde_json::json!({"model": "mock-model", "stream": stream, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, r#"{"object":"error","message":"This model's maximum context length is 64 tokens. However, you requested 108 tokens (8 in the messages, 100 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#.into()),
        ];
        for (method, path, key, body, status, expected) in cases {
            let reply = send(gw, request(method, path, key, &body)).await;
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{path} {body}: {}",
                reply.text()
            );
            // Refusals before a stream starts are plain JSON, never SSE.
            reply.assert_json(status, &expected);
        }
    }
    // 81103: a key whose 30-token bucket the mock's reported usage (25 of 30) has nearly used.
    let tiny = Some("sk-tiny-000000000000000000000000");
    let words = "a b c d e f g h i j k l m n o p q r s t";
    assert_eq!(
        send(
            gw,
            request("POST", "/v1/chat/completions", tiny, &chat(words, false))
        )
        .await
        .status,
        200
    );
    for stream in [false, true] {
        let reply = send(
            gw,
            request("POST", "/v1/chat/completions", tiny, &chat("hello", stream)),
        )
        .await;
        reply.assert_json(
            429,
            &dual(
                "ModelArts.81103",
                "Too many requests. exceeded rate limit is 30 tokens per minute.",
                "TooManyRequests",
            ),
        );
    }
    // 81101: the second request of a key at one request per minute.
    let slow = Some("sk-slow-000000000000000000000000");
    assert_eq!(
        send(
            gw,
            request("POST", "/v1/chat/completions", slow, &chat("a", false))
        )
        .await
        .status,
        200
    );
    let reply = send(
        gw,
        request("POST", "/v1/chat/completions", slow, &chat("a", true)),
    )
    .await;
    reply.assert_json(
        429,
        &dual(
            "ModelArts.81101",
            "Too many requests, exceeded rate limit is 1 times per minute.",
            "TooManyRequests",
        ),
    );
    // 81011 on output: the mock decodes a phrase the request did not contain.
    let reply = send(
        gw,
        request(
            "POST",
            "/v1/chat/completions",
            open,
            &chat("base64: Zm9yYmlkZGVuIGRlbW8gcGhyYXNl", false),
        ),
    )
    .await;
    reply.assert_json(
        403,
        &dual("ModelArts.81011", "May contain senstive.....", "Forbidden"),
    );
    // 81109: another key's video task (401, as the seed gives it for video tasks).
    let create_task = async |key: Option<&str>| {
        let body = r#"{"model":"v","prompt":"a cat"}"#;
        let created = send(gw, request("POST", "/v1/video/generations", key, body)).await;
        let task: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
        task["task_id"].as_str().unwrap().to_owned()
    };
    let task = &create_task(open).await;
    let peer = Some("sk-peer-000000000000000000000000");
    let reply = send(
        gw,
        request("GET", &format!("/v1/video/generations/{task}"), peer, ""),
    )
    .await;
    reply.assert_json(
        401,
        &dual(
            "ModelArts.81109",
            &format!("No permission query task {task}"),
            "Unauthorized",
        ),
    );
    // Another key's task under the same (trusted, client-chosen) request id is a task of its
    // own: the first stays its creator's.
    assert_ne!(&create_task(peer).await, task);
    assert_eq!(
        send(
            gw,
            request("GET", &format!("/v1/video/generations/{task}"), open, "")
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn ip_limit_and_backend_dialect_rows() {
    let gw = catalogue_gateway("validation = \"backend\"\n[ip_limit]\nlimit = 2\n").await;
    let open = Some("sk-open-000000000000000000000000");
    let reply = send(
        gw,
        request(
            "POST",
            "/v1/chat/completions",
            open,
            r#"{"model":"gpt-4","messages":[]}"#,
        ),
    )
    .await;
    reply.assert_json(
        404,
        r#"{"object":"error","message":"The model `gpt-4` does not exist.","type":"NotFoundError","param":null,"code":404}"#,
    );
    // The policy's window as it writes it: the default, and another length and unit.
    for (gw, limit, window, retry) in [
        (gw, 2, "1 minute", "30"),
        (
            catalogue_gateway("[ip_limit]\nlimit = 1\nwindow = \"10 seconds\"\n").await,
            1,
            "10 second",
            "10",
        ),
    ] {
        for _ in 0..limit {
            send(gw, request("GET", "/health", None, "")).await;
        }
        let reply = send(gw, request("GET", "/health", None, "")).await;
        reply.assert_json(
            429,
            &apig(
                "APIG.0308",
                &format!("The throttling threshold has been reached: policy ip over ratelimit,limit:{limit},time:{window}"),
            ),
        );
        assert_eq!(reply.header("retry-after"), Some(retry), "{window}");
    }
}

/// The log as the binary sets it up (its line format, its batching writer), into memory, for
/// this thread: the lines are all there once the writer is dropped.
fn capture_log() -> (
    common::Captured,
    log_writer::FlushOnDrop,
    tracing::subscriber::DefaultGuard,
) {
    let captured = common::Captured::default();
    let (subscriber, flush) = log_format::subscriber(captured.clone(), false);
    (
        captured,
        flush,
        tracing::subscriber::set_default(subscriber),
    )
}

/// `log_requests = false`: answers as ever, and no line; the same gateway with the log on,
/// beside it in the same capture, writes its one line (so the capture does see the servers).
#[tokio::test]
async fn no_log_line_when_the_log_is_off() {
    let (captured, flush, _guard) = capture_log();
    for log_requests in [false, true] {
        let config: app::Config = toml::from_str(&format!(
            "log_requests = {log_requests}\n[[keys]]\nkey = \"{KEY}\"\nlabel = \"log-{log_requests}\"\n[[models]]\nname = \"mock-model\"\ncontext_length = 4096\n"
        ))
        .unwrap();
        let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
        let reply = send(gw, chat("mock-model", &format!("log {log_requests}"))).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .text()
                .contains(&format!(r#""content":"log {log_requests}""#)),
            "{}",
            reply.text()
        );
    }
    drop(flush);
    let text = captured.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(" INFO request request_id="), "{text}");
    // The line is the gateway's that logs.
    assert!(text.contains(r#" key="log-true" "#), "{text}");
}

/// A HEAD answer has the head a GET would have and no body, refusals included: over HTTP/2 a
/// body would go out as DATA frames. The refusals over HTTP/2 are what guard the envelope's
/// part: axum strips a GET route's body itself, and hyper writes none for HEAD over HTTP/1;
/// the other requests hold the whole gateway to the same.
#[tokio::test]
async fn head_answers_have_no_body() {
    let gw = catalogue_gateway("").await;
    let request = |method: &str, path: &str, key: Option<&str>| {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{gw}{path}"))
            .header("x-request-id", FIXED_ID);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        request.body(common::empty()).unwrap()
    };
    let open = Some("sk-open-000000000000000000000000");
    for (path, key, status) in [
        ("/v1/models", open, 200),
        // No key: 81002, from BearerAuth inside the envelope.
        ("/v1/models", None, 400),
        // No such route: APIG.0101, from the envelope.
        ("/v1/nothing-here", open, 404),
        // A POST route: 405, with `allow`.
        ("/v1/chat/completions", open, 405),
    ] {
        let get = common::send_h2(gw, request("GET", path, key)).await;
        assert_eq!(get.status, status, "GET {path}: {}", get.text());
        assert!(!get.text().is_empty(), "GET {path}");
        // The inference routes take POST alone.
        let allow = (status == 405).then_some("POST");
        assert_eq!(get.header("allow"), allow, "GET {path}");
        for head in [
            common::send_h2(gw, request("HEAD", path, key)).await,
            send(gw, request("HEAD", path, key)).await,
        ] {
            assert_eq!(head.status, status, "HEAD {path}");
            assert_eq!(head.text(), "", "HEAD {path}");
            assert_eq!(
                head.header("content-type"),
                get.header("content-type"),
                "HEAD {path}"
            );
            assert_eq!(head.header("allow"), get.header("allow"), "HEAD {path}");
            assert_eq!(
                head.header("content-length"),
                Some(get.text().len().to_string().as_str()),
                "HEAD {path}"
            );
        }
    }
}

/// The example binary told to stop (SIGTERM) lets a request in flight finish, then exits.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    // An upstream that takes a second to answer.
    let slow = tower::service_fn(|_: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(full(r#"{"choices":[],"usage":{"total_tokens":1}}"#))
                .unwrap(),
        )
    });
    let upstream = common::serve_hyper(slow).await;
    let mut gateway =
        common::GatewayProcess::start(&up_config(upstream, "log_requests = false\n")).await;
    let in_flight = tokio::spawn(send(gateway.addr, chat("up", "take your time")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.terminate();
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        200,
        "the request in flight was cut: {}",
        reply.text()
    );
    let status = gateway.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// Custom endpoints through the gateway: created with the management token, called by name,
/// forwarded under the upstream's model name, limited by the endpoint's own RPM.
#[tokio::test]
async fn a_custom_endpoint_is_managed_and_called_through_the_gateway() {
    let (up, seen) = upstream().await;
    let config: app::Config = toml::from_str(&format!(
        r#"
        trust_request_id = true
        [[keys]]
        key = "{KEY}"
        [[models]]
        name = "up"
        context_length = 4096
        upstream = "http://{up}"
        upstream_model = "Qwen/Qwen2.5-7B-Instruct"
        service_id = "svc-up"
        [[models]]
        name = "plain"
        context_length = 4096
        upstream = "http://{up}"
        [[models]]
        name = "private"
        context_length = 4096
        access = "token"
        [management]
        [[management.accounts]]
        name = "acme"
        token = "mgmt-test-token"
        projects = ["p1"]
        "#
    ))
    .unwrap();
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    let manage = |method: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri("/v1/p1/maas/services/custom-endpoint/endpoint")
            .header("x-auth-token", "mgmt-test-token")
            .body(full(body.to_owned()))
            .unwrap()
    };
    // The API key is no management token.
    let refused = send(
        gw,
        Request::get("/v1/p1/maas/services/custom-endpoint/endpoint")
            .header("x-auth-token", KEY)
            .body(full(""))
            .unwrap(),
    )
    .await;
    refused.assert_json(
        401,
        r#"{"error_code":"ModelArts.8503","error_msg":"No permission to create modelarts custom endpoints"}"#,
    );
    send(gw, manage("POST", r#"{"endpoint_name":"mine","infer_service_id":"private"}"#))
        .await
        .assert_json(
            400,
            r#"{"error_code":"ModelArts.6613","error_msg":"Operation failed. The online service status needs to have the 'Mount to MAAS Gateway' switch turned on or the authentication method set to 'No Authentication' in order to create a custom custom endpoint."}"#,
        );
    let created = send(
        gw,
        manage(
            "POST",
            r#"{"endpoint_name":"team-up","infer_service_id":"svc-up","rpm":1}"#,
        ),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());

    let reply = send(gw, chat("team-up", "hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, body) = seen.lock().unwrap().clone().unwrap();
    let forwarded: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(forwarded["model"], "Qwen/Qwen2.5-7B-Instruct");
    send(gw, chat("team-up", "hello")).await.assert_json(
        429,
        r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 1 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 1 times per minute."}"#,
    );
    // The model itself is not limited by its endpoint.
    assert_eq!(send(gw, chat("up", "hello")).await.status, 200);
    // A model without an upstream name: the upstream hears the model's own name, never the
    // endpoint's.
    let created = send(
        gw,
        manage(
            "POST",
            r#"{"endpoint_name":"team-plain","infer_service_id":"plain"}"#,
        ),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(send(gw, chat("team-plain", "hello")).await.status, 200);
    let (_, body) = seen.lock().unwrap().clone().unwrap();
    let forwarded: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(forwarded["model"], "plain");
}

#[tokio::test]
async fn a_configuration_file_without_the_section_has_no_management_api() {
    let config: app::Config = toml::from_str("").unwrap();
    assert!(config.management.is_none());
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    let reply = send(
        gw,
        Request::get("/v1/demo-project/maas/services/custom-endpoint/endpoint")
            .header("x-auth-token", app::DEMO_MANAGEMENT_TOKEN)
            .header("x-request-id", FIXED_ID)
            .body(full(""))
            .unwrap(),
    )
    .await;
    reply.assert_json(
        404,
        &format!(
            r#"{{"error_msg":"The API does not exist or has not been published in the environment","error_code":"APIG.0101","request_id":"{}"}}"#,
            reply.request_id()
        ),
    );
}

/// A file without `[[keys]]` has no keys: the demo keys, which anyone can read in the README,
/// belong to the zero-config start alone.
#[tokio::test]
async fn a_configuration_file_without_keys_has_none_of_the_demo_keys() {
    let config = app::parse_config("").unwrap();
    assert!(config.keys.is_empty());
    assert!(!app::Config::default().keys.is_empty());
    // Nor a per-IP limit, as `gateway.toml` says; the zero-config start has one.
    assert!(config.ip_limit.is_none());
    assert!(app::Config::default().ip_limit.is_some());
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    let body = r#"{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}"#;
    let reply = send(
        gw,
        common::post("/v1/chat/completions", body)
            .header("authorization", format!("Bearer {}", app::DEMO_KEY))
            .body(full(body))
            .unwrap(),
    )
    .await;
    reply.assert_json(
        401,
        &dual(
            "ModelArts.81003",
            "Invalid authorization header.",
            "Unauthorized",
        ),
    );
}

/// A configuration error says where and what, and never quotes the file: the line at fault
/// may hold a key, and the message goes to the service's log.
#[test]
fn a_configuration_error_says_where_and_never_quotes_a_key() {
    let cases = [
        (
            "dialect = \"sk-live-Secret0000\"\n",
            "line 1, column 11: unknown variant `…`, expected one of `dual`, `flat`, `openai`",
        ),
        (
            "sk-live-Secret0000 = 1\n",
            "line 1, column 1: unknown field `…`, expected one of `listen`, `dialect`, `trust_request_id`, `validation`, `body_limit`, `upstream_timeout_ms`, `client_timeout_ms`, `shutdown_grace_ms`, `max_connections`, `max_buffered_bytes`, `runtime`, `workers`, `mock_stream_style`, `log_requests`, `ip_limit`, `keys`, `models`, `risk`, `management`, `redis`",
        ),
        (
            "[[keys]]\nrpm = \"a\\\"Secret\\\" b\"\n",
            "line 2, column 7: invalid type: string \"…\", expected u64",
        ),
        (
            "[[keys]]\nkey = sk-live-Secret0000\n",
            "line 2, column 7: string values must be quoted, expected literal string",
        ),
        (
            "[[keys]]\nrpm = \"sk-live-Secret0000\"\n",
            "line 2, column 7: invalid type: string \"…\", expected u64",
        ),
        (
            "[[models]]\nname = \"m\"\ncontext_length = 8\naccess = \"nobody\"\n",
            "line 4, column 10: unknown variant `…`, expected one of `maas`, `none`, `token`",
        ),
        // What is missing is the file's own business: named.
        (
            "[[models]]\nname = \"m\"\n",
            "line 1, column 1: missing field `context_length`",
        ),
        (
            "runtime = \"threads\"\n",
            "line 1, column 11: unknown variant `…`, expected `per-core` or `shared`",
        ),
        (
            "[ip_limit]\nlimit = 1\nwindow = \"sk-live-Secret0000\"\n",
            "line 3, column 10: expected a unit (second, minute, hour, day), or a count of 1 or more and a unit (10 seconds)",
        ),
        (
            "[ip_limit]\nlimit = 1\nwindow = \"0 seconds\"\n",
            "line 3, column 10: expected a unit (second, minute, hour, day), or a count of 1 or more and a unit (10 seconds)",
        ),
    ];
    for (text, expected) in cases {
        let error = app::parse_config(text).unwrap_err();
        assert_eq!(error, expected, "{text}");
        assert!(!error.contains("Secret"), "{error}");
    }
    // A zero deadline would fail nearly every request: refused, not taken for "none".
    for (text, expected) in [
        ("client_timeout_ms = 0", "client_timeout_ms: at least 1"),
        ("upstream_timeout_ms = 0", "upstream_timeout_ms: at least 1"),
        // And no room for a connection would serve nothing, nor a per-IP limit of 0.
        ("max_connections = 0", "max_connections: at least 1"),
        (
            "ip_limit = { limit = 0, window = \"minute\" }",
            "ip_limit.limit: at least 1 (leave the section out for no per-IP limit)",
        ),
        // A deadline far enough off would overflow the clock of every connection.
        (
            "client_timeout_ms = 18446744073709551615",
            "client_timeout_ms: at most 86400000 (a day)",
        ),
        (
            "upstream_timeout_ms = 86400001",
            "upstream_timeout_ms: at most 86400000 (a day)",
        ),
        // The exit waits at most twice Redis's timeout for the last settlements.
        (
            "[redis]\nurl = \"redis://127.0.0.1:1/\"\ntimeout_ms = 86400001",
            "redis.timeout_ms: at most 86400000 (a day)",
        ),
        // Keys numbered by position would take each other's counters in Redis when the list
        // changes.
        (
            "[[keys]]\nid = 1\nkey = \"sk-a-Secret000\"\n[[keys]]\nkey = \"sk-b-Secret000\"\n[redis]\nurl = \"redis://127.0.0.1:1/\"",
            "keys[1]: with [redis], every key needs an id (its counters in Redis are kept under it; the same id on every replica)",
        ),
        (
            "[[keys]]\nid = 7\nkey = \"sk-a-Secret000\"\n[[keys]]\nid = 7\nkey = \"sk-b-Secret000\"\n",
            "keys[1].id: 7 is keys[0]'s too",
        ),
        (
            "[[keys]]\nid = 9223372036854775807\nkey = \"sk-a-Secret000\"\n[[keys]]\nkey = \"sk-b-Secret000\"\n[[keys]]\nid = 0\nkey = \"sk-c-Secret000\"\n[[keys]]\nkey = \"sk-a-Secret000\"\n",
            "keys[3]: the same key twice",
        ),
        // Room for less than one whole body would leave such a body waiting until it failed.
        (
            "body_limit = 2000\nmax_buffered_bytes = 1999",
            "max_buffered_bytes: at least body_limit (2000): one request's whole body must fit",
        ),
        // A body limit meant as "none" would let a few clients take all the memory.
        (
            "body_limit = 1073741825",
            "body_limit: at most 1073741824 (1 GiB; APIG's is 12 MiB)",
        ),
        // A management token left empty would let in any empty `X-Auth-Token`; one given to
        // two accounts would act for the second alone.
        (
            "[[management.accounts]]\nname = \"a\"\ntoken = \"\"\n",
            "management.accounts[0]: the token is empty",
        ),
        (
            "[[management.accounts]]\nname = \"a\"\ntoken = \"mgmt-Secret-1\"\n[[management.accounts]]\nname = \"b\"\ntoken = \"mgmt-Secret-1\"\n",
            "management.accounts[1]: the same token as an account before it",
        ),
    ] {
        let config = app::parse_config(text).unwrap();
        assert_eq!(app::router(&config).err().as_deref(), Some(expected));
    }
    // A key given id 0 after one given none: the keys with ids go in first, the other takes
    // an id none has.
    let config = app::parse_config(
        "[[keys]]\nkey = \"sk-a-000000000\"\n[[keys]]\nid = 0\nkey = \"sk-b-000000000\"\n",
    )
    .unwrap();
    assert!(app::router(&config).is_ok());
    // Worker threads: as asked, one per core for 0, and a bound.
    let workers = |text: &str| app::parse_config(text).unwrap().worker_threads();
    assert_eq!(workers("workers = 3"), Ok(3));
    assert_eq!(
        workers(""),
        Ok(std::thread::available_parallelism().unwrap().get())
    );
    assert_eq!(workers("workers = 1024"), Ok(1024));
    assert_eq!(
        workers("workers = 1025"),
        Err("workers: at most 1024".to_owned())
    );
    assert_eq!(
        app::parse_config("").unwrap().runtime,
        app::RuntimeKind::PerCore
    );
    assert_eq!(
        app::parse_config("runtime = \"shared\"").unwrap().runtime,
        app::RuntimeKind::Shared
    );
    // The store refuses a timeout of 0 itself.
    #[cfg(feature = "redis")]
    {
        let config =
            app::parse_config("[redis]\nurl = \"redis://127.0.0.1:1/\"\ntimeout_ms = 0").unwrap();
        assert_eq!(
            app::router(&config).err().as_deref(),
            Some("redis: a RedisStore timeout must be more than zero - InvalidClientConfig")
        );
    }
}

/// Two gateways on one endpoint ledger would overwrite each other's changes: the second does
/// not start while the first runs, and starts once it is gone.
#[test]
fn a_second_gateway_on_the_same_registry_file_does_not_start() {
    let dir =
        std::env::temp_dir().join(format!("tower-maas-gateway-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("endpoints.json");
    let config = app::parse_config(&format!(
        "[management]\nregistry_file = {:?}\n",
        path.display().to_string()
    ))
    .unwrap();
    let first = app::router(&config).unwrap();
    assert_eq!(
        app::router(&config).err(),
        Some(format!(
            "management.registry_file: {}: in use by another registry ({}.lock is locked)",
            path.display(),
            path.display()
        ))
    );
    drop(first);
    assert!(app::router(&config).is_ok());
}

/// A configuration's `Debug` shows no plaintext key, management token or Redis password.
#[test]
fn a_configuration_shows_no_secret_in_debug() {
    let config = app::parse_config(
        r#"
        [[keys]]
        key = "sk-live-Secret0000"
        label = "team-a"
        [management]
        [[management.accounts]]
        name = "ops"
        token = "mgmt-Secret0000"
        [redis]
        url = "redis://admin:Secret0000@127.0.0.1:6379/0"
        "#,
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("Secret"), "{shown}");
    assert!(shown.contains("team-a"), "{shown}");
    // Without the `redis` feature nothing of the URL is shown; with it, the URL as the store
    // shows it.
    #[cfg(not(feature = "redis"))]
    assert!(shown.contains(r#"url: "…""#), "{shown}");
    #[cfg(feature = "redis")]
    redis_urls_show_no_password(&shown);
}

#[cfg(feature = "redis")]
fn redis_urls_show_no_password(shown: &str) {
    assert!(
        shown.contains(r#"url: "redis://admin:redacted@127.0.0.1:6379/0""#),
        "{shown}"
    );
    // The URL alone, not a builder with settings of its own beside the file's.
    assert!(!shown.contains("RedisStoreBuilder"), "{shown}");
    let socket =
        app::parse_config("[redis]\nurl = \"redis+unix:///run/redis.sock?pass=Secret0000\"\n")
            .unwrap();
    let shown = format!("{socket:?}");
    // A password with a `?` of its own (unencoded) makes no URL Redis reads: not shown.
    let odd = app::parse_config("[redis]\nurl = \"redis://:Sec?ret0000@h:6379\"\n").unwrap();
    let odd = format!("{odd:?}");
    assert!(odd.contains(r#"url: "(not a Redis URL)""#), "{odd}");
    assert!(!odd.contains("ret0000"), "{odd}");
    assert!(
        shown.contains(r#"url: "redis+unix:///run/redis.sock?pass=redacted""#),
        "{shown}"
    );
    assert!(!shown.contains("Secret0000"), "{shown}");
}

/// The request log, as the binary sets it up (its line format, its batching writer): one line
/// per request with its id, the key's label or id (never the key), the model, the status, the
/// refusal's code and the prompt's tokens.
#[tokio::test]
async fn one_log_line_per_request_without_the_key() {
    const UNLABELLED: &str = "sk-Unlabe11edKey00000000000000000";
    // A current-thread runtime: the server's tasks log under this subscriber.
    let (captured, flush, _guard) = capture_log();
    let config: app::Config = toml::from_str(&format!(
        r#"
        trust_request_id = true
        [[keys]]
        key = "{KEY}"
        label = "team-a"
        [[keys]]
        key = "{UNLABELLED}"
        [[models]]
        name = "mock-model"
        context_length = 4096
        "#
    ))
    .unwrap();
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    assert_eq!(send(gw, chat("mock-model", "hello")).await.status, 200);
    let mut anonymous = chat("mock-model", "hello");
    anonymous.headers_mut().remove("authorization");
    assert_eq!(send(gw, anonymous).await.status, 400);
    let mut unlabelled = chat("mock-model", "hello there");
    unlabelled.headers_mut().insert(
        "authorization",
        format!("Bearer {UNLABELLED}").parse().unwrap(),
    );
    assert_eq!(send(gw, unlabelled).await.status, 200);
    // A stream: its line comes once it has ended, with the usage of its last chunk.
    let body = r#"{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;
    let streamed = common::post("/v1/chat/completions", body)
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-request-id", FIXED_ID)
        .body(full(body))
        .unwrap();
    let streamed = send(gw, streamed).await;
    assert!(
        streamed.text().ends_with("data: [DONE]\n\n"),
        "{}",
        streamed.text()
    );
    // Written out when the writer closes, as the binary's are at exit.
    drop(flush);

    let text = captured.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" request ")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    // `2026-11-22T14:03:01.029568Z  INFO request …`, then the latency, which varies.
    let fields = |line: &str| {
        let (stamp, rest) = line.split_at(27);
        assert!(common::is_timestamp(stamp), "{line}");
        let (fields, times) = rest.rsplit_once(" latency_us=").unwrap();
        let (head, end) = times.split_once(" duration_us=").unwrap();
        let (head, end): (u64, u64) = (head.parse().unwrap(), end.parse().unwrap());
        assert!(head <= end, "{line}");
        fields.to_owned()
    };
    assert_eq!(
        fields(lines[0]),
        format!(
            r#"  INFO request request_id="{FIXED_ID}" method=POST path="/v1/chat/completions" key="team-a" model="mock-model" status=200 code="-" prompt_tokens=9 tokens=2"#
        )
    );
    assert_eq!(
        fields(lines[1]),
        format!(
            r#"  INFO request request_id="{FIXED_ID}" method=POST path="/v1/chat/completions" key="-" model="-" status=400 code="ModelArts.81002" prompt_tokens=0 tokens=-"#
        )
    );
    assert_eq!(
        fields(lines[2]),
        format!(
            r#"  INFO request request_id="{FIXED_ID}" method=POST path="/v1/chat/completions" key="key-1" model="mock-model" status=200 code="-" prompt_tokens=10 tokens=4"#
        )
    );
    assert_eq!(
        fields(lines[3]),
        format!(
            r#"  INFO request request_id="{FIXED_ID}" method=POST path="/v1/chat/completions" key="team-a" model="mock-model" status=200 code="-" prompt_tokens=11 tokens=6"#
        )
    );
    assert!(!text.contains(KEY) && !text.contains(UNLABELLED), "{text}");
    assert!(!text.contains("sk-"), "{text}");
}

/// The load test's baseline is the mock without layers: the bare mock answers a chat of plain
/// messages with the body the gateway's mock gives, but for the id, with work or without.
#[tokio::test]
async fn the_bare_mock_answers_as_the_gateways_mock_does() {
    let config: app::Config = toml::from_str(&format!(
        "[[keys]]\nkey = \"{KEY}\"\n[[models]]\nname = \"mock-model\"\ncontext_length = 4096\n"
    ))
    .unwrap();
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    assert_eq!(mock::Work::calibrated(0.0).rounds(), 0);
    let work = mock::Work::calibrated(1000.0);
    assert!(work.rounds() > 0);
    let bare = common::serve_axum(mock::bare_router(mock::Work::default())).await;
    let busy = common::serve_axum(mock::bare_router(work)).await;
    // The answer with what differs by nature (the id, the second it was made) set aside.
    let answer = |reply: common::Reply| {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let mut body: serde_json::Value = serde_json::from_str(reply.text()).unwrap();
        let id = body["id"].take();
        assert!(id.as_str().unwrap().starts_with("chatcmpl-"), "{id}");
        assert!(body["created"].take().as_u64().unwrap() > 1_700_000_000);
        body
    };
    for (content, max_tokens, said, finish_reason) in [
        ("one two three", 10, "one two three", "stop"),
        ("one two three four", 2, "one two", "length"),
    ] {
        let request = || {
            let body = serde_json::json!({"model": "mock-model", "max_tokens": max_tokens, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]}).to_string();
            common::post("/v1/chat/completions", &body)
                .header("authorization", format!("Bearer {KEY}"))
                .body(full(body))
                .unwrap()
        };
        let expected = answer(send(gw, request()).await);
        // The system message's two words count in the prompt.
        let words = content.split(' ').count() + 2;
        let completion = said.split(' ').count();
        assert_eq!(
            expected,
            serde_json::json!({
                "id": null,
                "object": "chat.completion",
                "created": null,
                "model": "mock-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": said}, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": words, "completion_tokens": completion, "total_tokens": words + completion},
            })
        );
        assert_eq!(answer(send(bare, request()).await), expected);
        assert_eq!(answer(send(busy, request()).await), expected);
    }
}

/// The mock's streams, whole: MaaS style (a cumulative usage in every chunk unless
/// `include_usage` is false) and OpenAI style (one last chunk with empty `choices` and the
/// usage, when `include_usage` asks), each word a chunk, the last with its finish reason.
#[tokio::test]
async fn the_mock_streams_as_maas_and_as_openai_do() {
    let maas = catalogue_gateway("").await;
    let openai = catalogue_gateway("mock_stream_style = \"openai\"").await;
    let request = |include_usage: Option<bool>| {
        let mut body = serde_json::json!({"model": "mock-model", "stream": true, "max_tokens": 2, "messages": [{"role": "user", "content": "alpha beta gamma"}]});
        if let Some(include) = include_usage {
            body["stream_options"] = serde_json::json!({"include_usage": include});
        }
        let body = body.to_string();
        common::post("/v1/chat/completions", &body)
            .header("authorization", "Bearer sk-open-000000000000000000000000")
            .header("x-request-id", FIXED_ID)
            .body(full(body))
            .unwrap()
    };
    let chunk = |created: &str, choice: &str, usage: &str| {
        format!(
            r#"data: {{"choices":[{choice}],"created":{created},"id":"chatcmpl-{FIXED_ID}","model":"mock-model","object":"chat.completion.chunk"{usage}}}"#
        ) + "\n\n"
    };
    let first = r#"{"delta":{"content":"alpha "},"finish_reason":null,"index":0}"#;
    let last = r#"{"delta":{"content":"beta"},"finish_reason":"length","index":0}"#;
    // The mock counts the prompt's words: three.
    let usage = |n: u32| {
        format!(
            r#","usage":{{"completion_tokens":{n},"prompt_tokens":3,"total_tokens":{}}}"#,
            3 + n
        )
    };
    for (gw, include_usage, with_usage, usage_chunk) in [
        (maas, None, true, false),
        (maas, Some(true), true, false),
        (maas, Some(false), false, false),
        (openai, None, false, false),
        (openai, Some(true), false, true),
    ] {
        let reply = send(gw, request(include_usage)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
        let text = reply.text();
        // The one thing that varies: the second the answer was made.
        let created = text
            .split(r#""created":"#)
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_default()
            .to_owned();
        let mut expected = chunk(
            &created,
            first,
            &if with_usage { usage(1) } else { String::new() },
        );
        expected += &chunk(
            &created,
            last,
            &if with_usage { usage(2) } else { String::new() },
        );
        if usage_chunk {
            expected += &chunk(&created, "", &usage(2));
        }
        expected += "data: [DONE]\n\n";
        assert_eq!(text, expected, "{include_usage:?}");
    }
}

/// The gateway as the binary serves it (`serve.rs`), with clients given `client_timeout`.
async fn served(
    config: &str,
    client_timeout: Duration,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let bounds = serve::Bounds {
        client: client_timeout,
        grace: Duration::from_secs(5),
        connections: 100,
        buffered: 1 << 30,
    };
    served_until(config, bounds).await
}

/// Handed to workers, each connection is served on the worker with the fewest connections,
/// and stays there: four connections open at once, two on each of two workers, every request
/// of a connection answered on the thread that answered its first. Without workers, the
/// runtime that accepts serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_the_workers_and_stay_on_theirs() {
    let thread = axum::Router::new().route(
        "/thread",
        axum::routing::get(|| async { std::thread::current().name().unwrap_or("").to_owned() }),
    );
    let bounds = serve::Bounds {
        client: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        connections: 100,
        buffered: 1 << 30,
    };
    for workers in [Some(2), None] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = workers.map(|n| Arc::new(serve::Workers::start(n).unwrap()));
        let server = tokio::spawn(serve::serve(
            listener,
            thread.clone(),
            bounds,
            started.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(http1_client::<http_body_util::Full<Bytes>>(addr).await);
        }
        let mut threads = Vec::new();
        for (sender, _) in &mut clients {
            let mut names = Vec::new();
            for _ in 0..3 {
                let get = Request::get(format!("http://{addr}/thread"))
                    .body(full(""))
                    .unwrap();
                sender.ready().await.unwrap();
                let answer = sender.send_request(get).await.unwrap();
                assert_eq!(answer.status(), 200);
                let name = answer.into_body().collect().await.unwrap().to_bytes();
                names.push(String::from_utf8(name.to_vec()).unwrap());
            }
            assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
            threads.push(names.swap_remove(0));
        }
        if workers.is_some() {
            assert_eq!(
                threads,
                ["gw-worker-0", "gw-worker-1", "gw-worker-0", "gw-worker-1"]
            );
            // Worker 0's two connections end: the next two connections go to it, the one
            // with fewer, not in turn.
            for (sender, connection) in [clients.remove(2), clients.remove(0)] {
                drop(sender);
                tokio::time::timeout(Duration::from_secs(5), connection)
                    .await
                    .expect("the connection closed")
                    .unwrap()
                    .unwrap();
            }
            // The server's side ends a moment after the client's.
            let started = started.as_ref().unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while started.connections() != [0, 2] {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{:?}",
                    started.connections()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for _ in 0..2 {
                let (mut sender, connection) =
                    http1_client::<http_body_util::Full<Bytes>>(addr).await;
                let get = Request::get(format!("http://{addr}/thread"))
                    .body(full(""))
                    .unwrap();
                let answer = sender.send_request(get).await.unwrap();
                let name = answer.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(name, "gw-worker-0");
                clients.push((sender, connection));
            }
        } else {
            assert!(
                threads.iter().all(|t| t == "tokio-rt-worker"),
                "{threads:?}"
            );
        }
        drop(clients);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stopped")
            .unwrap();
    }
}

/// Each worker proxies through upstream connections of its own: two client connections, on
/// the two workers, open two upstream connections (one pool for all would hand the second
/// request the first's idle connection), and a later request on the first reuses its
/// worker's.
#[tokio::test]
async fn each_worker_proxies_through_upstream_connections_of_its_own() {
    const ANSWER: &str =
        r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = hyper::service::service_fn(|_: Request<Incoming>| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(full(ANSWER))
                        .unwrap(),
                )
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), answer),
            );
        }
    });
    let bounds = serve::Bounds {
        client: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        connections: 100,
        buffered: 1 << 30,
    };
    let (addr, _stop, _server) = served_on(&up_config(upstream, ""), bounds, Some(2)).await;
    let mut clients = [http1_client(addr).await.0, http1_client(addr).await.0];
    for which in [0, 1, 0] {
        let client = &mut clients[which];
        client.ready().await.unwrap();
        let answer = client.send_request(chat("up", "hello")).await.unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, ANSWER);
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// [`served`], with every bound chosen.
async fn served_until(
    config: &str,
    bounds: serve::Bounds,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    served_on(config, bounds, Some(2)).await
}

/// [`served_until`], on that many workers, or without workers on the test's runtime.
async fn served_on(
    config: &str,
    bounds: serve::Bounds,
    workers: Option<usize>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = app::parse_config(config).unwrap();
    let app = app::router(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = workers.map(|n| Arc::new(serve::Workers::start(n).unwrap()));
    let server = tokio::spawn(serve::serve(listener, app, bounds, workers, async move {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// A client that stops while sending its head loses its connection, and one that stops in
/// its body is answered as FastAPI answers a body it cannot read, instead of either holding
/// its connection and what it sent for as long as it likes.
#[tokio::test]
async fn a_client_that_stalls_is_given_up_on() {
    let config = format!("trust_request_id = true\n[[keys]]\nkey = \"{KEY}\"\n");
    let (addr, _stop, _server) = served(&config, Duration::from_millis(200)).await;
    // Nothing at all, half of HTTP/2's preface, half of a head: the connection is closed,
    // nothing written.
    for sent in [
        "",
        "PRI * HTTP/2",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
    ] {
        assert_eq!(common::raw_http1(addr, sent, false).await, "", "{sent:?}");
    }

    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nx-request-id: {FIXED_ID}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":"
    );
    let answer = common::raw_http1(addr, &head, false).await;
    let body = common::UNPARSABLE;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with(&format!("\r\n\r\n{body}")), "{answer}");
}

/// On the stop signal the gateway takes no new connection, and a request in flight is
/// answered before it exits: served by workers, as the binary serves by default, and by
/// tokio's shared runtime (`runtime = "shared"`).
#[tokio::test]
async fn a_stop_lets_requests_in_flight_finish() {
    stop_lets_requests_in_flight_finish(Some(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_requests_in_flight_finish_on_the_shared_runtime() {
    stop_lets_requests_in_flight_finish(None).await;
}

async fn stop_lets_requests_in_flight_finish(workers: Option<usize>) {
    // The upstream says when the request has reached it, then answers when the test says.
    let (upstream, arrival, release) = held_upstream().await;
    let config = up_config(upstream, "");
    let bounds = serve::Bounds {
        client: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        connections: 100,
        buffered: 1 << 30,
    };
    let (addr, stop, server) = served_on(&config, bounds, workers).await;
    let mut arrival = arrival;
    let in_flight = tokio::spawn(send(addr, chat("up", "hello")));
    arrival.recv().await.unwrap();
    stop.send(()).unwrap();
    // Stopped: no new connection, and the server waits for the request in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(!server.is_finished(), "the server left a request in flight");
    release.send(true).unwrap();
    let reply = in_flight.await.unwrap();
    reply.assert_json(
        200,
        r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server exits once its requests are done")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The idle clock restarts with every piece: pieces 0.7 of the deadline apart, three and a
/// half deadlines in all, all pass; after the last, the body fails one deadline later. (On
/// tokio's paused clock, so that the times are exact.)
#[tokio::test(start_paused = true)]
async fn an_idle_deadline_restarts_with_every_piece() {
    let (pieces, received) = tokio::sync::mpsc::channel(1);
    let idle = Duration::from_secs(10);
    let mut body = idle::IdleTimeout::new(channel(received), idle, || "stalled".into());
    let sender = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(7)).await;
            pieces.send(Bytes::from_static(b"x")).await.unwrap();
        }
        std::future::pending::<()>().await;
    });
    let start = tokio::time::Instant::now();
    for _ in 0..5 {
        let piece = body.frame().await.unwrap().unwrap();
        assert_eq!(piece.into_data().unwrap(), "x");
    }
    let stalled = body.frame().await.unwrap().unwrap_err();
    assert_eq!(stalled.to_string(), "stalled");
    assert_eq!(start.elapsed(), Duration::from_secs(35 + 10));
    sender.abort();
}

/// Listing the models and asking after a task generate nothing: they cost no tokens, neither
/// against a small TPM nor against the key's quota.
#[tokio::test]
async fn reading_models_and_tasks_costs_no_tokens() {
    let config = app::parse_config(&format!(
        "trust_request_id = true\n[[keys]]\nkey = \"{KEY}\"\ntpm = 30\nquota = 30\n"
    ))
    .unwrap();
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    let get = |path: &str| request("GET", path, Some(KEY), "");
    for _ in 0..3 {
        let reply = send(gw, get("/v1/models")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        send(gw, get("/v1/video/generations/task-none"))
            .await
            .assert_json(
                404,
                &dual(
                    "ModelArts.81108",
                    "Task task-none does not exist",
                    "NotFound",
                ),
            );
    }
    // An id that is not UTF-8 once decoded is no task either: 81108 with the id as sent.
    send(gw, get("/v1/video/generations/%FF%FE"))
        .await
        .assert_json(
            404,
            &dual("ModelArts.81108", "Task %FF%FE does not exist", "NotFound"),
        );
    // The whole TPM is still there, and the quota untouched: a request of 30 tokens (8 of
    // prompt by the estimate, 22 to generate) passes.
    let body = serde_json::json!({"model": "mock-model", "max_tokens": 22, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let request = common::post("/v1/chat/completions", &body)
        .header("authorization", format!("Bearer {KEY}"))
        .body(full(body))
        .unwrap();
    assert_eq!(send(gw, request).await.status, 200);
}

/// An upstream that never answers, and a gateway configuration that waits on it for a minute
/// as model `up`; the upstream tells of each request's arrival, and of the first one let go.
async fn stuck_upstream() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (arrived, arrival) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (dropped, upstream_let_go) = tokio::sync::oneshot::channel();
    let dropped = Arc::new(Mutex::new(Some(dropped)));
    let stuck = tower::service_fn(move |_: Request<Incoming>| {
        let _ = arrived.send(());
        // Never sent: dropped with what holds it, which its receiver sees.
        let signal = dropped.lock().unwrap().take();
        async move {
            let _signal = signal;
            std::future::pending::<Result<Response<axum::body::Body>, Infallible>>().await
        }
    });
    let upstream = common::serve_hyper(stuck).await;
    let config = up_config(upstream, "upstream_timeout_ms = 60000\n");
    (config, arrival, upstream_let_go)
}

/// A request that would not finish does not keep a stopping gateway forever: past the grace
/// period it exits all the same, and drops that request first (while the runtime runs, so
/// that what it holds, a limiter's settlement, is let go on it). Served by workers and by the
/// shared runtime.
#[tokio::test]
async fn a_stop_waits_no_longer_than_its_grace() {
    stop_waits_no_longer_than_its_grace(Some(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_no_longer_than_its_grace_on_the_shared_runtime() {
    stop_waits_no_longer_than_its_grace(None).await;
}

async fn stop_waits_no_longer_than_its_grace(workers: Option<usize>) {
    let (config, mut arrival, upstream_let_go) = stuck_upstream().await;
    let bounds = serve::Bounds {
        client: Duration::from_secs(5),
        grace: Duration::from_millis(200),
        connections: 100,
        buffered: 1 << 30,
    };
    let (addr, stop, server) = served_on(&config, bounds, workers).await;
    let _in_flight = tokio::spawn(send_lossy(addr, chat("up", "hello")));
    arrival.recv().await.unwrap();
    let stopped = tokio::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server exits after its grace")
        .unwrap();
    // It waited for the request the whole grace period first, then dropped it at once rather
    // than waiting (a second) for it to go.
    let took = stopped.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    // The request was dropped, and with it the gateway's call to the upstream.
    let_go(
        upstream_let_go,
        Duration::from_secs(2),
        "the request in flight was dropped",
    )
    .await;
}

/// An HTTP/1 client connection to `addr`, kept open, driven by a task of its own.
async fn http1_client<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// An HTTP/2 client connection to `addr` (prior knowledge), driven by a task of its own; its
/// windows `window` bytes when given (hyper's own otherwise).
async fn http2_client<B>(
    addr: SocketAddr,
    window: Option<u32>,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Some(window) = window {
        builder
            .initial_stream_window_size(window)
            .initial_connection_window_size(window);
    }
    let (sender, connection) = builder
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    (sender, tokio::spawn(connection))
}

/// [`STREAMED_CHAT`] as an HTTP/1 client writes it.
fn streamed_chat_http1() -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{STREAMED_CHAT}",
        STREAMED_CHAT.len()
    )
}

/// A streamed chat for model `up`, as an HTTP/2 client sends it.
fn streamed_chat() -> Request<http_body_util::Full<Bytes>> {
    Request::post("http://gateway/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(full(STREAMED_CHAT))
        .unwrap()
}

const STREAMED_CHAT: &str =
    r#"{"model":"up","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// An HTTP/2 connection left idle is closed after the client deadline, although its client
/// answers the server's pings.
#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let (addr, _stop, _server) = served("", Duration::from_secs(1)).await;
    let (mut sender, connection) = http2_client(addr, None).await;
    let health = Request::get(format!("http://{addr}/health"))
        .body(full(""))
        .unwrap();
    let answer = sender.send_request(health).await.unwrap();
    assert_eq!(answer.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle connection was closed")
        .unwrap()
        .unwrap();
}

/// Answers that take longer than the client deadline are no idleness, whether the head is
/// slow or a stream lasts: the connection takes the next request after each.
#[tokio::test]
async fn a_slow_answer_or_a_long_stream_is_not_idleness() {
    const USAGE: &str = r#""usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}"#;
    let slow = tower::service_fn(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        if !String::from_utf8_lossy(&body).contains("stream") {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let answer = format!(r#"{{"choices":[],{USAGE}}}"#);
            return Ok::<_, Infallible>(Response::new(axum::body::Body::from(answer)));
        }
        // Four events half a second apart.
        let (events, received) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let event = format!("data: {{\"choices\":[],{USAGE}}}\n\n");
                events.send(Bytes::from(event)).await.unwrap();
            }
        });
        Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::new(channel(received)))
            .unwrap())
    });
    let upstream = common::serve_hyper(slow).await;
    let config = up_config(upstream, "upstream_timeout_ms = 5000\n");
    let (addr, _stop, _server) = served(&config, Duration::from_secs(1)).await;
    // One connection, each request begun as the answer before it ends: an idle shutdown
    // during a wait or a stream would have refused the next one.
    let (mut sender, _connection) = http1_client(addr).await;
    for content in ["slow", "a stream", "slow"] {
        let mut request = chat("up", content);
        if content == "a stream" {
            *request.body_mut() = full(
                serde_json::json!({"model": "up", "stream": true, "messages": [{"role": "user", "content": content}]})
                    .to_string(),
            );
            request.headers_mut().remove("content-length");
        }
        let answer = sender.send_request(request).await.unwrap();
        assert_eq!(answer.status(), 200, "{content}");
        answer.into_body().collect().await.unwrap();
    }
}

/// Whether what holds the sender of `let_go` holds it still.
fn still_held(let_go: &mut tokio::sync::oneshot::Receiver<()>) -> bool {
    matches!(
        let_go.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Empty)
    )
}

/// An upstream that streams for ever, and a receiver that sees its answer let go (its sender
/// goes with the answer's body, never sent).
async fn endless_upstream() -> (SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    let (dropped, upstream_let_go) = tokio::sync::oneshot::channel();
    let dropped = Arc::new(Mutex::new(Some(dropped)));
    let content = "x".repeat(16 << 10);
    let event = Bytes::from(format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{content}\"}}}}],\"usage\":null}}\n\n"
    ));
    let endless = tower::service_fn(move |_: Request<Incoming>| {
        // Never sent: dropped with what holds it, which its receiver sees.
        let signal = dropped.lock().unwrap().take();
        let event = event.clone();
        // Always ready with one more event, for ever; the signal goes with the body.
        let events = stream::repeat_with(move || {
            let _held = &signal;
            event.clone()
        });
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body_of(events))
                    .unwrap(),
            )
        }
    });
    (common::serve_hyper(endless).await, upstream_let_go)
}

/// Waits at most `within` for the upstream to let go of what it answered with (`let_go`'s
/// sender goes with it, never sent).
async fn let_go(let_go: tokio::sync::oneshot::Receiver<()>, within: Duration, what: &str) {
    tokio::time::timeout(within, let_go)
        .await
        .expect(what)
        .unwrap_err();
}

/// What the gateway still sends on `client`'s connection before it closes it, within 5 s.
async fn until_closed(client: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut sent = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut sent)).await;
    assert!(read.is_ok(), "the connection was not closed");
    sent
}

/// A configuration: `extra`, then the test key and `upstream` as model `up`.
fn up_config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "{extra}[[keys]]\nkey = \"{KEY}\"\n[[models]]\nname = \"up\"\ncontext_length = 4096\nupstream = \"http://{upstream}\"\n"
    )
}

/// The gateway in front of `upstream` as model `up`, with clients given `client_timeout`.
async fn served_before(
    upstream: SocketAddr,
    client_timeout: Duration,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = up_config(upstream, "");
    served(&config, client_timeout).await
}

/// A client that stops reading its answer loses its connection once a write has waited the
/// client deadline, and the upstream's answer is let go with it, instead of both being held
/// for as long as the client stays connected.
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_the_upstream_is_let_go() {
    use tokio::io::AsyncWriteExt;

    let (upstream, upstream_let_go) = endless_upstream().await;
    let (addr, _stop, _server) = served_before(upstream, Duration::from_millis(300)).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(addr).await.unwrap();
    client
        .write_all(streamed_chat_http1().as_bytes())
        .await
        .unwrap();
    // Nothing read: the gateway's writes block once the sockets' buffers are full.
    let_go(
        upstream_let_go,
        Duration::from_secs(20),
        "the upstream's answer was let go",
    )
    .await;
    let answer = until_closed(&mut client).await;
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

/// Past `connections` connections, a new one waits, unserved, until one closes.
#[tokio::test]
async fn a_connection_past_the_cap_waits_for_one_to_close() {
    let bounds = serve::Bounds {
        client: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        connections: 1,
        buffered: 1 << 30,
    };
    let (addr, _stop, _server) = served_until("", bounds).await;
    let health = || {
        Request::get("/health")
            .header("host", "x")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    let connect = || http1_client(addr);

    let (mut first, first_connection) = connect().await;
    assert_eq!(first.send_request(health()).await.unwrap().status(), 200);
    // The first stays open; the second is taken into the listener's backlog, not served.
    let (mut second, _second_connection) = connect().await;
    let waiting = tokio::spawn(async move { second.send_request(health()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served past the cap");

    drop(first);
    first_connection.abort();
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once the first closed")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 200);
}

/// An HTTP/2 client that grants its stream no more window (it reads nothing of the answer,
/// yet answers pings and keeps its connection) loses the connection after a client deadline
/// or two in which it took nothing, and the upstream's answer is let go.
#[tokio::test]
async fn an_http2_client_that_takes_nothing_loses_its_connection() {
    let (upstream, upstream_let_go) = endless_upstream().await;
    let (addr, _stop, _server) = served_before(upstream, Duration::from_millis(300)).await;
    let (mut sender, _connection) = http2_client(addr, None).await;
    let answer = sender.send_request(streamed_chat()).await.unwrap();
    assert_eq!(answer.status(), 200);
    // The answer's body is held, never read: no window goes back to the gateway.
    let_go(
        upstream_let_go,
        Duration::from_secs(20),
        "the upstream's answer was let go",
    )
    .await;
    drop(answer);
}

/// A client that pauses between reads, each pause shorter than the client deadline, keeps its
/// connection over many deadlines: on HTTP/1, where each read of all that has come lets the
/// gateway's writes through in time (a reader slower than the sockets' buffers drain is taken
/// for one that stopped, as nginx's `send_timeout` takes it), and on HTTP/2, with a window
/// small enough that each read grants more in time.
#[tokio::test]
async fn a_slow_but_steady_reader_keeps_its_connection() {
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // HTTP/1: all that has come, every 50 ms, for three deadlines of 500 ms.
    let (upstream, mut upstream_let_go) = endless_upstream().await;
    let (addr, _stop, _server) = served_before(upstream, Duration::from_millis(500)).await;
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(streamed_chat_http1().as_bytes())
        .await
        .unwrap();
    let mut piece = vec![0; 64 << 10];
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut read = client.read(&mut piece).await.unwrap();
        assert!(read > 0, "the connection was closed");
        while read > 0 {
            read = client.try_read(&mut piece).unwrap_or(0);
        }
    }
    assert!(still_held(&mut upstream_let_go), "HTTP/1: let go");

    // HTTP/2: a 64 KiB window (granted back once half of it is read), all that has come every
    // 50 ms, as long.
    let (upstream, mut upstream_let_go) = endless_upstream().await;
    let (addr, _stop, _server) = served_before(upstream, Duration::from_millis(500)).await;
    let (mut sender, _connection) = http2_client(addr, Some(65_535)).await;
    let answer = sender.send_request(streamed_chat()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let mut answer = answer.into_body();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let frame = answer.frame().await.expect("the stream went on");
        assert!(frame.unwrap().is_data());
        while let Some(frame) = answer.frame().now_or_never() {
            assert!(frame.expect("the stream went on").unwrap().is_data());
        }
    }
    assert!(still_held(&mut upstream_let_go), "HTTP/2: let go");
}

/// An HTTP/2 frame: its 9-byte head, then `payload`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Header fields as HPACK literals without indexing (no table, no Huffman).
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        // A length of 127 or more takes more than one byte.
        assert!(name.len() < 127 && value.len() < 127);
        block.push(0);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// An HTTP/2 client whose peer has gone (it sends a request, then never reads, never answers a
/// ping) loses its connection to the gateway's pings, although its request is still waiting on
/// the upstream; and the upstream's request is let go.
#[tokio::test]
async fn an_http2_client_that_answers_no_ping_loses_its_connection() {
    use tokio::io::AsyncWriteExt;

    let (config, mut arrival, upstream_let_go) = stuck_upstream().await;
    let (addr, _stop, _server) = served(&config, Duration::from_millis(300)).await;
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let authorization = format!("Bearer {KEY}");
    let length = STREAMED_CHAT.len().to_string();
    let head = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", "gateway"),
        ("authorization", &authorization),
        ("content-type", "application/json"),
        ("content-length", &length),
    ]);
    let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    sent.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    sent.extend(h2_frame(0x4, 0x1, 0, &[])); // SETTINGS ACK, for the server's
    sent.extend(h2_frame(0x1, 0x4, 1, &head)); // HEADERS, END_HEADERS
    sent.extend(h2_frame(0x0, 0x1, 1, STREAMED_CHAT.as_bytes())); // DATA, END_STREAM
    client.write_all(&sent).await.unwrap();
    arrival.recv().await.unwrap();
    // Nothing more: no ping is answered. The gateway pings every 300 ms and waits 300 ms.
    let_go(
        upstream_let_go,
        Duration::from_secs(5),
        "the upstream's request was let go",
    )
    .await;
    let frames = until_closed(&mut client).await;
    // What came before the close: the server's settings first, and a ping among the frames.
    assert!(frames.len() >= 9 && frames[3] == 0x4, "{frames:?}");
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= frames.len() {
        let len = usize::from(frames[at]) << 16
            | usize::from(frames[at + 1]) << 8
            | usize::from(frames[at + 2]);
        kinds.push(frames[at + 3]);
        at += 9 + len;
    }
    assert!(kinds.contains(&0x6), "no PING among {kinds:?}");
}

/// The mock says at most `MAX_ANSWER_WORDS` words, whatever the prompt and `max_tokens` allow:
/// a long context's prompt does not become a stream of tens of megabytes.
#[tokio::test]
async fn the_mock_answers_at_most_its_bound_in_words() {
    let config = app::parse_config(&format!(
        "[[keys]]\nkey = \"{KEY}\"\n[[models]]\nname = \"long\"\ncontext_length = 100000\n"
    ))
    .unwrap();
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    let prompt = "word ".repeat(mock::MAX_ANSWER_WORDS + 1000);
    let request = |stream: bool| {
        let body = serde_json::json!({"model": "long", "stream": stream, "max_tokens": 90_000, "messages": [{"role": "user", "content": prompt}]}).to_string();
        common::post("/v1/chat/completions", &body)
            .header("authorization", format!("Bearer {KEY}"))
            .body(full(body))
            .unwrap()
    };
    let reply = send(gw, request(false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        (
            &answer["usage"]["completion_tokens"],
            &answer["choices"][0]["finish_reason"]
        ),
        (
            &serde_json::json!(mock::MAX_ANSWER_WORDS),
            &serde_json::json!("length")
        )
    );
    let reply = send(gw, request(true)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events: Vec<&str> = reply.text().split_terminator("\n\n").collect();
    assert_eq!(events.len(), mock::MAX_ANSWER_WORDS + 1);
    assert_eq!(events.last(), Some(&"data: [DONE]"));
}

/// A key that makes more video tasks than its bound forgets its own oldest, exactly past its
/// bound, and not other keys' tasks, even once it has made more than the bound for all keys.
#[tokio::test]
async fn a_busy_key_forgets_its_own_oldest_tasks_not_others() {
    let gw = catalogue_gateway("").await;
    let (open, peer) = (
        Some("sk-open-000000000000000000000000"),
        Some("sk-peer-000000000000000000000000"),
    );
    let create_task = async |key: Option<&str>| {
        let body = r#"{"model":"v","prompt":"a cat"}"#;
        let created = send(gw, request("POST", "/v1/video/generations", key, body)).await;
        assert_eq!(created.status, 200, "{}", created.text());
        let task: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
        task["task_id"].as_str().unwrap().to_owned()
    };
    let status = async |key: Option<&str>, task: &str| {
        let path = format!("/v1/video/generations/{task}");
        send(gw, request("GET", &path, key, "")).await.status
    };
    let others = create_task(peer).await;
    let mut made = Vec::new();
    for _ in 0..app::MAX_TASKS {
        made.push(create_task(open).await);
    }
    let kept = &made[made.len() - app::MAX_TASKS_PER_KEY..];
    let (first, last) = (&made[0], made.last().unwrap());
    assert_eq!(status(open, first).await, 404);
    assert_eq!(status(open, last).await, 200);
    // The bound exactly: the oldest kept answers, the one before it is forgotten.
    assert_eq!(status(open, &kept[0]).await, 200);
    let forgotten = &made[made.len() - app::MAX_TASKS_PER_KEY - 1];
    assert_eq!(status(open, forgotten).await, 404);
    assert_eq!(status(peer, &others).await, 200);
}

/// With `check_streams`, a streamed answer is checked in windows: the mock, told to decode a
/// phrase the input check cannot see, streams it, and the window holding it (here the whole
/// answer) is refused: the stream is 81011 as an event and `[DONE]`, the term never sent.
/// Without it the same stream passes whole.
#[tokio::test]
async fn checked_streams_end_with_81011_as_an_event() {
    let served = async |check: bool| {
        let config = app::parse_config(&format!(
            "[[keys]]\nkey = \"{KEY}\"\n[[models]]\nname = \"mock-model\"\ncontext_length = 4096\n\
             [risk]\nterms = [\"forbidden demo phrase\"]\ncheck_streams = {check}\n"
        ))
        .unwrap();
        let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
        // "base64: forbidden demo phrase": the mock says the decoded words.
        let body = serde_json::json!({"model": "mock-model", "stream": true, "stream_options": {"include_usage": false}, "messages": [{"role": "user", "content": "base64: Zm9yYmlkZGVuIGRlbW8gcGhyYXNl"}]}).to_string();
        let request = common::post("/v1/chat/completions", &body)
            .header("authorization", format!("Bearer {KEY}"))
            .body(full(body))
            .unwrap();
        let reply = send(gw, request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(tower_maas::RequestId::is_valid(
            reply.headers["x-request-id"].as_bytes()
        ));
        // Each event's content, or the event itself when it has none.
        reply
            .text()
            .split_terminator("\n\n")
            .map(|event| {
                let data = event.strip_prefix("data: ").unwrap();
                serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| {
                        v["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| data.to_owned())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        served(false).await,
        ["forbidden ", "demo ", "phrase", "[DONE]"]
    );
    assert_eq!(
        served(true).await,
        [
            r#"{"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"}}"#,
            "[DONE]"
        ]
    );
}

/// Bodies nested as deep as the validator takes are served on the binary's own worker threads
/// (their default stack, this debug build's frames): read by the validator on the chat route,
/// by the content filter's own reading on the video route, and dropped, with no stack overflow.
#[tokio::test]
async fn bodies_nested_to_the_limit_are_served_on_the_workers() {
    let config = format!("trust_request_id = true\n[[keys]]\nkey = \"{KEY}\"\n");
    let (addr, _stop, _server) = served(&config, Duration::from_secs(30)).await;
    let max = tower_maas::validate::MAX_DEPTH;
    let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    // The body, the kwargs and 510 lists: 512 levels, the most taken; and the body and 511
    // lists.
    let chat = format!(
        r#"{{"model":"mock-model","messages":[{{"role":"user","content":"deep enough"}}],"chat_template_kwargs":{{"a":{}}}}}"#,
        nested(max - 2)
    );
    let video = format!(
        r#"{{"model":"mock-model","prompt":"a cat","x":{}}}"#,
        nested(max - 1)
    );
    for (path, body, said, expected) in [
        (
            "/v1/chat/completions",
            chat,
            "/choices/0/message/content",
            "deep enough",
        ),
        ("/v1/video/generations", video, "/status", "queued"),
    ] {
        let reply = send(addr, request("POST", path, Some(KEY), &body)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(answer.pointer(said).unwrap(), expected, "{path}");
    }
}

/// The mock embeds at most 2048 inputs a request, as OpenAI's API does, and answers more with
/// an OpenAI-compatible server's 400 instead of building an answer of about 0.8 KB an input as
/// a `Value` (12 MiB of empty strings would be gigabytes).
#[tokio::test]
async fn the_mock_embeds_at_most_2048_inputs() {
    let config = app::parse_config(&format!(
        "trust_request_id = true\n[[keys]]\nkey = \"{KEY}\"\n"
    ))
    .unwrap();
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    let embed = |inputs: usize| {
        let body =
            serde_json::json!({"model": "mock-model", "input": vec![""; inputs]}).to_string();
        request("POST", "/v1/embeddings", Some(KEY), &body)
    };
    let reply = send(gw, embed(mock::MAX_EMBEDDINGS)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(answer["data"].as_array().unwrap().len(), 2048);
    assert_eq!(
        answer["data"][2047],
        serde_json::json!({"object": "embedding", "index": 2047, "embedding": [0.0, 0.5, 1.0]})
    );
    for inputs in [2049, 100_000] {
        send(gw, embed(inputs)).await.assert_json(
            400,
            &format!(
                r#"{{"object":"error","message":"The mock model embeds at most 2048 inputs a request; this one has {inputs}.","type":"BadRequestError","param":null,"code":400}}"#
            ),
        );
    }
}

/// The per-IP window is written as a policy gives it: a unit, or a count and a unit, in the
/// singular or the plural.
#[test]
fn ip_limit_windows_parse_as_a_policy_writes_them() {
    use tower_maas::ThrottleWindow;
    for (text, window) in [
        ("second", ThrottleWindow::Seconds(1)),
        ("minute", ThrottleWindow::Minutes(1)),
        ("hours", ThrottleWindow::Hours(1)),
        (" day ", ThrottleWindow::Days(1)),
        ("10 seconds", ThrottleWindow::Seconds(10)),
        ("2 hour", ThrottleWindow::Hours(2)),
        ("30  days", ThrottleWindow::Days(30)),
        ("4294967295 minutes", ThrottleWindow::Minutes(u32::MAX)),
    ] {
        assert_eq!(
            text.parse::<app::IpWindow>(),
            Ok(app::IpWindow(window)),
            "{text:?}"
        );
    }
    for text in [
        "",
        "0 seconds",
        "+10 seconds",
        "-1 minute",
        "4294967296 days",
        "10",
        "10 weeks",
        "ten seconds",
        "1.5 hours",
        "secondss",
    ] {
        assert!(text.parse::<app::IpWindow>().is_err(), "{text:?}");
    }
}

/// An upstream's URL is taken as an OpenAI SDK's `base_url` is written, with or without its
/// `/v1` and a path prefix, and one the proxy cannot use is refused when the configuration
/// loads, not answered 502 (or the upstream's 404) at every request.
#[test]
fn upstream_urls_are_taken_as_base_urls_or_refused() {
    for (url, base) in [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("http://vllm:8000/v1/", "http://vllm:8000"),
        ("http://10.0.0.5/serving/", "http://10.0.0.5/serving"),
        ("http://10.0.0.5/serving/v1", "http://10.0.0.5/serving"),
        ("http://[::1]:8000/v1", "http://[::1]:8000"),
        ("HTTP://vllm:8000/v1", "http://vllm:8000"),
        // Only `/v1` itself is the OpenAI base URL's.
        ("http://gemini/v1beta", "http://gemini/v1beta"),
        ("http://h/v10", "http://h/v10"),
    ] {
        assert_eq!(proxy::Upstream::base_of(url).as_deref(), Ok(base), "{url}");
    }
    for (url, error) in [
        (
            "https://api.example.com/v1",
            "https is not supported: the gateway speaks plain HTTP to its upstreams (keep them on a private network, or behind a local TLS proxy)",
        ),
        ("127.0.0.1:8000", "not an http:// URL"),
        ("ftp://host/", "not an http:// URL"),
        ("/v1", "not an http:// URL"),
        (
            "http://host:8000/v1?key=1",
            "a query or fragment would be sent with every request",
        ),
        (
            "http://host:8000/v1#top",
            "a query or fragment would be sent with every request",
        ),
        (
            "http://exa mple",
            "not a URL (http://host:port, with a path prefix if any)",
        ),
        (
            "http://user:secret@host:8000",
            "credentials in the URL are not supported",
        ),
        (
            "http://[fe80::1%25eth0]:8000",
            "an IPv6 zone cannot be connected to",
        ),
        (
            "http://host:8000/v1/chat/completions",
            "an endpoint, not the server's base URL",
        ),
    ] {
        assert_eq!(
            proxy::Upstream::base_of(url),
            Err(error.to_owned()),
            "{url}"
        );
    }
    let config = app::parse_config(
        "[[models]]\nname = \"m\"\ncontext_length = 8\nupstream = \"https://api.example.com/v1\"\n",
    )
    .unwrap();
    assert_eq!(
        app::router(&config).err().as_deref(),
        Some(
            "models (m): upstream: https is not supported: the gateway speaks plain HTTP to its upstreams (keep them on a private network, or behind a local TLS proxy)"
        )
    );
}

/// A model whose upstream is written with `/v1` is asked at `/v1/chat/completions`, once.
#[tokio::test]
async fn an_upstream_written_with_v1_is_asked_at_its_paths() {
    let (upstream, seen) = upstream().await;
    let gw = gateway(upstream).await;
    let reply = send(gw, chat("upv1", "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(headers["x-seen-path"], "/v1/chat/completions");
}

/// An upstream that takes no connection (its accept queue full, as a host that drops SYNs) is
/// unreachable, 502 APIG.0201 once connecting has taken 5 s, not a slow upstream's 504 after
/// the whole upstream timeout.
#[tokio::test]
async fn an_upstream_that_takes_no_connection_is_502_after_the_connect_timeout() {
    // A backlog of 0 holds one connection; the next connect waits for ever.
    let full = tokio::net::TcpSocket::new_v4().unwrap();
    full.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = full.listen(0).unwrap();
    let address = full.local_addr().unwrap();
    let _holder = std::net::TcpStream::connect(address).unwrap();
    let config = app::parse_config(&format!(
        "trust_request_id = true\nupstream_timeout_ms = 60000\n{}",
        up_config(address, "")
    ))
    .unwrap();
    let gw = common::serve_axum_with_peer(app::router(&config).unwrap()).await;
    // Without the connect timeout, this is the 504 of the upstream timeout a minute later.
    send(gw, chat("up", "hello")).await.assert_json(
        502,
        &format!(r#"{{"error_msg":"Backend unavailable.","error_code":"APIG.0201","request_id":"{FIXED_ID}"}}"#),
    );
    drop(full);
}

/// An IPv4 client of a dual-stack listener (`[::]`) reaches the upstream's `X-Forwarded-For`
/// as the IPv4 address it is, not as `::ffff:127.0.0.1`; an IPv6 client as its address.
#[tokio::test]
async fn an_ipv4_client_of_a_dual_stack_listener_is_forwarded_as_ipv4() {
    let (up, seen) = upstream().await;
    let config = app::parse_config(&up_config(up, "")).unwrap();
    let app = app::router(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .into_future(),
    );
    let reply = send(
        SocketAddr::from(([127, 0, 0, 1], port)),
        chat("up", "hello"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["forwarded"], "for=127.0.0.1");
    // An IPv6 client: bracketed and quoted in `Forwarded` (RFC 7239 6), bare elsewhere.
    let reply = send(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        chat("up", "hello"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (headers, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(headers["x-forwarded-for"], "::1");
    assert_eq!(headers["forwarded"], "for=\"[::1]\"");
    assert_eq!(headers["x-real-ip"], "::1");
}

/// An upstream's failure is logged with its cause (hyper-util's error names only its kind; the
/// cause is its source's), at most once a second: an upstream that is down fails every request
/// sent to it.
#[tokio::test]
async fn an_upstream_failure_is_logged_with_its_cause_once_a_second() {
    let (captured, flush, _guard) = capture_log();
    let (up, _) = upstream().await;
    let gw = gateway(up).await;
    for _ in 0..3 {
        assert_eq!(send(gw, chat("dead", "hello")).await.status, 502);
    }
    drop(flush);
    let text = captured.text();
    let failures: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("upstream failed"))
        .collect();
    assert_eq!(failures.len(), 1, "{text}");
    assert!(
        failures[0].contains(
            &format!(r#" WARN upstream failed: client error (Connect): tcp connect error: Connection refused (os error 111) request_id="{FIXED_ID}" upstream="http://127.0.0.1:1" unlogged=0"#)
        ),
        "{text}"
    );
}

/// The binary with its open-file limit set to `soft` and `hard` by the shell that starts it,
/// serving `max_connections` from the builtin mock: the log line it writes about the limit
/// (without its time), and its soft and hard limits once it listens, as `/proc` shows them.
#[cfg(target_os = "linux")]
fn open_files_with(soft: u64, hard: u64, max_connections: usize) -> (String, String) {
    use std::io::BufRead;
    /// Killed however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config =
        std::env::temp_dir().join(format!("tower-maas-fds-{}-{port}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\nmax_connections = {max_connections}\n"),
    )
    .unwrap();
    let mut child = Running(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" --config \"$1\""
            ))
            .arg(common::gateway_binary())
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Lines as they come, from a thread that keeps the pipe open until the end.
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let (lines, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let (mut about, mut listening) = (None, false);
    while about.is_none() || !listening {
        let line = read
            .recv_timeout(Duration::from_secs(10))
            .expect("the gateway listens and writes a line about open files");
        listening |= line.contains("listening on");
        if line.contains("open files") {
            // The line less its timestamp.
            about = Some(
                line.split_once("Z ")
                    .map_or(line.clone(), |(_, rest)| rest.to_owned()),
            );
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.0.id())).unwrap();
    drop(child);
    let _ = std::fs::remove_file(&config);
    let limit = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    (about.unwrap(), limit)
}

/// The gateway raises its soft open-file limit to the hard one, and says so; when even the
/// hard limit is below what `max_connections` takes at least (one each from the builtin mock,
/// and 64 besides), it warns.
#[cfg(target_os = "linux")]
#[test]
fn the_open_file_limit_is_raised_to_the_hard_one() {
    // The shell may lower the hard limit, never raise it: a runner below 512 cannot set it up.
    let own = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard = own
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap();
    if hard != "unlimited" && hard.parse::<u64>().unwrap() < 512 {
        eprintln!("hard open-file limit {hard}, below the test's 512: skipped");
        return;
    }
    assert_eq!(
        open_files_with(256, 512, 300),
        (
            " INFO open files: soft limit raised from 256 to 512".to_owned(),
            "512 512".to_owned()
        )
    );
    assert_eq!(
        open_files_with(256, 512, 1000),
        (
            " WARN open files: the limit is 512 (the hard limit), below the 1064 that \
             max_connections = 1000 takes at least: connections past it wait unaccepted; raise \
             the hard limit (ulimit -Hn, systemd's LimitNOFILE) or lower max_connections"
                .to_owned(),
            "512 512".to_owned()
        )
    );
}

/// An upstream that answers each request once the test says so, and says when one has come.
async fn held_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::watch::Sender<bool>,
) {
    let (arrived, arrival) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (release, released) = tokio::sync::watch::channel(false);
    let held = tower::service_fn(move |_: Request<Incoming>| {
        let arrived = arrived.clone();
        let mut released = released.clone();
        async move {
            let _ = arrived.send(());
            let _ = released.wait_for(|go| *go).await;
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
                    ))
                    .unwrap(),
            )
        }
    });
    (common::serve_hyper(held).await, arrival, release)
}

/// All requests together hold at most `max_buffered_bytes` of bodies: a request whose body
/// finds no room waits, reading nothing more, until a request in flight has its answer (here
/// one waiting on its upstream with 800 of the 1000 bytes), then is served; one that waits
/// longer than the client's deadline is refused as a body that could not be read, and the
/// room it waited for is there for the next.
#[tokio::test]
async fn request_bodies_held_at_once_are_bounded() {
    // Bodies of 800 and 400 bytes.
    let big = || chat("up", &"a".repeat(728));
    let small = || chat("up", &"b".repeat(328));
    assert_eq!(full_len(big()), 800);
    assert_eq!(full_len(small()), 400);
    let start = |client| async move {
        let (upstream, arrival, release) = held_upstream().await;
        let config = up_config(upstream, "trust_request_id = true\n");
        let bounds = serve::Bounds {
            client,
            grace: Duration::from_secs(5),
            connections: 100,
            buffered: 1000,
        };
        let (addr, stop, server) = served_until(&config, bounds).await;
        (addr, arrival, release, stop, server)
    };

    let (addr, mut arrival, release, _stop, _server) = start(Duration::from_secs(10)).await;
    let held = tokio::spawn(send(addr, big()));
    arrival.recv().await.unwrap();
    let waiting = tokio::spawn(send(addr, small()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a body past the room was read");
    assert!(
        arrival.try_recv().is_err(),
        "a body past the room was sent on"
    );
    release.send(true).unwrap();
    held.await.unwrap().assert_json(
        200,
        r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
    );
    assert_eq!(waiting.await.unwrap().status, 200);

    // Waiting past the client's deadline (300 ms) fails the body; the room comes back.
    let (addr, mut arrival, release, _stop, _server) = start(Duration::from_millis(300)).await;
    let held = tokio::spawn(send(addr, big()));
    arrival.recv().await.unwrap();
    let refused = send(addr, small()).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.text(), common::UNPARSABLE);
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().status, 200);
    // The whole room is back, none of it kept by the refused request.
    let whole = chat("up", &"c".repeat(928));
    assert_eq!(full_len(chat("up", &"c".repeat(928))), 1000);
    assert_eq!(send(addr, whole).await.status, 200);
}

/// A piece of a body larger than the whole room is not counted: it would wait for ever, first
/// in line, and hold every other body up. The layer reading it refuses it at once as too large
/// (the room is at least `body_limit`). Here one chunk of 1200 bytes, room and limit 1000.
#[tokio::test]
async fn a_piece_larger_than_the_room_is_refused_as_too_large_at_once() {
    let (upstream, _arrival, _release) = held_upstream().await;
    let config = up_config(upstream, "trust_request_id = true\nbody_limit = 1000\n");
    let bounds = serve::Bounds {
        client: Duration::from_secs(60),
        grace: Duration::from_secs(5),
        connections: 100,
        buffered: 1000,
    };
    let (addr, _stop, _server) = served_until(&config, bounds).await;
    let body = format!(
        r#"{{"model":"up","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "d".repeat(1150)
    );
    let sent = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nx-request-id: {FIXED_ID}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    // Within the client's deadline (60 s): a wait for room would show as a hang here.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        common::raw_http1(addr, &sent, true),
    )
    .await
    .expect("a piece larger than the room waited");
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with(&format!(
            "\r\n\r\n{}",
            apig("APIG.0201", "Request entity too large.")
        )),
        "{answer}"
    );
}

fn full_len(request: Request<http_body_util::Full<Bytes>>) -> u64 {
    http_body::Body::size_hint(request.body()).exact().unwrap()
}
