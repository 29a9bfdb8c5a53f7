//! BearerAuth over real sockets: header rules, key states, run-time changes, the model check,
//! and no key in any output.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::Extension;
use axum::routing::{get, post};
use bytes::Bytes;
use common::{Reply, chunked, empty, full, send, send_h2, serve_axum, serve_hyper};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::util::MapRequestLayer;
use tower_maas::auth::{
    BearerAuth, BearerAuthLayer, InMemoryKeyStore, KeyDigest, KeyId, KeyPolicy, KeyState, KeyStore,
    PresentedKey, Principal, Quota,
};
use tower_maas::{Dialect, ErrorEnvelopeLayer, MaasBody, RequestedModel};

const ACTIVE: &str = "sk-Q7xActiveKey0123456789abcdef";
const RESTRICTED: &str = "sk-R4zRestrictedKey0123456789ab";
const FROZEN: &str = "sk-F2kFrozenKey0123456789abcdef";
const METERED: &str = "sk-M8qMeteredKey0123456789abcde";
const ALL_KEYS: [&str; 4] = [ACTIVE, RESTRICTED, FROZEN, METERED];

const E81001: &str = r#"{"error":{"code":"ModelArts.81001","message":"Invalid request body.","param":null,"type":"BadRequest"},"error_code":"ModelArts.81001","error_msg":"Invalid request body."}"#;
const E81002: &str = r#"{"error":{"code":"ModelArts.81002","message":"Failed to get the authorization header.","param":null,"type":"BadRequest"},"error_code":"ModelArts.81002","error_msg":"Failed to get the authorization header."}"#;
const E81003: &str = r#"{"error":{"code":"ModelArts.81003","message":"Invalid authorization header.","param":null,"type":"Unauthorized"},"error_code":"ModelArts.81003","error_msg":"Invalid authorization header."}"#;
const E81004: &str = r#"{"error":{"code":"ModelArts.81004","message":"Invalid request because you do not have access to it.","param":null,"type":"Unauthorized"},"error_code":"ModelArts.81004","error_msg":"Invalid request because you do not have access to it."}"#;
const E81005: &str = r#"{"error":{"code":"ModelArts.81005","message":"The free quota has been used up.","param":null,"type":"Unauthorized"},"error_code":"ModelArts.81005","error_msg":"The free quota has been used up."}"#;
const E81006: &str = r#"{"error":{"code":"ModelArts.81006","message":"The resource is frozen.","param":null,"type":"Unauthorized"},"error_code":"ModelArts.81006","error_msg":"The resource is frozen."}"#;

struct Keys {
    store: Arc<InMemoryKeyStore>,
    active: KeyId,
    frozen: KeyId,
    metered: KeyId,
}

fn keys() -> Keys {
    let store = Arc::new(InMemoryKeyStore::new());
    let active = store
        .insert(ACTIVE, KeyPolicy::new().label("team-a"))
        .unwrap();
    store
        .insert(
            RESTRICTED,
            KeyPolicy::new().label("team-r").models(["DeepSeek-V3"]),
        )
        .unwrap();
    let frozen = store.insert(FROZEN, KeyPolicy::new()).unwrap();
    store.freeze(frozen);
    let metered = store.insert(METERED, KeyPolicy::new().quota(100)).unwrap();
    Keys {
        store,
        active,
        frozen,
        metered,
    }
}

/// Echoes what the handler sees, so tests can tell what passed the layer.
async fn echo(
    principal: Option<Extension<Principal>>,
    model: Option<Extension<RequestedModel>>,
    headers: HeaderMap,
    body: Bytes,
) -> String {
    format!(
        "principal={} label={} authorization={} length={} model={} body={}",
        principal
            .as_ref()
            .map_or("-".to_owned(), |p| p.key_id().to_string()),
        principal.as_ref().and_then(|p| p.label()).unwrap_or("-"),
        headers.contains_key("authorization"),
        headers
            .get("content-length")
            .map_or("-", |v| v.to_str().unwrap()),
        model.as_ref().map_or("-", |m| m.as_str()),
        String::from_utf8_lossy(&body),
    )
}

fn app<K: KeyStore>(layer: BearerAuthLayer<K>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(echo))
        .route("/v1/models", get(echo))
        .layer(layer)
}

fn chat(authorization: Option<&[u8]>, body: &'static str) -> Request<http_body_util::Full<Bytes>> {
    let mut req = common::post("/v1/chat/completions", body)
        .body(full(body))
        .unwrap();
    if let Some(value) = authorization {
        req.headers_mut()
            .append("authorization", HeaderValue::from_bytes(value).unwrap());
    }
    req
}

