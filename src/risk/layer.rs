//! `ContentRiskFilter`: the layer.

use crate::buffered::take_readied;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::classifier::{Classified, Classifier, Side, Verdict};
use super::output::read_answer;
use super::stream::RiskStream;
use crate::body::{
    BoxError, DEFAULT_BODY_LIMIT, Gather, LimitedCollect, MaasBody, content_type_is,
    finish_buffering, is_encoded, media_type_is, set_buffered_length, start_buffering,
};
use crate::envelope::backend_failure;
use crate::error::{MaasError, RenderedByEnvelope, refuse};
use crate::model::ReportedUsage;
use crate::request_id::RequestId;
use crate::validate::{Endpoint, EstimatingCounter, ParsedRequest, loads};

/// What to do when the classifier fails or does not answer in time.
///
/// ```
/// use std::time::Duration;
/// use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier, OnFailure};
///
/// let terms = KeywordClassifier::builder()
///     .term("violence", "forbidden phrase")
///     .build()
///     .unwrap();
/// // A classifier that is down lets text through rather than refusing it.
/// let layer = ContentRiskFilterLayer::new(terms)
///     .timeout(Duration::from_millis(500))
///     .on_failure(OnFailure::Allow);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Refuse with 81011 (default): nothing unchecked passes.
    #[default]
    Block,
    /// Let the text pass.
    Allow,
}

/// How streamed output is checked: `window` characters of generated text are held and checked
/// together with the last `overlap` characters already passed, so a term split across events is
/// caught. The overlap must be at least the longest term.
///
/// ```
/// use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier, Window};
///
/// let terms = KeywordClassifier::builder()
///     .term("violence", "forbidden phrase")
///     .build()
///     .unwrap();
/// // Streams checked every 128 characters, with the last 32 checked again.
/// let layer = ContentRiskFilterLayer::new(terms).streaming(Some(Window {
///     window: 128,
///     overlap: 32,
/// }));
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Characters of new text held before a check.
    pub window: usize,
    /// Characters of checked text carried into the next check.
    pub overlap: usize,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            window: 256,
            overlap: 64,
        }
    }
}

/// Which side refused, and why: in the refusal's response extensions and in the log, never in
/// the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskRefusal {
    /// Input or output.
    pub side: Side,
    /// The classifier's category, or, when the text could not be checked and
    /// [`OnFailure::Block`] refused it: `classifier-unavailable` (the classifier failed or timed
    /// out, or the answer was too large to hold), `answer-unreadable` (an answer sent
    /// compressed, or announced as JSON that does not parse) or `unchecked-line` (a stream's
    /// line too long to hold, or a data line that is not JSON).
    pub category: Arc<str>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    input: bool,
    output: bool,
    pub(crate) stream: Option<Window>,
    timeout: Duration,
    pub(crate) failure: OnFailure,
    body_limit: usize,
    output_limit: usize,
    pass_grpc: bool,
}

// Aligned to a cache line, so that the `Arc`'s counts, which every request moves, sit on a line
// of their own and not on the fields every core reads (`benches/gateway.rs contend`).
#[repr(align(64))]
pub(crate) struct Shared<Cl> {
    classifier: Cl,
    pub(crate) config: Config,
}

/// Layer that applies [`ContentRiskFilter`]. See the [module docs](super).
///
/// ```
/// use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier, Window};
///
/// let terms = KeywordClassifier::builder()
///     .terms_from_text("[violence]\nforbidden phrase\n[fraud]\nwire me the money")
///     .build()
///     .unwrap();
/// // Streams checked too, with an overlap as long as the longest term.
/// let overlap = terms.longest_term();
/// let layer = ContentRiskFilterLayer::new(terms).streaming(Some(Window { window: 256, overlap }));
/// # let _ = layer;
/// ```
///
/// # Panics
///
/// The builder methods panic on a layer that has been cloned, as the clones share one state:
/// configure the layer, then clone it.
pub struct ContentRiskFilterLayer<Cl> {
    shared: Arc<Shared<Cl>>,
}

