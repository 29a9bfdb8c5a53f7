//! RedisStore against a real `redis-server` started by the test: two replicas sharing one
//! Redis, reconciliation, quotas, TTL expiry, Redis killed and restarted, round trips counted,
//! and the layer over sockets. Without the binary the tests are skipped, except in CI (`CI`
//! set), where that fails the run.
#![cfg(feature = "redis")]

mod common;
mod gateway_app;
use gateway_app::{app, budget, idle, log, mock, proxy, serve};

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use common::{Captured, FIXED_ID, full, send};
use http::{Request, StatusCode};
use tower_maas::ErrorEnvelopeLayer;
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};
use tower_maas::limit::{
    Acquire, Acquired, Exceeded, LimitKey, MonotonicClock, OnUnavailable, Outcome, Rate, RateStore,
    Reconcile, RedisStore, TokenRateLimitLayer,
};

const SECOND: u64 = 1_000_000_000;

/// A `redis-server` on a free port, killed when dropped; stopped and started again on the same
/// port on demand.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed: CI must install it (apt-get install -y redis-server)"
            );
            eprintln!("redis-server not found: skipped");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { port, child: None };
        server.resume();
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_cmd(self, &["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command from a fresh synchronous connection, as text.
fn redis_cmd(server: &RedisServer, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(server.url())?;
    let mut conn = client.get_connection_with_timeout(Duration::from_millis(200))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn)
}

fn int(value: redis::Value) -> i64 {
    redis::from_redis_value(value).unwrap()
}

fn store(server: &RedisServer, policy: OnUnavailable) -> RedisStore {
    RedisStore::builder(server.url())
        .timeout(Duration::from_millis(200))
        .on_unavailable(policy)
        .build()
        .unwrap()
}

/// A store at `url` that waits 100 ms, not 200, for each decision: for the tests that wait out
/// timeouts.
fn impatient(url: String, policy: OnUnavailable) -> RedisStore {
    RedisStore::builder(url)
        .timeout(Duration::from_millis(100))
        .on_unavailable(policy)
        .build()
        .unwrap()
}

fn ask(key: u64, requests: Option<Rate>, tokens: Option<Rate>, reserve: u64) -> Acquire {
    Acquire {
        key: LimitKey(key),
        requests,
        tokens,
        reserve,
        now: 0,
        quota: None,
    }
}

/// A reservation of `reserved` tokens corrected by the `used` an answer reported.
fn adjusted(key: LimitKey, tokens: Rate, reserved: u64, used: u64) -> Reconcile {
    let mut settled = Reconcile::new(key, 0);
    (settled.tokens, settled.reserved, settled.used) = (Some(tokens), reserved, used);
    settled
}

/// `tokens` charged to the key's shared quota.
fn charged(key: LimitKey, tokens: u64) -> Reconcile {
    let mut settled = Reconcile::new(key, 0);
    settled.quota = Some(tokens);
    settled
}

async fn decide(store: &RedisStore, ask: Acquire) -> Outcome {
    match store.acquire(ask) {
        Acquired::Now(outcome) => outcome,
        Acquired::Later(pending) => pending.await,
    }
}

/// How many times Redis ran each command since its statistics were last reset, leaving out the
/// test's own `INFO` and `CONFIG RESETSTAT`.
fn command_calls(server: &RedisServer) -> Vec<(String, u64)> {
    let stats: String =
        redis::from_redis_value(redis_cmd(server, &["INFO", "commandstats"]).unwrap()).unwrap();
    stats
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info" && name != "config|resetstat")
        .collect()
}

/// Redis answers nothing for `seconds` (`DEBUG SLEEP`), from a thread of its own, and has
/// begun sleeping when this returns: join the thread to know Redis is back.
fn sleep_redis(server: &RedisServer, seconds: &'static str) -> std::thread::JoinHandle<()> {
    let url = server.url();
    let mut probe = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let sleeper = std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(seconds)
            .exec(&mut conn)
            .unwrap();
    });
    // A PING left unanswered for 20 ms: the server is asleep. The probe connected first, while
    // the server answered (connecting sends a command of its own, and would wait it out).
    probe
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis::cmd("PING").query::<String>(&mut probe).is_ok() {
        assert!(Instant::now() < deadline, "redis did not go to sleep");
        std::thread::sleep(Duration::from_millis(5));
    }
    sleeper
}

/// The model of the stack tests: a JSON answer that reports the `x-usage` tokens.
async fn reports_usage(headers: http::HeaderMap) -> axum::Json<serde_json::Value> {
    let used: u64 = headers["x-usage"].to_str().unwrap().parse().unwrap();
    axum::Json(serde_json::json!({
        "choices": [],
        "usage": {"prompt_tokens": used / 2, "completion_tokens": used - used / 2, "total_tokens": used},
    }))
}

/// A chat request with `key`, whose answer reports `used` tokens.
fn using(key: &str, used: u64) -> Request<http_body_util::Full<bytes::Bytes>> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("x-request-id", FIXED_ID)
        .header("x-usage", used.to_string())
        .body(full("{}"))
        .unwrap()
}

/// A TCP relay on a port of its own: each connection it takes goes on to the port `target`
/// holds at that moment, as a DNS name or a proxy in front of Redis moves at a failover.
struct Relay {
    port: u16,
    target: Arc<AtomicU16>,
}