fn bearer(key: &str) -> Vec<u8> {
    format!("Bearer {key}").into_bytes()
}

const CHAT: &str = r#"{"model":"DeepSeek-V3","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn header_rules_have_decided_answers() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()))).await;
    let long_token = format!("Bearer {}", "a".repeat(8 * 1024));
    let cases: Vec<(Option<&[u8]>, u16, &str)> = vec![
        (None, 400, E81002),
        (Some(b""), 400, E81002),
        (Some(b"Basic dXNlcjpwYXNz"), 400, E81002),
        (Some(ACTIVE.as_bytes()), 400, E81002),
        (Some(b"Bearer"), 400, E81002),
        (Some(b"Bearer   "), 400, E81002),
        (Some(b"Token sk-abc"), 400, E81002),
        (Some(b"Bearer \xff\xfe\x80"), 401, E81003),
        (Some("Bearer ключ".as_bytes()), 401, E81003),
        (Some(b"Bearer sk-a sk-b"), 401, E81003),
        (Some(long_token.as_bytes()), 401, E81003),
        (Some(b"Bearer sk-unknown-key"), 401, E81003),
    ];
    for (header, status, body) in cases {
        let reply = send(addr, chat(header, CHAT)).await;
        reply.assert_json(status, body);
        assert!(tower_maas::RequestId::is_valid(
            reply.request_id().as_bytes()
        ));
    }
}

#[tokio::test]
async fn two_authorization_headers_are_refused_even_if_both_are_valid() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()))).await;
    let mut req = chat(Some(&bearer(ACTIVE)), CHAT);
    req.headers_mut().append(
        "authorization",
        HeaderValue::from_bytes(&bearer(ACTIVE)).unwrap(),
    );
    send(addr, req).await.assert_json(400, E81002);
}

#[tokio::test]
async fn the_scheme_is_case_insensitive_and_the_principal_reaches_the_service() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()))).await;
    for scheme in ["Bearer", "bearer", "BEARER", "Bearer  "] {
        let header = format!("{scheme} {ACTIVE}");
        let reply = send(addr, chat(Some(header.as_bytes()), CHAT)).await;
        assert_eq!(reply.status, 200, "{scheme:?}");
        assert_eq!(
            reply.text(),
            format!(
                "principal={} label=team-a authorization=false length={} model=- body={CHAT}",
                keys.active,
                CHAT.len()
            )
        );
    }
}

/// A key store of one's own, over rows of digests (as a database holds them), hands out
/// principals made with `Principal::new`: the layer lets its keys in with their id and label,
/// and refuses a frozen policy (81006) and a quota used up in the row (81005), as it does the
/// in-memory store's.
#[tokio::test]
async fn a_key_store_of_ones_own_makes_its_principals() {
    struct Rows(Vec<(KeyDigest, KeyId, KeyPolicy, Arc<Quota>)>);

    impl KeyStore for Rows {
        fn authenticate(&self, key: PresentedKey<'_>) -> Option<Principal> {
            let digest = key.digest();
            self.0
                .iter()
                .find(|row| row.0 == digest)
                .map(|(_, id, policy, quota)| {
                    Principal::new(*id, policy.clone(), Arc::clone(quota))
                })
        }
    }

    let metered_policy = KeyPolicy::new().quota(100);
    let metered = Arc::new(Quota::new(metered_policy.quota));
    let rows = Rows(vec![
        (
            KeyDigest::of(ACTIVE),
            KeyId(41),
            KeyPolicy::new().label("team-a"),
            Arc::new(Quota::new(None)),
        ),
        (
            KeyDigest::of(FROZEN),
            KeyId(42),
            KeyPolicy::new().state(KeyState::Frozen),
            Arc::new(Quota::new(None)),
        ),
        (
            KeyDigest::of(METERED),
            KeyId(43),
            metered_policy,
            Arc::clone(&metered),
        ),
    ]);
    let addr = serve_axum(app(BearerAuthLayer::new(Arc::new(rows)))).await;
    // What the handler saw of a request let through: the store's principal, no key.
    let seen = |principal: &str| {
        format!(
            "principal={principal} authorization=false length={} model=- body={CHAT}",
            CHAT.len()
        )
    };
    let reply = send(addr, chat(Some(&bearer(ACTIVE)), CHAT)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), seen("key-41 label=team-a"));
    send(addr, chat(Some(&bearer(FROZEN)), CHAT))
        .await
        .assert_json(401, E81006);
    send(addr, chat(Some(&bearer(RESTRICTED)), CHAT))
        .await
        .assert_json(401, E81003);
    let reply = send(addr, chat(Some(&bearer(METERED)), CHAT)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), seen("key-43 label=-"));
    metered.charge(100);
    send(addr, chat(Some(&bearer(METERED)), CHAT))
        .await
        .assert_json(401, E81005);
}

