//! The whole MaaS stack from one value ([`MaasLayers`]), and [`ServiceBuilderExt`], which adds
//! each layer to a `tower::ServiceBuilder` by name.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::post};
//! use tower_maas::auth::{InMemoryKeyStore, KeyPolicy};
//! use tower_maas::stack::MaasLayers;
//! use tower_maas::validate::ModelCatalog;
//!
//! let keys = Arc::new(InMemoryKeyStore::new());
//! keys.insert("sk-demo", KeyPolicy::new().rpm(60)).unwrap();
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(|| async { "ok" }))
//!     .layer(MaasLayers::new(keys).models(ModelCatalog::new().model("DeepSeek-V3", 65_536)));
//! ```

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::auth::{BearerAuth, BearerAuthLayer, KeyStore};
use crate::envelope::{ErrorEnvelope, ErrorEnvelopeLayer};
use crate::limit::{
    IpRateLimit, IpRateLimitLayer, MemoryStore, MonotonicClock, TokenRateLimit, TokenRateLimitLayer,
};
use crate::risk::{ContentRiskFilter, ContentRiskFilterLayer, KeywordClassifier};
use crate::validate::{ModelCatalog, RequestSchemaValidator, RequestSchemaValidatorLayer};

/// Every layer in the MaaS order, from one value: `ErrorEnvelope` → `IpRateLimit` →
/// `BearerAuth` → `RequestSchemaValidator` → `TokenRateLimit` → `ContentRiskFilter` → your
/// service.
///
/// Each layer starts from its own defaults, with no per-IP limit and no content check (a
/// keyword classifier without terms, input and output off); set what you need, either with the
/// shortcuts ([`models`](Self::models), [`dialect`](crate::ErrorEnvelopeLayer::dialect) through
/// [`envelope`](Self::envelope), …) or by handing over a configured layer.
///
/// ```
/// use std::sync::Arc;
/// use tower_maas::auth::InMemoryKeyStore;
/// use tower_maas::limit::IpRateLimitLayer;
/// use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier};
/// use tower_maas::stack::MaasLayers;
/// use tower_maas::{Dialect, ErrorEnvelopeLayer, ThrottleWindow};
///
/// let terms = KeywordClassifier::builder().term("demo", "forbidden phrase").build().unwrap();
/// let layers = MaasLayers::new(Arc::new(InMemoryKeyStore::new()))
///     .envelope(ErrorEnvelopeLayer::new().dialect(Dialect::Flat))
///     .ip_limit(IpRateLimitLayer::new(1200, ThrottleWindow::MINUTE))
///     .risk(ContentRiskFilterLayer::new(terms));
/// let service = tower::ServiceBuilder::new()
///     .layer(layers)
///     .service(tower::service_fn(|_: http::Request<http_body_util::Full<bytes::Bytes>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
///     }));
/// # let _ = service;
/// ```
pub struct MaasLayers<K: ?Sized, Cl = KeywordClassifier, St = MemoryStore, C = MonotonicClock> {
    envelope: ErrorEnvelopeLayer,
    ip_limit: IpRateLimitLayer,
    auth: BearerAuthLayer<K>,
    validator: RequestSchemaValidatorLayer,
    token_limit: TokenRateLimitLayer<St, C>,
    risk: ContentRiskFilterLayer<Cl>,
}

impl<K: KeyStore + ?Sized> MaasLayers<K> {
    /// The stack authenticating against `keys`, every other layer at its defaults.
    pub fn new(keys: Arc<K>) -> Self {
        let nothing = KeywordClassifier::builder()
            .build()
            .expect("a classifier without terms builds");
        Self {
            envelope: ErrorEnvelopeLayer::new(),
            ip_limit: IpRateLimitLayer::disabled(),
            auth: BearerAuthLayer::new(keys),
            validator: RequestSchemaValidatorLayer::new(),
            token_limit: TokenRateLimitLayer::new(),
            risk: ContentRiskFilterLayer::new(nothing)
                .input(false)
                .output(false),
        }
    }
}

