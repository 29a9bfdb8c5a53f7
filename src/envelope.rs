//! The outermost layer: request ids, one error dialect, and what the inner service did.
//!
//! `ErrorEnvelope`
//! - gives every request an [`x-request-id`](crate::REQUEST_ID) (32 lowercase hex; an incoming
//!   valid one is kept only when [`ErrorEnvelopeLayer::trust_incoming_request_id`] says so) and
//!   puts the [`RequestId`] in the request's extensions, its `x-request-id` header (replacing
//!   the client's, so that the services inside and an upstream see the id the answer carries)
//!   and the response's headers;
//! - re-renders every refusal of an inner layer (a response carrying a [`MaasError`] in its
//!   extensions) in the configured [`Dialect`], keeping its status and headers;
//! - turns a bare `404` (no [`MaasError`], an empty body: a router's fallback) into APIG.0101 and a
//!   bare `405` into FastAPI's `{"detail":"Method Not Allowed"}`, keeping `allow`; a 404 or 405
//!   with a body (an upstream's own answer) passes unchanged, also under `HEAD`, where the body
//!   is gone but its `content-length` is not;
//! - speaks gRPC to gRPC clients: for a request with `content-type: application/grpc…`, every
//!   refusal becomes a trailers-only response (HTTP 200, `grpc-status`, `grpc-message` with the
//!   MaaS code and message; see [`MaasError::grpc_code`] for the mapping);
//! - answers an inner `Err` that is a timeout (see [`is_timeout`]) with 504 APIG.0203 and any
//!   other inner error with 500 APIG.0201 `Internal server error.`, nothing of the error shown;
//! - ends an event stream whose body fails after its head went out as the live service does,
//!   with the error as an SSE event and `data: [DONE]`, after the whole events that came (see
//!   [`EnvelopeBody`]);
//! - answers a `HEAD` request with the head alone (`content-length` as the body would have it),
//!   the bodies it writes included: over HTTP/2 a body would go out as DATA frames, which a
//!   client takes for a protocol error.
//!
//! Its error type is [`Infallible`]: every failure below it becomes a response, so it drops into
//! axum's `Router::layer` and hyper's `serve_connection` alike.
//!
//! ```
//! use axum::{Router, routing::post};
//! use tower_maas::{Dialect, ErrorEnvelopeLayer};
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(|| async { "ok" }))
//!     .layer(ErrorEnvelopeLayer::new().dialect(Dialect::Dual));
//! ```

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{BoxError, MaasBody, content_type_is, media_type_is};
pub use crate::envelope_body::EnvelopeBody;
use crate::error::{Dialect, MaasError, RenderedByEnvelope, grpc_headers, set_json_headers};
use crate::request_id::{REQUEST_ID, RequestId};

/// Marks an error of your own service as a backend timeout, so that [`ErrorEnvelope`] answers
/// it with 504 APIG.0203.
///
/// Return it (or any error whose [`source`](StdError::source) chain contains it) from a
/// service under the envelope:
///
/// ```
/// use tower_maas::{BackendTimeout, is_timeout};
///
/// let err: tower_maas::BoxError = Box::new(BackendTimeout);
/// assert!(is_timeout(&*err));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendTimeout;

impl fmt::Display for BackendTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("backend timeout")
    }
}

impl StdError for BackendTimeout {}

/// Whether `err`, or any error in its `source()` chain, is a timeout: [`BackendTimeout`],
/// `tower::timeout::error::Elapsed` (feature `timeout`), or an `std::io::Error` of kind
/// `TimedOut`.
pub fn is_timeout(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<BackendTimeout>() {
            return true;
        }
        #[cfg(feature = "timeout")]
        if err.is::<tower::timeout::error::Elapsed>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        current = err.source();
    }
    false
}

/// What a backend's error is answered with: 504 APIG.0203 for a timeout (see [`is_timeout`]),
/// else `otherwise`.
pub(crate) fn backend_failure(err: &(dyn StdError + 'static), otherwise: MaasError) -> MaasError {
    if is_timeout(err) {
        MaasError::BackendTimeout
    } else {
        otherwise
    }
}

/// Layer that applies [`ErrorEnvelope`]. See the [module docs](self).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_maas::{Dialect, ErrorEnvelopeLayer};
///
/// // Outermost, so every answer carries an x-request-id and every refusal one dialect.
/// let stack = ServiceBuilder::new().layer(
///     ErrorEnvelopeLayer::new()
///         .dialect(Dialect::Dual)
///         .trust_incoming_request_id(false),
/// );
/// # let _ = stack;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorEnvelopeLayer {
    config: Config,
}

