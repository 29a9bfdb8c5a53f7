//! Forwarding to an OpenAI-compatible upstream (vLLM, SGLang, llama.cpp, Ollama's `/v1`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_maas::limit::TrustedProxies;
use tower_maas::validate::ParsedRequest;
use tower_maas::{BackendTimeout, Dialect, EndpointRoute, MaasError, RequestId};

use crate::idle::IdleTimeout;
use crate::log::Throttle;

/// A pooled client for the upstreams.
pub(crate) type UpstreamClient = Client<HttpConnector, http_body_util::Full<Bytes>>;

/// HTTP/1.1, or HTTP/2 with prior knowledge (h2c, as vLLM behind an HTTP/2 proxy or a gRPC-
/// style server speaks it), each pooled.
fn client(http2: bool) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    // An upstream that takes no connection is one that cannot be reached (502), not a slow
    // one (504 after `upstream_timeout_ms`).
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // Small HTTP/2 frames (window updates, pings) and the head of a small request go out at
    // once.
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(30)));
    Client::builder(TokioExecutor::new())
        // HTTP/1: below uvicorn's keep-alive (vLLM's server closes an idle connection after
        // 5 s), so that a pooled connection is not taken just as the upstream closes it, which
        // would fail a request already written to it (502). Checked when a connection is taken;
        // the pool's timer also closes idle ones in the background, every period. (No uvicorn
        // speaks h2c: an HTTP/2 upstream's connections are kept longer.)
        .pool_idle_timeout(Duration::from_secs(if http2 { 90 } else { 4 }))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        // Which the HTTP/2 pings need.
        .timer(hyper_util::rt::TokioTimer::new())
        // An HTTP/2 connection whose peer is gone without a word (a node that crashed, a
        // balancer that dropped it) fails its requests in flight within seconds, not after
        // TCP's retries. (Idle, it is not pinged; the next request finds it out.)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .http2_only(http2)
        .build(connector)
}

/// How long connecting to an upstream may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// This thread's pooled clients, HTTP/1.1 and h2c. A pooled connection is driven by a task
    /// on the runtime that opened it: with a pool per thread, a worker's proxied requests use
    /// connections its own runtime drives, and no other worker's queue stands between a request
    /// and its upstream.
    static CLIENTS: [UpstreamClient; 2] = [client(false), client(true)];
}

/// One upstream: where it is, and the model name it expects.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    /// Base URL without `/v1` and without a trailing `/`, such as `http://127.0.0.1:8000` or
    /// `http://10.0.0.5/vllm` ([`Upstream::base_of`]).
    pub(crate) base: String,
    /// The name the upstream knows the model by, when it differs.
    pub(crate) model: Option<String>,
    /// Speak HTTP/2 (prior knowledge) to it.
    pub(crate) http2: bool,
    /// The proxies whose forwarding headers are believed (`ip_limit.trusted_proxies`): the
    /// client the upstream is told of is the one the per-IP limit counted.
    pub(crate) trusted: Arc<TrustedProxies>,
}

