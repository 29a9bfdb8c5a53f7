//! `MaasLayers` and `ServiceBuilderExt` over bare hyper: the whole stack from one value, in the
//! MaaS order, with whole bodies compared.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::{FIXED_ID, full, send};
use http::{Request, Response};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_maas::auth::{InMemoryKeyStore, KeyPolicy};
use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier};
use tower_maas::stack::{MaasLayers, ServiceBuilderExt};
use tower_maas::validate::ModelCatalog;
use tower_maas::{Dialect, ErrorEnvelopeLayer};

const KEY: &str = "sk-StackKey000000000000000000000";

async fn model<B>(_: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(
        br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
    )));
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(res)
}

fn chat(model: &str, text: &str) -> Request<Full<Bytes>> {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
        .to_string();
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("x-request-id", FIXED_ID)
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn the_whole_stack_from_one_value_over_bare_hyper() {
    let keys = Arc::new(InMemoryKeyStore::new());
    keys.insert(KEY, KeyPolicy::new().rpm(60)).unwrap();
    let terms = KeywordClassifier::builder()
        .term("demo", "forbidden phrase")
        .build()
        .unwrap();
    let layers = MaasLayers::new(keys)
        .envelope(
            ErrorEnvelopeLayer::new()
                .dialect(Dialect::Flat)
                .trust_incoming_request_id(true),
        )
        .models(ModelCatalog::new().model("DeepSeek-V3", 4096))
        .risk(ContentRiskFilterLayer::new(terms));
    let addr = common::serve_hyper(ServiceBuilder::new().maas(layers).service_fn(model)).await;

    let ok = send(addr, chat("DeepSeek-V3", "hello")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(ok.request_id(), FIXED_ID);
    send(addr, chat("nope", "hello")).await.assert_json(
        404,
        r#"{"error_code":"ModelArts.81009","error_msg":"Invalid model."}"#,
    );
    send(addr, chat("DeepSeek-V3", "a forbidden phrase"))
        .await
        .assert_json(
            403,
            r#"{"error_code":"ModelArts.81011","error_msg":"May contain senstive....."}"#,
        );
    let mut no_key = chat("DeepSeek-V3", "hello");
    no_key.headers_mut().remove("authorization");
    send(addr, no_key).await.assert_json(
        400,
        r#"{"error_code":"ModelArts.81002","error_msg":"Failed to get the authorization header."}"#,
    );
    // The order: authentication before validation (no key and an unknown model is 81002)...
    let mut neither = chat("nope", "hello");
    neither.headers_mut().remove("authorization");
    send(addr, neither).await.assert_json(
        400,
        r#"{"error_code":"ModelArts.81002","error_msg":"Failed to get the authorization header."}"#,
    );
    // ...validation before the limiter (81009 took no slot), the limiter before content risk
    // control (81011 took one): with the first request, the burst of 2 is spent.
    send(addr, chat("DeepSeek-V3", "hello")).await.assert_json(
        429,
        r#"{"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 60 times per minute."}"#,
    );
}

#[tokio::test]
async fn the_builder_methods_stack_in_the_order_written() {
    let keys = Arc::new(InMemoryKeyStore::new());
    keys.insert(KEY, KeyPolicy::new().rpm(60)).unwrap();
    let service = ServiceBuilder::new()
        .error_envelope()
        .bearer_auth(keys)
        .validate_requests(ModelCatalog::new().model("DeepSeek-V3", 4096))
        .token_rate_limit()
        .content_risk_filter(
            KeywordClassifier::builder()
                .term("demo", "forbidden phrase")
                .build()
                .unwrap(),
        )
        .service_fn(model);
    let addr = common::serve_hyper(service).await;
    assert_eq!(send(addr, chat("DeepSeek-V3", "hello")).await.status, 200);
    // Every builder method added its layer: the validator (81009, no slot taken) and the
    // content filter (81011, inside the limiter: the burst's second slot).
    send(addr, chat("nope", "hello")).await.assert_json(
        404,
        r#"{"error":{"code":"ModelArts.81009","message":"Invalid model.","param":null,"type":"NotFound"},"error_code":"ModelArts.81009","error_msg":"Invalid model."}"#,
    );
    send(addr, chat("DeepSeek-V3", "a forbidden phrase"))
        .await
        .assert_json(
            403,
            r#"{"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"},"error_code":"ModelArts.81011","error_msg":"May contain senstive....."}"#,
        );
    let refused = send(addr, chat("DeepSeek-V3", "hello")).await;
    let id = refused.request_id().to_owned();
    // The envelope generated the id (it trusts none by default) and rendered the dual body.
    assert_ne!(id, FIXED_ID);
    refused.assert_json(
        429,
        r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 60 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 60 times per minute."}"#,
    );
}
