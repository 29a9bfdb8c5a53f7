//! [`RedisStore`]: limits shared by every gateway replica, decided by one Lua script per
//! request on Redis's clock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{RedisResult, Script};
use tokio::sync::Notify;

use super::clock::Nanos;
use super::gcra::Rate;
use super::redis_breaker::{Ask, Breaker};
use super::redis_link::{Call, Fault, Handed, Link};
use super::redis_used_up::UsedUp;
use super::store::{
    Acquire, Acquired, Exceeded, LimitKey, MemoryStore, Outcome, RateStore, Reconcile, Snapshot,
};

/// Decides requests, tokens and the quota of one key together. Times are microseconds since
/// 2020-01-01 UTC as Lua doubles (a step of 1/32 µs today, about 0.5 µs in a century: an
/// interval a unit must be well above that, as any rate of under some billions a minute is),
/// from Redis's `TIME`,
/// so replicas with skewed clocks still share one timeline. Nothing is written on a refusal.
/// Returns `{outcome, now, wait, requests TAT, tokens TAT}`, times in nanoseconds: outcome 0
/// admitted, 1 requests refused, 2 tokens refused, 3 quota used up.
const ACQUIRE_LUA: &str = r"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1577836800) * 1000000 + tonumber(t[2])
local rpu, rcap = tonumber(ARGV[1]) / 1000, tonumber(ARGV[2]) / 1000
local tpu, tcap = tonumber(ARGV[3]) / 1000, tonumber(ARGV[4]) / 1000
local reserve, quota = tonumber(ARGV[5]), tonumber(ARGV[6])
if quota >= 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= quota then return {3, now * 1000, 0, 0, 0} end
end
local state = redis.call('HMGET', KEYS[1], 'r', 't')
local r, tk = tonumber(state[1] or '0'), tonumber(state[2] or '0')
local nr, nt = r, tk
if rpu > 0 then
  nr = math.max(r, now) + rpu
  if nr - now > rcap then return {1, now * 1000, (nr - now - rcap) * 1000, r * 1000, tk * 1000} end
end
if tpu > 0 then
  nt = math.max(tk, now) + tpu * reserve
  if nt - now > tcap then return {2, now * 1000, (nt - now - tcap) * 1000, r * 1000, tk * 1000} end
end
redis.call('HSET', KEYS[1], 'r', string.format('%.4f', nr), 't', string.format('%.4f', nt))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(nr, nt) - now) / 1000) + 1000)
return {0, now * 1000, 0, nr * 1000, nt * 1000}
";

/// Reconciles one request after its response, all in one call: gives a request slot back
/// (`ARGV[1]`, the requests' emission interval, 0 for none), charges or refunds `ARGV[3]`
/// tokens (`ARGV[2]`, their interval, 0 for none; a refund never goes below now) and adds
/// `ARGV[4]` to the quota's use (0 for none).
const SETTLE_LUA: &str = r"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1577836800) * 1000000 + tonumber(t[2])
local rpu, tpu = tonumber(ARGV[1]) / 1000, tonumber(ARGV[2]) / 1000
local delta, spent = tonumber(ARGV[3]), tonumber(ARGV[4])
if rpu > 0 or (tpu > 0 and delta ~= 0) then
  local state = redis.call('HMGET', KEYS[1], 'r', 't')
  local r, tk = tonumber(state[1] or '0'), tonumber(state[2] or '0')
  if rpu > 0 and r > now then r = math.max(r - rpu, now) end
  if tpu > 0 and delta > 0 then tk = math.max(tk, now) + tpu * delta end
  if tpu > 0 and delta < 0 and tk > now then tk = math.max(tk + tpu * delta, now) end
  local horizon = math.max(r, tk) - now
  if horizon > 0 then
    redis.call('HSET', KEYS[1], 'r', string.format('%.4f', r), 't', string.format('%.4f', tk))
    redis.call('PEXPIRE', KEYS[1], math.ceil(horizon / 1000) + 1000)
  else
    redis.call('DEL', KEYS[1])
  end
end
if spent > 0 then redis.call('INCRBY', KEYS[2], spent) end
return 0
";

/// How long a decision's answer is waited for in the background after the decision itself
/// gave up (at least; ten times the timeout when that is longer).
const LATE_ANSWERS: Duration = Duration::from_secs(2);

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_LUA));

