//! Who a request is: the key's id, its policy and its quota.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

/// A key's identity in the store: a dense integer, never derived from the key itself.
///
/// Limiters key their per-key state by it; logs may show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u64);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-{}", self.0)
    }
}

/// Whether a key may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// The key works.
    #[default]
    Active,
    /// Every request with the key gets 81006 `The resource is frozen.`
    Frozen,
}

/// The models a key may call.
///
/// ```
/// use tower_maas::auth::ModelAccess;
///
/// let access = ModelAccess::only(["DeepSeek-V3", "Qwen2.5-72B-32K"]);
/// assert!(access.allows("DeepSeek-V3"));
/// assert!(!access.allows("DeepSeek-R1"));
/// assert!(ModelAccess::all().allows("anything"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelAccess(Option<Arc<[Box<str>]>>);

impl ModelAccess {
    /// Every model.
    pub fn all() -> Self {
        Self(None)
    }

    /// Only the models named.
    pub fn only<I, M>(models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<Box<str>>,
    {
        let mut models: Vec<Box<str>> = models.into_iter().map(Into::into).collect();
        models.sort_unstable();
        models.dedup();
        Self(Some(models.into()))
    }

    /// Whether every model is allowed, so that no request needs its model read.
    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `model` is allowed.
    pub fn allows(&self, model: &str) -> bool {
        match &self.0 {
            None => true,
            Some(models) => models.binary_search_by(|m| (**m).cmp(model)).is_ok(),
        }
    }

    /// The models allowed, sorted; `None` when every model is.
    pub fn models(&self) -> Option<impl Iterator<Item = &str>> {
        self.0.as_deref().map(|models| models.iter().map(|m| &**m))
    }
}

/// What a key may do: its state, models, limits and token quota.
///
/// ```
/// use tower_maas::auth::KeyPolicy;
///
/// let policy = KeyPolicy::new()
///     .label("team-a")
///     .models(["DeepSeek-V3"])
///     .rpm(60)
///     .tpm(100_000)
///     .quota(5_000_000);
/// assert_eq!(policy.rpm, Some(60));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// A name for logs and dashboards (never the key).
    pub label: Option<Arc<str>>,
    /// Active or frozen.
    pub state: KeyState,
    /// The models the key may call.
    pub models: ModelAccess,
    /// Requests per minute; `None` for no limit, 0 for none at all (429 81101 for every
    /// request, with no `retry-after`: no wait cures it).
    pub rpm: Option<u64>,
    /// Tokens per minute; `None` for no limit, 0 for none at all (400 81103, "can never fit",
    /// for every request that reserves a token).
    pub tpm: Option<u64>,
    /// Total tokens the key may use; `None` for no quota.
    pub quota: Option<u64>,
}

impl KeyPolicy {
    /// An active key for every model, without limits or quota.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the label shown in logs.
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the state.
    pub fn state(mut self, state: KeyState) -> Self {
        self.state = state;
        self
    }

    /// Allows only the models named.
    pub fn models<I, M>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<Box<str>>,
    {
        self.models = ModelAccess::only(models);
        self
    }

    /// Sets the requests-per-minute limit.
    pub fn rpm(mut self, rpm: u64) -> Self {
        self.rpm = Some(rpm);
        self
    }

    /// Sets the tokens-per-minute limit.
    pub fn tpm(mut self, tpm: u64) -> Self {
        self.tpm = Some(tpm);
        self
    }

    /// Sets the total token quota.
    pub fn quota(mut self, tokens: u64) -> Self {
        self.quota = Some(tokens);
        self
    }
}

