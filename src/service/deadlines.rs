//! A set of keyed deadlines with one waiter: the typing and presence timers. Setting a key
//! again moves its deadline; the waiter sleeps until the earliest one (no polling) and is
//! woken early when an earlier deadline is set.

use std::{
    collections::{BTreeSet, HashMap},
    hash::Hash,
    sync::Mutex,
};

use tokio::{sync::Notify, time::Instant};

pub struct Deadlines<K> {
    inner: Mutex<Inner<K>>,
    changed: Notify,
}

struct Inner<K> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: HashMap<K, Instant>,
}

impl<K: Ord + Hash + Clone> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                by_time: BTreeSet::new(),
                by_key: HashMap::new(),
            }),
            changed: Notify::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Sets (or moves) the deadline of `key`.
    pub fn set(&self, key: K, at: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_key.insert(key.clone(), at) {
            inner.by_time.remove(&(old, key.clone()));
        }
        let earliest = inner.by_time.first().is_none_or(|(t, _)| at < *t);
        inner.by_time.insert((at, key));
        drop(inner);
        if earliest {
            // A stored permit if the waiter is not waiting right now: it looks again.
            self.changed.notify_one();
        }
    }

    pub fn cancel(&self, key: &K) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_key.remove(key) {
            inner.by_time.remove(&(old, key.clone()));
        }
    }

    /// Waits for the next key whose deadline has passed and removes it.
    pub async fn next_expired(&self) -> K {
        loop {
            let next = {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                match inner.by_time.first().cloned() {
                    Some((at, key)) if at <= Instant::now() => {
                        inner.by_time.remove(&(at, key.clone()));
                        inner.by_key.remove(&key);
                        return key;
                    }
                    other => other.map(|(at, _)| at),
                }
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}
