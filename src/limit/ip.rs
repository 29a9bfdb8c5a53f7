//! `IpRateLimit`: APIG's per-client-IP throttling (429 APIG.0308).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{FORWARDED, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::clock::{Clock, MonotonicClock, Nanos};
use super::gcra::Rate;
use super::headers;
use crate::body::MaasBody;
use crate::error::{MaasError, ThrottleWindow, refuse};

/// The address of the peer of the connection a request came on, as a server puts it in the
/// request's extensions for [`IpRateLimit`].
///
/// With axum, `into_make_service_with_connect_info::<SocketAddr>()` provides `ConnectInfo`
/// instead: read it with [`IpRateLimitLayer::peer_addr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// Networks whose `X-Forwarded-For`/`Forwarded` headers are believed.
///
/// ```
/// use tower_maas::limit::TrustedProxies;
///
/// let trusted = TrustedProxies::new(["10.0.0.0/8", "127.0.0.1", "fd00::/8"]).unwrap();
/// assert!(trusted.contains("10.1.2.3".parse().unwrap()));
/// assert!(!trusted.contains("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    networks: Vec<(IpAddr, u8)>,
}

/// The error of a network that is not `ADDR` or `ADDR/PREFIX`.
///
/// ```
/// use tower_maas::limit::{InvalidNetwork, TrustedProxies};
///
/// let refused = TrustedProxies::new(["10.0.0.0/33"]).err();
/// assert_eq!(refused, Some(InvalidNetwork("10.0.0.0/33".to_owned())));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidNetwork(pub String);

impl fmt::Display for InvalidNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an address or CIDR network: {:?}", self.0)
    }
}

impl std::error::Error for InvalidNetwork {}

impl TrustedProxies {
    /// Trusts no proxy: the socket's peer is the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts the networks given as `ADDR` or `ADDR/PREFIX`.
    pub fn new<I, S>(networks: I) -> Result<Self, InvalidNetwork>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let networks = networks
            .into_iter()
            .map(|n| {
                let text = n.as_ref().trim();
                let invalid = || InvalidNetwork(text.to_owned());
                let (addr, prefix) = match text.split_once('/') {
                    Some((addr, prefix)) => {
                        (addr, Some(prefix.parse::<u8>().map_err(|_| invalid())?))
                    }
                    None => (text, None),
                };
                let addr = IpAddr::from_str(addr).map_err(|_| invalid())?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let prefix = prefix.unwrap_or(max);
                if prefix > max {
                    return Err(invalid());
                }
                // `::ffff:10.0.0.1` is how dual-stack sockets show IPv4 peers: an IPv4-mapped
                // network is the IPv4 network it maps.
                match addr {
                    IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                        Some(v4) => Ok((IpAddr::V4(v4), prefix - 96)),
                        None => Ok((addr, prefix)),
                    },
                    _ => Ok((addr, prefix)),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { networks })
    }

    /// Whether `ip` is in a trusted network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        // Networks were made canonical, with their prefix, by `new`: mapping one again here
        // would pair an IPv4 address with an IPv6 prefix.
        self.networks.iter().any(|&(net, prefix)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        })
    }

    fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The client of a request that came from `peer` with `headers`: the peer itself, or,
    /// when the peer is trusted, the rightmost untrusted hop of its `X-Forwarded-For` (or
    /// `Forwarded`), as [`IpRateLimit`] counts it. For a proxy's `X-Real-IP`, say.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use tower_maas::limit::TrustedProxies;
    ///
    /// let trusted = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.2".parse().unwrap());
    /// // From the load balancer: the hop before the trusted ones.
    /// assert_eq!(trusted.client("10.0.0.1".parse().unwrap(), &headers), "203.0.113.9".parse::<std::net::IpAddr>().unwrap());
    /// // From anyone else: the peer, whatever it wrote.
    /// assert_eq!(trusted.client("192.0.2.7".parse().unwrap(), &headers), "192.0.2.7".parse::<std::net::IpAddr>().unwrap());
    /// ```
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, self)
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The client: the socket's peer, or, when that peer is a trusted proxy, the rightmost
/// untrusted hop of `X-Forwarded-For` (or of `Forwarded` when no `X-Forwarded-For` came at
/// all). Hops are walked from the right, the end the trusted proxies wrote; the walk stops at the
/// first untrusted hop, and at a hop that cannot be read, whose address is then unknown: the
/// last hop read stands for the client. Nothing left of that is believed, since the client
/// wrote it.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let walk = |hops: &mut dyn Iterator<Item = Option<IpAddr>>, client: &mut IpAddr| {
        for hop in hops {
            let Some(hop) = hop else { return };
            *client = canonical(hop);
            if !trusted.contains(*client) {
                return;
            }
        }
    };
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    if !xff.is_empty() {
        let mut hops = xff.iter().rev().flat_map(|v| v.rsplit(',')).map(parse_hop);
        walk(&mut hops, &mut client);
        return client;
    }
    let forwarded: Vec<&str> = headers
        .get_all(FORWARDED)
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    let mut hops = forwarded
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value))?
            })
        });
    walk(&mut hops, &mut client);
    client
}