impl Upstream {
    /// The base to join request paths to, from a configured URL: `http` (the client speaks
    /// no TLS), a host, and a path prefix if any, with or without the `/v1` an OpenAI SDK's
    /// `base_url` ends with (the paths joined to it already begin with it). A query or a
    /// fragment would be sent with every request, and is refused.
    pub(crate) fn base_of(url: &str) -> Result<String, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| "not a URL (http://host:port, with a path prefix if any)".to_owned())?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https is not supported: the gateway speaks plain HTTP to its upstreams (keep them on a private network, or behind a local TLS proxy)"
                        .to_owned(),
                );
            }
            _ => return Err("not an http:// URL".to_owned()),
        }
        let Some(authority) = uri.authority() else {
            return Err("no host".to_owned());
        };
        if authority.as_str().contains('@') {
            // Not sent as a login by the client, and it would reach the logs.
            return Err("credentials in the URL are not supported".to_owned());
        }
        if authority.as_str().contains('%') {
            return Err("an IPv6 zone cannot be connected to".to_owned());
        }
        if uri.query().is_some() || url.contains('#') {
            return Err("a query or fragment would be sent with every request".to_owned());
        }
        let path = uri.path().trim_end_matches('/');
        if crate::app::INFERENCE_ROUTES
            .iter()
            .any(|route| path.ends_with(route))
        {
            return Err("an endpoint, not the server's base URL".to_owned());
        }
        let path = path.strip_suffix("/v1").unwrap_or(path);
        Ok(format!("http://{authority}{path}"))
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), with the
/// obsolete ones proxies still see.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes the hop-by-hop headers: the fixed ones, and those that `Connection` names for this
/// hop alone (`Connection: close, X-Private` keeps `X-Private` from the next hop).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.into_iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Tells the upstream who the client is, in each header an upstream may read it from:
/// `X-Forwarded-For` and `Forwarded` (RFC 7239) get the peer's address after any the client
/// sent, and `X-Real-IP` is the client's address alone: the peer's, or, when the peer is a
/// trusted proxy, the client it forwards for, as the per-IP limit counted it. An upstream
/// trusts the last entry of a list, which the gateway wrote, not the ones before it, which
/// anyone could have; a client's own `X-Real-IP` would otherwise reach it as the gateway's
/// word.
fn add_forwarded_for(parts: &mut http::request::Parts, trusted: &TrustedProxies) {
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return;
    };
    // `::ffff:a.b.c.d` on a dual-stack listener is the IPv4 client `a.b.c.d`.
    let peer = peer.ip().to_canonical();
    // Read off the headers as the client's side wrote them, before the gateway adds to them.
    let client = trusted.client(peer, &parts.headers);
    let mut node = String::new();
    // Writing into a `String` does not fail.
    let _ = write!(node, "{peer}");
    append_to_list(&mut parts.headers, &X_FORWARDED_FOR, &node, |_| true);
    // RFC 7239 6: an IPv6 address is bracketed, and then quoted.
    let element = if peer.is_ipv6() {
        format!("for=\"[{peer}]\"")
    } else {
        format!("for={peer}")
    };
    append_to_list(
        &mut parts.headers,
        &header::FORWARDED,
        &element,
        closes_quotes,
    );
    if let Ok(client) = HeaderValue::try_from(client.to_string()) {
        parts.headers.insert(X_REAL_IP, client);
    }
}

/// `item` as the last of the list header `name`: every line the client sent that is `fit`, in
/// order, as one list (RFC 9110 5.3), then it. A line that is not text (`to_str` refuses
/// bytes past ASCII) is left out: what the gateway adds stays readable, and last.
fn append_to_list(headers: &mut HeaderMap, name: &HeaderName, item: &str, fit: fn(&str) -> bool) {
    let mut list = String::new();
    for earlier in headers.get_all(name) {
        if let Ok(earlier) = earlier.to_str() {
            if !earlier.trim().is_empty() && fit(earlier) {
                list.push_str(earlier.trim());
                list.push_str(", ");
            }
        }
    }
    list.push_str(item);
    if let Ok(list) = HeaderValue::try_from(list) {
        headers.insert(name, list);
    }
}

