//! The parsed request the validator hands on to later layers and the service.

use super::json::{Dict, Int, Json};
use super::schema::{as_bool, as_int};
use super::tokens::{TOKENS_PER_MESSAGE, TokenCounter};
use crate::model::RequestedModel;

/// Which OpenAI endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `/v1/chat/completions`
    ChatCompletions,
    /// `/v1/completions`
    Completions,
    /// `/v1/embeddings`
    Embeddings,
    /// A route registered with its own schema.
    Custom,
}

/// A request body the validator accepted, parsed once and shared with later layers and the
/// service through the request's extensions (as `Arc<ParsedRequest>`).
///
/// ```
/// use std::sync::Arc;
/// use axum::Extension;
/// use tower_maas::validate::ParsedRequest;
///
/// async fn handler(Extension(parsed): Extension<Arc<ParsedRequest>>) -> String {
///     format!("{:?} asks for {} tokens", parsed.model(), parsed.prompt_tokens())
/// }
/// ```
#[derive(Debug)]
pub struct ParsedRequest {
    endpoint: Endpoint,
    json: Json,
    model: Option<RequestedModel>,
    stream: bool,
    include_usage: Option<bool>,
    max_tokens: Option<u64>,
    /// `max_tokens` at the size Python reads it, for vLLM's message.
    max_tokens_exact: Option<u128>,
    prompt_tokens: u64,
    largest_prompt: u64,
}

impl ParsedRequest {
    pub(crate) fn new(endpoint: Endpoint, json: Json, counter: &dyn TokenCounter) -> Self {
        let body = match &json {
            Json::Dict(dict) => Some(dict),
            _ => None,
        };
        let field = |name| body.and_then(|d: &Dict| d.get(name));
        let model = field("model")
            .and_then(Json::as_str)
            .map(RequestedModel::new);
        let flag = |value: Option<&Json>| value.and_then(|v| as_bool(v).ok());
        let stream = flag(field("stream")).unwrap_or(false);
        let include_usage = match field("stream_options") {
            Some(Json::Dict(options)) => Some(flag(options.get("include_usage")).unwrap_or(true)),
            _ => None,
        };
        let max_tokens_exact = match field("max_tokens") {
            // The completions schema defaults `max_tokens` to 16.
            None if endpoint == Endpoint::Completions => Some(16),
            None | Some(Json::Null) => None,
            Some(v) => Some(exact_int(v)),
        };
        let max_tokens = max_tokens_exact.map(|n| u64::try_from(n).unwrap_or(u64::MAX));
        let mut parsed = Self {
            endpoint,
            json,
            model,
            stream,
            include_usage,
            max_tokens,
            max_tokens_exact,
            prompt_tokens: 0,
            largest_prompt: 0,
        };
        (parsed.prompt_tokens, parsed.largest_prompt) = parsed.count_prompt(counter);
        parsed
    }

    /// The endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The whole decoded body.
    pub fn json(&self) -> &Json {
        &self.json
    }

    /// The model requested.
    pub fn model(&self) -> Option<&str> {
        self.model.as_ref().map(RequestedModel::as_str)
    }

    pub(crate) fn requested_model(&self) -> Option<&RequestedModel> {
        self.model.as_ref()
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// `stream_options.include_usage` (true when `stream_options` is given without it); `None`
    /// when there are no stream options.
    pub fn include_usage(&self) -> Option<bool> {
        self.include_usage
    }

    /// `max_tokens` (16 for completions when absent, as vLLM's schema defaults it).
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }

    /// Tokens of the prompt, as the configured [`TokenCounter`] counts them (token-id prompts
    /// count one per id; chat messages add the template's tokens).
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// `max_tokens` at full size (saturating at `u128::MAX`).
    pub(crate) fn max_tokens_exact(&self) -> Option<u128> {
        self.max_tokens_exact
    }

    /// Tokens of the largest single prompt (completions and embeddings take several).
    pub(crate) fn largest_prompt(&self) -> u64 {
        self.largest_prompt
    }

    /// Every text the request carries: message contents (string or content parts), tool-call
    /// arguments, names and reasoning, the prompt or the input. For token counting and risk
    /// control.
    pub fn texts(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.for_each_text(|text| out.push(text));
        out
    }

