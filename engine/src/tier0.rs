//! Tier0's hot part: decompressed Tier1 frames kept for readers, least recently used first out.
//!
//! Tier0 is one byte budget per shard (`Config::shard_memory_budget_bytes`) shared by two
//! users: write buffers (bytes appended and not yet written, `ShardCore::unflushed`) and these
//! hot bytes. Writers come first. Hot bytes may use only what writers leave, minus one flush
//! of headroom, so as write buffers fill, hot bytes are dropped (oldest first; they are copies
//! of data safe on disk) before any writer feels backpressure, and the two together never pass
//! the budget. Writes in flight (up to `flush_writes_in_flight` per log, each at most
//! `flush_threshold_bytes`, copies of staged bytes) are the write buffers by which memory may
//! exceed the budget.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// A decompressed frame: `(log_id, segment base, frame index)`.
pub type FrameKey = (u64, u64, u32);

#[derive(Default)]
pub struct HotCache {
    map: HashMap<FrameKey, (u64, Rc<Vec<u8>>)>,
    /// Last use tick → key, oldest first.
    order: BTreeMap<u64, FrameKey>,
    tick: u64,
    bytes: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

impl HotCache {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&mut self, key: &FrameKey) -> Option<Rc<Vec<u8>>> {
        let Some((t, v)) = self.map.get_mut(key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        self.order.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.order.insert(self.tick, *key);
        Some(v.clone())
    }

    /// Keeps `v` if it fits in `allowed` bytes after evicting older frames; else drops it.
    pub fn insert(&mut self, key: FrameKey, v: Rc<Vec<u8>>, allowed: u64) {
        let len = v.len() as u64;
        if len > allowed || self.map.contains_key(&key) {
            return;
        }
        self.shrink_to(allowed - len);
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.map.insert(key, (self.tick, v));
        self.bytes += len;
    }

    /// Evicts least recently used frames until at most `allowed` bytes remain.
    pub fn shrink_to(&mut self, allowed: u64) {
        while self.bytes > allowed {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, v)) = self.map.remove(&key) {
                self.bytes -= v.len() as u64;
                self.evictions += 1;
                self.evicted_bytes += v.len() as u64;
            }
        }
        debug_assert!(self.bytes <= allowed || self.map.is_empty());
    }

    /// Forgets every frame of one segment (it was deleted or evicted).
    pub fn forget_segment(&mut self, log_id: u64, base: u64) {
        let keys: Vec<FrameKey> = self
            .map
            .keys()
            .filter(|k| k.0 == log_id && k.1 == base)
            .copied()
            .collect();
        for k in keys {
            if let Some((t, v)) = self.map.remove(&k) {
                self.order.remove(&t);
                self.bytes -= v.len() as u64;
            }
        }
    }
}

/// Bytes the hot cache may hold, given the write buffers in use.
pub fn hot_allowance(budget: u64, unflushed: u64, flush_headroom: u64) -> u64 {
    budget.saturating_sub(unflushed).saturating_sub(flush_headroom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_order_and_allowance() {
        let mut c = HotCache::default();
        let v = |n: usize| Rc::new(vec![0u8; n]);
        c.insert((1, 0, 0), v(100), 1000);
        c.insert((1, 0, 1), v(100), 1000);
        c.insert((1, 0, 2), v(100), 1000);
        assert!(c.get(&(1, 0, 0)).is_some()); // now the newest
        c.insert((1, 0, 3), v(100), 300); // must evict the oldest: frame 1
        assert!(c.get(&(1, 0, 1)).is_none());
        assert!(c.get(&(1, 0, 0)).is_some());
        assert_eq!(c.bytes(), 300);
        c.shrink_to(150);
        assert_eq!(c.bytes(), 100);
        assert_eq!(c.evictions, 3);
        c.insert((2, 0, 0), v(500), 400); // larger than allowed: not kept
        assert!(c.get(&(2, 0, 0)).is_none());
        c.forget_segment(1, 0);
        assert_eq!(c.bytes(), 0);
        assert_eq!(hot_allowance(1000, 600, 100), 300);
        assert_eq!(hot_allowance(1000, 950, 100), 0);
    }
}