impl<K: ?Sized, Cl, St, C> MaasLayers<K, Cl, St, C> {
    /// The envelope (dialect, request ids).
    pub fn envelope(mut self, envelope: ErrorEnvelopeLayer) -> Self {
        self.envelope = envelope;
        self
    }

    /// A per-IP limit (default: none).
    pub fn ip_limit(mut self, ip_limit: IpRateLimitLayer) -> Self {
        self.ip_limit = ip_limit;
        self
    }

    /// The authentication layer, configured (body limit, status of key states).
    pub fn auth(mut self, auth: BearerAuthLayer<K>) -> Self {
        self.auth = auth;
        self
    }

    /// The validator, configured.
    pub fn validator(mut self, validator: RequestSchemaValidatorLayer) -> Self {
        self.validator = validator;
        self
    }

    /// The models served: the validator's catalog.
    pub fn models(mut self, catalog: ModelCatalog) -> Self {
        self.validator = self.validator.models(catalog);
        self
    }

    /// The token limiter, configured (its store and clock, burst, headers).
    pub fn token_limit<St2, C2>(
        self,
        token_limit: TokenRateLimitLayer<St2, C2>,
    ) -> MaasLayers<K, Cl, St2, C2> {
        MaasLayers {
            envelope: self.envelope,
            ip_limit: self.ip_limit,
            auth: self.auth,
            validator: self.validator,
            token_limit,
            risk: self.risk,
        }
    }

    /// Content risk control, configured (default: none).
    pub fn risk<Cl2>(self, risk: ContentRiskFilterLayer<Cl2>) -> MaasLayers<K, Cl2, St, C> {
        MaasLayers {
            envelope: self.envelope,
            ip_limit: self.ip_limit,
            auth: self.auth,
            validator: self.validator,
            token_limit: self.token_limit,
            risk,
        }
    }
}

impl<K: ?Sized, Cl, St, C> Clone for MaasLayers<K, Cl, St, C> {
    fn clone(&self) -> Self {
        Self {
            envelope: self.envelope,
            ip_limit: self.ip_limit.clone(),
            auth: self.auth.clone(),
            validator: self.validator.clone(),
            token_limit: self.token_limit.clone(),
            risk: self.risk.clone(),
        }
    }
}

impl<K: ?Sized, Cl, St, C> fmt::Debug for MaasLayers<K, Cl, St, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaasLayers")
            .field("envelope", &self.envelope)
            .field("ip_limit", &self.ip_limit)
            .field("validator", &self.validator)
            .field("token_limit", &self.token_limit)
            .field("risk", &self.risk)
            .finish_non_exhaustive()
    }
}

/// The service [`MaasLayers`] makes of `S`.
pub type MaasStack<S, K, Cl = KeywordClassifier, St = MemoryStore, C = MonotonicClock> =
    ErrorEnvelope<
        IpRateLimit<
            BearerAuth<RequestSchemaValidator<TokenRateLimit<ContentRiskFilter<S, Cl>, St, C>>, K>,
        >,
    >;

impl<S, K: ?Sized, Cl, St, C> Layer<S> for MaasLayers<K, Cl, St, C> {
    type Service = MaasStack<S, K, Cl, St, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = self.risk.layer(inner);
        let inner = self.token_limit.layer(inner);
        let inner = self.validator.layer(inner);
        let inner = self.auth.layer(inner);
        let inner = self.ip_limit.layer(inner);
        self.envelope.layer(inner)
    }
}

mod sealed {
    pub trait Sealed {}

    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// The layers of this crate as `tower::ServiceBuilder` methods, as tower-http's
/// `ServiceBuilderExt` does for its own. Sealed: only `ServiceBuilder` implements it.
///
/// Methods are added outer first, the order `ServiceBuilder` applies them in; the MaaS order
/// is the order below.
///
/// ```
/// use std::sync::Arc;
/// use tower::ServiceBuilder;
/// use tower_maas::auth::InMemoryKeyStore;
/// use tower_maas::stack::ServiceBuilderExt;
/// use tower_maas::validate::ModelCatalog;
///
/// let builder = ServiceBuilder::new()
///     .error_envelope()
///     .bearer_auth(Arc::new(InMemoryKeyStore::new()))
///     .validate_requests(ModelCatalog::new().model("DeepSeek-V3", 65_536))
///     .token_rate_limit();
/// # let _ = builder;
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// The whole stack, in the MaaS order.
    fn maas<K: ?Sized, Cl, St, C>(
        self,
        layers: MaasLayers<K, Cl, St, C>,
    ) -> tower::ServiceBuilder<tower_layer::Stack<MaasLayers<K, Cl, St, C>, L>>;