/// The address a budget belongs to: an IPv4 address, or an IPv6 /64 (one subscriber's
/// network, which holds 2^64 addresses a single client can rotate through).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `"[2001:db8::1]:80"`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.split(']').next()?.parse().ok()
}

const SHARDS: usize = 64;

/// Per-IP TATs, sharded so that one lock covers a sixty-fourth of the addresses, and bounded.
struct IpTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    tats: HashMap<IpAddr, Nanos>,
    swept_at: usize,
    /// The earliest TAT left by the last sweep: before it passes, a sweep frees nothing, so a
    /// full shard refuses new addresses without scanning.
    next_free: Nanos,
}

/// What the table decided for one address.
enum Verdict {
    Admitted,
    Refused { wait: Nanos },
    Full,
}

impl IpTable {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            // Addresses are chosen by attackers: the hash is keyed per process.
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The shard an address is kept in.
    fn shard_of(&self, ip: IpAddr) -> usize {
        self.hasher.hash_one(ip) as usize % SHARDS
    }

    fn check(&self, ip: IpAddr, rate: Rate, now: Nanos) -> Verdict {
        let mut shard = self.shards[self.shard_of(ip)]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let step = |tat: &mut Nanos| {
            // Saturating: a window is at most a quarter of the range (`ThrottleWindow::nanos`),
            // so this never saturates in use; it only keeps a mistake from wrapping round.
            let new = (*tat).max(now).saturating_add(rate.per_unit());
            if new - now > rate.capacity() {
                return Verdict::Refused {
                    wait: new - now - rate.capacity(),
                };
            }
            *tat = new;
            Verdict::Admitted
        };
        if let Some(tat) = shard.tats.get_mut(&ip) {
            return step(tat);
        }
        // A new address. Entries behind `now` have recovered fully and hold nothing: sweep
        // them when the shard has doubled since its last sweep (constant work per insert), and
        // when it is full, but only once a sweep can free something.
        let full = shard.tats.len() >= self.per_shard;
        if (full && now > shard.next_free) || shard.tats.len() >= 2 * shard.swept_at.max(64) {
            shard.tats.retain(|_, tat| *tat > now);
            shard.swept_at = shard.tats.len();
            shard.next_free = shard.tats.values().copied().min().unwrap_or(0);
        }
        if shard.tats.len() >= self.per_shard {
            return Verdict::Full;
        }
        let shard = &mut *shard;
        let tat = shard.tats.entry(ip).or_insert(0);
        let verdict = step(tat);
        // An address added after the last sweep may be free before any that sweep left: a
        // full shard must not wait for those to sweep this one.
        shard.next_free = shard.next_free.min(*tat);
        verdict
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.tats.len()))
            .sum()
    }
}

/// Reads the peer address from a request's extensions.
pub type PeerAddr = fn(&http::Extensions) -> Option<IpAddr>;

fn client_addr(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions.get::<ClientAddr>().map(|c| c.0.ip())
}

struct IpShared<C> {
    limit: u64,
    window: ThrottleWindow,
    rate: Rate,
    table: IpTable,
    trusted: TrustedProxies,
    peer_addr: PeerAddr,
    clock: C,
}

/// Layer that applies [`IpRateLimit`].
///
/// `limit` requests per window per client IP, all of them allowed at once (APIG's policy is a
/// count per window). An IPv6 client's budget is its /64's: one subscriber's network holds 2^64
/// addresses a single client could rotate through. The table of addresses holds about
/// [`capacity`](IpRateLimitLayer::capacity) entries (default 1 000 000), in 64 shards of a 64th
/// of it each; addresses whose window has passed are evicted as a shard grows. **When an
/// address's shard is full of addresses active within their window, a request from that new
/// address is refused with APIG.0308** (fail closed): a spray of addresses can then slow new
/// clients down, but never gets past the limit or grows memory. Addresses are spread over the
/// shards by a hash keyed at random, so a spray cannot aim at one shard, and fills them alike.
///
/// # Panics
///
/// The builder methods panic on a layer that has been cloned, as the clones share one table:
/// configure the layer, then clone it.
///
/// ```
/// use tower_maas::ThrottleWindow;
/// use tower_maas::limit::{IpRateLimitLayer, TrustedProxies};
///
/// let layer = IpRateLimitLayer::new(5, ThrottleWindow::MINUTE)
///     .trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap());
/// ```
pub struct IpRateLimitLayer<C = MonotonicClock> {
    shared: Arc<IpShared<C>>,
}

