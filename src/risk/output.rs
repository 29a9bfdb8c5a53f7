//! What a model generated: the texts of a JSON answer, of an SSE delta, and the usage reported.
//!
//! Every answer the filter checks is read here, so the reading builds no tree: serde visitors
//! keep the few strings the check needs (borrowed from the body when they hold no escape) and
//! skip the rest. What they read is what a `serde_json::Value` of the answer would give (a key
//! given twice counts with its last value, a value of an unexpected type counts as absent), but
//! for a body that is not JSON, which is [`NotJson`] (and which a caller may refuse unchecked),
//! and for a `usage` over 64 KiB that the fast path leaves to serde, which gives no count; a test
//! holds them to the `Value` reading.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The texts of a non-streaming answer or of one SSE event, joined by newlines into `out`:
/// each choice's message (or delta) content, as a string or the `text` of each part, its
/// reasoning and its tool-call arguments, then the choice's `text`. Returns the tokens its
/// `usage` reports. JSON that is not an object has neither; `bytes` that are not JSON at all
/// are [`NotJson`], `out` left as it was. (An answer its fast path leaves to serde gives no count
/// from a `usage` over 64 KiB.)
pub(crate) fn read_answer(bytes: &[u8], out: &mut String) -> Result<Option<u64>, NotJson> {
    if let Some(usage) = super::answer_scan::read_answer(bytes, out) {
        return Ok(usage);
    }
    let answer = match serde_json::from_slice::<Lenient<Answer<'_>>>(bytes) {
        Ok(Lenient(Some(answer))) => answer,
        Ok(Lenient(None)) => return Ok(None),
        // An empty body (a `HEAD` answer's, say) says nothing either.
        Err(_) if bytes.trim_ascii().is_empty() => return Ok(None),
        Err(_) => return Err(NotJson),
    };
    for text in answer.choices.map(|choices| choices.0).unwrap_or_default() {
        push(out, Some(text));
    }
    Ok(answer.usage)
}

/// An answer that is not JSON: nothing in it can be read, so nothing in it can be checked.
#[derive(Debug)]
pub(crate) struct NotJson;

pub(super) fn push(out: &mut String, text: Option<Cow<'_, str>>) {
    if let Some(text) = text {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&text);
    }
}

/// A value read as `T` when it has `T`'s shape, and as `None` (consumed, not an error) when it
/// does not, as `Value::get(..).and_then(Value::as_…)` reads it.
struct Lenient<T>(Option<T>);

/// How each piece of an answer is read from the one JSON kind it takes.
trait Shape<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(_map: A) -> Result<Option<Self>, A::Error>;
    fn from_seq<A: SeqAccess<'de>>(_seq: A) -> Result<Option<Self>, A::Error>;
    fn from_str(_text: Cow<'de, str>) -> Option<Self> {
        None
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Shape<'de>> Visitor<'de> for LenientVisitor<T> {
            type Value = Lenient<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::from_map(map).map(Lenient)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                T::from_seq(seq).map(Lenient)
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(T::from_str(Cow::Borrowed(v))))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(T::from_str(Cow::Owned(v.to_owned()))))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
        }

        deserializer.deserialize_any(LenientVisitor(std::marker::PhantomData))
    }
}

/// Consumes what is left of a map or a sequence that is not read.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads a map's entries, handing each key to `entry` with the map to read its value from;
/// a value `entry` does not read (it answers `false`) is skipped.
fn entries<'de, A: MapAccess<'de>>(
    mut map: A,
    mut entry: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    while let Some(Key(key)) = map.next_key()? {
        if !entry(&key, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// The value of the map's `name`, read by `read` (the last one, when given twice); every other
/// entry skipped.
fn only<'de, A: MapAccess<'de>, T>(
    map: A,
    name: &str,
    mut read: impl FnMut(&mut A) -> Result<Option<T>, A::Error>,
) -> Result<Option<T>, A::Error> {
    let mut value = None;
    entries(map, |key, map| {
        let wanted = key == name;
        if wanted {
            value = read(map)?;
        }
        Ok(wanted)
    })?;
    Ok(value)
}

/// An object's key, borrowed when it holds no escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A string, borrowed from the body when it holds no escape.
struct Text<'de>(Cow<'de, str>);

impl<'de> Shape<'de> for Text<'de> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        skip_map(map).map(|()| None)
    }

    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        skip_seq(seq).map(|()| None)
    }

    fn from_str(text: Cow<'de, str>) -> Option<Self> {
        Some(Text(text))
    }
}

fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Lenient<Text<'de>>>()?.0.map(|t| t.0))
}

/// The texts a list gives, in order: each item read leniently as a `T`, which `keep` turns
/// into the texts it adds. An item is dropped as soon as it is read, so a list costs what its
/// texts do (a `Cow` each, and a copy of an escaped one: at most about four times the answer's
/// bytes, `tests/risk_memory.rs`) and never what its other items would as structures: a 3 MiB
/// `[0,0,…]` is no 1.5 million kept `None`s.
fn texts_of<'de, A: SeqAccess<'de>, T: Shape<'de>>(
    mut seq: A,
    mut keep: impl FnMut(T, &mut Vec<Cow<'de, str>>),
) -> Result<Vec<Cow<'de, str>>, A::Error> {
    let mut texts = Vec::new();
    while let Some(Lenient(item)) = seq.next_element::<Lenient<T>>()? {
        if let Some(item) = item {
            keep(item, &mut texts);
        }
    }
    Ok(texts)
}

/// A list read only through [`texts_of`]: the texts of its items; a map is not one.
macro_rules! list_shape {
    ($ty:ident of $item:ident, |$it:ident, $texts:ident| $keep:expr) => {
        struct $ty<'de>(Vec<Cow<'de, str>>);

        impl<'de> Shape<'de> for $ty<'de> {
            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                skip_map(map).map(|()| None)
            }

            fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
                texts_of(seq, |$it: $item<'de>, $texts| $keep).map(|texts| Some($ty(texts)))
            }
        }
    };
}

/// A map that is only read through [`entries`]; a list is not one.
macro_rules! map_shape {
    ($ty:ident, |$map:ident| $read:expr) => {
        impl<'de> Shape<'de> for $ty<'de> {
            fn from_map<A: MapAccess<'de>>($map: A) -> Result<Option<Self>, A::Error> {
                $read.map(Some)
            }

            fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
                skip_seq(seq).map(|()| None)
            }
        }
    };
}

struct Answer<'de> {
    choices: Option<Choices<'de>>,
    usage: Option<u64>,
}

list_shape!(Choices of Choice, |choice, texts| choice.texts_into(texts));