impl<Cl: Classifier> ContentRiskFilterLayer<Cl> {
    /// Checks input and non-streaming output with `classifier`.
    pub fn new(classifier: Cl) -> Self {
        Self {
            shared: Arc::new(Shared {
                classifier,
                config: Config {
                    input: true,
                    output: true,
                    stream: None,
                    timeout: Duration::from_secs(2),
                    failure: OnFailure::Block,
                    body_limit: DEFAULT_BODY_LIMIT,
                    output_limit: 4 * 1024 * 1024,
                    pass_grpc: false,
                },
            }),
        }
    }

    fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("configure before cloning the layer");
        change(&mut shared.config);
        self
    }

    /// Check what clients send (default: on).
    pub fn input(self, on: bool) -> Self {
        self.config(|c| c.input = on)
    }

    /// Check non-streaming answers (default: on).
    pub fn output(self, on: bool) -> Self {
        self.config(|c| c.output = on)
    }

    /// Check streamed answers in windows (default: off, as MaaS does not).
    pub fn streaming(self, window: Option<Window>) -> Self {
        self.config(|c| c.stream = window)
    }

    /// How long a remote classifier may take (default 2 s).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.config(|c| c.timeout = timeout)
    }

    /// What a failed or late classification means (default: block).
    pub fn on_failure(self, failure: OnFailure) -> Self {
        self.config(|c| c.failure = failure)
    }

    /// The bound on a request body read when no validator parsed it (default 12 MiB).
    pub fn body_limit(self, limit: usize) -> Self {
        self.config(|c| c.body_limit = limit)
    }

    /// Let requests with a gRPC content type through without holding their bodies (default:
    /// off). gRPC bodies are protobuf streams a classifier cannot read and a client may keep
    /// open; but the content type is the client's word, so turn this on only where the service
    /// behind refuses anything that is not gRPC (a tonic server does), or a client could label
    /// a JSON prompt `application/grpc` to get it past the check.
    pub fn pass_grpc(self, on: bool) -> Self {
        self.config(|c| c.pass_grpc = on)
    }

    /// The bound on a non-streaming answer held for checking (default 4 MiB); a larger answer
    /// cannot be checked, and [`on_failure`](Self::on_failure) decides.
    pub fn output_limit(self, limit: usize) -> Self {
        self.config(|c| c.output_limit = limit)
    }
}

impl<Cl> Clone for ContentRiskFilterLayer<Cl> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Cl> fmt::Debug for ContentRiskFilterLayer<Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentRiskFilterLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, Cl> Layer<S> for ContentRiskFilterLayer<Cl> {
    type Service = ContentRiskFilter<S, Cl>;