    /// [`ErrorEnvelope`] with its defaults.
    fn error_envelope(self) -> tower::ServiceBuilder<tower_layer::Stack<ErrorEnvelopeLayer, L>>;

    /// [`IpRateLimit`]: `limit` requests per `window` per client IP.
    fn ip_rate_limit(
        self,
        limit: u64,
        window: crate::ThrottleWindow,
    ) -> tower::ServiceBuilder<tower_layer::Stack<IpRateLimitLayer, L>>;

    /// [`BearerAuth`] against `keys`.
    fn bearer_auth<K: KeyStore + ?Sized>(
        self,
        keys: Arc<K>,
    ) -> tower::ServiceBuilder<tower_layer::Stack<BearerAuthLayer<K>, L>>;

    /// [`RequestSchemaValidator`] with vLLM's schemas and `catalog`.
    fn validate_requests(
        self,
        catalog: ModelCatalog,
    ) -> tower::ServiceBuilder<tower_layer::Stack<RequestSchemaValidatorLayer, L>>;

    /// [`TokenRateLimit`] in memory on the system clock.
    fn token_rate_limit(self) -> tower::ServiceBuilder<tower_layer::Stack<TokenRateLimitLayer, L>>;

    /// [`ContentRiskFilter`] with `classifier`, on input and non-streaming output.
    fn content_risk_filter<Cl: crate::risk::Classifier>(
        self,
        classifier: Cl,
    ) -> tower::ServiceBuilder<tower_layer::Stack<ContentRiskFilterLayer<Cl>, L>>;
}

impl<L> ServiceBuilderExt<L> for tower::ServiceBuilder<L> {
    fn maas<K: ?Sized, Cl, St, C>(
        self,
        layers: MaasLayers<K, Cl, St, C>,
    ) -> tower::ServiceBuilder<tower_layer::Stack<MaasLayers<K, Cl, St, C>, L>> {
        self.layer(layers)
    }

    fn error_envelope(self) -> tower::ServiceBuilder<tower_layer::Stack<ErrorEnvelopeLayer, L>> {
        self.layer(ErrorEnvelopeLayer::new())
    }

    fn ip_rate_limit(
        self,
        limit: u64,
        window: crate::ThrottleWindow,
    ) -> tower::ServiceBuilder<tower_layer::Stack<IpRateLimitLayer, L>> {
        self.layer(IpRateLimitLayer::new(limit, window))
    }

    fn bearer_auth<K: KeyStore + ?Sized>(
        self,
        keys: Arc<K>,
    ) -> tower::ServiceBuilder<tower_layer::Stack<BearerAuthLayer<K>, L>> {
        self.layer(BearerAuthLayer::new(keys))
    }

    fn validate_requests(
        self,
        catalog: ModelCatalog,
    ) -> tower::ServiceBuilder<tower_layer::Stack<RequestSchemaValidatorLayer, L>> {
        self.layer(RequestSchemaValidatorLayer::new().models(catalog))
    }

    fn token_rate_limit(self) -> tower::ServiceBuilder<tower_layer::Stack<TokenRateLimitLayer, L>> {
        self.layer(TokenRateLimitLayer::new())
    }

    fn content_risk_filter<Cl: crate::risk::Classifier>(
        self,
        classifier: Cl,
    ) -> tower::ServiceBuilder<tower_layer::Stack<ContentRiskFilterLayer<Cl>, L>> {
        self.layer(ContentRiskFilterLayer::new(classifier))
    }
}
