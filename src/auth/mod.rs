//! API keys: the `BearerAuth` layer, the [`KeyStore`] trait and the in-memory store.
//!
//! `BearerAuth` reads the key from `Authorization: Bearer <key>` ([header rules](header)),
//! looks it up in a [`KeyStore`] and refuses, in this order:
//!
//! | check | refusal |
//! |---|---|
//! | header missing, empty, two of them, not `Bearer <token>` | 400 ModelArts.81002 |
//! | token malformed or over [`MAX_KEY_LEN`], or unknown key | 401 ModelArts.81003 |
//! | key frozen | 401 ModelArts.81006 |
//! | key's token quota used up | 401 ModelArts.81005 |
//! | model not enabled for the key | 401 ModelArts.81004 |
//!
//! (The three 401s of the key's state become 403 with
//! [`BearerAuthLayer::key_state_status`], as later editions of MaaS answer.)
//!
//! On success the [`Principal`] goes into the request's extensions and the `Authorization` header
//! is removed, so that an upstream never sees a client's key
//! ([`BearerAuthLayer::keep_authorization`] keeps it).
//!
//! # Which model, and when the body is read
//!
//! The 81004 check needs the request's model. `BearerAuth` takes it, in this order, from:
//! 1. a [`RequestedModel`] in the request's extensions (put there by a layer that parsed the body
//!    before, or by your own code);
//! 2. nowhere, when the key may call every model ([`ModelAccess::all`], the default): no body is
//!    read at all;
//! 3. nowhere, for a request of another method whose body is known to be empty (a `GET`
//!    without a body, say);
//! 4. the body of a `POST`/`PUT`/`PATCH`, or of any method that sent one: buffered (bounded by
//!    [`BearerAuthLayer::body_limit`], 12 MiB by default → 413 APIG.0201), and only its
//!    top-level `"model"` read, the rest skipped. A body in which no non-empty string model can
//!    be found is refused with 81001 `Invalid request body.`, the seed's answer when "parsing the
//!    body failed, for example, JSON formatting failed or empty model parameters". The same bytes
//!    are handed on (no copy), with `Content-Length` set to them and the model as a
//!    [`RequestedModel`].
//!
//! So in the MaaS order (auth before validation) only keys restricted to some models cost a
//! body read, exactly as the MaaS gateway reads `model` to route before the backend validates.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::post};
//! use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};
//!
//! let keys = Arc::new(InMemoryKeyStore::new());
//! keys.insert("sk-demo", KeyPolicy::new().models(["DeepSeek-V3"]).rpm(60)).unwrap();
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(|| async { "ok" }))
//!     .layer(BearerAuthLayer::new(keys));
//! ```

pub mod header;
mod key;
mod principal;
mod store;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

pub use self::header::MAX_KEY_LEN;
pub use self::key::{InvalidKeyDigest, KeyDigest, PresentedKey};
pub use self::principal::{KeyId, KeyPolicy, KeyState, ModelAccess, Principal, Quota};
pub use self::store::{DuplicateKey, InMemoryKeyStore, InsertAsError, KeyStore};

use crate::body::{BoxError, BufferError, DEFAULT_BODY_LIMIT, MaasBody};
use crate::buffered::{Decide, Refusal, Step};
use crate::error::{MaasError, refuse};
use crate::model::{RequestedModel, read_model};

/// Layer that applies [`BearerAuth`]. See the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use tower_maas::BearerAuthLayer;
/// use tower_maas::auth::{InMemoryKeyStore, KeyPolicy};
///
/// let keys = Arc::new(InMemoryKeyStore::new());
/// keys.insert("sk-demo", KeyPolicy::new().label("demo").rpm(60)).unwrap();
/// // The store stays yours: keys added, frozen or removed later count from the next request.
/// let layer = BearerAuthLayer::new(Arc::clone(&keys));
/// # let _ = layer;
/// ```
pub struct BearerAuthLayer<K: ?Sized> {
    store: Arc<K>,
    config: Config,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    keep_authorization: bool,
    key_state_status: StatusCode,
    body_limit: usize,
}

impl<K: KeyStore + ?Sized> BearerAuthLayer<K> {
    /// Authenticates against `store`.
    pub fn new(store: Arc<K>) -> Self {
        Self {
            store,
            config: Config {
                keep_authorization: false,
                key_state_status: StatusCode::UNAUTHORIZED,
                body_limit: DEFAULT_BODY_LIMIT,
            },
        }
    }

    /// Keep the `Authorization` header on requests passed on (removed by default, so upstreams
    /// never see client keys).
    pub fn keep_authorization(mut self, keep: bool) -> Self {
        self.config.keep_authorization = keep;
        self
    }

    /// The status of 81004, 81005 and 81006: `401` as the seed has it (default), or `403` as
    /// later editions of MaaS answer. The body's `type` word follows the status, and the
    /// [`Principal`] carries it to `TokenRateLimit`, whose 81005 for a quota shared in Redis
    /// answers the same.
    pub fn key_state_status(mut self, status: StatusCode) -> Self {
        self.config.key_state_status = status;
        self
    }

    /// The bound on a body read to find the model (default 12 MiB).
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.config.body_limit = limit;
        self
    }
}

