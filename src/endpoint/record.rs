//! Custom endpoints as the registry keeps them, and what changes them.

use std::fmt;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::MaasError;
use crate::model::EndpointRoute;

/// One custom endpoint: a name that serves a model of an online service, with limits of its
/// own.
///
/// The management API answers with its [`view`](Self::view); the registry stores all of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CustomEndpoint {
    /// The endpoint's id, in a version-4 UUID's form (`c4513589-df2e-4d58-ab0c-d5a6f2…`):
    /// unique, but not drawn at random, so not a secret.
    pub id: String,
    /// The endpoint's limiter key: unique, never reused.
    pub limit_key: u64,
    /// The account that owns it.
    pub account: String,
    /// The project it was created in.
    pub project_id: String,
    /// Its name: unique among all endpoints ever created, deleted ones included.
    pub endpoint_name: String,
    /// The online service it calls.
    pub infer_service_id: String,
    /// The model that service serves.
    pub served_model_name: String,
    /// The owner's description (up to 256 characters).
    pub remark: String,
    /// Its own requests per minute (`None`: only the key's limit applies).
    pub rpm: Option<u64>,
    /// Its own tokens per minute (`None`: only the key's limit applies).
    pub tpm: Option<u64>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Time of the last change, milliseconds since the Unix epoch.
    pub updated_at: u64,
}

impl CustomEndpoint {
    /// The endpoint as the management API shows it, keys in this order: `id`,
    /// `endpoint_name`, `status` (always `"running"`), `remark`, `rpm`, `tpm` (`null` when
    /// unset), `infer_service_id`, `served_model_name`, `created_at`, `updated_at`. The account,
    /// project and limiter key stay inside.
    pub fn view(&self) -> EndpointView<'_> {
        EndpointView {
            id: &self.id,
            endpoint_name: &self.endpoint_name,
            status: "running",
            remark: &self.remark,
            rpm: self.rpm,
            tpm: self.tpm,
            infer_service_id: &self.infer_service_id,
            served_model_name: &self.served_model_name,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// Where inference requests naming this endpoint go.
    pub fn route(&self) -> EndpointRoute {
        EndpointRoute::new(
            self.endpoint_name.as_str(),
            self.served_model_name.as_str(),
            self.limit_key,
        )
        .rpm(self.rpm)
        .tpm(self.tpm)
    }
}

/// What the management API shows of a [`CustomEndpoint`]: serialise it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct EndpointView<'a> {
    id: &'a str,
    endpoint_name: &'a str,
    status: &'static str,
    remark: &'a str,
    rpm: Option<u64>,
    tpm: Option<u64>,
    infer_service_id: &'a str,
    served_model_name: &'a str,
    created_at: u64,
    updated_at: u64,
}

/// Who asks: an account, in one of its projects, with its endpoint quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The account's name.
    pub account: Arc<str>,
    /// The project of the request's path.
    pub project_id: String,
    /// How many live endpoints the account may have (MaaS: 10).
    pub quota: usize,
}

/// A checked request to create an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEndpoint {
    /// The name (checked against the name rule by the registry too).
    pub endpoint_name: String,
    /// The online service.
    pub infer_service_id: String,
    /// The model the service serves.
    pub served_model_name: String,
    /// The description.
    pub remark: String,
    /// Own requests per minute.
    pub rpm: Option<u64>,
    /// Own tokens per minute.
    pub tpm: Option<u64>,
}

/// What an edit does with an endpoint's own limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitChange {
    /// Leave it (the field was absent).
    #[default]
    Keep,
    /// Remove it (the field was `null`): only the key's limit applies.
    Remove,
    /// Set it.
    Set(u64),
}

impl LimitChange {
    fn apply(self, limit: &mut Option<u64>) {
        match self {
            Self::Keep => {}
            Self::Remove => *limit = None,
            Self::Set(n) => *limit = Some(n),
        }
    }
}

/// A checked request to edit an endpoint: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointChange {
    /// A new name; the old one stays taken.
    pub endpoint_name: Option<String>,
    /// A new description.
    pub remark: Option<String>,
    /// The endpoint's own requests per minute.
    pub rpm: LimitChange,
    /// The endpoint's own tokens per minute.
    pub tpm: LimitChange,
}

impl EndpointChange {
    pub(crate) fn apply_limits(&self, endpoint: &mut CustomEndpoint) {
        self.rpm.apply(&mut endpoint.rpm);
        self.tpm.apply(&mut endpoint.tpm);
    }
}

/// Why a registry refused.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum EndpointError {
    /// The name breaks the name rule (6274).
    NameInvalid,
    /// The name was used before, by a live or a deleted endpoint (6271).
    NameUsed,
    /// No such endpoint in the owner's project (6291).
    NotFound,
    /// The account has as many endpoints as its quota (6297).
    QuotaExceeded,
    /// The registry could not record the change (nothing changed).
    Storage(Arc<io::Error>),
}

impl EndpointError {
    /// The catalogue row the management API answers with; a storage failure is a 500 that
    /// says nothing of the failure.
    pub fn to_maas(&self) -> MaasError {
        match self {
            Self::NameInvalid => MaasError::EndpointNameInvalid,
            Self::NameUsed => MaasError::EndpointNameUsed,
            Self::NotFound => MaasError::EndpointNotFound,
            Self::QuotaExceeded => MaasError::EndpointQuotaExceeded,
            Self::Storage(_) => MaasError::Internal,
        }
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Storage(err) => write!(f, "endpoint registry storage: {err}"),
            other => fmt::Display::fmt(&other.to_maas(), f),
        }
    }
}

impl std::error::Error for EndpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Storage(err) => Some(&**err),
            _ => None,
        }
    }
}

impl From<io::Error> for EndpointError {
    fn from(err: io::Error) -> Self {
        Self::Storage(Arc::new(err))
    }
}
