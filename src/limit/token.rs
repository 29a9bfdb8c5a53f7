//! `TokenRateLimit`: requests and tokens per minute per API key, with usage reconciliation.

use crate::buffered::take_readied;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::clock::{Clock, MonotonicClock};
use super::gcra::Rate;
use super::headers;
use super::store::{
    Acquire, Acquired, Exceeded, LimitKey, MemoryStore, Outcome, RateStore, Reconcile, Snapshot,
};
use super::usage::{Meter, Settle, Settled, UsageBody, UsageReport};
use crate::auth::{Principal, Quota};
use crate::body::{MaasBody, media_type_is};
use crate::error::{MaasError, refuse};

/// The layer's name in refusal events.
const LAYER: &str = "TokenRateLimit";

/// How many requests of a key's RPM may come at once.
///
/// ```
/// use tower_maas::limit::{Burst, TokenRateLimitLayer};
///
/// // A key's whole RPM at once, as a plain per-minute count would allow.
/// let layer = TokenRateLimitLayer::new().burst(Burst::PerMinuteOver(1));
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Burst {
    /// `rpm / n` (at least one): MaaS refuses more than about N/30 requests in one second, so
    /// the default is `PerMinuteOver(30)`.
    PerMinuteOver(u64),
    /// A fixed number.
    Requests(u64),
}

impl Burst {
    fn of(self, rpm: u64) -> u64 {
        match self {
            Self::PerMinuteOver(n) => rpm.div_ceil(n.max(1)).max(1),
            Self::Requests(n) => n.max(1),
        }
    }
}

/// Whose limits a [`TokenRateLimit`] applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitScope {
    /// The API key's RPM, TPM and quota, from the request's
    /// [`Principal`](crate::auth::Principal).
    #[default]
    Key,
    /// A custom endpoint's own RPM and TPM, from the request's
    /// [`EndpointRoute`](crate::EndpointRoute): stack this limiter inside the key's one, so a
    /// request through an endpoint passes both (see [`endpoint`](crate::endpoint)). It charges
    /// no quota; the key's limiter does.
    Endpoint,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    scope: LimitScope,
    burst: Burst,
    default_max_tokens: u64,
    default_reservation: u64,
    headers: bool,
}

// Aligned to a cache line, so that the `Arc`'s counts, which every request moves, sit on a line
// of their own and not on the fields every core reads (`benches/gateway.rs contend`).
#[repr(align(64))]
struct Shared<St, C> {
    store: St,
    clock: C,
    config: Config,
}

/// Layer that applies [`TokenRateLimit`]. See the [module docs](super).
///
/// ```
/// use tower_maas::limit::{Burst, TokenRateLimitLayer};
///
/// // Inside BearerAuth (it reads the key's RPM, TPM and quota) and the validator (the
/// // prompt's tokens); 512 tokens reserved for a request that gives no max_tokens.
/// let layer = TokenRateLimitLayer::new()
///     .burst(Burst::PerMinuteOver(30))
///     .default_max_tokens(512);
/// # let _ = layer;
/// ```
///
/// # Panics
///
/// The builder methods panic on a layer that has been cloned, as the clones share one state:
/// configure the layer, then clone it.
pub struct TokenRateLimitLayer<St = MemoryStore, C = MonotonicClock> {
    shared: Arc<Shared<St, C>>,
}

impl TokenRateLimitLayer {
    /// Limits in memory, on the system clock.
    pub fn new() -> Self {
        Self::with(MemoryStore::new(), MonotonicClock::new())
    }
}