impl<K: ?Sized> Clone for BearerAuthLayer<K> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            config: self.config,
        }
    }
}

impl<K: ?Sized> fmt::Debug for BearerAuthLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, K: ?Sized> Layer<S> for BearerAuthLayer<K> {
    type Service = BearerAuth<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            store: Arc::clone(&self.store),
            config: self.config,
        }
    }
}

/// Middleware that authenticates API keys. See the [module docs](self).
pub struct BearerAuth<S, K: ?Sized> {
    inner: S,
    store: Arc<K>,
    config: Config,
}

impl<S, K: KeyStore + ?Sized> BearerAuth<S, K> {
    /// Wraps `inner`, authenticating against `store`.
    pub fn new(inner: S, store: Arc<K>) -> Self {
        BearerAuthLayer::new(store).layer(inner)
    }
}

impl<S, K: ?Sized> BearerAuth<S, K> {
    define_inner_service_accessors!();
}

impl<S: Clone, K: ?Sized> Clone for BearerAuth<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: Arc::clone(&self.store),
            config: self.config,
        }
    }
}

impl<S: fmt::Debug, K: ?Sized> fmt::Debug for BearerAuth<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the checks that need no body decided.
enum Decision {
    Refuse(MaasError),
    Pass(Principal),
    /// The key is restricted to some models and the model must be read from the body.
    ReadModel(Principal),
}

impl<S, K: KeyStore + ?Sized> BearerAuth<S, K> {
    fn decide<B: Body>(&self, req: &Request<B>) -> Decision {
        let key = match header::bearer_key(req.headers()) {
            Ok(key) => key,
            Err(refusal) => return Decision::Refuse(refusal),
        };
        let Some(principal) = self.store.authenticate(PresentedKey::new(key)) else {
            return Decision::Refuse(MaasError::InvalidAuthorization);
        };
        let policy = principal.policy();
        if policy.state == KeyState::Frozen {
            return Decision::Refuse(MaasError::ResourceFrozen);
        }
        if principal.quota().is_exhausted() {
            return Decision::Refuse(MaasError::QuotaExhausted);
        }
        if policy.models.is_all() {
            return Decision::Pass(principal);
        }
        match req.extensions().get::<RequestedModel>() {
            Some(model) if principal.allows_model(model.as_str()) => Decision::Pass(principal),
            Some(_) => Decision::Refuse(MaasError::ModelNotEnabled),
            // Read whenever a body can name a model: every POST/PUT/PATCH, and any other
            // method whose body is not known to be empty (a DELETE with a body to a proxy).
            None if has_body(req.method()) || !req.body().is_end_stream() => {
                Decision::ReadModel(principal)
            }
            None => Decision::Pass(principal),
        }
    }
}

fn has_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S, K>
where
    S: Service<Request<MaasBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    K: KeyStore + ?Sized,
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
        let config = self.config;
        let step = match self.decide(&req) {
            Decision::Refuse(error) => {
                let (error, status) = refusal(error, config);
                Step::refused(refuse("BearerAuth", error, status, req.extensions()))
            }
            Decision::Pass(principal) => {
                let (mut parts, body) = req.into_parts();
                admit(&mut parts, principal, config);
                Step::call(&mut self.inner, parts, body)
            }
            Decision::ReadModel(principal) => {
                let (parts, body) = req.into_parts();
                let check = ModelCheck { principal, config };
                Step::read(parts, body, config.body_limit, &mut self.inner, check)
            }
        };
        ResponseFuture { step }
    }
}

/// Records a successful authentication on the request.
fn admit(parts: &mut Parts, principal: Principal, config: Config) {
    if !config.keep_authorization {
        parts.headers.remove(AUTHORIZATION);
    }
    parts
        .extensions
        .insert(principal.with_key_state_status(config.key_state_status));
}

/// `error` with its status: the configured one for the key-state rows.
fn refusal(error: MaasError, config: Config) -> Refusal {
    let status = if error.is_key_state() {
        config.key_state_status
    } else {
        error.status()
    };
    (error, status)
}

/// The 81004 check on the model a buffered body names.
struct ModelCheck {
    principal: Principal,
    config: Config,
}

impl Decide for ModelCheck {
    const LAYER: &'static str = "BearerAuth";

    fn decide(self, parts: &mut Parts, body: Result<Bytes, BufferError>) -> Result<Bytes, Refusal> {
        let decided = match body {
            Err(BufferError::TooLarge) => Err(MaasError::EntityTooLarge),
            // The client broke off or the connection failed: nothing usable was sent.
            Err(BufferError::Read) => Err(MaasError::InvalidRequestBody),
            Ok(bytes) => match read_model(&bytes) {
                None => Err(MaasError::InvalidRequestBody),
                Some(model) if !self.principal.allows_model(model.as_str()) => {
                    Err(MaasError::ModelNotEnabled)
                }
                Some(model) => Ok((bytes, model)),
            },
        };
        match decided {
            Err(error) => Err(refusal(error, self.config)),
            Ok((bytes, model)) => {
                parts.extensions.insert(model);
                admit(parts, self.principal, self.config);
                Ok(bytes)
            }
        }
    }
}

buffered_response_future! {
    /// Response future of [`BearerAuth`].
    ModelCheck
}