    fn layer(&self, inner: S) -> Self::Service {
        ContentRiskFilter {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Middleware that refuses risky input and output with 81011. See the [module docs](super).
pub struct ContentRiskFilter<S, Cl> {
    inner: S,
    shared: Arc<Shared<Cl>>,
}

impl<S, Cl> ContentRiskFilter<S, Cl> {
    define_inner_service_accessors!();
}

impl<S: Clone, Cl> Clone for ContentRiskFilter<S, Cl> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, Cl> fmt::Debug for ContentRiskFilter<S, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentRiskFilter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What a refusal needs of the request: its id, and whether an envelope renders.
#[derive(Clone, Debug, Default)]
pub(crate) struct RefusalCtx {
    request_id: Option<RequestId>,
    deferred: bool,
}

impl RefusalCtx {
    fn of(extensions: &http::Extensions) -> Self {
        Self {
            request_id: extensions.get::<RequestId>().copied(),
            deferred: extensions.get::<RenderedByEnvelope>().is_some(),
        }
    }

    pub(crate) fn request_id(&self) -> RequestId {
        self.request_id.unwrap_or_else(RequestId::generate)
    }

    pub(crate) fn log(&self, side: Side, category: &str) {
        tracing::warn!(
            request_id = %self.request_id.map(|id| id.to_string()).unwrap_or_default(),
            %side,
            category,
            "content risk control refused the {side}"
        );
    }

    /// What `refuse` needs of the request, which is gone by the time the answer is judged.
    fn extensions(&self) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        if let Some(id) = self.request_id {
            extensions.insert(id);
        }
        if self.deferred {
            extensions.insert(RenderedByEnvelope);
        }
        extensions
    }

    fn refusal(&self, side: Side, category: Arc<str>) -> Response<Full<Bytes>> {
        self.log(side, &category);
        let extensions = self.extensions();
        let mut response = refuse(
            "ContentRiskFilter",
            MaasError::SensitiveContent,
            StatusCode::FORBIDDEN,
            &extensions,
        );
        response
            .extensions_mut()
            .insert(RiskRefusal { side, category });
        response
    }
}

/// A classification, decided now or pending with its timeout.
pub(crate) enum Judged<F> {
    Pass,
    Block(Arc<str>),
    Later(tokio::time::Timeout<F>),
}

const UNAVAILABLE: &str = "classifier-unavailable";
const UNREADABLE: &str = "answer-unreadable";
const IDENTITY: http::HeaderValue = http::HeaderValue::from_static("identity");
/// A UTF-8 byte order mark, which JSON text must not begin with and some servers write.
const BOM: &[u8] = b"\xEF\xBB\xBF";

pub(crate) fn judge<Cl: Classifier>(
    shared: &Shared<Cl>,
    side: Side,
    text: &str,
) -> Judged<Cl::Future> {
    if text.is_empty() {
        // Nothing to classify (a body with no text, a token-id prompt): no classifier, local or
        // remote, is asked.
        return Judged::Pass;
    }
    match shared.classifier.classify(side, text) {
        Classified::Now(result) => match apply(&shared.config, Ok(result)) {
            Verdict::Pass => Judged::Pass,
            Verdict::Block { category } => Judged::Block(category),
        },
        Classified::Later(future) => {
            Judged::Later(tokio::time::timeout(shared.config.timeout, future))
        }
    }
}

/// A classification's outcome under the failure policy.
pub(crate) fn apply(
    config: &Config,
    outcome: Result<Result<Verdict, BoxError>, tokio::time::error::Elapsed>,
) -> Verdict {
    match outcome {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(_)) | Err(_) => match config.failure {
            OnFailure::Allow => Verdict::Pass,
            OnFailure::Block => Verdict::Block {
                category: Arc::from(UNAVAILABLE),
            },
        },
    }
}

fn endpoint(path: &str) -> Endpoint {
    match path {
        "/v1/completions" => Endpoint::Completions,
        "/v1/embeddings" => Endpoint::Embeddings,
        _ => Endpoint::ChatCompletions,
    }
}

impl<S, Cl, ReqBody, ResBody> Service<Request<ReqBody>> for ContentRiskFilter<S, Cl>
where
    S: Service<Request<MaasBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    Cl: Classifier,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<RiskBody<ResBody, Cl>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody, Cl>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let ctx = RefusalCtx::of(req.extensions());
        let shared = Arc::clone(&self.shared);
        if shared.config.output
            && req.headers().contains_key(http::header::ACCEPT_ENCODING)
            && !(shared.config.pass_grpc && is_grpc(req.headers()))
        {
            // A compressed answer cannot be read, so cannot be checked: a client that names
            // the codings it takes asks for none. One that names none is left as it is:
            // servers compress only for a client that asks, and an answer compressed anyway
            // goes by the failure policy. (Inserting the header for every request would cost
            // the hot path a header.)
            req.headers_mut()
                .insert(http::header::ACCEPT_ENCODING, IDENTITY.clone());
        }
        let state = if !shared.config.input {
            State::Called {
                future: self.inner.call(req.map(MaasBody::new)),
            }
        } else if let Some(parsed) = req.extensions().get::<Arc<ParsedRequest>>() {
            let text = parsed.joined_texts();
            match judge(&shared, Side::Input, text) {
                Judged::Pass => State::Called {
                    future: self.inner.call(req.map(MaasBody::new)),
                },
                Judged::Block(category) => State::Refused {
                    response: Some(ctx.refusal(Side::Input, category)),
                },
                Judged::Later(verdict) => State::Judging {
                    verdict,
                    rest: Some((req.map(MaasBody::new), self.readied())),
                },
            }
        } else if (matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
            || !req.body().is_end_stream())
            && !(shared.config.pass_grpc && is_grpc(req.headers()))
        {
            let (parts, body) = req.into_parts();
            match start_buffering(body, shared.config.body_limit) {
                Ok(collect) => State::Reading {
                    collect,
                    rest: Some((parts, self.readied())),
                },
                Err(_) => State::Refused {
                    response: Some(refuse(
                        "ContentRiskFilter",
                        MaasError::EntityTooLarge,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &parts.extensions,
                    )),
                },
            }
        } else {
            State::Called {
                future: self.inner.call(req.map(MaasBody::new)),
            }
        };
        ResponseFuture { state, shared, ctx }
    }
}

