//! Rate limits: [`TokenRateLimit`] (requests and tokens per minute per API key, with usage
//! reconciliation and the key's quota) and [`IpRateLimit`] (requests per client IP; see
//! [`IpRateLimitLayer`] for the client address, trusted proxies and the bound on memory).
//!
//! # `TokenRateLimit`
//!
//! Needs the [`Principal`](crate::auth::Principal) that [`BearerAuth`](crate::auth::BearerAuth)
//! puts in the request (requests without one pass untouched), or, scoped to custom endpoints
//! ([`LimitScope::Endpoint`]), the endpoint's route that the validator puts there; and uses the
//! validator's [`ParsedRequest`](crate::validate::ParsedRequest) when present.
//!
//! - **RPM** → 429 ModelArts.81101. GCRA with a burst of `rpm / 30` by default ([`Burst`]), so
//!   MaaS's smoothing holds: with RPM = N, more than about N/30 requests in one second are
//!   refused, and over any minute at most N + burst are admitted.
//! - **TPM** → 429 ModelArts.81103. Before forwarding, `prompt tokens + max_tokens` (or, for
//!   chat and embeddings, [`default_max_tokens`](TokenRateLimitLayer::default_max_tokens);
//!   completions default to vLLM's 16) are reserved from a bucket
//!   that holds a minute's tokens; a reservation larger than the bucket can never fit and is
//!   refused with a 400 (`ModelArts.81103`, `Too many tokens requested: …`), not an endless 429.
//!   Requests and tokens are decided together: when the tokens are refused, the request slot is
//!   given back.
//! - **Reconciliation**: the response's `usage` — in a JSON body, or in an SSE stream (MaaS
//!   repeats a cumulative usage in every chunk, OpenAI sends one in the last; the latest counts)
//!   — corrects the reservation, charging or refunding the difference (a refund never raises
//!   capacity above the limit). A non-2xx answer used nothing and refunds it all. A body that
//!   ends without usage keeps its reservation; a stream that breaks (error, or the client gone)
//!   keeps it too, and so does a request dropped before its answer's head.
//! - **Quota**: the same usage is charged to the key's [`Quota`](crate::auth::Quota), so an
//!   exhausted key gets 81005 from `BearerAuth` on its next request. The quota is checked at
//!   admission, not reserved: requests admitted together may pass it by what they use. An
//!   answer without usage is charged its reservation; a request dropped before its answer
//!   (the client gone, a timeout outside) keeps its reservation in the TPM and costs the quota
//!   nothing, as no answer reached anyone.
//! - **Headers**, in the response head before any body byte (streams too): the OpenAI
//!   `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` of the dimensions limited, and
//!   `retry-after` on a 429 (seconds, rounded up). [`TokenRateLimitLayer::headers`] turns the
//!   first off.
//!
//! State lives in a [`RateStore`]: [`MemoryStore`] here, keyed by the dense key id, or
//! `RedisStore` (feature `redis`) shared by gateway replicas. Time comes from a [`Clock`]:
//! [`MonotonicClock`] by default, [`CoarseClock`] to read it from memory (half the cost of a
//! check), [`ManualClock`] in tests. A second limiter scoped to [`LimitScope::Endpoint`],
//! stacked inside the key's, applies a custom endpoint's own limits (see
//! [`endpoint`](crate::endpoint)).
//!
//! ```
//! use axum::{Router, routing::post};
//! use tower_maas::limit::TokenRateLimitLayer;
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(|| async { "ok" }))
//!     .layer(TokenRateLimitLayer::new());
//! ```

mod clock;
mod gcra;
mod headers;
mod ip;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_breaker;
#[cfg(feature = "redis")]
mod redis_link;
#[cfg(feature = "redis")]
mod redis_used_up;
mod store;
mod token;
mod usage;

pub use self::clock::{Clock, CoarseClock, ManualClock, MonotonicClock, Nanos};
pub use self::gcra::Rate;
pub use self::ip::{
    ClientAddr, InvalidNetwork, IpRateLimit, IpRateLimitLayer, IpResponseFuture, PeerAddr,
    TrustedProxies,
};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{OnUnavailable, RedisStore, RedisStoreBuilder};
pub use self::store::{
    Acquire, Acquired, Exceeded, LimitKey, MemoryStore, Outcome, RateStore, Reconcile, Snapshot,
};
pub use self::token::{Burst, LimitScope, ResponseFuture, TokenRateLimit, TokenRateLimitLayer};
pub use self::usage::{UsageBody, UsageReport};
