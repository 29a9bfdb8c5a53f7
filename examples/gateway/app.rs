//! The gateway's configuration and its stack of layers.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Extension, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service};
use bytes::Bytes;
use futures_util::future::Either;
use http::Method;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use tower::Service;
use tower::util::{BoxCloneSyncService, MapResponse};
use tower_maas::auth::{
    BearerAuthLayer, InMemoryKeyStore, InsertAsError, KeyDigest, KeyId, KeyPolicy, KeyState,
    Principal,
};
use tower_maas::endpoint::{
    Account, EndpointRegistry, FileRegistry, InMemoryRegistry, MANAGEMENT_ROUTES, ManagementAccess,
    ManagementApi, ServiceAccess, ServiceDirectory,
};
use tower_maas::limit::{
    Acquire, Acquired, IpRateLimit, IpRateLimitLayer, LimitScope, MemoryStore, MonotonicClock,
    Outcome, RateStore, Reconcile, TokenRateLimitLayer, TrustedProxies,
};
use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier, Window};
use tower_maas::validate::{
    ModelCatalog, ParsedRequest, RequestSchemaValidatorLayer, ValidationDialect,
};
use tower_maas::{
    Dialect, EndpointRoute, ErrorEnvelope, ErrorEnvelopeLayer, MaasError, RequestId, ThrottleWindow,
};

use crate::log::{Log, LogLayer, TagLayer};
use crate::mock::{self, MOCK_MODEL, StreamStyle};
use crate::proxy::{self, Upstream};

/// Demo keys of the zero-config start: generous limits, two requests a minute, frozen.
pub(crate) const DEMO_KEY: &str = "sk-maas-demo-0000000000000000";
pub(crate) const SLOW_KEY: &str = "sk-maas-slow-0000000000000000";
pub(crate) const FROZEN_KEY: &str = "sk-maas-frozen-00000000000000";
/// The management token of the zero-config start, for the demo project.
pub(crate) const DEMO_MANAGEMENT_TOKEN: &str = "mgmt-maas-demo-000000000000";
pub(crate) const DEMO_PROJECT: &str = "demo-project";

/// Reads a configuration file's text. An error says where and what, but never quotes the file:
/// the line at fault may hold a key or a token, and the message goes to a log.
pub(crate) fn parse_config(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|error| {
        let at = error.span().map_or(String::new(), |span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        format!("{at}{}", redacted(error.message().trim_end()))
    })
}

/// A message without the value it complains of, which may be a key: every quoted string
/// (`invalid type: string "…", expected u64`, escapes and all), and the name in backticks
/// after `unknown variant`, `unknown field` or `duplicate key`, become `…`. The names the file
/// may use (`expected one of …`, `missing field …`) stay.
fn redacted(message: &str) -> String {
    const QUOTING: [&str; 3] = ["unknown variant ", "unknown field ", "duplicate key "];
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        let first_name = QUOTING.iter().any(|before| out.ends_with(before));
        match c {
            '"' => {
                out.push_str("\"…\"");
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '`' if first_name => {
                out.push_str("`…`");
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// How the gateway's threads share its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RuntimeKind {
    /// A single-threaded runtime per worker thread, each serving the connections handed to it
    /// for their whole life (`serve::Workers`).
    PerCore,
    /// One multi-threaded tokio runtime: every worker takes any connection's next task.
    Shared,
}

/// The most worker threads a configuration may ask for.
pub(crate) const MAX_WORKERS: usize = 1024;

impl Config {
    /// The threads that serve connections: `workers`, or one per core the process may use.
    pub(crate) fn worker_threads(&self) -> Result<usize, String> {
        if self.workers > MAX_WORKERS {
            return Err(format!("workers: at most {MAX_WORKERS}"));
        }
        Ok(match self.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        })
    }
}

/// The whole configuration. Every field has a default (the demo gateway's, but for its keys
/// and its management account), so an empty file is a gateway without keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) dialect: DialectName,
    pub(crate) trust_request_id: bool,
    pub(crate) validation: Validation,
    pub(crate) body_limit: usize,
    pub(crate) upstream_timeout_ms: u64,
    /// How long a client may take: from connecting to its first request's head, for each later
    /// head, and between two pieces of a body (`serve.rs`).
    pub(crate) client_timeout_ms: u64,
    /// How long requests in flight may keep a stopping gateway (SIGINT, SIGTERM) from exiting.
    pub(crate) shutdown_grace_ms: u64,
    /// Connections served at once; more wait in the listener's backlog (`serve.rs`).
    pub(crate) max_connections: usize,
    /// Bytes of request bodies held at once, all requests together (`budget.rs`).
    pub(crate) max_buffered_bytes: usize,
    /// How connections are spread over threads (`serve.rs`).
    pub(crate) runtime: RuntimeKind,
    /// Threads that serve connections; 0: one per core.
    pub(crate) workers: usize,
    pub(crate) mock_stream_style: StreamStyle,
    pub(crate) log_requests: bool,
    /// Only the zero-config start has a per-IP limit by default: a file without the section
    /// has none, as `gateway.toml` says.
    #[serde(default)]
    pub(crate) ip_limit: Option<IpLimit>,
    /// Only the zero-config start has the demo keys: a file without `[[keys]]` has none, so the
    /// well-known demo keys are never left enabled by accident.
    #[serde(default)]
    pub(crate) keys: Vec<KeyConfig>,
    pub(crate) models: Vec<ModelConfig>,
    pub(crate) risk: RiskConfig,
    /// Only the zero-config start has the demo account: a file without the section has no
    /// management API, so no well-known token is ever left enabled by accident.
    #[serde(default)]
    pub(crate) management: Option<ManagementConfig>,
    /// Limits and quotas in Redis, shared by replicas (feature `redis`); in memory when left out.
    pub(crate) redis: Option<RedisConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct RedisConfig {
    pub(crate) url: RedisUrl,
    #[serde(default = "redis_timeout")]
    pub(crate) timeout_ms: u64,
    #[serde(default)]
    pub(crate) on_unavailable: RedisDown,
}

/// A plaintext key or token from the file: shown by `Debug` as `…`.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"…\"")
    }
}