impl Default for TokenRateLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<St: RateStore, C: Clock> TokenRateLimitLayer<St, C> {
    /// Limits in `store`, on `clock` (a [`ManualClock`](super::ManualClock) in tests).
    pub fn with(store: St, clock: C) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                clock,
                config: Config {
                    scope: LimitScope::Key,
                    burst: Burst::PerMinuteOver(30),
                    default_max_tokens: 1024,
                    default_reservation: 1024,
                    headers: true,
                },
            }),
        }
    }

    fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("configure before cloning the layer");
        change(&mut shared.config);
        self
    }

    /// Whose limits to apply (default [`LimitScope::Key`]).
    ///
    /// ```
    /// use tower_maas::limit::{LimitScope, TokenRateLimitLayer};
    ///
    /// // Endpoint limits inside the key's: `ServiceBuilder` order, outer first.
    /// let stack = tower::ServiceBuilder::new()
    ///     .layer(TokenRateLimitLayer::new())
    ///     .layer(TokenRateLimitLayer::new().scope(LimitScope::Endpoint));
    /// # let _ = stack;
    /// ```
    pub fn scope(self, scope: LimitScope) -> Self {
        self.config(|c| c.scope = scope)
    }

    /// How many requests of the RPM may come at once (default: `rpm / 30`).
    pub fn burst(self, burst: Burst) -> Self {
        self.config(|c| c.burst = burst)
    }

    /// Tokens reserved for the completion when a request gives no `max_tokens` (default 1024):
    /// chat and embeddings. A completion without one reserves vLLM's own default, 16, which
    /// the validator's [`ParsedRequest`](crate::validate::ParsedRequest) gives.
    pub fn default_max_tokens(self, tokens: u64) -> Self {
        self.config(|c| c.default_max_tokens = tokens)
    }

    /// Tokens reserved for a request that no validator parsed (default 1024); corrected by the
    /// reported usage like any other reservation.
    pub fn default_reservation(self, tokens: u64) -> Self {
        self.config(|c| c.default_reservation = tokens)
    }

    /// Whether to write the `x-ratelimit-*` headers (default: yes). `retry-after` on a 429 is
    /// always written.
    pub fn headers(self, on: bool) -> Self {
        self.config(|c| c.headers = on)
    }
}

impl<St, C> Clone for TokenRateLimitLayer<St, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St, C> fmt::Debug for TokenRateLimitLayer<St, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRateLimitLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, St, C> Layer<S> for TokenRateLimitLayer<St, C> {
    type Service = TokenRateLimit<S, St, C>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenRateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Middleware that limits requests and tokens per minute per key. See the [module docs](super).
pub struct TokenRateLimit<S, St = MemoryStore, C = MonotonicClock> {
    inner: S,
    shared: Arc<Shared<St, C>>,
}

impl<S, St, C> TokenRateLimit<S, St, C> {
    define_inner_service_accessors!();
}

impl<S: Clone, St, C> Clone for TokenRateLimit<S, St, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St, C> fmt::Debug for TokenRateLimit<S, St, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What an admitted request carries to its response.
struct Admitted {
    limits: (Option<u64>, Option<u64>),
    snapshot: Snapshot,
    headers: bool,
    settle: Arc<dyn Settle>,
    metered: Metered,
}

/// Whether the answer's usage is read.
enum Metered {
    /// Nothing to correct and no report.
    No,
    /// A TPM or a quota to correct (and a report, if any, filled on the way).
    Yes,
    /// Only for a [`UsageReport`], unless a limiter further in reads the answer already: one
    /// that reads for itself claims the report at its admission, one that would read for the
    /// report alone when its answer comes back, which is before this one's.
    ForReport(UsageReport),
}

/// Marks a refusal of a token limiter, so that a limiter outside it gives its own admission
/// back, whatever the refusal says (81101, 81103, 81005, or a store that failed closed).
#[derive(Clone, Copy, Debug)]
struct LimiterRefusal;

/// Reports the response's usage back to the store and the quota.
struct Settlement<St, C> {
    shared: Arc<Shared<St, C>>,
    key: LimitKey,
    requests: Option<Rate>,
    tokens: Option<Rate>,
    reserved: u64,
    quota: Option<Arc<Quota>>,
    /// Decided by the store's fallback: reconciled there (see [`Reconcile::fallback`]).
    fallback: bool,
    /// Who else wants to know what the answer used (see [`UsageReport`]).
    report: Option<UsageReport>,
}

impl<St: RateStore, C: Clock> Settle for Settlement<St, C> {
    fn settle(&self, outcome: Settled) {
        if let Some(report) = &self.report {
            report.record(outcome);
        }
        // The tokens used, for the reservation's correction (`None`: the reservation stands);
        // whether the request slot goes back; what the quota pays (`None`: nothing, the
        // request never reached the model).
        let (used, release, charged) = match outcome {
            Settled::Withdrawn => (Some(0), self.requests, None),
            Settled::Failed => (Some(0), None, None),
            Settled::Completed(Some(used)) => (Some(used), None, Some(used)),
            // No usage reported: the reservation stands, and is what the quota pays.
            Settled::Completed(None) => (None, None, Some(self.reserved)),
            // A stream that broke keeps its reservation; the quota pays what was seen of it.
            Settled::Broken(seen) => (None, None, Some(seen.unwrap_or(self.reserved))),
        };
        // Nothing charged is nothing to tell the store.
        let charged = charged.filter(|&tokens| tokens > 0);
        let quota = self.quota.as_ref().zip(charged).map(|(quota, charged)| {
            quota.charge(charged);
            charged
        });
        let tokens = self.tokens.zip(used);
        if tokens.is_none() && release.is_none() && quota.is_none() {
            return;
        }
        let mut settled = Reconcile::new(self.key, self.shared.clock.now());
        if let Some((rate, used)) = tokens {
            // A usage beyond the reservation plus a whole bucket is not believed: at worst the
            // key waits one minute more, never forever. (The quota pays the usage reported.)
            settled.tokens = Some(rate);
            settled.reserved = self.reserved;
            settled.used = used.min(self.reserved.saturating_add(rate.burst()));
        }
        settled.release = release;
        settled.quota = quota;
        settled.fallback = self.fallback;
        self.shared.store.reconcile(settled);
    }
}

impl<S, St, C, ReqBody, ResBody> Service<Request<ReqBody>> for TokenRateLimit<S, St, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: RateStore,
    C: Clock,
    ResBody: http_body::Body,
{
    type Response = Response<MaasBody<UsageBody<ResBody>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, St, C, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(ask) = self.ask(&req) else {
            // Not limited here: the answer is read only for a report.
            let admitted = req
                .extensions()
                .get::<UsageReport>()
                .map(|report| Admitted {
                    limits: (None, None),
                    snapshot: Snapshot::default(),
                    headers: false,
                    settle: report.settler(),
                    metered: Metered::ForReport(report.clone()),
                });
            return ResponseFuture {
                state: State::Called {
                    future: self.inner.call(req),
                    admitted,
                },
            };
        };
        let state = match self.shared.store.acquire(ask.acquire) {
            Acquired::Now(outcome) => self.decided(outcome, ask, req),
            Acquired::Later(pending) => {
                let service = take_readied(&mut self.inner);
                State::Waiting {
                    pending,
                    rest: Some(Waiting {
                        req,
                        service,
                        ask,
                        shared: Arc::clone(&self.shared),
                    }),
                }
            }
        };
        ResponseFuture { state }
    }
}