map_shape!(Answer, |map| {
    let mut answer = Answer {
        choices: None,
        usage: None,
    };
    entries(map, |key, map| {
        match key {
            "choices" => answer.choices = map.next_value::<Lenient<_>>()?.0,
            // A usage is a few numbers: found as raw text (skipped without recursion), then
            // read as a `Value`, so that a malformed one, or one nested past serde_json's
            // depth limit, costs the answer nothing but its count and never its texts' check.
            // (The limiter's own reading, when it reads the answer itself, refuses a repeated
            // key where this keeps the last.)
            // One longer than `USAGE_TEXT` is no count: a tree of it would cost many times its
            // size, and no server writes one.
            "usage" => {
                let usage = map.next_value::<&serde_json::value::RawValue>()?;
                answer.usage = (usage.get().len() <= USAGE_TEXT)
                    .then(|| serde_json::from_str::<serde_json::Value>(usage.get()).ok())
                    .flatten()
                    .and_then(|usage| crate::model::Usage::deserialize(&usage).ok())
                    .and_then(|u| u.total());
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
    .map(|()| answer)
});

/// The longest `usage` read, in bytes of JSON text: a server's is a few numbers, and with
/// vLLM's details under 200 bytes.
const USAGE_TEXT: usize = 64 * 1024;

struct Choice<'de> {
    message: Option<Message<'de>>,
    delta: Option<Message<'de>>,
    text: Option<Cow<'de, str>>,
}

impl<'de> Choice<'de> {
    /// The message's (else the delta's) content, reasoning and tool-call arguments, then the
    /// choice's `text`.
    fn texts_into(self, texts: &mut Vec<Cow<'de, str>>) {
        if let Some(message) = self.message.or(self.delta) {
            match message.content {
                Content::Text(text) => texts.push(text),
                Content::Parts(parts) => texts.extend(parts),
                Content::None => {}
            }
            texts.extend(message.reasoning);
            texts.extend(message.calls.map(|calls| calls.0).unwrap_or_default());
        }
        texts.extend(self.text);
    }
}

map_shape!(Choice, |map| {
    let mut choice = Choice {
        message: None,
        delta: None,
        text: None,
    };
    entries(map, |key, map| {
        let said = match key {
            "message" => &mut choice.message,
            "delta" => &mut choice.delta,
            "text" => {
                choice.text = text(map)?;
                return Ok(true);
            }
            _ => return Ok(false),
        };
        // A `message` or `delta` that is not an object still counts as given (and as empty).
        *said = Some(
            map.next_value::<Lenient<Message<'_>>>()?
                .0
                .unwrap_or(Message {
                    content: Content::None,
                    reasoning: None,
                    calls: None,
                }),
        );
        Ok(true)
    })
    .map(|()| choice)
});

struct Message<'de> {
    content: Content<'de>,
    reasoning: Option<Cow<'de, str>>,
    calls: Option<Calls<'de>>,
}

enum Content<'de> {
    None,
    Text(Cow<'de, str>),
    /// The `text` of each part that has one.
    Parts(Vec<Cow<'de, str>>),
}

/// `content`: a string, or a list of parts whose `text` is read.
impl<'de> Shape<'de> for Content<'de> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        skip_map(map).map(|()| None)
    }

    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        texts_of(seq, |part: Part<'de>, texts| texts.extend(part.0))
            .map(|p| Some(Content::Parts(p)))
    }

    fn from_str(text: Cow<'de, str>) -> Option<Self> {
        Some(Content::Text(text))
    }
}

map_shape!(Message, |map| {
    let mut message = Message {
        content: Content::None,
        reasoning: None,
        calls: None,
    };
    entries(map, |key, map| {
        match key {
            "content" => {
                message.content = map
                    .next_value::<Lenient<Content<'_>>>()?
                    .0
                    .unwrap_or(Content::None)
            }
            "reasoning_content" => message.reasoning = text(map)?,
            "tool_calls" => {
                message.calls = map.next_value::<Lenient<Calls<'_>>>()?.0;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
    .map(|()| message)
});

/// A content part: its `text`.
struct Part<'de>(Option<Cow<'de, str>>);

map_shape!(Part, |map| only(map, "text", text).map(Part));

/// A tool call: its `function.arguments`.
struct Call<'de>(Option<Cow<'de, str>>);

list_shape!(Calls of Call, |call, texts| texts.extend(call.0));

map_shape!(Call, |map| only(map, "function", |map| {
    Ok(map
        .next_value::<Lenient<Function<'_>>>()?
        .0
        .and_then(|f| f.0))
})
.map(Call));

struct Function<'de>(Option<Cow<'de, str>>);

map_shape!(Function, |map| only(map, "arguments", text).map(Function));

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// The reading this module replaces, through a whole `Value`: the reference.
    fn by_value(bytes: &[u8]) -> (String, Option<u64>) {
        let answer: Value = serde_json::from_slice(bytes).unwrap_or_default();
        let mut out = String::new();
        if let Some(choices) = answer.get("choices").and_then(Value::as_array) {
            for choice in choices {
                if let Some(message) = choice.get("message").or_else(|| choice.get("delta")) {
                    match message.get("content") {
                        Some(Value::Array(parts)) => {
                            for part in parts {
                                push_value(&mut out, part.get("text"));
                            }
                        }
                        content => push_value(&mut out, content),
                    }
                    push_value(&mut out, message.get("reasoning_content"));
                    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                        for call in calls {
                            push_value(
                                &mut out,
                                call.get("function").and_then(|f| f.get("arguments")),
                            );
                        }
                    }
                }
                push_value(&mut out, choice.get("text"));
            }
        }
        let usage = answer
            .get("usage")
            .and_then(|u| crate::model::Usage::deserialize(u).ok())
            .and_then(|u| u.total());
        (out, usage)
    }

    fn push_value(out: &mut String, text: Option<&Value>) {
        push(out, text.and_then(Value::as_str).map(Cow::Borrowed));
    }

    /// The reading; and it says [`NotJson`] only of a body that is not blank and that
    /// serde_json cannot read (it reads some that a `Value` cannot hold: nested too deep).
    fn read(bytes: &[u8]) -> (String, Option<u64>) {
        let mut out = String::new();
        let reading = read_answer(bytes, &mut out);
        if reading.is_err() {
            assert!(
                serde_json::from_slice::<Value>(bytes).is_err() && !bytes.trim_ascii().is_empty(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        (out, reading.ok().flatten())
    }

    #[test]
    fn answers_read_as_through_a_value() {
        for answer in [
            r#"{"choices":[{"message":{"role":"assistant","content":"hello"},"text":"t"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"choices":[{"delta":{"content":"a\nb","reasoning_content":"r"}}],"usage":{"total_tokens":9,"total_tokens":null,"prompt_tokens":1}}"#,
            r#"{"choices":[{"message":null,"delta":{"content":"not read"}}]}"#,
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"p1"},{"text":5},"x",{"text":"p2","text":"p3"}],"tool_calls":[{"function":{"arguments":"{}"}},{"function":"f"}]}}]}"#,
            r#"{"choices":{"0":{"text":"no"}},"choices":[{"text":"yes"}],"usage":{"prompt_tokens":-1}}"#,
            r#"{"choices":[{"text":"first"},{"text":"\u00e9\ud83d\ude00"}],"usage":[1]}"#,
            r#"{"usage":[1,2,3]}"#,
            r#"{"usage":[1,null,null]}"#,
            r#"{"usage":[1,2,3,4]}"#,
            r#"{"usage":{"total_tokens":"x","total_tokens":5}}"#,
            r#"{"ch\u006fices":[{"text":"escaped key"}]}"#,
            r#"{"usage":{"completion_tokens":4}}"#,
            r#"{"usage":{"prompt_tokens":2,"completion_tokens":3},"choices":[{"text":"after"}]}"#,
            r#"[1,2]"#,
            r#"{"choices":[{"text":"a"}]"#,
            r#"{"choices":[{"text":"\ud800"}]}"#,
            "",
        ] {
            assert_eq!(
                read(answer.as_bytes()),
                by_value(answer.as_bytes()),
                "{answer}"
            );
        }
    }

    /// A `usage` nested past serde_json's depth limit is no count, and the texts beside it are
    /// still read: before, it failed the whole reading, and an answer read as having no text
    /// passed the check unchecked.
    #[test]
    fn a_usage_too_deep_to_read_leaves_the_texts_read() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for answer in [
            format!(r#"{{"usage":{deep},"choices":[{{"message":{{"content":"build a bomb"}}}}]}}"#),
            format!(
                r#"{{"choices":[{{"message":{{"content":"build a bomb"}}}}],"usage":{{"total_tokens":{deep}}}}}"#
            ),
        ] {
            assert!(
                serde_json::from_str::<Value>(&answer).is_err(),
                "past the limit"
            );
            assert_eq!(read(answer.as_bytes()), ("build a bomb".to_owned(), None));
        }
    }

    /// Blank bodies and JSON of any kind say nothing, or what they say; only bytes that are
    /// not JSON are [`NotJson`].
    #[test]
    fn only_what_is_not_json_is_not_json() {
        for said in ["", " \n", "null", "5", "\"text\"", "[1]", "{}"] {
            assert!(
                read_answer(said.as_bytes(), &mut String::new()).is_ok(),
                "{said:?}"
            );
        }
        for broken in [
            "{oops",
            r#"{"choices":[]} and more"#,
            "\u{feff}{}",
            "\u{1f}\u{8b}",
        ] {
            assert!(
                read_answer(broken.as_bytes(), &mut String::new()).is_err(),
                "{broken:?}"
            );
        }
    }

    /// A `usage` too long to be a server's is not read into a tree (many times its size): no
    /// count, and the texts are still read. (`1e0` sends the answer past the fast path.)
    #[test]
    fn a_usage_too_long_to_be_a_servers_is_no_count() {
        let pad = "x".repeat(USAGE_TEXT);
        let answer = format!(
            r#"{{"created":1e0,"usage":{{"total_tokens":5,"pad":"{pad}"}},"choices":[{{"text":"build a bomb"}}]}}"#
        );
        assert_eq!(read(answer.as_bytes()), ("build a bomb".to_owned(), None));
        let answer = format!(
            r#"{{"created":1e0,"usage":{{"total_tokens":5}},"choices":[{{"text":"{pad}"}}]}}"#
        );
        assert_eq!(read(answer.as_bytes()), (pad, Some(5)));
    }

    /// The fast path alone: `None` when it leaves the body to the serde reading.
    fn fast(bytes: &[u8]) -> Option<(String, Option<u64>)> {
        let mut out = String::new();
        let usage = super::super::answer_scan::read_answer(bytes, &mut out)?;
        Some((out, usage))
    }

    #[test]
    fn ordinary_answers_take_the_fast_path() {
        for answer in [
            // The example gateway's mock.
            r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hello there, how are you?","role":"assistant"}}],"created":1795356088,"id":"chatcmpl-49a2","model":"mock-model","object":"chat.completion","usage":{"completion_tokens":11,"prompt_tokens":16,"total_tokens":27}}"#,
            // vLLM, with its nulls and details, and an escaped, multi-line, non-Latin answer.
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"第一行\n\"quoted\" \\ tab\t/ 🚀","refusal":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":12,"total_tokens":20,"completion_tokens":8,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}"#,
            // A streamed chunk, MaaS style (usage in every chunk), and OpenAI's last chunk.
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}"#,
            // A server that writes ASCII only (Python's `json.dumps`): every non-ASCII
            // character, an astral one as a surrogate pair, escaped; hex digits in either case.
            r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"\u6a21\u578b\u7684\u56de\u7b54 \ud83d\ude80 caf\u00E9 \u0041\u0000"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
            // A reasoning model's delta, a completion, white space around everything.
            r#"{"choices":[{"delta":{"reasoning_content":"think","content":null}}]}"#,
            " {\n \"choices\" : [ { \"text\" : \"done\" , \"logprobs\" : { \"tokens\" : [ \"a\" ] , \"token_logprobs\" : [ -0.25 , 0 ] } } ] , \"usage\" : null }\n",
        ] {
            assert_eq!(
                fast(answer.as_bytes()),
                Some(by_value(answer.as_bytes())),
                "{answer}"
            );
        }
    }

    #[test]
    fn unusual_answers_are_left_to_the_serde_reading() {
        for answer in [
            r#"{"choices":[{"text":"a"}],"choices":[{"text":"b"}]}"#,
            r#"{"choices":[{"text":"a","text":"b"}]}"#,
            r#"{"usage":{"total_tokens":1,"total_tokens":2}}"#,
            r#"{"ch\u006fices":[{"text":"escaped key"}]}"#,
            // Lone surrogates (serde refuses them), a pair cut short, a bad hex digit.
            r#"{"choices":[{"text":"\ud800"}]}"#,
            r#"{"choices":[{"text":"\udc00"}]}"#,
            r#"{"choices":[{"text":"\ud83d\u0041"}]}"#,
            r#"{"choices":[{"text":"\ud83d"}]}"#,
            r#"{"choices":[{"text":"\ud83d\ude0"}]}"#,
            r#"{"choices":[{"text":"\u00g9"}]}"#,
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"part"}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"created":1e3,"choices":[]}"#,
            r#"{"usage":{"prompt_tokens":-1}}"#,
            r#"{"usage":{"prompt_tokens":1.0}}"#,
            r#"{"usage":{"prompt_tokens":"1"}}"#,
            r#"{"usage":{"prompt_tokens":123456789012345678901}}"#,
            r#"{"choices":{"0":{"text":"no"}}}"#,
            r#"{"choices":[{"text":5}]}"#,
            r#"{"choices":[{"text":"a"}]"#,
            r#"{"choices":[{"text":"a"}]} x"#,
            "{\"choices\":[{\"text\":\"tab\tinside\"}]}",
            r#"[1,2]"#,
            r#"{"a":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}"#,
            "",
        ] {
            assert_eq!(fast(answer.as_bytes()), None, "{answer}");
            // And the whole reading still agrees with the reference.
            assert_eq!(
                read(answer.as_bytes()),
                by_value(answer.as_bytes()),
                "{answer}"
            );
        }
    }

    /// A JSON string of one of the texts models write, escaped as a server escapes it.
    fn text_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            r#""""#,
            r#""hello""#,
            r#""a\nb""#,
            r#""say \"hi\"""#,
            r#""back\\slash \/ tab\t""#,
            r#""模型的回答""#,
            r#""emoji 🚀 é""#,
            r#""\u00e9""#,
            r#""\u6a21\u578b \ud83d\ude80""#,
            r#""lone \ud800""#,
            "null",
            "7",
        ])
        .prop_map(str::to_owned)
    }

    /// An object's entries in any order, now and then one of them twice.
    fn object(entries: Vec<(&'static str, String)>, twice: usize) -> impl Strategy<Value = String> {
        Just(entries).prop_shuffle().prop_map(move |mut entries| {
            if let Some(entry) = entries.get(twice).cloned() {
                entries.push(entry);
            }
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!(r#""{k}":{v}"#))
                .collect();
            format!("{{{}}}", entries.join(","))
        })
    }

    fn said() -> impl Strategy<Value = String> {
        (
            text_value(),
            text_value(),
            prop::sample::select(vec!["null", "[]", r#"[{"function":{"arguments":"{}"}}]"#]),
            0usize..12,
            0usize..6,
        )
            .prop_flat_map(|(content, reasoning, calls, twice, shape)| {
                let mut entries = vec![("role", r#""assistant""#.to_owned()), ("content", content)];
                if shape & 1 == 1 {
                    entries.push(("reasoning_content", reasoning));
                }
                if shape & 2 == 2 {
                    entries.push(("tool_calls", calls.to_owned()));
                }
                object(entries, twice)
            })
    }

    fn choice() -> impl Strategy<Value = String> {
        (
            prop::option::of(prop_oneof![said(), Just("null".to_owned())]),
            prop::option::of(said()),
            prop::option::of(text_value()),
            0usize..12,
        )
            .prop_flat_map(|(message, delta, text, twice)| {
                let mut entries = vec![
                    ("index", "0".to_owned()),
                    ("finish_reason", r#""stop""#.to_owned()),
                    (
                        "logprobs",
                        r#"{"content":[{"token":"a","logprob":-0.5}]}"#.to_owned(),
                    ),
                ];
                entries.extend(message.map(|m| ("message", m)));
                entries.extend(delta.map(|d| ("delta", d)));
                entries.extend(text.map(|t| ("text", t)));
                object(entries, twice)
            })
    }

    fn count() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "0",
            "12",
            "null",
            "-1",
            "1.5",
            r#""3""#,
            "18446744073709551615",
        ])
        .prop_map(str::to_owned)
    }

    fn answer_body() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(choice(), 0..3),
            (count(), count(), count(), 0usize..8),
            prop::option::of(Just(())),
            0usize..16,
        )
            .prop_flat_map(
                |(choices, (prompt, completion, total, present), usage, twice)| {
                    let mut fields = vec![("prompt_tokens_details", "null".to_owned())];
                    for (bit, name, value) in [
                        (1, "prompt_tokens", prompt),
                        (2, "completion_tokens", completion),
                        (4, "total_tokens", total),
                    ] {
                        if present & bit == bit {
                            fields.push((name, value));
                        }
                    }
                    let choices = format!("[{}]", choices.join(","));
                    (
                        Just(choices),
                        object(fields, twice % 5),
                        Just(usage),
                        Just(twice),
                    )
                },
            )
            .prop_flat_map(|(choices, usage, with_usage, twice)| {
                let mut entries = vec![
                    ("id", r#""chatcmpl-1""#.to_owned()),
                    ("object", r#""chat.completion""#.to_owned()),
                    ("created", "1795356088".to_owned()),
                    ("model", r#""m""#.to_owned()),
                    ("choices", choices),
                ];
                entries.extend(with_usage.map(|()| ("usage", usage)));
                object(entries, twice)
            })
    }

    fn leaf() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            r#""text""#,
            r#""a\nb""#,
            r#""\u00e9""#,
            "7",
            "-1",
            "1.5",
            "null",
            "true",
            "[]",
            "{}",
        ])
        .prop_map(str::to_owned)
    }

    fn json() -> impl Strategy<Value = String> {
        leaf().prop_recursive(5, 40, 5, |inner| {
            let key = prop::sample::select(vec![
                "choices",
                "message",
                "delta",
                "text",
                "content",
                "reasoning_content",
                "tool_calls",
                "function",
                "arguments",
                "usage",
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "role",
                "x",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key, inner), 0..5).prop_map(|v| {
                    let v: Vec<String> = v.iter().map(|(k, x)| format!(r#""{k}":{x}"#)).collect();
                    format!("{{{}}}", v.join(","))
                }),
            ]
        })
    }

    /// The fast path is taken, not only right when taken: it reads a good part of the answers
    /// as servers write them (about 37 %).
    #[test]
    fn the_fast_path_reads_many_server_answers() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let answers = 1000;
        let read = (0..answers)
            .filter(|_| {
                let body = answer_body().new_tree(&mut runner).unwrap().current();
                fast(body.as_bytes()).is_some()
            })
            .count();
        assert!(read * 4 >= answers, "{read} of {answers}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any JSON near an answer's shape (and now and then not JSON) reads as through a
        /// `Value`.
        #[test]
        fn any_answer_reads_as_through_a_value(body in json(), cut in 0usize..4) {
            let bytes = body.as_bytes();
            // Now and then the body breaks off.
            let bytes = if cut == 0 { &bytes[..bytes.len() / 2] } else { bytes };
            prop_assert_eq!(read(bytes), by_value(bytes), "{}", body);
            if let Some(fast) = fast(bytes) {
                prop_assert_eq!(fast, by_value(bytes), "{}", body);
            }
        }

        /// Answers as servers write them (keys in any order, now and then one given twice,
        /// texts escaped, counts of every type, tool calls now and then): the fast path, when
        /// it answers (about 37 % of them), reads them as through a `Value`, and so does the
        /// whole reading.
        #[test]
        fn server_answers_read_as_through_a_value(body in answer_body(), cut in 0usize..8) {
            let bytes = body.as_bytes();
            let bytes = if cut == 0 { &bytes[..bytes.len() / 2] } else { bytes };
            let expected = by_value(bytes);
            if let Some(fast) = fast(bytes) {
                prop_assert_eq!(&fast, &expected, "{}", body);
            }
            prop_assert_eq!(read(bytes), expected, "{}", body);
        }
    }
}
