//! The example gateway in front of a real upstream server: proxying JSON and streams, renaming
//! the model, never forwarding the client's key, and the proxy's failure modes.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/gateway/app.rs"]
mod app;
mod common;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/gateway/mock.rs"]
mod mock;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/gateway/proxy.rs"]
mod proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{FIXED_ID, frames, full, send, send_lossy};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

const KEY: &str = "sk-Gatew4yKey000000000000000000000";

/// What the upstream saw of the last request: its headers and body.
type Seen = Arc<Mutex<Option<(http::HeaderMap, Bytes)>>>;

/// An OpenAI-compatible upstream: answers by the user message (`slow`, `error`, `stream`).
async fn upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            *record.lock().unwrap() = Some((parts.headers, body.clone()));
            let text = String::from_utf8_lossy(&body).to_string();
            let usage = r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#;
            let response: Response<axum::body::Body> = if text.contains("slow") {
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

async fn gateway(upstream: SocketAddr) -> SocketAddr {
    let config: app::Config = toml::from_str(&format!(
        r#"
        upstream_timeout_ms = 300
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
        name = "dead"
        context_length = 4096
        upstream = "http://127.0.0.1:1"
        "#
    ))
    .unwrap();
    let app = app::router(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
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

#[tokio::test]
async fn the_sample_configuration_loads() {
    let text = include_str!("../examples/gateway/gateway.toml");
    let config: app::Config = toml::from_str(text).unwrap();
    assert!(app::router(&config).is_ok());
}
