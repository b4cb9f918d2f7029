//! A small bounded map that forgets its least recently used entry when full.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub(crate) struct Lru<K, V> {
    cap: usize,
    tick: u64,
    entries: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Lru {
            cap: cap.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            evicted: 0,
        }
    }

    /// The entry for `key`, made with `make` (evicting the oldest if full) when absent.
    pub(crate) fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, t)) = self.entries.get_mut(key) {
            self.order.remove(t);
            *t = tick;
        } else {
            if self.entries.len() >= self.cap {
                if let Some((_, old)) = self.order.pop_first() {
                    self.entries.remove(&old);
                    self.evicted += 1;
                }
            }
            self.entries.insert(key.clone(), (make(), tick));
        }
        self.order.insert(tick, key.clone());
        &mut self.entries.get_mut(key).expect("inserted above").0
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut m = Lru::new(2);
        *m.get_or_insert_with(&1, || 0) += 10;
        *m.get_or_insert_with(&2, || 0) += 20;
        *m.get_or_insert_with(&1, || 0) += 1; // 1 is now the most recent
        m.get_or_insert_with(&3, || 30); // evicts 2
        assert_eq!(m.len(), 2);
        assert_eq!(m.evicted(), 1);
        assert_eq!(*m.get_or_insert_with(&1, || 0), 11);
        assert_eq!(
            *m.get_or_insert_with(&2, || 99),
            99,
            "2 was evicted and starts fresh"
        );
    }
}