/// gRPC messages are protobuf, not text, and their bodies are streams a client may keep open:
/// they are never held for a check.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    content_type_is(headers, b"application/grpc")
}

impl<S: Clone, Cl> ContentRiskFilter<S, Cl> {
    /// The readied service, for a future that calls it later; a fresh clone stays behind.
    fn readied(&mut self) -> S {
        take_readied(&mut self.inner)
    }
}

pin_project! {
    /// Response future of [`ContentRiskFilter`].
    pub struct ResponseFuture<S, B, R, Cl>
    where
        S: Service<Request<MaasBody<B>>>,
        B: Body,
        B::Error: Into<BoxError>,
        Cl: Classifier,
    {
        #[pin]
        state: State<S, B, R, Cl>,
        shared: Arc<Shared<Cl>>,
        ctx: RefusalCtx,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, R, Cl>
    where
        S: Service<Request<MaasBody<B>>>,
        B: Body,
        B::Error: Into<BoxError>,
        Cl: Classifier,
    {
        Refused { response: Option<Response<Full<Bytes>>> },
        Reading { #[pin] collect: LimitedCollect<B>, rest: Option<(Parts, S)> },
        Judging {
            #[pin] verdict: tokio::time::Timeout<Cl::Future>,
            rest: Option<(Request<MaasBody<B>>, S)>,
        },
        Called { #[pin] future: S::Future },
        Holding {
            body: Option<Pin<Box<R>>>,
            held: Gather,
            parts: Option<ResponseParts>,
        },
        JudgingOutput {
            #[pin] verdict: tokio::time::Timeout<Cl::Future>,
            held: Option<(ResponseParts, Bytes, Option<u64>)>,
        },
    }
}

impl<S, B, R, Cl> fmt::Debug for ResponseFuture<S, B, R, Cl>
where
    S: Service<Request<MaasBody<B>>>,
    B: Body,
    B::Error: Into<BoxError>,
    Cl: Classifier,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, R, Cl> Future for ResponseFuture<S, B, R, Cl>
where
    S: Service<Request<MaasBody<B>>, Response = Response<R>>,
    B: Body,
    B::Error: Into<BoxError>,
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
    Cl: Classifier,
{
    type Output = Result<Response<RiskBody<R, Cl>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Refused { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(RiskBody::full)));
                }
                StateProj::Reading { collect, rest } => {
                    let body = finish_buffering(ready!(collect.poll(cx)));
                    let (mut parts, mut service) = rest.take().expect("polled after completion");
                    let bytes = match body {
                        Ok(bytes) => bytes,
                        Err(crate::body::BufferError::TooLarge) => {
                            return Poll::Ready(Ok(refuse(
                                "ContentRiskFilter",
                                MaasError::EntityTooLarge,
                                StatusCode::PAYLOAD_TOO_LARGE,
                                &parts.extensions,
                            )
                            .map(RiskBody::full)));
                        }
                        Err(crate::body::BufferError::Read) => {
                            return Poll::Ready(Ok(refuse(
                                "ContentRiskFilter",
                                MaasError::UnparsableBody,
                                StatusCode::BAD_REQUEST,
                                &parts.extensions,
                            )
                            .map(RiskBody::full)));
                        }
                    };
                    // A body that is not JSON names no text; the validator or the backend
                    // answers for it.
                    let parsed = loads(&bytes).ok().map(|json| {
                        ParsedRequest::new(endpoint(parts.uri.path()), json, &EstimatingCounter)
                    });
                    let text = parsed.as_ref().map_or("", ParsedRequest::joined_texts);
                    set_buffered_length(&mut parts.headers, bytes.len());
                    let req = Request::from_parts(parts, MaasBody::full(bytes));
                    match judge(this.shared, Side::Input, text) {
                        Judged::Pass => State::Called {
                            future: service.call(req),
                        },
                        Judged::Block(category) => State::Refused {
                            response: Some(this.ctx.refusal(Side::Input, category)),
                        },
                        Judged::Later(verdict) => State::Judging {
                            verdict,
                            rest: Some((req, service)),
                        },
                    }
                }
                StateProj::Judging { verdict, rest } => {
                    let outcome = ready!(verdict.poll(cx));
                    let (req, mut service) = rest.take().expect("polled after completion");
                    match apply(&this.shared.config, outcome) {
                        Verdict::Pass => State::Called {
                            future: service.call(req),
                        },
                        Verdict::Block { category } => State::Refused {
                            response: Some(this.ctx.refusal(Side::Input, category)),
                        },
                    }
                }
                StateProj::Called { future } => {
                    let response = ready!(future.poll(cx))?;
                    match route_output(response, this.shared, this.ctx) {
                        Routed::Done(response) => return Poll::Ready(Ok(response)),
                        Routed::Hold(parts, body) => State::Holding {
                            held: Gather::for_body(&body, this.shared.config.output_limit),
                            body: Some(Box::pin(body)),
                            parts: Some(parts),
                        },
                    }
                }
                StateProj::Holding { body, held, parts } => {
                    let limit = this.shared.config.output_limit;
                    let frame = match body.as_mut() {
                        Some(inner) => ready!(inner.as_mut().poll_frame(cx)),
                        None => panic!("polled after completion"),
                    };
                    match frame {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                held.push(data);
                            }
                            if held.len() <= limit {
                                continue;
                            }
                            // Too large to hold: it cannot be checked. Refused, it was still
                            // generated: its reservation stands.
                            let parts = parts.take().expect("polled after completion");
                            let held = held.take();
                            return Poll::Ready(Ok(match this.shared.config.failure {
                                OnFailure::Block => blocked(this.ctx, Arc::from(UNAVAILABLE), None),
                                OnFailure::Allow => {
                                    let rest = body.take().expect("polled after completion");
                                    Response::from_parts(parts, RiskBody::prefix(held, rest))
                                }
                            }));
                        }
                        Some(Err(err)) => {
                            // The backend broke off mid-answer, or stalled past a deadline
                            // the body keeps (a proxy's idle timeout).
                            let _ = parts.take();
                            let error =
                                backend_failure(&*err.into(), MaasError::BackendUnavailable);
                            let status = error.status();
                            return Poll::Ready(Ok(refuse(
                                "ContentRiskFilter",
                                error,
                                status,
                                &this.ctx.extensions(),
                            )
                            .map(RiskBody::full)));
                        }
                        None => {
                            let parts = parts.take().expect("polled after completion");
                            let bytes = held.take();
                            let mut text = String::new();
                            let json = bytes.strip_prefix(BOM).unwrap_or(&bytes);
                            let Ok(used) = read_answer(json, &mut text) else {
                                // Announced as JSON, and not: nothing in it can be checked.
                                return Poll::Ready(Ok(match this.shared.config.failure {
                                    OnFailure::Block => {
                                        blocked(this.ctx, Arc::from(UNREADABLE), None)
                                    }
                                    OnFailure::Allow => passed(parts, bytes, None),
                                }));
                            };
                            match judge(this.shared, Side::Output, &text) {
                                Judged::Pass => {
                                    return Poll::Ready(Ok(passed(parts, bytes, used)));
                                }
                                Judged::Block(category) => {
                                    return Poll::Ready(Ok(blocked(this.ctx, category, used)));
                                }
                                Judged::Later(verdict) => State::JudgingOutput {
                                    verdict,
                                    held: Some((parts, bytes, used)),
                                },
                            }
                        }
                    }
                }
                StateProj::JudgingOutput { verdict, held } => {
                    let outcome = ready!(verdict.poll(cx));
                    let (parts, bytes, used) = held.take().expect("polled after completion");
                    return Poll::Ready(Ok(match apply(&this.shared.config, outcome) {
                        Verdict::Pass => passed(parts, bytes, used),
                        Verdict::Block { category } => blocked(this.ctx, category, used),
                    }));
                }
            };
            this.state.set(next);
        }
    }
}

