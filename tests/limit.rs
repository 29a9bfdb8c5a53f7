//! TokenRateLimit and IpRateLimit over real sockets in axum, with a clock the test moves.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{FIXED_ID, frames, full, send, send_lossy};
use http::{HeaderMap, Request, StatusCode};
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyId, KeyPolicy};
use tower_maas::limit::{
    IpRateLimitLayer, ManualClock, TokenRateLimitLayer, TrustedProxies, UsageReport,
};
use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer};
use tower_maas::{ErrorEnvelopeLayer, ThrottleWindow};

const KEY: &str = "sk-L1mitedKey000000000000000000";

/// The test backend: answers as the `x-mode` header says, reporting `x-usage` tokens.
async fn backend(headers: HeaderMap) -> Response {
    let usage = headers
        .get("x-usage")
        .map_or("0", |v| v.to_str().unwrap())
        .parse::<u64>()
        .unwrap();
    let usage_json = |n: u64| {
        format!(
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{n}}}"#,
            n / 2,
            n - n / 2
        )
    };
    let leak = |s: String| -> &'static [u8] { Box::leak(s.into_bytes().into_boxed_slice()) };
    let sse = |body: common::Frames| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::new(body))
            .unwrap()
    };
    match headers.get("x-mode").map(|v| v.to_str().unwrap()) {
        Some("maas-sse") => sse(frames(vec![
            Ok(leak(format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}],\"usage\":{}}}\n\n", usage_json(usage / 2)))),
            // An event split across two frames.
            Ok(b"data: {\"choices\":[],\"us"),
            Ok(leak(format!("age\":{}}}\n\ndata: [DONE]\n\n", usage_json(usage)))),
        ])),
        Some("openai-sse") => sse(frames(vec![
            Ok(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n"),
            Ok(leak(format!("data: {{\"choices\":[],\"usage\":{}}}\n\ndata: [DONE]\n\n", usage_json(usage)))),
        ])),
        Some("broken-sse") => sse(frames(vec![
            Ok(leak(format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}],\"usage\":{}}}\n\n", usage_json(usage)))),
            Err("upstream went away"),
        ])),
        Some("error") => (StatusCode::BAD_REQUEST, "backend says no").into_response(),
        Some("no-usage") => axum::Json(serde_json::json!({"choices": []})).into_response(),
        _ => axum::Json(serde_json::json!({"choices": [], "usage": serde_json::from_str::<serde_json::Value>(&usage_json(usage)).unwrap()})).into_response(),
    }
}

struct Gateway {
    addr: SocketAddr,
    clock: ManualClock,
    keys: Arc<InMemoryKeyStore>,
    id: KeyId,
}

async fn gateway(
    policy: KeyPolicy,
    limiter: impl FnOnce(
        TokenRateLimitLayer<tower_maas::limit::MemoryStore, ManualClock>,
    ) -> TokenRateLimitLayer<tower_maas::limit::MemoryStore, ManualClock>,
) -> Gateway {
    let clock = ManualClock::new();
    let keys = Arc::new(InMemoryKeyStore::new());
    let id = keys.insert(KEY, policy).unwrap();
    let limiter = limiter(TokenRateLimitLayer::with(
        tower_maas::limit::MemoryStore::new(),
        clock.clone(),
    ));
    let app = Router::new()
        .route("/v1/chat/completions", post(backend))
        .layer(limiter)
        .layer(RequestSchemaValidatorLayer::new().models(ModelCatalog::new().model("m", 100_000)))
        .layer(BearerAuthLayer::new(keys.clone()))
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
    Gateway {
        addr: common::serve_axum(app).await,
        clock,
        keys,
        id,
    }
}

/// A chat request: "hi" is 1 token, plus 4 for the message and 3 for the reply = 8 prompt
/// tokens, so the reservation is 8 + max_tokens.
fn chat(max_tokens: u64, mode: &str, usage: u64) -> Request<http_body_util::Full<bytes::Bytes>> {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}}}"#
    );
    common::post("/v1/chat/completions", &body)
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-request-id", FIXED_ID)
        .header("x-mode", mode)
        .header("x-usage", usage.to_string())
        .body(full(body))
        .unwrap()
}