impl IpRateLimitLayer {
    /// `limit` requests per `window` per client IP, on the system clock; a `limit` of 0 admits
    /// no request that has a client address.
    pub fn new(limit: u64, window: ThrottleWindow) -> Self {
        Self::with_clock(limit, window, MonotonicClock::new())
    }

    /// No per-IP limit: every request passes untouched (no address is looked for). The place
    /// of the layer in a stack assembled whole, such as
    /// [`MaasLayers`](crate::stack::MaasLayers), when there is no limit to apply.
    pub fn disabled() -> Self {
        Self::new(u64::MAX, ThrottleWindow::MINUTE)
            .capacity(1)
            .peer_addr(|_| None)
    }
}

impl<C: Clock> IpRateLimitLayer<C> {
    /// As [`new`](IpRateLimitLayer::new), on `clock`.
    pub fn with_clock(limit: u64, window: ThrottleWindow, clock: C) -> Self {
        let nanos = window.nanos();
        let rate = Rate::per(limit, nanos, limit);
        Self {
            shared: Arc::new(IpShared {
                limit,
                window,
                rate,
                table: IpTable::new(1_000_000),
                trusted: TrustedProxies::none(),
                peer_addr: client_addr,
                clock,
            }),
        }
    }

    fn config(mut self, change: impl FnOnce(&mut IpShared<C>)) -> Self {
        change(Arc::get_mut(&mut self.shared).expect("configure before cloning the layer"));
        self
    }

    /// Proxies whose forwarded headers are believed (default: none).
    pub fn trusted_proxies(self, trusted: TrustedProxies) -> Self {
        self.config(|s| s.trusted = trusted)
    }

    /// The most addresses tracked at once (default 1 000 000), rounded up to a multiple of the
    /// 64 shards (so at least 64).
    pub fn capacity(self, addresses: usize) -> Self {
        self.config(|s| s.table = IpTable::new(addresses))
    }

    /// How to find the socket's peer (default: the [`ClientAddr`] extension). With axum:
    /// `.peer_addr(|e| e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))`. A request
    /// without a peer address is not limited.
    pub fn peer_addr(self, peer_addr: PeerAddr) -> Self {
        self.config(|s| s.peer_addr = peer_addr)
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.shared.table.len()
    }
}

impl<C> Clone for IpRateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for IpRateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpRateLimitLayer")
            .field("limit", &self.shared.limit)
            .field("window", &self.shared.window)
            .field("trusted", &self.shared.trusted)
            .finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for IpRateLimitLayer<C> {
    type Service = IpRateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        IpRateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Middleware that throttles requests per client IP. See [`IpRateLimitLayer`].
pub struct IpRateLimit<S, C = MonotonicClock> {
    inner: S,
    shared: Arc<IpShared<C>>,
}

impl<S, C> IpRateLimit<S, C> {
    define_inner_service_accessors!();
}

impl<S: Clone, C> Clone for IpRateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for IpRateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for IpRateLimit<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Clock,
{
    type Response = Response<MaasBody<ResBody>>;
    type Error = S::Error;
    type Future = IpResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let Some(peer) = (shared.peer_addr)(req.extensions()) else {
            return IpResponseFuture::called(self.inner.call(req));
        };
        let ip = bucket(client_ip(peer, req.headers(), &shared.trusted));
        let now = shared.clock.now();
        let refused = match shared.table.check(ip, shared.rate, now) {
            Verdict::Admitted => None,
            Verdict::Refused { wait } => Some(wait),
            // No room for another address: wait for the oldest window to pass.
            Verdict::Full => Some(shared.rate.capacity()),
        };
        match refused {
            None => IpResponseFuture::called(self.inner.call(req)),
            Some(wait) => IpResponseFuture::refused(throttled(shared, wait, req.extensions())),
        }
    }
}

pin_project! {
    /// Response future of [`IpRateLimit`].
    pub struct IpResponseFuture<F> {
        #[pin]
        state: IpState<F>,
    }
}

