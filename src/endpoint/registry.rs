//! The [`EndpointRegistry`] trait, and the in-memory registry.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::ledger::Ledger;
use super::record::{CustomEndpoint, EndpointChange, EndpointError, NewEndpoint, Owner};
use crate::model::EndpointResolver;

/// Where custom endpoints live: create, get, list, update, delete, and the lookup by name that
/// inference requests need.
///
/// Every implementation keeps the rules the management API promises: names follow
/// [`is_valid_name`](super::is_valid_name) (6274) and are never used twice, not even after a
/// delete or a rename (6271); an account has at most [`Owner::quota`] live endpoints (6297); an
/// owner sees only the endpoints of its project (6291 otherwise); concurrent changes are
/// decided one at a time, so of two creates of one name exactly one wins.
///
/// Calls are synchronous: the management API calls them inline. [`InMemoryRegistry`] never
/// waits; [`FileRegistry`](super::FileRegistry) waits for one `fsync` per change, and never on
/// a lookup.
///
/// ```
/// use tower_maas::endpoint::{EndpointError, EndpointRegistry, InMemoryRegistry, NewEndpoint, Owner};
///
/// let registry = InMemoryRegistry::new();
/// let owner = Owner { account: "acme".into(), project_id: "p1".to_owned(), quota: 10 };
/// let new = NewEndpoint {
///     endpoint_name: "team-a".to_owned(),
///     infer_service_id: "svc-deepseek".to_owned(),
///     served_model_name: "DeepSeek-V3".to_owned(),
///     remark: String::new(),
///     rpm: Some(60),
///     tpm: None,
/// };
/// let created = registry.create(&owner, new.clone()).unwrap();
/// // A name is never used twice, not even after a delete.
/// registry.delete(&owner, &created.id).unwrap();
/// assert!(matches!(registry.create(&owner, new), Err(EndpointError::NameUsed)));
/// assert_eq!(registry.list(&owner), (vec![], 0));
/// ```
pub trait EndpointRegistry: EndpointResolver {
    /// Creates an endpoint.
    fn create(&self, owner: &Owner, new: NewEndpoint) -> Result<CustomEndpoint, EndpointError>;

    /// The endpoint `id` of the owner's project.
    fn get(&self, owner: &Owner, id: &str) -> Result<CustomEndpoint, EndpointError>;

    /// The endpoints of the owner's project, oldest first, and how many the account has in
    /// all its projects.
    fn list(&self, owner: &Owner) -> (Vec<CustomEndpoint>, usize);

    /// Edits the endpoint `id` of the owner's project.
    fn update(
        &self,
        owner: &Owner,
        id: &str,
        change: EndpointChange,
    ) -> Result<CustomEndpoint, EndpointError>;

    /// Deletes the endpoint `id` of the owner's project; its name stays taken.
    fn delete(&self, owner: &Owner, id: &str) -> Result<(), EndpointError>;
}

impl<R: EndpointRegistry + ?Sized> EndpointRegistry for Arc<R> {
    fn create(&self, owner: &Owner, new: NewEndpoint) -> Result<CustomEndpoint, EndpointError> {
        (**self).create(owner, new)
    }

    fn get(&self, owner: &Owner, id: &str) -> Result<CustomEndpoint, EndpointError> {
        (**self).get(owner, id)
    }

    fn list(&self, owner: &Owner) -> (Vec<CustomEndpoint>, usize) {
        (**self).list(owner)
    }

    fn update(
        &self,
        owner: &Owner,
        id: &str,
        change: EndpointChange,
    ) -> Result<CustomEndpoint, EndpointError> {
        (**self).update(owner, id, change)
    }

    fn delete(&self, owner: &Owner, id: &str) -> Result<(), EndpointError> {
        (**self).delete(owner, id)
    }
}

/// The ledger behind a registry: writers take turns, readers never wait for a writer's I/O.
pub(crate) struct Core {
    writer: Mutex<()>,
    current: RwLock<Arc<Ledger>>,
}

