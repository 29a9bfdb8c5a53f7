//! The `tracing` output: a span per request with its id, an event per refusal with the layer,
//! code, status and key id, and never the key.
#![cfg(feature = "tracing")]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use common::{Captured, FIXED_ID, full, send};
use http::Request;
use tower_maas::ErrorEnvelopeLayer;
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};
use tower_maas::limit::TokenRateLimitLayer;

const KEY: &str = "sk-TracedKey-s3cr3t-000000000000";

#[tokio::test]
async fn refusals_are_debug_events_in_the_requests_span_without_the_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: the server's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let keys = Arc::new(InMemoryKeyStore::new());
    let mut policy = KeyPolicy::new();
    policy.rpm = Some(30);
    let id = keys.insert(KEY, policy).unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(|| async { "ok" }))
        .layer(TokenRateLimitLayer::new())
        .layer(BearerAuthLayer::new(keys))
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
    let addr = common::serve_axum(app).await;
    let chat = |key: &str| {
        Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {key}"))
            .header("x-request-id", FIXED_ID)
            .body(full("{}"))
            .unwrap()
    };
    assert_eq!(send(addr, chat(&format!("{KEY}x"))).await.status, 401);
    assert_eq!(send(addr, chat(KEY)).await.status, 200);
    assert_eq!(send(addr, chat(KEY)).await.status, 429);

    let text = captured.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, layer, code, status) in [
        (lines[0], "BearerAuth", "ModelArts.81003", 401),
        (lines[1], "TokenRateLimit", "ModelArts.81101", 429),
    ] {
        assert!(line.contains(" DEBUG "), "{line}");
        assert!(
            line.contains(&format!("maas_request{{request_id={FIXED_ID}}}")),
            "{line}"
        );
        assert!(
            line.ends_with(&format!(
                "refused layer=\"{layer}\" code=\"{code}\" status={status}{}",
                if layer == "TokenRateLimit" {
                    format!(" key_id={}", id.0)
                } else {
                    String::new()
                }
            )),
            "{line}"
        );
    }
    // No part of the key, anywhere.
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(!text.contains("TracedKey"), "{text}");
}
