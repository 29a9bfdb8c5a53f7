//! Where keys live: the [`KeyStore`] trait and the in-memory store of digests.

use std::cell::RefCell;
use std::collections::HashMap;
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
///
/// A store of your own makes its principals with [`Principal::new`] (a store over a database,
/// say), or keeps its keys in an [`InMemoryKeyStore`] and decides around it; here, one that lets
/// no key in while the service is closed:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use tower_maas::auth::{
///     BearerAuthLayer, InMemoryKeyStore, KeyPolicy, KeyStore, PresentedKey, Principal,
/// };
///
/// struct Closable {
///     keys: InMemoryKeyStore,
///     closed: AtomicBool,
/// }
///
/// impl KeyStore for Closable {
///     fn authenticate(&self, key: PresentedKey<'_>) -> Option<Principal> {
///         if self.closed.load(Ordering::Relaxed) {
///             return None;
///         }
///         self.keys.authenticate(key)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower::{Layer, ServiceExt, service_fn};
///
/// let keys = InMemoryKeyStore::new();
/// keys.insert("sk-demo", KeyPolicy::new()).unwrap();
/// let store = Arc::new(Closable { keys, closed: AtomicBool::new(false) });
/// let service = BearerAuthLayer::new(Arc::clone(&store)).layer(service_fn(|_| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// }));
/// let call = || {
///     let request = http::Request::post("/v1/chat/completions")
///         .header("authorization", "Bearer sk-demo")
///         .body(http_body_util::Full::new(bytes::Bytes::new()))
///         .unwrap();
///     service.clone().oneshot(request)
/// };
/// assert_eq!(call().await.unwrap().status(), 200);
/// store.closed.store(true, Ordering::Relaxed);
/// // Every key is now refused with 81003.
/// assert_eq!(call().await.unwrap().status(), 401);
/// # }
/// ```
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
///
/// ```
/// use tower_maas::auth::{DuplicateKey, InMemoryKeyStore, KeyPolicy};
///
/// let store = InMemoryKeyStore::new();
/// let id = store.insert("sk-demo", KeyPolicy::new()).unwrap();
/// assert_eq!(store.insert("sk-demo", KeyPolicy::new()), Err(DuplicateKey(id)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DuplicateKey(pub KeyId);

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the key is already stored as {}", self.0)
    }
}

impl std::error::Error for DuplicateKey {}

/// Why a key could not be stored under the id asked for
/// ([`InMemoryKeyStore::insert_as`]).
///
/// ```
/// use tower_maas::auth::{InMemoryKeyStore, InsertAsError, KeyId, KeyPolicy};
///
/// let store = InMemoryKeyStore::new();
/// store.insert_as(KeyId(7), "sk-demo", KeyPolicy::new()).unwrap();
/// assert_eq!(
///     store.insert_as(KeyId(8), "sk-demo", KeyPolicy::new()),
///     Err(InsertAsError::DuplicateKey(KeyId(7)))
/// );
/// assert_eq!(
///     store.insert_as(KeyId(7), "sk-other", KeyPolicy::new()),
///     Err(InsertAsError::IdTaken(KeyId(7)))
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertAsError {
    /// The key is stored already, under this id.
    DuplicateKey(KeyId),
    /// Another key has this id.
    IdTaken(KeyId),
    /// The id is above [`InMemoryKeyStore::MAX_GIVEN_ID`].
    IdOutOfRange(KeyId),
}

impl fmt::Display for InsertAsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateKey(id) => write!(f, "the key is already stored as {id}"),
            Self::IdTaken(id) => write!(f, "another key is stored as {id}"),
            Self::IdOutOfRange(id) => write!(
                f,
                "{id} is above the largest id a key may be given ({})",
                InMemoryKeyStore::MAX_GIVEN_ID
            ),
        }
    }
}

impl std::error::Error for InsertAsError {}

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
///
/// A thread that authenticates keeps its own copies of the records of the keys it saw lately
/// (up to [`InMemoryKeyStore::THREAD_CACHE`] of each of the last four stores it used), checked
/// against the store's count of
/// changes on every request: two cores authenticating one key write nothing they share (no
/// lock, no reference count), and a change is seen by the next request all the same.
pub struct InMemoryKeyStore {
    by_digest: DashMap<KeyDigest, Arc<KeyRecord>>,
    by_id: DashMap<KeyId, KeyDigest>,
    next_id: AtomicU64,
    /// Tells this store's records from other stores' in the threads' caches.
    store: u64,
    /// Moves on every change to a key: a thread's copies are of an older store once it has.
    changes: AtomicU64,
}