/// Redis's URL: shown by `Debug` without its password, as the store shows it.
#[derive(Deserialize)]
#[serde(transparent)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct RedisUrl(pub(crate) String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "redis")]
        return fmt::Debug::fmt(&tower_maas::limit::RedisStore::redacted_url(&self.0), f);
        #[cfg(not(feature = "redis"))]
        f.write_str("\"…\"")
    }
}

fn redis_timeout() -> u64 {
    50
}

/// What the limiters do when Redis is down or slow.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RedisDown {
    /// Refuse (500 APIG.0201).
    #[default]
    Closed,
    /// Decide in this replica's memory until Redis is back.
    Open,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManagementConfig {
    /// Where the durable registry lives; in memory when left out.
    pub(crate) registry_file: Option<String>,
    #[serde(default)]
    pub(crate) accounts: Vec<AccountConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountConfig {
    pub(crate) name: String,
    pub(crate) token: Option<Secret>,
    pub(crate) token_digest: Option<String>,
    pub(crate) projects: Option<Vec<String>>,
    pub(crate) endpoint_quota: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpLimit {
    pub(crate) limit: u64,
    #[serde(default)]
    pub(crate) window: IpWindow,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
}

/// The per-IP limit's window, as a policy gives it: a unit (`"second"`, `"minute"`, `"hour"`,
/// `"day"`), or a count and a unit (`"10 seconds"`, `"2 hour"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpWindow(pub(crate) ThrottleWindow);

impl Default for IpWindow {
    fn default() -> Self {
        Self(ThrottleWindow::MINUTE)
    }
}

impl std::str::FromStr for IpWindow {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // Not quoted back: a key pasted into the wrong line must not reach a log.
        let wrong = || {
            "expected a unit (second, minute, hour, day), or a count of 1 or more and a unit (10 seconds)"
                .to_owned()
        };
        let (count, unit) = match text.trim().split_once(' ') {
            // Digits only: `u32`'s parse would also take a sign.
            Some((count, unit)) if count.bytes().all(|b| b.is_ascii_digit()) => {
                (count.parse::<u32>().map_err(|_| wrong())?, unit.trim())
            }
            Some(_) => return Err(wrong()),
            None => (1, text.trim()),
        };
        if count == 0 {
            return Err(wrong());
        }
        let window = match unit.strip_suffix('s').unwrap_or(unit) {
            "second" => ThrottleWindow::Seconds(count),
            "minute" => ThrottleWindow::Minutes(count),
            "hour" => ThrottleWindow::Hours(count),
            "day" => ThrottleWindow::Days(count),
            _ => return Err(wrong()),
        };
        Ok(Self(window))
    }
}

impl<'de> Deserialize<'de> for IpWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How refusals are written (`tower_maas::Dialect`).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DialectName {
    #[default]
    Dual,
    Flat,
    OpenAi,
}

impl From<DialectName> for Dialect {
    fn from(name: DialectName) -> Self {
        match name {
            DialectName::Dual => Self::Dual,
            DialectName::Flat => Self::Flat,
            DialectName::OpenAi => Self::OpenAi,
        }
    }
}

/// Who answers a malformed request: the gateway (81001/81009) or the backend (vLLM's errors).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Validation {
    #[default]
    Gateway,
    Backend,
}

