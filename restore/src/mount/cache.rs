//! Bounded caches for a mount: decrypted data blobs (by bytes) and decoded trees (by count).
//! The least recently used entry goes first; a hit costs a map lookup, an eviction a scan of
//! the few dozen entries a byte budget of large blobs allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drvault_repo::format::Tree;
use drvault_repo::Id;

pub struct BlobCache {
    inner: Mutex<Lru<Arc<Vec<u8>>>>,
    budget: usize,
}

struct Lru<V> {
    map: HashMap<Id, (V, u64, usize)>,
    tick: u64,
    used: usize,
}

impl<V: Clone> Lru<V> {
    fn new() -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            used: 0,
        }
    }

    fn get(&mut self, id: &Id) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(id).map(|(v, t, _)| {
            *t = tick;
            v.clone()
        })
    }

    fn insert(&mut self, id: Id, value: V, weight: usize, budget: usize) {
        while self.used + weight > budget && !self.map.is_empty() {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, t, _))| *t)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                if let Some((_, _, w)) = self.map.remove(&k) {
                    self.used -= w;
                }
            }
        }
        self.tick += 1;
        if let Some((_, _, w)) = self.map.insert(id, (value, self.tick, weight)) {
            self.used -= w;
        }
        self.used += weight;
    }
}

impl BlobCache {
    pub fn new(budget: usize) -> Self {
        BlobCache {
            inner: Mutex::new(Lru::new()),
            budget,
        }
    }

    pub fn get(&self, id: &Id) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().ok()?.get(id)
    }

    pub fn insert(&self, id: Id, blob: Arc<Vec<u8>>) {
        if let Ok(mut lru) = self.inner.lock() {
            let weight = blob.len().max(1);
            lru.insert(id, blob, weight, self.budget);
        }
    }
}

/// Decoded trees, at most `capacity` of them.
pub struct TreeCache {
    inner: Mutex<Lru<Arc<Tree>>>,
    capacity: usize,
}

impl TreeCache {
    pub fn new(capacity: usize) -> Self {
        TreeCache {
            inner: Mutex::new(Lru::new()),
            capacity,
        }
    }

    pub fn get(&self, id: &Id) -> Option<Arc<Tree>> {
        self.inner.lock().ok()?.get(id)
    }

    pub fn insert(&self, id: Id, tree: Arc<Tree>) {
        if let Ok(mut lru) = self.inner.lock() {
            lru.insert(id, tree, 1, self.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_blob_goes_first_and_the_budget_holds() {
        let cache = BlobCache::new(250);
        let id = |n: u8| Id::of_stored(&[n]);
        cache.insert(id(1), Arc::new(vec![1; 100]));
        cache.insert(id(2), Arc::new(vec![2; 100]));
        assert!(cache.get(&id(1)).is_some());
        cache.insert(id(3), Arc::new(vec![3; 100]));
        assert!(cache.get(&id(2)).is_none(), "2 was used least recently");
        assert!(cache.get(&id(1)).is_some() && cache.get(&id(3)).is_some());
        let used = cache.inner.lock().map(|l| l.used).unwrap_or(usize::MAX);
        assert!(used <= 250);
    }
}
