//! Who may use the management API, and which online services endpoints may point at.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::auth::KeyDigest;

/// An account of the management API: its name, the projects it may manage and its endpoint
/// quota.
///
/// ```
/// use tower_maas::endpoint::Account;
///
/// let account = Account::new("acme").project("p-prod").project("p-test").endpoint_quota(20);
/// assert!(account.manages("p-prod"));
/// assert!(!account.manages("p-other"));
/// assert!(Account::new("ops").manages("anything"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    name: Arc<str>,
    projects: Option<Vec<String>>,
    endpoint_quota: usize,
}

/// MaaS's default number of endpoints per account.
pub const DEFAULT_ENDPOINT_QUOTA: usize = 10;

impl Account {
    /// The account `name`, managing every project, with MaaS's quota of 10 endpoints.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            projects: None,
            endpoint_quota: DEFAULT_ENDPOINT_QUOTA,
        }
    }

    /// Restricts the account to the projects given this way (call once per project).
    pub fn project(mut self, project_id: impl Into<String>) -> Self {
        self.projects
            .get_or_insert_with(Vec::new)
            .push(project_id.into());
        self
    }

    /// How many live endpoints the account may have.
    pub fn endpoint_quota(mut self, quota: usize) -> Self {
        self.endpoint_quota = quota;
        self
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the account may manage endpoints of `project_id`.
    pub fn manages(&self, project_id: &str) -> bool {
        self.projects
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| p == project_id))
    }

    pub(crate) fn owner(&self, project_id: &str) -> super::Owner {
        super::Owner {
            account: Arc::clone(&self.name),
            project_id: project_id.to_owned(),
            quota: self.endpoint_quota,
        }
    }
}

/// The management tokens (`X-Auth-Token`) and the account each one acts for.
///
/// Tokens are kept as SHA-256 digests and compared in constant time, as API keys are; they
/// are a separate set, so an inference key is no management token (8503).
///
/// ```
/// use tower_maas::endpoint::{Account, ManagementAccess};
/// use tower_maas::auth::KeyDigest;
///
/// let access = ManagementAccess::new()
///     .token("mgmt-token-acme", Account::new("acme"))
///     .token_digest(KeyDigest::of("mgmt-token-ops"), Account::new("ops"));
/// assert_eq!(access.account("mgmt-token-acme").unwrap().name(), "acme");
/// assert!(access.account("sk-an-inference-key").is_none());
/// ```
#[derive(Clone, Default)]
pub struct ManagementAccess {
    tokens: HashMap<KeyDigest, Account>,
}

impl ManagementAccess {
    /// No tokens: every request is refused with 8503.
    pub fn new() -> Self {
        Self::default()
    }

    /// A plaintext token (hashed at once) acting for `account`.
    ///
    /// # Panics
    ///
    /// As [`token_digest`](Self::token_digest): on an empty token, or one given twice.
    pub fn token(self, token: &str, account: Account) -> Self {
        self.token_digest(KeyDigest::of(token), account)
    }

    /// A token given by its SHA-256 digest, acting for `account`.
    ///
    /// # Panics
    ///
    /// On the digest of the empty token (a variable left unset would otherwise let in any
    /// request with an empty `X-Auth-Token`), and on a digest given twice (the second account
    /// would silently take the first's token).
    ///
    /// ```should_panic
    /// use tower_maas::endpoint::{Account, ManagementAccess};
    ///
    /// let _ = ManagementAccess::new()
    ///     .token("shared", Account::new("acme"))
    ///     .token("shared", Account::new("ops"));
    /// ```
    pub fn token_digest(mut self, digest: KeyDigest, account: Account) -> Self {
        assert!(
            digest != KeyDigest::of(""),
            "a management token may not be empty"
        );
        let earlier = self.tokens.insert(digest, account);
        assert!(earlier.is_none(), "a management token given twice");
        self
    }

    /// Whether a token with this digest is already given (to check before
    /// [`token_digest`](Self::token_digest), which panics on one given twice).
    pub fn has_token(&self, digest: &KeyDigest) -> bool {
        self.tokens.contains_key(digest)
    }

    /// The account a presented token acts for.
    pub fn account(&self, token: &str) -> Option<&Account> {
        self.tokens.get(&KeyDigest::of(token))
    }
}

impl fmt::Debug for ManagementAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementAccess")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// How an online service is reached, which decides whether an endpoint may point at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceAccess {
    /// Mounted to the MaaS gateway: calls go through its authentication.
    MaasGateway,
    /// Called without authentication.
    NoAuth,
    /// Its own token authentication and not mounted to the gateway: no endpoint may point at
    /// it (6613).
    Token,
}

/// An online service an endpoint may point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineService {
    model: Arc<str>,
    access: ServiceAccess,
}

impl OnlineService {
    /// The model the service serves.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// How it is reached.
    pub fn access(&self) -> ServiceAccess {
        self.access
    }
}

/// The online services the gateway knows, by id.
///
/// An endpoint may be created for a service that is [`ServiceAccess::MaasGateway`] or
/// [`ServiceAccess::NoAuth`]; any other service, or an id the directory does not know, is
/// refused with 6613.
///
/// ```
/// use tower_maas::endpoint::{ServiceAccess, ServiceDirectory};
///
/// let services = ServiceDirectory::new()
///     .service("svc-deepseek", "DeepSeek-V3", ServiceAccess::MaasGateway)
///     .service("svc-private", "Qwen2.5-72B", ServiceAccess::Token);
/// assert_eq!(services.get("svc-deepseek").unwrap().model(), "DeepSeek-V3");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServiceDirectory {
    services: HashMap<String, OnlineService>,
}

impl ServiceDirectory {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the service `id`, serving `model`, reached as `access` says.
    pub fn service(
        mut self,
        id: impl Into<String>,
        model: impl Into<Arc<str>>,
        access: ServiceAccess,
    ) -> Self {
        self.services.insert(
            id.into(),
            OnlineService {
                model: model.into(),
                access,
            },
        );
        self
    }

    /// The service `id`.
    pub fn get(&self, id: &str) -> Option<&OnlineService> {
        self.services.get(id)
    }

    /// Whether some service serves a model called `name`: an endpoint of that name could
    /// never be called, since the name reaches the model first.
    pub(crate) fn serves_model(&self, name: &str) -> bool {
        self.services.values().any(|s| &*s.model == name)
    }

    /// The model of `id` when an endpoint may point at it.
    pub(crate) fn mountable(&self, id: &str) -> Option<&str> {
        self.get(id)
            .filter(|s| matches!(s.access, ServiceAccess::MaasGateway | ServiceAccess::NoAuth))
            .map(OnlineService::model)
    }
}