const E81101_60: &str = r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 60 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 60 times per minute."}"#;
const E81103_100: &str = r#"{"error":{"code":"ModelArts.81103","message":"Too many requests. exceeded rate limit is 100 tokens per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81103","error_msg":"Too many requests. exceeded rate limit is 100 tokens per minute."}"#;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn rpm_smooths_bursts_and_refuses_exactly() {
    // 60 per minute: one per second, two at once (60 / 30).
    let gw = gateway(KeyPolicy::new().rpm(60), |l| l).await;
    for _ in 0..2 {
        let reply = send(gw.addr, chat(10, "json", 5)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = send(gw.addr, chat(10, "json", 5)).await;
    reply.assert_json(429, E81101_60);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(reply.header("x-ratelimit-reset-requests"), Some("2s"));
    assert_eq!(reply.request_id(), FIXED_ID);
    gw.clock.advance(Duration::from_millis(1000));
    let reply = send(gw.addr, chat(10, "json", 5)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(reply.header("x-ratelimit-reset-requests"), Some("2s"));
}

#[tokio::test]
async fn the_maas_smoothing_rule_holds() {
    // RPM 300: more than 300 / 30 = 10 in one second are refused, and over a minute no more
    // than 300 + 10 pass.
    let gw = gateway(KeyPolicy::new().rpm(300), |l| l).await;
    let mut admitted = 0;
    for _ in 0..12 {
        if send(gw.addr, chat(1, "json", 1)).await.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    let mut total = admitted;
    for _ in 0..600 {
        gw.clock.advance(Duration::from_millis(100));
        if send(gw.addr, chat(1, "json", 1)).await.status == 200 {
            total += 1;
        }
    }
    // 60.0 s elapsed: 300 per minute plus the initial burst of 10.
    assert_eq!(total, 310);
}

#[tokio::test]
async fn tpm_reserves_refuses_and_gives_the_request_slot_back() {
    let gw = gateway(KeyPolicy::new().rpm(60).tpm(100), |l| l).await;
    // Reserves 8 + 52 = 60 of 100; the backend reports 60 (no correction).
    let reply = send(gw.addr, chat(52, "json", 60)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), Some("40"));
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("100"));
    // Another 60 does not fit.
    let reply = send(gw.addr, chat(52, "json", 60)).await;
    reply.assert_json(429, E81103_100);
    // 20 more tokens are needed; at 100 per minute that is 12 s.
    assert_eq!(reply.header("retry-after"), Some("12"));
    // The refused request did not use a request slot: still one left of the burst of two.
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("1"));
    // Nor any token: 40 left, the 60 used back in 36 s.
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), Some("40"));
    assert_eq!(reply.header("x-ratelimit-reset-tokens"), Some("36s"));
    let reply = send(gw.addr, chat(2, "json", 10)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn a_reservation_larger_than_the_bucket_is_a_400_not_an_endless_429() {
    let gw = gateway(KeyPolicy::new().tpm(100), |l| l).await;
    let reply = send(gw.addr, chat(93, "json", 0)).await;
    reply.assert_json(
        400,
        r#"{"error":{"code":"ModelArts.81103","message":"Too many tokens requested: 101 tokens can never fit the rate limit of 100 tokens per minute.","param":null,"type":"BadRequest"},"error_code":"ModelArts.81103","error_msg":"Too many tokens requested: 101 tokens can never fit the rate limit of 100 tokens per minute."}"#,
    );
    // Exactly the bucket fits on an idle key.
    assert_eq!(send(gw.addr, chat(92, "json", 100)).await.status, 200);
}

#[tokio::test]
async fn usage_reconciles_from_json_and_from_both_kinds_of_stream() {
    for mode in ["json", "maas-sse", "openai-sse"] {
        let gw = gateway(KeyPolicy::new().tpm(100), |l| l).await;
        // Reserve 8 + 82 = 90; the backend reports 20: 70 come back.
        let (status, headers, body) = send_lossy(gw.addr, chat(82, mode, 20)).await;
        assert_eq!(status, 200, "{mode}: {body:?}");
        assert_eq!(
            header(&headers, "x-ratelimit-remaining-tokens"),
            Some("10"),
            "{mode}"
        );
        let reply = send(gw.addr, chat(72, mode, 80)).await;
        assert_eq!(reply.status, 200, "{mode}: refund missing");
        assert_eq!(
            reply.header("x-ratelimit-remaining-tokens"),
            Some("0"),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn usage_above_the_reservation_is_charged() {
    let gw = gateway(KeyPolicy::new().tpm(100), |l| l).await;
    // Reserve 18, report 60: 42 more are charged, leaving 40.
    send(gw.addr, chat(10, "json", 60)).await;
    let reply = send(gw.addr, chat(42, "json", 50)).await;
    reply.assert_json(429, E81103_100);
    let reply = send(gw.addr, chat(32, "json", 40)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn a_broken_stream_keeps_its_reservation_and_a_refusal_returns_it() {
    let gw = gateway(KeyPolicy::new().tpm(100).quota(1000), |l| l).await;
    // The stream reports a cumulative 20 tokens, then breaks: the envelope ends it, cleanly,
    // with the error as an event.
    let reply = send(gw.addr, chat(82, "broken-sse", 20)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}],\"usage\":{}}}\n\n{}\n\ndata: [DONE]\n\n",
            r#"{"prompt_tokens":10,"completion_tokens":10,"total_tokens":20}"#,
            r#"data: {"error":{"code":"APIG.0201","message":"Backend unavailable.","param":null,"type":"BadGateway"}}"#,
        )
    );
    // All 90 stay reserved (a completed stream would have come back down to 20): another 18
    // does not fit. The quota pays what was seen.
    send(gw.addr, chat(10, "json", 0))
        .await
        .assert_json(429, E81103_100);
    assert_eq!(gw.keys.get(gw.id).unwrap().quota().used(), 20);

    let gw = gateway(KeyPolicy::new().tpm(100), |l| l).await;
    let reply = send(gw.addr, chat(82, "error", 0)).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (400, "backend says no")
    );
    // The backend refused: nothing was used, everything comes back.
    assert_eq!(send(gw.addr, chat(82, "json", 90)).await.status, 200);

    let gw = gateway(KeyPolicy::new().tpm(100), |l| l).await;
    assert_eq!(send(gw.addr, chat(82, "no-usage", 0)).await.status, 200);
    // No usage reported: the reservation stands.
    send(gw.addr, chat(10, "json", 0))
        .await
        .assert_json(429, E81103_100);
}

#[tokio::test]
async fn the_quota_is_charged_by_usage_and_exhaustion_is_seen_by_auth() {
    let gw = gateway(KeyPolicy::new().quota(50), |l| l).await;
    assert_eq!(send(gw.addr, chat(10, "maas-sse", 30)).await.status, 200);
    assert_eq!(gw.keys.get(gw.id).unwrap().quota().used(), 30);
    assert_eq!(send(gw.addr, chat(10, "json", 30)).await.status, 200);
    send(gw.addr, chat(10, "json", 1)).await.assert_json(
        401,
        r#"{"error":{"code":"ModelArts.81005","message":"The free quota has been used up.","param":null,"type":"Unauthorized"},"error_code":"ModelArts.81005","error_msg":"The free quota has been used up."}"#,
    );
}

#[tokio::test]
async fn headers_are_in_the_head_of_streams_and_can_be_turned_off() {
    let gw = gateway(KeyPolicy::new().rpm(60).tpm(1000), |l| l).await;
    let (status, headers, _) = send_lossy(gw.addr, chat(10, "maas-sse", 10)).await;
    assert_eq!(status, 200);
    for name in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(headers.contains_key(name), "{name}");
    }
    // On a clock that stands still. Remaining is what may be sent now: 60 a minute pass two
    // at once (the N/30 smoothing), so one is left, and the one taken is back in a second. The
    // bucket holds a minute's tokens: the 18 reserved (the prompt's 8 by the estimate and
    // `max_tokens` 10) are back in 18 × 60 ms.
    for (name, value) in [
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "1"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-limit-tokens", "1000"),
        ("x-ratelimit-remaining-tokens", "982"),
        ("x-ratelimit-reset-tokens", "1.08s"),
    ] {
        assert_eq!(header(&headers, name), Some(value), "{name}");
    }

    let gw = gateway(KeyPolicy::new().rpm(60), |l| l.headers(false)).await;
    let reply = send(gw.addr, chat(10, "json", 1)).await;
    assert!(!reply.headers.contains_key("x-ratelimit-limit-requests"));
    send(gw.addr, chat(10, "json", 1)).await;
    let reply = send(gw.addr, chat(10, "json", 1)).await;
    reply.assert_json(429, E81101_60);
    assert!(!reply.headers.contains_key("x-ratelimit-remaining-requests"));
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn keys_without_limits_pass_untouched() {
    let gw = gateway(KeyPolicy::new(), |l| l).await;
    for _ in 0..50 {
        let reply = send(gw.addr, chat(10, "json", 1)).await;
        assert_eq!(reply.status, 200);
        assert!(!reply.headers.contains_key("x-ratelimit-limit-requests"));
    }
}

const APIG_0308: &str =
    "The throttling threshold has been reached: policy ip over ratelimit,limit:2,time:1 minute";

/// A request as the per-IP tests send it, with a fixed id for whole bodies.
fn throttled_request() -> http::Request<http_body_util::Full<bytes::Bytes>> {
    common::post("/v1/chat/completions", "{}")
        .header("x-request-id", FIXED_ID)
        .body(full("{}"))
        .unwrap()
}

/// An answer of `ok` behind `layer`, which reads the peer's address from the connection.
async fn serve_ip_limited(layer: IpRateLimitLayer<ManualClock>) -> SocketAddr {
    let app = Router::new()
        .route("/v1/chat/completions", post(|| async { "ok" }))
        .layer(layer.peer_addr(|e| e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
    common::serve_axum_with_peer(app).await
}

#[tokio::test]
async fn ip_limit_answers_apig_0308_per_client_behind_trusted_proxies() {
    let clock = ManualClock::new();
    let addr = serve_ip_limited(
        IpRateLimitLayer::with_clock(2, ThrottleWindow::MINUTE, clock.clone())
            .trusted_proxies(TrustedProxies::new(["127.0.0.1"]).unwrap()),
    )
    .await;
    let from = |client: &str| {
        common::post("/v1/chat/completions", "{}")
            .header("x-forwarded-for", format!("6.6.6.6, {client}"))
            .header("x-request-id", FIXED_ID)
            .body(full("{}"))
            .unwrap()
    };
    assert_eq!(send(addr, from("203.0.113.1")).await.status, 200);
    assert_eq!(send(addr, from("203.0.113.1")).await.status, 200);
    let reply = send(addr, from("203.0.113.1")).await;
    reply.assert_json(
        429,
        &format!(
            r#"{{"error_msg":"{APIG_0308}","error_code":"APIG.0308","request_id":"{FIXED_ID}"}}"#
        ),
    );
    assert_eq!(reply.header("retry-after"), Some("30"));
    // Another client behind the same proxy has its own budget; the spoofed left hop is ignored.
    assert_eq!(send(addr, from("203.0.113.2")).await.status, 200);
    clock.advance(Duration::from_secs(30));
    assert_eq!(send(addr, from("203.0.113.1")).await.status, 200);
}

/// The message's numbers and unit come from the policy: 3 a second is `limit:3,time:1 second`.
#[tokio::test]
async fn ip_limit_per_second_names_its_second() {
    let clock = ManualClock::new();
    let addr = serve_ip_limited(IpRateLimitLayer::with_clock(
        3,
        ThrottleWindow::SECOND,
        clock.clone(),
    ))
    .await;
    let request = throttled_request;
    for _ in 0..3 {
        assert_eq!(send(addr, request()).await.status, 200);
    }
    let reply = send(addr, request()).await;
    reply.assert_json(
        429,
        &format!(
            r#"{{"error_msg":"The throttling threshold has been reached: policy ip over ratelimit,limit:3,time:1 second","error_code":"APIG.0308","request_id":"{FIXED_ID}"}}"#
        ),
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(send(addr, request()).await.status, 200);
}

/// A policy's window of so many seconds, minutes, hours or days is written as the policy has
/// it, and spaces its requests over the whole window: two a window, the next one a half-window
/// later.
#[tokio::test]
async fn ip_limit_windows_of_any_count_and_unit() {
    for (window, written, half) in [
        (ThrottleWindow::Seconds(10), "10 second", 5),
        (ThrottleWindow::Minutes(2), "2 minute", 60),
        (ThrottleWindow::Hours(1), "1 hour", 1_800),
        (ThrottleWindow::Days(1), "1 day", 43_200),
        // A count of 0 is taken as 1.
        (ThrottleWindow::Seconds(0), "1 second", 1),
    ] {
        let clock = ManualClock::new();
        let addr = serve_ip_limited(IpRateLimitLayer::with_clock(2, window, clock.clone())).await;
        let request = throttled_request;
        for _ in 0..2 {
            assert_eq!(send(addr, request()).await.status, 200, "{written}");
        }
        let reply = send(addr, request()).await;
        reply.assert_json(
            429,
            &format!(
                r#"{{"error_msg":"The throttling threshold has been reached: policy ip over ratelimit,limit:2,time:{written}","error_code":"APIG.0308","request_id":"{FIXED_ID}"}}"#
            ),
        );
        let retry = half.to_string();
        assert_eq!(
            reply.header("retry-after"),
            Some(retry.as_str()),
            "{written}"
        );
        clock.advance(Duration::from_secs(half - 1));
        assert_eq!(send(addr, request()).await.status, 429, "{written}");
        clock.advance(Duration::from_secs(1));
        assert_eq!(send(addr, request()).await.status, 200, "{written}");
    }
}

/// A window longer than a limiter's clock can count (about 146 years) is taken as that: one
/// request, then refusals, and no arithmetic wraps round to admit more.
#[tokio::test]
async fn an_ip_limit_window_of_centuries_still_refuses() {
    for window in [
        ThrottleWindow::Days(u32::MAX),
        ThrottleWindow::Minutes(u32::MAX),
    ] {
        let clock = ManualClock::new();
        let addr = serve_ip_limited(IpRateLimitLayer::with_clock(1, window, clock.clone())).await;
        assert_eq!(send(addr, throttled_request()).await.status, 200);
        for _ in 0..3 {
            assert_eq!(
                send(addr, throttled_request()).await.status,
                429,
                "{window}"
            );
            clock.advance(Duration::from_secs(86_400 * 365));
        }
    }
}

/// A per-IP limit of 0 admits nothing, not one request a window.
#[tokio::test]
async fn an_ip_limit_of_zero_admits_nothing() {
    let addr = serve_ip_limited(IpRateLimitLayer::with_clock(
        0,
        ThrottleWindow::SECOND,
        ManualClock::new(),
    ))
    .await;
    let request = common::post("/v1/chat/completions", "{}")
        .header("x-request-id", FIXED_ID)
        .body(full("{}"))
        .unwrap();
    let reply = send(addr, request).await;
    reply.assert_json(
        429,
        &format!(
            r#"{{"error_msg":"The throttling threshold has been reached: policy ip over ratelimit,limit:0,time:1 second","error_code":"APIG.0308","request_id":"{FIXED_ID}"}}"#
        ),
    );
    assert_eq!(reply.header("retry-after"), None);
}

#[tokio::test]
async fn a_spray_of_addresses_stays_within_the_cap() {
    use tower::{Layer, ServiceExt};
    use tower_maas::limit::ClientAddr;

    let clock = ManualClock::new();
    let layer =
        IpRateLimitLayer::with_clock(5, ThrottleWindow::SECOND, clock.clone()).capacity(256);
    let service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(full("ok")))
    }));
    let request = |n: u32| {
        let mut req = Request::new(());
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n);
        req.extensions_mut()
            .insert(ClientAddr(SocketAddr::from((ip, 1234))));
        req
    };
    let mut refused = 0;
    for n in 0..10_000 {
        let res = service.clone().oneshot(request(n)).await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
        assert!(layer.tracked() <= 256 + 64, "tracked {}", layer.tracked());
    }
    // Full of addresses active in their window: new ones are refused, not tracked.
    assert!(refused > 9_000, "{refused}");
    // Once their window has passed, the old entries make room again.
    clock.advance(Duration::from_secs(2));
    let res = service.clone().oneshot(request(20_000)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(layer.tracked() <= 256 + 64);
}

/// A store that answers after a round trip, as a Redis store will: the decision is the memory
/// store's, delivered by a future that first yields to the runtime.
struct RoundTripStore(tower_maas::limit::MemoryStore);

impl tower_maas::limit::RateStore for RoundTripStore {
    type Pending =
        std::pin::Pin<Box<dyn std::future::Future<Output = tower_maas::limit::Outcome> + Send>>;

    fn acquire(
        &self,
        ask: tower_maas::limit::Acquire,
    ) -> tower_maas::limit::Acquired<Self::Pending> {
        let tower_maas::limit::Acquired::Now(outcome) = self.0.acquire(ask) else {
            unreachable!("the memory store decides at once")
        };
        tower_maas::limit::Acquired::Later(Box::pin(async move {
            tokio::task::yield_now().await;
            outcome
        }))
    }

    fn reconcile(&self, settled: tower_maas::limit::Reconcile) {
        self.0.reconcile(settled);
    }
}

/// A request as BearerAuth leaves it: the key's principal in the extensions.
fn with_principal(
    keys: &InMemoryKeyStore,
    id: KeyId,
    body: &'static str,
) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = Request::post("/v1/chat/completions")
        .body(full(body))
        .unwrap();
    req.extensions_mut().insert(keys.get(id).unwrap());
    req
}