/// What a [`RedisStore`] does when Redis does not answer within its timeout.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_maas::limit::{OnUnavailable, RedisStore};
///
/// // Each replica decides alone, in memory, while Redis is away.
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .on_unavailable(OnUnavailable::FailOpen)
///     .build()
///     .unwrap();
/// # let _ = store;
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnUnavailable {
    /// Refuse the request: 500 APIG.0201 `Internal server error.` (the cause is not shown).
    /// No replica admits more than the limit, at the price of an outage while Redis is down.
    #[default]
    FailClosed,
    /// Decide in this replica's memory: requests keep flowing, and while Redis is down each
    /// replica applies the whole limit on its own (the limit times the replicas, at worst).
    /// Each admission's rate state is reconciled where it was decided: one decided in memory
    /// never touches Redis's, and one decided by Redis never touches the memory. The tokens
    /// used are sent to a shared quota in Redis either way, where they count if Redis takes
    /// them within the call's timeout (a reconciliation sent while Redis is down is lost).
    /// A key whose shared quota Redis last found used up stays refused (81005) while Redis is
    /// away, unless its quota has been raised since; otherwise the key's own
    /// [`Quota`](crate::auth::Quota) on this replica is all that counts.
    FailOpen,
}

/// A [`RateStore`] in Redis, exact across gateway replicas.
///
/// - **One round trip per decision**: one `EVALSHA` decides requests, tokens and the quota of
///   a key atomically, on Redis's `TIME`, so replicas never race (no GET-then-SET) and never
///   multiply the limit. A reservation too large for the bucket is refused without a trip.
/// - **Reconciliation** (usage correction, a slot given back, the quota charged) runs in the
///   background after the response, one call of a second script per response; it is skipped
///   when there is nothing to correct. It may take as long as a late answer is read (2 s, or
///   ten timeouts); one Redis does not take by then is lost, and the reservation stands.
/// - **Keys**: `tm:{<namespace>:<key>}:rate` (a hash of two theoretical arrival times) and
///   `tm:{<namespace>:<key>}:quota` (tokens used), hash-tagged so both would live in one
///   cluster slot; the store speaks to one Redis primary (Redis 5 or later), not to a Redis
///   Cluster, whose redirections it would take for an outage. A rate key expires one second
///   after its limits have fully recovered; a quota counter is a total and does not expire.
///   `<key>` is the API key's [`KeyId`](crate::auth::KeyId): it must name the same key on
///   every replica, and keep naming it as keys come and go. Give the in-memory key store's
///   keys their ids ([`InMemoryKeyStore::insert_as`](crate::auth::InMemoryKeyStore::insert_as));
///   the ids it hands out itself follow the order keys were inserted in.
/// - **Failures**: each call has a timeout (default 50 ms, reconnection included); past it, or
///   on an error from Redis, the [`OnUnavailable`] policy decides. The connection is
///   re-established in the background, so the store recovers when Redis is back, without a
///   restart. After a failover, a server that answers `READONLY` or `MASTERDOWN` (the old
///   primary, now a replica, keeps its clients; Redis before 7 wraps the code in its
///   `ERR Error running script …: -READONLY …`) is left for a new connection to the same
///   address, at most every 100 ms: a DNS name or a proxy the failover moved then leads to
///   the new primary.
/// - **A pause**: after five decisions in a row fail (no answer in time, no connection, or an
///   error that fails every call; not the `READONLY` of calls on a connection just replaced),
///   the next ones skip Redis for a second and go straight to the policy, with no call and no
///   wait; then one decision at a time tries Redis, and the first answered in time ends the
///   pause. A Redis that is slow or cut off then costs a decision nothing rather than the
///   whole timeout, and leaves no decision's call waiting for a late answer. Reconciliations
///   still go to Redis, each waiting as long as a late answer is read.
/// - **Logging** (feature `tracing`): a failed or unanswered call is a `warn` event of target
///   `tower_maas`, at most one a second per store, counting those it did not write (a lost
///   reconciliation says so), and so is each pause. It names the call and Redis's error,
///   never a key.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> redis::RedisResult<()> {
/// use std::time::Duration;
/// use tower_maas::limit::{MonotonicClock, OnUnavailable, RedisStore, TokenRateLimitLayer};
///
/// // Connects on first use: built while Redis is down, it decides once Redis is back.
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .timeout(Duration::from_millis(50))
///     .on_unavailable(OnUnavailable::FailOpen)
///     .build()?;
/// let layer = TokenRateLimitLayer::with(store, MonotonicClock::new());
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    breaker: Breaker,
    /// Where the store's tasks run; the caller's runtime when `None`.
    runtime: Option<tokio::runtime::Handle>,
    namespace: String,
    timeout: Duration,
    /// The memory a replica failing open decides in while Redis is away; none when failing
    /// closed, which never reads it.
    fallback: Option<MemoryStore>,
    /// Failing open: the keys Redis last found out of quota.
    used_up: UsedUp,
    background: Arc<Background>,
}

