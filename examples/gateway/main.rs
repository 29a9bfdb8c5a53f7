//! A MaaS-compatible gateway in front of a builtin mock model or a real OpenAI-compatible
//! server (vLLM, SGLang, llama.cpp, Ollama), configured by `gateway.toml`.
//!
//! ```sh
//! cargo run --release --example gateway                      # 127.0.0.1:8080, builtin mock
//! cargo run --release --example gateway -- --listen 0.0.0.0:9000
//! cargo run --release --example gateway -- --config examples/gateway/gateway.toml
//! ```
//!
//! The stack, outermost first: `ErrorEnvelope` (request ids, APIG.0101/405/504 mapping, HEAD)
//! → the request log → `IpRateLimit` (APIG.0308) → `BearerAuth` (81002–81006) → `RequestSchemaValidator`
//! (vLLM/pydantic 400s, 81001, 81009, context length) → `TokenRateLimit` (81101, 81103, usage
//! reconciliation, quota) → `ContentRiskFilter` (81011; try "forbidden demo phrase") → the
//! routes.

mod app;
mod budget;
mod fds;
mod idle;
mod log;
mod log_format;
mod log_writer;
mod mock;
mod proxy;
mod serve;

/// The gateway allocates per request (bodies, headers, parsed JSON); mimalloc's thread-local
/// free lists halve what glibc's allocator costs here (measured with `perf`: malloc and free
/// were a fifth of the gateway's CPU under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use tower::util::Either;
use tracing_subscriber::util::SubscriberInitExt;

use app::{
    Config, DEMO_KEY, DEMO_MANAGEMENT_TOKEN, DEMO_PROJECT, FROZEN_KEY, RuntimeKind, SLOW_KEY,
};
use mock::MOCK_MODEL;
use serve::Workers;

fn main() {
    // Log lines are written in batches by a thread of their own (`log_writer.rs`), so no
    // request waits for a `write` to stdout, and a busy gateway wakes that thread once per
    // batch rather than once per line. Colours only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (subscriber, flush_on_exit) = log_format::subscriber(std::io::stdout(), ansi);
    subscriber.init();
    let Args {
        listen,
        config: config_file,
        bare,
    } = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let config = match &config_file {
        None => Config::default(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| app::parse_config(&text))
        {
            Ok(config) => config,
            Err(err) => {
                eprintln!("{path}: {err}");
                std::process::exit(2);
            }
        },
    };
    let threads = match config.worker_threads() {
        Ok(threads) => threads,
        Err(err) => {
            eprintln!("configuration: {err}");
            std::process::exit(2);
        }
    };
    let (runtime, workers) = match start(config.runtime, threads) {
        Ok(started) => started,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            std::process::exit(1);
        }
    };
    let ran = runtime.block_on(run(
        config,
        listen,
        config_file.is_some(),
        bare,
        workers.clone(),
    ));
    // The accepting runtime first: a worker's task still waiting on a Redis call it drives
    // then ends at once rather than at its timeout.
    drop(runtime);
    drop(workers);
    if let Err((code, message)) = ran {
        eprintln!("{message}");
        // `exit` runs no destructors: the log's last lines are written first.
        drop(flush_on_exit);
        std::process::exit(code);
    }
}

/// The runtime that accepts connections, and the workers that serve them when each has a
/// runtime of its own (`threads` of them); with `Shared`, one runtime of `threads` threads
/// does both.
fn start(
    kind: RuntimeKind,
    threads: usize,
) -> std::io::Result<(tokio::runtime::Runtime, Option<Arc<Workers>>)> {
    Ok(match kind {
        // This runtime then only accepts: one thread is enough.
        RuntimeKind::PerCore => (
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            Some(Arc::new(Workers::start(threads)?)),
        ),
        RuntimeKind::Shared => (
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?,
            None,
        ),
    })
}

