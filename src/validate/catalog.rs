//! The models a gateway serves, with their context lengths.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::model::{EndpointResolver, EndpointRoute};

/// The models the gateway knows, each with its maximum context length in tokens, and the custom
/// endpoints that stand for them.
///
/// A request for a model not in the catalog is refused: 404 ModelArts.81009 `Invalid model.`
/// (gateway dialect) or vLLM's ``The model `X` does not exist.`` (backend dialect). A name that
/// is no model but an endpoint of [`endpoints`](Self::endpoints) is served by the endpoint's
/// model, with that model's context length.
///
/// ```
/// use tower_maas::validate::ModelCatalog;
///
/// let catalog = ModelCatalog::new().model("DeepSeek-V3", 65_536).model("Qwen2.5-72B-32K", 32_768);
/// assert_eq!(catalog.context_length("DeepSeek-V3"), Some(65_536));
/// assert!(!catalog.contains("DeepSeek-R1"));
/// ```
#[derive(Clone, Default)]
pub struct ModelCatalog {
    models: HashMap<Arc<str>, u64>,
    endpoints: Option<Arc<dyn EndpointResolver>>,
}

/// What the catalog found for a name: the context length to check, and the endpoint when the
/// name was one.
pub(crate) struct Found {
    pub(crate) context_length: u64,
    pub(crate) route: Option<EndpointRoute>,
}

impl ModelCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` with a context length of `context_length` tokens (prompt plus completion);
    /// `u64::MAX` checks no context length.
    pub fn model(mut self, name: impl Into<Arc<str>>, context_length: u64) -> Self {
        self.models.insert(name.into(), context_length);
        self
    }

    /// Resolves names that are not models through `endpoints` (a custom-endpoint registry, see
    /// [`endpoint`](crate::endpoint)). An endpoint whose model is not in the catalog is not
    /// served.
    ///
    /// ```
    /// use tower_maas::validate::ModelCatalog;
    /// use tower_maas::{EndpointResolver, EndpointRoute};
    ///
    /// struct TeamA;
    /// impl EndpointResolver for TeamA {
    ///     fn resolve(&self, name: &str) -> Option<EndpointRoute> {
    ///         (name == "team-a").then(|| EndpointRoute::new(name, "DeepSeek-V3", 0))
    ///     }
    /// }
    ///
    /// let catalog = ModelCatalog::new().model("DeepSeek-V3", 65_536).endpoints(TeamA);
    /// assert!(catalog.contains("team-a"));
    /// assert_eq!(catalog.context_length("team-a"), Some(65_536));
    /// ```
    pub fn endpoints(mut self, endpoints: impl EndpointResolver) -> Self {
        self.endpoints = Some(Arc::new(endpoints));
        self
    }

    /// Whether `name` is served, as a model or as an endpoint.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The context length of `name` (an endpoint's is its model's).
    pub fn context_length(&self, name: &str) -> Option<u64> {
        self.find(name).map(|found| found.context_length)
    }

    /// The model names, in no particular order (endpoints not included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(|k| &**k)
    }

    /// One lookup for everything the validator needs about `name`.
    pub(crate) fn find(&self, name: &str) -> Option<Found> {
        if let Some(&context_length) = self.models.get(name) {
            return Some(Found {
                context_length,
                route: None,
            });
        }
        let route = self.endpoints.as_ref()?.resolve(name)?;
        let &context_length = self.models.get(route.model())?;
        Some(Found {
            context_length,
            route: Some(route),
        })
    }
}

impl fmt::Debug for ModelCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelCatalog")
            .field("models", &self.models)
            .field("endpoints", &self.endpoints.is_some())
            .finish()
    }
}