#[derive(Clone, Copy, Debug, Default)]
struct Config {
    dialect: Dialect,
    trust_incoming_id: bool,
}

impl ErrorEnvelopeLayer {
    /// The envelope in the [`Dialect::Dual`] dialect, generating every request id.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dialect refusals are rendered in.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.config.dialect = dialect;
        self
    }

    /// Keep a valid incoming `x-request-id` (32 lowercase hex) instead of generating one. Off by
    /// default: turn it on only behind a proxy you trust to set it, since clients can write any
    /// header.
    pub fn trust_incoming_request_id(mut self, trust: bool) -> Self {
        self.config.trust_incoming_id = trust;
        self
    }
}

impl<S> Layer<S> for ErrorEnvelopeLayer {
    type Service = ErrorEnvelope<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorEnvelope {
            inner,
            config: self.config,
            ready_error: None,
        }
    }
}

/// Middleware that assigns request ids and renders every error in one dialect. See the
/// [module docs](self).
pub struct ErrorEnvelope<S> {
    inner: S,
    config: Config,
    /// An error the inner service gave from `poll_ready`: answered on the next call, since this
    /// service never fails.
    ready_error: Option<BoxError>,
}

impl<S> ErrorEnvelope<S> {
    /// Wraps `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        ErrorEnvelopeLayer::new().layer(inner)
    }

    define_inner_service_accessors!();
}

impl<S: Clone> Clone for ErrorEnvelope<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config,
            ready_error: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ErrorEnvelope<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorEnvelope")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorEnvelope<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<MaasBody<EnvelopeBody<ResBody>>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready_error.is_none() {
            if let Err(err) = ready!(self.inner.poll_ready(cx)) {
                self.ready_error = Some(err.into());
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let trusted = self
            .config
            .trust_incoming_id
            .then(|| {
                req.headers()
                    .get(REQUEST_ID)
                    .and_then(RequestId::from_header)
            })
            .flatten();
        let request_id = trusted.unwrap_or_else(RequestId::generate);
        let header = request_id.to_header_value();
        req.headers_mut().insert(REQUEST_ID, header.clone());
        req.extensions_mut().insert(request_id);
        req.extensions_mut().insert(RenderedByEnvelope);
        let grpc = content_type_is(req.headers(), b"application/grpc");
        let head = req.method() == Method::HEAD;
        let span = request_span(&request_id);
        let state = match self.ready_error.take() {
            Some(err) => State::Failed { err: Some(err) },
            None => {
                // Layers that decide in `call` decide inside the request's span.
                let _entered = span.enter();
                State::Called {
                    future: self.inner.call(req),
                }
            }
        };
        ResponseFuture {
            state,
            request_id,
            header,
            dialect: self.config.dialect,
            grpc,
            head,
            span,
        }
    }
}

pin_project! {
    /// Response future of [`ErrorEnvelope`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        request_id: RequestId,
        // The value put on the request, shared with the response's.
        header: HeaderValue,
        dialect: Dialect,
        grpc: bool,
        head: bool,
        span: RequestSpan,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Failed { err: Option<BoxError> },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<MaasBody<EnvelopeBody<B>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = match this.state.project() {
            StateProj::Called { future } => ready!(future.poll(cx)).map_err(Into::into),
            StateProj::Failed { err } => Err(err.take().unwrap_or_else(|| Box::new(Gone))),
        };
        let mut res = match result {
            Ok(res) => envelope(res, *this.dialect, *this.grpc, *this.head, this.request_id),
            Err(err) => {
                let error = backend_failure(&*err, MaasError::Internal);
                if *this.grpc {
                    error
                        .to_grpc_response(error.status(), this.request_id)
                        .map(MaasBody::from_full)
                } else {
                    error
                        .to_response(*this.dialect, this.request_id)
                        .map(MaasBody::from_full)
                }
            }
        };
        res.headers_mut().insert(REQUEST_ID, this.header.clone());
        if *this.head {
            res = without_body(res);
        }
        Poll::Ready(Ok(res))
    }
}