impl Relay {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let to = Arc::clone(&target);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let port = to.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, target }
    }
}

/// This thread's `tracing` events, at `info` and above, as lines without a time, for as long
/// as the guard lives.
fn capture_log() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Polls until `done` holds (reconciliation runs in the background), at most 3 s.
async fn eventually(mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done().await {
        assert!(Instant::now() < deadline, "not within 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_admit_more_than_the_limit_together() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let replicas = [
        store(&server, OnUnavailable::FailClosed),
        store(&server, OnUnavailable::FailClosed),
    ];
    // 60 a minute with a burst of 10; tokens 1000 a minute, 100 a request: 10 at once.
    let requests = Rate::per_minute(60, 10);
    let tokens = Rate::per_minute(1000, 1000);
    for (key, requests, tokens, reserve) in
        [(1, Some(requests), None, 0), (2, None, Some(tokens), 100)]
    {
        let started = Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let replica = replicas[i % 2].clone();
                tokio::spawn(
                    async move { decide(&replica, ask(key, requests, tokens, reserve)).await },
                )
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), Outcome::Admitted(_)) {
                admitted += 1;
            }
        }
        // Beyond the burst, one more per second that passed (requests: 1/s; tokens: 16/s).
        let extra = started.elapsed().as_secs() + 1;
        assert!(
            (10..=10 + extra).contains(&admitted),
            "key {key}: {admitted} admitted"
        );
    }
}

#[tokio::test]
async fn reconciliation_refunds_and_charges_on_the_shared_state() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (
        store(&server, OnUnavailable::FailClosed),
        store(&server, OnUnavailable::FailClosed),
    );
    let tokens = Rate::per_minute(1000, 1000);
    for _ in 0..10 {
        assert!(matches!(
            decide(&a, ask(7, None, Some(tokens), 100)).await,
            Outcome::Admitted(_)
        ));
    }
    assert!(matches!(
        decide(&b, ask(7, None, Some(tokens), 100)).await,
        Outcome::Refused {
            exceeded: Exceeded::Tokens,
            ..
        }
    ));
    // One response used nothing: its 100 tokens come back, for the other replica too.
    a.reconcile(adjusted(LimitKey(7), tokens, 100, 0));
    eventually(async || {
        matches!(
            decide(&b, ask(7, None, Some(tokens), 100)).await,
            Outcome::Admitted(_)
        )
    })
    .await;

    // A response that used 900 more than it reserved is charged: the bucket is full.
    let fresh = LimitKey(8);
    assert!(matches!(
        decide(&a, ask(8, None, Some(tokens), 100)).await,
        Outcome::Admitted(_)
    ));
    b.reconcile(adjusted(fresh, tokens, 100, 1000));
    eventually(async || {
        matches!(
            decide(&a, ask(8, None, Some(tokens), 1)).await,
            Outcome::Refused { .. }
        )
    })
    .await;
    // A request slot given back is usable again.
    // One request an hour: only a slot given back can admit another within the test.
    let requests = Rate::per(1, 3600 * SECOND, 1);
    assert!(matches!(
        decide(&a, ask(9, Some(requests), None, 0)).await,
        Outcome::Admitted(_)
    ));
    assert!(matches!(
        decide(&b, ask(9, Some(requests), None, 0)).await,
        Outcome::Refused { .. }
    ));
    let mut released = Reconcile::new(LimitKey(9), 0);
    released.release = Some(requests);
    a.reconcile(released);
    eventually(async || {
        matches!(
            decide(&b, ask(9, Some(requests), None, 0)).await,
            Outcome::Admitted(_)
        )
    })
    .await;
}

#[tokio::test]
async fn the_quota_is_shared_by_replicas() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (
        store(&server, OnUnavailable::FailClosed),
        store(&server, OnUnavailable::FailClosed),
    );
    let with_quota = |quota| Acquire {
        quota: Some(quota),
        ..ask(11, Some(Rate::per_minute(6000, 100)), None, 0)
    };
    assert!(matches!(
        decide(&a, with_quota(500)).await,
        Outcome::Admitted(_)
    ));
    a.reconcile(charged(LimitKey(11), 300));
    b.reconcile(charged(LimitKey(11), 200));
    eventually(async || decide(&b, with_quota(500)).await == Outcome::QuotaExhausted).await;
    assert_eq!(decide(&a, with_quota(500)).await, Outcome::QuotaExhausted);
    // A larger quota (raised in the configuration) admits again.
    assert!(matches!(
        decide(&a, with_quota(501)).await,
        Outcome::Admitted(_)
    ));
    assert_eq!(
        int(redis_cmd(&server, &["GET", "tm:{keys:11}:quota"]).unwrap()),
        500
    );
}

