//! `RequestSchemaValidator`: byte-exact vLLM/pydantic validation of OpenAI-style request bodies.
//!
//! For `POST` requests to its routes (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, and any registered with [`RequestSchemaValidatorLayer::route`]) the layer
//! reads the body once, bounded (12 MiB by default → 413 APIG.0201), and answers exactly as the
//! MaaS backend (vLLM 0.4–0.6 under FastAPI 0.111 and pydantic 2.8) does when it is not
//! acceptable:
//!
//! | body | answer |
//! |---|---|
//! | empty, or `null` | 400 `missing` at `('body',)` |
//! | `Content-Type` present but not JSON (`text/plain`) | 400 `model_attributes_type` with the bytes |
//! | not JSON | 400 `json_invalid` with CPython's message and character position |
//! | not UTF-8/16/32, nested over [`MAX_DEPTH`], an int of over 4300 digits | 400 `{"detail":"There was an error parsing the body"}` |
//! | fails the schema | 400 pydantic's error list, in pydantic's order (at most [`MAX_ERRORS`] errors and [`MESSAGE_LIMIT`] bytes of them, then `... N more errors`) |
//! | `model` empty / not in the [`ModelCatalog`] | 400 81001 / 404 81009 (gateway dialect) or vLLM's 404 (backend dialect) |
//! | prompt + `max_tokens` over the model's context | 400 vLLM's context-length message |
//!
//! Valid bodies, the common case, are accepted without building a tree: the text is checked
//! against the schema directly, and only a body that check is not sure of (every refused body
//! among them) is decoded into a [`Json`] tree to be judged and, when refused, quoted. Both ways
//! give the same answer and the same [`ParsedRequest`]; [`ParsedRequest::json`] decodes the tree
//! on first use when the fast way was taken.
//!
//! Accepted requests go on with the same bytes, a [`ParsedRequest`] (as `Arc<ParsedRequest>`)
//! and a [`RequestedModel`](crate::RequestedModel) in their extensions. Other methods and paths pass untouched.
//!
//! # Dialects
//!
//! [`ValidationDialect::Gateway`] (default) answers as the live MaaS service: the MaaS gateway
//! reads `model` before the backend sees the body, so an empty model is 81001 and an unknown one
//! 81009; everything else is the backend's answer. [`ValidationDialect::Backend`] answers as a
//! bare vLLM server: an unknown (or empty) model is ``The model `X` does not exist.``, checked
//! after the schema.
//!
//! ```
//! use axum::{Router, routing::post};
//! use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer};
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(|| async { "ok" }))
//!     .layer(
//!         RequestSchemaValidatorLayer::new()
//!             .models(ModelCatalog::new().model("DeepSeek-V3", 65_536)),
//!     );
//! ```

mod accept;
mod catalog;
pub(crate) mod json;
mod openai;
mod parsed;
mod printable;
mod repr;
mod schema;
mod tokens;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

pub use self::catalog::ModelCatalog;
pub use self::json::{DecodeError, Dict, Int, Json, MAX_DEPTH, WideStr, loads};
pub use self::parsed::{Endpoint, Message, Messages, ParsedRequest};
pub use self::schema::{Bounds, MAX_ERRORS, MESSAGE_LIMIT, Members, Schema, Ty};
#[cfg(feature = "tiktoken")]
pub use self::tokens::TiktokenCounter;
pub use self::tokens::{EstimatingCounter, TokenCounter};

use self::accept::Slot;
use self::catalog::Found;
use self::json::{Text, decode_text};
use self::schema::{Errors, Input, Loc, PyError, format_errors, validate_body};
use crate::body::{BoxError, BufferError, DEFAULT_BODY_LIMIT, MaasBody};
use crate::buffered::{Decide, Refusal, Step};
use crate::error::MaasError;
use crate::model::EndpointRoute;

/// Who answers for the model: the MaaS gateway (81001/81009) or the vLLM backend.
///
/// ```
/// use tower_maas::validate::{RequestSchemaValidatorLayer, ValidationDialect};
///
/// // Answer as a bare vLLM server would, for clients written against one.
/// let layer = RequestSchemaValidatorLayer::new().dialect(ValidationDialect::Backend);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationDialect {
    /// As the live MaaS service: empty model 81001, unknown model 81009, before the schema.
    #[default]
    Gateway,
    /// As a bare vLLM server: unknown model ``The model `X` does not exist.``, after the schema.
    Backend,
}

/// Layer that applies [`RequestSchemaValidator`]. See the [module docs](self).
///
/// ```
/// use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer};
///
/// // The models served, with their context lengths: others get 81009, longer prompts 400.
/// let layer = RequestSchemaValidatorLayer::new()
///     .models(ModelCatalog::new().model("DeepSeek-V3", 65_536))
///     .body_limit(1 << 20);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RequestSchemaValidatorLayer {
    config: Arc<Config>,
}

