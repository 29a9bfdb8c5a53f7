//! The Redis path of the limiter against the in-memory one, side by side, on a `redis-server`
//! this bench starts on a free port (Debian's `redis-server` must be installed). One decision is
//! one `EVALSHA` round trip over loopback; the multiplexed connection pipelines concurrent ones.
//!
//! `cargo bench --features redis --bench redis`

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tower_maas::limit::{
    Acquire, Acquired, Clock, LimitKey, MemoryStore, MonotonicClock, Outcome, Rate, RateStore,
    RedisStore,
};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install -y redis-server)");
    std::thread::sleep(Duration::from_millis(300));
    (Server(child), format!("redis://127.0.0.1:{port}/"))
}

fn ask(key: u64, now: u64) -> Acquire {
    Acquire {
        key: LimitKey(key),
        requests: Some(Rate::per_minute(1_000_000_000, 1_000_000_000)),
        tokens: Some(Rate::per_minute(1_000_000_000, 1_000_000_000)),
        reserve: 100,
        now,
        quota: None,
    }
}

async fn decide<St: RateStore>(store: &St, ask: Acquire) -> bool {
    let outcome = match store.acquire(ask) {
        Acquired::Now(outcome) => outcome,
        Acquired::Later(pending) => pending.await,
    };
    matches!(outcome, Outcome::Admitted(_))
}

fn bench(c: &mut Criterion) {
    let (_server, url) = start_redis();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = rt.block_on(async {
        let store = RedisStore::builder(url)
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert!(decide(&store, ask(1, 0)).await, "redis answers");
        store
    });
    let memory = MemoryStore::new();
    let clock = MonotonicClock::new();

    let mut group = c.benchmark_group("redis");
    group.bench_function("memory store: one RPM+TPM decision", |b| {
        b.iter(|| rt.block_on(async { black_box(decide(&memory, ask(1, clock.now())).await) }))
    });
    group.bench_function("redis store: one RPM+TPM decision (1 round trip)", |b| {
        b.iter(|| rt.block_on(async { black_box(decide(&redis, ask(1, clock.now())).await) }))
    });
    group.bench_function("redis store: 64 concurrent decisions, 64 keys", |b| {
        b.iter(|| {
            rt.block_on(async {
                // All in flight at once: the multiplexed connection pipelines them.
                let mut set = tokio::task::JoinSet::new();
                for key in 0..64 {
                    let store = redis.clone();
                    set.spawn(async move { decide(&store, ask(key, 0)).await });
                }
                let mut admitted = 0;
                while let Some(done) = set.join_next().await {
                    admitted += usize::from(done.unwrap());
                }
                black_box(admitted)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