/// The `debug` span of one request, named `maas_request` with its `request_id`: every layer's
/// refusal event happens inside it.
#[cfg(feature = "tracing")]
type RequestSpan = tracing::Span;

#[cfg(feature = "tracing")]
fn request_span(id: &RequestId) -> RequestSpan {
    tracing::debug_span!(target: "tower_maas", "maas_request", request_id = %id)
}

#[cfg(not(feature = "tracing"))]
#[derive(Debug)]
struct RequestSpan;

/// What entering the no-op span gives: nothing to hold.
#[cfg(not(feature = "tracing"))]
struct Entered;

#[cfg(not(feature = "tracing"))]
impl RequestSpan {
    #[inline]
    #[allow(clippy::unused_self)] // the same call as `tracing::Span::enter`
    fn enter(&self) -> Entered {
        Entered
    }
}

#[cfg(not(feature = "tracing"))]
#[inline]
fn request_span(_: &RequestId) -> RequestSpan {
    RequestSpan
}

/// Stands in for an error already taken, should a completed future be polled again.
#[derive(Debug)]
struct Gone;

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response future polled after completion")
    }
}

impl StdError for Gone {}

/// The head of an answer to `HEAD`: its body dropped, its length kept when known. An empty body
/// (a gRPC refusal, an upstream's own HEAD answer) gets none: a length of 0 would be a claim
/// about a body that a GET would have, which hyper does not make either.
fn without_body<B: Body<Data = Bytes>>(res: Response<MaasBody<B>>) -> Response<MaasBody<B>> {
    let (mut parts, body) = res.into_parts();
    if let Some(length) = body.size_hint().exact().filter(|&length| length > 0) {
        parts
            .headers
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(length));
    }
    Response::from_parts(parts, MaasBody::from_full(Full::default()))
}

/// Whether the head declares a body that is not there: axum drops a route's body for `HEAD`
/// and keeps the `content-length` it had, so such an empty 404 is the route's own answer, not
/// a router's fallback.
fn declares_body(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
}

fn envelope<B>(
    res: Response<B>,
    dialect: Dialect,
    grpc: bool,
    head: bool,
    request_id: &RequestId,
) -> Response<MaasBody<EnvelopeBody<B>>>
where
    B: Body<Data = Bytes>,
{
    let error = match res.extensions().get::<MaasError>() {
        Some(error) => Some(error.clone()),
        None if res.body().size_hint().exact() == Some(0) && !declares_body(res.headers()) => {
            match res.status() {
                StatusCode::NOT_FOUND => Some(MaasError::ApiNotFound),
                StatusCode::METHOD_NOT_ALLOWED => Some(MaasError::MethodNotAllowed),
                _ => None,
            }
        }
        None => None,
    };
    let Some(error) = error else {
        // Past its head, a stream's failure can only travel as an event (a `HEAD` answer has
        // no body to fail, and keeps its length).
        let stream = !grpc
            && !head
            && res.status().is_success()
            && media_type_is(res.headers(), b"text/event-stream");
        if !stream {
            return res.map(|body| MaasBody::new(EnvelopeBody::plain(body)));
        }
        let (mut parts, body) = res.into_parts();
        // A declared length (an upstream's, passed on) would cut the error event short, or
        // turn it into a broken connection after all.
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(
            parts,
            MaasBody::new(EnvelopeBody::event_stream(body, *request_id)),
        );
    };
    // The refusing layer chose the status (and headers such as `allow` or `retry-after`); only
    // the body changes shape.
    let (mut parts, _) = res.into_parts();
    if grpc {
        grpc_headers(&mut parts.headers, &error, parts.status);
        parts.status = StatusCode::OK;
        parts.extensions.insert(error);
        return Response::from_parts(parts, MaasBody::full(Bytes::new()));
    }
    let body = error.render_with_status(parts.status, dialect, request_id);
    set_json_headers(&mut parts.headers, body.len());
    parts.extensions.insert(error);
    Response::from_parts(parts, MaasBody::full(body))
}