#[tokio::test]
async fn key_state_refusals_in_order() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()))).await;
    send(addr, chat(Some(&bearer(FROZEN)), CHAT))
        .await
        .assert_json(401, E81006);

    assert_eq!(
        send(addr, chat(Some(&bearer(METERED)), CHAT)).await.status,
        200
    );
    keys.store.get(keys.metered).unwrap().quota().charge(100);
    send(addr, chat(Some(&bearer(METERED)), CHAT))
        .await
        .assert_json(401, E81005);

    // Frozen comes before quota.
    keys.store.freeze(keys.metered);
    send(addr, chat(Some(&bearer(METERED)), CHAT))
        .await
        .assert_json(401, E81006);
}

#[tokio::test]
async fn later_editions_answer_key_state_with_403() {
    let keys = keys();
    let layer = BearerAuthLayer::new(keys.store.clone()).key_state_status(StatusCode::FORBIDDEN);
    let addr = serve_axum(app(layer)).await;
    send(addr, chat(Some(&bearer(FROZEN)), CHAT)).await.assert_json(
        403,
        r#"{"error":{"code":"ModelArts.81006","message":"The resource is frozen.","param":null,"type":"Forbidden"},"error_code":"ModelArts.81006","error_msg":"The resource is frozen."}"#,
    );
    let other_model = r#"{"model":"Qwen2-72B","messages":[{"role":"user","content":"hi"}]}"#;
    send(addr, chat(Some(&bearer(RESTRICTED)), other_model))
        .await
        .assert_json(
            403,
            r#"{"error":{"code":"ModelArts.81004","message":"Invalid request because you do not have access to it.","param":null,"type":"Forbidden"},"error_code":"ModelArts.81004","error_msg":"Invalid request because you do not have access to it."}"#,
        );
    keys.store.get(keys.metered).unwrap().quota().charge(100);
    send(addr, chat(Some(&bearer(METERED)), CHAT))
        .await
        .assert_json(
            403,
            r#"{"error":{"code":"ModelArts.81005","message":"The free quota has been used up.","param":null,"type":"Forbidden"},"error_code":"ModelArts.81005","error_msg":"The free quota has been used up."}"#,
        );
    // Not a key-state refusal: keeps its seed status.
    send(addr, chat(None, CHAT)).await.assert_json(400, E81002);
}

#[tokio::test]
async fn run_time_changes_are_seen_by_the_next_request() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()))).await;
    const NEW: &str = "sk-N5wNewKey0123456789abcdef012";
    send(addr, chat(Some(&bearer(NEW)), CHAT))
        .await
        .assert_json(401, E81003);

    let id = keys.store.insert(NEW, KeyPolicy::new()).unwrap();
    assert_eq!(send(addr, chat(Some(&bearer(NEW)), CHAT)).await.status, 200);

    keys.store.freeze(id);
    send(addr, chat(Some(&bearer(NEW)), CHAT))
        .await
        .assert_json(401, E81006);

    keys.store.unfreeze(id);
    assert_eq!(send(addr, chat(Some(&bearer(NEW)), CHAT)).await.status, 200);

    keys.store.update(id, |policy| {
        *policy = policy.clone().models(["Qwen2.5-72B-32K"])
    });
    send(addr, chat(Some(&bearer(NEW)), CHAT))
        .await
        .assert_json(401, E81004);

    keys.store.remove(id);
    send(addr, chat(Some(&bearer(NEW)), CHAT))
        .await
        .assert_json(401, E81003);

    // Keys configured by digest work the same.
    let id = keys
        .store
        .insert_digest(KeyDigest::of(NEW), KeyPolicy::new())
        .unwrap();
    assert_eq!(send(addr, chat(Some(&bearer(NEW)), CHAT)).await.status, 200);
    assert!(keys.store.insert(NEW, KeyPolicy::new()).is_err());
    assert!(keys.store.remove(id));
    let _ = keys.frozen;
}

