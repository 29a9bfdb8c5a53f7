//! Properties of the validator: whatever the bytes, never a panic, and always either acceptance
//! or one of the exact refusal shapes; and the decoder reads every document serde_json writes.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_maas::validate::{
    Json, ModelCatalog, RequestSchemaValidatorLayer, ValidationDialect, loads,
};

const VALID: &[&str] = &[
    r#"{"model": "DeepSeek-V3", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20, "stream": false, "temperature": 1.0}"#,
    r#"{"model":"DeepSeek-V3","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"你好 😀"}]}],"stop":["\n"],"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto","top_p":0.5,"n":2,"seed":-1}"#,
    r#"{"model":"mock-model","prompt":[[1,2,3],[4]],"max_tokens":1,"echo":true,"logprobs":2}"#,
    r#"{"model":"mock-model","input":["a","b"],"encoding_format":"base64","dimensions":8}"#,
];

fn respond(path: &str, body: Vec<u8>, dialect: ValidationDialect) -> (u16, String) {
    let catalog = ["DeepSeek-V3", "mock-model"]
        .into_iter()
        .fold(ModelCatalog::new(), |c, m| c.model(m, 4096));
    let service = tower::service_fn(|_: Request<_>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"accepted"))))
    });
    let service = RequestSchemaValidatorLayer::new()
        .models(catalog)
        .dialect(dialect)
        .layer(service);
    let req = Request::post(path)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let res = service.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8(body.to_vec()).expect("bodies are UTF-8"),
        )
    })
}

/// The answer is acceptance or one of the shapes the backend, FastAPI or the gateway send,
/// whole: the gateway's and FastAPI's bodies byte for byte, the backend's rebuilt from its
/// message in vLLM's key order and serde_json's escaping (which is Python's `json.dumps` with
/// `ensure_ascii=False`), its message one of the wordings it has.
fn assert_exact_shape(status: u16, body: &str) {
    let dual = |code: &str, message: &str, kind: &str| {
        format!(
            r#"{{"error":{{"code":"{code}","message":"{message}","param":null,"type":"{kind}"}},"error_code":"{code}","error_msg":"{message}"}}"#
        )
    };
    let backend = |kind: &str, code: u16, wording: &dyn Fn(&str) -> bool| {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(body) else {
            return false;
        };
        let Some(serde_json::Value::String(message)) = fields.get("message") else {
            return false;
        };
        let rebuilt = format!(
            r#"{{"object":"error","message":{},"type":"{kind}","param":null,"code":{code}}}"#,
            serde_json::Value::from(message.as_str())
        );
        body == rebuilt && wording(message)
    };
    let pydantic = |m: &str| m.starts_with("[{'type': '") && m.ends_with("}]");
    let context_length = |m: &str| {
        let Some(rest) = m.strip_prefix(
            "This model's maximum context length is 4096 tokens. However, you requested ",
        ) else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(rest) = rest.strip_suffix(
            " in the completion). Please reduce the length of the messages or completion.",
        ) {
            // `{P+M} tokens ({P} in the messages, {M}`
            let Some((total, parts)) = rest.split_once(" tokens (") else {
                return false;
            };
            let Some((prompt, completion)) = parts.split_once(" in the messages, ") else {
                return false;
            };
            return digits(total) && digits(prompt) && digits(completion);
        }
        rest.strip_suffix(" tokens in the messages, Please reduce the length of the messages.")
            .is_some_and(digits)
    };
    let unknown_model = |m: &str| {
        m.strip_prefix("The model `")
            .and_then(|m| m.strip_suffix("` does not exist."))
            .is_some()
    };
    let ok = match status {
        200 => body == "accepted",
        400 => {
            backend("BadRequestError", 400, &|m| {
                pydantic(m) || context_length(m)
            }) || body == r#"{"detail":"There was an error parsing the body"}"#
                || body == dual("ModelArts.81001", "Invalid request body.", "BadRequest")
        }
        404 => {
            backend("NotFoundError", 404, &unknown_model)
                || body == dual("ModelArts.81009", "Invalid model.", "NotFound")
        }
        _ => false,
    };
    assert!(ok, "{status} {body}");
}