impl From<Validation> for ValidationDialect {
    fn from(validation: Validation) -> Self {
        match validation {
            Validation::Gateway => Self::Gateway,
            Validation::Backend => Self::Backend,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    /// The key's id for the limiters; when left out, numbered in list order above every id
    /// given.
    pub(crate) id: Option<u64>,
    pub(crate) key: Option<Secret>,
    pub(crate) digest: Option<String>,
    pub(crate) label: Option<String>,
    #[serde(default)]
    pub(crate) frozen: bool,
    pub(crate) models: Option<Vec<String>>,
    pub(crate) rpm: Option<u64>,
    pub(crate) tpm: Option<u64>,
    pub(crate) quota: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelConfig {
    pub(crate) name: String,
    pub(crate) context_length: u64,
    #[serde(default = "builtin")]
    pub(crate) upstream: String,
    pub(crate) upstream_model: Option<String>,
    #[serde(default)]
    pub(crate) http2: bool,
    /// The online-service id custom endpoints name (the model's name when left out).
    pub(crate) service_id: Option<String>,
    /// How the service is reached: "maas" (mounted to the gateway), "none" (no
    /// authentication) or "token" (its own; no endpoint may point at it).
    #[serde(default)]
    pub(crate) access: Access,
}

/// How a model's service is reached (`ServiceAccess`).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Access {
    /// Mounted to the gateway.
    #[default]
    Maas,
    /// No authentication.
    #[serde(rename = "none")]
    NoAuth,
    /// Its own token; no endpoint may point at it.
    Token,
}

impl From<Access> for ServiceAccess {
    fn from(access: Access) -> Self {
        match access {
            Access::Maas => Self::MaasGateway,
            Access::NoAuth => Self::NoAuth,
            Access::Token => Self::Token,
        }
    }
}

fn builtin() -> String {
    "builtin".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RiskConfig {
    pub(crate) terms: Vec<String>,
    pub(crate) terms_file: Option<String>,
    pub(crate) ignore_separators: bool,
    pub(crate) check_streams: bool,
}

impl Default for Config {
    fn default() -> Self {
        let key = |key: &str, label: &str| KeyConfig {
            key: Some(Secret(key.to_owned())),
            label: Some(label.to_owned()),
            ..KeyConfig::default()
        };
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dialect: DialectName::Dual,
            trust_request_id: false,
            validation: Validation::Gateway,
            body_limit: tower_maas::DEFAULT_BODY_LIMIT,
            upstream_timeout_ms: 60_000,
            client_timeout_ms: 30_000,
            shutdown_grace_ms: 30_000,
            max_connections: 10_000,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED,
            runtime: RuntimeKind::PerCore,
            workers: 0,
            mock_stream_style: StreamStyle::Maas,
            log_requests: true,
            ip_limit: Some(IpLimit {
                limit: 1200,
                window: IpWindow::default(),
                trusted_proxies: Vec::new(),
            }),
            keys: vec![
                KeyConfig {
                    rpm: Some(600),
                    tpm: Some(200_000),
                    quota: Some(10_000_000),
                    ..key(DEMO_KEY, "demo")
                },
                KeyConfig {
                    rpm: Some(2),
                    ..key(SLOW_KEY, "demo-slow")
                },
                KeyConfig {
                    frozen: true,
                    ..key(FROZEN_KEY, "demo-frozen")
                },
            ],
            models: vec![ModelConfig {
                name: MOCK_MODEL.to_owned(),
                context_length: 4096,
                upstream: builtin(),
                upstream_model: None,
                http2: false,
                service_id: None,
                access: Access::Maas,
            }],
            risk: RiskConfig {
                terms: vec!["forbidden demo phrase".to_owned()],
                terms_file: None,
                ignore_separators: true,
                check_streams: false,
            },
            management: Some(ManagementConfig {
                registry_file: None,
                accounts: vec![AccountConfig {
                    name: "demo".to_owned(),
                    token: Some(Secret(DEMO_MANAGEMENT_TOKEN.to_owned())),
                    projects: Some(vec![DEMO_PROJECT.to_owned()]),
                    ..AccountConfig::default()
                }],
            }),
            redis: None,
        }
    }
}

/// Where the limiters keep their state: this process's memory, or Redis.
enum Store {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(tower_maas::limit::RedisStore),
}

impl Store {
    /// The store of one limiter; `namespace` keeps the key and endpoint limiters apart in Redis.
    fn new(config: Option<&RedisConfig>, namespace: &str) -> Result<Self, String> {
        let Some(redis) = config else {
            return Ok(Self::Memory(MemoryStore::new()));
        };
        #[cfg(feature = "redis")]
        {
            use tower_maas::limit::{OnUnavailable, RedisStore};
            let policy = match redis.on_unavailable {
                RedisDown::Closed => OnUnavailable::FailClosed,
                RedisDown::Open => OnUnavailable::FailOpen,
            };
            let mut builder = RedisStore::builder(redis.url.0.as_str())
                .namespace(namespace)
                .timeout(Duration::from_millis(redis.timeout_ms))
                .on_unavailable(policy);
            // The runtime the gateway is built on: per core, the one that only accepts
            // connections, so that no busy worker drives the connection every worker's
            // decisions go through.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                builder = builder.runtime(runtime);
            }
            builder
                .build()
                .map(Self::Redis)
                .map_err(|e| format!("redis: {e}"))
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (redis, namespace);
            Err("[redis] needs the `redis` feature: \
                 cargo run --release --features redis --example gateway"
                .to_owned())
        }
    }
}

impl RateStore for Store {
    type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

