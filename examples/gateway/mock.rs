//! The builtin mock model: deterministic answers with exact usage.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::{Value, json};
use tower_maas::RequestId;
use tower_maas::validate::{Endpoint, ParsedRequest};

/// The model the builtin mock serves by default.
pub(crate) const MOCK_MODEL: &str = "mock-model";

/// The most words an answer says, whatever `max_tokens` and the prompt allow: a stream's
/// events are made up front, about 250 bytes a word, so a prompt of a long context's words
/// must not become tens of megabytes. Past it the answer ends with `length`.
pub(crate) const MAX_ANSWER_WORDS: usize = 4096;

/// How the mock streams: usage in every chunk (MaaS) or in one last chunk (OpenAI, when
/// `stream_options.include_usage` asks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StreamStyle {
    #[default]
    Maas,
    OpenAi,
}

/// What the mock says to a message: the message itself, or, for `reverse: TEXT` and
/// `base64: TEXT`, the text decoded, so that it can say what the request did not contain.
fn reply_to(message: &str) -> Cow<'_, str> {
    if let Some(text) = message.strip_prefix("reverse:") {
        return Cow::Owned(text.trim().chars().rev().collect());
    }
    if let Some(text) = message.strip_prefix("base64:") {
        if let Some(decoded) = base64(text.trim()) {
            return Cow::Owned(decoded);
        }
    }
    Cow::Borrowed(message)
}

