//! The models a gateway serves, with their context lengths.

use std::collections::HashMap;
use std::sync::Arc;

/// The models the gateway knows, each with its maximum context length in tokens.
///
/// A request for a model not in the catalog is refused: 404 ModelArts.81009 `Invalid model.`
/// (gateway dialect) or vLLM's ``The model `X` does not exist.`` (backend dialect).
///
/// ```
/// use tower_maas::validate::ModelCatalog;
///
/// let catalog = ModelCatalog::new().model("DeepSeek-V3", 65_536).model("Qwen2.5-72B-32K", 32_768);
/// assert_eq!(catalog.context_length("DeepSeek-V3"), Some(65_536));
/// assert!(!catalog.contains("DeepSeek-R1"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ModelCatalog {
    models: HashMap<Arc<str>, u64>,
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

    /// Whether `name` is served.
    pub fn contains(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    /// The context length of `name`.
    pub fn context_length(&self, name: &str) -> Option<u64> {
        self.models.get(name).copied()
    }

    /// The model names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(|k| &**k)
    }
}