#[tokio::test]
async fn a_store_that_decides_after_a_round_trip_calls_the_readied_service() {
    use http_body_util::BodyExt;
    use tower::{Layer, Service, ServiceExt};

    let keys = InMemoryKeyStore::new();
    let id = keys
        .insert(KEY, KeyPolicy::new().rpm(60).tpm(1000))
        .unwrap();
    let backend = tower::service_fn(|_: Request<_>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(full(
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        )))
    });
    // A concurrency limit of one panics if a service it did not ready is called.
    let inner = tower::limit::ConcurrencyLimit::new(backend, 1);
    let mut limiter = TokenRateLimitLayer::with(
        RoundTripStore(tower_maas::limit::MemoryStore::new()),
        ManualClock::new(),
    )
    .default_reservation(100)
    .layer(inner);
    for remaining in ["900", "898"] {
        let future = limiter
            .ready()
            .await
            .unwrap()
            .call(with_principal(&keys, id, "{}"));
        let response = future.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-ratelimit-remaining-tokens"],
            remaining
        );
        // Reading the body reports the usage (2 of 100) back through the store.
        response.into_body().collect().await.unwrap();
    }
    let refused = limiter
        .ready()
        .await
        .unwrap()
        .call(with_principal(&keys, id, "{}"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-ratelimit-remaining-tokens"], "996");
}

#[tokio::test]
async fn a_failing_backend_gives_the_reservation_back() {
    use tower::{Layer, ServiceExt};

    let keys = InMemoryKeyStore::new();
    let id = keys.insert(KEY, KeyPolicy::new().tpm(100)).unwrap();
    let failing = tower::service_fn(|_: Request<_>| async {
        Err::<http::Response<http_body_util::Full<bytes::Bytes>>, _>(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))
    });
    let limiter = TokenRateLimitLayer::new()
        .default_reservation(90)
        .layer(failing);
    for _ in 0..3 {
        // Each would take 90 of 100 if a failed call kept its reservation.
        let result = limiter
            .clone()
            .oneshot(with_principal(&keys, id, "{}"))
            .await;
        assert!(result.is_err());
    }
    let ok = tower::service_fn(|_: Request<_>| async {
        Ok::<_, std::io::Error>(http::Response::new(full("{}")))
    });
    let limiter = TokenRateLimitLayer::new().default_reservation(90).layer(ok);
    let response = limiter
        .oneshot(with_principal(&keys, id, "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_absurd_usage_cannot_lock_a_key_for_more_than_a_minute() {
    let gw = gateway(KeyPolicy::new().tpm(100), |l| l).await;
    // u64::MAX tokens reported: charged as at most the reservation plus one bucket.
    assert_eq!(send(gw.addr, chat(2, "json", u64::MAX)).await.status, 200);
    send(gw.addr, chat(2, "json", 1))
        .await
        .assert_json(429, E81103_100);
    gw.clock.advance(Duration::from_secs(61));
    let reply = send(gw.addr, chat(2, "json", 1)).await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.headers, reply.text());
}

/// A `UsageReport` in the request tells whoever put it there what the answer reported using,
/// once the body has gone out: for a key the limiter limits and for one it does not, from JSON,
/// both kinds of stream, a stream cut short; nothing when the answer reported no usage, when
/// the backend refused (the limiter gives the reservation back all the same), and when the
/// limiter refused.
#[tokio::test]
async fn usage_is_reported_to_whoever_asks() {
    const FREE: &str = "sk-FreeKey0000000000000000000000";
    let keys = Arc::new(InMemoryKeyStore::new());
    keys.insert(KEY, KeyPolicy::new().tpm(1000)).unwrap();
    keys.insert(FREE, KeyPolicy::new()).unwrap();
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/chat/completions", post(backend))
        .layer(TokenRateLimitLayer::with(
            tower_maas::limit::MemoryStore::new(),
            ManualClock::new(),
        ))
        .layer(RequestSchemaValidatorLayer::new().models(ModelCatalog::new().model("m", 100_000)))
        .layer(BearerAuthLayer::new(keys))
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true))
        .layer(tower::util::MapRequestLayer::new({
            let reports = Arc::clone(&reports);
            move |mut req: Request<axum::body::Body>| {
                let report = UsageReport::new();
                reports.lock().unwrap().push(report.clone());
                req.extensions_mut().insert(report);
                req
            }
        }));
    let addr = common::serve_axum(app).await;
    let reported = async |request: Request<http_body_util::Full<bytes::Bytes>>| {
        send_lossy(addr, request).await;
        let report = reports.lock().unwrap().last().unwrap().clone();
        // Written when the server's side of the body ends, which may come just after the
        // client has read it.
        for _ in 0..100 {
            if report.tokens().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        report.tokens()
    };
    for key in [KEY, FREE] {
        let chat = |mode: &str, usage: u64| {
            let mut request = chat(10, mode, usage);
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
            request
        };
        assert_eq!(reported(chat("json", 30)).await, Some(30), "{key}");
        assert_eq!(reported(chat("maas-sse", 40)).await, Some(40), "{key}");
        assert_eq!(reported(chat("openai-sse", 50)).await, Some(50), "{key}");
        assert_eq!(reported(chat("broken-sse", 20)).await, Some(20), "{key}");
        assert_eq!(reported(chat("no-usage", 0)).await, None, "{key}");
        assert_eq!(reported(chat("error", 0)).await, None, "{key}");
    }
    // Refused by the limiter (a reservation over the bucket): the model was never asked.
    assert_eq!(reported(chat(5000, "json", 30)).await, None);
}