#[tokio::test]
async fn restricted_keys_have_their_model_read_from_the_body() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()))).await;
    let auth = bearer(RESTRICTED);

    let reply = send(addr, chat(Some(&auth), CHAT)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        format!(
            "principal=key-1 label=team-r authorization=false length={} model=DeepSeek-V3 body={CHAT}",
            CHAT.len()
        )
    );

    let other = r#"{"model":"DeepSeek-R1","messages":[]}"#;
    send(addr, chat(Some(&auth), other))
        .await
        .assert_json(401, E81004);

    for unusable in [
        "",
        "not json",
        r#"{"model":""}"#,
        r#"{"model":null}"#,
        r#"{"messages":[{"model":"DeepSeek-V3"}]}"#,
        r#"["DeepSeek-V3"]"#,
        r#"{"model":"DeepSeek-V3""#,
    ] {
        send(addr, chat(Some(&auth), unusable))
            .await
            .assert_json(400, E81001);
    }

    // Requests without a body are not read.
    let models = Request::get("/v1/models")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {RESTRICTED}"))
        .body(empty())
        .unwrap();
    let reply = send(addr, models).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().starts_with("principal=key-1 label=team-r"));

    // Keys for every model never have their body read: the service gets it as sent.
    let reply = send(addr, chat(Some(&bearer(ACTIVE)), "not json")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().ends_with("model=- body=not json"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn any_method_with_a_body_has_its_model_checked() {
    let keys = keys();
    let app = Router::new()
        .route("/v1/proxy", axum::routing::any(echo))
        .layer(BearerAuthLayer::new(keys.store.clone()));
    let addr = serve_axum(app).await;
    let body = r#"{"model":"DeepSeek-R1"}"#;
    let delete = Request::delete("/v1/proxy")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {RESTRICTED}"))
        .header("content-length", body.len())
        .body(full(body))
        .unwrap();
    send(addr, delete).await.assert_json(401, E81004);
    // Without a body there is nothing to check.
    let delete = Request::delete("/v1/proxy")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {RESTRICTED}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(addr, delete).await.status, 200);
}

#[tokio::test]
async fn a_chunked_body_is_bounded_and_handed_on_with_its_length() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()).body_limit(64))).await;
    let parts: &[&'static [u8]] = &[br#"{"model":"#, br#""DeepSeek-V3","#, br#""messages":[]}"#];
    let whole: String = parts
        .iter()
        .map(|p| std::str::from_utf8(p).unwrap())
        .collect();
    let req = Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {RESTRICTED}"))
        .body(chunked(parts))
        .unwrap();
    let reply = send(addr, req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        format!(
            "principal=key-1 label=team-r authorization=false length={} model=DeepSeek-V3 body={whole}",
            whole.len()
        )
    );

    // Over the bound, declared or not.
    let big: &'static str = Box::leak(
        format!(r#"{{"model":"DeepSeek-V3","x":"{}"}}"#, "a".repeat(100)).into_boxed_str(),
    );
    let too_large = |reply: &Reply| {
        format!(
            r#"{{"error_msg":"Request entity too large.","error_code":"APIG.0201","request_id":"{}"}}"#,
            reply.request_id()
        )
    };
    let reply = send(addr, chat(Some(&bearer(RESTRICTED)), big)).await;
    reply.assert_json(413, &too_large(&reply));
    let req = Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {RESTRICTED}"))
        .body(chunked(&[&big.as_bytes()[..50], &big.as_bytes()[50..]]))
        .unwrap();
    let reply = send(addr, req).await;
    reply.assert_json(413, &too_large(&reply));
}

#[tokio::test]
async fn a_model_already_known_from_extensions_is_used_without_reading_the_body() {
    let keys = keys();
    let app = |model: &'static str| {
        app(BearerAuthLayer::new(keys.store.clone())).layer(MapRequestLayer::new(
            move |mut req: Request<axum::body::Body>| {
                req.extensions_mut().insert(RequestedModel::new(model));
                req
            },
        ))
    };
    let allowed = serve_axum(app("DeepSeek-V3")).await;
    let denied = serve_axum(app("DeepSeek-R1")).await;
    // The body is not JSON: it was not read, so nothing refused it.
    let reply = send(allowed, chat(Some(&bearer(RESTRICTED)), "not json")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().ends_with("model=DeepSeek-V3 body=not json"));
    send(denied, chat(Some(&bearer(RESTRICTED)), CHAT))
        .await
        .assert_json(401, E81004);
}