/// A key's running token quota, shared between the key store (which refuses an exhausted key
/// with 81005) and whatever charges usage (the token limiter).
///
/// ```
/// use tower_maas::auth::Quota;
///
/// let quota = Quota::new(Some(100));
/// quota.charge(60);
/// assert_eq!(quota.remaining(), Some(40));
/// quota.charge(60);
/// assert!(quota.is_exhausted());
/// quota.refund(30);
/// assert!(!quota.is_exhausted());
/// ```
#[derive(Debug)]
pub struct Quota {
    /// `u64::MAX` stands for "no quota", so a check is two loads and no branch on an `Option`.
    limit: AtomicU64,
    used: AtomicU64,
}

impl Quota {
    /// A quota of `limit` tokens (`None`: unlimited), nothing used.
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            limit: AtomicU64::new(limit.unwrap_or(u64::MAX)),
            used: AtomicU64::new(0),
        }
    }

    /// The total tokens allowed; `None` when unlimited.
    pub fn limit(&self) -> Option<u64> {
        match self.limit.load(Ordering::Relaxed) {
            u64::MAX => None,
            limit => Some(limit),
        }
    }

    /// Changes the limit; what was used stays used.
    pub fn set_limit(&self, limit: Option<u64>) {
        self.limit
            .store(limit.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Tokens used so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Tokens left; `None` when unlimited.
    pub fn remaining(&self) -> Option<u64> {
        self.limit().map(|limit| limit.saturating_sub(self.used()))
    }

    /// Whether the quota is used up (a quota of 0 is used up from the start).
    pub fn is_exhausted(&self) -> bool {
        self.used() >= self.limit.load(Ordering::Relaxed)
    }

    /// Adds `tokens` to what was used.
    pub fn charge(&self, tokens: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_add(tokens))
            });
    }

    /// Gives `tokens` back.
    pub fn refund(&self, tokens: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(tokens))
            });
    }

    /// Forgets everything used (a new billing period).
    pub fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
    }
}

/// The authenticated caller, which [`BearerAuth`](super::BearerAuth) puts into the request's
/// extensions.
///
/// Cheap to clone. It is a snapshot of the key's policy at the time of the request; its quota is
/// live and shared with the store.
///
/// ```
/// use axum::Extension;
/// use tower_maas::auth::Principal;
///
/// async fn handler(Extension(principal): Extension<Principal>) -> String {
///     format!("hello {}", principal.key_id())
/// }
/// ```
#[derive(Clone)]
pub struct Principal(Arc<KeyRecord>, StatusCode);

#[derive(Clone, Debug)]
pub(crate) struct KeyRecord {
    pub(crate) id: KeyId,
    pub(crate) policy: KeyPolicy,
    pub(crate) quota: Arc<Quota>,
}