fn base64(text: &str) -> Option<String> {
    /// Each byte's value as a base64 digit, or `NOT` (a look-up a byte: a message can be
    /// megabytes long).
    const NOT: u8 = u8::MAX;
    const VALUES: [u8; 256] = {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut values = [NOT; 256];
        let mut i = 0;
        while i < alphabet.len() {
            values[alphabet[i] as usize] = i as u8;
            i += 1;
        }
        values
    };
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for &c in text.as_bytes().iter().filter(|&&c| c != b'=') {
        let value = VALUES[usize::from(c)];
        if value == NOT {
            return None;
        }
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The most inputs the mock embeds in one request, as OpenAI's API takes: its answer is built
/// as a `serde_json::Value` of about 0.8 KB an input, so that 12 MiB of empty strings (`"",`
/// each, four million inputs) would otherwise be gigabytes built at once.
pub(crate) const MAX_EMBEDDINGS: usize = 2048;

/// More inputs than [`MAX_EMBEDDINGS`]: a 400 as an OpenAI-compatible server words its own.
fn too_many_inputs(count: usize) -> Response {
    let message = format!(
        "The mock model embeds at most {MAX_EMBEDDINGS} inputs a request; this one has {count}."
    );
    // In vLLM's key order, which `json!` (keys sorted) would not keep.
    let body = format!(
        r#"{{"object":"error","message":{},"type":"BadRequestError","param":null,"code":400}}"#,
        Value::from(message)
    );
    (
        http::StatusCode::BAD_REQUEST,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// An SSE body: one frame per event.
pub(crate) struct Events(VecDeque<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|e| Ok(Frame::data(e))))
    }
}

/// Answers a parsed request: chat with the last user message, completions with the prompt,
/// embeddings with a fixed vector; `max_tokens` honoured; one token per word; streamed when
/// asked.
pub(crate) fn answer(id: RequestId, request: &Arc<ParsedRequest>, style: StreamStyle) -> Response {
    let model = request.model().unwrap_or(MOCK_MODEL);
    let created = now();
    let texts = request.texts();
    let prompt_tokens: usize = texts.iter().map(|t| words(t)).sum();
    if request.endpoint() == Endpoint::Embeddings {
        if texts.len() > MAX_EMBEDDINGS {
            return too_many_inputs(texts.len());
        }
        return axum::Json(json!({
            "object": "list",
            "data": texts.iter().enumerate().map(|(i, _)| json!({"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]})).collect::<Vec<_>>(),
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }))
        .into_response();
    }
    // Read from what the validator recorded: no tree of the body.
    let mut messages = request.messages();
    let source = if messages.len() > 0 {
        Cow::Borrowed(
            messages
                .rfind(|m| m.role() == Some("user"))
                .and_then(|m| m.content())
                .unwrap_or_default(),
        )
    } else {
        Cow::Owned(texts.join(" "))
    };
    let source = reply_to(&source);
    let max_tokens = request
        .max_tokens()
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .min(MAX_ANSWER_WORDS);
    let (answer, finish_reason) = reply_words(&source, max_tokens);
    let completion_tokens = answer.len();
    if request.stream() {
        let answer = Answer {
            model,
            created,
            words: &answer,
            prompt_tokens,
            finish_reason,
        };
        return stream(id, request, &answer, style);
    }
    whole(&Whole {
        id: &["chatcmpl-", id.as_str()].concat(),
        created,
        model,
        completions: request.endpoint() == Endpoint::Completions,
        text: &answer.join(" "),
        finish_reason,
        prompt_tokens,
        completion_tokens,
    })
}

/// An answer sent whole (not streamed).
struct Whole<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    /// A `text_completion`, or else a `chat.completion`.
    completions: bool,
    text: &'a str,
    finish_reason: &'a str,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// The body of an answer sent whole. The mock and the bare mock both answer through it, so that
/// the load test's two columns differ by the layers and not by how their answers are written.
fn whole(answer: &Whole<'_>) -> Response {
    let &Whole {
        id,
        created,
        model,
        completions,
        text,
        finish_reason,
        prompt_tokens,
        completion_tokens,
    } = answer;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let (object, choice) = if completions {
        (
            "text_completion",
            json!({"index": 0, "text": text, "finish_reason": finish_reason}),
        )
    } else {
        (
            "chat.completion",
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}),
        )
    };
    let mut body = serde_json::Map::new();
    body.insert("id".into(), id.into());
    body.insert("object".into(), object.into());
    body.insert("created".into(), created.into());
    body.insert("model".into(), model.into());
    // Moved in, not through `json!`, which would copy each value through the serializer.
    body.insert("choices".into(), Value::Array(vec![choice]));
    body.insert("usage".into(), usage);
    axum::Json(Value::Object(body)).into_response()
}

/// The mock's tokenizer: one token per whitespace-separated word.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The words an answer to `source` says, at most `max`, and why it ended: cut short
/// (`length`) or not (`stop`).
fn reply_words(source: &str, max: usize) -> (Vec<&str>, &'static str) {
    let mut words = source.split_whitespace();
    let said = words.by_ref().take(max).collect();
    let cut = words.next().is_some();
    (said, if cut { "length" } else { "stop" })
}

/// An answer's `created`: the Unix second it was made.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a streamed answer says.
struct Answer<'a> {
    model: &'a str,
    created: u64,
    words: &'a [&'a str],
    prompt_tokens: usize,
    finish_reason: &'a str,
}

/// The answer as SSE events, a word at a time.
fn stream(
    id: RequestId,
    request: &ParsedRequest,
    answer: &Answer<'_>,
    style: StreamStyle,
) -> Response {
    let Answer {
        model,
        created,
        words: answer,
        prompt_tokens,
        finish_reason,
    } = *answer;
    let completions = request.endpoint() == Endpoint::Completions;
    let object = if completions {
        "text_completion"
    } else {
        "chat.completion.chunk"
    };
    let include_usage = request.include_usage();
    let usage = |n: usize| json!({"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n});
    let event = |value: Value| Bytes::from(format!("data: {value}\n\n"));
    let chat_id = ["chatcmpl-", id.as_str()].concat();
    let mut events = VecDeque::new();
    for (i, word) in answer.iter().enumerate() {
        let text = if i + 1 < answer.len() {
            format!("{word} ")
        } else {
            (*word).to_owned()
        };
        let last = i + 1 == answer.len();
        let choice = if completions {
            json!({"index": 0, "text": text, "finish_reason": if last { Value::from(finish_reason) } else { Value::Null }})
        } else {
            json!({"index": 0, "delta": {"content": text}, "finish_reason": if last { Value::from(finish_reason) } else { Value::Null }})
        };
        let mut chunk = json!({"id": chat_id, "object": object, "created": created, "model": model, "choices": [choice]});
        if style == StreamStyle::Maas && include_usage != Some(false) {
            chunk["usage"] = usage(i + 1);
        }
        events.push_back(event(chunk));
    }
    if style == StreamStyle::OpenAi && include_usage == Some(true) {
        events.push_back(event(json!({"id": chat_id, "object": object, "created": created, "model": model, "choices": [], "usage": usage(answer.len())})));
    }
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::new(Events(events)))
        .unwrap_or_default()
}

/// The bare mock alone, with no layer: the load test's baseline. It parses the body with
/// serde_json and answers a chat request as the mock does, with nothing checked.
pub(crate) fn bare_router(work: Work) -> axum::Router {
    axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |body: Bytes| async move {
            work.run();
            bare(&body)
        }),
    )
}