/// A checked answer, passed on with the usage read from it, so that an outer token limiter
/// charges it without parsing the answer a second time.
fn passed<R, Cl>(
    mut parts: http::response::Parts,
    bytes: Bytes,
    used: Option<u64>,
) -> Response<RiskBody<R, Cl>>
where
    Cl: Classifier,
{
    parts.extensions.insert(ReportedUsage(used));
    Response::from_parts(parts, RiskBody::full(Full::new(bytes)))
}

/// The 81011 answer in place of generated text, carrying the usage the backend reported so
/// that an outer token limiter charges it.
fn blocked<R, Cl>(
    ctx: &RefusalCtx,
    category: Arc<str>,
    used: Option<u64>,
) -> Response<RiskBody<R, Cl>>
where
    Cl: Classifier,
{
    let mut response = ctx.refusal(Side::Output, category);
    response.extensions_mut().insert(ReportedUsage(used));
    response.map(RiskBody::full)
}

enum Routed<R, Cl: Classifier> {
    Done(Response<RiskBody<R, Cl>>),
    Hold(ResponseParts, R),
}

/// What the answer needs: streams are checked in windows (when enabled), successful JSON
/// answers are held and checked, everything else passes.
fn route_output<R, Cl>(
    response: Response<R>,
    shared: &Arc<Shared<Cl>>,
    ctx: &RefusalCtx,
) -> Routed<R, Cl>
where
    R: Body<Data = Bytes>,
    Cl: Classifier,
{
    let config = &shared.config;
    let headers = response.headers();
    let stream = media_type_is(headers, b"text/event-stream");
    let json = !stream && media_type_is(headers, b"application/json");
    if !config.output
        || !response.status().is_success()
        || !(json || stream && config.stream.is_some())
    {
        return Routed::Done(response.map(RiskBody::inner));
    }
    // An answer that cannot be read is never checked: one sent encoded (the request asked
    // for none), or one that announces more than can be held (decided now, as holding the
    // limit's worth of it would decide later). Refused, it was still generated: its
    // reservation stands.
    let unreadable = if is_encoded(headers) {
        Some(UNREADABLE)
    } else if json && response.body().size_hint().lower() > config.output_limit as u64 {
        Some(UNAVAILABLE)
    } else {
        None
    };
    if let Some(category) = unreadable {
        return Routed::Done(match config.failure {
            OnFailure::Block => blocked(ctx, Arc::from(category), None),
            OnFailure::Allow => response.map(RiskBody::inner),
        });
    }
    if stream {
        return Routed::Done(
            response.map(|body| {
                RiskBody::stream(RiskStream::new(body, Arc::clone(shared), ctx.clone()))
            }),
        );
    }
    let (parts, body) = response.into_parts();
    Routed::Hold(parts, body)
}