/// Whether every quoted string of a `Forwarded` line ends (RFC 7239's `quoted-string`, with
/// its `\` escapes): after a line that leaves one open, the gateway's element would be read
/// as part of the client's string.
fn closes_quotes(line: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    for byte in line.bytes() {
        match (quoted, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Forwards the validated request, its `model` renamed to the name the upstream knows it by,
/// or to a custom endpoint's model, when the request names one; the answer,
/// streamed or not, comes back unchanged. An upstream that does not answer in time is 504
/// APIG.0203; one that cannot be reached is 502 APIG.0201 `Backend unavailable.`. An answer
/// whose body stops for as long as `timeout` fails there with [`BackendTimeout`]: a held answer
/// is then 504 APIG.0203, and a stream under way ends with APIG.0203 as an error event and
/// `[DONE]` (the envelope's doing).
pub(crate) async fn forward(
    upstream: &Upstream,
    timeout: Duration,
    id: RequestId,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Response {
    let refuse = |error: MaasError| error.to_response(Dialect::Dual, &id).into_response();
    let rename = upstream.model.as_deref().or_else(|| {
        parts
            .extensions
            .get::<EndpointRoute>()
            .map(EndpointRoute::model)
    });
    let body = match rename {
        // The model's string replaced where it lies, every other byte as the client sent it;
        // a body the validator read the exact way is encoded again. The bytes are the ones the
        // validator read: no layer behind it rewrites a request's body. It takes bodies serde_json
        // does not (NaN, UTF-16): such a body cannot be renamed, and must not reach the
        // upstream under the gateway's name for the model. 81001 is the gateway's answer to a
        // body it cannot parse.
        Some(model) => match parts
            .extensions
            .get::<Arc<ParsedRequest>>()
            .and_then(|parsed| parsed.body_with_model(model))
            .or_else(|| rename_model(&body, model))
        {
            Some(renamed) => renamed,
            None => return refuse(MaasError::InvalidRequestBody),
        },
        None => body,
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = format!("{}{path}", upstream.base).parse::<Uri>() else {
        return refuse(MaasError::BackendUnavailable);
    };
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded_for(&mut parts, &upstream.trusted);
    parts.headers.remove(header::HOST);
    // The body is here whole: there is nothing to wait for the upstream's go-ahead on.
    parts.headers.remove(header::EXPECT);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, body.len().into());
    let mut request = Request::new(http_body_util::Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    // This thread's pooled client for the upstream's protocol; its future owns what it needs.
    let sent = CLIENTS.with(|clients| clients[usize::from(upstream.http2)].request(request));
    match tokio::time::timeout(timeout, sent).await {
        Err(_) => {
            warn_failure(upstream, &id, &"gave no answer in time");
            refuse(MaasError::BackendTimeout)
        }
        Ok(Err(error)) => {
            // The cause, which the client's 502 does not tell: refused, no route, a broken
            // answer.
            warn_failure(upstream, &id, &Chain(&error));
            refuse(MaasError::BackendUnavailable)
        }
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = IdleTimeout::new(body, timeout, || Box::new(BackendTimeout));
            Response::from_parts(parts, Body::new(body))
        }
    }
}

/// Logs an upstream's failure at `warn`, at most once a second on each thread (an upstream
/// that is down fails every request sent to it), with the request's id and how many went
/// unlogged before it.
fn warn_failure(upstream: &Upstream, id: &RequestId, cause: &dyn std::fmt::Display) {
    thread_local! {
        static THROTTLE: std::cell::Cell<Throttle> = const {
            std::cell::Cell::new(Throttle::new())
        };
    }
    let mut throttle = THROTTLE.get();
    let due = throttle.due();
    THROTTLE.set(throttle);
    if let Some(unlogged) = due {
        tracing::warn!(
            request_id = id.as_str(),
            upstream = upstream.base.as_str(),
            unlogged,
            "upstream failed: {cause}"
        );
    }
}

/// An error and its sources, as one line: hyper-util's error names only its kind (`client
/// error (Connect)`), the cause (refused, no route) is its source's.
struct Chain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(next) = source {
            write!(f, ": {next}")?;
            source = next.source();
        }
        Ok(())
    }
}

/// The body with its top-level `model` set to the upstream's name, for a body the validator
/// read the exact way (a key given twice, say). The other values are kept as raw text, skipped
/// without recursion: the validator admits bodies nested 512 deep, past the 128 levels a
/// `serde_json::Value` can take, and such a body must not reach the upstream under the
/// gateway's name for the model.
fn rename_model(body: &[u8], model: &str) -> Option<Bytes> {
    let mut fields: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(body).ok()?;
    fields.insert(
        "model".to_owned(),
        serde_json::value::to_raw_value(model).ok()?,
    );
    serde_json::to_vec(&fields).ok().map(Bytes::from)
}