/// A request's limits and reservation, ready for the store.
struct Ask {
    acquire: Acquire,
    limits: (Option<u64>, Option<u64>),
    quota: Option<Arc<Quota>>,
}

impl<S, St: RateStore, C: Clock> TokenRateLimit<S, St, C> {
    fn ask<B>(&self, req: &Request<B>) -> Option<Ask> {
        let config = &self.shared.config;
        let (key, rpm, tpm, quota) = match config.scope {
            LimitScope::Key => {
                let principal = req.extensions().get::<Principal>()?;
                let quota = principal
                    .quota()
                    .limit()
                    .is_some()
                    .then(|| Arc::clone(principal.quota()));
                (
                    principal.key_id().0,
                    principal.rpm(),
                    principal.tpm(),
                    quota,
                )
            }
            LimitScope::Endpoint => {
                let route = req.extensions().get::<crate::EndpointRoute>()?;
                (
                    route.limit_key(),
                    route.rpm_limit(),
                    route.tpm_limit(),
                    None,
                )
            }
        };
        if rpm.is_none() && tpm.is_none() && quota.is_none() {
            return None;
        }
        let reserve = reservation(req, config);
        Some(Ask {
            acquire: Acquire {
                key: LimitKey(key),
                requests: rpm.map(|n| Rate::per_minute(n, config.burst.of(n))),
                tokens: tpm.map(|n| Rate::per_minute(n, n)),
                reserve,
                now: self.shared.clock.now(),
                quota: quota.as_ref().and_then(|q| q.limit()),
            },
            limits: (rpm, tpm),
            quota,
        })
    }