/// The stores made so far, for each store's number.
static STORES: AtomicU64 = AtomicU64::new(0);

/// A thread's copies of the records of the keys it authenticated lately in one store, as the
/// store was at one count of changes.
struct StoreCopies {
    store: u64,
    changes: u64,
    records: HashMap<KeyDigest, Arc<KeyRecord>>,
}

/// How many stores a thread keeps copies of: a gateway has one, or one for each of a few
/// routes; past it the store used longest ago is forgotten.
const STORES_PER_THREAD: usize = 4;

thread_local! {
    static COPIES: RefCell<Vec<StoreCopies>> = const { RefCell::new(Vec::new()) };
}

impl InMemoryKeyStore {
    /// The most keys a thread keeps copies of for one store (a thread keeps them for the last
    /// four stores it used): past it the copies are dropped and made again as requests come,
    /// so a thread's memory stays bounded whatever the number of keys.
    pub const THREAD_CACHE: usize = 1024;

    /// The largest id [`insert_as`](Self::insert_as) gives: `i64::MAX`, the largest integer
    /// TOML takes, and half the ids there are, so that the ids handed out after any given one
    /// never run out.
    ///
    /// ```
    /// use tower_maas::auth::{InMemoryKeyStore, InsertAsError, KeyId, KeyPolicy};
    ///
    /// let store = InMemoryKeyStore::new();
    /// let largest = KeyId(InMemoryKeyStore::MAX_GIVEN_ID);
    /// assert_eq!(store.insert_as(largest, "sk-a", KeyPolicy::new()), Ok(largest));
    /// let past = KeyId(InMemoryKeyStore::MAX_GIVEN_ID + 1);
    /// assert_eq!(
    ///     store.insert_as(past, "sk-b", KeyPolicy::new()),
    ///     Err(InsertAsError::IdOutOfRange(past))
    /// );
    /// ```
    pub const MAX_GIVEN_ID: u64 = i64::MAX as u64;

    /// An empty store.
    pub fn new() -> Self {
        Self {
            by_digest: DashMap::new(),
            by_id: DashMap::new(),
            next_id: AtomicU64::new(0),
            // Numbered from 1: 0 is a new thread cache's, which holds no store's copies.
            store: STORES.fetch_add(1, Ordering::Relaxed) + 1,
            changes: AtomicU64::new(0),
        }
    }