/// The store's tasks that outlive the requests that started them (decisions that may give an
/// admission back, reconciliations): how many are running, and a wake-up when none is.
#[derive(Default)]
struct Background {
    running: AtomicUsize,
    all_ended: Notify,
}

/// One background task, counted from before it is spawned until it ends or is dropped with
/// its runtime.
struct Running(Arc<Background>);

impl Running {
    fn start(background: &Arc<Background>) -> Self {
        background.running.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(background))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_ended.notify_waiters();
        }
    }
}

/// Builds a [`RedisStore`]: see [`RedisStore::builder`].
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    namespace: String,
    timeout: Duration,
    policy: OnUnavailable,
    runtime: Option<tokio::runtime::Handle>,
}

/// Without the URL's password, which a builder logged by `Debug` would otherwise show.
impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &RedisStore::redacted_url(&self.url))
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// `url` fit to show: `redis://user:secret@host/0` as `redis://user:redacted@host/0`, a
    /// Unix socket's `?pass=secret` as `?pass=redacted`, and a URL Redis cannot read not at
    /// all. What the builder's `Debug` shows.
    ///
    /// ```
    /// use tower_maas::limit::RedisStore;
    ///
    /// assert_eq!(
    ///     RedisStore::redacted_url("redis://admin:s3cret@127.0.0.1:6379/0"),
    ///     "redis://admin:redacted@127.0.0.1:6379/0"
    /// );
    /// assert_eq!(RedisStore::redacted_url("redis://:a?b@h"), "(not a Redis URL)");
    /// ```
    pub fn redacted_url(url: &str) -> String {
        without_password(url)
    }
}

fn without_password(url: &str) -> String {
    let Some(mut parsed) = redis::parse_redis_url(url) else {
        return "(not a Redis URL)".to_owned();
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some("redacted"));
    }
    if parsed.query_pairs().any(|(name, _)| name == "pass") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if name == "pass" {
                    "redacted".into()
                } else {
                    value
                };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

impl RedisStore {
    /// A store on the Redis server at `url` (`redis://host:port/db`), namespace `keys`,
    /// timeout 50 ms, failing closed.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            namespace: "keys".to_owned(),
            timeout: Duration::from_millis(50),
            policy: OnUnavailable::FailClosed,
            runtime: None,
        }
    }

    /// Waits until the writes this store has begun in the background have ended: the
    /// reconciliations of answers that have finished, and decisions still out that may give an
    /// admission back. A reconciliation takes at most the store's [`timeout`]; a decision's
    /// late answer is awaited for up to ten times it (at least 2 s), and its give-back for one
    /// more timeout. Call it when shutting down, while the store's runtime still runs, so that
    /// the last answers' tokens reach Redis; it returns at once when nothing is being written.
    /// Bound the wait: a give-back cut short only leaves a slot held until the key's rate
    /// state recovers.
    ///
    /// [`timeout`]: RedisStoreBuilder::timeout
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tower_maas::limit::RedisStore;
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/").build().unwrap();
    /// // ... the server has stopped and its requests have ended.
    /// let flushed = tokio::time::timeout(Duration::from_secs(1), store.flushed()).await;
    /// assert!(flushed.is_ok(), "nothing was being written");
    /// # }
    /// ```
    pub async fn flushed(&self) {
        let background = &self.inner.background;
        loop {
            // Listening before looking (a `Notified` hears `notify_waiters` from when it is
            // made): a last task that ends in between still wakes this.
            let all_ended = background.all_ended.notified();
            if background.running.load(Ordering::Acquire) == 0 {
                return;
            }
            all_ended.await;
        }
    }
}