    fn acquire(&self, ask: Acquire) -> Acquired<Self::Pending> {
        match self {
            Self::Memory(store) => match store.acquire(ask) {
                Acquired::Now(outcome) => Acquired::Now(outcome),
                Acquired::Later(pending) => Acquired::Later(Box::pin(pending)),
            },
            #[cfg(feature = "redis")]
            Self::Redis(store) => store.acquire(ask),
        }
    }

    fn reconcile(&self, settled: Reconcile) {
        match self {
            Self::Memory(store) => store.reconcile(settled),
            #[cfg(feature = "redis")]
            Self::Redis(store) => store.reconcile(settled),
        }
    }
}

/// What the routes share, behind one `Arc`: the validator clones the services behind it, and
/// so `Answer`, for every request; one count to move is cheaper than the names and the
/// upstreams to copy.
// Aligned to a cache line, so that the `Arc`'s counts, which every request moves, sit on a line
// of their own and not on the fields every core reads (`benches/gateway.rs contend`).
#[repr(align(64))]
struct Models {
    names: Vec<String>,
    upstreams: Vec<Upstream>,
    /// Where each proxied model's upstream is in `upstreams`: a request's future holds the
    /// index, not a copy of the name or a count on the upstream.
    upstream_of: HashMap<String, usize>,
    timeout: Duration,
    style: StreamStyle,
    tasks: Mutex<Tasks>,
}

/// Video-generation tasks and the key that created each. The oldest are forgotten past a bound
/// for all keys, and a key's own oldest past a bound for each, so that one busy key forgets
/// its own tasks rather than everyone's.
#[derive(Default)]
struct Tasks {
    owners: HashMap<String, KeyId>,
    /// Every task, oldest first, and ids a key's bound forgot, dropped as they are met.
    order: VecDeque<String>,
    /// Each key's tasks not forgotten, oldest first.
    of_key: HashMap<KeyId, VecDeque<String>>,
}

pub(crate) const MAX_TASKS: usize = 10_000;
pub(crate) const MAX_TASKS_PER_KEY: usize = 1_000;

impl Tasks {
    fn add(&mut self, task_id: String, owner: KeyId) {
        self.owners.insert(task_id.clone(), owner);
        self.order.push_back(task_id.clone());
        let own = self.of_key.entry(owner).or_default();
        own.push_back(task_id);
        if own.len() > MAX_TASKS_PER_KEY {
            if let Some(old) = own.pop_front() {
                self.owners.remove(&old);
            }
        }
        // The tasks kept are bounded, not the ids queued: ids a key's bound forgot count for
        // nothing, or one busy key would push every other key's tasks out after all.
        while self.owners.len() > MAX_TASKS {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            // The oldest of all is its key's oldest too, unless that key's bound forgot it.
            if let Some(owner) = self.owners.remove(&old) {
                if let Some(own) = self.of_key.get_mut(&owner) {
                    own.pop_front();
                    if own.is_empty() {
                        self.of_key.remove(&owner);
                    }
                }
            }
        }
        // Forgotten ids go before they outnumber the tasks kept: the queue stays bounded.
        if self.order.len() > 2 * MAX_TASKS {
            let owners = &self.owners;
            self.order.retain(|id| owners.contains_key(id));
        }
    }
}

/// The longest client or upstream deadline: a day.
const MAX_DEADLINE_MS: u64 = 86_400_000;

/// The largest `body_limit` taken.
const MAX_BODY_LIMIT: usize = 1 << 30;

/// Request bodies held at once, all requests together, unless configured: 1 GiB.
const DEFAULT_MAX_BUFFERED: usize = 1 << 30;

/// The gateway: every layer in the MaaS order around the routes. The tests' and benches' way
/// in; the binary takes [`gateway`], for the stores.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn router(config: &Config) -> Result<Gateway, String> {
    gateway(config).map(|(gateway, _)| gateway)
}