#[tokio::test]
async fn idle_keys_expire_once_recovered() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = store(&server, OnUnavailable::FailClosed);
    // 10 a second, 2 at once: fully recovered 200 ms after two requests.
    let rate = Rate::per(10, SECOND, 2);
    for _ in 0..2 {
        assert!(matches!(
            decide(&a, ask(21, Some(rate), None, 0)).await,
            Outcome::Admitted(_)
        ));
    }
    let ttl = int(redis_cmd(&server, &["PTTL", "tm:{keys:21}:rate"]).unwrap());
    assert!((1000..=1300).contains(&ttl), "pttl {ttl}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        int(redis_cmd(&server, &["EXISTS", "tm:{keys:21}:rate"]).unwrap()),
        0
    );
    // Braces would break the hash tag: refused.
    assert!(
        RedisStore::builder(server.url())
            .namespace("a{b}")
            .build()
            .is_err()
    );
    // A key a namespace apart is another key.
    let b = RedisStore::builder(server.url())
        .namespace("endpoints")
        .build()
        .unwrap();
    assert!(matches!(
        decide(&b, ask(21, Some(rate), None, 0)).await,
        Outcome::Admitted(_)
    ));
    assert_eq!(
        int(redis_cmd(&server, &["EXISTS", "tm:{endpoints:21}:rate"]).unwrap()),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fails_closed_then_recovers_without_a_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = store(&server, OnUnavailable::FailClosed);
    let rate = Rate::per_minute(6000, 100);
    assert!(matches!(
        decide(&a, ask(31, Some(rate), None, 0)).await,
        Outcome::Admitted(_)
    ));
    server.kill();
    let started = Instant::now();
    assert_eq!(
        decide(&a, ask(31, Some(rate), None, 0)).await,
        Outcome::Unavailable
    );
    // Bounded by the timeout, not by reconnection attempts.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.resume();
    eventually(async || {
        matches!(
            decide(&a, ask(31, Some(rate), None, 0)).await,
            Outcome::Admitted(_)
        )
    })
    .await;
    assert_eq!(
        int(redis_cmd(&server, &["EXISTS", "tm:{keys:31}:rate"]).unwrap()),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fails_open_to_this_replicas_memory() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = store(&server, OnUnavailable::FailOpen);
    let rate = Rate::per_minute(60, 2);
    server.kill();
    // Decided in memory: the limit still holds, per replica.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(matches!(
            decide(&a, ask(41, Some(rate), None, 0)).await,
            Outcome::Admitted(_)
        ));
    }
    assert_eq!(outcomes, [true, true, false]);
    server.resume();
    eventually(async || {
        decide(&a, ask(42, Some(rate), None, 0)).await;
        int(redis_cmd(&server, &["EXISTS", "tm:{keys:42}:rate"]).unwrap()) == 1
    })
    .await;
}

/// Failing open, a key whose shared quota Redis found used up stays refused (81005) while Redis
/// is away, though this replica's memory never saw its tokens; raised in the configuration, or
/// for a key Redis never refused, the memory decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_used_up_stays_so_while_failing_open() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = store(&server, OnUnavailable::FailOpen);
    let with_quota = |key, quota| Acquire {
        quota: Some(quota),
        ..ask(key, Some(Rate::per_minute(6000, 100)), None, 0)
    };
    let by_memory = |outcome: &Outcome| matches!(outcome, Outcome::Admitted(snapshot) if snapshot.decided_by_fallback());
    // Another replica spent key 81's 500 tokens.
    redis_cmd(&server, &["SET", "tm:{keys:81}:quota", "500"]).unwrap();
    assert_eq!(
        decide(&store, with_quota(81, 500)).await,
        Outcome::QuotaExhausted
    );
    assert!(matches!(
        decide(&store, with_quota(82, 500)).await,
        Outcome::Admitted(_)
    ));
    server.kill();
    assert_eq!(
        decide(&store, with_quota(81, 500)).await,
        Outcome::QuotaExhausted
    );
    assert!(by_memory(&decide(&store, with_quota(81, 501)).await));
    assert!(by_memory(&decide(&store, with_quota(82, 500)).await));
}

/// Round trips on the allow path: one `EVALSHA` per decision, nothing else.
#[tokio::test]
async fn one_round_trip_per_decision() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = store(&server, OnUnavailable::FailClosed);
    let (requests, tokens) = (
        Some(Rate::per_minute(60_000, 1000)),
        Some(Rate::per_minute(10_000_000, 10_000_000)),
    );
    // The first call loads the script.
    decide(&a, ask(51, requests, tokens, 10)).await;
    redis_cmd(&server, &["CONFIG", "RESETSTAT"]).unwrap();
    for _ in 0..50 {
        assert!(matches!(
            decide(&a, ask(51, requests, tokens, 10)).await,
            Outcome::Admitted(_)
        ));
    }
    let calls = command_calls(&server);
    // The script's own commands (TIME, HMGET, HSET, PEXPIRE) run inside the one EVALSHA.
    let evalsha = calls.iter().find(|(n, _)| n == "evalsha").map(|c| c.1);
    assert_eq!(evalsha, Some(50), "{calls:?}");
    let outside: u64 = calls
        .iter()
        .filter(|(n, _)| !["evalsha", "time", "hmget", "hset", "pexpire"].contains(&n.as_str()))
        .map(|c| c.1)
        .sum();
    assert_eq!(outside, 0, "{calls:?}");
}