impl Inner {
    /// Runs `task` on the store's runtime, else on the caller's; with neither (a reconciliation
    /// from a thread outside any runtime), it is dropped.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(task)),
            None => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    drop(runtime.spawn(task));
                }
            }
        }
    }

    /// The decision of the store's policy, Redis having failed it: none failing closed, this
    /// replica's memory's failing open.
    fn without_redis(&self, ask: Acquire) -> Outcome {
        match &self.fallback {
            // Failing closed: there is no memory to decide in.
            None => Outcome::Unavailable,
            // The shared quota, which this memory does not know, was spent when Redis last
            // decided for the key.
            Some(_) if self.used_up.refuses(&ask) => Outcome::QuotaExhausted,
            Some(fallback) => match fallback.acquire(ask) {
                Acquired::Now(Outcome::Admitted(snapshot)) => {
                    Outcome::Admitted(snapshot.by_fallback())
                }
                Acquired::Now(outcome) => outcome,
                Acquired::Later(_) => Outcome::Unavailable,
            },
        }
    }

    /// A decision found Redis failing: counted, and the log told when decisions stop asking.
    fn decision_failed(&self) {
        let paused = self.breaker.failed();
        // At most once a pause: written whatever else was.
        #[cfg(feature = "tracing")]
        if paused {
            use super::redis_breaker::{FAILURES, PAUSE};
            tracing::warn!(
                target: "tower_maas",
                "RedisStore: {FAILURES} decisions in a row failed: the next ones skip Redis for \
                 {PAUSE:?} (the store's policy decides them), then one tries it again"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = paused;
    }

    /// One decision: the acquire script, on the shared connection; a failure logged, and
    /// told for what it says of Redis.
    async fn decide(&self, ask: &Acquire) -> Result<Vec<i64>, Fault> {
        let mut conn = self.link.get();
        self.call_acquire(ask, &mut conn)
            .await
            .map_err(|error| self.link.failed(&conn, Call::Decision, &error))
    }

    async fn call_acquire(&self, ask: &Acquire, conn: &mut Handed) -> RedisResult<Vec<i64>> {
        let (rpu, rcap) = interval(ask.requests);
        let (tpu, tcap) = interval(ask.tokens);
        let limit = ask
            .quota
            .map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX));
        let mut call = ACQUIRE.prepare_invoke();
        call.key(self.rate_key(ask.key))
            .key(self.quota_key(ask.key))
            .arg(rpu)
            .arg(rcap)
            .arg(tpu)
            .arg(tcap)
            .arg(ask.reserve)
            .arg(limit);
        call.invoke_async(&mut conn.manager).await
    }

    fn rate_key(&self, key: LimitKey) -> String {
        format!("tm:{{{}:{}}}:rate", self.namespace, key.0)
    }

    fn quota_key(&self, key: LimitKey) -> String {
        format!("tm:{{{}:{}}}:quota", self.namespace, key.0)
    }

    /// Runs the reconciliation script in the background, when a runtime is there to run it.
    fn settle(
        self: &Arc<Self>,
        key: LimitKey,
        release: Nanos,
        tokens: Nanos,
        delta: i128,
        spent: u64,
    ) {
        let (rate, quota) = (self.rate_key(key), self.quota_key(key));
        let inner = Arc::clone(self);
        let timeout = self.timeout;
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
        // INCRBY takes a signed 64-bit number.
        let spent = i64::try_from(spent).unwrap_or(i64::MAX);
        let running = Running::start(&self.background);
        self.spawn(async move {
            let _running = running;
            let mut call = SETTLE.prepare_invoke();
            call.key(rate)
                .key(quota)
                .arg(release)
                .arg(tokens)
                .arg(delta)
                .arg(spent);
            // Off the request's path: it may wait as long as a late answer is read, rather
            // than the decision's timeout (a slow moment would drop the charge or the refund).
            let wait = LATE_ANSWERS.max(timeout * 10);
            let mut conn = inner.link.get();
            match tokio::time::timeout(wait, call.invoke_async::<i64>(&mut conn.manager)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    inner.link.failed(&conn, Call::Reconciliation, &error);
                }
                Err(_) => inner.link.unanswered(Call::Reconciliation, wait),
            }
        });
    }
}

