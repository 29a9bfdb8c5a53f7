//! A MaaS-compatible gateway in front of a builtin mock model.
//!
//! ```sh
//! cargo run --release --example gateway                      # 127.0.0.1:8080
//! cargo run --release --example gateway -- --listen 0.0.0.0:9000
//! ```
//!
//! The stack, outermost first: `ErrorEnvelope` (request ids, APIG.0101/405/504 mapping) →
//! `IpRateLimit` (APIG.0308) → `BearerAuth` (81002–81006) → `RequestSchemaValidator`
//! (vLLM/pydantic 400s, 81001, 81009, context length) → `TokenRateLimit` (81101, 81103, usage
//! reconciliation, quota) → `ContentRiskFilter` (81011; try "forbidden demo phrase") → the
//! routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{ConnectInfo, Extension};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy, Principal};
use tower_maas::limit::{IpRateLimitLayer, TokenRateLimitLayer};
use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier};
use tower_maas::validate::Json;
use tower_maas::validate::{ModelCatalog, ParsedRequest, RequestSchemaValidatorLayer};
use tower_maas::{ErrorEnvelopeLayer, RequestId, ThrottleWindow};

/// The model the builtin mock serves.
const MOCK_MODEL: &str = "mock-model";

/// Demo keys: one with generous limits, one at 2 requests per minute to see 81101, one frozen
/// to see 81006. The gateway listens on loopback by default; never expose demo keys.
const DEMO_KEY: &str = "sk-maas-demo-0000000000000000";
const SLOW_KEY: &str = "sk-maas-slow-0000000000000000";
const FROZEN_KEY: &str = "sk-maas-frozen-00000000000000";

#[tokio::main]
async fn main() {
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(listen) => listen,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };

    let keys = Arc::new(InMemoryKeyStore::new());
    let demo = KeyPolicy::new()
        .label("demo")
        .rpm(600)
        .tpm(200_000)
        .quota(10_000_000);
    keys.insert(DEMO_KEY, demo).expect("distinct demo keys");
    keys.insert(SLOW_KEY, KeyPolicy::new().label("demo-slow").rpm(2))
        .expect("distinct demo keys");
    let frozen = keys
        .insert(FROZEN_KEY, KeyPolicy::new().label("demo-frozen"))
        .expect("distinct demo keys");
    keys.freeze(frozen);

    // The MaaS order, outermost first: envelope, per-IP limit, auth, validation, token limits.
    let validator =
        RequestSchemaValidatorLayer::new().models(ModelCatalog::new().model(MOCK_MODEL, 4096));
    // A demo term list: a request or an answer with this phrase gets 81011.
    let risk = KeywordClassifier::builder()
        .term("demo", "forbidden demo phrase")
        .ignore_separators(true)
        .build()
        .expect("a valid term list");
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route_layer(ContentRiskFilterLayer::new(risk))
        .route_layer(TokenRateLimitLayer::new())
        .route_layer(validator)
        .route_layer(BearerAuthLayer::new(keys));
    let per_ip = IpRateLimitLayer::new(1200, ThrottleWindow::Minute)
        .peer_addr(|e| e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(api)
        .layer(per_ip)
        .layer(ErrorEnvelopeLayer::new());

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {listen}: {err}");
            std::process::exit(1);
        }
    };
    println!("tower-maas gateway listening on http://{listen}");
    println!("demo API key: {DEMO_KEY}");
    println!("  (2 requests/minute: {SLOW_KEY}; frozen: {FROZEN_KEY})");
    println!(
        "try: curl -s http://{listen}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \
         -H 'Content-Type: application/json' \
         -d '{{\"model\":\"{MOCK_MODEL}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .expect("server error");
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<SocketAddr, String> {
    const USAGE: &str = "usage: gateway [--listen ADDR]   (default 127.0.0.1:8080)";
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or(USAGE)?;
                listen = value
                    .parse()
                    .map_err(|_| format!("--listen: not an address: {value}\n{USAGE}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument: {other}\n{USAGE}")),
        }
    }
    Ok(listen)
}

async fn models(Extension(_): Extension<Principal>) -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": "tower-maas"}],
    }))
}

/// The builtin mock: answers with the last user message, deterministically, with exact usage.
/// The validator has already refused anything vLLM would refuse.
async fn chat_completions(
    Extension(id): Extension<RequestId>,
    Extension(request): Extension<Arc<ParsedRequest>>,
) -> Response {
    let body = request.json();
    let messages = match body {
        Json::Dict(dict) => match dict.get("messages") {
            Some(Json::List(messages)) => messages.as_slice(),
            _ => &[],
        },
        _ => &[],
    };
    let text_of = |m: &Json| match m {
        Json::Dict(m) => m
            .get("content")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    };
    let is_user = |m: &&Json| matches!(m, Json::Dict(m) if m.get("role").and_then(Json::as_str) == Some("user"));
    let prompt_tokens: usize = messages.iter().map(|m| words(&text_of(m))).sum();
    let last_user = messages
        .iter()
        .rev()
        .find(is_user)
        .map(text_of)
        .unwrap_or_default();
    let max_tokens = request.max_tokens().map_or(usize::MAX, |n| n as usize);
    let answer: Vec<&str> = last_user.split_whitespace().take(max_tokens).collect();
    let completion_tokens = answer.len();
    let finish_reason = if completion_tokens < words(&last_user) {
        "length"
    } else {
        "stop"
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    axum::Json(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": request.model().unwrap_or(MOCK_MODEL),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.join(" ")},
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}

/// The mock's tokenizer: one token per whitespace-separated word.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}