/// Each refusal shape [`assert_exact_shape`] admits, met on purpose: the properties meet some
/// only by chance, and a shape never met would let a wrong body of it pass unseen.
#[test]
fn each_refusal_shape_is_met_whole() {
    let chat = "/v1/chat/completions";
    let long = format!(
        r#"{{"model":"mock-model","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "word ".repeat(5000)
    );
    let too_deep = "[".repeat(tower_maas::validate::MAX_DEPTH + 1);
    let backend_error = |message: &str, kind: &str, code: u16| {
        format!(
            r#"{{"object":"error","message":{},"type":"{kind}","param":null,"code":{code}}}"#,
            serde_json::Value::from(message)
        )
    };
    let context = "This model's maximum context length is 4096 tokens. However, you requested";
    for (body, backend, status, expected) in [
        (
            r#"{"model":"nope","messages":[]}"#,
            false,
            404,
            r#"{"error":{"code":"ModelArts.81009","message":"Invalid model.","param":null,"type":"NotFound"},"error_code":"ModelArts.81009","error_msg":"Invalid model."}"#.to_owned(),
        ),
        (
            r#"{"model":"nope","messages":[]}"#,
            true,
            404,
            backend_error("The model `nope` does not exist.", "NotFoundError", 404),
        ),
        (
            r#"{"model":"","messages":[]}"#,
            false,
            400,
            r#"{"error":{"code":"ModelArts.81001","message":"Invalid request body.","param":null,"type":"BadRequest"},"error_code":"ModelArts.81001","error_msg":"Invalid request body."}"#.to_owned(),
        ),
        (
            r#"{"model":"mock-model","messages":[],"temperature":9}"#,
            true,
            400,
            backend_error(
                "[{'type': 'less_than_equal', 'loc': ('body', 'temperature'), 'msg': 'Input should be less than or equal to 2', 'input': 9, 'ctx': {'le': 2.0}}]",
                "BadRequestError",
                400,
            ),
        ),
        (
            r#"{"model":"mock-model","messages":[],"max_tokens":5000}"#,
            true,
            400,
            backend_error(
                &format!("{context} 5000 tokens (0 in the messages, 5000 in the completion). Please reduce the length of the messages or completion."),
                "BadRequestError",
                400,
            ),
        ),
        (
            &long,
            true,
            400,
            backend_error(
                &format!("{context} 6257 tokens in the messages, Please reduce the length of the messages."),
                "BadRequestError",
                400,
            ),
        ),
        (
            "[1,",
            true,
            400,
            backend_error(
                "[{'type': 'json_invalid', 'loc': ('body', 3), 'msg': 'JSON decode error', 'input': {}, 'ctx': {'error': 'Expecting value'}}]",
                "BadRequestError",
                400,
            ),
        ),
        (
            &too_deep,
            true,
            400,
            r#"{"detail":"There was an error parsing the body"}"#.to_owned(),
        ),
    ] {
        let dialect = if backend {
            ValidationDialect::Backend
        } else {
            ValidationDialect::Gateway
        };
        let (answered, text) = respond(chat, body.as_bytes().to_vec(), dialect);
        assert_eq!((answered, &text), (status, &expected), "{body}");
        assert_exact_shape(answered, &text);
    }
}

/// Edits that break a valid body in the ways clients and attackers do.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..8usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(b'"'),
                    Just(b'\\'),
                    Just(b'{'),
                    Just(b'}'),
                    Just(b'['),
                    Just(b']'),
                    Just(b','),
                    Just(b':'),
                    Just(b'u'),
                    Just(0xff),
                    Just(0x00),
                    Just(b'\n'),
                    any::<u8>()
                ],
                1..6,
            )
        )
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1..40usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn apply(mut body: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = body.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(body.len());
                body.drain(at.min(end)..end);
            }
            Edit::Insert(at, bytes) => {
                let at = at % (body.len() + 1);
                body.splice(at..at, bytes.iter().copied());
            }
            Edit::Replace(at, b) => {
                if !body.is_empty() {
                    let at = at % body.len();
                    body[at] = *b;
                }
            }
            Edit::Truncate(at) => body.truncate(at % len),
            Edit::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(body.len());
                let copy = body[at.min(end)..end].to_vec();
                body.splice(end..end, copy);
            }
        }
    }
    body
}

const PATHS: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn arbitrary_bytes_get_acceptance_or_an_exact_refusal(
        body in prop::collection::vec(any::<u8>(), 0..512),
        path in 0..3usize,
        backend in any::<bool>(),
    ) {
        let dialect = if backend { ValidationDialect::Backend } else { ValidationDialect::Gateway };
        let (status, text) = respond(PATHS[path], body, dialect);
        assert_exact_shape(status, &text);
    }

    #[test]
    fn mutated_valid_bodies_get_acceptance_or_an_exact_refusal(
        which in 0..VALID.len(),
        edits in prop::collection::vec(edit(), 1..5),
        path in 0..3usize,
        backend in any::<bool>(),
    ) {
        let dialect = if backend { ValidationDialect::Backend } else { ValidationDialect::Gateway };
        let body = apply(VALID[which].as_bytes().to_vec(), &edits);
        let (status, text) = respond(PATHS[path], body, dialect);
        assert_exact_shape(status, &text);
    }
}

/// Our tree, as serde_json's, to compare the two readings of one document.
fn to_serde(value: &Json) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Int(i) => serde_json::from_str(&i.to_string()).unwrap(),
        Json::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
        Json::Str(s) => Value::String(s.to_string()),
        Json::List(items) => Value::Array(items.iter().map(to_serde).collect()),
        Json::Dict(dict) => Value::Object(
            dict.iter()
                .map(|(k, v)| (k.to_owned(), to_serde(v)))
                .collect(),
        ),
        other @ Json::WideStr(_) => panic!("serde_json writes no lone surrogates: {other:?}"),
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            // Keys the decoder borrows from its table of OpenAI names, near misses of them, and
            // arbitrary text.
            prop::collection::btree_map(
                prop_oneof![
                    "(role|content|messages|max_tokens|n|id|url|rolf|contents|max_token|N)",
                    "\\PC{0,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_document_serde_json_writes_reads_back_the_same(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        let ours = loads(&text).expect("valid JSON decodes");
        prop_assert_eq!(to_serde(&ours), value);
    }
}
