//! The request log: one line per request, as two small tower layers rather than axum's
//! `from_fn` middleware, which boxes a future and clones the inner service for every request
//! (measured: removing one `from_fn` gave 10 % more requests/s under load).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Method, Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_maas::auth::Principal;
use tower_maas::validate::ParsedRequest;
use tower_maas::{MaasError, RequestId};

/// What the log line shows of a request that got past authentication: the key's label or id
/// (never the key), the model, the prompt's tokens. Shared, not copied: the line is written
/// from them once the answer is known.
#[derive(Clone, Debug)]
pub(crate) struct Tagged {
    principal: Principal,
    parsed: Option<Arc<ParsedRequest>>,
}

/// Innermost: notes on the response what the layers above learnt about the request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TagLayer;

impl<S> Layer<S> for TagLayer {
    type Service = Tag<S>;

    fn layer(&self, inner: S) -> Tag<S> {
        Tag { inner }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Tag<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for Tag<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Tagging<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let tagged = request
            .extensions()
            .get::<Principal>()
            .map(|principal| Tagged {
                principal: principal.clone(),
                parsed: request.extensions().get::<Arc<ParsedRequest>>().cloned(),
            });
        Tagging {
            inner: self.inner.call(request),
            tagged,
        }
    }
}

pin_project! {
    pub(crate) struct Tagging<F> {
        #[pin]
        inner: F,
        tagged: Option<Tagged>,
    }
}

impl<F, R, E> Future for Tagging<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(tagged) = this.tagged.take() {
            response.extensions_mut().insert(tagged);
        }
        Poll::Ready(Ok(response))
    }
}

/// Inside the envelope (so the request id is known): one `info` line per request with its id,
/// method, path, key, model, status, the refusal's code, prompt tokens and latency.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogLayer;

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;

    fn layer(&self, inner: S) -> Log<S> {
        Log { inner }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Log<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for Log<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Logging<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Logging {
            started: Instant::now(),
            id: request.extensions().get::<RequestId>().copied(),
            method: request.method().clone(),
            // A clone of the parsed URI shares its bytes: no copy of the path.
            uri: request.uri().clone(),
            inner: self.inner.call(request),
        }
    }
}

/// The key's label, or `key-<id>` written into `buffer`: never the key itself.
fn key_name<'a>(principal: &'a Principal, buffer: &'a mut [u8; 24]) -> &'a str {
    if let Some(label) = principal.label() {
        return label;
    }
    let mut digits = [0; 20];
    let id = crate::log_format::digits(principal.key_id().0, &mut digits);
    let len = 4 + id.len();
    buffer[..4].copy_from_slice(b"key-");
    buffer[4..len].copy_from_slice(id.as_bytes());
    std::str::from_utf8(&buffer[..len]).unwrap_or("-")
}

pin_project! {
    pub(crate) struct Logging<F> {
        #[pin]
        inner: F,
        started: Instant,
        id: Option<RequestId>,
        method: Method,
        uri: Uri,
    }
}

impl<F, R, E> Future for Logging<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let tagged = response.extensions().get::<Tagged>();
        let principal = tagged.map(|t| &t.principal);
        let parsed = tagged.and_then(|t| t.parsed.as_deref());
        let mut key_buffer = [0; 24];
        tracing::info!(
            request_id = this.id.as_ref().map_or("", RequestId::as_str),
            method = %this.method,
            path = this.uri.path(),
            key = principal.map_or("-", |p| key_name(p, &mut key_buffer)),
            model = parsed.and_then(ParsedRequest::model).unwrap_or("-"),
            status = response.status().as_u16(),
            code = response.extensions().get::<MaasError>().and_then(MaasError::code).unwrap_or("-"),
            prompt_tokens = parsed.map_or(0, ParsedRequest::prompt_tokens),
            latency_us = this.started.elapsed().as_micros() as u64,
            "request"
        );
        Poll::Ready(Ok(response))
    }
}
