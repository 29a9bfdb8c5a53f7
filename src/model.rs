//! The model a request names, shared between layers through request extensions.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The model a request names, put into the request's extensions by whichever layer read the
/// body first, so that later layers need not read it again.
///
/// [`BearerAuth`](crate::auth::BearerAuth) checks it against the key's models (81004). Insert it
/// yourself when your own code already knows the model (a route per model, say).
///
/// ```
/// use tower_maas::RequestedModel;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(RequestedModel::new("DeepSeek-V3"));
/// assert_eq!(req.extensions().get::<RequestedModel>().unwrap().as_str(), "DeepSeek-V3");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestedModel(Arc<str>);

impl RequestedModel {
    /// The model named `model`.
    pub fn new(model: impl Into<Arc<str>>) -> Self {
        Self(model.into())
    }

    /// The model's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RequestedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestedModel").field(&&*self.0).finish()
    }
}

/// The tokens a backend reported for a response whose body a layer already read (a
/// [`ContentRiskFilter`](crate::risk::ContentRiskFilter) checking, passing or withholding the
/// generated text): the token limiter charges it instead of reading the body again, so the
/// usage is paid even when the answer is withheld. `None`: the answer reported no usage, and
/// the reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportedUsage(pub Option<u64>);

/// A custom endpoint a request is addressed to: the request named the endpoint as its `model`,
/// and the endpoint serves [`model`](Self::model) with limits of its own.
///
/// An [`EndpointResolver`] makes it; the
/// [`RequestSchemaValidator`](crate::validate::RequestSchemaValidator) puts it into the request's
/// extensions when the model a request names is an endpoint rather than a catalog model, a
/// [`TokenRateLimit`](crate::limit::TokenRateLimit) scoped to endpoints applies its RPM and TPM,
/// and the service behind reads [`model`](Self::model) to know what to run.
///
/// ```
/// use tower_maas::EndpointRoute;
///
/// let route = EndpointRoute::new("team-a-chat", "DeepSeek-V3", 7).rpm(Some(60));
/// assert_eq!((route.name(), route.model()), ("team-a-chat", "DeepSeek-V3"));
/// assert_eq!((route.limit_key(), route.rpm_limit(), route.tpm_limit()), (7, Some(60), None));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRoute {
    name: Arc<str>,
    model: Arc<str>,
    limit_key: u64,
    rpm: Option<u64>,
    tpm: Option<u64>,
}

impl EndpointRoute {
    /// The endpoint `name`, serving `model`, whose limiter state is kept under `limit_key` (a
    /// number no other endpoint has).
    pub fn new(name: impl Into<Arc<str>>, model: impl Into<Arc<str>>, limit_key: u64) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            limit_key,
            rpm: None,
            tpm: None,
        }
    }

    /// With the endpoint's own requests per minute (`None`: only the key's limit applies).
    pub fn rpm(mut self, rpm: Option<u64>) -> Self {
        self.rpm = rpm;
        self
    }

    /// With the endpoint's own tokens per minute (`None`: only the key's limit applies).
    pub fn tpm(mut self, tpm: Option<u64>) -> Self {
        self.tpm = tpm;
        self
    }

    /// The endpoint's name, as the request named it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model the endpoint serves.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The endpoint's limiter key.
    pub fn limit_key(&self) -> u64 {
        self.limit_key
    }

    /// The endpoint's requests per minute.
    pub fn rpm_limit(&self) -> Option<u64> {
        self.rpm
    }

    /// The endpoint's tokens per minute.
    pub fn tpm_limit(&self) -> Option<u64> {
        self.tpm
    }
}

/// Names that stand for a model: custom endpoints. Asked only for a name that is not a model
/// of the catalog, so it costs nothing on requests for catalog models.
///
/// The registries of [`endpoint`](crate::endpoint) implement it; give one to
/// [`ModelCatalog::endpoints`](crate::validate::ModelCatalog::endpoints).
///
/// ```
/// use tower_maas::{EndpointResolver, EndpointRoute};
///
/// struct One;
///
/// impl EndpointResolver for One {
///     fn resolve(&self, name: &str) -> Option<EndpointRoute> {
///         (name == "team-a-chat").then(|| EndpointRoute::new(name, "DeepSeek-V3", 0))
///     }
/// }
///
/// assert_eq!(One.resolve("team-a-chat").unwrap().model(), "DeepSeek-V3");
/// assert!(One.resolve("DeepSeek-V3").is_none());
/// ```
pub trait EndpointResolver: Send + Sync + 'static {
    /// The endpoint called `name`, if there is one.
    fn resolve(&self, name: &str) -> Option<EndpointRoute>;
}

