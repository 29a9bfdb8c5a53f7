//! Forwarding to an OpenAI-compatible upstream (vLLM, SGLang, llama.cpp, Ollama's `/v1`).

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_maas::{Dialect, MaasError, RequestId};

/// A pooled client for the upstreams.
pub(crate) type UpstreamClient = Client<HttpConnector, http_body_util::Full<Bytes>>;

/// HTTP/1.1, or HTTP/2 with prior knowledge (h2c, as vLLM behind an HTTP/2 proxy or a gRPC-
/// style server speaks it), each pooled.
pub(crate) fn client(http2: bool) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_only(http2)
        .build_http()
}

/// One upstream: where it is, and the model name it expects.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    /// Base URL without `/v1`, such as `http://127.0.0.1:8000`.
    pub(crate) base: String,
    /// The name the upstream knows the model by, when it differs.
    pub(crate) model: Option<String>,
    /// Speak HTTP/2 (prior knowledge) to it.
    pub(crate) http2: bool,
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Forwards the validated request, its `model` renamed to `rename` when given; the answer, streamed or not, comes back unchanged. An
/// upstream that does not answer in time is 504 APIG.0203; one that cannot be reached is 502
/// APIG.0201 `Backend unavailable.`.
pub(crate) async fn forward(
    client: &UpstreamClient,
    upstream: &Upstream,
    rename: Option<&str>,
    timeout: Duration,
    id: RequestId,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Response {
    let refuse = |error: MaasError| error.to_response(Dialect::Dual, &id).into_response();
    let body = match rename {
        Some(model) => rename_model(&body, model).unwrap_or(body),
        None => body,
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = format!("{}{path}", upstream.base.trim_end_matches('/')).parse::<Uri>() else {
        return refuse(MaasError::BackendUnavailable);
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, body.len().into());
    let mut request = Request::new(http_body_util::Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => refuse(MaasError::BackendTimeout),
        Ok(Err(_)) => refuse(MaasError::BackendUnavailable),
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
    }
}

/// The body with its top-level `model` set to the upstream's name.
fn rename_model(body: &[u8], model: &str) -> Option<Bytes> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    value.insert("model".to_owned(), model.into());
    serde_json::to_vec(&value).ok().map(Bytes::from)
}