/// The gateway, and its limiters' stores, for the exit to wait on their last writes.
pub(crate) fn gateway(config: &Config) -> Result<(Gateway, Stores), String> {
    let mut stores = Stores::default();
    // A zero deadline would fail nearly every request, not disable the deadline; one past a
    // day is no deadline a client or upstream needs, and far enough would overflow the clock.
    for (name, millis) in [
        ("upstream_timeout_ms", config.upstream_timeout_ms),
        ("client_timeout_ms", config.client_timeout_ms),
    ] {
        if millis == 0 {
            return Err(format!("{name}: at least 1"));
        }
        if millis > MAX_DEADLINE_MS {
            return Err(format!("{name}: at most {MAX_DEADLINE_MS} (a day)"));
        }
    }
    // The store refuses 0 itself; the exit waits at most twice this for the last settlements.
    if config
        .redis
        .as_ref()
        .is_some_and(|r| r.timeout_ms > MAX_DEADLINE_MS)
    {
        return Err(format!(
            "redis.timeout_ms: at most {MAX_DEADLINE_MS} (a day)"
        ));
    }
    // No room for any connection would serve nothing, for ever.
    if config.max_connections == 0 {
        return Err("max_connections: at least 1".to_owned());
    }
    // Each request may hold this much while it is read: a bound meant as "none" would let
    // a few clients take all the memory there is.
    if config.body_limit > MAX_BODY_LIMIT {
        return Err(format!(
            "body_limit: at most {MAX_BODY_LIMIT} (1 GiB; APIG's is 12 MiB)"
        ));
    }
    // Room for less than one whole body would leave such a body waiting until it failed.
    if config.max_buffered_bytes < config.body_limit {
        return Err(format!(
            "max_buffered_bytes: at least body_limit ({}): one request's whole body must fit",
            config.body_limit
        ));
    }
    let dialect = Dialect::from(config.dialect);
    let validation = ValidationDialect::from(config.validation);

    let keys = Arc::new(InMemoryKeyStore::new());
    // Keys given ids go in first, so that the ids handed to the others skip theirs whatever
    // the order of the list.
    let (mut numbered, mut given) = (Vec::new(), HashMap::new());
    for (i, key) in config.keys.iter().enumerate() {
        let mut policy = KeyPolicy::new();
        if let Some(label) = &key.label {
            policy = policy.label(label.as_str());
        }
        if key.frozen {
            policy = policy.state(KeyState::Frozen);
        }
        if let Some(models) = &key.models {
            policy = policy.models(models.iter().map(String::as_str));
        }
        policy.rpm = key.rpm;
        policy.tpm = key.tpm;
        policy.quota = key.quota;
        let digest = match (&key.key, &key.digest) {
            (Some(key), None) => KeyDigest::of(&key.0),
            (None, Some(digest)) => digest
                .parse()
                .map_err(|e| format!("keys[{i}].digest: {e}"))?,
            _ => return Err(format!("keys[{i}]: give exactly one of key or digest")),
        };
        match key.id {
            Some(id) => {
                if let Some(other) = given.insert(id, i) {
                    return Err(format!("keys[{i}].id: {id} is keys[{other}]'s too"));
                }
                keys.insert_digest_as(KeyId(id), digest, policy)
                    .map_err(|e| match e {
                        InsertAsError::DuplicateKey(_) => {
                            format!("keys[{i}]: the same key twice")
                        }
                        e => format!("keys[{i}].id: {e}"),
                    })?;
            }
            // Redis keeps a key's counters, its quota's among them, under its id for good:
            // numbered in list order, keys would take each other's when the list changes.
            None if config.redis.is_some() => {
                return Err(format!(
                    "keys[{i}]: with [redis], every key needs an id (its counters in Redis are \
                     kept under it; the same id on every replica)"
                ));
            }
            None => numbered.push((i, digest, policy)),
        }
    }
    for (i, digest, policy) in numbered {
        keys.insert_digest(digest, policy)
            .map_err(|_| format!("keys[{i}]: the same key twice"))?;
    }

    // Believed by the per-IP limit, and by the proxy for the client it names to upstreams.
    let trusted = Arc::new(match &config.ip_limit {
        Some(ip) => TrustedProxies::new(&ip.trusted_proxies)
            .map_err(|e| format!("ip_limit.trusted_proxies: {e}"))?,
        None => TrustedProxies::default(),
    });
    let mut catalog = ModelCatalog::new();
    let (mut upstreams, mut upstream_of) = (Vec::new(), HashMap::new());
    let mut services = ServiceDirectory::new();
    for model in &config.models {
        catalog = catalog.model(model.name.as_str(), model.context_length);
        services = services.service(
            model.service_id.as_deref().unwrap_or(&model.name),
            model.name.as_str(),
            model.access.into(),
        );
        if model.upstream != "builtin" {
            upstream_of.insert(model.name.clone(), upstreams.len());
            let base = Upstream::base_of(&model.upstream)
                .map_err(|e| format!("models ({}): upstream: {e}", model.name))?;
            upstreams.push(Upstream {
                base,
                model: model.upstream_model.clone(),
                http2: model.http2,
                trusted: Arc::clone(&trusted),
            });
        }
    }

    let mut risk = KeywordClassifier::builder().ignore_separators(config.risk.ignore_separators);
    for term in &config.risk.terms {
        risk = risk.term("configured", term.as_str());
    }
    if let Some(file) = &config.risk.terms_file {
        risk = risk
            .terms_from_file(file)
            .map_err(|e| format!("risk.terms_file {file}: {e}"))?;
    }
    let risk = risk.build().map_err(|e| format!("risk: {e}"))?;
    let window = config.risk.check_streams.then(|| Window {
        overlap: risk.longest_term().max(1),
        ..Window::default()
    });

    let style = config.mock_stream_style;
    let models = Models {
        names: config.models.iter().map(|m| m.name.clone()).collect(),
        upstreams,
        upstream_of,
        timeout: Duration::from_millis(config.upstream_timeout_ms),
        style,
        tasks: Mutex::default(),
    };
    let management = config
        .management
        .as_ref()
        .map(|m| management(m, services))
        .transpose()?;
    if let Some(api) = &management {
        catalog = catalog.endpoints(Arc::clone(api.registry()));
    }
    // Read on each use. `CoarseClock` halves a limiter check's cost, but its thread wakes every
    // millisecond on the cores the workers share: under load that cost more, at p99 above
    // all, than the reads it saves (BENCHMARKS.md, session 13).
    let clock = MonotonicClock::new();
    let models = Arc::new(models);
    let api = Answer {
        models: Arc::clone(&models),
    };
    let auth = BearerAuthLayer::new(keys).body_limit(config.body_limit);
    // Reading the model list or a task generates nothing: the key alone, no token limiter,
    // which would reserve (and, with no usage in the answer, charge the quota) a default
    // reservation for each, and refuse a key whose TPM is below it.
    let reads = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/video/generations/{task_id}", get(query_task))
        .with_state(models)
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(auth.clone())
                .option_layer(config.log_requests.then_some(TagLayer)),
        );
    let front = tower::ServiceBuilder::new()
        .layer(auth)
        .layer(
            RequestSchemaValidatorLayer::new()
                .models(catalog)
                .dialect(validation)
                .body_limit(config.body_limit),
        )
        .layer(TokenRateLimitLayer::with(
            stores.keep(Store::new(config.redis.as_ref(), "keys")?),
            clock.clone(),
        ));
    // Its own read (routes the validator does not read) is bounded as the validator's is.
    let risk = ContentRiskFilterLayer::new(risk)
        .streaming(window)
        .body_limit(config.body_limit);
    // What the log line shows, noted only when there is a log line.
    let tag = config.log_requests.then_some(TagLayer);
    // Two stacks rather than `option_layer`: its `Either` needs one response type on both
    // sides, and the limiter changes the body's.
    let api = if management.is_some() {
        // A custom endpoint's own limits, inside the key's. Only the management API makes
        // custom endpoints, so without it this limiter would pass every request through.
        let endpoint_limit = TokenRateLimitLayer::with(
            stores.keep(Store::new(config.redis.as_ref(), "endpoints")?),
            clock,
        )
        .scope(LimitScope::Endpoint);
        BoxCloneSyncService::new(MapResponse::new(
            front
                .layer(endpoint_limit)
                .layer(risk)
                .option_layer(tag)
                .service(api),
            into_axum,
        ))
    } else {
        BoxCloneSyncService::new(MapResponse::new(
            front.layer(risk).option_layer(tag).service(api),
            into_axum,
        ))
    };
    // The inference routes are the router's too, for its 405 (and `allow`) to other methods;
    // `Routes` takes their POSTs before the router sees them.
    let mut rest = Router::new().route("/health", get(|| async { "ok" }));
    for path in INFERENCE_ROUTES {
        rest = rest.route(path, post_service(api.clone()));
    }
    let mut app = rest.merge(reads);
    if let Some(api) = management {
        // Authorised by management tokens, not API keys: outside BearerAuth.
        for route in MANAGEMENT_ROUTES {
            app = app.route_service(route, api.clone());
        }
    }
    let ip_limit = match &config.ip_limit {
        None => IpRateLimitLayer::disabled(),
        // It stands in front of every route, health and the management API too: a limit of 0
        // would serve nothing, for ever.
        Some(ip) if ip.limit == 0 => {
            return Err(
                "ip_limit.limit: at least 1 (leave the section out for no per-IP limit)".to_owned(),
            );
        }
        Some(ip) => IpRateLimitLayer::new(ip.limit, ip.window.0)
            .trusted_proxies(TrustedProxies::clone(&trusted))
            .peer_addr(|e| e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())),
    };
    // The outer layers wrap the router once, as one service, rather than through
    // `Router::layer`, which wraps every route in its own boxed, cloned-per-request service:
    // three such levels cost about a microsecond a request (`benches/gateway.rs`).
    let outer = tower::ServiceBuilder::new()
        .layer(
            ErrorEnvelopeLayer::new()
                .dialect(dialect)
                .trust_incoming_request_id(config.trust_request_id),
        )
        .layer(LogLayer::new(config.log_requests))
        .layer(ip_limit)
        .service(Routes { api, rest: app });
    Ok((MapResponse::new(outer, into_axum), stores))
}

