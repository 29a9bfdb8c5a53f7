//! The example gateway's whole router in process, against the bare mock's router, on the load
//! test's request (`tools/load/chat.lua`): what the gateway costs per request above the
//! socket, hyper and the kernel, which the load test measures together.
//!
//! ```sh
//! cargo bench --bench gateway
//! # deterministic counts (bare, quiet: no log line, gateway), each less its 0-iteration run:
//! BIN=$(cargo bench --bench gateway --no-run 2>&1 | sed -n 's/.*Executable benches\/gateway.rs (\(.*\))/\1/p')
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $BIN count gateway 20000 2>&1 | grep refs
//! # two threads serving at once, through one gateway or through a gateway each (time a request):
//! $BIN contend shared 200000; $BIN contend separate 200000
//! ```

#[path = "../tests/gateway_app/mod.rs"]
mod gateway_app;
use gateway_app::{app, budget, idle, log, log_format, log_writer, mock, proxy};
// Only `run` of it: the bare service is the bare mock's router here.
#[allow(dead_code)]
#[path = "common/service.rs"]
mod service;
use service::run;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::{Criterion, criterion_group};
use http::Request;
use http_body::Body as _;

/// As the example binary has: the allocator is a good part of what a request costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The load test's request (`tools/load/chat.lua`), read from the script so that the bench and
/// the load test send the same.
const CHAT_LUA: &str = include_str!("../tools/load/chat.lua");

static AUTHORIZATION: LazyLock<&str> =
    LazyLock::new(|| lua(r#"wrk.headers["Authorization"]"#, '"'));
static CHAT: LazyLock<&str> = LazyLock::new(|| lua("wrk.body", '\''));

/// The value of the script's line `wrk.<name> = <quote>…<quote>`.
fn lua(name: &str, quote: char) -> &'static str {
    CHAT_LUA
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(" = ")?
                .strip_prefix(quote)?
                .strip_suffix(quote)
        })
        .unwrap_or_else(|| panic!("tools/load/chat.lua: no {name}"))
}

fn bare() -> Router {
    mock::bare_router(mock::Work::default())
}

fn gateway(log_requests: bool) -> app::Gateway {
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/load/gateway.toml"
    ))
    .expect("tools/load/gateway.toml");
    let mut config: app::Config = toml::from_str(&config).expect("the load test's config");
    config.log_requests = log_requests;
    app::router(&config).expect("the load test's config builds")
}

fn request() -> Request<Body> {
    let mut request = Request::post("/v1/chat/completions")
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .header("authorization", *AUTHORIZATION)
        .body(Body::from(*CHAT))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    request
}

/// Calls the router and reads the whole answer, as hyper would: the limiter settles and the
/// content filter checks the answer while it is read. Everything completes without waiting.
fn serve<S>(router: &mut S) -> usize
where
    S: tower::Service<Request<Body>, Response = axum::response::Response, Error = Infallible>,
{
    let response = run(router, request());
    assert_eq!(response.status(), 200);
    let mut cx = Context::from_waker(Waker::noop());
    let mut body = pin!(response.into_body());
    let mut read = 0;
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        read += frame
            .unwrap()
            .into_data()
            .map_or(0, |data| bytes::Buf::remaining(&data));
    }
    read
}

/// The binary's log (its line format, its batching writer) into a sink, for as long as the
/// two guards live.
fn log_to_sink() -> (log_writer::FlushOnDrop, tracing::subscriber::DefaultGuard) {
    let (subscriber, flush) = log_format::subscriber(std::io::sink(), false);
    (flush, tracing::subscriber::set_default(subscriber))
}

fn routers(c: &mut Criterion) {
    let _log = log_to_sink();
    let mut group = c.benchmark_group("gateway router, load-test chat");
    let mut bare = bare();
    group.bench_function("bare mock", |b| b.iter(|| serve(&mut bare)));
    let mut quiet = gateway(false);
    group.bench_function("gateway, no log line", |b| b.iter(|| serve(&mut quiet)));
    let mut logged = gateway(true);
    group.bench_function("gateway", |b| b.iter(|| serve(&mut logged)));
    group.finish();
}

criterion_group!(benches, routers);

/// `n` requests, after one that is in the 0-iteration run too: what is set up lazily on the
/// first request (the clock's calibration) is subtracted with the start-up.
fn serve_n<S>(mut router: S, n: usize)
where
    S: tower::Service<Request<Body>, Response = axum::response::Response, Error = Infallible>,
{
    serve(&mut router);
    for _ in 0..n {
        std::hint::black_box(serve(&mut router));
    }
}

/// Two threads serving `n` requests each, through clones of one gateway (`shared`: one key
/// store, one limiter, the same `Arc`s) or through a gateway each: what the state the cores
/// share costs a request, the bare mock's router having none.
fn contend(shared: bool, n: usize) {
    let one = gateway(false);
    let other = if shared { one.clone() } else { gateway(false) };
    let how = if shared {
        "one gateway"
    } else {
        "a gateway each"
    };
    two_threads(n, [one, other], || (), how);
}

/// Two threads serving `n` requests each through one gateway with its log line on, into one
/// log writer (`shared`, as the server's workers do) or a writer each: what the log's shared
/// writer costs a request.
fn contend_log(shared: bool, n: usize) {
    // Only the writers a mode uses are started: each is a thread of its own.
    let one = shared.then(|| log_format::subscriber(std::io::sink(), false));
    let one = one.map(|(subscriber, flush)| (tracing::Dispatch::new(subscriber), flush));
    let router = gateway(true);
    let log = || {
        let (dispatch, flush) = match &one {
            Some((dispatch, _)) => (dispatch.clone(), None),
            None => {
                let (own, flush) = log_format::subscriber(std::io::sink(), false);
                (tracing::Dispatch::new(own), Some(flush))
            }
        };
        (tracing::dispatcher::set_default(&dispatch), flush)
    };
    let how = if shared {
        "one gateway, one log writer"
    } else {
        "one gateway, a log writer each"
    };
    two_threads(n, [router.clone(), router], log, how);
}

/// Serves `n` requests on each of two threads at once, each with its router and what `setup`
/// gives it, and prints the time a request took.
fn two_threads<S, G>(n: usize, routers: [S; 2], setup: impl Fn() -> G + Sync, how: &str)
where
    S: tower::Service<Request<Body>, Response = axum::response::Response, Error = Infallible>
        + Send,
{
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for mut router in routers {
            let setup = &setup;
            scope.spawn(move || {
                let _kept = setup();
                serve(&mut router);
                for _ in 0..n {
                    std::hint::black_box(serve(&mut router));
                }
            });
        }
    });
    let each = start.elapsed().as_nanos() / n as u128;
    println!("two threads, {how}: {each} ns a request on each");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, contending, how, n, ..] = args.as_slice() {
        if contending == "contend" {
            let n = n.parse().unwrap_or(100_000);
            match how.as_str() {
                "log-shared" => contend_log(true, n),
                "log-separate" => contend_log(false, n),
                "shared" => contend(true, n),
                "separate" => contend(false, n),
                how => eprintln!("contend: {how}? shared, separate, log-shared or log-separate"),
            }
            return;
        }
    }
    if let [_, count, variant, n, ..] = args.as_slice() {
        if count == "count" {
            let n: usize = n.parse().unwrap_or(0);
            let _log = log_to_sink();
            match variant.as_str() {
                "bare" => serve_n(bare(), n),
                "quiet" => serve_n(gateway(false), n),
                _ => serve_n(gateway(true), n),
            }
            return;
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
