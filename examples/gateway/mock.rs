//! The builtin mock model: deterministic answers with exact usage.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tower_maas::RequestId;
use tower_maas::validate::{Endpoint, Json, ParsedRequest};

/// The model the builtin mock serves by default.
pub(crate) const MOCK_MODEL: &str = "mock-model";

/// Answers a parsed request: chat with the last user message, completions with the prompt,
/// embeddings with a fixed vector; `max_tokens` honoured; one token per word.
pub(crate) fn answer(id: RequestId, request: &Arc<ParsedRequest>) -> Response {
    let model = request.model().unwrap_or(MOCK_MODEL).to_owned();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let texts = request.texts();
    let prompt_tokens: usize = texts.iter().map(|t| words(t)).sum();
    if request.endpoint() == Endpoint::Embeddings {
        return axum::Json(json!({
            "object": "list",
            "data": texts.iter().enumerate().map(|(i, _)| json!({"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]})).collect::<Vec<_>>(),
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }))
        .into_response();
    }
    let source = match request.json() {
        Json::Dict(body) => match body.get("messages") {
            Some(Json::List(messages)) => messages
                .iter()
                .rev()
                .find(|m| matches!(m, Json::Dict(m) if m.get("role").and_then(Json::as_str) == Some("user")))
                .and_then(|m| match m {
                    Json::Dict(m) => m.get("content").and_then(Json::as_str),
                    _ => None,
                })
                .unwrap_or_default()
                .to_owned(),
            _ => texts.join(" "),
        },
        _ => String::new(),
    };
    let max_tokens = request.max_tokens().map_or(usize::MAX, |n| n as usize);
    let answer: Vec<&str> = source.split_whitespace().take(max_tokens).collect();
    let completion_tokens = answer.len();
    let finish_reason = if completion_tokens < words(&source) {
        "length"
    } else {
        "stop"
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let choice: Value = if request.endpoint() == Endpoint::Completions {
        json!({"index": 0, "text": answer.join(" "), "finish_reason": finish_reason})
    } else {
        json!({"index": 0, "message": {"role": "assistant", "content": answer.join(" ")}, "finish_reason": finish_reason})
    };
    let object = if request.endpoint() == Endpoint::Completions {
        "text_completion"
    } else {
        "chat.completion"
    };
    axum::Json(json!({
        "id": format!("chatcmpl-{id}"),
        "object": object,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }))
    .into_response()
}

/// The mock's tokenizer: one token per whitespace-separated word.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}
