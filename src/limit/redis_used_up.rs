//! The keys whose quota Redis last found used up, for a replica failing open to go on refusing
//! them while Redis is away.
//!
//! Failing open, a replica decides in its own memory, which knows nothing of the tokens other
//! replicas used: a key whose shared quota is spent would be served again for as long as Redis
//! is away, up to what the key's quota allows on this replica alone. A quota is a total that
//! only grows, so the last word Redis had on it still holds, unless the key's quota has been
//! raised since.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::store::{Acquire, Outcome};

/// Keys Redis refused as out of quota, with the quota they had then: one entry for each key
/// ever refused so (a key removed from the key store keeps its entry), gone when Redis admits
/// the key again. Keys are the operator's, not the clients': no client can add one.
#[derive(Debug, Default)]
pub(super) struct UsedUp {
    /// Whether any key is here: read by every admission with a quota, so that the lock is
    /// taken only when there is something to forget.
    any: AtomicBool,
    keys: Mutex<HashMap<u64, u64>>,
}

impl UsedUp {
    /// What Redis decided for `ask`.
    pub(super) fn saw(&self, ask: &Acquire, outcome: &Outcome) {
        let Some(limit) = ask.quota else {
            return;
        };
        match outcome {
            Outcome::QuotaExhausted => {
                let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
                keys.insert(ask.key.0, limit);
                self.any.store(true, Ordering::Release);
            }
            Outcome::Admitted(_) if self.any.load(Ordering::Acquire) => {
                let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
                if keys.remove(&ask.key.0).is_some() && keys.is_empty() {
                    self.any.store(false, Ordering::Release);
                }
            }
            _ => {}
        }
    }

    /// Whether `ask`'s key had used up a quota at least as large when Redis last decided.
    pub(super) fn refuses(&self, ask: &Acquire) -> bool {
        let Some(limit) = ask.quota else {
            return false;
        };
        self.any.load(Ordering::Acquire)
            && self
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&ask.key.0)
                .is_some_and(|&spent_at| limit <= spent_at)
    }
}