#[tokio::test]
async fn the_authorization_header_is_kept_only_on_request() {
    let keys = keys();
    let addr = serve_axum(app(
        BearerAuthLayer::new(keys.store.clone()).keep_authorization(true)
    ))
    .await;
    let reply = send(addr, chat(Some(&bearer(ACTIVE)), CHAT)).await;
    assert!(
        reply.text().contains("authorization=true"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn under_the_envelope_refusals_take_its_dialect_and_request_id() {
    let keys = keys();
    let app = app(BearerAuthLayer::new(keys.store.clone())).layer(
        ErrorEnvelopeLayer::new()
            .dialect(Dialect::Flat)
            .trust_incoming_request_id(true),
    );
    let addr = serve_axum(app).await;
    let mut req = chat(None, CHAT);
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static(common::FIXED_ID));
    let reply = send(addr, req).await;
    reply.assert_json(
        400,
        r#"{"error_code":"ModelArts.81002","error_msg":"Failed to get the authorization header."}"#,
    );
    assert_eq!(reply.request_id(), common::FIXED_ID);
}

#[tokio::test]
async fn works_alone_in_a_bare_hyper_server_over_http1_and_http2() {
    let keys = keys();
    let service = tower::service_fn(|req: Request<MaasBody<Incoming>>| async move {
        let principal = req.extensions().get::<Principal>().cloned().unwrap();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new(common::full(format!(
            "{} {}",
            principal.key_id(),
            body.len()
        ))))
    });
    let addr = serve_hyper(BearerAuth::new(service, keys.store.clone())).await;
    let request = |key: &str| {
        Request::post("http://localhost/v1/chat/completions")
            .header("authorization", format!("Bearer {key}"))
            .body(full(CHAT))
            .unwrap()
    };
    for http2 in [false, true] {
        let send_one = |req| async move {
            if http2 {
                send_h2(addr, req).await
            } else {
                send(addr, req).await
            }
        };
        let reply = send_one(request(RESTRICTED)).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, format!("key-1 {}", CHAT.len()).as_str())
        );
        send_one(request("sk-nope")).await.assert_json(401, E81003);
        send_one(request(FROZEN)).await.assert_json(401, E81006);
    }
}

/// No key, nor its first eight characters, appears in any body, header or `Debug` output.
#[tokio::test]
async fn no_key_or_prefix_of_one_leaks() {
    let keys = keys();
    let layer = BearerAuthLayer::new(keys.store.clone());
    let addr = serve_axum(app(layer.clone()).layer(ErrorEnvelopeLayer::new())).await;
    let mut replies = Vec::new();
    for key in ALL_KEYS
        .iter()
        .chain(["sk-Z9pUnknownKey0123456789abcd"].iter())
    {
        for body in [CHAT, r#"{"model":"DeepSeek-R1"}"#, "not json"] {
            replies.push(send(addr, chat(Some(&bearer(key)), body)).await);
        }
    }
    let principal = keys.store.get(keys.active).unwrap();
    let debug = [
        format!("{:?}", keys.store),
        format!("{principal:?}"),
        format!("{layer:?}"),
        format!("{:?}", KeyDigest::of(ACTIVE)),
        format!("{:?}", BearerAuth::new((), keys.store.clone())),
    ];
    for key in ALL_KEYS
        .iter()
        .chain(["sk-Z9pUnknownKey0123456789abcd"].iter())
    {
        let secret = &key[3..11];
        let digest = KeyDigest::of(key).to_hex();
        for reply in &replies {
            assert!(!reply.text().contains(secret), "body leaks {secret}");
            for value in reply.headers.values() {
                let value = String::from_utf8_lossy(value.as_bytes());
                assert!(!value.contains(secret) && !value.contains(&digest[..16]));
            }
        }
        for text in &debug {
            assert!(
                !text.contains(secret) && !text.contains(&digest[..16]),
                "{text}"
            );
        }
    }
    // The successful requests passed, so the test saw real traffic.
    assert!(replies.iter().any(|r| r.status == 200));
}

/// A body that ends before its declared length is a read error: even though the bytes that did
/// arrive are a complete, allowed request, it is refused 81001 and never reaches the service.
#[tokio::test]
async fn a_body_cut_short_is_refused_not_taken_for_empty() {
    let keys = keys();
    let addr = serve_axum(app(BearerAuthLayer::new(keys.store.clone()))).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {RESTRICTED}\r\ncontent-length: 100\r\n\r\n{{\"model\":\"DeepSeek-V3\"}}"
    );
    let response = common::raw_http1(addr, &head, true).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body, E81001);
}
