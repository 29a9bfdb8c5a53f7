//! RequestSchemaValidator over real sockets, standalone in axum and in bare hyper: dialects,
//! the model catalog, context length, custom schemas, bounded bodies, and the parsed request
//! handed to the service.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::Extension;
use axum::routing::post;
use bytes::Bytes;
use common::{chunked, full, send, send_h2, serve_axum, serve_hyper};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::Layer;
use tower_maas::validate::{
    ModelCatalog, ParsedRequest, RequestSchemaValidatorLayer, Schema, Ty, ValidationDialect,
};
use tower_maas::{MaasBody, RequestedModel};

const E81001: &str = r#"{"error":{"code":"ModelArts.81001","message":"Invalid request body.","param":null,"type":"BadRequest"},"error_code":"ModelArts.81001","error_msg":"Invalid request body."}"#;
const E81009: &str = r#"{"error":{"code":"ModelArts.81009","message":"Invalid model.","param":null,"type":"NotFound"},"error_code":"ModelArts.81009","error_msg":"Invalid model."}"#;

fn catalog() -> ModelCatalog {
    ModelCatalog::new()
        .model("DeepSeek-V3", 4096)
        .model("bge-m3", 512)
}

/// Echoes what the validator handed on.
async fn echo(
    parsed: Option<Extension<Arc<ParsedRequest>>>,
    model: Option<Extension<RequestedModel>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> String {
    let parsed = parsed.map(|Extension(p)| {
        format!(
            "endpoint={:?} model={:?} stream={} include_usage={:?} max_tokens={:?} prompt_tokens={} texts={:?}",
            p.endpoint(),
            p.model(),
            p.stream(),
            p.include_usage(),
            p.max_tokens(),
            p.prompt_tokens(),
            p.texts()
        )
    });
    format!(
        "{} | requested={:?} | length={:?} | body={}",
        parsed.unwrap_or_else(|| "unparsed".to_owned()),
        model.map(|Extension(m)| m.as_str().to_owned()),
        headers.get("content-length"),
        String::from_utf8_lossy(&body)
    )
}

fn app(layer: RequestSchemaValidatorLayer) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(echo).get(echo))
        .route("/v1/completions", post(echo))
        .route("/v1/embeddings", post(echo))
        .route("/v1/rerank", post(echo))
        .route("/other", post(echo))
        .layer(layer)
}

async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> common::Reply {
    let body = body.to_owned();
    send(addr, common::post(path, &body).body(full(body)).unwrap()).await
}

fn backend(message: &str, kind: &str, code: u16) -> String {
    let message = serde_json::to_string(message).unwrap();
    format!(
        r#"{{"object":"error","message":{message},"type":"{kind}","param":null,"code":{code}}}"#
    )
}