/// The limiters' stores that write in the background: Redis's.
#[derive(Debug, Default)]
pub(crate) struct Stores {
    #[cfg(feature = "redis")]
    redis: Vec<tower_maas::limit::RedisStore>,
}

impl Stores {
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_self))]
    fn keep(&mut self, store: Store) -> Store {
        #[cfg(feature = "redis")]
        if let Store::Redis(redis) = &store {
            self.redis.push(redis.clone());
        }
        store
    }

    /// Once their writes begun so far have ended: the last answers' reconciliations, and
    /// decisions still out that may give an admission back.
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_self))]
    pub(crate) async fn flushed(&self) {
        #[cfg(feature = "redis")]
        for store in &self.redis {
            store.flushed().await;
        }
    }
}

type Outer = ErrorEnvelope<Log<IpRateLimit<Routes>>>;

/// The paths a model answers, each behind every layer and then `Answer`: the video tasks'
/// creation, and the others answered by the mock or the model's upstream.
pub(crate) const INFERENCE_ROUTES: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    VIDEO_TASKS,
];

const VIDEO_TASKS: &str = "/v1/video/generations";

/// The routes: a `POST` to an inference route goes to the layers around the model (`api`),
/// called in place; every other request goes to the router (health, model list, tasks, the
/// management API, 404 and 405). Inside the router (`route_layer`), the boxed layers would be
/// cloned for every request, every `Arc` in them counted up and down again: counts that two
/// cores serving at once pass back and forth (`benches/gateway.rs`, `contend`).
#[derive(Clone)]
pub(crate) struct Routes {
    api: BoxCloneSyncService<Request, Response, Infallible>,
    rest: Router,
}

