//! The request log: one line per request, as two small tower layers rather than axum's
//! `from_fn` middleware, which boxes a future and clones the inner service for every request
//! (measured: removing one `from_fn` gave 10 % more requests/s under load).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_maas::auth::Principal;
use tower_maas::limit::UsageReport;
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
/// method, path, key, model, status, the refusal's code, the prompt's tokens as estimated, the
/// tokens the answer reported using, the time to the answer's head and to its end. The line is
/// written once the answer's body is done (sent, or dropped by a client that went away), so
/// that a stream's usage and whole duration are known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogLayer {
    enabled: bool,
}

impl LogLayer {
    /// Logs every request, or (`false`) none, passing answers through untouched.
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled }
    }
}

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;

    fn layer(&self, inner: S) -> Log<S> {
        Log {
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Log<S> {
    inner: S,
    enabled: bool,
}

impl<S, B, R> Service<Request<B>> for Log<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<Logged<R>>;
    type Error = S::Error;
    type Future = Logging<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = self.enabled.then(|| {
            // The token limiter fills it in from the answer's usage.
            let report = UsageReport::new();
            request.extensions_mut().insert(report.clone());
            Started {
                at: Instant::now(),
                id: request.extensions().get::<RequestId>().copied(),
                method: request.method().clone(),
                // A clone of the parsed URI shares its bytes: no copy of the path.
                uri: request.uri().clone(),
                report,
            }
        });
        Logging {
            inner: self.inner.call(request),
            started,
        }
    }
}

/// What the line needs of the request.
struct Started {
    at: Instant,
    id: Option<RequestId>,
    method: Method,
    uri: Uri,
    report: UsageReport,
}

/// ... and of the answer's head. The model is copied rather than the parsed request kept: a
/// stream may last minutes, and the parsed request holds the whole body.
struct Line {
    started: Started,
    head: Duration,
    status: u16,
    code: Option<&'static str>,
    principal: Option<Principal>,
    model: Option<Box<str>>,
    prompt_tokens: u64,
}

/// The key's label, or `key-<id>` written into `buffer`: never the key itself.
fn key_name<'a>(principal: &'a Principal, buffer: &'a mut [u8; 24]) -> &'a str {
    if let Some(label) = principal.label() {
        return label;
    }
    let mut digits = itoa::Buffer::new();
    let id = digits.format(principal.key_id().0);
    let len = 4 + id.len();
    buffer[..4].copy_from_slice(b"key-");
    buffer[4..len].copy_from_slice(id.as_bytes());
    std::str::from_utf8(&buffer[..len]).unwrap_or("-")
}

/// A count, or `-` when there is none.
struct Count(Option<u64>);

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => f.write_str(itoa::Buffer::new().format(n)),
            None => f.write_str("-"),
        }
    }
}

impl Line {
    fn write(self) {
        let Line {
            started,
            head,
            status,
            code,
            principal,
            model,
            prompt_tokens,
        } = self;
        let mut key_buffer = [0; 24];
        // The message as a string, not `fmt::Arguments`: copied as it is, not formatted.
        tracing::info!(
            message = "request",
            request_id = started.id.as_ref().map_or("", RequestId::as_str),
            method = %started.method,
            path = started.uri.path(),
            key = principal.as_ref().map_or("-", |p| key_name(p, &mut key_buffer)),
            model = model.as_deref().unwrap_or("-"),
            status,
            code = code.unwrap_or("-"),
            prompt_tokens,
            tokens = %Count(started.report.tokens()),
            latency_us = head.as_micros() as u64,
            duration_us = started.at.elapsed().as_micros() as u64,
        );
    }
}

pin_project! {
    pub(crate) struct Logging<F> {
        #[pin]
        inner: F,
        started: Option<Started>,
    }
}

impl<F, R, E> Future for Logging<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<Logged<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let line = this.started.take().map(|started| {
            let tagged = response.extensions_mut().remove::<Tagged>();
            let parsed = tagged.as_ref().and_then(|t| t.parsed.as_deref());
            Line {
                head: started.at.elapsed(),
                started,
                status: response.status().as_u16(),
                code: response
                    .extensions()
                    .get::<MaasError>()
                    .and_then(MaasError::code),
                model: parsed.and_then(ParsedRequest::model).map(Box::from),
                prompt_tokens: parsed.map_or(0, ParsedRequest::prompt_tokens),
                principal: tagged.map(|t| t.principal),
            }
        });
        Poll::Ready(Ok(response.map(|body| Logged {
            inner: Some(body),
            line,
        })))
    }
}

pin_project! {
    /// The answer's body, which writes the request's line once it is done with.
    pub(crate) struct Logged<B> {
        #[pin]
        inner: Option<B>,
        line: Option<Line>,
    }

    impl<B> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // The body first: the limiter inside reads the usage when its body ends or drops.
            this.inner.set(None);
            if let Some(line) = this.line.take() {
                line.write();
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for Logged<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        match self.project().inner.as_pin_mut() {
            Some(inner) => inner.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(
            || http_body::SizeHint::with_exact(0),
            http_body::Body::size_hint,
        )
    }
}

/// At most one line a second about a condition that lasts (an upstream down, file descriptors
/// used up), which would otherwise write a line for every request or every try.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    /// None written yet: the first line is due at once.
    pub(crate) const fn new() -> Self {
        Self {
            last: None,
            skipped: 0,
        }
    }

    /// Whether a line is due now: `Some` of how many were not written since the last one.
    pub(crate) fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}