#[tokio::test]
async fn gateway_dialect_answers_81001_and_81009_before_the_schema() {
    let addr = serve_axum(app(RequestSchemaValidatorLayer::new().models(catalog()))).await;
    // Empty model, even with other errors present.
    post_json(addr, "/v1/chat/completions", r#"{"model":"","messages":3}"#)
        .await
        .assert_json(400, E81001);
    post_json(
        addr,
        "/v1/chat/completions",
        r#"{"model":"DeepSeek-R1","messages":[]}"#,
    )
    .await
    .assert_json(404, E81009);
    // A model that is not a string is the schema's business.
    post_json(addr, "/v1/chat/completions", r#"{"model":7,"messages":[]}"#)
        .await
        .assert_json(
            400,
            &backend(
                "[{'type': 'string_type', 'loc': ('body', 'model'), 'msg': 'Input should be a valid string', 'input': 7}]",
                "BadRequestError",
                400,
            ),
        );
}

#[tokio::test]
async fn backend_dialect_answers_as_vllm_after_the_schema() {
    let layer = RequestSchemaValidatorLayer::new()
        .models(catalog())
        .dialect(ValidationDialect::Backend);
    let addr = serve_axum(app(layer)).await;
    post_json(
        addr,
        "/v1/chat/completions",
        r#"{"model":"DeepSeek-R1","messages":[]}"#,
    )
    .await
    .assert_json(
        404,
        &backend(
            "The model `DeepSeek-R1` does not exist.",
            "NotFoundError",
            404,
        ),
    );
    post_json(
        addr,
        "/v1/chat/completions",
        r#"{"model":"","messages":[]}"#,
    )
    .await
    .assert_json(
        404,
        &backend("The model `` does not exist.", "NotFoundError", 404),
    );
    // The schema comes first.
    post_json(addr, "/v1/chat/completions", r#"{"model":"DeepSeek-R1"}"#)
        .await
        .assert_json(
            400,
            &backend(
                "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required', 'input': {'model': 'DeepSeek-R1'}}]",
                "BadRequestError",
                400,
            ),
        );
}

#[tokio::test]
async fn context_length_in_every_wording() {
    let addr = serve_axum(app(RequestSchemaValidatorLayer::new().models(catalog()))).await;
    // The estimator counts "abcd " as 2 tokens (5 ASCII bytes); a message adds 4, the reply 3.
    let words = |n: usize| "abcd ".repeat(n);
    let chat = |text: &str, max_tokens: Option<u64>| {
        let mut body = serde_json::json!({
            "model": "DeepSeek-V3",
            "messages": [{"role": "user", "content": text}],
        });
        if let Some(m) = max_tokens {
            body["max_tokens"] = m.into();
        }
        body.to_string()
    };
    // 4 bytes per token: 100 "abcd " = 500 bytes = 125 tokens, + 7 = 132.
    let reply = post_json(addr, "/v1/chat/completions", &chat(&words(100), Some(4000))).await;
    reply.assert_json(
        400,
        &backend(
            "This model's maximum context length is 4096 tokens. However, you requested 4132 tokens (132 in the messages, 4000 in the completion). Please reduce the length of the messages or completion.",
            "BadRequestError",
            400,
        ),
    );
    assert_eq!(
        post_json(addr, "/v1/chat/completions", &chat(&words(100), Some(3964)))
            .await
            .status,
        200
    );
    // No max_tokens: only a prompt at or over the context is refused, in vLLM's other wording.
    // 3272 "abcd " = 16360 bytes = 4090 tokens, + 7 = 4097; at the context exactly, refused
    // too (vLLM's `>=`): 16356 ASCII bytes = 4089 tokens, + 7 = 4096.
    for (prompt, tokens) in [(words(3272), 4097), ("a".repeat(16356), 4096)] {
        let reply = post_json(addr, "/v1/chat/completions", &chat(&prompt, None)).await;
        reply.assert_json(
            400,
            &backend(
                &format!("This model's maximum context length is 4096 tokens. However, you requested {tokens} tokens in the messages, Please reduce the length of the messages."),
                "BadRequestError",
                400,
            ),
        );
    }
    // One token under it passes.
    let reply = post_json(
        addr,
        "/v1/chat/completions",
        &chat(&"a".repeat(16352), None),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Completions default max_tokens to 16; token-id prompts count one token per id.
    let ids: Vec<u32> = (0..4081).collect();
    let body = serde_json::json!({"model": "DeepSeek-V3", "prompt": ids}).to_string();
    post_json(addr, "/v1/completions", &body).await.assert_json(
        400,
        &backend(
            "This model's maximum context length is 4096 tokens. However, you requested 4097 tokens (4081 in the messages, 16 in the completion). Please reduce the length of the messages or completion.",
            "BadRequestError",
            400,
        ),
    );
    // Embeddings: the largest input over the context.
    let body =
        serde_json::json!({"model": "bge-m3", "input": ["short", "abcd".repeat(513)]}).to_string();
    post_json(addr, "/v1/embeddings", &body).await.assert_json(
        400,
        &backend(
            "This model's maximum context length is 512 tokens. However, you requested 513 tokens in the input for embedding generation. Please reduce the length of the input.",
            "BadRequestError",
            400,
        ),
    );
}

#[tokio::test]
async fn accepted_requests_carry_the_parsed_request_and_the_same_bytes() {
    let addr = serve_axum(app(RequestSchemaValidatorLayer::new().models(catalog()))).await;
    let body = r#"{"model":"DeepSeek-V3","stream":"true","stream_options":{},"max_tokens":"20","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}]}"#;
    let reply = post_json(addr, "/v1/chat/completions", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        format!(
            r#"endpoint=ChatCompletions model=Some("DeepSeek-V3") stream=true include_usage=Some(true) max_tokens=Some(20) prompt_tokens=20 texts=["be brief", "hi", "{{\"x\":1}}"] | requested=Some("DeepSeek-V3") | length=Some("{}") | body={body}"#,
            body.len()
        )
    );
}

#[tokio::test]
async fn other_paths_and_methods_pass_untouched() {
    let addr = serve_axum(app(RequestSchemaValidatorLayer::new())).await;
    let reply = post_json(addr, "/other", "not json").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().starts_with("unparsed | requested=None"),
        "{}",
        reply.text()
    );
    let get = Request::get("/v1/chat/completions")
        .header("host", "localhost")
        .body(full("not json"))
        .unwrap();
    assert!(send(addr, get).await.text().starts_with("unparsed"));
}

#[tokio::test]
async fn users_register_their_own_schemas() {
    let rerank = Schema::new("RerankRequest")
        .required("model", Ty::Str)
        .required("query", Ty::Str)
        .required("documents", Ty::list(Ty::Str))
        .optional("top_n", Ty::Int.ge(1).nullable());
    let addr = serve_axum(app(
        RequestSchemaValidatorLayer::new().route("/v1/rerank", rerank)
    ))
    .await;
    let reply = post_json(
        addr,
        "/v1/rerank",
        r#"{"model":"m","query":"q","documents":["a",2],"top_n":0,"x":1}"#,
    )
    .await;
    reply.assert_json(
        400,
        &backend(
            "[{'type': 'string_type', 'loc': ('body', 'documents', 1), 'msg': 'Input should be a valid string', 'input': 2}, {'type': 'greater_than_equal', 'loc': ('body', 'top_n'), 'msg': 'Input should be greater than or equal to 1', 'input': 0, 'ctx': {'ge': 1}}, {'type': 'extra_forbidden', 'loc': ('body', 'x'), 'msg': 'Extra inputs are not permitted', 'input': 1}]",
            "BadRequestError",
            400,
        ),
    );
    let reply = post_json(
        addr,
        "/v1/rerank",
        r#"{"model":"m","query":"q","documents":["a"]}"#,
    )
    .await;
    assert!(
        reply.text().starts_with("endpoint=Custom"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn bodies_are_bounded_whether_declared_chunked_or_http2() {
    let layer = RequestSchemaValidatorLayer::new().body_limit(64);
    let addr = serve_axum(app(layer.clone())).await;
    let big = format!(
        r#"{{"model":"m","messages":[],"user":"{}"}}"#,
        "a".repeat(100)
    );
    let too_large = |id: &str| {
        format!(
            r#"{{"error_msg":"Request entity too large.","error_code":"APIG.0201","request_id":"{id}"}}"#
        )
    };
    let reply = post_json(addr, "/v1/chat/completions", &big).await;
    reply.assert_json(413, &too_large(reply.request_id()));

    let leaked: &'static [u8] = Box::leak(big.clone().into_bytes().into_boxed_slice());
    let req = Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .body(chunked(&[&leaked[..40], &leaked[40..]]))
        .unwrap();
    let reply = send(addr, req).await;
    reply.assert_json(413, &too_large(reply.request_id()));

    // HTTP/2 through bare hyper, with no content-length.
    let service = tower::service_fn(|_: Request<MaasBody<Incoming>>| async {
        Ok::<_, Infallible>(Response::new(full("accepted")))
    });
    let h2 = serve_hyper(layer.layer(service)).await;
    let req = Request::post("http://localhost/v1/chat/completions")
        .body(chunked(&[&leaked[..40], &leaked[40..]]))
        .unwrap();
    let reply = send_h2(h2, req).await;
    reply.assert_json(413, &too_large(reply.request_id()));
    let req = Request::post("http://localhost/v1/chat/completions")
        .body(chunked(&[br#"{"model":"m","#, br#""messages":[]}"#]))
        .unwrap();
    let reply = send_h2(h2, req).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "accepted"));
}

/// By default a body may be 12 MiB, APIG's bound: exactly that much is read and judged, one
/// byte more is refused. (The byte over is sent in process: a server that refuses before
/// reading cannot be relied on to take 12 MiB from a client over a socket first.)
#[tokio::test]
async fn the_default_bound_is_apigs_12_mib() {
    use tower::ServiceExt;

    let limit = 12 * 1024 * 1024;
    assert_eq!(tower_maas::DEFAULT_BODY_LIMIT, limit);
    let body = |len: usize| {
        let head = r#"{"model":"m","messages":[],"user":""#;
        let padding = len - head.len() - 2;
        format!(r#"{head}{}"}}"#, "a".repeat(padding))
    };
    let at_limit = body(limit);
    assert_eq!(at_limit.len(), limit);
    // A handler that reads nothing: axum's own extractors stop at 2 MiB.
    let accepting = || {
        Router::new()
            .route("/v1/chat/completions", post(|| async { "accepted" }))
            .layer(RequestSchemaValidatorLayer::new())
    };
    let addr = serve_axum(accepting()).await;
    let reply = post_json(addr, "/v1/chat/completions", &at_limit).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "accepted"));

    let over = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("x-request-id", common::FIXED_ID)
        .body(axum::body::Body::from(body(limit + 1)))
        .unwrap();
    let reply = accepting()
        .layer(tower_maas::ErrorEnvelopeLayer::new().trust_incoming_request_id(true))
        .oneshot(over)
        .await
        .unwrap();
    assert_eq!(reply.status(), 413);
    let text = http_body_util::BodyExt::collect(reply.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        text,
        format!(
            r#"{{"error_msg":"Request entity too large.","error_code":"APIG.0201","request_id":"{}"}}"#,
            common::FIXED_ID
        )
    );
}

#[tokio::test]
async fn works_alone_in_a_bare_hyper_server() {
    let service = tower::service_fn(|req: Request<MaasBody<Incoming>>| async move {
        let parsed = req.extensions().get::<Arc<ParsedRequest>>().cloned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new(full(format!(
            "{:?} {}",
            parsed.and_then(|p| p.model().map(str::to_owned)),
            body.len()
        ))))
    });
    let addr = serve_hyper(RequestSchemaValidatorLayer::new().layer(service)).await;
    let body = r#"{"model":"m","messages":[]}"#;
    let reply = post_json(addr, "/v1/chat/completions", body).await;
    assert_eq!(reply.text(), format!("Some(\"m\") {}", body.len()));
    let reply = post_json(addr, "/v1/chat/completions", "{").await;
    reply.assert_json(
        400,
        &backend(
            "[{'type': 'json_invalid', 'loc': ('body', 1), 'msg': 'JSON decode error', 'input': {}, 'ctx': {'error': 'Expecting property name enclosed in double quotes'}}]",
            "BadRequestError",
            400,
        ),
    );
}

#[tokio::test]
async fn a_body_cut_short_is_not_taken_for_a_shorter_body() {
    let addr = serve_axum(app(RequestSchemaValidatorLayer::new())).await;
    let complete = r#"{"model":"m","messages":[]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{complete}"
    );
    let response = common::raw_http1(addr, &head, true).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body, common::UNPARSABLE);
}

#[tokio::test]
async fn deep_nesting_and_huge_integers_are_refused_without_a_crash() {
    let addr = serve_axum(app(RequestSchemaValidatorLayer::new())).await;
    let detail = common::UNPARSABLE;
    let deep = format!(
        r#"{{"model":"m","messages":[],"chat_template_kwargs":{{"a":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    post_json(addr, "/v1/chat/completions", &deep)
        .await
        .assert_json(400, detail);
    // Just under the bound: parsed, validated and handed on without exhausting the stack.
    let depth = tower_maas::validate::MAX_DEPTH - 2;
    let nested = format!(
        r#"{{"model":"m","messages":[],"chat_template_kwargs":{{"a":{}1{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert_eq!(
        post_json(addr, "/v1/chat/completions", &nested)
            .await
            .status,
        200
    );
    let nested_extra = format!(
        r#"{{"model":"m","messages":[],"x":{}1{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    // Refused as extra, its value written back whole, as pydantic does.
    post_json(addr, "/v1/chat/completions", &nested_extra)
        .await
        .assert_json(
            400,
            &format!(
                r#"{{"object":"error","message":"[{{'type': 'extra_forbidden', 'loc': ('body', 'x'), 'msg': 'Extra inputs are not permitted', 'input': {}1{}}}]","type":"BadRequestError","param":null,"code":400}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        );
    let huge = format!(
        r#"{{"model":"m","messages":[],"seed":{}}}"#,
        "9".repeat(4301)
    );
    post_json(addr, "/v1/chat/completions", &huge)
        .await
        .assert_json(400, detail);
    // 4300 digits is still an int Python reads: the schema accepts any int for seed.
    let ok = format!(
        r#"{{"model":"m","messages":[],"seed":{}}}"#,
        "9".repeat(4300)
    );
    assert_eq!(
        post_json(addr, "/v1/chat/completions", &ok).await.status,
        200
    );
}

/// A body of many bad values is refused with a bounded message: the first 1000 errors, exact,
/// then how many more there were; past 1 MiB of message, no further error is written. pydantic
/// has no bound: a 12 MiB body of bad values would be millions of errors, gigabytes written.
#[tokio::test]
async fn a_body_of_countless_errors_gets_a_bounded_message() {
    let addr = serve_axum(app(RequestSchemaValidatorLayer::new())).await;
    let error = |key: &str| {
        format!(
            "{{'type': 'float_parsing', 'loc': ('body', 'logit_bias', '{key}'), 'msg': 'Input should be a valid number, unable to parse string as a number', 'input': 'x'}}"
        )
    };
    let body = |keys: &[String]| {
        let bias: serde_json::Map<_, _> = keys.iter().map(|k| (k.clone(), "x".into())).collect();
        serde_json::json!({"model": "m", "messages": [], "logit_bias": bias}).to_string()
    };
    let refused = |message: String| backend(&message, "BadRequestError", 400);
    // Whole bodies of a megabyte: a mismatch is shown by where it starts, not printed whole.
    let assert_refused = |reply: common::Reply, message: String| {
        let expected = refused(message);
        let got = reply.text();
        let differ = got.bytes().zip(expected.bytes()).position(|(a, b)| a != b);
        assert!(
            reply.status == 400 && got == expected,
            "status {}, {} bytes against {}, first difference at {differ:?}: {:?}",
            reply.status,
            got.len(),
            expected.len(),
            differ.map(|at| &got[at.saturating_sub(80)..(at + 80).min(got.len())]),
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
    };

    // Within the bound, every error, as pydantic lists them.
    let keys: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
    let all: Vec<String> = keys.iter().map(|k| error(k)).collect();
    let reply = post_json(addr, "/v1/chat/completions", &body(&keys)).await;
    assert_refused(reply, format!("[{}]", all.join(", ")));

    // Past 1000 errors, the rest counted.
    let keys: Vec<String> = (0..1500).map(|i| format!("{i:04}")).collect();
    let first: Vec<String> = keys[..1000].iter().map(|k| error(k)).collect();
    let reply = post_json(addr, "/v1/chat/completions", &body(&keys)).await;
    assert_refused(
        reply,
        format!("[{}, ... 500 more errors]", first.join(", ")),
    );

    // Past 1 MiB of message, the errors not written counted.
    let keys: Vec<String> = (0..600)
        .map(|i| format!("{i:04}{}", "k".repeat(4000)))
        .collect();
    // 253 errors of about 4.1 kB: the 253rd is the one that takes the message past 1 MiB.
    let written: Vec<String> = keys[..253].iter().map(|k| error(k)).collect();
    assert!(written[..252].join(", ").len() < 1 << 20);
    assert!(written.join(", ").len() >= 1 << 20);
    let message = format!("[{}, ... 347 more errors]", written.join(", "));
    assert!(message.ends_with(" more errors]") && message.len() < (1 << 20) + 8192);
    let reply = post_json(addr, "/v1/chat/completions", &body(&keys)).await;
    assert_refused(reply, message);
}