impl Service<Request> for Routes {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        <BoxCloneSyncService<Request, Response, Infallible> as Service<Request>>::Future,
        <Router as Service<Request>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready!(self.api.poll_ready(cx))?;
        Service::<Request>::poll_ready(&mut self.rest, cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.method() == Method::POST && INFERENCE_ROUTES.contains(&request.uri().path()) {
            Either::Left(self.api.call(request))
        } else {
            Either::Right(self.rest.call(request))
        }
    }
}

/// The whole gateway as one service: the outer layers around the routes, giving axum's body
/// type, so that `serve.rs` (or `axum::serve`) serves it as it would a `Router`. Wrapping it in a `Router`
/// instead (`fallback_service`) would route every request twice and clone a boxed service for
/// it.
pub(crate) type Gateway = MapResponse<Outer, fn(<Outer as Service<Request>>::Response) -> Response>;

/// An answer's body in axum's box.
fn into_axum<B>(response: http::Response<B>) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.map(Body::new)
}

/// The custom-endpoint management API: its registry (a file when configured), the accounts
/// and their tokens, the services endpoints may point at.
fn management(
    config: &ManagementConfig,
    services: ServiceDirectory,
) -> Result<ManagementApi<Arc<dyn EndpointRegistry>>, String> {
    let registry: Arc<dyn EndpointRegistry> = match &config.registry_file {
        Some(path) => Arc::new(
            FileRegistry::open(path).map_err(|e| format!("management.registry_file: {e}"))?,
        ),
        None => Arc::new(InMemoryRegistry::new()),
    };
    let mut access = ManagementAccess::new();
    for (i, account) in config.accounts.iter().enumerate() {
        let mut grant = Account::new(account.name.as_str());
        for project in account.projects.iter().flatten() {
            grant = grant.project(project.as_str());
        }
        if let Some(quota) = account.endpoint_quota {
            grant = grant.endpoint_quota(quota);
        }
        let digest = match (&account.token, &account.token_digest) {
            (Some(token), None) => KeyDigest::of(&token.0),
            (None, Some(digest)) => digest
                .parse::<KeyDigest>()
                .map_err(|e| format!("management.accounts[{i}].token_digest: {e}"))?,
            _ => {
                return Err(format!(
                    "management.accounts[{i}]: give exactly one of token or token_digest"
                ));
            }
        };
        // Refused here, in words, rather than by the builder's panic.
        if digest == KeyDigest::of("") {
            return Err(format!("management.accounts[{i}]: the token is empty"));
        }
        if access.has_token(&digest) {
            return Err(format!(
                "management.accounts[{i}]: the same token as an account before it"
            ));
        }
        access = access.token_digest(digest, grant);
    }
    Ok(ManagementApi::new(registry, access, services))
}

