//! Where keys live: the [`KeyStore`] trait and the in-memory store of digests.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::key::{KeyDigest, PresentedKey};
use super::principal::{KeyId, KeyPolicy, KeyRecord, KeyState, Principal, Quota};

/// Looks presented keys up.
///
/// Called synchronously on every request, so implementations answer from memory. A store that
/// mirrors a remote source must apply changes before it answers the next request (no stale
/// cache: a frozen or removed key must fail on the very next request).
///
/// Implementations must compare keys by digest in constant time ([`KeyDigest`]'s `==` does)
/// and must never log the key.
pub trait KeyStore: Send + Sync + 'static {
    /// The principal of `key`, or `None` when the key is unknown.
    fn authenticate(&self, key: PresentedKey<'_>) -> Option<Principal>;
}

impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    fn authenticate(&self, key: PresentedKey<'_>) -> Option<Principal> {
        (**self).authenticate(key)
    }
}

/// The error of inserting a key that is already in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DuplicateKey(pub KeyId);

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the key is already stored as {}", self.0)
    }
}

impl std::error::Error for DuplicateKey {}

/// A [`KeyStore`] in memory that holds SHA-256 digests only.
///
/// Keys can be added, changed, frozen, unfrozen and removed while requests run; the next
/// request sees the change. A [`Principal`] already handed out keeps the policy it had, but its
/// [`Quota`] is the key's live one.
///
/// ```
/// use tower_maas::auth::{InMemoryKeyStore, KeyPolicy};
///
/// let store = InMemoryKeyStore::new();
/// let id = store.insert("sk-demo", KeyPolicy::new().rpm(60)).unwrap();
/// assert!(store.freeze(id));
/// assert!(store.get(id).unwrap().policy().state == tower_maas::auth::KeyState::Frozen);
/// assert!(store.remove(id));
/// assert!(store.get(id).is_none());
/// ```
#[derive(Default)]
pub struct InMemoryKeyStore {
    by_digest: DashMap<KeyDigest, Arc<KeyRecord>>,
    by_id: DashMap<KeyId, KeyDigest>,
    next_id: AtomicU64,
}

impl InMemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plaintext key; only its digest is kept.
    pub fn insert(&self, key: &str, policy: KeyPolicy) -> Result<KeyId, DuplicateKey> {
        self.insert_digest(KeyDigest::of(key), policy)
    }

    /// Adds a key by its digest, for configurations that never hold the plaintext.
    pub fn insert_digest(
        &self,
        digest: KeyDigest,
        policy: KeyPolicy,
    ) -> Result<KeyId, DuplicateKey> {
        // Lock order is by_digest, then by_id; no method takes them the other way round.
        match self.by_digest.entry(digest) {
            dashmap::Entry::Occupied(existing) => Err(DuplicateKey(existing.get().id)),
            dashmap::Entry::Vacant(slot) => {
                let id = KeyId(self.next_id.fetch_add(1, Ordering::Relaxed));
                let quota = Arc::new(Quota::new(policy.quota));
                slot.insert(Arc::new(KeyRecord { id, policy, quota }));
                self.by_id.insert(id, digest);
                Ok(id)
            }
        }
    }

    /// The principal of a stored key.
    pub fn get(&self, id: KeyId) -> Option<Principal> {
        let digest = *self.by_id.get(&id)?;
        let record = self.by_digest.get(&digest)?;
        Some(Principal::new(Arc::clone(&record)))
    }

    /// Changes a key's policy; `false` when there is no such key. The quota's limit follows the
    /// new policy and what was used stays used.
    ///
    /// `change` runs while the key's entry is locked: it must not call this store.
    pub fn update(&self, id: KeyId, change: impl FnOnce(&mut KeyPolicy)) -> bool {
        let Some(digest) = self.by_id.get(&id).map(|d| *d) else {
            return false;
        };
        let Some(mut record) = self.by_digest.get_mut(&digest) else {
            return false;
        };
        // Removed, and the same key inserted again under a new id, between the two lookups:
        // the change was for the key that is gone.
        if record.id != id {
            return false;
        }
        let mut policy = record.policy.clone();
        change(&mut policy);
        record.quota.set_limit(policy.quota);
        *record = Arc::new(KeyRecord {
            id,
            policy,
            quota: Arc::clone(&record.quota),
        });
        true
    }

    /// Freezes a key: its requests get 81006 until it is unfrozen.
    pub fn freeze(&self, id: KeyId) -> bool {
        self.update(id, |policy| policy.state = KeyState::Frozen)
    }

    /// Unfreezes a key.
    pub fn unfreeze(&self, id: KeyId) -> bool {
        self.update(id, |policy| policy.state = KeyState::Active)
    }

    /// Removes a key: its requests get 81003.
    pub fn remove(&self, id: KeyId) -> bool {
        match self.by_id.remove(&id) {
            Some((_, digest)) => self.by_digest.remove(&digest).is_some(),
            None => false,
        }
    }

    /// How many keys are stored.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl KeyStore for InMemoryKeyStore {
    fn authenticate(&self, key: PresentedKey<'_>) -> Option<Principal> {
        let record = self.by_digest.get(&key.digest())?;
        Some(Principal::new(Arc::clone(&record)))
    }
}

impl fmt::Debug for InMemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKeyStore")
            .field("keys", &self.len())
            .finish()
    }
}