    /// After the map has changed: the threads' copies are of the store before it.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
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
                // The next id no key has: one given by `insert_digest_as` is skipped.
                let id = loop {
                    let id = KeyId(self.next_id.fetch_add(1, Ordering::Relaxed));
                    if let dashmap::Entry::Vacant(free) = self.by_id.entry(id) {
                        free.insert(digest);
                        break id;
                    }
                };
                let quota = Arc::new(Quota::new(policy.quota));
                slot.insert(Arc::new(KeyRecord { id, policy, quota }));
                self.changed();
                Ok(id)
            }
        }
    }

    /// Adds a plaintext key under an id of the caller's; only its digest is kept.
    ///
    /// The id is the key's identity for the limiters: a store shared by gateway replicas
    /// (`RedisStore`) keeps each key's counters, its quota's among them, under it. Ids that
    /// the configuration gives stay with their keys when keys are added, removed or reordered,
    /// where the ids of [`insert`](Self::insert) follow the order keys were inserted in.
    /// Later `insert`s take ids above the largest given.
    ///
    /// Never give a key an id another key had: it would take over that key's counters and
    /// quota. Small ids (below 2²², about four million) keep [`MemoryStore`] on its fastest
    /// path; ids go up to [`MAX_GIVEN_ID`](Self::MAX_GIVEN_ID), so that the ids handed out
    /// after them never run out.
    ///
    /// [`MemoryStore`]: crate::limit::MemoryStore
    ///
    /// ```
    /// use tower_maas::auth::{InMemoryKeyStore, KeyId, KeyPolicy};
    ///
    /// let store = InMemoryKeyStore::new();
    /// assert_eq!(store.insert_as(KeyId(41), "sk-team-a", KeyPolicy::new()), Ok(KeyId(41)));
    /// assert_eq!(store.insert("sk-team-b", KeyPolicy::new()), Ok(KeyId(42)));
    /// ```
    pub fn insert_as(
        &self,
        id: KeyId,
        key: &str,
        policy: KeyPolicy,
    ) -> Result<KeyId, InsertAsError> {
        self.insert_digest_as(id, KeyDigest::of(key), policy)
    }

    /// Adds a key by its digest under an id of the caller's: see
    /// [`insert_as`](Self::insert_as).
    ///
    /// ```
    /// use tower_maas::auth::{InMemoryKeyStore, KeyDigest, KeyId, KeyPolicy};
    ///
    /// let store = InMemoryKeyStore::new();
    /// // A configuration that never holds the plaintext, only its SHA-256.
    /// let digest: KeyDigest = "b2d1e5f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c"
    ///     .parse()
    ///     .unwrap();
    /// assert_eq!(store.insert_digest_as(KeyId(7), digest, KeyPolicy::new()), Ok(KeyId(7)));
    /// assert!(store.get(KeyId(7)).is_some());
    /// ```
    pub fn insert_digest_as(
        &self,
        id: KeyId,
        digest: KeyDigest,
        policy: KeyPolicy,
    ) -> Result<KeyId, InsertAsError> {
        if id.0 > Self::MAX_GIVEN_ID {
            return Err(InsertAsError::IdOutOfRange(id));
        }
        // Lock order is by_digest, then by_id; no method takes them the other way round.
        match self.by_digest.entry(digest) {
            dashmap::Entry::Occupied(existing) => {
                Err(InsertAsError::DuplicateKey(existing.get().id))
            }
            dashmap::Entry::Vacant(slot) => match self.by_id.entry(id) {
                dashmap::Entry::Occupied(_) => Err(InsertAsError::IdTaken(id)),
                dashmap::Entry::Vacant(free) => {
                    free.insert(digest);
                    self.next_id
                        .fetch_max(id.0.saturating_add(1), Ordering::Relaxed);
                    let quota = Arc::new(Quota::new(policy.quota));
                    slot.insert(Arc::new(KeyRecord { id, policy, quota }));
                    self.changed();
                    Ok(id)
                }
            },
        }
    }

    /// The principal of a stored key.
    pub fn get(&self, id: KeyId) -> Option<Principal> {
        let digest = *self.by_id.get(&id)?;
        let record = self.by_digest.get(&digest)?;
        Some(Principal::from_record(Arc::clone(&record)))
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
        drop(record);
        self.changed();
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
        let removed = match self.by_id.remove(&id) {
            Some((_, digest)) => self.by_digest.remove(&digest).is_some(),
            None => false,
        };
        if removed {
            self.changed();
        }
        removed
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
        let digest = key.digest();
        // Acquire: a change made before this request began is seen, with what it wrote.
        let changes = self.changes.load(Ordering::Acquire);
        COPIES
            .try_with(|copies| {
                let mut copies = copies.borrow_mut();
                let at = match copies.iter().position(|c| c.store == self.store) {
                    // Last is the store used last, so that the one dropped is the one used
                    // longest ago (a gateway with one store never moves it).
                    Some(at) if at + 1 < copies.len() => {
                        let used = copies.remove(at);
                        copies.push(used);
                        copies.len() - 1
                    }
                    Some(at) => at,
                    None => {
                        if copies.len() >= STORES_PER_THREAD {
                            copies.remove(0);
                        }
                        copies.push(StoreCopies {
                            store: self.store,
                            changes,
                            records: HashMap::new(),
                        });
                        copies.len() - 1
                    }
                };
                let cache = &mut copies[at];
                if cache.changes != changes {
                    cache.records.clear();
                    cache.changes = changes;
                }
                if let Some(record) = cache.records.get(&digest) {
                    return Some(Principal::from_record(Arc::clone(record)));
                }
                // Unknown keys are not kept: a client cannot fill the cache with them.
                let shared = self.by_digest.get(&digest)?;
                let copy = Arc::new(KeyRecord::clone(&shared));
                drop(shared);
                if cache.records.len() >= Self::THREAD_CACHE {
                    cache.records.clear();
                }
                cache.records.insert(digest, Arc::clone(&copy));
                Some(Principal::from_record(copy))
            })
            // A thread being torn down has no cache left: the shared record.
            .unwrap_or_else(|_| {
                let record = self.by_digest.get(&digest)?;
                Some(Principal::from_record(Arc::clone(&record)))
            })
    }
}