impl Principal {
    /// The caller a [`KeyStore`](super::KeyStore) of your own hands out for a key it found: the
    /// key's id, its policy as of now, and its live quota, which whatever charges usage shares
    /// with the store.
    ///
    /// The id must be the key's alone and the same on every replica: the limiters keep a key's
    /// rate state and quota (in Redis too) by it, so two keys with one id share them. A store
    /// that also wraps an [`InMemoryKeyStore`](super::InMemoryKeyStore) must keep its ids apart
    /// from the ones that store gives (counted from 0). The `Quota` is what is enforced:
    /// `policy.quota` only says what the policy was ([`InMemoryKeyStore`](super::InMemoryKeyStore)
    /// makes the `Quota` from it), so make the `Quota` from the policy's quota, as below.
    ///
    /// [`BearerAuth`](super::BearerAuth) refuses a frozen key (81006) or a used-up quota
    /// (81005) from the principal, wherever it came from. The store compares digests, never
    /// keys: [`KeyDigest`](super::KeyDigest)'s `==` takes constant time.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower_maas::auth::{
    ///     BearerAuthLayer, KeyDigest, KeyId, KeyPolicy, KeyStore, PresentedKey, Principal, Quota,
    /// };
    ///
    /// /// One key, as a row of a database might hold it: its digest, policy and quota.
    /// struct Row {
    ///     digest: KeyDigest,
    ///     policy: KeyPolicy,
    ///     quota: Arc<Quota>,
    /// }
    ///
    /// impl KeyStore for Row {
    ///     fn authenticate(&self, key: PresentedKey<'_>) -> Option<Principal> {
    ///         (key.digest() == self.digest).then(|| {
    ///             Principal::new(KeyId(7), self.policy.clone(), Arc::clone(&self.quota))
    ///         })
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::BodyExt;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// let policy = KeyPolicy::new().label("team-a").rpm(60).quota(1_000);
    /// let row = Arc::new(Row {
    ///     digest: KeyDigest::of("sk-demo"),
    ///     quota: Arc::new(Quota::new(policy.quota)),
    ///     policy,
    /// });
    /// // The service sees who called.
    /// let service = BearerAuthLayer::new(Arc::clone(&row)).layer(service_fn(
    ///     |request: http::Request<_>| async move {
    ///         let principal = request.extensions().get::<Principal>().unwrap();
    ///         let who = format!("{} {:?}", principal.key_id(), principal.label());
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(who))
    ///     },
    /// ));
    /// let call = |key: &str| {
    ///     let request = http::Request::post("/v1/chat/completions")
    ///         .header("authorization", format!("Bearer {key}"))
    ///         .body(http_body_util::Full::new(bytes::Bytes::new()))
    ///         .unwrap();
    ///     service.clone().oneshot(request)
    /// };
    /// let answer = call("sk-demo").await.unwrap();
    /// assert_eq!(answer.status(), 200);
    /// let body = answer.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, r#"key-7 Some("team-a")"#);
    /// assert_eq!(call("sk-other").await.unwrap().status(), 401); // 81003
    /// // The quota is the row's: used up there, the key is refused (81005).
    /// row.quota.charge(1_000);
    /// assert_eq!(call("sk-demo").await.unwrap().status(), 401);
    /// # }
    /// ```
    pub fn new(id: KeyId, policy: KeyPolicy, quota: Arc<Quota>) -> Self {
        Self::from_record(Arc::new(KeyRecord { id, policy, quota }))
    }

    pub(crate) fn from_record(record: Arc<KeyRecord>) -> Self {
        Self(record, StatusCode::UNAUTHORIZED)
    }

    /// The record it holds, for tests of who shares it.
    #[cfg(test)]
    pub(crate) fn record(&self) -> &Arc<KeyRecord> {
        &self.0
    }

    /// The same caller, whose key-state refusals (81004, 81005, 81006) answer with `status`:
    /// what [`BearerAuthLayer::key_state_status`](super::BearerAuthLayer::key_state_status)
    /// chose, so that a layer after it that refuses the key's state (a shared quota found used
    /// up) answers as it would.
    pub(crate) fn with_key_state_status(mut self, status: StatusCode) -> Self {
        self.1 = status;
        self
    }

    /// The status of this caller's key-state refusals.
    #[cfg_attr(not(feature = "limit"), allow(dead_code))]
    pub(crate) fn key_state_status(&self) -> StatusCode {
        self.1
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.0.id
    }

    /// The key's label, if it has one.
    pub fn label(&self) -> Option<&str> {
        self.0.policy.label.as_deref()
    }

    /// The key's policy.
    pub fn policy(&self) -> &KeyPolicy {
        &self.0.policy
    }

    /// Whether the key may call `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.0.policy.models.allows(model)
    }

    /// Requests per minute; `None` for no limit.
    pub fn rpm(&self) -> Option<u64> {
        self.0.policy.rpm
    }

    /// Tokens per minute; `None` for no limit.
    pub fn tpm(&self) -> Option<u64> {
        self.0.policy.tpm
    }

    /// The key's live quota.
    pub fn quota(&self) -> &Arc<Quota> {
        &self.0.quota
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("key_id", &self.0.id)
            .field("policy", &self.0.policy)
            .field("quota", &self.0.quota)
            .finish()
    }
}