    fn decided<B>(&mut self, outcome: Outcome, ask: Ask, req: Request<B>) -> State<S, St, C, B>
    where
        S: Service<Request<B>>,
    {
        match settle_outcome(&self.shared, outcome, ask, req.extensions()) {
            Decided::Refused(response) => State::Refused {
                response: Some(response),
            },
            Decided::Admitted(admitted) => State::Called {
                future: self.inner.call(req),
                admitted: Some(admitted),
            },
        }
    }
}

/// The tokens to reserve: the parsed prompt plus `max_tokens` when a validator ran, else the
/// configured default.
#[cfg(feature = "validate")]
fn reservation<B>(req: &Request<B>, config: &Config) -> u64 {
    match req
        .extensions()
        .get::<Arc<crate::validate::ParsedRequest>>()
    {
        Some(parsed) => parsed
            .prompt_tokens()
            .saturating_add(parsed.max_tokens().unwrap_or(config.default_max_tokens)),
        None => config.default_reservation,
    }
}

#[cfg(not(feature = "validate"))]
fn reservation<B>(_: &Request<B>, config: &Config) -> u64 {
    config.default_reservation
}

/// A decision turned into what the request needs next.
enum Decided {
    Admitted(Admitted),
    Refused(Response<Full<Bytes>>),
}

/// Turns a decision into a refusal, or into what the response needs.
fn settle_outcome<St: RateStore, C: Clock>(
    shared: &Arc<Shared<St, C>>,
    outcome: Outcome,
    ask: Ask,
    extensions: &http::Extensions,
) -> Decided {
    let config = shared.config;
    match outcome {
        Outcome::Admitted(snapshot) => {
            let report = extensions.get::<UsageReport>().cloned();
            // Every limiter that reads the answer records into the report.
            let corrects = ask.acquire.tokens.is_some() || ask.quota.is_some();
            let metered = match &report {
                Some(report) if corrects => {
                    report.claim();
                    Metered::Yes
                }
                Some(report) => Metered::ForReport(report.clone()),
                None if corrects => Metered::Yes,
                None => Metered::No,
            };
            // Every admitted request can be withdrawn by a limiter further in, so even an
            // RPM-only key keeps a way back to its slot.
            let settle = Arc::new(Settlement {
                shared: Arc::clone(shared),
                key: ask.acquire.key,
                requests: ask.acquire.requests,
                tokens: ask.acquire.tokens,
                reserved: ask.acquire.reserve,
                quota: ask.quota,
                fallback: snapshot.decided_by_fallback(),
                report,
            });
            Decided::Admitted(Admitted {
                limits: ask.limits,
                snapshot,
                headers: config.headers,
                settle,
                metered,
            })
        }
        Outcome::Refused {
            exceeded,
            wait,
            snapshot,
        } => {
            let (error, limit) = match exceeded {
                Exceeded::Requests => {
                    let rpm = ask.limits.0.unwrap_or_default();
                    (MaasError::RpmExceeded { rpm }, rpm)
                }
                Exceeded::Tokens => {
                    let tpm = ask.limits.1.unwrap_or_default();
                    (MaasError::TpmExceeded { tpm }, tpm)
                }
            };
            let mut response = refuse(LAYER, error, StatusCode::TOO_MANY_REQUESTS, extensions);
            // A limit of 0 admits nothing however long the client waits ([`Rate::per`]): no
            // header names a time to come back.
            if limit == 0 {
                return refused(response);
            }
            if config.headers {
                headers::write(response.headers_mut(), ask.limits, &snapshot);
            }
            response
                .headers_mut()
                .insert(RETRY_AFTER, headers::retry_after(wait));
            refused(response)
        }
        Outcome::QuotaExhausted => {
            // A key-state refusal: its status is the one the key's authentication chose.
            let error = MaasError::QuotaExhausted;
            let status = extensions
                .get::<Principal>()
                .map_or(error.status(), Principal::key_state_status);
            refused(refuse(LAYER, error, status, extensions))
        }
        // The store cannot decide and fails closed: the request is not served, and nothing of
        // the cause is shown.
        Outcome::Unavailable => refused(refuse(
            LAYER,
            MaasError::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            extensions,
        )),
        Outcome::Oversized => {
            let error = MaasError::TokensOverLimit {
                tokens: ask.acquire.reserve,
                tpm: ask.limits.1.unwrap_or_default(),
            };
            let status = error.status();
            refused(refuse(LAYER, error, status, extensions))
        }
    }
}

