//! What a model generated: the texts of a JSON answer, of an SSE delta, and the usage reported.

use serde_json::Value;

/// The texts of a non-streaming answer: each choice's message content (string or parts), its
/// reasoning, its tool-call arguments, and a completion's `text`.
pub(crate) fn answer_texts(answer: &Value, out: &mut String) {
    let Some(choices) = answer.get("choices").and_then(Value::as_array) else {
        return;
    };
    for choice in choices {
        if let Some(message) = choice.get("message").or_else(|| choice.get("delta")) {
            message_texts(message, out);
        }
        push(out, choice.get("text"));
    }
}

fn message_texts(message: &Value, out: &mut String) {
    match message.get("content") {
        Some(Value::Array(parts)) => {
            for part in parts {
                push(out, part.get("text"));
            }
        }
        content => push(out, content),
    }
    push(out, message.get("reasoning_content"));
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            push(out, call.get("function").and_then(|f| f.get("arguments")));
        }
    }
}

fn push(out: &mut String, text: Option<&Value>) {
    if let Some(text) = text.and_then(Value::as_str) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(text);
    }
}

/// The tokens a JSON answer's `usage` reports.
pub(crate) fn usage(answer: &Value) -> Option<u64> {
    use serde::Deserialize;
    crate::model::Usage::deserialize(answer.get("usage")?)
        .ok()?
        .total()
}
