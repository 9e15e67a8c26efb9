//! Token buckets per key (a client address, a token): the throttle of failed authentications.
//! Pure: the caller passes the time, as seconds on a monotonic clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: f64,
}

/// One bucket per key: `capacity` events at once, refilled at `per_second`. Keys whose
/// bucket is full again are forgotten once more than `max_keys` are held.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    capacity: f64,
    per_second: f64,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Buckets of `capacity` (at least 1) refilled at `per_second` (above 0).
    pub fn new(capacity: u32, per_second: f64, max_keys: usize) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            per_second: if per_second > 0.0 {
                per_second
            } else {
                f64::MIN_POSITIVE
            },
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    fn level(&self, key: &K, now: f64) -> f64 {
        self.buckets.get(key).map_or(self.capacity, |b| {
            (b.tokens + (now - b.at).max(0.0) * self.per_second).min(self.capacity)
        })
    }

    /// How long `key` must wait before its next event is allowed; `None`: allowed now.
    pub fn retry_after(&self, key: &K, now: f64) -> Option<Duration> {
        let level = self.level(key, now);
        (level < 1.0).then(|| Duration::from_secs_f64((1.0 - level) / self.per_second))
    }

    /// Spends one token of `key` (none left: stays empty).
    pub fn spend(&mut self, key: &K, now: f64) {
        let tokens = (self.level(key, now) - 1.0).max(0.0);
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            let (capacity, per_second) = (self.capacity, self.per_second);
            self.buckets
                .retain(|_, b| b.tokens + (now - b.at).max(0.0) * per_second < capacity);
        }
        if self.buckets.len() < self.max_keys || self.buckets.contains_key(key) {
            self.buckets.insert(key.clone(), Bucket { tokens, at: now });
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_one_event_per_refill() {
        let mut buckets = TokenBuckets::new(3, 0.5, 10);
        for _ in 0..3 {
            assert_eq!(buckets.retry_after(&"a", 0.0), None);
            buckets.spend(&"a", 0.0);
        }
        assert_eq!(buckets.retry_after(&"a", 0.0), Some(Duration::from_secs(2)));
        assert_eq!(buckets.retry_after(&"a", 1.0), Some(Duration::from_secs(1)));
        assert_eq!(buckets.retry_after(&"a", 2.0), None);
        // Other keys are not affected.
        assert_eq!(buckets.retry_after(&"b", 0.0), None);
    }

    #[test]
    fn full_buckets_are_forgotten_when_the_map_is_full() {
        let mut buckets = TokenBuckets::new(2, 1.0, 2);
        buckets.spend(&1, 0.0);
        buckets.spend(&2, 0.0);
        assert_eq!(buckets.len(), 2);
        // At t=10 both are full again: a third key makes room by dropping them.
        buckets.spend(&3, 10.0);
        assert_eq!(buckets.len(), 1);
        // A full map of busy keys does not grow, and a new key is then not limited.
        let mut busy = TokenBuckets::new(1, 0.001, 1);
        busy.spend(&1, 0.0);
        busy.spend(&2, 0.0);
        assert_eq!(busy.len(), 1);
        assert_eq!(busy.retry_after(&2, 0.0), None);
    }
}