/// A refusal of this limiter, marked as one for the limiters outside it.
fn refused(mut response: Response<Full<Bytes>>) -> Decided {
    response.extensions_mut().insert(LimiterRefusal);
    Decided::Refused(response)
}

/// A request waiting for a store's round trip, with the readied service it will call.
struct Waiting<S, St, C, B> {
    req: Request<B>,
    service: S,
    ask: Ask,
    shared: Arc<Shared<St, C>>,
}

pin_project! {
    /// Response future of [`TokenRateLimit`].
    pub struct ResponseFuture<S, St, C, B>
    where
        S: Service<Request<B>>,
        St: RateStore,
    {
        #[pin]
        state: State<S, St, C, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, St, C, B>
    where
        S: Service<Request<B>>,
        St: RateStore,
    {
        Refused { response: Option<Response<Full<Bytes>>> },
        Waiting { #[pin] pending: St::Pending, rest: Option<Waiting<S, St, C, B>> },
        Called { #[pin] future: S::Future, admitted: Option<Admitted> },
    }
}

impl<S, St, C, B> fmt::Debug for ResponseFuture<S, St, C, B>
where
    S: Service<Request<B>>,
    St: RateStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, St, C, B, ResBody> Future for ResponseFuture<S, St, C, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    St: RateStore,
    C: Clock,
    // Its announced length sizes the buffer a JSON answer's usage is read from.
    ResBody: http_body::Body,
{
    type Output = Result<Response<MaasBody<UsageBody<ResBody>>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Refused { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(MaasBody::from_full)));
                }
                StateProj::Called { future, admitted } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(response) => response,
                        Err(err) => {
                            // The backend failed (a timeout, a refused connection): nothing was
                            // generated, so nothing stays reserved.
                            if let Some(admitted) = admitted.take() {
                                admitted.settle.settle(Settled::Failed);
                            }
                            return Poll::Ready(Err(err));
                        }
                    };
                    return Poll::Ready(Ok(finish(response, admitted.take())));
                }
                StateProj::Waiting { pending, rest } => {
                    let outcome = ready!(pending.poll(cx));
                    let Waiting {
                        req,
                        mut service,
                        ask,
                        shared,
                    } = rest.take().expect("polled after completion");
                    match settle_outcome(&shared, outcome, ask, req.extensions()) {
                        Decided::Refused(response) => State::Refused {
                            response: Some(response),
                        },
                        Decided::Admitted(admitted) => State::Called {
                            future: service.call(req),
                            admitted: Some(admitted),
                        },
                    }
                }
            };
            this.state.set(next);
        }
    }
}