impl Core {
    pub(crate) fn new(ledger: Ledger) -> Self {
        Self {
            writer: Mutex::new(()),
            current: RwLock::new(Arc::new(ledger)),
        }
    }

    pub(crate) fn read(&self) -> Arc<Ledger> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to a copy, keeps it with `persist`, and only then shows it: a change
    /// that cannot be kept is not made.
    pub(crate) fn change<T>(
        &self,
        change: impl FnOnce(&mut Ledger) -> Result<T, EndpointError>,
        persist: impl FnOnce(&Ledger) -> io::Result<()>,
    ) -> Result<T, EndpointError> {
        let _turn = self.lock();
        let mut next = Ledger::clone(&self.read());
        let out = change(&mut next)?;
        persist(&next)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(out)
    }
}

/// A registry in memory: gone when the process ends (retired names too).
///
/// ```
/// use tower_maas::endpoint::{EndpointRegistry, InMemoryRegistry, NewEndpoint, Owner};
/// use tower_maas::EndpointResolver;
///
/// let registry = InMemoryRegistry::new();
/// let owner = Owner { account: "acme".into(), project_id: "p1".into(), quota: 10 };
/// let created = registry
///     .create(&owner, NewEndpoint {
///         endpoint_name: "team-a".into(),
///         infer_service_id: "svc-deepseek".into(),
///         served_model_name: "DeepSeek-V3".into(),
///         remark: String::new(),
///         rpm: Some(60),
///         tpm: None,
///     })
///     .unwrap();
/// assert_eq!(registry.resolve("team-a").unwrap().model(), "DeepSeek-V3");
/// registry.delete(&owner, &created.id).unwrap();
/// assert!(registry.resolve("team-a").is_none());
/// ```
pub struct InMemoryRegistry {
    core: Core,
}

impl InMemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            core: Core::new(Ledger::new()),
        }
    }
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryRegistry").finish_non_exhaustive()
    }
}

/// Registry methods over a [`Core`] and a way to persist it.
macro_rules! registry_over_core {
    ($ty:ty, |$this:ident, $ledger:ident| $persist:expr) => {
        impl $crate::model::EndpointResolver for $ty {
            fn resolve(&self, name: &str) -> Option<$crate::model::EndpointRoute> {
                self.core.read().resolve(name)
            }
        }

        impl $crate::endpoint::EndpointRegistry for $ty {
            fn create(
                &self,
                owner: &$crate::endpoint::Owner,
                new: $crate::endpoint::NewEndpoint,
            ) -> Result<$crate::endpoint::CustomEndpoint, $crate::endpoint::EndpointError> {
                let $this = self;
                self.core
                    .change(|l| l.create(owner, new), |$ledger| $persist)
            }

            fn get(
                &self,
                owner: &$crate::endpoint::Owner,
                id: &str,
            ) -> Result<$crate::endpoint::CustomEndpoint, $crate::endpoint::EndpointError> {
                self.core.read().get(owner, id)
            }

            fn list(
                &self,
                owner: &$crate::endpoint::Owner,
            ) -> (Vec<$crate::endpoint::CustomEndpoint>, usize) {
                self.core.read().list(owner)
            }

            fn update(
                &self,
                owner: &$crate::endpoint::Owner,
                id: &str,
                change: $crate::endpoint::EndpointChange,
            ) -> Result<$crate::endpoint::CustomEndpoint, $crate::endpoint::EndpointError> {
                let $this = self;
                self.core
                    .change(|l| l.update(owner, id, change), |$ledger| $persist)
            }

            fn delete(
                &self,
                owner: &$crate::endpoint::Owner,
                id: &str,
            ) -> Result<(), $crate::endpoint::EndpointError> {
                let $this = self;
                self.core
                    .change(|l| l.delete(owner, id), |$ledger| $persist)
            }
        }
    };
}

registry_over_core!(InMemoryRegistry, |_this, _ledger| Ok(()));

pub(crate) use registry_over_core;