async fn list_models(State(models): State<Arc<Models>>) -> Response {
    let data: Vec<_> = models
        .names
        .iter()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "tower-maas"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Starts a (mock) video-generation task owned by the calling key.
fn create_task(models: &Models, principal: Option<&Principal>, id: RequestId) -> Response {
    let Some(principal) = principal else {
        // BearerAuth stands in front of every inference route: a stack without it is a bug.
        return MaasError::Internal
            .to_response(Dialect::Dual, &id)
            .into_response();
    };
    // A fresh id, never the request's: a trusted incoming x-request-id is the client's to
    // choose, and a repeated one would hand an existing task to another key.
    let task_id = format!("task-{}", RequestId::generate());
    models
        .tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(task_id.clone(), principal.key_id());
    axum::Json(json!({"task_id": task_id, "status": "queued"})).into_response()
}

/// A task's state, for the key that created it: 81108 when unknown, 81109 (401, the seed's
/// status for video tasks) for another key's.
async fn query_task(
    State(models): State<Arc<Models>>,
    Extension(id): Extension<RequestId>,
    Extension(principal): Extension<Principal>,
    task_id: Result<Path<String>, PathRejection>,
    uri: http::Uri,
) -> Response {
    // An id that is not UTF-8 once decoded names no task (ids are ASCII): unknown, as sent,
    // rather than axum's plain-text 400.
    let task_id = match task_id {
        Ok(Path(task_id)) => task_id,
        Err(_) => uri.path().rsplit('/').next().unwrap_or_default().to_owned(),
    };
    let owner = models
        .tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .owners
        .get(&task_id)
        .copied();
    let refuse = |error: MaasError| error.to_response(Dialect::Dual, &id).into_response();
    match owner {
        None => refuse(MaasError::TaskNotFound { task_id }),
        Some(owner) if owner != principal.key_id() => {
            refuse(MaasError::VideoTaskForbidden { task_id })
        }
        Some(_) => axum::Json(json!({
            "task_id": task_id,
            "status": "succeeded",
            "video_url": format!("https://video.invalid/{task_id}.mp4"),
        }))
        .into_response(),
    }
}

/// The inference routes' innermost service, behind every layer: the builtin mock, a video
/// task, or the model's upstream. Called directly, not through a `Router`: `Routes` has
/// matched the path already, and a router would route again and count the shared `Models` up
/// and down three times a request (its state, the handler's and the extractor's), counts two
/// cores serving at once pass back and forth. The mock answers without a future of its own.
#[derive(Clone)]
struct Answer {
    models: Arc<Models>,
}

impl<B> Service<http::Request<B>> for Answer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        std::future::Ready<Result<Response, Infallible>>,
        std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answered = |response| Either::Left(std::future::ready(Ok(response)));
        let (parts, body) = request.into_parts();
        let id = parts
            .extensions
            .get::<RequestId>()
            .copied()
            .unwrap_or_else(RequestId::generate);
        if parts.uri.path() == VIDEO_TASKS {
            return answered(create_task(&self.models, parts.extensions.get(), id));
        }
        let Some(parsed) = parts.extensions.get::<Arc<ParsedRequest>>() else {
            return answered(
                MaasError::InvalidRequestBody
                    .to_response(Dialect::Dual, &id)
                    .into_response(),
            );
        };
        // A custom endpoint's name stands for its model.
        let route = parts.extensions.get::<EndpointRoute>();
        let model = route.map(EndpointRoute::model).or(parsed.model());
        let Some(&at) = model.and_then(|m| self.models.upstream_of.get(m)) else {
            return answered(mock::answer(id, parsed, self.models.style));
        };
        let models = Arc::clone(&self.models);
        Either::Right(Box::pin(async move {
            let upstream = &models.upstreams[at];
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return Ok(MaasError::UnparsableBody
                        .to_response(Dialect::Dual, &id)
                        .into_response());
                }
            };
            Ok(proxy::forward(upstream, models.timeout, id, parts, body).await)
        }))
    }
}