/// Writes the headers into the response head and meters the body.
fn finish<B: http_body::Body>(
    mut response: Response<B>,
    admitted: Option<Admitted>,
) -> Response<MaasBody<UsageBody<B>>> {
    let Some(admitted) = admitted else {
        return response.map(|b| MaasBody::new(UsageBody::plain(b)));
    };
    let plain = |response: Response<B>| response.map(|b| MaasBody::new(UsageBody::plain(b)));
    let settle = admitted.settle;
    if response.extensions().get::<LimiterRefusal>().is_some() {
        // A limiter further in (an endpoint's) refused: this one's slot and tokens go back,
        // and its refusal keeps the headers that explain it.
        settle.settle(Settled::Withdrawn);
        return plain(response);
    }
    if admitted.headers {
        headers::write(response.headers_mut(), admitted.limits, &admitted.snapshot);
    }
    match admitted.metered {
        // Nothing to correct: no copy of the body is held.
        Metered::No => return plain(response),
        Metered::ForReport(report) if !report.claim() => return plain(response),
        Metered::Yes | Metered::ForReport(_) => {}
    }
    if let Some(&crate::ReportedUsage(used)) = response.extensions().get() {
        // An inner layer read the body (risk control): it reports the usage.
        settle.settle(Settled::Completed(used));
        return plain(response);
    }
    if !response.status().is_success() {
        // The backend refused: no tokens were used.
        settle.settle(Settled::Failed);
        return plain(response);
    }
    let sse = media_type_is(response.headers(), b"text/event-stream");
    if !sse
        && response.headers().contains_key(CONTENT_TYPE)
        && !media_type_is(response.headers(), b"application/json")
    {
        // Not JSON nor SSE (gRPC's protobuf, say): no usage can be read; the reservation
        // stands and the quota pays it, without holding a copy of the body.
        settle.settle(Settled::Completed(None));
        return plain(response);
    }
    response.map(|b| {
        let meter = Meter::new(&b, sse, settle);
        MaasBody::new(UsageBody::metered(b, meter))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointRoute;
    use crate::auth::{InMemoryKeyStore, KeyPolicy};
    use crate::limit::usage::METERS_MADE;
    use crate::limit::{ManualClock, MemoryStore};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A request dropped before its answer's head is never settled: its reservation stands in
    /// the TPM until the bucket refills (the model may have worked, or not yet been reached),
    /// and the quota, with no answer to bill, pays nothing.
    #[tokio::test]
    async fn a_request_dropped_before_its_answer_keeps_its_reservation_only() {
        let keys = InMemoryKeyStore::new();
        let principal = keys
            .get(
                keys.insert("sk-test", KeyPolicy::new().tpm(1000).quota(10_000))
                    .unwrap(),
            )
            .unwrap();
        let never = tower::service_fn(|_: Request<Full<Bytes>>| async {
            std::future::pending::<Result<Response<Full<Bytes>>, std::convert::Infallible>>().await
        });
        let limiter = TokenRateLimitLayer::with(MemoryStore::new(), ManualClock::new())
            .default_reservation(600)
            .layer(never);
        let request = || {
            let mut request = Request::new(Full::new(Bytes::new()));
            request.extensions_mut().insert(principal.clone());
            request
        };
        // Polled until the backend is called, then dropped.
        let call = tower::ServiceExt::oneshot(limiter.clone(), request());
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(10), call).await;
        assert!(dropped.is_err());
        assert_eq!(principal.quota().used(), 0);
        // 600 of the 1000 still held: another 600 does not fit (on a clock that stands still).
        let refused = tower::ServiceExt::oneshot(limiter, request())
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    /// A key's limiter and an endpoint's inside it, over one answer that reports its usage: the
    /// answer is read once for the request's `UsageReport` unless both limiters correct a TPM
    /// (each then reads it for its own store), whether the key is limited (RPM, or RPM and TPM)
    /// or not at all. Any of the claims missing reads it twice.
    #[tokio::test]
    async fn an_answer_is_read_once_for_its_report() {
        for (key, endpoint_tpm, reads) in [
            ("rpm", None, 1),
            ("rpm and tpm", None, 1),
            ("rpm", Some(10_000), 1),
            ("rpm and tpm", Some(10_000), 2),
            ("unlimited", None, 1),
            ("unlimited", Some(10_000), 1),
        ] {
            let policy = match key {
                "unlimited" => KeyPolicy::new(),
                "rpm" => KeyPolicy::new().rpm(60),
                _ => KeyPolicy::new().rpm(60).tpm(10_000),
            };
            let keys = InMemoryKeyStore::new();
            let principal = keys.get(keys.insert("sk-test", policy).unwrap()).unwrap();
            let endpoint = EndpointRoute::new("team-a", "m", 7)
                .rpm(Some(60))
                .tpm(endpoint_tpm);
            let report = UsageReport::new();
            let answer = tower::service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .header(CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(
                            br#"{"choices":[],"usage":{"total_tokens":12}}"#,
                        )))
                        .unwrap(),
                )
            });
            let clock = ManualClock::new();
            let stack = TokenRateLimitLayer::with(MemoryStore::new(), clock.clone()).layer(
                TokenRateLimitLayer::with(MemoryStore::new(), clock)
                    .scope(LimitScope::Endpoint)
                    .layer(answer),
            );
            let mut request = Request::new(Full::new(Bytes::new()));
            request.extensions_mut().insert(principal);
            request.extensions_mut().insert(endpoint);
            request.extensions_mut().insert(report.clone());
            let before = METERS_MADE.with(std::cell::Cell::get);
            let response = stack.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(status, StatusCode::OK, "{body:?}");
            let made = METERS_MADE.with(std::cell::Cell::get) - before;
            assert_eq!(report.tokens(), Some(12), "{key:?} {endpoint_tpm:?}");
            assert_eq!(made, reads, "{key:?} {endpoint_tpm:?}");
        }
    }
}