pin_project! {
    #[project = IpStateProj]
    enum IpState<F> {
        Called { #[pin] future: F },
        Refused { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F> IpResponseFuture<F> {
    fn called(future: F) -> Self {
        Self {
            state: IpState::Called { future },
        }
    }

    fn refused(response: Response<Full<Bytes>>) -> Self {
        Self {
            state: IpState::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F> fmt::Debug for IpResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for IpResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<MaasBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            IpStateProj::Called { future } => future.poll(cx).map_ok(|r| r.map(MaasBody::new)),
            IpStateProj::Refused { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(MaasBody::from_full)))
            }
        }
    }
}

fn throttled<C>(
    shared: &IpShared<C>,
    wait: Nanos,
    extensions: &http::Extensions,
) -> Response<Full<Bytes>> {
    let error = MaasError::IpThrottled {
        limit: shared.limit,
        window: shared.window,
    };
    let mut response = refuse(
        "IpRateLimit",
        error,
        StatusCode::TOO_MANY_REQUESTS,
        extensions,
    );
    // A limit of 0 admits nothing however long the client waits ([`Rate::per`]).
    if shared.limit > 0 {
        response
            .headers_mut()
            .insert(RETRY_AFTER, headers::retry_after(wait));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A full shard sweeps as soon as anything in it is free, also what came after its last
    /// sweep: an address that has recovered makes room at once.
    #[test]
    fn a_full_shard_makes_room_as_soon_as_an_address_recovers() {
        let table = IpTable::new(SHARDS * 2);
        let second = 1_000_000_000;
        // One a second: an address holds its slot for a second after a request. The busy one
        // sends ten at once and holds its slot for ten.
        let rate = Rate::per_minute(60, 1);
        let busy_rate = Rate::per_minute(60, 10);
        let picks: Vec<IpAddr> = (0..u32::MAX)
            .map(|n| IpAddr::from(std::net::Ipv4Addr::from(n)))
            .filter(|ip| table.shard_of(*ip) == 0)
            .take(4)
            .collect();
        let [busy, first, second_ip, third] = picks[..] else {
            unreachable!("four addresses in shard 0")
        };
        for _ in 0..10 {
            assert!(matches!(table.check(busy, busy_rate, 0), Verdict::Admitted));
        }
        assert!(matches!(table.check(first, rate, 0), Verdict::Admitted));
        // Full; the sweep at 1.5 s frees the first and leaves the busy one, free at 10 s.
        assert!(matches!(
            table.check(second_ip, rate, 3 * second / 2),
            Verdict::Admitted
        ));
        // Full again, but the second address is free at 2.5 s: room at 3 s, not at 10.
        assert!(matches!(
            table.check(third, rate, 3 * second),
            Verdict::Admitted
        ));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(k, v) in pairs {
            h.append(k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2")]);
        // Not from a trusted proxy: the socket's peer, whatever the header says.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &xff, &trusted),
            ip("198.51.100.1")
        );
        // From a trusted proxy: the rightmost untrusted hop, not the spoofable leftmost.
        assert_eq!(client_ip(ip("10.0.0.1"), &xff, &trusted), ip("203.0.113.7"));
        // Trusting none: always the peer.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff, &TrustedProxies::none()),
            ip("10.0.0.1")
        );
        // Split over two headers, and RFC 7239 with ports and IPv6.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &split, &trusted),
            ip("203.0.113.9")
        );
        let forwarded = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::7]:443";proto=https"#,
        )]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &forwarded, &trusted),
            ip("2001:db8::7")
        );
        // Garbage left of the client is never reached.
        let garbage = headers(&[("x-forwarded-for", "not-an-ip, 203.0.113.7")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &garbage, &trusted),
            ip("203.0.113.7")
        );
        // A hop that cannot be read stops the walk: what is left of it was written by the
        // client, and another header is not tried instead.
        let garbage = headers(&[
            ("x-forwarded-for", "203.0.113.5, x, 10.0.0.9"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &garbage, &trusted),
            ip("10.0.0.9")
        );
        let spoof = headers(&[("x-forwarded-for", "x"), ("forwarded", "for=6.6.6.6")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &spoof, &trusted), ip("10.0.0.1"));
        // IPv4-mapped IPv6 peers match IPv4 networks.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &xff, &trusted),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn ipv4_mapped_networks_are_their_ipv4_network() {
        let trusted = TrustedProxies::new(["::ffff:10.0.0.1", "::ffff:0:0/96"]).unwrap();
        assert!(trusted.contains(ip("10.0.0.1")));
        let narrow = TrustedProxies::new(["::ffff:10.0.0.1"]).unwrap();
        assert!(!narrow.contains(ip("192.0.2.1")));
        assert!(narrow.contains(ip("::ffff:10.0.0.1")));
        // A mapped network shorter than /96 stays IPv6: it neither panics nor trusts every
        // IPv4 peer.
        let short = TrustedProxies::new(["::ffff:0:0/80"]).unwrap();
        assert!(!short.contains(ip("192.0.2.1")));
        assert!(!short.contains(ip("::ffff:192.0.2.1")));
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64() {
        assert_eq!(bucket(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(bucket(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn invalid_networks_are_refused() {
        assert!(TrustedProxies::new(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::new(["example.com"]).is_err());
        assert!(
            TrustedProxies::new(["::/0"])
                .unwrap()
                .contains(ip("2001:db8::1"))
        );
    }
}