impl RedisStoreBuilder {
    /// Separates this store's keys from another's on the same server: the key limiter and an
    /// endpoint limiter ([`LimitScope::Endpoint`](super::LimitScope::Endpoint)) need two.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a call may take, waiting for a reconnection included (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the store's work on `runtime`: its connection (opened on first use, and again
    /// after a failure, by whatever task uses it first), each decision's call and the
    /// reconciliations. By default they run on the runtime of the request that starts them,
    /// which suits one runtime shared by every thread. A server with a single-threaded
    /// runtime per core wants a runtime of their own, or one that serves no requests: a
    /// connection opened on one worker is driven by that worker only, so the other workers'
    /// decisions would wait whenever it is busy, and time out when it is busy longer than
    /// [`timeout`](Self::timeout).
    ///
    /// The runtime must be driven (a multi-threaded one, or a current-thread one with a thread
    /// inside `block_on`), have I/O and time enabled, and outlive the store: on a runtime shut
    /// down, every decision is `Unavailable` and every reconciliation is lost.
    ///
    /// ```
    /// use tower_maas::limit::RedisStore;
    ///
    /// // One thread of its own for Redis, kept as long as the store.
    /// let redis = tokio::runtime::Builder::new_multi_thread()
    ///     .worker_threads(1)
    ///     .thread_name("redis")
    ///     .enable_all()
    ///     .build()
    ///     .unwrap();
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .runtime(redis.handle().clone())
    ///     .build()
    ///     .unwrap();
    /// # drop(store);
    /// # drop(redis);
    /// ```
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// What to do when Redis does not answer in time (default [`OnUnavailable::FailClosed`]).
    pub fn on_unavailable(mut self, policy: OnUnavailable) -> Self {
        self.policy = policy;
        self
    }

    /// The store. It connects on first use, so a gateway starts while Redis is down; only a
    /// malformed URL, a namespace with braces (they would break the hash tag) or a zero
    /// timeout (every decision would time out) is an error. Call it inside a Tokio runtime,
    /// or give it one ([`runtime`](Self::runtime)).
    pub fn build(self) -> RedisResult<RedisStore> {
        if self.timeout.is_zero() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a RedisStore timeout must be more than zero",
            )));
        }
        if self.namespace.contains(['{', '}']) {
            // Braces would move the hash tag, and the two keys of one limit across slots.
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a RedisStore namespace cannot contain braces",
            )));
        }
        let client = redis::Client::open(self.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            // Longer than a decision waits: an answer that comes late is still read, so an
            // admission nobody waits for any more can be given back (see `acquire`).
            .set_response_timeout(Some(LATE_ANSWERS.max(self.timeout * 10)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        // What the connection starts at once (a watcher of pushed messages) starts there too.
        let _entered = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
        let link = Link::new(client, config)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                link,
                breaker: Breaker::default(),
                used_up: UsedUp::default(),
                runtime: self.runtime.clone(),
                namespace: self.namespace,
                timeout: self.timeout,
                fallback: (self.policy == OnUnavailable::FailOpen).then(MemoryStore::new),
                background: Arc::default(),
            }),
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .field("fails_open", &self.inner.fallback.is_some())
            .finish_non_exhaustive()
    }
}

/// A decision that tries Redis during a pause: whatever ends it, the next may try.
struct Trial(Arc<Inner>);

impl Drop for Trial {
    fn drop(&mut self) {
        self.0.breaker.trial_over();
    }
}

/// The outcome a script's answer stands for; `None` for an answer it never gives.
fn outcome(answer: &[i64], ask: &Acquire) -> Option<Outcome> {
    let &[code, now, wait, requests, tokens] = answer else {
        return None;
    };
    let at = |t: i64| u64::try_from(t).unwrap_or(0);
    let mut snapshot = Snapshot::at(at(now));
    if let Some(rate) = ask.requests {
        snapshot = snapshot.with_requests(rate, at(requests));
    }
    if let Some(rate) = ask.tokens {
        snapshot = snapshot.with_tokens(rate, at(tokens));
    }
    let refused = |exceeded| Outcome::Refused {
        exceeded,
        wait: at(wait).max(1),
        snapshot,
    };
    match code {
        0 => Some(Outcome::Admitted(snapshot)),
        1 => Some(refused(Exceeded::Requests)),
        2 => Some(refused(Exceeded::Tokens)),
        3 => Some(Outcome::QuotaExhausted),
        _ => None,
    }
}

fn interval(rate: Option<Rate>) -> (Nanos, Nanos) {
    rate.map_or((0, 0), |r| (r.per_unit(), r.capacity()))
}

impl RateStore for RedisStore {
    type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