/// Workers share a store. Its connection is opened by the first decision: on that worker's
/// runtime, which alone drives it, unless the store has a runtime of its own. While that worker
/// is busy, another's decision then times out (fails closed); with the store's own runtime it
/// is decided.
#[test]
fn a_store_with_a_runtime_of_its_own_is_not_held_up_by_a_busy_worker() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let rate = Some(Rate::per_minute(60_000, 1000));
    // The gateway's own workers: one for Redis, then two for each round.
    let workers = serve::Workers::start(5).unwrap();
    let redis = workers.runtime(0);
    for (round, own_runtime) in [false, true].into_iter().enumerate() {
        let (first, other) = (
            workers.runtime(1 + 2 * round),
            workers.runtime(2 + 2 * round),
        );
        let mut builder = RedisStore::builder(server.url()).timeout(Duration::from_millis(200));
        if own_runtime {
            builder = builder.runtime(redis.clone());
        }
        let store = {
            let _entered = first.enter();
            builder.build().unwrap()
        };
        // The first decision, on the first worker, opens the connection.
        let opened = first.block_on(decide(&store, ask(61, rate, None, 0)));
        assert!(matches!(opened, Outcome::Admitted(_)), "{opened:?}");
        // The first worker is busy for a second; meanwhile the other decides.
        let (busy, busy_now) = std::sync::mpsc::channel();
        first.spawn(async move {
            busy.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        busy_now.recv().unwrap();
        let decided = other.block_on(decide(&store, ask(61, rate, None, 0)));
        if own_runtime {
            assert!(matches!(decided, Outcome::Admitted(_)), "{decided:?}");
        } else {
            assert!(matches!(decided, Outcome::Unavailable), "{decided:?}");
        }
    }
}

/// Two gateway replicas over real sockets share one key's RPM; with Redis gone the fail-closed
/// answer is APIG's 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_replicas_share_a_keys_limit_over_sockets() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    const KEY: &str = "sk-RedisReplicaKey0000000000000";
    let replica = |store: RedisStore| {
        let keys = Arc::new(InMemoryKeyStore::new());
        let mut policy = KeyPolicy::new();
        policy.rpm = Some(60);
        keys.insert(KEY, policy).unwrap();
        let app = Router::new()
            .route("/v1/chat/completions", post(|| async { "ok" }))
            .layer(TokenRateLimitLayer::with(store, MonotonicClock::new()))
            .layer(BearerAuthLayer::new(keys))
            .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
        common::serve_axum(app)
    };
    let first = replica(store(&server, OnUnavailable::FailClosed)).await;
    let second = replica(store(&server, OnUnavailable::FailClosed)).await;
    let chat = || {
        Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {KEY}"))
            .header("x-request-id", FIXED_ID)
            .body(full("{}"))
            .unwrap()
    };
    // RPM 60: a burst of 2, whichever replica serves.
    assert_eq!(send(first, chat()).await.status, StatusCode::OK);
    assert_eq!(send(second, chat()).await.status, StatusCode::OK);
    let refused = send(first, chat()).await;
    refused.assert_json(
        429,
        r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 60 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 60 times per minute."}"#,
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    server.kill();
    send(second, chat()).await.assert_json(
        500,
        &format!(r#"{{"error_msg":"Internal server error.","error_code":"APIG.0201","request_id":"{FIXED_ID}"}}"#),
    );
}

/// Two gateway replicas over real sockets share one key's token quota: each replica's own
/// `Quota` has seen only its own answers, so the 81005 comes from the count in Redis. Each
/// answer is reconciled (its reservation corrected, the quota charged) by one `EVALSHA`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_replicas_share_a_keys_quota_over_sockets() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    const KEY: &str = "sk-RedisQuotaKey000000000000000";
    const E81005: &str = r#"{"error":{"code":"ModelArts.81005","message":"The free quota has been used up.","param":null,"type":"Unauthorized"},"error_code":"ModelArts.81005","error_msg":"The free quota has been used up."}"#;
    // The same key on both, id 0 on each, so one `tm:{keys:0}:*` in Redis. TPM 10 000 (6 ms
    // a token: little refills within the test); a quota of 100 tokens. The second answers
    // the key's state with 403, as later editions do: the limiter's 81005 follows what the
    // key's authentication chose.
    let replica = |store: RedisStore, key_state: StatusCode| {
        let keys = Arc::new(InMemoryKeyStore::new());
        let id = keys
            .insert(KEY, KeyPolicy::new().tpm(10_000).quota(100))
            .unwrap();
        let app = Router::new()
            .route("/v1/chat/completions", post(reports_usage))
            .layer(TokenRateLimitLayer::with(store, MonotonicClock::new()).default_reservation(500))
            .layer(BearerAuthLayer::new(Arc::clone(&keys)).key_state_status(key_state))
            .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
        async move { (common::serve_axum(app).await, keys, id) }
    };
    let (first, first_keys, first_id) = replica(
        store(&server, OnUnavailable::FailClosed),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let (second, second_keys, second_id) = replica(
        store(&server, OnUnavailable::FailClosed),
        StatusCode::FORBIDDEN,
    )
    .await;
    let chat = |used: u64| using(KEY, used);
    let shared_use = || -> Option<i64> {
        redis::from_redis_value(redis_cmd(&server, &["GET", "tm:{keys:0}:quota"]).unwrap()).unwrap()
    };

    // 500 reserved, 60 used: the quota is charged 60, in the background after the answer.
    assert_eq!(send(first, chat(60)).await.status, StatusCode::OK);
    eventually(async || shared_use() == Some(60)).await;

    // Both scripts are loaded now: count the round trips from here.
    redis_cmd(&server, &["CONFIG", "RESETSTAT"]).unwrap();
    let reply = send(second, chat(60)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The 440 tokens the first answer did not use came back in the script that charged its
    // 60: this admission leaves 10 000 - 60 - 500 (and a little refill), not about 9 000.
    let remaining: u64 = reply
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining >= 10_000 - 60 - 500, "remaining {remaining}");
    // Under the quota (60 of 100), so admitted: a quota is checked, not reserved.
    eventually(async || shared_use() == Some(120)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One decision and one reconciliation (the refund and the charge together), nothing else
    // outside the scripts.
    let calls = command_calls(&server);
    let evalsha = calls.iter().find(|(n, _)| n == "evalsha").map(|c| c.1);
    assert_eq!(evalsha, Some(2), "{calls:?}");

    // Each replica's own quota saw 60 of 100, so BearerAuth lets the key through on both...
    for (keys, id) in [(&first_keys, first_id), (&second_keys, second_id)] {
        let principal = keys.get(id).unwrap();
        assert_eq!(principal.quota().used(), 60);
        assert!(!principal.quota().is_exhausted());
    }
    // ...and the shared count, 120 of 100, refuses it in the limiter, on either replica.
    send(first, chat(1)).await.assert_json(401, E81005);
    send(second, chat(1)).await.assert_json(
        403,
        &E81005.replace(r#""type":"Unauthorized""#, r#""type":"Forbidden""#),
    );
    // A refusal charges nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shared_use(), Some(120));
}

/// The example gateway configured with `[redis]`: two replicas on one Redis share the slow
/// key's request a minute, though they list the keys in different orders (a key's counters are
/// under its `id`, not its position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_gateway_selects_redis_from_its_configuration() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let slow = r#"
        [[keys]]
        key = "sk-gw-redis-000000000000000000"
        id = 1
        rpm = 30
        "#;
    let other = r#"
        [[keys]]
        key = "sk-gw-other-000000000000000000"
        id = 2
        rpm = 30
        "#;
    let redis = format!(
        r#"
        [redis]
        url = "{}"
        timeout_ms = 200
        on_unavailable = "closed"
        "#,
        server.url()
    );
    let replica = |keys: [&str; 2]| {
        let text = format!("trust_request_id = true\n{}{}{redis}", keys[0], keys[1]);
        let config: app::Config = toml::from_str(&text).unwrap();
        app::router(&config).unwrap()
    };
    let first = common::serve_axum_with_peer(replica([slow, other])).await;
    let second = common::serve_axum_with_peer(replica([other, slow])).await;
    let chat = || {
        let body = r#"{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}"#;
        Request::post("/v1/chat/completions")
            .header("authorization", "Bearer sk-gw-redis-000000000000000000")
            .header("content-type", "application/json")
            .header("x-request-id", FIXED_ID)
            .body(full(body))
            .unwrap()
    };
    // RPM 30: a burst of one, shared.
    assert_eq!(send(first, chat()).await.status, StatusCode::OK);
    send(second, chat()).await.assert_json(
        429,
        r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 30 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 30 times per minute."}"#,
    );
    assert_eq!(
        int(redis_cmd(&server, &["EXISTS", "tm:{keys:1}:rate"]).unwrap()),
        1
    );
    let bad = app::parse_config(&redis.replace("\"closed\"", "\"sideways\"")).unwrap_err();
    assert!(
        bad.ends_with("unknown variant `…`, expected `closed` or `open`"),
        "{bad}"
    );
}

/// The example gateway told to stop (SIGTERM) with `[redis]` while an answer is on its way and
/// Redis does not answer: it exits once that answer's reconciliation has reached Redis, not
/// before (its tokens would be lost) and not after a fixed wait of twice the timeout (40 s).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_gateway_exits_once_its_last_tokens_are_in_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A model that answers, reporting 7 tokens, when the test lets it: once Redis sleeps.
    let answer = Arc::new(tokio::sync::Notify::new());
    let slow = tower::service_fn({
        let answer = Arc::clone(&answer);
        move |_: Request<hyper::body::Incoming>| {
            let answer = Arc::clone(&answer);
            async move {
                answer.notified().await;
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(full(r#"{"choices":[],"usage":{"total_tokens":7}}"#))
                        .unwrap(),
                )
            }
        }
    });
    let upstream = common::serve_hyper(slow).await;
    let mut gateway = common::GatewayProcess::start(&format!(
        r#"
        log_requests = false
        [[keys]]
        key = "sk-gw-exit-0000000000000000000"
        id = 1
        rpm = 1000
        quota = 1000000
        [[models]]
        name = "up"
        context_length = 4096
        upstream = "http://{upstream}"
        [redis]
        url = "{}"
        timeout_ms = 20000
        "#,
        server.url()
    ))
    .await;
    let body = r#"{"model":"up","messages":[{"role":"user","content":"hi"}]}"#;
    let in_flight = tokio::spawn(send(
        gateway.addr,
        Request::post("/v1/chat/completions")
            .header("authorization", "Bearer sk-gw-exit-0000000000000000000")
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap(),
    ));
    // Admitted (the key's rate state is in Redis), then Redis stops answering for 3 s, and
    // only then the model answers: the answer's reconciliation waits for Redis.
    let admitted = || int(redis_cmd(&server, &["EXISTS", "tm:{keys:1}:rate"]).unwrap()) == 1;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !admitted() {
        assert!(Instant::now() < deadline, "not admitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sleeper = sleep_redis(&server, "3");
    gateway.terminate();
    answer.notify_one();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Its requests done, the gateway is still there, waiting for Redis.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !gateway.has_exited(),
        "exited before its tokens were in Redis"
    );
    sleeper.join().unwrap();
    // Well before twice the Redis timeout (40 s).
    let status = gateway.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert_eq!(
        int(redis_cmd(&server, &["GET", "tm:{keys:1}:quota"]).unwrap()),
        7
    );
}

/// An answer that comes after the timeout is an admission nobody uses: given back at once, so
/// a slow Redis does not drain the keys it answers for. `flushed` waits for the decision still
/// out and its give-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_admission_is_given_back() {
    use futures_util::FutureExt;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let impatient = impatient(server.url(), OnUnavailable::FailClosed);
    let patient = store(&server, OnUnavailable::FailClosed);
    // One request an hour and 1000 tokens a minute: neither refills within the test.
    let (rate, tokens) = (Rate::per(1, 3600 * SECOND, 1), Rate::per_minute(1000, 1000));
    // Load the script while Redis is quick.
    decide(&impatient, ask(61, Some(rate), None, 0)).await;
    // Redis stops answering for a second: the decision times out, then runs, and admits.
    let sleeper = sleep_redis(&server, "1");
    assert_eq!(
        decide(&impatient, ask(62, Some(rate), Some(tokens), 400)).await,
        Outcome::Unavailable
    );
    assert_eq!(impatient.flushed().now_or_never(), None);
    tokio::time::timeout(Duration::from_secs(10), impatient.flushed())
        .await
        .expect("flushed once Redis answers");
    sleeper.join().unwrap();
    // The slot and the 400 tokens came back: the whole burst and the whole bucket are there,
    // with no waiting for it.
    assert!(matches!(
        decide(&patient, ask(62, Some(rate), Some(tokens), 1000)).await,
        Outcome::Admitted(_)
    ));
}

/// Failing open, each admission's rate state is reconciled where it was decided. One decided
/// by Redis is not charged to this replica's memory, and one decided in memory while Redis was
/// slow is not refunded to Redis, which never held it. The tokens used go to the key's shared
/// quota in Redis either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_reconciles_each_admission_where_it_was_decided() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    const CHARGED: &str = "sk-RedisFailOpenCharged00000000";
    const REFUNDED: &str = "sk-RedisFailOpenRefunded0000000";
    const E81103: &str = r#"{"error":{"code":"ModelArts.81103","message":"Too many requests. exceeded rate limit is 1000 tokens per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81103","error_msg":"Too many requests. exceeded rate limit is 1000 tokens per minute."}"#;
    // TPM 1000 (60 ms a token: about 17 come back a second), 600 reserved a request: two
    // reservations never fit together.
    // Ids 0 and 1; the first has a quota (never reached here), kept in Redis.
    let keys = Arc::new(InMemoryKeyStore::new());
    keys.insert(CHARGED, KeyPolicy::new().tpm(1000).quota(1_000_000))
        .unwrap();
    keys.insert(REFUNDED, KeyPolicy::new().tpm(1000)).unwrap();
    let shared_use = || -> Option<i64> {
        redis::from_redis_value(redis_cmd(&server, &["GET", "tm:{keys:0}:quota"]).unwrap()).unwrap()
    };
    let store = impatient(server.url(), OnUnavailable::FailOpen);
    let app = Router::new()
        .route("/v1/chat/completions", post(reports_usage))
        .layer(TokenRateLimitLayer::with(store, MonotonicClock::new()).default_reservation(600))
        .layer(BearerAuthLayer::new(keys))
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
    let gateway = common::serve_axum(app).await;
    let status = async |key: &str, used: u64| send(gateway, using(key, used)).await.status;

    // Decided by Redis: one key uses 1100 (charged 500 more than its 600), the other its 600.
    assert_eq!(status(CHARGED, 1100).await, StatusCode::OK);
    assert_eq!(status(REFUNDED, 600).await, StatusCode::OK);
    eventually(async || shared_use() == Some(1100)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Redis stops answering for 600 ms: both keys are decided in this replica's memory.
    let sleeper = sleep_redis(&server, "0.6");
    // The memory was never charged for the first key's 1100: its 600 fit.
    assert_eq!(status(CHARGED, 600).await, StatusCode::OK);
    // This one uses nothing: its 600 go back to the memory that held them.
    assert_eq!(status(REFUNDED, 0).await, StatusCode::OK);
    sleeper.join().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Redis still holds the second key's first 600: another 600 do not fit.
    send(gateway, using(REFUNDED, 600))
        .await
        .assert_json(429, E81103);
    // The 600 the memory admitted were charged to the shared quota.
    eventually(async || shared_use() == Some(1700)).await;
}

/// `flushed` is ready at once with nothing being written, waits while a reconciliation is held
/// up by a Redis that does not answer, and returns once it has landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_waits_for_the_writes_in_flight() {
    use futures_util::FutureExt;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::builder(server.url())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Both scripts loaded while Redis is quick.
    decide(&store, ask(81, Some(Rate::per_minute(10, 10)), None, 0)).await;
    store.reconcile(charged(LimitKey(81), 1));
    tokio::time::timeout(Duration::from_secs(5), store.flushed())
        .await
        .unwrap();
    assert_eq!(store.flushed().now_or_never(), Some(()));
    let sleeper = sleep_redis(&server, "2");
    store.reconcile(charged(LimitKey(81), 10));
    assert_eq!(store.flushed().now_or_never(), None);
    tokio::time::timeout(Duration::from_secs(5), store.flushed())
        .await
        .expect("flushed once Redis answers");
    // No waiting for it: the write has landed.
    assert_eq!(
        int(redis_cmd(&server, &["GET", "tm:{keys:81}:quota"]).unwrap()),
        11
    );
    assert_eq!(store.flushed().now_or_never(), Some(()));
    sleeper.join().unwrap();
}

/// A reconciliation is off the request's path: a Redis that stalls for longer than a
/// decision's timeout (50 ms by default), having forgotten its scripts, still takes it once it
/// answers, and the shared quota's charge is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_outlasts_a_stall_longer_than_the_decision_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::builder(server.url()).build().unwrap();
    // Both scripts loaded while Redis is quick.
    decide(&store, ask(82, Some(Rate::per_minute(10, 10)), None, 0)).await;
    store.reconcile(charged(LimitKey(82), 1));
    tokio::time::timeout(Duration::from_secs(5), store.flushed())
        .await
        .unwrap();
    // Its scripts forgotten (a restart, a failover), the call takes three round trips:
    // NOSCRIPT, SCRIPT LOAD, EVALSHA, the first of them answered only after the stall.
    redis_cmd(&server, &["SCRIPT", "FLUSH"]).unwrap();
    let sleeper = sleep_redis(&server, "0.3");
    store.reconcile(charged(LimitKey(82), 10));
    tokio::time::timeout(Duration::from_secs(5), store.flushed())
        .await
        .expect("flushed once Redis answers");
    sleeper.join().unwrap();
    assert_eq!(
        int(redis_cmd(&server, &["GET", "tm:{keys:82}:quota"]).unwrap()),
        11
    );
}

/// A failover: the primary becomes a replica of another server, and the address the store
/// dials now leads to that new primary. The old one keeps its clients and answers every write
/// `READONLY`, which redis-rs does not reconnect on: the store connects anew, at once, rather
/// than failing every decision until it is restarted, and says so in one `warn` line.
#[tokio::test]
async fn a_failover_is_followed_to_the_new_primary() {
    let (Some(old), Some(new)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    // A current-thread runtime: the store's tasks run on this thread, under this subscriber.
    let (captured, _guard) = capture_log();
    let relay = Relay::start(old.port).await;
    let store = RedisStore::builder(format!("redis://127.0.0.1:{}/", relay.port))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let rate = Rate::per_minute(6000, 100);
    assert!(matches!(
        decide(&store, ask(41, Some(rate), None, 0)).await,
        Outcome::Admitted(_)
    ));

    redis_cmd(&old, &["REPLICAOF", "127.0.0.1", &new.port.to_string()]).unwrap();
    relay.target.store(new.port, Ordering::SeqCst);
    // Ten decisions in flight on the old connection meet READONLY: refused (failing closed),
    // and the connection replaced once. They are no outage: the store does not pause.
    let in_flight = (0..10).map(|_| decide(&store, ask(41, Some(rate), None, 0)));
    for outcome in futures_util::future::join_all(in_flight).await {
        assert_eq!(outcome, Outcome::Unavailable);
    }
    let Acquired::Later(next) = store.acquire(ask(41, Some(rate), None, 0)) else {
        panic!("a failover paused the asking");
    };
    assert!(matches!(next.await, Outcome::Admitted(_)));
    assert_eq!(
        int(redis_cmd(&new, &["EXISTS", "tm:{keys:41}:rate"]).unwrap()),
        1
    );

    let text = captured.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with(
            " WARN tower_maas: RedisStore: a decision failed: READONLY You can't write against a read only replica."
        ) && lines[0].ends_with("; the server is not a primary: connecting again unlogged=0"),
        "{text}"
    );
}

/// Redis unreachable: every decision fails closed, and the log says so at most once a second,
/// never once a request. After five failures in a row the decisions stop asking Redis for a
/// second: they are decided at once (`Acquired::Now`), without a call or a wait.
#[tokio::test]
async fn an_outage_pauses_the_asking_and_is_logged_once_a_second() {
    let (captured, _guard) = capture_log();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = impatient(
        format!("redis://127.0.0.1:{port}/"),
        OnUnavailable::FailClosed,
    );
    let rate = Rate::per_minute(6000, 100);
    for _ in 0..5 {
        let Acquired::Later(pending) = store.acquire(ask(51, Some(rate), None, 0)) else {
            panic!("a decision before five failures skipped Redis");
        };
        assert_eq!(pending.await, Outcome::Unavailable);
    }
    for _ in 0..20 {
        assert!(matches!(
            store.acquire(ask(51, Some(rate), None, 0)),
            Acquired::Now(Outcome::Unavailable)
        ));
    }
    const PAUSING: &str = " WARN tower_maas: RedisStore: 5 decisions in a row failed: the next \
                           ones skip Redis for 1s (the store's policy decides them), then one \
                           tries it again";
    // The failures' lines: one a second, counting those left out (a failure's own line may
    // come late, after the pause's).
    let failures = |text: &str| -> Vec<u64> {
        text.lines()
            .filter(|line| line.starts_with(" WARN tower_maas: RedisStore: a decision "))
            .map(|line| {
                line.rsplit_once(" unlogged=")
                    .and_then(|(_, n)| n.parse().ok())
                    .unwrap_or_else(|| panic!("{line}"))
            })
            .collect()
    };
    let pauses = |text: &str| text.lines().filter(|line| *line == PAUSING).count();
    let text = captured.text();
    assert_eq!(
        text.lines().next(),
        text.lines().find(|l| l.contains("a decision ")),
        "{text}"
    );
    assert_eq!(failures(&text)[0], 0, "{text}");
    assert_eq!(pauses(&text), 1, "{text}");
    assert_eq!(
        text.lines().count(),
        failures(&text).len() + pauses(&text),
        "{text}"
    );

    // The pause over, one decision at a time tries Redis. One whose request is gone lets the
    // next try at once; that one fails, and pauses the asking again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let Acquired::Later(abandoned) = store.acquire(ask(51, Some(rate), None, 0)) else {
        panic!("no decision tried Redis after the pause");
    };
    assert!(matches!(
        store.acquire(ask(51, Some(rate), None, 0)),
        Acquired::Now(Outcome::Unavailable)
    ));
    drop(abandoned);
    let Acquired::Later(trial) = store.acquire(ask(51, Some(rate), None, 0)) else {
        panic!("a trial whose request was gone held the others back");
    };
    assert!(matches!(
        store.acquire(ask(51, Some(rate), None, 0)),
        Acquired::Now(Outcome::Unavailable)
    ));
    assert_eq!(trial.await, Outcome::Unavailable);
    let text = captured.text();
    assert_eq!(pauses(&text), 2, "{text}");
    // Six decisions failed (some twice: a timeout, then the connection's error): one line a
    // second, each counting the failures it left out.
    let lines = failures(&text);
    assert!((2..=3).contains(&lines.len()), "{text}");
    assert!(lines.iter().map(|n| n + 1).sum::<u64>() >= 6, "{text}");
}