impl Default for InMemoryKeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKeyStore")
            .field("keys", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticate(store: &InMemoryKeyStore, key: &str) -> Option<Principal> {
        store.authenticate(PresentedKey::new(key.as_bytes()))
    }

    fn cached_here(store: &InMemoryKeyStore) -> usize {
        COPIES.with(|copies| {
            copies
                .borrow()
                .iter()
                .find(|c| c.store == store.store)
                .map_or(0, |c| c.records.len())
        })
    }

    /// Keys given ids keep them, whatever order they come in; keys given none take ids no key
    /// has, above the largest given, even when one is given under an id past the count.
    #[test]
    fn ids_given_are_kept_and_skipped() {
        let store = InMemoryKeyStore::new();
        assert_eq!(store.insert("sk-auto-0", KeyPolicy::new()), Ok(KeyId(0)));
        assert_eq!(
            store.insert_as(KeyId(2), "sk-given-2", KeyPolicy::new()),
            Ok(KeyId(2))
        );
        assert_eq!(
            store.insert_as(KeyId(1), "sk-given-1", KeyPolicy::new()),
            Ok(KeyId(1))
        );
        assert_eq!(store.insert("sk-auto-3", KeyPolicy::new()), Ok(KeyId(3)));
        for (key, id) in [
            ("sk-auto-0", 0),
            ("sk-given-1", 1),
            ("sk-given-2", 2),
            ("sk-auto-3", 3),
        ] {
            assert_eq!(authenticate(&store, key).unwrap().key_id(), KeyId(id));
        }
        assert_eq!(
            store.insert_as(KeyId(0), "sk-other", KeyPolicy::new()),
            Err(InsertAsError::IdTaken(KeyId(0)))
        );
        assert_eq!(
            store.insert_as(KeyId(9), "sk-given-1", KeyPolicy::new()),
            Err(InsertAsError::DuplicateKey(KeyId(1)))
        );
        assert_eq!(
            store.insert_as(KeyId(u64::MAX), "sk-other", KeyPolicy::new()),
            Err(InsertAsError::IdOutOfRange(KeyId(u64::MAX)))
        );
        // Refused inserts took nothing: neither the id nor a place.
        assert_eq!(store.len(), 4);
        assert_eq!(store.insert("sk-auto-4", KeyPolicy::new()), Ok(KeyId(4)));
        assert!(store.get(KeyId(9)).is_none());
    }

    /// An id given while ids are being handed out is never handed out too.
    #[test]
    fn an_id_given_meanwhile_is_not_handed_out_again() {
        let store = InMemoryKeyStore::new();
        // The next id to hand out is 0; a key given 0 comes first.
        store
            .insert_digest_as(KeyId(0), KeyDigest::of("sk-given"), KeyPolicy::new())
            .unwrap();
        store.next_id.store(0, Ordering::Relaxed);
        assert_eq!(store.insert("sk-auto", KeyPolicy::new()), Ok(KeyId(1)));
        assert_eq!(authenticate(&store, "sk-given").unwrap().key_id(), KeyId(0));
    }

    /// A thread's requests share its copy of the record; another thread has its own, so the two
    /// count no reference in common. The quota stays the key's one.
    #[test]
    fn each_thread_has_its_own_copy_of_a_record_and_shares_the_quota() {
        let store = Arc::new(InMemoryKeyStore::new());
        store.insert("sk-one", KeyPolicy::new().quota(100)).unwrap();
        let first = authenticate(&store, "sk-one").unwrap();
        let again = authenticate(&store, "sk-one").unwrap();
        assert!(Arc::ptr_eq(first.record(), again.record()));
        let elsewhere = std::thread::spawn({
            let store = Arc::clone(&store);
            move || authenticate(&store, "sk-one").unwrap()
        })
        .join()
        .unwrap();
        assert!(!Arc::ptr_eq(first.record(), elsewhere.record()));
        elsewhere.quota().charge(30);
        assert_eq!(first.quota().used(), 30);
    }

    /// The same key in two stores, used in turn on one thread: each store answers with its own
    /// record, never the other's copy, and each keeps its copies while the other is used.
    #[test]
    fn two_stores_on_one_thread_keep_their_records_apart() {
        let (a, b) = (InMemoryKeyStore::new(), InMemoryKeyStore::new());
        a.insert("sk-same", KeyPolicy::new().rpm(1)).unwrap();
        b.insert("sk-same", KeyPolicy::new().rpm(2)).unwrap();
        let first = authenticate(&a, "sk-same").unwrap();
        for _ in 0..3 {
            assert_eq!(authenticate(&a, "sk-same").unwrap().policy().rpm, Some(1));
            assert_eq!(authenticate(&b, "sk-same").unwrap().policy().rpm, Some(2));
        }
        let last = authenticate(&a, "sk-same").unwrap();
        assert!(Arc::ptr_eq(first.record(), last.record()));
    }

    /// Past four stores, a thread forgets the copies of the store it used longest ago, not of
    /// the one it began with.
    #[test]
    fn a_thread_forgets_the_store_it_used_longest_ago() {
        let stores: Vec<InMemoryKeyStore> = (0..5).map(|_| InMemoryKeyStore::new()).collect();
        for store in &stores {
            store.insert("sk-key", KeyPolicy::new()).unwrap();
        }
        for at in [0, 1, 2, 3, 0, 4] {
            authenticate(&stores[at], "sk-key").unwrap();
        }
        let kept: Vec<usize> = stores.iter().map(cached_here).collect();
        assert_eq!(kept, [1, 0, 1, 1, 1]);
    }

    /// Every change is seen by the next request on a thread that holds a copy.
    #[test]
    fn a_change_is_seen_through_a_threads_copy() {
        let store = InMemoryKeyStore::new();
        let id = store.insert("sk-key", KeyPolicy::new()).unwrap();
        assert_eq!(authenticate(&store, "sk-key").unwrap().policy().rpm, None);
        assert!(store.update(id, |policy| policy.rpm = Some(5)));
        assert_eq!(
            authenticate(&store, "sk-key").unwrap().policy().rpm,
            Some(5)
        );
        assert!(store.freeze(id));
        assert_eq!(
            authenticate(&store, "sk-key").unwrap().policy().state,
            KeyState::Frozen
        );
        assert!(store.remove(id));
        assert!(authenticate(&store, "sk-key").is_none());
    }

    /// A change made on another thread, or a key removed and given again with another policy,
    /// is seen by this thread's next request although it holds a copy.
    #[test]
    fn a_change_from_another_thread_is_seen_through_a_copy() {
        let store = Arc::new(InMemoryKeyStore::new());
        let id = store.insert("sk-key", KeyPolicy::new()).unwrap();
        assert!(authenticate(&store, "sk-key").is_some());
        std::thread::spawn({
            let store = Arc::clone(&store);
            move || assert!(store.freeze(id))
        })
        .join()
        .unwrap();
        assert_eq!(
            authenticate(&store, "sk-key").unwrap().policy().state,
            KeyState::Frozen
        );
        std::thread::spawn({
            let store = Arc::clone(&store);
            move || {
                assert!(store.remove(id));
                store.insert("sk-key", KeyPolicy::new().rpm(7)).unwrap()
            }
        })
        .join()
        .unwrap();
        let again = authenticate(&store, "sk-key").unwrap();
        assert_ne!(again.key_id(), id);
        assert_eq!(
            (again.policy().state, again.policy().rpm),
            (KeyState::Active, Some(7))
        );
    }

    /// However many keys a thread sees, it keeps copies of at most `THREAD_CACHE`, and of no
    /// unknown key.
    #[test]
    fn a_threads_copies_are_bounded() {
        let store = InMemoryKeyStore::new();
        let keys: Vec<String> = (0..InMemoryKeyStore::THREAD_CACHE + 10)
            .map(|i| format!("sk-key-{i}"))
            .collect();
        for key in &keys {
            store.insert(key, KeyPolicy::new()).unwrap();
        }
        for key in &keys {
            assert!(authenticate(&store, key).is_some());
            assert!(cached_here(&store) <= InMemoryKeyStore::THREAD_CACHE);
        }
        assert!(cached_here(&store) > 0);
        // Full at the THREAD_CACHE-th key, emptied, and filled again by the ten after it.
        assert_eq!(cached_here(&store), 10);
        let before = cached_here(&store);
        for i in 0..100 {
            assert!(authenticate(&store, &format!("sk-unknown-{i}")).is_none());
        }
        assert_eq!(cached_here(&store), before);
    }
}