    fn for_each_text<'a>(&'a self, mut f: impl FnMut(&'a str)) {
        let Json::Dict(body) = &self.json else {
            return;
        };
        match self.endpoint {
            Endpoint::ChatCompletions | Endpoint::Custom => {
                if let Some(Json::List(messages)) = body.get("messages") {
                    for message in messages {
                        message_texts(message, &mut f);
                    }
                }
                for key in ["prompt", "input"] {
                    prompt_texts(body.get(key), &mut f);
                }
            }
            Endpoint::Completions => prompt_texts(body.get("prompt"), &mut f),
            Endpoint::Embeddings => prompt_texts(body.get("input"), &mut f),
        }
    }

    /// (all prompt tokens, the largest single prompt).
    fn count_prompt(&self, counter: &dyn TokenCounter) -> (u64, u64) {
        let Json::Dict(body) = &self.json else {
            return (0, 0);
        };
        let key = match self.endpoint {
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings => "input",
            Endpoint::ChatCompletions | Endpoint::Custom => {
                let messages = match body.get("messages") {
                    Some(Json::List(messages)) => messages.len() as u64,
                    _ => 0,
                };
                let mut text = 0;
                self.for_each_text(|t| text += counter.count(t));
                let total = text + messages * TOKENS_PER_MESSAGE + 3 * u64::from(messages > 0);
                return (total, total);
            }
        };
        match body.get(key) {
            Some(Json::List(items)) => {
                let sizes = items.iter().map(|item| match item {
                    Json::List(ids) => ids.len() as u64,
                    item => item.as_str().map_or(1, |s| counter.count(s)),
                });
                // A flat list of ids is one prompt; a list of strings or of id lists is several.
                if items.iter().all(|i| matches!(i, Json::Int(_))) {
                    let n = items.len() as u64;
                    (n, n)
                } else {
                    sizes.fold((0, 0), |(sum, max), n| (sum + n, max.max(n)))
                }
            }
            Some(prompt) => {
                let n = prompt.as_str().map_or(0, |s| counter.count(s));
                (n, n)
            }
            None => (0, 0),
        }
    }
}

/// A validated, positive int field at full size: Python ints have no bound.
fn exact_int(value: &Json) -> u128 {
    let digits = match value {
        // The common case, without formatting the number only to parse it back.
        Json::Int(Int::Small(n)) => return u128::try_from(*n).unwrap_or(u128::MAX),
        Json::Int(int) => int.to_string(),
        Json::Str(s) => s.trim().replace('_', ""),
        other => return as_int(other).ok().flatten().map_or(0, |n| n.max(0) as u128),
    };
    let digits = digits.split('.').next().unwrap_or_default();
    digits.trim_start_matches('+').parse().unwrap_or(u128::MAX)
}

fn message_texts<'a>(message: &'a Json, out: &mut impl FnMut(&'a str)) {
    let Json::Dict(message) = message else {
        return;
    };
    let text_of = |value: Option<&'a Json>| value.and_then(Json::as_str);
    match message.get("content") {
        Some(Json::List(parts)) => {
            for part in parts {
                if let Json::Dict(part) = part {
                    text_of(part.get("text")).into_iter().for_each(&mut *out);
                }
            }
        }
        content => text_of(content).into_iter().for_each(&mut *out),
    }
    for key in ["name", "reasoning_content"] {
        text_of(message.get(key)).into_iter().for_each(&mut *out);
    }
    if let Some(Json::List(calls)) = message.get("tool_calls") {
        for call in calls {
            if let Json::Dict(call) = call {
                if let Some(Json::Dict(function)) = call.get("function") {
                    text_of(function.get("arguments"))
                        .into_iter()
                        .for_each(&mut *out);
                }
            }
        }
    }
}

fn prompt_texts<'a>(prompt: Option<&'a Json>, out: &mut impl FnMut(&'a str)) {
    match prompt {
        Some(Json::List(items)) => items.iter().filter_map(Json::as_str).for_each(out),
        prompt => prompt.and_then(Json::as_str).into_iter().for_each(out),
    }
}
