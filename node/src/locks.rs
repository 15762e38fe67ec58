//! Locks by key (one per case reference): held while a change to that case is decided and
//! staged, released before its flush, so steps of different cases never wait for each
//! other and steps of one case share group commits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Map = HashMap<String, Arc<tokio::sync::Mutex<()>>>;

/// A set of async locks, one per key, created on demand and dropped when unused.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyedLocks(Arc<Mutex<Map>>);

/// Holds the lock of one key.
#[derive(Debug)]
pub(crate) struct KeyedGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: String,
    locks: KeyedLocks,
}

fn map(m: &Mutex<Map>) -> std::sync::MutexGuard<'_, Map> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KeyedLocks {
    /// Waits for the lock of `key`.
    pub(crate) async fn lock(&self, key: &str) -> KeyedGuard {
        let m = map(&self.0).entry(key.to_owned()).or_default().clone();
        let guard = m.lock_owned().await;
        KeyedGuard {
            guard: Some(guard),
            key: key.to_owned(),
            locks: self.clone(),
        }
    }

    /// Keys with a lock held or awaited (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        map(&self.0).len()
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut m = map(&self.locks.0);
        // Only the map holds it: nobody holds or waits for this key any more.
        if m.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            m.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_at_a_time_other_keys_free_and_nothing_left_behind() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        // Another key is not blocked.
        let b = locks.lock("b").await;
        // The same key waits until the first guard goes.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock("a").await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        let a2 = waiter.await.unwrap();
        drop(a2);
        drop(b);
        assert_eq!(locks.len(), 0);
    }
}