impl<R: EndpointResolver + ?Sized> EndpointResolver for Arc<R> {
    fn resolve(&self, name: &str) -> Option<EndpointRoute> {
        (**self).resolve(name)
    }
}

/// The `usage` object of an OpenAI answer, as the token limiter and the content filter read it.
#[cfg(any(feature = "limit", feature = "risk"))]
#[derive(serde::Deserialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) total_tokens: Option<u64>,
}

#[cfg(any(feature = "limit", feature = "risk"))]
impl Usage {
    /// `total_tokens`, or prompt plus completion when only those are given.
    pub(crate) fn total(&self) -> Option<u64> {
        self.total_tokens.or_else(|| {
            let (p, c) = (self.prompt_tokens?, self.completion_tokens.unwrap_or(0));
            Some(p.saturating_add(c))
        })
    }
}

/// The top-level `"model"` of a JSON object body when it is a non-empty string; `None` for
/// anything else (not JSON, not an object, no model, a model that is not a string or is empty).
///
/// Only the model is kept: every other value is skipped without being built. Duplicate keys
/// resolve as Python's `json` does (the last one wins); nesting is bounded by serde_json's
/// recursion limit.
#[cfg_attr(not(feature = "auth"), allow(dead_code))]
pub(crate) fn read_model(body: &[u8]) -> Option<RequestedModel> {
    let TopLevel(model) = serde_json::from_slice(body).ok()?;
    model.filter(|m| !m.is_empty()).map(RequestedModel::new)
}

#[cfg_attr(not(feature = "auth"), allow(dead_code))]
struct TopLevel(Option<String>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = TopLevel;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut model = None;
                while let Some(IsModel(is_model)) = map.next_key()? {
                    if is_model {
                        model = match map.next_value()? {
                            serde_json::Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TopLevel(model))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A key of the top-level object, compared without being allocated.
#[cfg_attr(not(feature = "auth"), allow(dead_code))]
struct IsModel(bool);

impl<'de> Deserialize<'de> for IsModel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = IsModel;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<IsModel, E> {
                Ok(IsModel(key == "model"))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(body: &str) -> Option<String> {
        read_model(body.as_bytes()).map(|m| m.as_str().to_owned())
    }

    #[test]
    fn reads_only_a_non_empty_top_level_string() {
        assert_eq!(
            model(r#"{"model":"a","messages":[{"model":"b"}]}"#).as_deref(),
            Some("a")
        );
        assert_eq!(model(r#"{"messages":[{"model":"b"}]}"#), None);
        assert_eq!(model(r#"{"model":"a","model":"b"}"#).as_deref(), Some("b"));
        assert_eq!(model(r#"{"model":"\u0041"}"#).as_deref(), Some("A"));
        assert_eq!(model(r#"{"model":""}"#), None);
        assert_eq!(model(r#"{"model":1}"#), None);
        assert_eq!(model(r#"{"model":"a"} x"#), None);
        assert_eq!(model(r#"["model","a"]"#), None);
        assert_eq!(model("not json"), None);
        assert_eq!(model(""), None);
    }

    #[test]
    fn deep_nesting_neither_overflows_nor_hides_the_model() {
        // Skipped values are walked without recursion, so depth elsewhere costs nothing.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(
            model(&format!(r#"{{"model":"a","x":{deep}}}"#)).as_deref(),
            Some("a")
        );
        // Depth inside the model itself hits serde_json's recursion limit: no model.
        assert_eq!(model(&format!(r#"{{"model":{deep}}}"#)), None);
        assert_eq!(model(&"[".repeat(100_000)), None);
    }
}