/// Redis stalled, failing open: after five decisions time out, the next ones are decided in
/// this replica's memory at once; once Redis answers again, one decision finds it back and
/// decisions ask Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_skipped_then_asked_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = impatient(server.url(), OnUnavailable::FailOpen);
    let rate = Rate::per_minute(6000, 100);
    let by_redis = |outcome: &Outcome| matches!(outcome, Outcome::Admitted(snapshot) if !snapshot.decided_by_fallback());
    assert!(by_redis(
        &decide(&store, ask(61, Some(rate), None, 0)).await
    ));

    let sleeper = sleep_redis(&server, "2");
    for _ in 0..5 {
        let outcome = decide(&store, ask(61, Some(rate), None, 0)).await;
        assert!(
            matches!(&outcome, Outcome::Admitted(s) if s.decided_by_fallback()),
            "{outcome:?}"
        );
    }
    let Acquired::Now(Outcome::Admitted(snapshot)) = store.acquire(ask(61, Some(rate), None, 0))
    else {
        panic!("five timeouts in a row did not pause the asking");
    };
    assert!(snapshot.decided_by_fallback());

    sleeper.join().unwrap();
    eventually(async || by_redis(&decide(&store, ask(61, Some(rate), None, 0)).await)).await;
    // Every decision asks Redis again, not one trial at a time.
    let (Acquired::Later(one), Acquired::Later(other)) = (
        store.acquire(ask(61, Some(rate), None, 0)),
        store.acquire(ask(61, Some(rate), None, 0)),
    ) else {
        panic!("decisions still skip Redis");
    };
    assert!(by_redis(&one.await) && by_redis(&other.await));
}

/// A value under one key that is not the store's (another program's, say) fails that key's
/// decisions with a script error, logged; Redis answered them, so the store does not pause its
/// asking for every other key.
#[tokio::test]
async fn a_broken_key_fails_alone() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server, OnUnavailable::FailClosed);
    let rate = Rate::per_minute(6000, 100);
    redis_cmd(&server, &["HSET", "tm:{keys:71}:rate", "r", "not a number"]).unwrap();
    for _ in 0..10 {
        assert_eq!(
            decide(&store, ask(71, Some(rate), None, 0)).await,
            Outcome::Unavailable
        );
    }
    let Acquired::Later(other) = store.acquire(ask(72, Some(rate), None, 0)) else {
        panic!("one key's error paused the asking for every key");
    };
    assert!(matches!(other.await, Outcome::Admitted(_)));
}
