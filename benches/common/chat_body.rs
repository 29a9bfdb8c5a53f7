//! The chat bodies the validator benchmarks measure.

use bytes::Bytes;

/// A realistic chat body of about `size` bytes: a system prompt, several turns, options.
pub(crate) fn chat_body(size: usize) -> Bytes {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a helpful assistant. Answer briefly and cite sources."}),
    ];
    let sentence = "The quick brown fox jumps over the lazy dog; 快速的棕色狐狸跳过了懒狗。 ";
    let mut turn = 0;
    loop {
        let body = serde_json::json!({
            "model": "DeepSeek-V3",
            "messages": messages,
            "max_tokens": 512,
            "temperature": 0.7,
            "top_p": 0.9,
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["\n\nUser:"],
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        if bytes.len() >= size {
            return Bytes::from(bytes);
        }
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        let words = sentence.repeat(1 + (size / 4096).min(8));
        messages.push(serde_json::json!({"role": role, "content": words}));
        turn += 1;
    }
}