/// A limit of 0 admits nothing, and its refusals say 0: an RPM of 0 is not taken for the
/// rate's least (one request a minute), which admitted the first request. (A TPM of 0 refuses
/// the smallest reservation a request makes here either way; that it holds not even one token
/// is `MemoryStore`'s own test.)
#[tokio::test]
async fn a_limit_of_zero_admits_nothing() {
    let gw = gateway(KeyPolicy::new().rpm(0), |l| l).await;
    let reply = send(gw.addr, chat(10, "json", 10)).await;
    reply.assert_json(
        429,
        r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 0 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 0 times per minute."}"#,
    );
    // No wait cures it: no header names a time to come back.
    assert_eq!(reply.header("retry-after"), None);
    assert_eq!(reply.header("x-ratelimit-reset-requests"), None);

    let gw = gateway(KeyPolicy::new().tpm(0), |l| l).await;
    // A small reservation: the prompt's 8 tokens and 1 to generate.
    let reply = send(gw.addr, chat(1, "json", 0)).await;
    reply.assert_json(
        400,
        r#"{"error":{"code":"ModelArts.81103","message":"Too many tokens requested: 9 tokens can never fit the rate limit of 0 tokens per minute.","param":null,"type":"BadRequest"},"error_code":"ModelArts.81103","error_msg":"Too many tokens requested: 9 tokens can never fit the rate limit of 0 tokens per minute."}"#,
    );
}