// Aligned to a cache line, so that the `Arc`'s counts, which every request moves, sit on a line
// of their own and not on the fields every core reads (`benches/gateway.rs contend`).
#[repr(align(64))]
#[derive(Clone)]
struct Config {
    routes: Vec<Route>,
    body_limit: usize,
    catalog: Option<ModelCatalog>,
    dialect: ValidationDialect,
    counter: Arc<dyn TokenCounter>,
}

#[derive(Clone)]
struct Route {
    path: Cow<'static, str>,
    schema: Arc<Schema>,
    /// The schema's fields the parsed request reads, for the fast path.
    slots: Box<[Option<Slot>]>,
    endpoint: Endpoint,
}

impl Route {
    fn new(path: Cow<'static, str>, schema: Schema, endpoint: Endpoint) -> Self {
        Self {
            path,
            slots: accept::slots(&schema),
            schema: Arc::new(schema),
            endpoint,
        }
    }
}

impl Default for RequestSchemaValidatorLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestSchemaValidatorLayer {
    /// Validates `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` with vLLM's
    /// schemas; every model accepted until [`models`](Self::models) sets a catalog.
    pub fn new() -> Self {
        let route = |path, schema, endpoint| Route::new(Cow::Borrowed(path), schema, endpoint);
        Self {
            config: Arc::new(Config {
                routes: vec![
                    route(
                        "/v1/chat/completions",
                        openai::chat_completion(),
                        Endpoint::ChatCompletions,
                    ),
                    route(
                        "/v1/completions",
                        openai::completion(),
                        Endpoint::Completions,
                    ),
                    route("/v1/embeddings", openai::embedding(), Endpoint::Embeddings),
                ],
                body_limit: DEFAULT_BODY_LIMIT,
                catalog: None,
                dialect: ValidationDialect::default(),
                counter: Arc::new(EstimatingCounter),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// Validates `POST path` with `schema` too (replacing any schema of that path).
    pub fn route(self, path: impl Into<Cow<'static, str>>, schema: Schema) -> Self {
        let path = path.into();
        self.with(|config| {
            config.routes.retain(|r| r.path != path);
            config
                .routes
                .push(Route::new(path, schema, Endpoint::Custom));
        })
    }

    /// The models served, with their context lengths.
    pub fn models(self, catalog: ModelCatalog) -> Self {
        self.with(|config| config.catalog = Some(catalog))
    }

    /// Who answers for the model (default [`ValidationDialect::Gateway`]).
    pub fn dialect(self, dialect: ValidationDialect) -> Self {
        self.with(|config| config.dialect = dialect)
    }

    /// The bound on a body (default 12 MiB, APIG's).
    pub fn body_limit(self, limit: usize) -> Self {
        self.with(|config| config.body_limit = limit)
    }

    /// How prompt tokens are counted (default [`EstimatingCounter`]).
    pub fn token_counter(self, counter: impl TokenCounter) -> Self {
        self.with(|config| config.counter = Arc::new(counter))
    }
}

impl fmt::Debug for RequestSchemaValidatorLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSchemaValidatorLayer")
            .field(
                "routes",
                &self
                    .config
                    .routes
                    .iter()
                    .map(|r| &r.path)
                    .collect::<Vec<_>>(),
            )
            .field("body_limit", &self.config.body_limit)
            .field("dialect", &self.config.dialect)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RequestSchemaValidatorLayer {
    type Service = RequestSchemaValidator<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSchemaValidator {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// Middleware that validates request bodies. See the [module docs](self).
pub struct RequestSchemaValidator<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> RequestSchemaValidator<S> {
    define_inner_service_accessors!();
}

impl<S: Clone> Clone for RequestSchemaValidator<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RequestSchemaValidator<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSchemaValidator")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestSchemaValidator<S>
where
    S: Service<Request<MaasBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<MaasBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let route = (parts.method == Method::POST)
            .then(|| {
                self.config
                    .routes
                    .iter()
                    .position(|r| r.path == parts.uri.path())
            })
            .flatten();
        let step = match route {
            None => Step::call(&mut self.inner, parts, body),
            Some(route) => {
                let check = Check {
                    config: Arc::clone(&self.config),
                    route,
                };
                Step::read(parts, body, self.config.body_limit, &mut self.inner, check)
            }
        };
        ResponseFuture { step }
    }
}

/// Validation of a buffered body against one route.
struct Check {
    config: Arc<Config>,
    route: usize,
}

impl Decide for Check {
    const LAYER: &'static str = "RequestSchemaValidator";

    fn decide(self, parts: &mut Parts, body: Result<Bytes, BufferError>) -> Result<Bytes, Refusal> {
        let outcome = match body {
            Err(BufferError::TooLarge) => Err(MaasError::EntityTooLarge),
            // The body broke off: what arrived is not the request the client meant.
            Err(BufferError::Read) => Err(MaasError::UnparsableBody),
            Ok(bytes) => check(
                &self.config,
                &self.config.routes[self.route],
                &parts.headers,
                &bytes,
            )
            .map(|parsed| (bytes, parsed)),
        };
        match outcome {
            Err(error) => {
                let status = error.status();
                Err((error, status))
            }
            Ok((bytes, (parsed, route))) => {
                if let Some(model) = parsed.requested_model() {
                    parts.extensions.insert(model.clone());
                }
                if let Some(route) = route {
                    parts.extensions.insert(route);
                }
                parts.extensions.insert(Arc::new(parsed));
                Ok(bytes)
            }
        }
    }
}

/// Whether FastAPI parses a body with this `Content-Type` as JSON: none, or
/// `application/json`, or `application/*+json`, parameters ignored (`email.message` rules).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    // `email.message`: parameters dropped, whitespace stripped, compared case-insensitively;
    // an empty value counts as none. Non-ASCII bytes (Starlette reads Latin-1) match nothing.
    let value = value.as_bytes();
    let media = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if media.is_empty() {
        return value.trim_ascii().is_empty();
    }
    let mut halves = media.splitn(3, |&b| b == b'/');
    match (halves.next(), halves.next(), halves.next()) {
        (Some(main), Some(sub), None) => {
            main.eq_ignore_ascii_case(b"application")
                && (sub.eq_ignore_ascii_case(b"json")
                    || sub.len() >= 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
        }
        _ => false,
    }
}

/// FastAPI's body handling, then pydantic's validation, then vLLM's model and context checks.
fn check(
    config: &Config,
    route: &Route,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<(ParsedRequest, Option<EndpointRoute>), MaasError> {
    let body_loc = || vec![Loc::Key("body")];
    let invalid = |errors: &[PyError<'_>]| MaasError::Validation {
        message: format_errors(errors, 0),
    };
    let missing_body = || {
        invalid(&[PyError {
            kind: "missing",
            loc: body_loc(),
            msg: "Field required".into(),
            input: Input::None,
            ctx: None,
        }])
    };
    if bytes.is_empty() {
        return Err(missing_body());
    }
    if !is_json(headers) {
        return Err(invalid(&[PyError {
            kind: "model_attributes_type",
            loc: body_loc(),
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            input: Input::Bytes(bytes),
            ctx: None,
        }]));
    }
    // The fast path: a body it is sure of is accepted without a tree; the model and context
    // checks that follow the schema are the same either way.
    // Decoded once: the fast path reads the text, and the exact path parses the same text.
    let decoded = decode_text(bytes);
    if let Ok(Text::Utf8(text)) = decoded {
        if let Some(body) = accept::accept(&route.schema, &route.slots, text) {
            // The model first, as on the exact path: a refusal counts no tokens.
            let model = body.model();
            let found = check_model(config, model.as_ref().map(|m| &*m.name))?;
            let parsed = ParsedRequest::from_accepted(
                route.endpoint,
                bytes.clone(),
                &body,
                model.as_ref(),
                &*config.counter,
            );
            return admit(parsed, found);
        }
    }
    let json = match decoded.and_then(json::parse) {
        Ok(json) => json,
        Err(DecodeError::Unparsable) => return Err(MaasError::UnparsableBody),
        Err(DecodeError::Syntax { msg, pos }) => {
            return Err(invalid(&[PyError {
                kind: "json_invalid",
                loc: vec![Loc::Key("body"), Loc::Index(pos)],
                msg: "JSON decode error".into(),
                input: Input::EmptyDict,
                ctx: Some(("error", schema::CtxValue::Str(msg.into()))),
            }]));
        }
    };
    if json == Json::Null {
        return Err(missing_body());
    }
    let model = match &json {
        Json::Dict(dict) => dict.get("model").and_then(Json::as_str),
        _ => None,
    };
    // The gateway reads the model before the backend validates the body.
    let found = check_model(config, model)?;
    let mut errors = Errors::default();
    validate_body(&route.schema, &json, &mut errors);
    if !errors.is_empty() {
        return Err(MaasError::Validation {
            message: errors.message(),
        });
    }
    let parsed = ParsedRequest::new(route.endpoint, json, &*config.counter);
    admit(parsed, found)
}

/// What the catalog says of the requested model.
enum Served {
    /// No model asked for, or no catalog to ask.
    Unchecked,
    /// A model the catalog does not serve.
    Unknown,
    Found(Found),
}

/// The catalog's word on `model`, after the gateway's own checks: empty 81001, unknown 81009.
fn check_model(config: &Config, model: Option<&str>) -> Result<Served, MaasError> {
    let served = match (model, &config.catalog) {
        (Some(model), Some(catalog)) => catalog.find(model).map_or(Served::Unknown, Served::Found),
        _ => Served::Unchecked,
    };
    if config.dialect == ValidationDialect::Gateway {
        match (model, &served) {
            (Some(""), _) => return Err(MaasError::InvalidRequestBody),
            (Some(_), Served::Unknown) => return Err(MaasError::InvalidModel),
            _ => {}
        }
    }
    Ok(served)
}

/// After the schema: vLLM's unknown model, then the context length.
fn admit(
    parsed: ParsedRequest,
    served: Served,
) -> Result<(ParsedRequest, Option<EndpointRoute>), MaasError> {
    let (context_length, route_to) = match served {
        Served::Unknown => {
            return Err(MaasError::BackendModelNotFound {
                model: parsed.model().unwrap_or_default().to_owned(),
            });
        }
        Served::Found(found) => (Some(found.context_length), found.route),
        Served::Unchecked => (None, None),
    };
    // `u64::MAX` in the catalog means the model's context is not checked.
    if let Some(max) = context_length.filter(|&max| max != u64::MAX) {
        check_context(&parsed, max)?;
    }
    Ok((parsed, route_to))
}

/// vLLM's `_validate_input`: prompt plus `max_tokens` within the model's context.
fn check_context(parsed: &ParsedRequest, max: u64) -> Result<(), MaasError> {
    let prompt = parsed.largest_prompt();
    if parsed.endpoint() == Endpoint::Embeddings {
        if prompt > max {
            return Err(MaasError::EmbeddingContextLengthExceeded { max, input: prompt });
        }
        return Ok(());
    }
    match parsed.max_tokens_exact() {
        None if prompt >= max => Err(MaasError::ContextLengthExceeded {
            max,
            prompt,
            completion: None,
        }),
        Some(completion) if u128::from(prompt).saturating_add(completion) > u128::from(max) => {
            Err(MaasError::ContextLengthExceeded {
                max,
                prompt,
                completion: Some(completion),
            })
        }
        _ => Ok(()),
    }
}

buffered_response_future! {
    /// Response future of [`RequestSchemaValidator`].
    Check
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http_body_util::Full;
    use tower::ServiceExt;

    use super::*;

    /// `check` takes the fast path for an ordinary body, and the exact path for one it is not
    /// sure of (a key given twice).
    #[tokio::test]
    async fn ordinary_bodies_are_checked_without_a_tree() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = tower::service_fn({
            let seen = Arc::clone(&seen);
            move |req: Request<crate::MaasBody<Full<Bytes>>>| {
                let parsed = req.extensions().get::<Arc<ParsedRequest>>().cloned();
                seen.lock()
                    .unwrap()
                    .push(parsed.map(|p| p.read_without_a_tree()));
                async { Ok::<_, Infallible>(Response::new(())) }
            }
        });
        let layer = RequestSchemaValidatorLayer::new();
        for (body, without_a_tree) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi\nthere"}]}"#,
                true,
            ),
            (
                r#"{"model":"m","model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                false,
            ),
        ] {
            let request = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            layer.layer(inner.clone()).oneshot(request).await.unwrap();
            let seen = seen.lock().unwrap().pop();
            assert_eq!(seen, Some(Some(without_a_tree)), "{body}");
        }
    }

    /// Counts how often it is asked.
    #[derive(Clone, Default)]
    struct Asked(Arc<std::sync::atomic::AtomicU64>);

    impl TokenCounter for Asked {
        fn count(&self, text: &str) -> u64 {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            text.len() as u64
        }
    }

    /// The model is checked before the prompt is counted, on both paths: a refusal counts no
    /// tokens, an admitted request does.
    #[tokio::test]
    async fn a_refused_model_counts_no_tokens() {
        let inner = tower::service_fn(|_: Request<crate::MaasBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(()))
        });
        for (body, admitted) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                true,
            ),
            (
                r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#,
                false,
            ),
            // A key given twice: the exact path.
            (
                r#"{"model":"x","model":"x","messages":[{"role":"user","content":"hi"}]}"#,
                false,
            ),
            (
                r#"{"model":"m","model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                true,
            ),
        ] {
            let asked = Asked::default();
            let layer = RequestSchemaValidatorLayer::new()
                .models(ModelCatalog::new().model("m", 4096))
                .token_counter(asked.clone());
            let request = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let response = layer.layer(inner).oneshot(request).await.unwrap();
            assert_eq!(response.status().is_success(), admitted, "{body}");
            let counted = asked.0.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(counted > 0, admitted, "{body}: counted {counted} texts");
        }
    }
}