    fn acquire(&self, ask: Acquire) -> Acquired<Self::Pending> {
        if ask.tokens.is_some_and(|t| ask.reserve > t.burst()) {
            return Acquired::Now(Outcome::Oversized);
        }
        let trial = match self.inner.breaker.ask(self.inner.timeout) {
            Ask::Skip => return Acquired::Now(self.inner.without_redis(ask)),
            Ask::Redis => None,
            Ask::Trial => Some(Trial(Arc::clone(&self.inner))),
        };
        let inner = Arc::clone(&self.inner);
        Acquired::Later(Box::pin(async move {
            // Ends the trial however this ends, dropped with the request included.
            let _trial = trial;
            // The script runs in a task of its own that outlives this future: when the answer
            // comes after the timeout, or after the request is gone, an admission nobody will
            // use is given back at once instead of holding a slot and tokens.
            let (answer_to, answer) = tokio::sync::oneshot::channel();
            let running = Running::start(&inner.background);
            inner.spawn({
                let inner = Arc::clone(&inner);
                async move {
                    let _running = running;
                    let answer = inner.decide(&ask).await;
                    if let Err(Ok(answer)) = answer_to.send(answer) {
                        if answer.first() == Some(&0) {
                            let (release, _) = interval(ask.requests);
                            let (tokens, _) = interval(ask.tokens);
                            let back = -i128::from(ask.reserve);
                            inner.settle(ask.key, release, tokens, back, 0);
                        }
                    }
                }
            });
            let answer = match tokio::time::timeout(inner.timeout, answer).await {
                Ok(Ok(Ok(answer))) => {
                    inner.breaker.answered();
                    let decided = outcome(&answer, &ask);
                    if let (Some(decided), Some(_)) = (&decided, &inner.fallback) {
                        inner.used_up.saw(&ask, decided);
                    }
                    decided
                }
                // Logged where it was met.
                Ok(Ok(Err(Fault::Outage))) => {
                    inner.decision_failed();
                    None
                }
                // The error of this call's alone (a script's on a value that is not the
                // store's): Redis answered.
                Ok(Ok(Err(Fault::Call))) => {
                    inner.breaker.answered();
                    None
                }
                // Every call in flight on the old primary's connection meets this at a
                // failover: the next goes to a new connection, and they are no outage.
                Ok(Ok(Err(Fault::Replaced))) => None,
                // The task was dropped: its runtime is shutting down.
                Ok(Err(_)) => None,
                Err(_) => {
                    inner.link.unanswered(Call::Decision, inner.timeout);
                    inner.decision_failed();
                    None
                }
            };
            answer.unwrap_or_else(|| inner.without_redis(ask))
        }))
    }

    /// One `EVALSHA` of the settle script for the whole reconciliation, in the background;
    /// none when there is nothing to change.
    fn reconcile(&self, settled: Reconcile) {
        let spent = settled.quota.unwrap_or(0);
        // The rate state is reconciled where the admission was decided, and only there; the
        // quota counts tokens used, whoever admitted them, and is kept in Redis alone.
        let (release, tokens, delta) = if settled.fallback {
            if let Some(fallback) = &self.inner.fallback {
                fallback.reconcile(settled);
            }
            (0, 0, 0)
        } else {
            let (tokens, delta) = match settled.tokens {
                Some(rate) if settled.used != settled.reserved => (
                    rate.per_unit(),
                    i128::from(settled.used) - i128::from(settled.reserved),
                ),
                _ => (0, 0),
            };
            (
                settled.release.map_or(0, |rate| rate.per_unit()),
                tokens,
                delta,
            )
        };
        if release == 0 && tokens == 0 && spent == 0 {
            return;
        }
        self.inner
            .settle(settled.key, release, tokens, delta, spent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_shows_no_password() {
        let shown = |url: &str| format!("{:?}", RedisStore::builder(url));
        let with = shown("redis://admin:Secret0000@127.0.0.1:6379/0");
        assert!(!with.contains("Secret"), "{with}");
        assert!(
            with.contains(r#"url: "redis://admin:redacted@127.0.0.1:6379/0""#),
            "{with}"
        );
        let without = shown("redis://127.0.0.1:6379/");
        assert!(
            without.contains(r#"url: "redis://127.0.0.1:6379/""#),
            "{without}"
        );
        let unreadable = shown("Secret0000");
        assert!(!unreadable.contains("Secret"), "{unreadable}");
        let socket = shown("redis+unix:///run/redis.sock?db=1&pass=Secret0000");
        assert!(
            socket.contains(r#"url: "redis+unix:///run/redis.sock?db=1&pass=redacted""#),
            "{socket}"
        );
    }

    /// A zero timeout would time every decision out: refused when built.
    #[test]
    fn a_zero_timeout_is_refused() {
        let zero = RedisStore::builder("redis://127.0.0.1:6379/")
            .timeout(Duration::ZERO)
            .build()
            .err()
            .map(|err| err.to_string());
        assert!(
            zero.as_deref()
                .is_some_and(|err| err.contains("a RedisStore timeout must be more than zero")),
            "{zero:?}"
        );
    }
}