pin_project! {
    /// The body of [`ContentRiskFilter`] responses: passed through, checked as a stream, or
    /// bytes the layer produced (a checked answer, a refusal).
    pub struct RiskBody<R, Cl>
    where
        Cl: Classifier,
    {
        #[pin]
        kind: Kind<R, Cl>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<R, Cl>
    where
        Cl: Classifier,
    {
        Inner { #[pin] body: R },
        Full { #[pin] body: Full<Bytes> },
        Prefix { held: Option<Bytes>, rest: Pin<Box<R>> },
        Stream { body: Pin<Box<RiskStream<R, Cl>>> },
    }
}

impl<R, Cl: Classifier> RiskBody<R, Cl> {
    fn inner(body: R) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    fn full(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Full { body },
        }
    }

    /// What was held, then the rest of the answer as it comes.
    fn prefix(held: Bytes, rest: Pin<Box<R>>) -> Self {
        Self {
            kind: Kind::Prefix {
                held: Some(held),
                rest,
            },
        }
    }

    fn stream(body: RiskStream<R, Cl>) -> Self {
        Self {
            kind: Kind::Stream {
                body: Box::pin(body),
            },
        }
    }
}

impl<R, Cl: Classifier> fmt::Debug for RiskBody<R, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RiskBody").finish_non_exhaustive()
    }
}

impl<R, Cl> Body for RiskBody<R, Cl>
where
    R: Body<Data = Bytes>,
    Cl: Classifier,
{
    type Data = Bytes;
    type Error = R::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, R::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            KindProj::Prefix { held, rest } => match held.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => rest.as_mut().poll_frame(cx),
            },
            KindProj::Stream { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
            Kind::Prefix { held, rest } => held.is_none() && rest.is_end_stream(),
            Kind::Stream { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
            Kind::Prefix { held, rest } => {
                let held = held.as_ref().map_or(0, |held| held.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(held + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(held + upper);
                }
                hint
            }
            Kind::Stream { body } => body.size_hint(),
        }
    }
}