/// CPU work the bare mock can be given per request (`--bare-work MICROS`): how much more CPU
/// per request the load test tolerates above the bare mock is then measured, not guessed. A
/// fixed number of dependent multiply-adds, counted once at start, so that every request does
/// the same work however the scheduler treats it (a spin on the clock would do less when
/// preempted).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Work {
    rounds: u64,
}

impl Work {
    /// The most work a request may be given: a second.
    pub(crate) const MAX_MICROS: f64 = 1e6;

    /// About `micros` (at most [`Work::MAX_MICROS`]) of CPU time on this machine, timed now.
    pub(crate) fn calibrated(micros: f64) -> Work {
        const TRIAL: u64 = 10_000_000;
        if micros <= 0.0 {
            return Work::default();
        }
        // The fastest of three trials: the slower ones were disturbed by something else.
        let fastest = (0..3)
            .map(|_| {
                let start = std::time::Instant::now();
                spin(TRIAL);
                start.elapsed()
            })
            .min()
            .unwrap_or_default();
        let per_micro = TRIAL as f64 / (fastest.as_secs_f64() * 1e6).max(f64::MIN_POSITIVE);
        Work {
            rounds: (micros.min(Self::MAX_MICROS) * per_micro) as u64,
        }
    }

    /// The rounds of work per request.
    pub(crate) fn rounds(self) -> u64 {
        self.rounds
    }

    /// Does the work, once.
    fn run(self) {
        spin(self.rounds);
    }
}

/// `rounds` dependent multiply-adds: each waits for the last, so none can be skipped or
/// overlapped, and `black_box` keeps the compiler from working the result out.
fn spin(rounds: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// The bare mock's answer to a chat body: the mock's, for a chat of plain string messages
/// (the prompt's tokens are every message's words, the answer the last user message's).
fn bare(body: &[u8]) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return (http::StatusCode::BAD_REQUEST, "bad body").into_response();
    };
    let messages = request["messages"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let prompt_tokens = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .map(words)
        .sum();
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let max_tokens = request["max_tokens"]
        .as_u64()
        .map_or(usize::MAX, |n| n as usize);
    let (answer, finish_reason) = reply_words(last, max_tokens);
    whole(&Whole {
        // As long as the mock's, whose id is the request's (32 hex digits).
        id: "chatcmpl-bare0000000000000000000000000000",
        // Stamped as the mock stamps its answers: a model server does this much.
        created: now(),
        model: request["model"].as_str().unwrap_or(MOCK_MODEL),
        completions: false,
        text: &answer.join(" "),
        finish_reason,
        prompt_tokens,
        completion_tokens: answer.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mock_can_say_what_it_was_not_told() {
        assert_eq!(reply_to("reverse: esarhp"), "phrase");
        assert_eq!(
            reply_to("base64: Zm9yYmlkZGVuIGRlbW8gcGhyYXNl"),
            "forbidden demo phrase"
        );
        assert_eq!(reply_to("plain"), "plain");
    }
}