/// Builds the app, serves it until SIGINT or SIGTERM, and waits for the stores' last writes.
/// What keeps it from serving is an exit code and a message.
async fn run(
    config: Config,
    listen: Option<SocketAddr>,
    configured: bool,
    bare: Option<f64>,
    workers: Option<Arc<Workers>>,
) -> Result<(), (i32, String)> {
    let listen = listen.unwrap_or(config.listen);
    let (app, stores) = match bare {
        // Timed before the server starts, while it has nothing else to do.
        Some(micros) => {
            let work = mock::Work::calibrated(micros);
            if work.rounds() > 0 {
                println!("bare mock: {} rounds of work per request", work.rounds());
            }
            (
                Either::Right(mock::bare_router(work)),
                app::Stores::default(),
            )
        }
        None => {
            let (app, stores) =
                app::gateway(&config).map_err(|err| (2, format!("configuration: {err}")))?;
            (Either::Left(app), stores)
        }
    };
    // The builtin mock takes no descriptor of its own.
    let proxied = bare.is_none() && config.models.iter().any(|m| m.upstream != "builtin");
    open_files(config.max_connections, proxied);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| (1, format!("cannot listen on {listen}: {err}")))?;
    // The port the system chose, for `--listen 127.0.0.1:0`.
    let listen = listener.local_addr().unwrap_or(listen);
    println!("tower-maas gateway listening on http://{listen}");
    if !configured && bare.is_none() {
        println!("demo API key: {DEMO_KEY}");
        println!("  (2 requests/minute: {SLOW_KEY}; frozen: {FROZEN_KEY})");
        println!(
            "try: curl -s http://{listen}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \
             -H 'Content-Type: application/json' \
             -d '{{\"model\":\"{MOCK_MODEL}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
        );
        println!(
            "management token (custom endpoints, project {DEMO_PROJECT}): {DEMO_MANAGEMENT_TOKEN}"
        );
        println!(
            "  create one: curl -s http://{listen}/v1/{DEMO_PROJECT}/maas/services/custom-endpoint/endpoint \
             -H 'X-Auth-Token: {DEMO_MANAGEMENT_TOKEN}' -H 'Content-Type: application/json' \
             -d '{{\"endpoint_name\":\"my-endpoint\",\"infer_service_id\":\"{MOCK_MODEL}\",\"rpm\":10}}'"
        );
        println!("  then call it with \"model\":\"my-endpoint\"");
    }
    let bounds = serve::Bounds {
        client: std::time::Duration::from_millis(config.client_timeout_ms),
        grace: std::time::Duration::from_millis(config.shutdown_grace_ms),
        connections: config.max_connections,
        buffered: config.max_buffered_bytes,
    };
    if let Some(workers) = &workers {
        println!(
            "serving on {} worker threads, one runtime each",
            workers.len()
        );
    }
    serve::serve(listener, app, bounds, workers, shutdown()).await;
    if let Some(redis) = &config.redis {
        // Every answer has been dropped (`serve` waits for HTTP/2 streams' tasks too), so its
        // reconciliation is on its way to Redis, bounded by this timeout: they get until they
        // land, at most twice that, rather than being dropped with the runtime. Nothing being
        // written, the exit is at once.
        let wait = std::time::Duration::from_millis(redis.timeout_ms.saturating_mul(2));
        let _ = tokio::time::timeout(wait, stores.flushed()).await;
    }
    Ok(())
}

/// Raises the open-file limit to fit `connections` (see `fds.rs`), and says what it did, or
/// that it could not.
fn open_files(connections: usize, proxied: bool) {
    let needed = fds::needed(connections, proxied);
    match fds::raise(needed) {
        Ok(limits) if !limits.fits(needed) => tracing::warn!(
            "open files: the limit is {} (the hard limit), below the {needed} that \
             max_connections = {connections} takes at least: connections past it wait \
             unaccepted; raise the hard limit (ulimit -Hn, systemd's LimitNOFILE) or lower \
             max_connections",
            limits.now.unwrap_or(u64::MAX)
        ),
        Ok(limits) if limits.now != limits.was => tracing::info!(
            "open files: soft limit raised from {} to {}",
            limits.was.unwrap_or(u64::MAX),
            limits.now.unwrap_or(u64::MAX)
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(
            "open files: cannot raise the soft limit to the hard one ({err}); max_connections = \
             {connections} takes at least {needed}"
        ),
    }
}

/// SIGINT or SIGTERM: stop accepting, let requests in flight finish. A signal whose handler
/// could not be set up never comes (rather than stopping the server as it starts).
async fn shutdown() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(
                "SIGINT cannot be handled ({error}): it will not stop the server gracefully"
            );
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                tracing::warn!(
                    "SIGTERM cannot be handled ({error}): it will not stop the server gracefully"
                );
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
}

/// The command line.
#[derive(Debug, Default)]
struct Args {
    listen: Option<SocketAddr>,
    config: Option<String>,
    /// The bare mock instead of the gateway, with this much work per request.
    bare: Option<f64>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    const USAGE: &str = "usage: gateway [--listen ADDR] [--config FILE] [--bare | --bare-work MICROS]   (default 127.0.0.1:8080, demo config; --bare: the mock without layers, for load tests; --bare-work: the bare mock, spending about MICROS of CPU on each request)";
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or(USAGE)?;
                parsed.listen = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--listen: not an address: {value}\n{USAGE}"))?,
                );
            }
            "--config" => parsed.config = Some(args.next().ok_or(USAGE)?),
            "--bare" => parsed.bare = Some(0.0),
            "--bare-work" => {
                let value = args.next().ok_or(USAGE)?;
                parsed.bare = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|micros: &f64| (0.0..=mock::Work::MAX_MICROS).contains(micros))
                        .ok_or_else(|| {
                            format!("--bare-work: not a number of µs from 0 to 1000000: {value}\n{USAGE}")
                        })?,
                );
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument: {other}\n{USAGE}")),
        }
    }
    Ok(parsed)
}
